"""Short-answer text metrics (SQuAD style): exact match and token F1 after normalisation.

Normalisation (``cxbench.parsing.normalize_text``): lower case, NFKC, punctuation and the
articles a/an/the removed, white space collapsed. An unparsed answer scores 0.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from cxbench.metrics.base import Metric, MetricContext, first_column, mean_reduce
from cxbench.parsing import normalize_text


def _answers(target: Any) -> list[str]:
    """A target may be one answer or a list of acceptable answers."""
    if isinstance(target, (list, tuple)):
        return [str(t) for t in target]
    return [str(target)]


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall over normalised tokens."""
    pred_tokens = normalize_text(prediction).split()
    ref_tokens = normalize_text(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _em_stats(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    if prediction is None:
        return [0.0]
    pred = normalize_text(str(prediction))
    return [float(any(pred == normalize_text(a) for a in _answers(target)))]


def _f1_stats(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    if prediction is None:
        return [0.0]
    return [max(token_f1(str(prediction), a) for a in _answers(target))]


EXACT_MATCH = Metric(
    name="exact_match",
    description="Normalised answer equals a normalised target answer (SQuAD-style normalisation).",
    stats=_em_stats,
    reduce=mean_reduce,
    sample_value=first_column,
)

TOKEN_F1 = Metric(
    name="token_f1",
    description="Token-overlap F1 between normalised answer and target (best over targets), averaged.",
    stats=_f1_stats,
    reduce=mean_reduce,
    sample_value=first_column,
)
