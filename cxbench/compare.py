"""Paired comparison of two runs on the same task: is the candidate significantly worse?

``compare_logs`` reads two per-sample logs (``results/<model>/<task>.samples.jsonl``) of one
task, pairs their rows by ``sample_id`` and, for every chosen metric, recomputes both values
from the per-sample statistics (``metric.reduce``), the difference with a paired bootstrap CI,
and a p-value (paired bootstrap or approximate randomization), Holm-adjusted across the
metrics of the comparison. ``compare_runs`` does this for every task two result folders have
in common. ``cli_compare`` is the ``cxbench compare`` command: exit 0 when nothing regressed,
1 when a metric got significantly worse by more than ``--max-drop``, 2 on bad input.

Conventions:

- ``delta`` is oriented so that positive means better: ``candidate - base`` for
  higher-is-better metrics, ``base - candidate`` for lower-is-better ones (its CI too).
- A metric *regressed* when ``delta < -max_drop`` and its Holm-adjusted p < ``alpha``;
  it *improved* when ``delta > max_drop`` and adjusted p < ``alpha``; otherwise there is
  "no significant change". ``max_drop`` is absolute, in the metric's units.
- Rows are paired on the sample ids both logs share; ids in only one log are left out and
  counted (a warning says how many); no shared id is an error.
- Values are ``reduce`` of the paired rows, so they equal the result files' values when no
  row was dropped (except metrics whose reported point estimate is not a function of the
  per-sample statistics, e.g. METEOR's aggregate score).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxbench.logs import iter_log, read_header
from cxbench.stats import approximate_randomization, holm, paired_bootstrap

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no significant change"
METHODS = ("bootstrap", "randomization")
LOG_SUFFIX = ".samples.jsonl"


class CompareError(ValueError):
    """Bad input for a comparison (unreadable log, different tasks, nothing to pair...)."""


class NoMetricError(CompareError):
    """None of the (requested) metrics can be compared on a pair of logs."""


# ---------------------------------------------------------------- results


@dataclass
class MetricComparison:
    """One metric of a comparison. ``delta`` and its CI are oriented so that positive is better."""

    metric: str
    direction: str  # "higher" or "lower" is better
    base: float
    candidate: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float  # unadjusted
    p_adjusted: float  # Holm across the metrics of the comparison
    verdict: str
    primary: bool = False

    @property
    def raw_delta(self) -> float:
        """``candidate - base`` in the metric's own orientation."""
        return self.candidate - self.base


