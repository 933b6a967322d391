"""Box metrics: IoU between a predicted box and the target box(es).

Boxes are ``[x1, y1, x2, y2]`` normalised to [0, 1]. A sample's IoU is the best IoU of the
predicted box against any of its target boxes; an unparsed box scores IoU 0.
"""

from __future__ import annotations

from typing import Any

from cxbench.metrics.base import Metric, first_column, mean_reduce


def box_iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes (0 when disjoint or empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _targets(target: Any) -> list[list[float]]:
    if target and isinstance(target[0], (int, float)):
        return [list(target)]
    return [list(t) for t in target or []]


def best_iou(prediction: Any, target: Any) -> float:
    if not prediction:
        return 0.0
    return max((box_iou(list(prediction), t) for t in _targets(target)), default=0.0)


MEAN_IOU = Metric(
    name="mean_iou",
    description="Mean over samples of the IoU between the predicted box and the best-matching target box.",
    stats=lambda p, t, ctx: [best_iou(p, t)],
    reduce=mean_reduce,
    sample_value=first_column,
)

ACC_AT_IOU50 = Metric(
    name="acc_iou50",
    description="Fraction of samples whose predicted box has IoU >= 0.5 with a target box.",
    stats=lambda p, t, ctx: [float(best_iou(p, t) >= 0.5)],
    reduce=mean_reduce,
    sample_value=first_column,
)
