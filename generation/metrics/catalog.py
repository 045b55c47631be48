"""Every metric syncmos computes, grouped by what has to be loaded to compute it. No Django here.

A *group* is one unit of work on a clip (or a condition): decoding, face crops and networks are shared by the
metrics in it, so e.g. ``lse`` yields LSE-C, LSE-D and the offset from one pass of SyncNet over the clip. The
Django side (generation/metric_services.py) stores one ClipMetric / ConditionMetric row per metric name and
one MetricRun per group and target; a group's ``version`` is stored with every value, and changing it marks the
stored values as stale.

Clip-level groups implement ``compute(pair, device) -> {name: float | PerFrame | MetricUnavailable}``. A group
that cannot run at all (weights missing, no ground truth) raises MetricUnavailable and every one of its metrics
gets that reason. Condition-level groups (FID) compute a partial result per clip (``partial``, bytes, cached by
the caller) and ``combine`` them into the condition's values, so a killed task only redoes missing clips.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from generation.metrics.base import ClipPair, MetricUnavailable, PerFrame

ClipResult = Mapping[str, "float | PerFrame | MetricUnavailable"]


@dataclass(frozen=True)
class MetricDef:
    name: str  # stable snake_case key: ClipMetric.name, CSV column, analysis column
    label: str  # as papers print it
    higher_is_better: bool | None  # None: not a quality score (e.g. the sync offset)
    description: str


@dataclass(frozen=True)
class MetricGroup:
    key: str
    version: str
    queue: str  # "gpu" for network metrics, "cpu" for the rest
    level: str  # "clip" or "condition"
    metrics: tuple[MetricDef, ...]
    needs_reference: bool
    needs_faces: bool
    compute: Callable[[ClipPair, str], ClipResult] | None = None  # clip level
    partial: Callable[[ClipPair, str], bytes] | None = None  # condition level: per-clip contribution
    combine: Callable[[Sequence[bytes]], ClipResult] | None = None  # condition level

    def __post_init__(self) -> None:
        if self.queue not in ("gpu", "cpu") or self.level not in ("clip", "condition"):
            raise ValueError(f"group {self.key}: bad queue/level {self.queue}/{self.level}")
        if (self.level == "clip") != (self.compute is not None) or (self.level == "condition") != (
            self.partial is not None and self.combine is not None
        ):
            raise ValueError(f"group {self.key}: a clip group needs compute, a condition group partial + combine")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)


GROUPS: dict[str, MetricGroup] = {}


def register(group: MetricGroup) -> MetricGroup:
    taken = {name for g in GROUPS.values() if g.key != group.key for name in g.names}
    clash = taken.intersection(group.names)
    if clash:
        raise ValueError(f"metric names {sorted(clash)} are already produced by another group")
    GROUPS[group.key] = group
    return group


def metric_def(name: str) -> MetricDef:
    for group in GROUPS.values():
        for metric in group.metrics:
            if metric.name == name:
                return metric
    raise KeyError(name)


def all_metrics() -> list[MetricDef]:
    return [m for g in GROUPS.values() for m in g.metrics]


def group_of(name: str) -> MetricGroup:
    for group in GROUPS.values():
        if name in group.names:
            return group
    raise KeyError(name)


# The columns of the seeds' metric tables (seed 001 Table 1, seed 002 Table B), in their order.
SEEDS_TABLE = (("ssim", "SSIM"), ("psnr", "PSNR"), ("fid", "FID"), ("ifc", "IFC"), ("lmd", "LMD"),
               ("lse_c", "LSE-C"), ("lse_d", "LSE-D"))


def unavailable_for_all(group: MetricGroup, reason: str) -> dict[str, MetricUnavailable]:
    return {name: MetricUnavailable(reason) for name in group.names}


# --- the built-in groups ---------------------------------------------------------------------------
# Imports are inside the functions: the catalog is read by views and commands that never compute.


def _frame_quality(pair: ClipPair, device: str) -> ClipResult:
    from generation.metrics import frame_quality

    return frame_quality.frame_quality(pair, frame_quality.PIXEL_METRICS, device="cpu")


def _lpips(pair: ClipPair, device: str) -> ClipResult:
    from generation.metrics import frame_quality

    model = frame_quality.load_lpips_metric(device)
    return frame_quality.frame_quality(pair, frame_quality.LPIPS_METRICS, lpips_model=model, device=device)


def _lmd(pair: ClipPair, device: str) -> ClipResult:
    from generation.metrics import lmd

    return {"lmd": lmd.lmd(pair), "lmd_centred": lmd.lmd(pair, centred=True)}


def _ifc(pair: ClipPair, device: str) -> ClipResult:
    from generation.metrics import ifc

    return {"ifc": ifc.ifc(pair), "ifc_full": ifc.ifc_full(pair)}


register(MetricGroup(
    key="frame_quality", version="1", queue="cpu", level="clip", needs_reference=True, needs_faces=True,
    compute=_frame_quality,
    metrics=(
        MetricDef("psnr", "PSNR", True, "PSNR (dB) of the whole frame, RGB, mean over frames"),
        MetricDef("ssim", "SSIM", True, "SSIM (Wang et al. 2004) of the whole frame, RGB, mean over frames"),
        MetricDef("psnr_face", "PSNR (face)", True, "PSNR on the 128-px face crop"),
        MetricDef("ssim_face", "SSIM (face)", True, "SSIM on the 128-px face crop"),
        MetricDef("psnr_mouth", "PSNR (mouth)", True, "PSNR on the lower half of the face crop"),
        MetricDef("ssim_mouth", "SSIM (mouth)", True, "SSIM on the lower half of the face crop"),
    ),
))
register(MetricGroup(
    key="lpips", version="1", queue="gpu", level="clip", needs_reference=True, needs_faces=True, compute=_lpips,
    metrics=(
        MetricDef("lpips", "LPIPS", False, "LPIPS v0.1 (AlexNet) of the whole frame"),
        MetricDef("lpips_face", "LPIPS (face)", False, "LPIPS v0.1 (AlexNet) on the 128-px face crop"),
        MetricDef("lpips_mouth", "LPIPS (mouth)", False, "LPIPS v0.1 (AlexNet) on the lower half of the face crop"),
    ),
))
register(MetricGroup(
    key="lmd", version="1", queue="cpu", level="clip", needs_reference=True, needs_faces=True, compute=_lmd,
    metrics=(
        MetricDef("lmd", "LMD", False, "mouth landmark distance (dlib points 48-67) in pixels of a 128-px face crop"),
        MetricDef("lmd_centred", "LMD (centred)", False, "LMD after removing each frame's mouth centroid (shape only)"),
    ),
))
register(MetricGroup(
    key="ifc", version="1", queue="cpu", level="clip", needs_reference=True, needs_faces=True, compute=_ifc,
    metrics=(
        MetricDef("ifc", "IFC", False, "inter-frame consistency (seed 002 eq. G), RMS per step on the face crop"),
        MetricDef("ifc_full", "IFC (full frame)", False, "IFC on the whole frame"),
    ),
))
