"""Report Arena: pairwise judging of generated reports, ranked with Bradley–Terry ratings.

In the manner of DeepMedix-R1's Report Arena, the reports several models wrote for the same
studies are compared two at a time by a *judge* against the reference report, and the
battle outcomes are turned into ratings.

- A ``Judge`` answers ``judge(reference, report_a, report_b, sample)`` with 1.0 (A better),
  0.0 (B better) or 0.5 (tie). ``MetricJudge`` scores both reports with one of the project's
  metrics (offline, deterministic); ``ModelJudge`` asks any cxbench model (``load_model``).
  A judge may also offer ``judge_many(items)`` to answer a whole list at once (batching).
- Position bias: every battle is judged in both orders. ``outcome_ab`` is model A's score
  with A shown first, ``outcome_ba`` A's score with A shown second (``1 - judge(ref, b, a)``);
  the battle's outcome is their mean, so a judge that always prefers the first position
  yields ties. The *position-bias rate* is the fraction of battles whose two orders disagree.
- ``run_arena`` pairs the models' per-sample logs (``results/<model>/<task>.samples.jsonl``)
  on shared sample ids, judges every pair of models on every shared sample and fits
  ``bradley_terry`` ratings.
- Bradley–Terry: P(i beats j) = p_i / (p_i + p_j). Each battle gives model A its outcome
  ``s`` and model B ``1 - s`` as (fractional) wins, so a tie counts as half a win each way.
  Strengths are the maximum-likelihood estimate, found by Newton iterations on the
  log-strengths (concave log-likelihood; step-halving keeps each step an ascent); the scale
  is fixed by mean log-strength 0 and reported as Elo-like ratings
  ``400 * log10(p) + 1000`` (so the mean rating is 1000 and a 3:1 strength ratio is
  ~191 points). 95% CIs are percentiles of the ratings refitted on battles resampled with
  replacement.
- Regularisation: the MLE exists only when every split of the models into two groups has a
  model in each group that scored against the other group (Ford's condition), i.e. no model
  (or group) won or lost everything. When the battles fail it (a model that never wins),
  ``pseudo_count`` virtual wins are added in each direction for every pair of models (a weak
  prior towards equal strengths) and the result notes this; otherwise the plain MLE is used.
  The same rule is applied to every bootstrap resample (with at least 1e-3 virtual wins, so
  that ``pseudo_count=0``, which makes a missing MLE an error for the point estimate, still
  gives CIs); models absent from a resample get no rating in that resample.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cxbench.logs import iter_log, read_header

LOG_SUFFIX = ".samples.jsonl"
DEFAULT_TASK = "report_generation"
DEFAULT_METRIC = "chexpert_micro_f1_14"


class ArenaError(ValueError):
    """Bad input for the arena (unreadable log, different tasks, nothing to pair...)."""


# ---------------------------------------------------------------- judges


@runtime_checkable
class Judge(Protocol):
    """Decides which of two reports is better given the reference: 1.0 A, 0.0 B, 0.5 tie."""

    def judge(self, reference: str, report_a: str, report_b: str, sample: Any = None) -> float: ...


JudgeItem = tuple[str, str, str, Any]  # (reference, report_a, report_b, sample)


def _judge_all(judge: Any, items: Sequence[JudgeItem]) -> list[float]:
    if hasattr(judge, "judge_many"):
        outcomes = list(judge.judge_many(items))
        if len(outcomes) != len(items):
            raise ArenaError(f"judge returned {len(outcomes)} outcomes for {len(items)} battles")
    else:
        outcomes = [judge.judge(*item) for item in items]
    out = []
    for value in outcomes:
        value = float(value)
        if value not in (0.0, 0.5, 1.0):
            raise ArenaError(f"a judge must answer 1.0, 0.0 or 0.5, got {value!r}")
        out.append(value)
    return out


def _describe(judge: Any) -> str:
    describe = getattr(judge, "describe", None)
    return describe() if callable(describe) else type(judge).__name__


class MetricJudge:
    """Scores each report against the reference with a project metric; the better value wins.

    The per-sample value is the metric's ``reduce`` of the one-row stats matrix (for
    ``chexpert_micro_f1_14``: the F1 of that one report). A difference of at most
    ``tie_margin`` is a tie, so with the default 0.0 only equal values tie. Values are cached
    per (report, reference), so judging both orders costs nothing extra.
    """

    def __init__(self, metric: str = DEFAULT_METRIC, tie_margin: float = 0.0, **options: Any) -> None:
        from cxbench import metrics as registry
        from cxbench.metrics.base import MetricContext

        try:
            self.metric = registry.get(metric)
        except KeyError as exc:
            raise ArenaError(str(exc.args[0] if exc.args else exc)) from None
        if tie_margin < 0:
            raise ArenaError(f"tie_margin must be >= 0, got {tie_margin}")
        self.tie_margin = float(tie_margin)
        self.ctx = MetricContext(options=dict(options))
        self._cache: dict[tuple[str, str], float] = {}

    def describe(self) -> str:
        margin = f", tie margin {self.tie_margin:g}" if self.tie_margin else ""
        return f"metric:{self.metric.name}{margin}"

    def value(self, report: str, reference: str, sample: Any = None) -> float:
        """The metric's per-sample value of ``report`` against ``reference`` (cached)."""
        key = (report, reference)
        if key not in self._cache:
            self._cache[key] = self._compute(report, reference, sample)
        return self._cache[key]

    def _compute(self, report: str, reference: str, sample: Any) -> float:
        metric = self.metric
        prediction: Any = report
        if metric.inputs == "output":
            from cxbench.metrics.base import Output

            prediction = Output(raw=report, parsed=report, sample=_as_sample(sample))
        if metric.stats is not None:
            row = np.asarray(metric.stats(prediction, reference, self.ctx), dtype=float).reshape(1, -1)
            return float(metric.reduce(row))
        assert metric.corpus_stats is not None
        matrix, value = metric.corpus_stats([prediction], [reference], self.ctx)
        matrix = np.asarray(matrix, dtype=float).reshape(1, -1)
        return float(metric.reduce(matrix) if value is None else value)

    def judge(self, reference: str, report_a: str, report_b: str, sample: Any = None) -> float:
        a, b = self.value(report_a, reference, sample), self.value(report_b, reference, sample)
        diff = a - b if self.metric.direction != "lower" else b - a
        if diff != diff:  # NaN: undecidable
            return 0.5
        if diff > self.tie_margin:
            return 1.0
        if diff < -self.tie_margin:
            return 0.0
        return 0.5


