"""Detection metric: mean average precision at IoU >= 0.5 (``map50``).

A detection-style sample is one image and one class (``Sample.query["finding"]``) with all
the ground-truth boxes of that class as its target; the model answers with zero or more
boxes. ``map50`` is computed the way object detectors are scored:

1. **Confidence.** A prediction may carry a score (``[x1, y1, x2, y2, score]`` or
   ``{"box": [...], "score": s}``; the ``detection`` answer parser reads JSON such as
   ``{"bbox_2d": [...], "score": 0.8}``). A model that gives bare boxes gets rank-order
   confidences: its k-th box (k = 0, 1, ...) scores ``1 / (k + 1)``, i.e. the order of the
   answer is taken as its ranking. Only the ``max_detections`` highest-scoring boxes of a
   sample count (default 20; ``metric_args: {map50: {max_detections: N}}``).
2. **Matching** (per sample, so per image and class): predictions in descending score order
   (answer order on ties) are matched greedily, each to the still-unmatched target box with
   the highest IoU if that IoU is >= 0.5 (COCO-style); a match is a true positive, anything
   else (a duplicate of a matched box, a box elsewhere) a false positive. Unmatched target
   boxes are false negatives.
3. **AP per class**: the true/false positives of every sample of the class, pooled and sorted
   by score, give a precision-recall curve; AP is its area with *all-point interpolation*
   (PASCAL VOC 2010+: precision at each recall level replaced by the best precision at any
   higher recall). Equal scores are one operating point (the curve only gets a point after
   the whole tie group), so AP never depends on how ties are ordered; with rank-order
   confidences this matters: every answer's first box ties at 1.0. A class with target boxes
   but no prediction has AP 0; a class without target boxes is left out (as in COCO).
4. ``map50`` = mean AP over the classes present in the targets.

Sufficient statistics: each sample's row is ``[class code, number of target boxes, score_1..K,
tp_1..K]`` (K = ``max_detections``, unused slots score -1), computed once by ``corpus_stats``
because class codes are assigned over the corpus (task labels first, in their order; other
class names after them, sorted). Matching only depends on the sample itself, so
``reduce`` recomputes the exact mAP of any subset of rows: the bootstrap CI resamples samples
(images x classes) with replacement. Per-class AP is kept in the result's ``breakdown``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from cxbench.metrics.base import Metric, MetricContext, Output
from cxbench.metrics.grounding import box_iou

DEFAULT_MAX_DETECTIONS = 20

Detection = tuple[list[float], float]  # (box, score)


# ---------------------------------------------------------------------------------------------
# predictions and matching


def _is_box(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) in (4, 5)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def detections_of(prediction: Any) -> list[Detection]:
    """``(box, score)`` pairs of a parsed prediction, in answer order.

    Accepts None (no boxes), one box ``[x1, y1, x2, y2]``, a list of boxes, boxes with a fifth
    value (the score), and ``{"box": [...], "score": s}`` mappings. Boxes without a score get
    the rank-order confidence ``1 / (k + 1)``. Boxes that are not four finite numbers with
    ``x2 > x1`` and ``y2 > y1`` are dropped.
    """
    if prediction is None:
        return []
    items = [prediction] if _is_box(prediction) or isinstance(prediction, dict) else list(prediction)
    found: list[Detection] = []
    for rank, item in enumerate(items):
        score: Any = None
        if isinstance(item, dict):
            box, score = item.get("box"), item.get("score")
        elif _is_box(item):
            box, score = list(item[:4]), (item[4] if len(item) == 5 else None)
        else:
            continue
        if not _is_box(box) or len(box) != 4:
            continue
        box = [float(v) for v in box]
        if not all(math.isfinite(v) for v in box) or not (box[2] > box[0] and box[3] > box[1]):
            continue
        if score is None:
            score = 1.0 / (rank + 1)
        score = float(score)
        if not math.isfinite(score):
            continue
        found.append((box, max(score, 0.0)))
    return found


def target_boxes(target: Any) -> list[list[float]]:
    """The ground-truth boxes of a target: one box, a list of boxes, or ``{"boxes": [...]}``."""
    if isinstance(target, dict):
        target = target.get("boxes")
    if not target:
        return []
    if _is_box(target):
        return [[float(v) for v in target[:4]]]
    return [[float(v) for v in box[:4]] for box in target]


def match(
    detections: Sequence[Detection], targets: Sequence[Sequence[float]], iou_threshold: float = 0.5
) -> list[tuple[float, bool]]:
    """``(score, is_true_positive)`` per detection, in descending score order (stable).

    Greedy: each detection takes the still-unmatched target with the highest IoU, if that IoU
    is >= ``iou_threshold``; otherwise it is a false positive.
    """
    order = sorted(range(len(detections)), key=lambda i: -detections[i][1])
    free = list(range(len(targets)))
    out = []
    for i in order:
        box, score = detections[i]
        best, best_iou = None, -1.0
        for j in free:
            iou = box_iou(box, list(targets[j]))
            if iou > best_iou:
                best, best_iou = j, iou
        hit = best is not None and best_iou >= iou_threshold
        if hit:
            free.remove(best)  # type: ignore[arg-type]
        out.append((score, hit))
    return out


def average_precision(scores: np.ndarray, hits: np.ndarray, n_targets: float) -> float:
    """All-point interpolated AP of pooled detections; tied scores form one operating point.

    NaN when there are no targets; 0 when there are targets but no detections.
    """
    if n_targets <= 0:
        return float("nan")
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    cum_tp = np.cumsum(np.asarray(hits, dtype=float)[order])
    count = np.arange(1, scores.size + 1, dtype=float)
    group_end = np.r_[scores[1:] != scores[:-1], True]
    recall = cum_tp[group_end] / n_targets
    precision = cum_tp[group_end] / count[group_end]
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * envelope))


# ---------------------------------------------------------------------------------------------
# sufficient statistics


def _class_name(prediction: Any, reference: Any) -> str:
    if isinstance(reference, dict) and reference.get("label") is not None:
        return str(reference["label"])
    if isinstance(prediction, Output):
        return str((getattr(prediction.sample, "query", None) or {}).get("finding", ""))
    return ""


def _class_codes(names: list[str], labels: Sequence[str]) -> dict[str, int]:
    known = {label.lower(): i for i, label in enumerate(labels)}
    extras = sorted({n for n in names if n.lower() not in known})
    codes = {name: known[name.lower()] for name in names if name.lower() in known}
    codes.update({name: len(labels) + i for i, name in enumerate(extras)})
    return codes


def sample_rows(
    predictions: Sequence[Any],
    references: Sequence[Any],
    labels: Sequence[str] = (),
    iou_threshold: float = 0.5,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
) -> np.ndarray:
    """The ``(n, 2 + 2K)`` statistics matrix (see the module docstring)."""
    k = int(max_detections)
    if k < 1:
        raise ValueError(f"max_detections must be >= 1, not {max_detections!r}")
    names = [_class_name(p, r) for p, r in zip(predictions, references, strict=True)]
    codes = _class_codes(names, labels)
    matrix = np.zeros((len(names), 2 + 2 * k))
    matrix[:, 2 : 2 + k] = -1.0
    for row, (prediction, reference, name) in enumerate(zip(predictions, references, names, strict=True)):
        parsed = prediction.parsed if isinstance(prediction, Output) else prediction
        detections = detections_of(parsed)
        detections = sorted(detections, key=lambda d: -d[1])[:k]  # stable: answer order on ties
        gts = target_boxes(reference)
        matrix[row, 0] = codes[name]
        matrix[row, 1] = len(gts)
        for j, (score, hit) in enumerate(match(detections, gts, iou_threshold)):
            matrix[row, 2 + j] = score
            matrix[row, 2 + k + j] = float(hit)
    return matrix


def per_class_ap(matrix: np.ndarray) -> dict[int, float]:
    """AP of every class code with at least one target box in ``matrix``."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.size == 0:
        return {}
    k = (matrix.shape[1] - 2) // 2
    codes, n_targets = matrix[:, 0], matrix[:, 1]
    scores, hits = matrix[:, 2 : 2 + k], matrix[:, 2 + k : 2 + 2 * k]
    out = {}
    for code in np.unique(codes):
        rows = codes == code
        total = float(n_targets[rows].sum())
        if total <= 0:
            continue
        s, h = scores[rows].ravel(), hits[rows].ravel()
        used = s >= 0
        out[int(code)] = average_precision(s[used], h[used], total)
    return out


