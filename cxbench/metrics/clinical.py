"""Clinical-efficacy metrics of report generation: CheXpert-label F1 of generated vs reference reports.

Both the generated report and the reference are labeled with the rule-based CheXpert-14
labeler (:mod:`cxbench.metrics.chexpert_labeler`); an observation counts as *positive* in a report
when its label is 1 ("positive-only" metrics, the usual convention of CXR report-generation
papers) or when it is 1 or -1 ("uncertain-as-positive" metrics, suffix ``_upos``). Negative (0) and
blank labels are not positive.

Per sample, ``stats`` returns ``[tp, fp, fn]`` for each of the 14 observations in
:data:`~cxbench.metrics.chexpert_labeler.OBSERVATIONS` order (42 numbers); a ``None`` prediction
(unparsed output) is an empty report, which has no positive label. ``reduce`` sums the counts over
samples and computes:

* **micro F1** over a set of observations: ``2 TP / (2 TP + FP + FN)`` with TP, FP, FN summed over
  the observations; 0.0 when there is no positive at all in predictions or references;
* **macro F1**: the unweighted mean of the per-observation F1 ``2 tp / (2 tp + fp + fn)`` over the
  observations that have at least one positive in the predictions or in the references; an
  observation with no positive anywhere (F1 undefined) is left out of the mean, and the score is
  0.0 when every observation is left out;
* **micro precision / recall**: ``TP / (TP + FP)`` and ``TP / (TP + FN)`` (0.0 when undefined).

"14" metrics use all 14 observations (including No Finding and Support Devices); "5" metrics use
the five common observations :data:`~cxbench.metrics.chexpert_labeler.COMMON_5` (Atelectasis,
Cardiomegaly, Consolidation, Edema, Pleural Effusion). Bootstrap CIs resample samples (rows) and
recompute the score from the resampled counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cxbench.metrics.base import Metric, MetricContext
from cxbench.metrics.chexpert_labeler import COMMON_5, OBSERVATIONS, label_vector

N_OBS = len(OBSERVATIONS)
#: column of the tp / fp / fn count of observation ``i`` in a stats row: ``3 * i + k``
TP, FP, FN = 0, 1, 2
ALL_14: tuple[int, ...] = tuple(range(N_OBS))
COMMON_5_IDX: tuple[int, ...] = tuple(OBSERVATIONS.index(name) for name in COMMON_5)
MODEL = "rule-based CheXpert-14 labeler (cxbench)"
CITATION = (
    "Irvin et al., 2019, CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert "
    "Comparison (AAAI), for the CheXpert observations and labeling conventions; clinical-efficacy "
    "micro/macro F1 over 14 and 5 observations as in CXR report-generation papers (e.g. Miura et al., "
    "2021, NAACL)"
)


def report_text(value: Any) -> str:
    """The text of a report: a string, a ``{"findings", "impression"}`` dict, or a list (first item).

    ``None`` (an unparsed prediction) is the empty report.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        parts = [value.get(k) for k in ("findings", "impression") if value.get(k)]
        if not parts:
            parts = [v for v in value.values() if isinstance(v, str)]
        return "\n\n".join(str(p) for p in parts)
    if isinstance(value, (list, tuple)):
        return report_text(value[0]) if value else ""
    return str(value)


def _positive_flags(text: str, uncertain_positive: bool) -> list[bool]:
    labels = label_vector(text)
    if uncertain_positive:
        return [v == 1.0 or v == -1.0 for v in labels]
    return [v == 1.0 for v in labels]


def chexpert_counts(prediction: Any, reference: Any, uncertain_positive: bool = False) -> list[float]:
    """Per-observation ``[tp, fp, fn]`` (42 numbers) of one generated report against its reference."""
    pred = _positive_flags(report_text(prediction), uncertain_positive)
    gold = _positive_flags(report_text(reference), uncertain_positive)
    row: list[float] = []
    for p, g in zip(pred, gold, strict=True):
        row += [float(p and g), float(p and not g), float(g and not p)]
    return row


