"""The Metric record: how one score is computed from per-sample statistics.

Every metric works in two steps so that bootstrap CIs, re-scoring and corpus-level
metrics share one mechanism:

1. ``stats(prediction, target, ctx)`` turns one sample into a short vector of numbers
   (its sufficient statistics: a 0/1 hit, an IoU, clipped n-gram counts, ...);
2. ``reduce(matrix)`` turns the ``(n, k)`` matrix of those vectors into the score.

A mean metric reduces with ``mean``; corpus BLEU sums counts; macro-F1 builds a confusion
table. Bootstrap resamples rows of the matrix and reduces again.

Metrics that need the whole corpus at once (a Java tool, a model scoring in batches,
document frequencies) set ``corpus_stats`` instead of ``stats``: it receives all parsed
predictions and references of a run and returns the ``(n, k)`` matrix, plus optionally the
point estimate when that is not ``reduce(matrix)`` (e.g. METEOR's aggregate score); the CI
then comes from bootstrapping ``reduce`` over the rows and ``ci_method`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Output:
    """What a metric with ``inputs="output"`` receives as its prediction: the model's raw text,
    the parsed answer and the whole Sample (for metrics on the reasoning itself)."""

    raw: str
    parsed: Any
    sample: Any


CorpusStats = Callable[[list[Any], list[Any], "MetricContext"], tuple[np.ndarray, float | None]]


@dataclass(frozen=True)
class MetricContext:
    """Task facts a metric may need: the class labels of a classification task."""

    labels: tuple[str, ...] = ()
    #: per-metric options from the task YAML's ``metric_args`` (e.g. a BERTScore model path)
    options: dict[str, Any] = field(default_factory=dict)

    def label_index(self, value: Any) -> int:
        """Index of ``value`` in ``labels`` (case-insensitive), or -1 if absent/None."""
        if value is None:
            return -1
        text = str(value).strip().lower()
        for i, label in enumerate(self.labels):
            if label.lower() == text:
                return i
        return -1


@dataclass(frozen=True)
class Metric:
    """A named score with its metadata and its stats/reduce functions."""

    name: str
    description: str
    stats: Callable[[Any, Any, MetricContext], Sequence[float]] | None
    reduce: Callable[[np.ndarray], float]
    direction: str = "higher"  # "higher" or "lower" is better
    range: tuple[float, float] = (0.0, 1.0)
    averaging: str = "mean"  # mean | macro | micro | corpus
    #: turns one sample's stats row into a per-sample value for logs (None: not defined)
    sample_value: Callable[[np.ndarray], float | None] | None = None
    citation: str = ""
    model: str | None = None  # the scoring model, for model-based metrics
    needs_labels: bool = False
    #: whole-corpus alternative to ``stats`` (see the module docstring)
    corpus_stats: CorpusStats | None = None
    #: "parsed": stats/corpus_stats get parsed answers; "output": they get ``Output`` records
    inputs: str = "parsed"
    #: per-class values (e.g. F1 per CheXpert observation) from the stats matrix, kept in results
    breakdown: Callable[[np.ndarray], dict[str, float]] | None = None
    #: how the 95% CI is obtained, recorded in results
    ci_method: str = "percentile bootstrap over samples"
    extra: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """Metadata recorded in result files and listed by ``cxbench metrics``."""
        return {
            "name": self.name,
            "description": self.description,
            "direction": self.direction,
            "range": list(self.range),
            "averaging": self.averaging,
            "model": self.model,
            "citation": self.citation,
            "ci_method": self.ci_method,
        }


def mean_reduce(matrix: np.ndarray) -> float:
    """Mean of the first column; 0.0 on an empty set."""
    if len(matrix) == 0:
        return 0.0
    return float(np.mean(matrix[:, 0]))


def first_column(row: np.ndarray) -> float:
    return float(row[0])
