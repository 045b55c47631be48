"""The LSE network's training family: contrastive steps on the corpus, and an export LSE can load."""

from __future__ import annotations

import pytest
import torch

from generation.metrics import lse, syncnet_weights
from generation.training.config import TrainConfig
from generation.training.trainer import train

pytestmark = pytest.mark.slow


def test_a_short_run_exports_a_syncnet_that_lse_can_load_and_use(training_corpus, tmp_path):
    config = TrainConfig(family="syncnet_v2", data_root=str(training_corpus), output_dir=str(tmp_path),
                         model_config="tiny", iterations=4, batch_size=4, eval_batch_size=4, log_every=2,
                         checkpoint_every=2, threads=1, options={"negatives": 2, "bn_batches": 1})
    torch.manual_seed(0)
    result = train(config)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) >= 3 and "contrastive" in rows[0]
    model = syncnet_weights.load_syncnet(tmp_path / "syncnet_v2.pt")
    assert model.config.crop_size == 96 and not model.training
    crops = torch.randint(0, 255, (12, 96, 96, 3), dtype=torch.uint8).numpy()
    audio = (torch.randn(12 * lse.SAMPLES_PER_FRAME) * 3000).numpy()
    scored = lse.lse(crops, audio, model)
    assert scored.lse_d >= 0 and scored.lse_c >= 0 and abs(scored.offset_frames) <= lse.VSHIFT
    assert result is not None
