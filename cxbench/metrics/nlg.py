"""Report-text metrics: corpus BLEU-1..4 and ROUGE-L, computed as pycocoevalcap does.

Tokenisation here is ``simple_tokenize``: lower case, words and numbers only, punctuation
dropped, which is what the PTB tokenizer used by the COCO protocol yields on plain report
prose apart from rare contractions. BLEU follows pycocoevalcap's ``BleuScorer``
(corpus-level clipped n-gram precisions, the same tiny/small smoothing constants, the
"closest" reference length and the corpus brevity penalty); ROUGE-L follows its ``Rouge``
(LCS-based F-measure with beta = 1.2, averaged over samples).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import numpy as np

from cxbench.metrics.base import Metric, MetricContext, first_column, mean_reduce

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_TINY = 1e-15  # pycocoevalcap BleuScorer constants
_SMALL = 1e-9
MAX_N = 4


def simple_tokenize(text: str) -> list[str]:
    """Lower-case word/number tokens, punctuation dropped."""
    return _WORD.findall(text.lower())


def _references(target: Any) -> list[str]:
    if isinstance(target, (list, tuple)):
        return [str(t) for t in target]
    return [str(target)]


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu_stats(prediction: Any, target: Any, ctx: MetricContext | None = None) -> list[float]:
    """[matches_1..4, totals_1..4, hyp_len, ref_len] for one sample (closest reference length)."""
    hyp = simple_tokenize("" if prediction is None else str(prediction))
    refs = [simple_tokenize(r) for r in _references(target)]
    stats: list[float] = []
    totals: list[float] = []
    for n in range(1, MAX_N + 1):
        hyp_counts = _ngrams(hyp, n)
        max_ref: Counter = Counter()
        for ref in refs:
            for gram, count in _ngrams(ref, n).items():
                max_ref[gram] = max(max_ref[gram], count)
        stats.append(float(sum(min(c, max_ref[g]) for g, c in hyp_counts.items())))
        totals.append(float(max(len(hyp) - n + 1, 0)))
    ref_len = min((len(r) for r in refs), key=lambda length: (abs(length - len(hyp)), length))
    return stats + totals + [float(len(hyp)), float(ref_len)]


def corpus_bleu(matrix: np.ndarray, n: int) -> float:
    """BLEU-n from summed per-sample statistics (pycocoevalcap's corpus formula)."""
    if len(matrix) == 0:
        return 0.0
    sums = matrix.sum(axis=0)
    matches, totals = sums[:MAX_N], sums[MAX_N : 2 * MAX_N]
    hyp_len, ref_len = sums[2 * MAX_N], sums[2 * MAX_N + 1]
    log_precision = sum(math.log((matches[k] + _TINY) / (totals[k] + _SMALL)) for k in range(n)) / n
    ratio = (hyp_len + _TINY) / (ref_len + _SMALL)
    brevity = 1.0 if ratio >= 1 else math.exp(1 - 1 / ratio)
    return float(math.exp(log_precision) * brevity)


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: Any, target: Any, beta: float = 1.2) -> float:
    """ROUGE-L F-measure, max precision/recall over references as in pycocoevalcap."""
    hyp = simple_tokenize("" if prediction is None else str(prediction))
    if not hyp:
        return 0.0
    precisions, recalls = [], []
    for ref in (simple_tokenize(r) for r in _references(target)):
        lcs = _lcs(ref, hyp)
        precisions.append(lcs / len(hyp))
        recalls.append(lcs / len(ref) if ref else 0.0)
    p, r = max(precisions), max(recalls)
    if p == 0 or r == 0:
        return 0.0
    return ((1 + beta**2) * p * r) / (r + beta**2 * p)


def _bleu_metric(n: int) -> Metric:
    return Metric(
        name=f"bleu{n}",
        description=f"Corpus BLEU-{n} (pycocoevalcap BleuScorer formula, simple word tokenisation).",
        stats=bleu_stats,
        reduce=lambda m, n=n: corpus_bleu(m, n),
        averaging="corpus",
        citation="Papineni et al., 2002; COCO caption evaluation (pycocoevalcap)",
    )


BLEU1, BLEU2, BLEU3, BLEU4 = (_bleu_metric(n) for n in range(1, MAX_N + 1))

ROUGE_L = Metric(
    name="rouge_l",
    description="ROUGE-L F-measure (beta 1.2, pycocoevalcap formula, simple word tokenisation), averaged.",
    stats=lambda p, t, ctx: [rouge_l(p, t)],
    reduce=mean_reduce,
    sample_value=first_column,
    citation="Lin, 2004",
)
