"""Report-text metrics computed the COCO caption way: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (SPICE).

Protocol (as ``pycocoevalcap``'s ``COCOEvalCap``):

1. **Tokenisation** -- every prediction and reference goes through the Stanford PTB tokenizer
   shipped with pycocoevalcap (``stanford-corenlp-3.4.1.jar``, options ``-preserveLines
   -lowerCase``) and pycocoevalcap's punctuation list is dropped. ``ptb_tokenize`` does this
   in ONE Java call for the whole corpus (all predictions and references together); results
   are cached per corpus, so the seven metrics of a run tokenise once. It runs the exact
   command line and filter of ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer`` but feeds
   the text on standard input (no temporary file in site-packages), checks the exit code and
   the line count, and turns every line break the PTB lexer knows (not only ``\\n``) into a
   space so a report can never shift the lines of the others. Note the protocol keeps
   ``-lrb-``/``-rrb-`` tokens for parentheses (its punctuation list has the upper-case forms).
   Without Java (or without pycocoevalcap) it falls back to ``simple_tokenize`` -- lower-case
   words and numbers, punctuation dropped, which also splits ``1.5`` into ``1 5`` -- warns once,
   and ``tokenizer_in_use()`` says which tokenizer produced the last scores. The option
   ``tokenizer`` (``auto`` | ``ptb`` | ``simple``) forces one; ``ptb`` raises
   ``MetricUnavailable`` when Java is missing.
2. **Scores** on those tokens, each equal to the pycocoevalcap scorer on the same inputs:

   * ``bleu1``..``bleu4`` -- ``BleuScorer`` with the ``closest`` reference length: per-sample
     sufficient statistics (clipped n-gram matches, n-gram counts, hypothesis length, closest
     reference length), summed for the corpus score, so the bootstrap is exact; the per-sample
     value is pycocoevalcap's per-image BLEU.
   * ``rouge_l`` -- ``Rouge``: LCS F-measure with beta 1.2 (max precision / max recall over the
     references), averaged over samples.
   * ``cider_d`` -- ``Cider`` (the CIDEr-D variant: sigma 6 length penalty, clipped tf-idf
     n-gram vectors, x10), implemented here with the package's formula: document frequencies
     from the references of the corpus being scored; per-sample scores are the rows.
   * ``meteor`` -- ``Meteor``: pycocoevalcap's METEOR 1.5 jar (``-l en -norm``) run once per
     corpus; the value is the jar's corpus score, the rows its per-segment scores. The
     process is always shut down after use. Needs Java 8+, else ``MetricUnavailable``.
   * ``spice`` -- only when SPICE's Stanford CoreNLP 3.6.0 jars are in pycocoevalcap's
     ``spice/lib`` folder (``spice_available()``); otherwise asking for it raises
     ``MetricUnavailable`` naming the missing jar and folder (nothing is downloaded).

Predictions may be ``None`` (unparsed answer): scored as an empty hypothesis, which scores 0
for every metric (BLEU, CIDEr-D and METEOR give 0 by their formulas; ROUGE-L returns 0 for an
empty hypothesis without calling the LCS -- pycocoevalcap would give 1.0 when the reference
is empty as well). References may be a string or a list of strings (several references).

Importing this module starts no Java and imports neither pycocoevalcap nor torch.
"""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
import subprocess
import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxbench.metrics.base import Metric, MetricContext, first_column, mean_reduce


class MetricUnavailable(RuntimeError):
    """A metric cannot run here: its tool, jar or model is missing. The message says how to fix it."""


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_TINY = 1e-15  # pycocoevalcap BleuScorer constants
_SMALL = 1e-9
MAX_N = 4
CIDER_SIGMA = 6.0
ROUGE_BETA = 1.2

JAVA_HELP = (
    "Java 8 or newer must be on PATH (`java -version`). Install a JRE, e.g. "
    "`apt-get install default-jre-headless` (Debian/Ubuntu), `brew install openjdk` (macOS) or "
    "`conda install -c conda-forge openjdk`."
)
COCO_HELP = "Install pycocoevalcap: `pip install 'pycocoevalcap>=1.2'` (or `pip install cxbench[metrics]`)."

# line breaks of the PTB lexer (-preserveLines makes each one end a line)
_LINE_BREAKS = re.compile("[\r\n\u000b\u000c\u0085\u2028\u2029]")
_PTB_CLASS = "edu.stanford.nlp.process.PTBTokenizer"
_PTB_OPTIONS = ["-preserveLines", "-lowerCase"]
_SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