DEFAULT_PROMPT = """You are an expert radiologist. Two candidate chest X-ray reports were written for the \
same study. Compare each with the reference report written by a radiologist and decide which \
candidate is clinically more accurate and complete: correct findings, no invented findings, no \
important finding left out. Ignore style and length.

Reference report:
{reference}

Report 1:
{report_1}

Report 2:
{report_2}

Which report is better? Answer with exactly one of: 1, 2, tie."""

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_TIE_WORDS = r"tie|tied|equal|equally|same|neither|both"
_CHOICE = rf"(?:report\s*)?(?:#\s*)?(1|2|one|two|first|second|{_TIE_WORDS})\b"
_CUE = re.compile(
    r"\b(?:answer|verdict|winner|choice|decision|better(?:\s+report)?(?:\s+is)?|prefer(?:red|ence)?)"
    r"\s*(?:is|:|=|-)?\s*\**\s*" + _CHOICE,
    re.I,
)
_CUE_BEFORE = re.compile(
    r"\breport\s*#?\s*(1|2)\s+is\s+(?:clearly\s+|slightly\s+|much\s+|the\s+)?"
    r"(?:better|superior|preferred|more\s+accurate|winner)",
    re.I,
)
_WORDS = {"1": 1.0, "one": 1.0, "first": 1.0, "2": 0.0, "two": 0.0, "second": 0.0}


