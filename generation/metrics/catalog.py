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