# ---------------------------------------------------------------- tokenisation


def simple_tokenize(text: str) -> list[str]:
    """Lower-case word/number tokens, punctuation dropped (the fallback tokenizer)."""
    return _WORD.findall(text.lower())


def java_available() -> bool:
    """True when a ``java`` executable is on PATH."""
    return shutil.which("java") is not None


def _coco_dir() -> Path | None:
    """pycocoevalcap's folder (it is a namespace package), found without importing it."""
    try:
        spec = importlib.util.find_spec("pycocoevalcap")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _ptb_problem() -> str | None:
    """Why the PTB tokenizer cannot run here, or None when it can."""
    if not java_available():
        return "no `java` on PATH"
    folder = _coco_dir()
    if folder is None:
        return "pycocoevalcap is not installed"
    jar = folder / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    if not jar.is_file():
        return f"{jar} is missing"
    return None


_state_lock = threading.Lock()
_last_tokenizer: str | None = None
_fallback_reason: str | None = None
_warned: set[str] = set()
_PTB_CACHE: OrderedDict[tuple[str, ...], list[str]] = OrderedDict()
_PTB_CACHE_SIZE = 8


def tokenizer_in_use() -> str:
    """``"ptb"`` or ``"simple"``: the tokenizer of the most recent tokenisation.

    Before any tokenisation: the one that would be used now (``"ptb"`` when Java and
    pycocoevalcap are available). ``tokenizer_fallback_reason()`` says why it is ``"simple"``.
    """
    if _last_tokenizer is not None:
        return _last_tokenizer
    return "ptb" if _ptb_problem() is None else "simple"


def tokenizer_fallback_reason() -> str | None:
    """Why the last tokenisation used the simple tokenizer (None if it used PTB or was asked to)."""
    return _fallback_reason if tokenizer_in_use() == "simple" else None


def _record(name: str, reason: str | None) -> None:
    global _last_tokenizer, _fallback_reason
    with _state_lock:
        _last_tokenizer, _fallback_reason = name, reason