def parse_verdict(text: str) -> float | None:
    """1.0 for "1", 0.0 for "2", 0.5 for "tie" (and "equal", "neither"...); None if unclear.

    Reasoning in ``<think>...</think>`` is dropped. Tried in turn: the whole answer being a
    choice (``"2"``, ``"Report 1."``, ``"**tie**"``); the last choice after a cue word
    (``"Answer: 2"``, ``"the better report is Report 1"``); the single kind of choice the
    text mentions (``"Report 2 is better"``). Anything else is unparseable.
    """
    text = _THINK.sub(" ", text or "")
    if "</think>" in text.lower():  # an unclosed block: keep what follows its end
        text = text[text.lower().rindex("</think>") + len("</think>") :]
    clean = text.strip().lower()
    whole = re.fullmatch(r"[\W_]*" + _CHOICE + r"[\W_]*", clean)
    if whole:
        return _WORDS.get(whole.group(1), 0.5)
    cues = _CUE.findall(clean)
    if cues:
        return _WORDS.get(cues[-1].lower(), 0.5)
    before = _CUE_BEFORE.findall(clean)
    if before:
        return _WORDS[before[-1]]
    mentions = {_WORDS[m] for m in re.findall(r"\breport\s*#?\s*([12])\b", clean)}
    if re.search(r"\b(?:tie|tied|equally)\b", clean):
        mentions.add(0.5)
    if len(mentions) == 1:
        return mentions.pop()
    return None


