"""Training curves from metrics.csv, one figure per kind of quantity (the paper's Figures 2-3, 5-7 and 9):
generator/discriminator losses, the other losses, SSIM and PSNR against iterations."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402

GROUPS = {
    "adversarial_losses": ("generator_loss", "disc_loss", "critic_loss", "loss_real", "loss_face", "loss_audio",
                           "adversarial", "wasserstein"),
    "gradient_penalty": ("gradient_penalty",),
    "reconstruction_and_sync": ("l1", "pixel", "perceptual", "lpips", "sync_loss", "stabilized_sync",
                                "adaptive_triplet", "sync_accuracy", "avsim_generated", "avsim_true"),
    "ssim": ("ssim",),
    "psnr": ("psnr",),
}


def _read(path: Path) -> tuple[list[int], dict[str, list[float]]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    iterations = [int(r["iteration"]) for r in rows]
    columns: dict[str, list[float]] = {}
    for name in (rows[0].keys() if rows else []):
        if name in ("iteration", "seconds"):
            continue
        columns[name] = [float(r[name]) if r.get(name) not in (None, "") else math.nan for r in rows]
    return iterations, columns


def plot_metrics(csv_path: Path, out_dir: Path, *, title: str = "") -> list[Path]:
    """Write one PNG per group that has data; returns their paths."""
    iterations, columns = _read(Path(csv_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for group, names in GROUPS.items():
        series = [(c, v) for c, v in columns.items() if c.split("_", 1)[1] in names
                  and any(not math.isnan(x) for x in v)]
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
        for column, values in series:
            ax.plot(iterations, values, label=column, linewidth=1.2)
        ax.set_xlabel("iteration")
        ax.set_ylabel(group.replace("_", " "))
        ax.set_title(f"{title}: {group.replace('_', ' ')}" if title else group.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncols=2)
        fig.tight_layout()
        path = out_dir / f"{group}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