def _run_ptb(lines: list[str], timeout: float) -> list[str]:
    """PTB-tokenise non-empty single-line texts in one Java call, as PTBTokenizer.tokenize does."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    folder = Path(ptbtokenizer.__file__).resolve().parent
    cmd = ["java", "-cp", ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR, _PTB_CLASS, *_PTB_OPTIONS]
    proc = subprocess.run(
        cmd,
        input="\n".join(lines).encode("utf-8"),
        capture_output=True,
        cwd=folder,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip()[-500:]
        raise RuntimeError(f"PTBTokenizer exited with {proc.returncode}: {tail}")
    out = proc.stdout.decode("utf-8").split("\n")
    if len(out) < len(lines) or any(line.strip() for line in out[len(lines) :]):
        raise RuntimeError(f"PTBTokenizer returned {len(out)} lines for {len(lines)} texts")
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    return [
        " ".join(w for w in line.rstrip().split(" ") if w not in punctuation) for line in out[: len(lines)]
    ]


def _ptb_corpus(texts: list[str], timeout: float) -> list[str]:
    key = tuple(texts)
    with _state_lock:
        if key in _PTB_CACHE:
            _PTB_CACHE.move_to_end(key)
            return list(_PTB_CACHE[key])
    lines = [_LINE_BREAKS.sub(" ", t) for t in texts]
    todo = [i for i, line in enumerate(lines) if line.strip()]
    result = [""] * len(texts)
    if todo:
        for i, tokens in zip(todo, _run_ptb([lines[i] for i in todo], timeout), strict=True):
            result[i] = tokens
    with _state_lock:
        _PTB_CACHE[key] = result
        while len(_PTB_CACHE) > _PTB_CACHE_SIZE:
            _PTB_CACHE.popitem(last=False)
    return list(result)


def _simple_corpus(texts: list[str]) -> list[str]:
    return [" ".join(simple_tokenize(t)) for t in texts]


def _fallback(texts: list[str], reason: str) -> list[str]:
    with _state_lock:
        first = reason not in _warned
        _warned.add(reason)
    if first:
        warnings.warn(
            f"PTB tokenizer unavailable ({reason}); BLEU/ROUGE-L/CIDEr-D use the simple Python "
            "tokenizer, so scores are not comparable with COCO-protocol numbers",
            RuntimeWarning,
            stacklevel=3,
        )
    _record("simple", reason)
    return _simple_corpus(texts)


def tokenize_corpus(
    texts: Sequence[str | None], tokenizer: str = "auto", timeout: float = 600.0
) -> list[str]:
    """Tokenise a whole corpus; each text becomes a string of space-separated tokens.

    ``tokenizer``: ``"auto"`` (PTB, falling back to ``simple_tokenize`` with a warning),
    ``"ptb"`` (PTB or ``MetricUnavailable``) or ``"simple"``. ``None`` becomes ``""``.
    """
    items = ["" if t is None else str(t) for t in texts]
    if tokenizer == "simple":
        _record("simple", None)
        return _simple_corpus(items)
    if tokenizer not in ("auto", "ptb"):
        raise ValueError(f"unknown tokenizer {tokenizer!r}: use 'auto', 'ptb' or 'simple'")
    problem = _ptb_problem()
    if problem is not None:
        if tokenizer == "ptb":
            help_text = JAVA_HELP if "java" in problem else COCO_HELP
            raise MetricUnavailable(f"the PTB tokenizer cannot run: {problem}. {help_text}")
        return _fallback(items, problem)
    try:
        result = _ptb_corpus(items, timeout)
    except (OSError, RuntimeError, subprocess.SubprocessError, UnicodeDecodeError, ImportError) as exc:
        if tokenizer == "ptb":
            raise MetricUnavailable(f"the PTB tokenizer failed: {exc}") from exc
        return _fallback(items, f"PTB tokenizer failed: {exc}")
    _record("ptb", None)
    return result


def ptb_tokenize(texts: list[str]) -> list[str]:
    """COCO-protocol tokenisation of ``texts`` (one Java call); simple tokenizer without Java."""
    return tokenize_corpus(texts, "auto")


def _references(target: Any) -> list[str]:
    if target is None:
        raise ValueError("a reference is None")
    if isinstance(target, (list, tuple)):
        if not target:
            raise ValueError("a sample has an empty list of references")
        return [str(t) for t in target]
    return [str(target)]


def _tokenized_corpus(
    predictions: Sequence[Any], references: Sequence[Any], ctx: MetricContext | None
) -> tuple[list[str], list[list[str]]]:
    """PTB strings of the hypotheses and of each sample's references (one tokenizer call)."""
    options = ctx.options if ctx is not None else {}
    hyps = ["" if p is None else str(p) for p in predictions]
    refs = [_references(t) for t in references]
    flat = tokenize_corpus(
        hyps + [r for group in refs for r in group],
        options.get("tokenizer", "auto"),
        float(options.get("tokenizer_timeout", 600.0)),
    )
    out_hyps, pos, out_refs = flat[: len(hyps)], len(hyps), []
    for group in refs:
        out_refs.append(flat[pos : pos + len(group)])
        pos += len(group)
    return out_hyps, out_refs


# ---------------------------------------------------------------- BLEU


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _bleu_row(hyp: list[str], refs: list[list[str]]) -> list[float]:
    """[matches_1..4, totals_1..4, hyp_len, closest ref_len] as BleuScorer's cook_test."""
    stats: list[float] = []
    totals: list[float] = []
    for n in range(1, MAX_N + 1):
        max_ref: dict[tuple[str, ...], int] = {}
        for ref in refs:
            for gram, count in _ngrams(ref, n).items():
                if count > max_ref.get(gram, 0):
                    max_ref[gram] = count
        stats.append(float(sum(min(c, max_ref.get(g, 0)) for g, c in _ngrams(hyp, n).items())))
        totals.append(float(max(len(hyp) - n + 1, 0)))
    ref_len = min((len(r) for r in refs), key=lambda length: (abs(length - len(hyp)), length))
    return stats + totals + [float(len(hyp)), float(ref_len)]


def bleu_stats(prediction: Any, target: Any, ctx: MetricContext | None = None) -> list[float]:
    """[matches_1..4, totals_1..4, hyp_len, ref_len] for one sample, with ``simple_tokenize``."""
    hyp = simple_tokenize("" if prediction is None else str(prediction))
    return _bleu_row(hyp, [simple_tokenize(r) for r in _references(target)])


