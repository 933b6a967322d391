"""Label metrics: accuracy, macro-F1, and mean recall@1 over diseases.

Predictions are parsed answers (a label, an option letter, "yes"/"no", or a ranked list
of labels); ``None`` means the output could not be parsed and always counts as wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cxbench.metrics.base import Metric, MetricContext, first_column, mean_reduce


def _norm(value: Any) -> str | None:
    return None if value is None else str(value).strip().lower()


def _gold_label(target: Any) -> Any:
    """A classification target is a label, or a one-element list of labels."""
    if isinstance(target, (list, tuple)):
        return target[0] if target else None
    return target


def _accuracy_stats(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    gold = _norm(_gold_label(target))
    pred = _norm(_gold_label(prediction))
    return [float(pred is not None and pred == gold)]


def _class_indices(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    gold = ctx.label_index(_gold_label(target))
    if gold < 0:
        raise ValueError(f"target {target!r} is not one of the task's labels {list(ctx.labels)}")
    return [float(gold), float(ctx.label_index(_gold_label(prediction)))]


def macro_f1_from_pairs(gold: np.ndarray, pred: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over classes seen in gold or (valid) predictions.

    An unparsed prediction (-1) is a miss for its gold class and no class's false positive.
    """
    classes = np.union1d(gold, pred[pred >= 0])
    if classes.size == 0:
        return 0.0
    scores = []
    for c in classes:
        tp = np.sum((gold == c) & (pred == c))
        fp = np.sum((gold != c) & (pred == c))
        fn = np.sum((gold == c) & (pred != c))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def _macro_f1_reduce(matrix: np.ndarray) -> float:
    if len(matrix) == 0:
        return 0.0
    return macro_f1_from_pairs(matrix[:, 0].astype(int), matrix[:, 1].astype(int))


def _recall1_stats(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    gold_label = _gold_label(target)
    gold = ctx.label_index(gold_label)
    if gold < 0:
        raise ValueError(f"target {target!r} is not one of the task's labels {list(ctx.labels)}")
    top = _gold_label(prediction)  # the first ranked label
    return [float(gold), float(_norm(top) is not None and _norm(top) == _norm(gold_label))]


def per_class_recall(matrix: np.ndarray) -> dict[int, float]:
    """Recall@1 of each gold class in a (gold, hit) matrix."""
    gold = matrix[:, 0].astype(int)
    return {int(c): float(np.mean(matrix[gold == c, 1])) for c in np.unique(gold)}


def _recall1_reduce(matrix: np.ndarray) -> float:
    if len(matrix) == 0:
        return 0.0
    return float(np.mean(list(per_class_recall(matrix).values())))


ACCURACY = Metric(
    name="accuracy",
    description="Fraction of samples whose parsed answer equals the target (case-insensitive).",
    stats=_accuracy_stats,
    reduce=mean_reduce,
    averaging="mean",
    sample_value=first_column,
)

MACRO_F1 = Metric(
    name="macro_f1",
    description=(
        "Unweighted mean of per-class F1 over the classes present in targets or valid predictions; "
        "unparsed answers count as misses."
    ),
    stats=_class_indices,
    reduce=_macro_f1_reduce,
    averaging="macro",
    sample_value=lambda row: float(row[0] == row[1]),
    needs_labels=True,
)

MEAN_RECALL_AT_1 = Metric(
    name="mean_recall_at_1",
    description=(
        "Top-1 recall per disease (is the first ranked diagnosis the target?), averaged over the "
        "diseases present in the targets (Rui-CXR style)."
    ),
    stats=_recall1_stats,
    reduce=_recall1_reduce,
    averaging="macro",
    sample_value=lambda row: float(row[1]),
    needs_labels=True,
    citation="CX-Mind (Li et al., 2025), Rui-CXR top-1 diagnosis protocol",
    breakdown=lambda matrix: {str(k): v for k, v in per_class_recall(matrix).items()},
)