def map_reduce(matrix: np.ndarray) -> float:
    """Mean AP over the classes with target boxes; NaN if there are none."""
    aps = per_class_ap(matrix)
    return float(np.mean(list(aps.values()))) if aps else float("nan")


def make_map_metric(name: str, iou_threshold: float) -> Metric:
    """A mAP metric at one IoU threshold (``map50`` is ``make_map_metric("map50", 0.5)``)."""

    def corpus_stats(predictions: list[Any], references: list[Any], ctx: MetricContext):
        k = int(ctx.options.get("max_detections", DEFAULT_MAX_DETECTIONS))
        return sample_rows(predictions, references, ctx.labels, iou_threshold, k), None

    return Metric(
        name=name,
        description=(
            f"Mean over classes of the average precision at IoU >= {iou_threshold:g} (greedy matching per "
            "image and class, all-point interpolation; bare boxes ranked by answer order)."
        ),
        stats=None,
        reduce=map_reduce,
        averaging="macro",
        corpus_stats=corpus_stats,
        inputs="output",
        breakdown=lambda matrix: {str(code): ap for code, ap in per_class_ap(matrix).items()},
        ci_method="percentile bootstrap over samples (image x class); matching is per sample",
        extra={"iou_threshold": iou_threshold, "interpolation": "all-point"},
    )