def corpus_bleu(matrix: np.ndarray, n: int) -> float:
    """BLEU-n from summed per-sample statistics, with BleuScorer's arithmetic (closest ref length)."""
    if len(matrix) == 0:
        return 0.0
    sums = np.asarray(matrix, dtype=float).sum(axis=0)
    bleu = 1.0
    for k in range(n):
        bleu *= (float(sums[k]) + _TINY) / (float(sums[MAX_N + k]) + _SMALL)
    score = bleu ** (1.0 / n)
    ratio = (float(sums[2 * MAX_N]) + _TINY) / (float(sums[2 * MAX_N + 1]) + _SMALL)
    if ratio < 1:
        score *= math.exp(1 - 1 / ratio)
    return float(score)


def _bleu_corpus_stats(predictions: list[Any], references: list[Any], ctx: MetricContext):
    hyps, refs = _tokenized_corpus(predictions, references, ctx)
    rows = [_bleu_row(h.split(), [r.split() for r in group]) for h, group in zip(hyps, refs, strict=True)]
    return np.asarray(rows, dtype=float).reshape(len(rows), 2 * MAX_N + 2), None


def _bleu_metric(n: int) -> Metric:
    return Metric(
        name=f"bleu{n}",
        description=(
            f"Corpus BLEU-{n} as pycocoevalcap's BleuScorer (closest reference length) on PTB tokens "
            "(COCO protocol; simple tokenizer without Java, see cxbench.metrics.nlg.tokenizer_in_use)."
        ),
        stats=None,
        corpus_stats=_bleu_corpus_stats,
        reduce=lambda m, n=n: corpus_bleu(m, n),
        sample_value=lambda row, n=n: corpus_bleu(np.asarray(row, dtype=float)[None, :], n),
        averaging="corpus",
        citation="Papineni et al., 2002; COCO caption evaluation (pycocoevalcap)",
        ci_method="percentile bootstrap over samples of summed n-gram statistics (exact corpus BLEU)",
    )


BLEU1, BLEU2, BLEU3, BLEU4 = (_bleu_metric(n) for n in range(1, MAX_N + 1))


# ---------------------------------------------------------------- ROUGE-L


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


def _rouge_tokens(hyp: list[str], refs: list[list[str]], beta: float = ROUGE_BETA) -> float:
    """pycocoevalcap ``Rouge.calc_score`` on token lists; an empty hypothesis scores 0."""
    if not hyp:
        return 0.0
    precisions, recalls = [], []
    for ref in refs:
        lcs = _lcs(ref, hyp)
        precisions.append(lcs / len(hyp))
        recalls.append(lcs / len(ref) if ref else 0.0)
    p, r = max(precisions), max(recalls)
    if p == 0 or r == 0:
        return 0.0
    return ((1 + beta**2) * p * r) / (r + beta**2 * p)


def rouge_l(prediction: Any, target: Any, beta: float = ROUGE_BETA) -> float:
    """ROUGE-L F-measure of one sample with ``simple_tokenize`` (max precision/recall over references)."""
    hyp = simple_tokenize("" if prediction is None else str(prediction))
    return _rouge_tokens(hyp, [simple_tokenize(r) for r in _references(target)], beta)


def _rouge_corpus_stats(predictions: list[Any], references: list[Any], ctx: MetricContext):
    hyps, refs = _tokenized_corpus(predictions, references, ctx)
    # pycocoevalcap splits on single spaces (an empty reference is one empty token)
    values = [
        _rouge_tokens(h.split(" ") if h else [], [r.split(" ") for r in group])
        for h, group in zip(hyps, refs, strict=True)
    ]
    return np.asarray(values, dtype=float).reshape(len(values), 1), None


ROUGE_L = Metric(
    name="rouge_l",
    description=(
        "ROUGE-L F-measure (beta 1.2) as pycocoevalcap's Rouge on PTB tokens, averaged over samples "
        "(simple tokenizer without Java)."
    ),
    stats=None,
    corpus_stats=_rouge_corpus_stats,
    reduce=mean_reduce,
    sample_value=first_column,
    citation="Lin, 2004; COCO caption evaluation (pycocoevalcap)",
)


# ---------------------------------------------------------------- CIDEr-D