def summed_counts(matrix: np.ndarray) -> np.ndarray:
    """The ``(14, 3)`` tp / fp / fn counts summed over the samples of a stats matrix."""
    matrix = np.asarray(matrix, dtype=float).reshape(-1, 3 * N_OBS)
    return matrix.sum(axis=0).reshape(N_OBS, 3)


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else float("nan")


def micro_f1(matrix: np.ndarray, observations: Sequence[int] = ALL_14) -> float:
    """Micro F1 over ``observations`` (indices) from a stats matrix; 0.0 without any positive."""
    tp, fp, fn = summed_counts(matrix)[list(observations)].sum(axis=0)
    value = _f1(tp, fp, fn)
    return 0.0 if np.isnan(value) else float(value)


def macro_f1(matrix: np.ndarray, observations: Sequence[int] = ALL_14) -> float:
    """Mean per-observation F1 over ``observations`` that have a positive anywhere (else 0.0)."""
    counts = summed_counts(matrix)
    scores = [_f1(*counts[i]) for i in observations]
    scores = [s for s in scores if not np.isnan(s)]
    return float(np.mean(scores)) if scores else 0.0


def micro_precision(matrix: np.ndarray, observations: Sequence[int] = ALL_14) -> float:
    """TP / (TP + FP) summed over ``observations``; 0.0 without predicted positives."""
    tp, fp, _ = summed_counts(matrix)[list(observations)].sum(axis=0)
    return float(tp / (tp + fp)) if tp + fp else 0.0


def micro_recall(matrix: np.ndarray, observations: Sequence[int] = ALL_14) -> float:
    """TP / (TP + FN) summed over ``observations``; 0.0 without reference positives."""
    tp, _, fn = summed_counts(matrix)[list(observations)].sum(axis=0)
    return float(tp / (tp + fn)) if tp + fn else 0.0


def per_observation_f1(matrix: np.ndarray) -> dict[str, float]:
    """F1 of each of the 14 observations from a stats matrix (NaN when it has no positive anywhere)."""
    counts = summed_counts(matrix)
    return {name: float(_f1(*counts[i])) for i, name in enumerate(OBSERVATIONS)}


def _sample_value(observations: Sequence[int]) -> Callable[[np.ndarray], float | None]:
    """Per-sample micro F1 for logs (None when the pair has no positive)."""

    def value(row: np.ndarray) -> float | None:
        tp, fp, fn = np.asarray(row, dtype=float).reshape(N_OBS, 3)[list(observations)].sum(axis=0)
        f1 = _f1(tp, fp, fn)
        return None if np.isnan(f1) else float(f1)

    return value