@dataclass
class Comparison:
    """A baseline and a candidate log of one task, compared metric by metric."""

    task: str
    base_path: str
    cand_path: str
    base_model: str
    cand_model: str
    n_paired: int
    dropped_base: int  # baseline rows whose sample id is not in the candidate log
    dropped_cand: int  # candidate rows whose sample id is not in the baseline log
    method: str
    n_boot: int
    seed: int
    max_drop: float
    alpha: float
    metrics: list[MetricComparison] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why it was not compared
    warnings: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return any(m.verdict == REGRESSION for m in self.metrics)

    @property
    def improved(self) -> bool:
        return any(m.verdict == IMPROVEMENT for m in self.metrics)

    def metric(self, name: str) -> MetricComparison:
        for m in self.metrics:
            if m.metric == name:
                return m
        raise KeyError(f"metric {name!r} is not part of this comparison")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "regressed": self.regressed}

    def to_markdown(self, heading: bool = True) -> str:
        test = (
            f"paired bootstrap ({self.n_boot} resamples)"
            if self.method == "bootstrap"
            else f"approximate randomization ({self.n_boot} permutations; CI: paired bootstrap)"
        )
        lines = []
        if heading:
            lines += [f"### {self.task}: {self.base_model} → {self.cand_model}", ""]
        lines += [
            f"Baseline `{self.base_path}`, candidate `{self.cand_path}`: {self.n_paired} paired samples; "
            f"{test}, p Holm-adjusted over {len(self.metrics)} metric(s); a regression is a drop of more "
            f"than {self.max_drop:g} with adjusted p < {self.alpha:g}.",
            "",
            "| metric | base | candidate | delta [95% CI] | p (Holm) | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for m in self.metrics:
            arrow = "↓" if m.direction == "lower" else "↑"
            name = f"{m.metric} {arrow}" + (" (primary)" if m.primary else "")
            verdict = f"**{m.verdict}**" if m.verdict == REGRESSION else m.verdict
            lines.append(
                f"| {name} | {_num(m.base)} | {_num(m.candidate)} | "
                f"{_num(m.delta, True)} [{_num(m.ci_low, True)}, {_num(m.ci_high, True)}] | "
                f"{_num(m.p_adjusted)} | {verdict} |"
            )
        lines += [
            "",
            "delta = candidate − base, negated for ↓ (lower-is-better) metrics: positive is better.",
        ]
        for note in self.warnings:
            lines.append(f"- note: {note}")
        for name, reason in self.skipped.items():
            lines.append(f"- not compared: {name} ({reason})")
        return "\n".join(lines)


@dataclass
class RunComparison:
    """Two result folders (one model each), compared task by task."""

    base_dir: str
    cand_dir: str
    comparisons: list[Comparison] = field(default_factory=list)
    only_base: list[str] = field(default_factory=list)  # log names only in the baseline folder
    only_cand: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # task log -> why it was not compared

    @property
    def regressed(self) -> bool:
        return any(c.regressed for c in self.comparisons)

    @property
    def improved(self) -> bool:
        return any(c.improved for c in self.comparisons)

    def to_markdown(self) -> str:
        parts = [c.to_markdown() for c in self.comparisons]
        notes = []
        if self.only_base:
            notes.append(f"- only in the baseline `{self.base_dir}`: {', '.join(self.only_base)}")
        if self.only_cand:
            notes.append(f"- only in the candidate `{self.cand_dir}`: {', '.join(self.only_cand)}")
        notes += [f"- not compared: {name} ({reason})" for name, reason in self.skipped.items()]
        if notes:
            parts.append("\n".join(notes))
        return "\n\n".join(parts)


def _num(value: float, signed: bool = False) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


# ---------------------------------------------------------------- reading logs


@dataclass
class _Log:
    path: Path
    header: dict[str, Any]
    ids: list[str]
    stats: dict[str, dict[str, Any]]  # sample id -> metric -> stats row


def _read_log(path: str | Path) -> _Log:
    path = Path(path)
    header = read_header(path, CompareError)
    ids: list[str] = []
    stats: dict[str, dict[str, Any]] = {}
    for _, _, record in iter_log(path, CompareError):
        sample_id = str(record["sample_id"])
        ids.append(sample_id)
        stats[sample_id] = record.get("stats") or {}
    return _Log(path, header, ids, stats)


def _resolve_log(path: str | Path) -> Path:
    """A log path as given, or the log a result JSON (``<task>.json``) points to."""
    path = Path(path)
    if path.suffix == ".json" and path.is_file():
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CompareError(f"{path}: not valid JSON ({exc.msg})") from None
        name = result.get("log") if isinstance(result, dict) else None
        if not name or not (path.parent / name).is_file():
            raise CompareError(f"{path}: a result file whose per-sample log ({name or '?'}) is not beside it")
        return path.parent / name
    return path


def _primary_metric(log: Path) -> str | None:
    """The primary metric from the result file beside a log, if there is one."""
    result_path = (
        log.with_name(log.name[: -len(LOG_SUFFIX)] + ".json") if log.name.endswith(LOG_SUFFIX) else None
    )
    if result_path is None or not result_path.is_file():
        return None
    try:
        return json.loads(result_path.read_text(encoding="utf-8")).get("primary_metric")
    except (json.JSONDecodeError, AttributeError, OSError):
        return None


def _matrix(log: _Log, ids: list[str], name: str) -> np.ndarray | str:
    """The (n, k) stats matrix of ``name`` over ``ids``, or why there is none."""
    rows = []
    missing = 0
    for sample_id in ids:
        row = log.stats[sample_id].get(name)
        if row is None or (isinstance(row, list) and not row):
            missing += 1
        else:
            rows.append(row if isinstance(row, list) else [row])
    if missing:
        return f"no stats in {missing} of {len(ids)} paired samples of {log.path}"
    try:
        return np.asarray(rows, dtype=float).reshape(len(rows), -1)
    except ValueError:
        return f"stats rows of different lengths in {log.path}"


# ---------------------------------------------------------------- comparing


def compare_logs(
    base_log: str | Path,
    cand_log: str | Path,
    metrics: list[str] | None = None,
    max_drop: float = 0.01,
    alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    method: str = "bootstrap",
    lenient: bool = False,
) -> Comparison:
    """Compare a candidate's per-sample log with a baseline's, on the same task.

    ``metrics``: metric names to compare (default: every metric with per-sample stats in both
    logs for all paired samples; a metric missing from a log, e.g. one that was unavailable
    during the run, is skipped and listed in ``Comparison.skipped``). A named metric that
    cannot be compared is an error, unless ``lenient`` (then it is skipped too). ``method``
    chooses the p-value: ``"bootstrap"`` (paired bootstrap, shifted to the null) or
    ``"randomization"`` (approximate randomization with ``n_boot`` permutations); the CI of
    the delta is always the paired bootstrap's. Raises ``CompareError`` (a ``ValueError``)
    naming the files for logs of different tasks, logs with no shared sample, unknown metrics.
    """
    from cxbench import metrics as registry

    if method not in METHODS:
        raise CompareError(f"unknown method {method!r}; use one of: {', '.join(METHODS)}")
    if n_boot < 1:
        raise CompareError(f"the number of resamples must be at least 1, got {n_boot}")
    base_path, cand_path = _resolve_log(base_log), _resolve_log(cand_log)
    base, cand = _read_log(base_path), _read_log(cand_path)
    b_task, c_task = base.header["task"], cand.header["task"]
    # a robustness variant (TASK@VARIANT) keeps its base task's sample ids (except @positions,
    # whose copies have their own ids and are scored with variants.positional_bias)
    if b_task.split("@")[0] != c_task.split("@")[0]:
        raise CompareError(
            f"the logs are for different tasks: {base.path} is {b_task!r}, {cand.path} is {c_task!r}"
        )
    notes: list[str] = []
    b_hash, c_hash = base.header.get("task_hash"), cand.header.get("task_hash")
    if b_task != c_task:
        notes.append(
            f"comparing {b_task!r} with its variant {c_task!r}: differences are the variant's effect"
        )
    elif b_hash != c_hash:
        notes.append(
            f"task {b_task!r} changed between the runs (hash {b_hash} in {base.path}, {c_hash} in "
            f"{cand.path}): differences may come from the task definition, not the model"
        )
    cand_ids = set(cand.ids)
    ids = [i for i in base.ids if i in cand_ids]
    if not ids:
        raise CompareError(f"{base.path} and {cand.path} share no sample id: nothing to pair")
    dropped_base, dropped_cand = len(base.ids) - len(ids), len(cand.ids) - len(ids)
    if dropped_base or dropped_cand:
        notes.append(
            f"paired {len(ids)} samples by id; left out {dropped_base} of {len(base.ids)} baseline and "
            f"{dropped_cand} of {len(cand.ids)} candidate samples without a partner"
        )

    primary = _primary_metric(base.path) or _primary_metric(cand.path)
    present = list(dict.fromkeys(name for log in (base, cand) for i in ids for name in log.stats[i]))
    if metrics:
        names = list(dict.fromkeys(metrics))
        if lenient:  # a metric neither log has is not this task's: ignore it quietly
            names = [name for name in names if name in present]
    else:
        names = present
        if primary in names:
            names.remove(primary)
            names.insert(0, primary)
    skipped: dict[str, str] = {}
    chosen: list[tuple[str, Any, np.ndarray, np.ndarray]] = []
    for name in names:
        try:
            metric = registry.get(name)
        except Exception as exc:  # unknown (e.g. a plugin metric not registered here) or broken
            reason = f"not a known metric here: {exc}"
            b = c = None
        else:
            b, c = _matrix(base, ids, name), _matrix(cand, ids, name)
            reason = next((m for m in (b, c) if isinstance(m, str)), None)
            if reason is None and b.shape != c.shape:
                reason = (
                    f"stats of different widths ({b.shape[1]} in {base.path}, {c.shape[1]} in {cand.path})"
                )
        if reason is not None:
            if metrics and not lenient:
                raise CompareError(f"cannot compare metric {name!r}: {reason}")
            skipped[name] = reason
            continue
        chosen.append((name, metric, b, c))
    if not chosen:
        raise NoMetricError(f"no metric with per-sample stats in both {base.path} and {cand.path}")

    rows: list[dict[str, Any]] = []
    for name, metric, b, c in chosen:
        sign = -1.0 if metric.direction == "lower" else 1.0
        boot = paired_bootstrap(b, c, metric.reduce, n_boot=n_boot, seed=seed)
        if method == "bootstrap":
            p = boot["p_value"]
        else:
            p = approximate_randomization(b, c, metric.reduce, n_perm=n_boot, seed=seed)
        low, high = sorted((sign * boot["ci_low"], sign * boot["ci_high"]))
        rows.append(
            {
                "metric": name,
                "direction": metric.direction,
                "base": float(metric.reduce(b)),
                "candidate": float(metric.reduce(c)),
                "delta": sign * boot["delta"],
                "ci_low": low,
                "ci_high": high,
                "p_value": p,
                "primary": name == primary,
            }
        )
    adjusted = holm({r["metric"]: r["p_value"] for r in rows})
    floor = min(1.0, len(rows) / (n_boot + 1))  # the smallest attainable Holm-adjusted p
    if floor >= alpha:
        notes.append(
            f"with {n_boot} resamples and {len(rows)} metric(s) no adjusted p can fall below "
            f"{floor:.3g} >= alpha {alpha:g}: nothing can be significant; use more resamples"
        )
    results = []
    for r in rows:
        p_adj = adjusted[r["metric"]]
        significant = p_adj == p_adj and p_adj < alpha
        if significant and r["delta"] < -max_drop:
            verdict = REGRESSION
        elif significant and r["delta"] > max_drop:
            verdict = IMPROVEMENT
        else:
            verdict = NO_CHANGE
        results.append(MetricComparison(**r, p_adjusted=p_adj, verdict=verdict))
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return Comparison(
        task=b_task,
        base_path=str(base.path),
        cand_path=str(cand.path),
        base_model=str(base.header.get("model", "?")),
        cand_model=str(cand.header.get("model", "?")),
        n_paired=len(ids),
        dropped_base=dropped_base,
        dropped_cand=dropped_cand,
        method=method,
        n_boot=n_boot,
        seed=seed,
        max_drop=max_drop,
        alpha=alpha,
        metrics=results,
        skipped=skipped,
        warnings=notes,
    )


def _logs_in(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise CompareError(f"{folder}: no such folder")
    logs = {p.name: p for p in sorted(folder.glob(f"*{LOG_SUFFIX}"))}
    if not logs:
        raise CompareError(
            f"{folder}: no *{LOG_SUFFIX} logs (give one model's folder, e.g. results/<model>/)"
        )
    return logs


def compare_runs(
    base_dir: str | Path,
    cand_dir: str | Path,
    metrics: list[str] | None = None,
    max_drop: float = 0.01,
    alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    method: str = "bootstrap",
) -> RunComparison:
    """Compare every task two result folders (``results/<model>/``) share, pairing logs by file name.

    Holm's adjustment is applied within each task. With ``metrics`` given, each task compares
    those of them its logs have (tasks with none are listed in ``skipped``); it is an error
    when no requested metric can be compared anywhere, and requested metrics that no shared
    task has are listed in ``skipped``.
    """
    base_dir, cand_dir = Path(base_dir), Path(cand_dir)
    base_logs, cand_logs = _logs_in(base_dir), _logs_in(cand_dir)
    common = [name for name in base_logs if name in cand_logs]
    if not common:
        raise CompareError(
            f"{base_dir} and {cand_dir} have no task log in common "
            f"({', '.join(base_logs)} vs {', '.join(cand_logs)})"
        )
    out = RunComparison(
        base_dir=str(base_dir),
        cand_dir=str(cand_dir),
        only_base=[n for n in base_logs if n not in cand_logs],
        only_cand=[n for n in cand_logs if n not in base_logs],
    )
    for name in common:
        try:
            comparison = compare_logs(
                base_logs[name],
                cand_logs[name],
                metrics=metrics,
                max_drop=max_drop,
                alpha=alpha,
                n_boot=n_boot,
                seed=seed,
                method=method,
                lenient=True,
            )
        except NoMetricError:
            if not metrics:
                raise
            out.skipped[name] = "none of the requested metrics"
            continue
        out.comparisons.append(comparison)
    if metrics:
        compared = {m.metric for c in out.comparisons for m in c.metrics}
        if not compared:
            raise NoMetricError(
                f"none of the requested metrics ({', '.join(metrics)}) can be compared on the logs "
                f"{base_dir} and {cand_dir} share"
            )
        for name in metrics:
            if name not in compared:
                out.skipped[f"metric {name}"] = "in no task log both folders share"
    return out


# ---------------------------------------------------------------- command line


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cxbench compare BASELINE CANDIDATE``."""
    parser.add_argument(
        "baseline", help="baseline: a *.samples.jsonl log (or result .json) or a results/<model>/ folder"
    )
    parser.add_argument("candidate", help="candidate: a log or folder, like the baseline")
    parser.add_argument(
        "--metrics", type=_csv, default=None, help="comma-separated metrics (default: all in both logs)"
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=0.01,
        help="largest tolerated drop, in metric units (default: 0.01)",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples / randomization permutations (default: 1000)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="bootstrap",
        help="how p-values are computed (default: bootstrap)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default: 0)")


def cli_compare(args: argparse.Namespace) -> int:
    """``cxbench compare``: print the tables; 1 if a metric regressed significantly, 2 on bad input."""
    base, cand = Path(args.baseline), Path(args.candidate)
    options = {
        "metrics": args.metrics or None,
        "max_drop": args.max_drop,
        "alpha": args.alpha,
        "n_boot": args.bootstrap,
        "seed": args.seed,
        "method": args.method,
    }
    try:
        for path in (base, cand):
            if not path.exists():
                raise CompareError(f"{path}: no such file or folder")
        if base.is_dir() != cand.is_dir():
            raise CompareError(
                f"compare two logs or two result folders, not a {'folder' if base.is_dir() else 'file'} "
                f"({base}) with a {'folder' if cand.is_dir() else 'file'} ({cand})"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the notes are printed below, once
            if base.is_dir():
                outcome: Comparison | RunComparison = compare_runs(base, cand, **options)
                notes = [n for c in outcome.comparisons for n in c.warnings]
            else:
                outcome = compare_logs(base, cand, **options)
                notes = outcome.warnings
    except (CompareError, ValueError, OSError) as exc:
        print(f"cxbench compare: error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"cxbench compare: warning: {note}", file=sys.stderr)
    print(outcome.to_markdown())
    return 1 if outcome.regressed else 0


__all__ = [
    "IMPROVEMENT",
    "NO_CHANGE",
    "REGRESSION",
    "CompareError",
    "Comparison",
    "MetricComparison",
    "RunComparison",
    "add_compare_arguments",
    "cli_compare",
    "compare_logs",
    "compare_runs",
]