class ModelJudge:
    """Any cxbench model as judge: it reads the reference and two reports and answers 1/2/tie.

    ``prompt_template`` is formatted with ``{reference}``, ``{report_1}``, ``{report_2}``.
    With ``images=True`` the study's image files that exist are sent as image parts before
    the text (vision judges); by default the request is text-only. Unparseable answers and
    backend errors count as ties and are counted in ``unparsed`` / ``errors``.
    """

    def __init__(
        self,
        model: Any,
        prompt_template: str = DEFAULT_PROMPT,
        images: bool = False,
        generation: dict[str, Any] | None = None,
        batch_size: int = 8,
        system: str | None = None,
    ) -> None:
        if isinstance(model, str):
            from cxbench.models import load_model

            model = load_model(model)
        for name in ("reference", "report_1", "report_2"):
            if "{" + name + "}" not in prompt_template:
                raise ArenaError(f"the judge prompt template has no {{{name}}} field")
        self.model = model
        self.prompt_template = prompt_template
        self.images = images
        self.generation = dict(generation or {"max_new_tokens": 256, "temperature": 0.0})
        self.batch_size = max(1, int(batch_size))
        self.system = system
        self.calls = 0
        self.unparsed = 0
        self.errors = 0
        self.unparsed_examples: list[str] = []

    def describe(self) -> str:
        return f"model:{getattr(self.model, 'name', type(self.model).__name__)}"

    def build_request(self, reference: str, report_1: str, report_2: str, sample: Any = None):
        from cxbench.schema import Request

        text = self.prompt_template.format(reference=reference, report_1=report_1, report_2=report_2)
        sample_dict = _sample_dict(sample)
        paths = [p for p in sample_dict.get("images") or [] if self.images and Path(p).is_file()]
        content: list[dict[str, Any]] = [{"type": "image", "path": p} for p in paths]
        content.append({"type": "text", "text": text})
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": content})
        return Request(
            sample_id=f"arena:{sample_dict.get('id', '?')}",
            task="report_arena",
            family="report_arena",
            messages=messages,
            images=paths,
            generation=dict(self.generation),
        )

    def judge_many(self, items: Sequence[JudgeItem]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            requests = [self.build_request(*item) for item in batch]
            responses = self.model.generate(requests)
            if len(responses) != len(requests):
                raise ArenaError(
                    f"judge model returned {len(responses)} answers for {len(requests)} requests"
                )
            for response in responses:
                self.calls += 1
                if response.error:
                    self.errors += 1
                    out.append(0.5)
                    continue
                verdict = parse_verdict(response.text)
                if verdict is None:
                    self.unparsed += 1
                    if len(self.unparsed_examples) < 5:
                        self.unparsed_examples.append(response.text[:200])
                    verdict = 0.5
                out.append(verdict)
        return out

    def judge(self, reference: str, report_a: str, report_b: str, sample: Any = None) -> float:
        return self.judge_many([(reference, report_a, report_b, sample)])[0]


def _sample_dict(sample: Any) -> dict[str, Any]:
    if sample is None:
        return {}
    if isinstance(sample, dict):
        return sample
    return asdict(sample) if hasattr(sample, "__dataclass_fields__") else {}


def _as_sample(sample: Any) -> Any:
    from cxbench.schema import Sample

    if isinstance(sample, dict):
        try:
            return Sample(**sample)
        except TypeError:
            return sample
    return sample


# ---------------------------------------------------------------- battles and Bradley–Terry


@dataclass
class Battle:
    """One sample judged for one pair of models, in both presentation orders.

    ``outcome_ab``: A's score with A shown first; ``outcome_ba``: A's score with A shown
    second. Both are 1.0 (A better), 0.0 (B better) or 0.5 (tie).
    """

    sample_id: str
    model_a: str
    model_b: str
    outcome_ab: float
    outcome_ba: float

    @property
    def outcome(self) -> float:
        """A's score for the battle: the mean of both orders (0, .25, .5, .75 or 1)."""
        return (self.outcome_ab + self.outcome_ba) / 2

    @property
    def order_disagrees(self) -> bool:
        return self.outcome_ab != self.outcome_ba


BattleLike = Battle | dict | Sequence


def _triples(battles: Iterable[BattleLike]) -> list[tuple[str, str, float]]:
    """(model_a, model_b, A's score) of Battle objects, dicts or (a, b, score) tuples."""
    out = []
    for battle in battles:
        if isinstance(battle, Battle):
            out.append((battle.model_a, battle.model_b, battle.outcome))
        elif isinstance(battle, dict):
            if "outcome" in battle:
                score = float(battle["outcome"])
            else:
                score = (float(battle["outcome_ab"]) + float(battle["outcome_ba"])) / 2
            out.append((str(battle["model_a"]), str(battle["model_b"]), score))
        elif len(battle) == 3:
            out.append((str(battle[0]), str(battle[1]), float(battle[2])))
        elif len(battle) == 5:  # (sample, a, b, outcome_ab, outcome_ba)
            out.append((str(battle[1]), str(battle[2]), (float(battle[3]) + float(battle[4])) / 2))
        else:
            raise ArenaError(f"cannot read a battle from {battle!r}")
    for a, b, score in out:
        if a == b:
            raise ArenaError(f"a battle of model {a!r} against itself")
        if not 0.0 <= score <= 1.0:
            raise ArenaError(f"battle outcome {score} is not in [0, 1]")
    return out


def _mle_exists(wins: np.ndarray, present: np.ndarray) -> bool:
    """Ford's condition: the graph 'i scored against j' is strongly connected on ``present``."""
    idx = np.flatnonzero(present)
    if len(idx) <= 1:
        return True
    adj = wins[np.ix_(idx, idx)] > 0
    for graph in (adj, adj.T):  # everyone reachable from node 0, forwards and backwards
        seen = np.zeros(len(idx), dtype=bool)
        seen[0] = True
        frontier = seen.copy()
        while frontier.any():
            new = graph[frontier].any(axis=0) & ~seen
            seen |= new
            frontier = new
        if not seen.all():
            return False
    return True


def _fit(wins: np.ndarray, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
    """Log-strengths (mean 0) maximising sum_ij wins_ij * log(p_i / (p_i + p_j)).

    ``wins[i, j]``: (fractional) wins of i over j. Newton's method on the concave
    log-likelihood with step-halving; requires a strongly connected win graph.
    """
    k = len(wins)
    if k == 1:
        return np.zeros(1)
    games = wins + wins.T
    total = wins.sum(axis=1)

    def loglik(theta: np.ndarray) -> float:
        diff = theta[:, None] - theta[None, :]
        return float(-(wins * np.logaddexp(0.0, -diff)).sum())

    theta = np.zeros(k)
    current = loglik(theta)
    ones = np.ones((k, k)) / k
    for _ in range(max_iter):
        prob = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
        grad = total - (games * prob).sum(axis=1)
        if np.max(np.abs(grad)) < tol * max(1.0, games.sum()):
            break
        weight = games * prob * prob.T
        laplacian = np.diag(weight.sum(axis=1)) - weight
        step = np.linalg.solve(laplacian + ones, grad)
        step -= step.mean()
        scale = 1.0
        while scale > 1e-8:
            candidate = theta + scale * step
            value = loglik(candidate)
            if value >= current - 1e-12:
                break
            scale /= 2
        theta, current = candidate, value
    return theta - theta.mean()


def _win_matrix(index_a: np.ndarray, index_b: np.ndarray, score: np.ndarray, weight: np.ndarray, k: int):
    wins = np.zeros((k, k))
    np.add.at(wins, (index_a, index_b), weight * score)
    np.add.at(wins, (index_b, index_a), weight * (1.0 - score))
    return wins


def _ratings_from(wins: np.ndarray, present: np.ndarray, pseudo_count: float) -> tuple[np.ndarray, bool]:
    """Elo-like ratings of the present models (NaN for absent ones) and whether regularised."""
    idx = np.flatnonzero(present)
    sub = wins[np.ix_(idx, idx)]
    regularised = False
    if not _mle_exists(wins, present):
        if pseudo_count <= 0:
            raise ArenaError(
                "the Bradley-Terry MLE does not exist (a model won or lost every battle); "
                "use a pseudo_count > 0"
            )
        sub = sub + pseudo_count * (1.0 - np.eye(len(idx)))
        regularised = True
    ratings = np.full(len(wins), np.nan)
    ratings[idx] = 400.0 * _fit(sub) / np.log(10.0) + 1000.0
    return ratings, regularised


def bradley_terry(
    battles: Iterable[BattleLike],
    n_boot: int = 1000,
    seed: int = 0,
    pseudo_count: float = 0.1,
    confidence: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """Bradley–Terry ratings with bootstrap CIs: ``{model: {"rating", "ci95", "wins", "losses", "ties"}}``.

    ``battles``: ``Battle`` records, dicts with ``model_a``/``model_b`` and ``outcome`` (or
    ``outcome_ab``/``outcome_ba``), or ``(model_a, model_b, score_of_a)`` tuples. A battle
    gives A ``score`` wins and B ``1 - score`` (ties: half a win each way). Ratings are
    ``400 * log10(strength) + 1000`` with mean log-strength 0. ``pseudo_count`` virtual wins
    each way between every pair are added only when the MLE does not exist (see the module
    docstring); each entry's ``"regularised"`` says whether the point estimate used them.
    ``wins``/``losses``/``ties`` count battles whose (order-averaged) score is above, below
    or equal to 1/2. ``ci95`` is ``[nan, nan]`` with ``n_boot=0``.
    """
    triples = _triples(battles)
    if not triples:
        raise ArenaError("no battles to rate")
    models = sorted({m for a, b, _ in triples for m in (a, b)})
    pos = {m: i for i, m in enumerate(models)}
    k = len(models)
    index_a = np.array([pos[a] for a, _, _ in triples])
    index_b = np.array([pos[b] for _, b, _ in triples])
    score = np.array([s for _, _, s in triples], dtype=float)
    ones = np.ones(len(triples))
    all_present = np.ones(k, dtype=bool)
    point, regularised = _ratings_from(
        _win_matrix(index_a, index_b, score, ones, k), all_present, pseudo_count
    )

    low = np.full(k, np.nan)
    high = np.full(k, np.nan)
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        n = len(triples)
        samples = np.empty((n_boot, k))
        for r in range(n_boot):
            counts = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(float)
            present = np.zeros(k, dtype=bool)
            present[index_a[counts > 0]] = True
            present[index_b[counts > 0]] = True
            samples[r], _ = _ratings_from(
                _win_matrix(index_a, index_b, score, counts, k), present, max(pseudo_count, 1e-3)
            )
        alpha = (1.0 - confidence) / 2 * 100
        for i in range(k):
            column = samples[:, i][~np.isnan(samples[:, i])]
            if len(column):
                low[i], high[i] = np.percentile(column, [alpha, 100 - alpha])

    out: dict[str, dict[str, Any]] = {}
    for i, model in enumerate(models):
        mine = np.concatenate([score[index_a == i], 1.0 - score[index_b == i]])
        out[model] = {
            "rating": float(point[i]),
            "ci95": [float(low[i]), float(high[i])],
            "wins": int((mine > 0.5).sum()),
            "losses": int((mine < 0.5).sum()),
            "ties": int((mine == 0.5).sum()),
            "battles": int(len(mine)),
            "regularised": regularised,
        }
    return out


# ---------------------------------------------------------------- reading logs


@dataclass
class _Log:
    path: Path
    task: str
    model: str
    ids: list[str]
    reports: dict[str, str]
    samples: dict[str, dict[str, Any]]
    missing: int  # rows without a parsed report (errors), judged as empty reports


def _read_log(path: Path) -> _Log:
    header = read_header(path, ArenaError)
    ids: list[str] = []
    reports: dict[str, str] = {}
    samples: dict[str, dict[str, Any]] = {}
    missing = 0
    for _, line_no, record in iter_log(path, ArenaError):
        sample_id = str(record["sample_id"])
        sample = record.get("sample")
        if not isinstance(sample, dict) or "target" not in sample:
            raise ArenaError(f"{path}:{line_no}: row without a sample (and its reference report)")
        parsed = record.get("parsed")
        if parsed is None:
            missing += 1
            parsed = ""
        ids.append(sample_id)
        reports[sample_id] = parsed if isinstance(parsed, str) else str(parsed)
        samples[sample_id] = sample
    model = str(header.get("model") or path.parent.name)
    return _Log(path, str(header["task"]), model, ids, reports, samples, missing)


def _reference(sample: dict[str, Any]) -> str:
    target = sample.get("target")
    if isinstance(target, list):
        return "\n".join(str(t) for t in target)
    return "" if target is None else str(target)


# ---------------------------------------------------------------- the arena


@dataclass
class ArenaResult:
    """Battles, ratings and judge diagnostics of one arena."""

    task: str
    judge: str
    models: list[str]
    logs: dict[str, str]
    battles: list[Battle]
    ratings: dict[str, dict[str, Any]]
    n_boot: int
    seed: int
    pairs: dict[str, int] = field(default_factory=dict)  # "a vs b" -> battles
    judge_stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def position_bias_rate(self) -> float:
        """Fraction of battles whose two presentation orders gave different verdicts."""
        if not self.battles:
            return float("nan")
        return sum(b.order_disagrees for b in self.battles) / len(self.battles)

    def ranking(self) -> list[str]:
        return sorted(self.ratings, key=lambda m: (-self.ratings[m]["rating"], m))

    def win_rates(self) -> dict[str, dict[str, float]]:
        """Mean (order-averaged) score of the row model against the column model."""
        totals: dict[tuple[str, str], list[float]] = {}
        for b in self.battles:
            totals.setdefault((b.model_a, b.model_b), []).append(b.outcome)
            totals.setdefault((b.model_b, b.model_a), []).append(1.0 - b.outcome)
        rates: dict[str, dict[str, float]] = {m: {} for m in self.models}
        for (a, b), values in totals.items():
            rates[a][b] = float(np.mean(values))
        return rates

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "judge": self.judge,
            "models": self.models,
            "logs": self.logs,
            "n_battles": len(self.battles),
            "pairs": self.pairs,
            "position_bias_rate": self.position_bias_rate,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "ranking": self.ranking(),
            "ratings": self.ratings,
            "win_rates": self.win_rates(),
            "judge_stats": self.judge_stats,
            "notes": self.notes,
            "battles": [asdict(b) for b in self.battles],
        }

    def to_markdown(self) -> str:
        lines = [
            f"### Report Arena: {self.task}",
            "",
            f"Judge `{self.judge}`; {len(self.battles)} battles over {len(self.pairs)} model pair(s), each "
            f"judged in both orders; position-bias rate {self.position_bias_rate:.3f}. Bradley–Terry "
            f"ratings (mean 1000; 95% CI from {self.n_boot} bootstrap resamples of the battles).",
            "",
            "| rank | model | rating [95% CI] | W / L / T |",
            "|---|---|---|---|",
        ]
        for rank, model in enumerate(self.ranking(), 1):
            r = self.ratings[model]
            low, high = r["ci95"]
            ci = f" [{low:.0f}, {high:.0f}]" if low == low and high == high else ""
            lines.append(
                f"| {rank} | {model} | {r['rating']:.0f}{ci} | {r['wins']} / {r['losses']} / {r['ties']} |"
            )
        stats = self.judge_stats
        if stats.get("unparsed") or stats.get("errors"):
            lines.append("")
            lines.append(
                f"- judge answers counted as ties: {stats.get('unparsed', 0)} unparseable, "
                f"{stats.get('errors', 0)} errors (of {stats.get('calls', 0)} calls)"
            )
        for note in self.notes:
            lines.append(f"- note: {note}")
        return "\n".join(lines)


def run_arena(
    logs: dict[str, str | Path],
    judge: Any,
    pairs: str | Sequence[tuple[str, str]] = "all",
    max_samples: int | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    pseudo_count: float = 0.1,
) -> ArenaResult:
    """Judge every pair of models on the samples their logs share and rate them.

    ``logs``: model name -> per-sample log of one task. ``pairs``: ``"all"`` (every pair) or
    a list of ``(model_a, model_b)``. ``max_samples``: at most this many shared samples per
    pair, drawn with ``seed`` (the same draw order for every pair). The reference report is
    the sample's ``target`` in the first log; a row without a parsed report (a failed
    generation) is judged as an empty report.
    """
    if len(logs) < 2:
        raise ArenaError(f"the arena needs at least two models, got {len(logs)}")
    read = {name: _read_log(Path(path)) for name, path in logs.items()}
    models = list(read)
    tasks = {name: log.task for name, log in read.items()}
    if len(set(tasks.values())) > 1:
        detail = ", ".join(f"{read[m].path} is {t!r}" for m, t in tasks.items())
        raise ArenaError(f"the logs are for different tasks: {detail}")
    task = next(iter(tasks.values()))
    if pairs == "all":
        chosen = list(itertools.combinations(models, 2))
    else:
        chosen = [tuple(p) for p in pairs]  # type: ignore[misc]
        for a, b in chosen:
            for m in (a, b):
                if m not in read:
                    raise ArenaError(f"pair ({a}, {b}): no log for model {m!r}")
            if a == b:
                raise ArenaError(f"pair ({a}, {b}): a model cannot battle itself")
    if max_samples is not None and max_samples < 1:
        raise ArenaError(f"max_samples must be at least 1, got {max_samples}")

    notes: list[str] = []
    order = list(dict.fromkeys(i for log in read.values() for i in log.ids))
    permutation = np.random.default_rng(seed).permutation(len(order))
    rank = {order[j]: r for r, j in enumerate(permutation)}
    items: list[JudgeItem] = []
    keys: list[tuple[str, str, str]] = []
    pair_counts: dict[str, int] = {}
    for a, b in chosen:
        log_a, log_b = read[a], read[b]
        shared = [i for i in log_a.ids if i in log_b.reports]
        if not shared:
            raise ArenaError(f"{log_a.path} and {log_b.path} share no sample id: nothing to judge")
        if max_samples is not None and len(shared) > max_samples:
            kept = set(sorted(shared, key=rank.__getitem__)[:max_samples])
            shared = [i for i in shared if i in kept]
        pair_counts[f"{a} vs {b}"] = len(shared)
        for sample_id in shared:
            sample = read[models[0]].samples.get(sample_id) or log_a.samples[sample_id]
            reference = _reference(sample)
            report_a, report_b = log_a.reports[sample_id], log_b.reports[sample_id]
            items.append((reference, report_a, report_b, sample))
            items.append((reference, report_b, report_a, sample))
            keys.append((sample_id, a, b))
    for log in read.values():
        if log.missing:
            notes.append(f"{log.missing} row(s) of {log.path} have no report (failed); judged as empty")
    outcomes = _judge_all(judge, items)
    battles = [
        Battle(sample_id, a, b, outcomes[2 * n], 1.0 - outcomes[2 * n + 1])
        for n, (sample_id, a, b) in enumerate(keys)
    ]
    ratings = bradley_terry(battles, n_boot=n_boot, seed=seed, pseudo_count=pseudo_count)
    if any(r["regularised"] for r in ratings.values()):
        notes.append(
            f"a model won or lost every battle against the rest: the plain Bradley-Terry MLE does not "
            f"exist, so {pseudo_count:g} virtual win(s) each way were added to every pair of models"
        )
    judge_stats = {key: getattr(judge, key) for key in ("calls", "unparsed", "errors") if hasattr(judge, key)}
    return ArenaResult(
        task=task,
        judge=_describe(judge),
        models=models,
        logs={name: str(log.path) for name, log in read.items()},
        battles=battles,
        ratings=ratings,
        n_boot=n_boot,
        seed=seed,
        pairs=pair_counts,
        judge_stats=judge_stats,
        notes=notes,
    )


# ---------------------------------------------------------------- command line


def add_arena_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cxbench arena LOG_OR_RUN_DIR...``."""
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="LOG_OR_RUN_DIR",
        help="per-sample logs (*.samples.jsonl), results/<model>/ folders, or a results/ folder of them",
    )
    parser.add_argument(
        "--task", default=DEFAULT_TASK, help=f"task whose logs to judge (default: {DEFAULT_TASK})"
    )
    parser.add_argument(
        "--judge",
        default=f"metric:{DEFAULT_METRIC}",
        help=f"metric:NAME (offline) or model:SPEC (a cxbench model spec) (default: metric:{DEFAULT_METRIC})",
    )
    parser.add_argument(
        "--judge-args",
        action="append",
        default=[],
        metavar="K=V,...",
        help="arguments of the judge model (model:) or metric options (metric:)",
    )
    parser.add_argument(
        "--tie-margin",
        type=float,
        default=0.0,
        help="metric judge: differences up to this are ties (default: 0)",
    )
    parser.add_argument("--judge-images", action="store_true", help="model judge: send the study images too")
    parser.add_argument(
        "--judge-prompt", default=None, metavar="FILE", help="model judge: prompt template file"
    )
    parser.add_argument("--max-samples", type=int, default=None, help="at most N shared samples per pair")
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default: 1000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and bootstrap (default: 0)")
    parser.add_argument("--output", default=None, metavar="FILE.json", help="write the full result as JSON")


def _find_logs(paths: Sequence[str], task: str) -> dict[str, Path]:
    """Model name -> log, from logs, run folders or a results folder of run folders."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise ArenaError(f"{path}: no such file or folder")
        if path.is_file():
            found.append(path)
            continue
        log = path / f"{task}{LOG_SUFFIX}"
        if log.is_file():
            found.append(log)
            continue
        nested = sorted(
            p / f"{task}{LOG_SUFFIX}" for p in path.iterdir() if (p / f"{task}{LOG_SUFFIX}").is_file()
        )
        if not nested:
            raise ArenaError(f"{path}: no {task}{LOG_SUFFIX} in it (nor in its subfolders)")
        found.extend(nested)
    logs: dict[str, Path] = {}
    for log in found:
        parsed = _read_log(log)
        if parsed.task != task:
            raise ArenaError(f"{log}: a log of task {parsed.task!r}, not {task!r} (see --task)")
        name = parsed.model
        if name in logs:
            if logs[name].resolve() == log.resolve():
                continue
            name = f"{name} ({log.parent.name})" if f"{name} ({log.parent.name})" not in logs else str(log)
        logs[name] = log
    if len(logs) < 2:
        raise ArenaError(f"the arena needs logs of at least two models, got {len(logs)}: {', '.join(paths)}")
    return logs


def _build_judge(args: argparse.Namespace) -> Any:
    from cxbench.models import parse_model_args

    options: dict[str, Any] = {}
    for text in args.judge_args:
        options.update(parse_model_args(text))
    kind, _, rest = args.judge.partition(":")
    if kind == "metric":
        return MetricJudge(rest or DEFAULT_METRIC, tie_margin=args.tie_margin, **options)
    if kind == "model":
        if not rest:
            raise ArenaError("--judge model:SPEC needs a model spec, e.g. model:openai:gpt-4o")
        from cxbench.models import load_model

        prompt = DEFAULT_PROMPT
        if args.judge_prompt:
            prompt_path = Path(args.judge_prompt)
            if not prompt_path.is_file():
                raise ArenaError(f"{prompt_path}: no such prompt template file")
            prompt = prompt_path.read_text(encoding="utf-8")
        return ModelJudge(load_model(rest, options), prompt_template=prompt, images=args.judge_images)
    raise ArenaError(f"unknown judge {args.judge!r}; use metric:NAME or model:SPEC")


def cli_arena(args: argparse.Namespace) -> int:
    """``cxbench arena``: print the rating table (and write JSON); 2 on bad input."""
    from cxbench.models.base import ModelError

    try:
        if args.bootstrap < 0:
            raise ArenaError(f"--bootstrap must be >= 0, got {args.bootstrap}")
        logs = _find_logs(args.runs, args.task)
        judge = _build_judge(args)
        result = run_arena(logs, judge, max_samples=args.max_samples, seed=args.seed, n_boot=args.bootstrap)
    except (ArenaError, ModelError, ValueError, OSError) as exc:
        print(f"cxbench arena: error: {exc}", file=sys.stderr)
        return 2
    print(result.to_markdown())
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


__all__ = [
    "DEFAULT_PROMPT",
    "ArenaError",
    "ArenaResult",
    "Battle",
    "Judge",
    "MetricJudge",
    "ModelJudge",
    "add_arena_arguments",
    "bradley_terry",
    "cli_arena",
    "parse_verdict",
    "run_arena",
]