MAP50 = make_map_metric("map50", 0.5)


# ---------------------------------------------------------------------------------------------
# answers with several boxes (the ``detection`` answer parser of detection tasks)

_OBJECT_RE = re.compile(r"\{[^{}]{0,400}\}")
_BOX_KEYS = ("bbox_2d", "bbox", "box")
_SCORE_KEYS = ("score", "confidence", "conf", "probability")


def parse_detections(text: str, image_size: Sequence[float], scale: str = "auto") -> list[list[float]] | None:
    """Every box of an answer, normalised to [0, 1]; ``[x1, y1, x2, y2, score]`` when scored.

    JSON objects such as ``{"bbox_2d": [x1, y1, x2, y2], "score": 0.8}`` give scored boxes
    when every object found has a numeric score; otherwise all boxes are read with
    :func:`cxbench.parsing.parse_boxes` (same forms and scale rules as the single-box parser)
    and ranked by answer order. None when the answer has no box.
    """
    from cxbench import parsing

    size = (int(image_size[0]), int(image_size[1]))
    scored: list[list[float]] = []
    objects = _OBJECT_RE.findall(parsing.final_answer(text) or text or "")
    for chunk in objects:
        try:
            item = json.loads(chunk)
        except ValueError:
            scored = []
            break
        box = next((item[k] for k in _BOX_KEYS if isinstance(item, dict) and k in item), None)
        score = next((item[k] for k in _SCORE_KEYS if isinstance(item, dict) and k in item), None)
        boxes = parsing.parse_boxes(json.dumps(box), size, scale) if isinstance(box, list) else []
        if len(boxes) != 1 or isinstance(score, bool) or not isinstance(score, (int, float)):
            scored = []
            break
        scored.append([*boxes[0], float(score)])
    if scored:
        return scored
    return parsing.parse_boxes(text, size, scale) or None


def parse_detection_answer(text: str, sample: Any, args: dict[str, Any]) -> list[list[float]] | None:
    """Task hook form of :func:`parse_detections`: the image size comes from the sample."""
    size = (sample.metadata or {}).get("image_size")
    if not size:
        raise ValueError(f"sample {sample.id!r} has no metadata.image_size to read pixel boxes with")
    return parse_detections(text, size, args.get("box_scale", "auto"))
