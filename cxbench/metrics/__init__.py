"""Metric registry: metrics are registered by name and imported only when first used.

>>> from cxbench import metrics
>>> metrics.compute("accuracy", ["yes", "no"], ["yes", "yes"])
0.5

Heavy metrics (model-based ones) live in their own modules, so importing cxbench loads no
model and starts no Java; ``get`` imports a metric's module the first time it is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from cxbench.metrics.base import Metric, MetricContext

# name -> "module:attribute" (an attribute that is a dict is indexed by the metric name);
# a plugin may add entries with ``register_lazy``.
_LAZY: dict[str, str] = {
    "accuracy": "cxbench.metrics.classification:ACCURACY",
    "macro_f1": "cxbench.metrics.classification:MACRO_F1",
    "mean_recall_at_1": "cxbench.metrics.classification:MEAN_RECALL_AT_1",
    "exact_match": "cxbench.metrics.text:EXACT_MATCH",
    "token_f1": "cxbench.metrics.text:TOKEN_F1",
    "bleu1": "cxbench.metrics.nlg:BLEU1",
    "bleu2": "cxbench.metrics.nlg:BLEU2",
    "bleu3": "cxbench.metrics.nlg:BLEU3",
    "bleu4": "cxbench.metrics.nlg:BLEU4",
    "rouge_l": "cxbench.metrics.nlg:ROUGE_L",
    "mean_iou": "cxbench.metrics.grounding:MEAN_IOU",
    "acc_iou50": "cxbench.metrics.grounding:ACC_AT_IOU50",
    "map50": "cxbench.metrics.detection:MAP50",
    "cider_d": "cxbench.metrics.nlg:CIDER_D",
    "meteor": "cxbench.metrics.nlg:METEOR",
    "spice": "cxbench.metrics.nlg:SPICE",
    "bertscore_p_minilm": "cxbench.metrics.bertscore:BERTSCORE_P",
    "bertscore_r_minilm": "cxbench.metrics.bertscore:BERTSCORE_R",
    "bertscore_f1_minilm": "cxbench.metrics.bertscore:BERTSCORE_F1",
    **{
        name: "cxbench.metrics.clinical:CLINICAL_METRICS"
        for name in (
            *(f"chexpert_{a}_f1_{n}{v}" for a in ("micro", "macro") for n in (14, 5) for v in ("", "_upos")),
            "chexpert_micro_precision_14",
            "chexpert_micro_recall_14",
        )
    },
    **{
        name: "cxbench.metrics.reasoning:REASONING_METRICS"
        for name in (
            "format_valid",
            "reasoning_steps",
            "think_token_ratio",
            "verdict_accuracy",
            "self_consistency",
            "hallucination_rate",
            "omission_rate",
            "grounding_iou",
            "grounding_acc50",
        )
    },
    **{
        f"radgraph_f1_{variant}": "cxbench.metrics.radgraph:RADGRAPH_METRICS"
        for variant in ("simple", "partial", "complete")
    },
    **{
        f"chexbert_{avg}_f1_{n}": "cxbench.metrics.chexbert:CHEXBERT_METRICS"
        for avg in ("micro", "macro")
        for n in (14, 5)
    },
}
_LOADED: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Register an already-built metric under its name."""
    _LOADED[metric.name] = metric
    return metric


def register_lazy(name: str, target: str) -> None:
    """Register ``"module:attribute"`` to be imported when ``name`` is first requested."""
    _LAZY[name] = target


def names() -> list[str]:
    """All registered metric names, sorted."""
    return sorted(set(_LAZY) | set(_LOADED))


def get(name: str) -> Metric:
    """The metric called ``name``; raises KeyError listing the known names."""
    if name in _LOADED:
        return _LOADED[name]
    if name not in _LAZY:
        raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(names())}")
    module_name, attribute = _LAZY[name].split(":")
    metric = getattr(importlib.import_module(module_name), attribute)
    if isinstance(metric, dict):
        metric = metric[name]
    _LOADED[name] = metric
    return metric


def corpus_matrix(
    metric: Metric, predictions: Sequence[Any], references: Sequence[Any], ctx: MetricContext
) -> tuple[np.ndarray, float]:
    """The (n, k) stats matrix of a corpus and the metric's value on it."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if len(predictions) == 0:
        return np.zeros((0, 1)), float("nan")
    if metric.corpus_stats is not None:
        matrix, value = metric.corpus_stats(list(predictions), list(references), ctx)
        matrix = np.asarray(matrix, dtype=float).reshape(len(predictions), -1)
        return matrix, float(metric.reduce(matrix) if value is None else value)
    rows = [metric.stats(p, r, ctx) for p, r in zip(predictions, references, strict=True)]
    matrix = np.asarray(rows, dtype=float).reshape(len(rows), -1)
    return matrix, float(metric.reduce(matrix))


def compute(
    name: str,
    predictions: Sequence[Any],
    references: Sequence[Any],
    labels: Sequence[str] | None = None,
    **options: Any,
) -> float:
    """Score parsed predictions against references with metric ``name``, in one call.

    ``options`` are the metric's options (as a task's ``metric_args`` would give them).
    """
    metric = get(name)
    if metric.needs_labels and labels is None:
        labels = sorted({str(r[0] if isinstance(r, (list, tuple)) else r) for r in references})
    ctx = MetricContext(labels=tuple(labels or ()), options=options)
    return corpus_matrix(metric, predictions, references, ctx)[1]


__all__ = ["Metric", "MetricContext", "compute", "get", "names", "register", "register_lazy"]
