"""Every training family takes a real optimisation step on the synthetic corpus and lowers its loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generation.nets import avsyncnet, stabsync, wav2lip_syncnet
from generation.training import experts
from generation.training.config import ConfigError, TrainConfig
from generation.training.dataset import LipSyncDataset
from generation.training.families import get_family


@pytest.fixture(scope="module")
def expert_files(tmp_path_factory):
    """Random tiny experts, saved as the earlier training stages would save them."""
    root = tmp_path_factory.mktemp("experts")
    torch.manual_seed(0)
    syncnet = wav2lip_syncnet.build_syncnet_color(wav2lip_syncnet.SYNCNET_COLOR_TINY)
    avsync = avsyncnet.build_avsyncnet(avsyncnet.AVSYNCNET_TINY)
    silent = stabsync.TalkingFaceGenerator(stabsync.STABSYNC_TINY)
    return {
        "expert_checkpoint": str(experts.save_expert(root / "syncnet.pt", syncnet, kind="wav2lip_syncnet",
                                                     config=syncnet.config)),
        "avsyncnet_checkpoint": str(experts.save_expert(root / "avsync.pt", avsync, kind="avsyncnet",
                                                        config=avsync.config)),
        "silent_checkpoint": str(experts.save_expert(root / "silent.pt", silent, kind="stabsync_silent_generator",
                                                     config=silent.config)),
    }


FAMILY_OPTIONS = {
    "syncnet_color": (),
    "avsyncnet": (),
    "wav2lip": ("expert_checkpoint",),
    "attn_wav2lip": ("expert_checkpoint",),
    "lipgan": (),
    "l1wgan_gp": (),
    "stabsync_silent": ("avsyncnet_checkpoint",),
    "stabsync": ("avsyncnet_checkpoint", "silent_checkpoint"),
}
# The loss whose decrease after one step on the same batch shows that the step optimises the family's objective.
PRIMARY_LOSS = {
    "syncnet_color": "sync_loss", "avsyncnet": "sync_loss", "wav2lip": "generator_loss",
    "attn_wav2lip": "generator_loss", "lipgan": "l1", "l1wgan_gp": "critic_loss",
    "stabsync_silent": "generator_loss", "stabsync": "generator_loss",
}


def make_family(name, training_corpus, expert_files, tmp_path, lr=1e-4, **options):
    extra = {k: expert_files[k] for k in FAMILY_OPTIONS[name]}
    if name in ("attn_wav2lip", "stabsync_silent", "stabsync"):
        extra["perceptual_backbone"] = "random"
    config = TrainConfig(family=name, data_root=str(training_corpus), output_dir=str(tmp_path), model_config="tiny",
                         batch_size=4, lr=lr, seed=10, options={**extra, **options})
    torch.manual_seed(0)
    return get_family(name)(config, torch.device("cpu"))


def fixed_batch(family, training_corpus, size=4):
    data = LipSyncDataset(training_corpus, "train", family.window_spec())
    return data.batch(np.random.default_rng(0), size)


@pytest.mark.parametrize("name", sorted(FAMILY_OPTIONS))
def test_one_optimisation_step_lowers_the_loss_on_a_fixed_batch(name, training_corpus, expert_files, tmp_path):
    # A small step: Adam moves every weight by about lr at first, and a randomly initialised ResNet's loss is
    # steep (AVSyncNet's gradient norm is ~500 here), so the paper's 1e-4 can overshoot on a single batch.
    family = make_family(name, training_corpus, expert_files, tmp_path, lr=1e-5)
    batch = fixed_batch(family, training_corpus)
    family.train_mode()
    key = PRIMARY_LOSS[name]
    # the same iteration number twice: the same random draws inside the step (GP interpolates, LipGAN's coin)
    before = family.train_step(batch, step=0)[key]
    after = family.train_step(batch, step=0)[key]
    assert np.isfinite(before) and np.isfinite(after)
    assert after < before, f"{name}: {key} went from {before} to {after}"


@pytest.mark.parametrize("name", sorted(FAMILY_OPTIONS))
def test_evaluation_reports_finite_numbers_and_does_not_train(name, training_corpus, expert_files, tmp_path):
    family = make_family(name, training_corpus, expert_files, tmp_path)
    batch = fixed_batch(family, training_corpus)
    state = {k: {n: t.clone() for n, t in m.state_dict().items()} for k, m in family.modules.items()}
    family.eval_mode()
    with torch.no_grad():
        report = family.evaluate(batch)
    assert report and all(np.isfinite(v) for v in report.values()), report
    if name not in ("syncnet_color", "avsyncnet"):
        assert 0 < report["ssim"] <= 1 and report["psnr"] > 0
    for k, module in family.modules.items():
        for n, t in module.state_dict().items():
            assert torch.equal(t, state[k][n]), f"{k}.{n} changed during evaluation"


def test_the_l1wgan_gp_generator_trains_only_on_every_fifth_iteration(training_corpus, expert_files, tmp_path):
    family = make_family("l1wgan_gp", training_corpus, expert_files, tmp_path)
    batch = fixed_batch(family, training_corpus, 2)
    generator = family.modules["generator"]
    snapshots = []
    for step in range(5):
        logs = family.train_step(batch, step)
        snapshots.append(torch.cat([p.detach().flatten().clone() for p in generator.parameters()]))
        assert ("generator_loss" in logs) == (step == 4)
        assert logs["gradient_penalty"] >= 0
    assert all(torch.equal(snapshots[0], s) for s in snapshots[1:4])
    assert not torch.equal(snapshots[3], snapshots[4])


def test_the_l1wgan_gp_critic_has_no_batch_norm_and_the_paper_optimiser(training_corpus, expert_files, tmp_path):
    family = make_family("l1wgan_gp", training_corpus, expert_files, tmp_path, lr=1e-4)
    critic = family.modules["critic"]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in critic.modules())
    for optimizer in family.optimizers.values():
        assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["betas"] == (0.5, 0.9)
    assert family.options["lambda_gp"] == 10.0 and family.options["generator_every"] == 5


def test_the_logged_gradient_penalty_is_the_autograd_penalty_at_the_same_interpolates(
        training_corpus, expert_files, tmp_path):
    from generation.nets.l1wgan_gp import gradient_penalty

    family = make_family("l1wgan_gp", training_corpus, expert_files, tmp_path)
    batch = fixed_batch(family, training_corpus, 2)
    family.train_mode()
    with torch.no_grad():
        fake, real, mel = family.generate(batch)
    expected = gradient_penalty(family.modules["critic"], real, fake, mel, 10.0, generator=family.step_generator(0))
    logs = family.train_step(batch, step=0)
    assert logs["gradient_penalty"] == pytest.approx(expected.item(), rel=1e-5)


def test_wav2lip_switches_the_sync_loss_on_once_the_expert_is_satisfied(training_corpus, expert_files, tmp_path):
    family = make_family("wav2lip", training_corpus, expert_files, tmp_path)
    batch = fixed_batch(family, training_corpus)
    assert family.sync_weight == 0.0 and family.sync_weight_after == 0.01
    family.sync_loss = lambda generated, mel: torch.tensor(0.9)  # an unsatisfied expert: no switch
    family.evaluate(batch)
    assert family.sync_weight == 0.0
    family.sync_loss = lambda generated, mel: torch.tensor(0.5)  # below 0.75: the official switch
    family.evaluate(batch)
    assert family.sync_weight == 0.01 and family.state() == {"sync_weight": 0.01}
    with_disc = make_family("wav2lip", training_corpus, expert_files, tmp_path / "d", use_disc=True)
    assert with_disc.sync_weight_after == 0.03 and with_disc.disc_weight == 0.07


def test_the_sync_experts_see_balanced_in_sync_and_shifted_pairs(training_corpus, expert_files, tmp_path):
    family = make_family("syncnet_color", training_corpus, expert_files, tmp_path)
    batch = fixed_batch(family, training_corpus)
    assert family.window_spec().min_shift == 1 and family.window_spec().max_shift == 6
    assert (batch["shift"].abs() >= 1).all() and (batch["shift"].abs() <= 6).all()
    _, _, labels = family.embed(batch)
    assert labels.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_perceptual_losses_refuse_a_missing_backbone_unless_a_random_one_is_asked_for(
        training_corpus, expert_files, tmp_path, monkeypatch):
    from generation.weights import WeightsMissingError

    monkeypatch.setenv("SYNCMOS_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    config = TrainConfig(family="attn_wav2lip", data_root=str(training_corpus), output_dir=str(tmp_path),
                         options={"expert_checkpoint": expert_files["expert_checkpoint"]})
    with pytest.raises(WeightsMissingError, match="alexnet-owt-7be5be79.pth"):
        get_family("attn_wav2lip")(config, torch.device("cpu"))


def test_a_missing_expert_checkpoint_is_a_clear_error(training_corpus, tmp_path):
    from generation.weights import WeightsMissingError

    config = TrainConfig(family="wav2lip", data_root=str(training_corpus), output_dir=str(tmp_path),
                         options={"expert_checkpoint": str(tmp_path / "nope.pt")})
    with pytest.raises(WeightsMissingError, match="train it first"):
        get_family("wav2lip")(config, torch.device("cpu"))


def test_configs_are_checked_before_anything_is_built(tmp_path):
    with pytest.raises(ConfigError, match="family must be one of|unknown family"):
        TrainConfig(family="nope", data_root=".", output_dir=".")
    with pytest.raises(ConfigError, match="needs the options"):
        TrainConfig(family="wav2lip", data_root=".", output_dir=".")
    with pytest.raises(ConfigError, match="has no options"):
        TrainConfig(family="lipgan", data_root=".", output_dir=".", options={"sync_wieght": 1})
    with pytest.raises(ConfigError, match="iterations"):
        TrainConfig(family="lipgan", data_root=".", output_dir=".", iterations=0)
