"""The trainer: exact resume, curves in CSV and PNG, and exported weights the inference side loads."""

from __future__ import annotations

import csv

import pytest
import torch
from django.core.management import call_command
from django.core.management.base import CommandError

from generation import weights
from generation.nets import wav2lip_syncnet
from generation.training import experts
from generation.training.config import ConfigError, TrainConfig, load_config
from generation.training.trainer import train


@pytest.fixture(scope="module")
def expert_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    syncnet = wav2lip_syncnet.build_syncnet_color(wav2lip_syncnet.SYNCNET_COLOR_TINY)
    path = tmp_path_factory.mktemp("expert") / "syncnet.pt"
    return str(experts.save_expert(path, syncnet, kind="wav2lip_syncnet", config=syncnet.config))


def config_for(family, training_corpus, output_dir, **changes):
    base = dict(family=family, data_root=str(training_corpus), output_dir=str(output_dir), model_config="tiny",
                iterations=4, batch_size=2, eval_batch_size=2, log_every=2, checkpoint_every=2, seed=10,
                threads=1)
    base.update(changes)
    return TrainConfig(**base)


def checkpoint_state(output_dir):
    return torch.load(output_dir / "checkpoint.pt", weights_only=True)


def assert_same_tensors(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("family,options", [
    ("lipgan", {}),  # discriminator coin flips
    ("l1wgan_gp", {"generator_every": 2}),  # random gradient-penalty interpolates, generator on every 2nd step
    ("wav2lip", {"use_disc": True}),  # frozen expert, discriminator, sync-weight schedule
])
def test_a_resumed_run_continues_bit_identically(family, options, training_corpus, expert_checkpoint, tmp_path):
    if family == "wav2lip":
        options = {**options, "expert_checkpoint": expert_checkpoint}
    straight = config_for(family, training_corpus, tmp_path / "straight", options=options)
    train(straight)
    interrupted = config_for(family, training_corpus, tmp_path / "interrupted", options=options)
    first = train(interrupted, stop_after=2)
    assert first.iterations == 2 and first.exported == []
    second = train(interrupted)  # a new call, as after a crash: everything comes from checkpoint.pt
    assert second.iterations == 4 and second.exported

    a, b = checkpoint_state(tmp_path / "straight"), checkpoint_state(tmp_path / "interrupted")
    assert a["iteration"] == b["iteration"] == 4
    assert_same_tensors(a["modules"], b["modules"], "modules")
    assert_same_tensors(a["optimizers"], b["optimizers"], "optimizers")
    assert a["family_state"] == b["family_state"]
    rows = lambda d: list(csv.DictReader((d / "metrics.csv").open()))  # noqa: E731
    drop_time = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [drop_time(r) for r in rows(tmp_path / "straight")] == [drop_time(r) for r in rows(tmp_path / "interrupted")]


def test_it_logs_losses_ssim_and_psnr_every_n_iterations_and_plots_them(training_corpus, tmp_path):
    result = train(config_for("lipgan", training_corpus, tmp_path, iterations=6, log_every=3, checkpoint_every=3))
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [3, 6]
    for column in ("train_generator_loss", "train_disc_loss", "train_loss_face", "train_loss_audio", "val_ssim",
                   "val_psnr"):
        assert all(float(r[column]) == float(r[column]) for r in rows), column  # present and not NaN
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert {"adversarial_losses.png", "ssim.png", "psnr.png"} <= set(plots)
    assert result.last_row["iteration"] == 6


def test_a_rerun_after_the_end_exports_again_without_training(training_corpus, tmp_path):
    config = config_for("lipgan", training_corpus, tmp_path, iterations=2)
    train(config)
    before = checkpoint_state(tmp_path)
    again = train(config)
    assert again.iterations == 2 and again.exported
    assert_same_tensors(before["modules"], checkpoint_state(tmp_path)["modules"])


def test_the_exported_generator_loads_as_a_syncmos_checkpoint_for_inference(training_corpus, tmp_path):
    result = train(config_for("lipgan", training_corpus, tmp_path, iterations=2))
    (path,) = result.exported
    model = weights.build_and_load(path, architecture="lipgan", layout=weights.LAYOUT_SYNCMOS)
    spec = model.input_spec
    with torch.no_grad():
        frames = model(torch.zeros(1, 1, 80, spec.mel_frames), torch.rand(1, 6, spec.face_size, spec.face_size))
    assert frames.shape == (1, 3, 96, 96)


def test_resuming_with_another_model_config_is_refused(training_corpus, tmp_path):
    train(config_for("lipgan", training_corpus, tmp_path, iterations=4), stop_after=2)
    with pytest.raises(RuntimeError, match="seed"):
        train(config_for("lipgan", training_corpus, tmp_path, iterations=4, seed=11))


def test_the_train_command_reads_a_toml_config_with_paths_relative_to_it(training_corpus, tmp_path):
    config_file = tmp_path / "configs" / "lipgan.toml"
    config_file.parent.mkdir()
    config_file.write_text(
        'family = "lipgan"\n'
        f'data_root = "{training_corpus}"\n'
        'output_dir = "../runs/lipgan"\n'
        'iterations = 2\nbatch_size = 2\neval_batch_size = 2\nlog_every = 1\n'
    )
    config = load_config(config_file)
    assert config.output_dir == str((tmp_path / "runs" / "lipgan").resolve())
    call_command("train", str(config_file))
    assert (tmp_path / "runs" / "lipgan" / "lipgan.pt").is_file()


def test_a_bad_config_file_is_a_clear_command_error(tmp_path):
    config_file = tmp_path / "bad.toml"
    config_file.write_text('family = "lipgan"\ndata_root = "."\noutput_dir = "."\nbatch_sise = 4\n')
    with pytest.raises(ConfigError, match="unknown fields"):
        load_config(config_file)
    with pytest.raises(CommandError, match="unknown fields"):
        call_command("train", str(config_file))
    with pytest.raises(CommandError, match="no training config"):
        call_command("train", str(tmp_path / "missing.toml"))