def _cider_counts(tokens: list[str], n: int) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            gram = tuple(tokens[i : i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


def cider_d_scores(
    hyps: Sequence[Sequence[str]],
    refs: Sequence[Sequence[Sequence[str]]],
    n: int = MAX_N,
    sigma: float = CIDER_SIGMA,
) -> np.ndarray:
    """Per-sample CIDEr-D of token lists, pycocoevalcap ``CiderScorer`` formula.

    Document frequencies and the log corpus size come from the references of this corpus.
    Kept quirks of the package: the "length" in the Gaussian penalty counts bigrams, and each
    sample's score is the mean over n of the summed per-reference similarities, divided by the
    number of references, times 10.
    """
    hyp_counts = [_cider_counts(list(h), n) for h in hyps]
    ref_counts = [[_cider_counts(list(r), n) for r in group] for group in refs]
    doc_freq: Counter = Counter()
    for group in ref_counts:
        doc_freq.update({gram for counts in group for gram in counts})
    if not ref_counts:
        return np.zeros(0)
    log_docs = math.log(float(len(ref_counts)))

    def vector(counts: dict[tuple[str, ...], int]) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            weight = float(tf) * (log_docs - math.log(max(1.0, float(doc_freq.get(gram, 0)))))
            vec[k][gram] = weight
            norm[k] += weight**2
            if k == 1:
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    scores = np.zeros(len(hyp_counts))
    for i, (hyp, group) in enumerate(zip(hyp_counts, ref_counts, strict=True)):
        vec_h, norm_h, len_h = vector(hyp)
        total = [0.0] * n
        for ref in group:
            vec_r, norm_r, len_r = vector(ref)
            penalty = math.exp(-(float(len_h - len_r) ** 2) / (2 * sigma**2))
            for k in range(n):
                ref_k = vec_r[k]
                val = 0.0
                for gram, weight in vec_h[k].items():
                    w_ref = ref_k.get(gram, 0.0)
                    val += min(weight, w_ref) * w_ref
                if norm_h[k] != 0 and norm_r[k] != 0:
                    val /= norm_h[k] * norm_r[k]
                total[k] += val * penalty
        scores[i] = float(np.mean(total)) / len(group) * 10.0
    return scores


def _cider_corpus_stats(predictions: list[Any], references: list[Any], ctx: MetricContext):
    hyps, refs = _tokenized_corpus(predictions, references, ctx)
    sigma = float(ctx.options.get("sigma", CIDER_SIGMA))
    scores = cider_d_scores([h.split() for h in hyps], [[r.split() for r in g] for g in refs], sigma=sigma)
    return scores.reshape(len(scores), 1), None


CIDER_D = Metric(
    name="cider_d",
    description=(
        "CIDEr-D (pycocoevalcap Cider: tf-idf n-grams 1-4, clipping, Gaussian length penalty sigma 6, x10) "
        "on PTB tokens; document frequencies from the references of the scored corpus."
    ),
    stats=None,
    corpus_stats=_cider_corpus_stats,
    reduce=mean_reduce,
    sample_value=first_column,
    range=(0.0, 10.0),
    citation="Vedantam et al., 2015; COCO caption evaluation (pycocoevalcap)",
    ci_method=(
        "percentile bootstrap over per-sample CIDEr-D scores, with document frequencies fixed to "
        "the full corpus (not recomputed per resample)"
    ),
)


# ---------------------------------------------------------------- METEOR


def require_java(what: str) -> None:
    """Raise ``MetricUnavailable`` (at once, no process started) when Java is missing."""
    if not java_available():
        raise MetricUnavailable(f"{what} needs Java: no `java` executable on PATH. {JAVA_HELP}")


def _close_meteor(scorer: Any) -> None:
    """Shut the METEOR jar down for good (pycocoevalcap's ``__del__`` is then a no-op)."""
    proc = getattr(scorer, "meteor_p", None)
    if proc is not None:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        proc.kill()
        proc.wait(timeout=30)
    lock = getattr(scorer, "lock", None)
    if lock is not None and lock.locked():  # left held when compute_score raised
        lock.release()


def meteor_score(hyps: Sequence[str], refs: Sequence[Sequence[str]], timeout: float = 3600.0):
    """(corpus score, per-segment scores) from pycocoevalcap's ``Meteor`` on tokenised strings.

    One METEOR process per call, always shut down afterwards; killed after ``timeout`` seconds.
    """
    require_java("METEOR")
    if not hyps:
        return 0.0, np.zeros(0)
    try:
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError as exc:
        raise MetricUnavailable(f"METEOR needs pycocoevalcap. {COCO_HELP}") from exc
    gts = {i: [r.replace("|||", "") for r in group] for i, group in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    try:
        scorer = Meteor()
    except OSError as exc:
        raise MetricUnavailable(f"METEOR could not start Java ({exc}). {JAVA_HELP}") from exc
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        scorer.meteor_p.kill()

    watchdog = threading.Timer(timeout, kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        score, scores = scorer.compute_score(gts, res)
    except (ValueError, OSError) as exc:
        if timed_out.is_set():
            raise RuntimeError(f"METEOR timed out after {timeout:.0f} s") from exc
        detail = ""
        try:
            scorer.meteor_p.kill()
            detail = scorer.meteor_p.stderr.read().decode("utf-8", "replace").strip()[-500:]
        except (OSError, ValueError):
            pass
        raise RuntimeError(f"METEOR jar failed ({exc}): {detail or 'no message'}") from exc
    finally:
        watchdog.cancel()
        _close_meteor(scorer)
    return float(score), np.asarray(scores, dtype=float)


def _meteor_corpus_stats(predictions: list[Any], references: list[Any], ctx: MetricContext):
    require_java("METEOR")
    hyps, refs = _tokenized_corpus(predictions, references, ctx)
    score, scores = meteor_score(hyps, refs, float(ctx.options.get("timeout", 3600.0)))
    return scores.reshape(len(scores), 1), score


METEOR = Metric(
    name="meteor",
    description=(
        "METEOR 1.5 (pycocoevalcap's jar, -l en -norm) on PTB tokens; value = the jar's corpus score. "
        "Needs Java 8+."
    ),
    stats=None,
    corpus_stats=_meteor_corpus_stats,
    reduce=mean_reduce,
    sample_value=first_column,
    averaging="corpus",
    citation="Denkowski & Lavie, 2014; COCO caption evaluation (pycocoevalcap)",
    ci_method=(
        "percentile bootstrap of the mean of per-segment METEOR scores (approximate: the point "
        "estimate is METEOR's corpus-level aggregate, which pools statistics across segments)"
    ),
)


# ---------------------------------------------------------------- SPICE


def _spice_problem() -> str | None:
    folder = _coco_dir()
    if folder is None:
        return f"pycocoevalcap is not installed. {COCO_HELP}"
    lib = folder / "spice" / "lib"
    missing = [jar for jar in _SPICE_JARS if not (lib / jar).is_file()]
    if missing:
        return (
            f"SPICE needs {' and '.join(missing)} in {lib} (from stanford-corenlp-full-2015-12-09.zip of "
            "Stanford CoreNLP 3.6.0; pycocoevalcap's spice/get_stanford_models.py fetches them). "
            "cxbench never downloads them itself."
        )
    if not java_available():
        return f"SPICE needs Java: no `java` executable on PATH. {JAVA_HELP}"
    return None


def spice_available() -> bool:
    """True when SPICE can run: Java plus Stanford CoreNLP 3.6.0 jars in pycocoevalcap's spice/lib."""
    return _spice_problem() is None


def _spice_corpus_stats(predictions: list[Any], references: list[Any], ctx: MetricContext):
    problem = _spice_problem()
    if problem is not None:
        raise MetricUnavailable(problem)
    from pycocoevalcap.spice.spice import Spice

    hyps, refs = _tokenized_corpus(predictions, references, ctx)
    rows = np.zeros((len(hyps), 1))
    todo = [i for i, h in enumerate(hyps) if h.strip()]  # an empty hypothesis scores 0
    if todo:
        _, scores = Spice().compute_score({i: refs[i] for i in todo}, {i: [hyps[i]] for i in todo})
        for i, item in zip(todo, scores, strict=True):
            f = item["All"]["f"]
            rows[i, 0] = 0.0 if f is None or math.isnan(f) else f
    return rows, None


def _spice_metric() -> Metric:
    return Metric(
        name="spice",
        description="SPICE F-score (pycocoevalcap's jar) on PTB tokens, averaged over samples.",
        stats=None,
        corpus_stats=_spice_corpus_stats,
        reduce=mean_reduce,
        sample_value=first_column,
        citation="Anderson et al., 2016; COCO caption evaluation (pycocoevalcap)",
    )


def __getattr__(name: str) -> Any:
    """``SPICE`` exists only when its jars are present; otherwise asking for it says what is missing."""
    if name == "SPICE":
        problem = _spice_problem()
        if problem is not None:
            raise MetricUnavailable(problem)
        return _spice_metric()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


NLG_METRICS: dict[str, Metric] = {m.name: m for m in (BLEU1, BLEU2, BLEU3, BLEU4, ROUGE_L, CIDER_D, METEOR)}