def _stats(uncertain_positive: bool) -> Callable[[Any, Any, MetricContext], list[float]]:
    def stats(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
        return chexpert_counts(prediction, target, uncertain_positive)

    return stats


def _metric(
    name: str,
    description: str,
    reducer: Callable[[np.ndarray, Sequence[int]], float],
    observations: Sequence[int],
    uncertain_positive: bool,
    averaging: str,
) -> Metric:
    def reduce(matrix: np.ndarray) -> float:
        return reducer(matrix, observations)

    reduce.__name__ = f"{name}_reduce"
    return Metric(
        name=name,
        description=description,
        stats=_stats(uncertain_positive),
        reduce=reduce,
        averaging=averaging,
        sample_value=_sample_value(observations),
        citation=CITATION,
        model=MODEL,
        breakdown=per_observation_f1,
        extra={
            "observations": [OBSERVATIONS[i] for i in observations],
            "uncertain_as_positive": uncertain_positive,
        },
    )


_POSITIVE = {
    False: "an observation is positive when the labeler marks it positive (uncertain, negative and "
    "unmentioned are not positive)",
    True: "an observation is positive when the labeler marks it positive or uncertain (negative and "
    "unmentioned are not positive)",
}
_SETS = {
    "14": (ALL_14, "the 14 CheXpert observations"),
    "5": (COMMON_5_IDX, "the 5 common observations (" + ", ".join(COMMON_5) + ")"),
}


def _build() -> dict[str, Metric]:
    metrics: dict[str, Metric] = {}
    for upos in (False, True):
        suffix = "_upos" if upos else ""
        for size, (observations, what) in _SETS.items():
            base = (
                f"generated and reference reports are labeled with the rule-based CheXpert labeler; "
                f"{_POSITIVE[upos]}"
            )
            name = f"chexpert_micro_f1_{size}{suffix}"
            metrics[name] = _metric(
                name,
                f"Micro-averaged F1 over {what}: tp/fp/fn summed over observations and samples, "
                f"F1 = 2TP/(2TP+FP+FN) (0 when there is no positive at all); {base}.",
                micro_f1,
                observations,
                upos,
                "micro",
            )
            name = f"chexpert_macro_f1_{size}{suffix}"
            metrics[name] = _metric(
                name,
                f"Macro-averaged F1 over {what}: unweighted mean of per-observation F1 (counts summed "
                f"over samples), leaving out observations with no positive in either predictions or "
                f"references (0 when all are left out); {base}.",
                macro_f1,
                observations,
                upos,
                "macro",
            )
    base = (
        "generated and reference reports are labeled with the rule-based CheXpert labeler; "
        + _POSITIVE[False]
    )
    metrics["chexpert_micro_precision_14"] = _metric(
        "chexpert_micro_precision_14",
        f"Micro-averaged precision TP/(TP+FP) over the 14 CheXpert observations (0 without predicted "
        f"positives); {base}.",
        micro_precision,
        ALL_14,
        False,
        "micro",
    )
    metrics["chexpert_micro_recall_14"] = _metric(
        "chexpert_micro_recall_14",
        f"Micro-averaged recall TP/(TP+FN) over the 14 CheXpert observations (0 without reference "
        f"positives); {base}.",
        micro_recall,
        ALL_14,
        False,
        "micro",
    )
    return metrics


#: every clinical-efficacy metric by name (register them with ``register_lazy(name, ...)``)
CLINICAL_METRICS: dict[str, Metric] = _build()

# module-level names for the lazy registry ("cxbench.metrics.clinical:CHEXPERT_MICRO_F1_14")
CHEXPERT_MICRO_F1_14 = CLINICAL_METRICS["chexpert_micro_f1_14"]
CHEXPERT_MACRO_F1_14 = CLINICAL_METRICS["chexpert_macro_f1_14"]
CHEXPERT_MICRO_F1_5 = CLINICAL_METRICS["chexpert_micro_f1_5"]
CHEXPERT_MACRO_F1_5 = CLINICAL_METRICS["chexpert_macro_f1_5"]
CHEXPERT_MICRO_F1_14_UPOS = CLINICAL_METRICS["chexpert_micro_f1_14_upos"]
CHEXPERT_MACRO_F1_14_UPOS = CLINICAL_METRICS["chexpert_macro_f1_14_upos"]
CHEXPERT_MICRO_F1_5_UPOS = CLINICAL_METRICS["chexpert_micro_f1_5_upos"]
CHEXPERT_MACRO_F1_5_UPOS = CLINICAL_METRICS["chexpert_macro_f1_5_upos"]
CHEXPERT_MICRO_PRECISION_14 = CLINICAL_METRICS["chexpert_micro_precision_14"]
CHEXPERT_MICRO_RECALL_14 = CLINICAL_METRICS["chexpert_micro_recall_14"]

__all__ = [
    "CHEXPERT_MICRO_F1_14",
    "CHEXPERT_MACRO_F1_14",
    "CHEXPERT_MICRO_F1_5",
    "CHEXPERT_MACRO_F1_5",
    "CHEXPERT_MICRO_F1_14_UPOS",
    "CHEXPERT_MACRO_F1_14_UPOS",
    "CHEXPERT_MICRO_F1_5_UPOS",
    "CHEXPERT_MACRO_F1_5_UPOS",
    "CHEXPERT_MICRO_PRECISION_14",
    "CHEXPERT_MICRO_RECALL_14",
    "CLINICAL_METRICS",
    "chexpert_counts",
    "macro_f1",
    "micro_f1",
    "micro_precision",
    "micro_recall",
    "per_observation_f1",
    "report_text",
    "summed_counts",
]
