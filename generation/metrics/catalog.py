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

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from generation.metrics.base import ClipPair, MetricUnavailable, installed_or_unavailable

ClipResult = Mapping[str, "float | PerFrame | MetricUnavailable"]  # noqa: F821 (names imported above)


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
    note: str = ""  # how the values were computed, when a researcher must know (stored with every value)
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


# LSE is defined by syncnet_python's released network (syncnet_v2.model). Where it is not installed, the embedded
# demo (SYNCMOS_LSE_DEMO_SYNCNET=1, set by `make demo`) uses the tiny SyncNet trained on the synthetic corpus,
# under another version and with a note on every value, so the two can never be mixed up or compared silently.
# The choice is made when the catalog is imported: restart the workers after installing syncnet_v2.model.


def _lse_weights() -> str:
    from generation.metrics.syncnet_weights import syncnet_v2_path

    if syncnet_v2_path().is_file():
        return "official"
    return "demo" if os.environ.get("SYNCMOS_LSE_DEMO_SYNCNET", "") in ("1", "true", "yes") else "official"


LSE_WEIGHTS = _lse_weights()


def _lse(pair: ClipPair, device: str) -> ClipResult:
    from generation.metrics import lse, syncnet_weights

    load = syncnet_weights.load_demo_syncnet_v2_tiny if LSE_WEIGHTS == "demo" else syncnet_weights.load_syncnet_v2
    return lse.lse_metrics(pair, installed_or_unavailable(load, device=device))


def _avsync(pair: ClipPair, device: str) -> ClipResult:
    from generation.metrics import lse, syncnet_weights

    return lse.avsync_metrics(pair, installed_or_unavailable(syncnet_weights.load_avsyncnet, device=device))


register(MetricGroup(
    key="lse", version="1" if LSE_WEIGHTS == "official" else "1-demo-syncnet", queue="gpu", level="clip",
    needs_reference=False, needs_faces=True, compute=_lse,
    note="" if LSE_WEIGHTS == "official" else (
        "computed with the tiny demo SyncNet trained on the synthetic corpus (demo/weights/syncnet_v2_tiny.pt), "
        "not syncnet_v2.model: not comparable with published LSE values"),
    metrics=(
        MetricDef("lse_c", "LSE-C", True, "SyncNet confidence (median − min of the mean distance over ±15 offsets)"),
        MetricDef("lse_d", "LSE-D", False, "SyncNet distance (min over ±15 offsets of the mean distance)"),
        MetricDef("lse_offset", "AV offset", None, "offset (frames) of the best audio-visual match; 0 = in sync"),
    ),
))
register(MetricGroup(
    key="avsync", version="1", queue="gpu", level="clip", needs_reference=False, needs_faces=True, compute=_avsync,
    metrics=(
        MetricDef("avs_c", "AVS-C", True, "LSE-C computed with AVSyncNet (1 − cosine distance)"),
        MetricDef("avs_d", "AVS-D", False, "LSE-D computed with AVSyncNet (1 − cosine distance)"),
        MetricDef("avs_offset", "AVS offset", None, "offset (frames) of the best match under AVSyncNet"),
    ),
))


# FID is a set-level metric (seed 002 eq. F): the Inception pool3 statistics of all generated face crops of a
# condition against those of their ground-truth crops. Each clip contributes its features (float32, a few hundred
# kB), cached by the caller, so adding clips or resuming a killed task only embeds what is new. Face crops as in
# Wav2Lip's FID (evaluation/README: generated and ground-truth face crops through pytorch-fid), cut with the
# reference's boxes at 299 px, the network's input size, so pytorch-fid's resize is the identity.
FID_CROP_SIZE = 299


def _fid_partial(pair: ClipPair, device: str) -> bytes:
    import io

    import numpy as np

    from generation.metrics import fid_weights, regions
    from generation.metrics.fid import inception_features

    model = installed_or_unavailable(fid_weights.load_fid_inception, device)
    reference = pair.require_reference("FID")
    boxes = regions.boxes_of(pair)
    generated = inception_features(model, regions.face_crops(pair.generated, boxes, FID_CROP_SIZE), device=device)
    real = inception_features(model, regions.face_crops(reference, boxes, FID_CROP_SIZE), device=device)
    buffer = io.BytesIO()
    np.savez(buffer, generated=generated.astype(np.float32), reference=real.astype(np.float32))
    return buffer.getvalue()


def _fid_combine(partials: Sequence[bytes]) -> ClipResult:
    import io

    import numpy as np

    from generation.metrics.fid import FeatureStats, frechet_distance_from_stats

    generated = reference = None
    for data in partials:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            g, r = FeatureStats.from_features(arrays["generated"]), FeatureStats.from_features(arrays["reference"])
        generated = g if generated is None else generated.merge(g)
        reference = r if reference is None else reference.merge(r)
    return {"fid": frechet_distance_from_stats(generated, reference)}


register(MetricGroup(
    key="fid", version="1", queue="gpu", level="condition", needs_reference=True, needs_faces=True,
    partial=_fid_partial, combine=_fid_combine,
    metrics=(MetricDef("fid", "FID", False, "Fréchet Inception distance (pytorch-fid) of the condition's face crops "
                                            "against their ground truth, over all of its clips"),),
))
