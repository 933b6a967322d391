"""Results tables for papers and READMEs: models as rows, (task, metric) pairs as columns.

>>> print(results_table(load_results("results"), fmt="markdown"))  # doctest: +SKIP

``results_table`` renders LaTeX (booktabs; best value per column in ``\\textbf``, second best
``\\underline``, each column ranked by its metric's direction), Markdown (best in bold, second
best in italics) or CSV (plain numbers; ``ci_low``/``ci_high`` columns with ``ci=True``).
Ranking uses the values as displayed (rounded to ``digits``), so equal-looking values tie:
every tied model gets the mark. A column is only marked when at least two models have a value.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

Column = tuple[str, str]
FORMATS = ("latex", "markdown", "csv")
RESCORED_SUFFIX = ".rescored.json"
#: key added to each loaded result: the file it came from (used in error messages)
SOURCE_KEY = "_source"

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIALS))


def latex_escape(text: Any) -> str:
    """``text`` with LaTeX's special characters (``\\ & % $ # _ { } ~ ^``) escaped, in one pass."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIALS[m.group(0)], str(text))


# ---------------------------------------------------------------- loading


def _looks_like_result(data: Any) -> bool:
    return isinstance(data, dict) and all(k in data for k in ("task", "model", "metrics"))


def _load_one(path: Path, explicit: bool) -> dict[str, Any] | None:
    from cxbench.results import load_result

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if explicit:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        # a damaged file in a results folder is skipped, loudly: a table must not lose a row silently
        print(f"cxbench: skipped {path}: not valid JSON ({exc})", file=sys.stderr)
        return None
    if not _looks_like_result(data):
        if explicit:
            raise ValueError(f"{path}: not a cxbench result file (no task/model/metrics)")
        return None  # some other JSON in a results folder
    result = load_result(path)  # checks the schema version
    result[SOURCE_KEY] = str(path)
    return result


def load_results(paths_or_dirs: str | Path | Iterable[str | Path], rescored: bool = False) -> list[dict]:
    """Result dicts from result JSON files and folders (searched recursively, in sorted order).

    In folders, ``*.rescored.json`` files (written by ``cxbench score``) are skipped, unless
    ``rescored``: then each replaces the original result of the same name beside it. Other
    JSON files in folders that are not results are ignored; a file named explicitly must be
    a result. Each result gets a ``"_source"`` key with its path.
    """
    if isinstance(paths_or_dirs, (str, Path)):
        paths_or_dirs = [paths_or_dirs]
    results: list[dict] = []
    for item in paths_or_dirs:
        path = Path(item)
        if path.is_dir():
            files = [p for p in sorted(path.rglob("*.json")) if not p.name.startswith(".") and p.is_file()]
            originals = [p for p in files if not p.name.endswith(RESCORED_SUFFIX)]
            if rescored:
                rescored_files = {p for p in files if p.name.endswith(RESCORED_SUFFIX)}
                chosen = []
                for p in originals:
                    replacement = p.with_name(p.stem + RESCORED_SUFFIX)
                    chosen.append(replacement if replacement in rescored_files else p)
                known = set(chosen)
                chosen += [p for p in sorted(rescored_files) if p not in known]
            else:
                chosen = originals
            results += [r for p in chosen if (r := _load_one(p, explicit=False)) is not None]
        elif path.is_file():
            results.append(_load_one(path, explicit=True))
        else:
            raise FileNotFoundError(f"{path}: no such result file or folder")
    return results


# ---------------------------------------------------------------- table model


def _direction(results: Sequence[dict], metric: str) -> str:
    for result in results:
        info = result.get("metrics", {}).get(metric)
        if isinstance(info, dict) and info.get("direction") in ("higher", "lower"):
            return info["direction"]
    try:
        from cxbench import metrics as registry

        return registry.get(metric).direction
    except Exception:  # unknown here: assume the common case
        return "higher"


def default_columns(results: Sequence[dict]) -> list[Column]:
    """Each task's leaderboard metrics (or its primary metric), in order of first appearance."""
    columns: list[Column] = []
    for result in results:
        for metric in result.get("leaderboard_metrics") or [result["primary_metric"]]:
            column = (result["task"]["name"], metric)
            if column not in columns:
                columns.append(column)
    return columns


def _resolve_columns(results: Sequence[dict], columns: Sequence[Column] | None) -> list[Column]:
    if columns is None:
        return default_columns(results)
    available: dict[str, dict[str, None]] = {}
    primary: dict[str, str] = {}
    for result in results:
        task = result["task"]["name"]
        available.setdefault(task, {}).update(dict.fromkeys(result.get("metrics", {})))
        primary.setdefault(task, result.get("primary_metric"))
    resolved: list[Column] = []
    for task, metric in columns:
        if task not in available:
            raise ValueError(f"no result for task {task!r}; tasks in the results: {', '.join(available)}")
        metric = metric or primary[task]  # "task" alone: its primary metric
        if metric not in available[task]:
            raise ValueError(
                f"task {task!r} has no metric {metric!r}; its metrics: {', '.join(available[task])}"
            )
        if (task, metric) not in resolved:
            resolved.append((task, metric))
    return resolved


def _cells(results: Sequence[dict], columns: Sequence[Column]) -> tuple[list[str], dict]:
    """Model names (rows, in order of first appearance) and (model, column) -> (value, ci)."""
    models: list[str] = []
    cells: dict[tuple[str, Column], tuple[float, tuple[float, float] | None]] = {}
    seen: dict[tuple[str, str], str] = {}
    wanted = set(columns)
    for result in results:
        model, task = result["model"]["name"], result["task"]["name"]
        source = result.get(SOURCE_KEY, "?")
        if (model, task) in seen:
            raise ValueError(
                f"two results for model {model!r} on task {task!r} ({seen[(model, task)]} and {source}); "
                "give one result per model and task"
            )
        seen[(model, task)] = source
        if model not in models and any(c[0] == task for c in wanted):
            models.append(model)
        for name, info in result.get("metrics", {}).items():
            if (task, name) not in wanted or not isinstance(info, dict):
                continue
            value = info.get("value")
            if value is None or value != value:
                continue
            ci = info.get("ci95")
            ci = (float(ci[0]), float(ci[1])) if ci and None not in ci[:2] else None
            cells[(model, (task, name))] = (float(value), ci)
    return models, cells


def _ranks(models: list[str], cells: dict, column: Column, direction: str, digits: int) -> dict[str, int]:
    """model -> 1 (best) or 2 (second best) in ``column``; ties share a rank."""
    shown = {m: round(cells[(m, column)][0], digits) for m in models if (m, column) in cells}
    if len(shown) < 2:
        return {}
    distinct = sorted(set(shown.values()), reverse=direction != "lower")
    ranks = {}
    for model, value in shown.items():
        position = distinct.index(value) + 1
        if position <= 2:
            ranks[model] = position
    return ranks


# ---------------------------------------------------------------- rendering


def results_table(
    results: list[dict],
    columns: list[Column] | None = None,
    fmt: str = "latex",
    ci: bool = False,
    caption: str | None = None,
    label: str | None = None,
    digits: int = 3,
    ci_digits: int = 2,
) -> str:
    """A table of ``results`` (result dicts, e.g. from ``load_results``): models x (task, metric).

    ``columns``: ``(task, metric)`` pairs (a metric of ``None`` or ``""`` means the task's
    primary metric); default: each task's leaderboard metrics. ``fmt``: ``"latex"``,
    ``"markdown"`` or ``"csv"``. ``ci``: add the 95% CIs. ``caption``/``label`` (LaTeX: wrap
    the tabular in a ``table`` float; they are inserted as given, not escaped; Markdown: the
    caption is a line above the table). Model, task and metric names are escaped.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if not results:
        raise ValueError("no results to tabulate")
    cols = _resolve_columns(results, columns)
    if not cols:
        raise ValueError("no columns to tabulate")
    models, cells = _cells(results, cols)
    directions = {c: _direction([r for r in results if r["task"]["name"] == c[0]], c[1]) for c in cols}
    ranks = {c: _ranks(models, cells, c, directions[c], digits) for c in cols}
    if fmt == "csv":
        return _csv_table(models, cells, cols, ci)
    render = _latex_table if fmt == "latex" else _markdown_table
    return render(models, cells, cols, directions, ranks, ci, caption, label, digits, ci_digits)


def _latex_table(models, cells, cols, directions, ranks, ci, caption, label, digits, ci_digits) -> str:
    groups: list[tuple[str, int]] = []  # consecutive columns of one task share a header cell
    for task, _ in cols:
        if groups and groups[-1][0] == task:
            groups[-1] = (task, groups[-1][1] + 1)
        else:
            groups.append((task, 1))
    task_row, rules, start = [""], [], 2
    for task, span in groups:
        task_row.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(task)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
        start += span
    arrows = {"higher": r"$\uparrow$", "lower": r"$\downarrow$"}
    metric_row = ["Model"] + [f"{latex_escape(m)} {arrows[directions[(t, m)]]}" for t, m in cols]
    lines = [
        rf"\begin{{tabular}}{{l{'c' * len(cols)}}}",
        r"\toprule",
        " & ".join(task_row) + r" \\",
        " ".join(rules),
        " & ".join(metric_row) + r" \\",
        r"\midrule",
    ]
    for model in models:
        row = [latex_escape(model)]
        for column in cols:
            if (model, column) not in cells:
                row.append("--")
                continue
            value, interval = cells[(model, column)]
            text = f"{value:.{digits}f}"
            rank = ranks[column].get(model)
            if rank == 1:
                text = rf"\textbf{{{text}}}"
            elif rank == 2:
                text = rf"\underline{{{text}}}"
            if ci and interval is not None:
                text += rf" {{\scriptsize [{interval[0]:.{ci_digits}f}, {interval[1]:.{ci_digits}f}]}}"
            row.append(text)
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption is None and label is None:
        return "\n".join(lines)
    head = [r"\begin{table}[t]", r"\centering"]
    if caption is not None:
        head.append(rf"\caption{{{caption}}}")
    if label is not None:
        head.append(rf"\label{{{label}}}")
    return "\n".join(head + lines + [r"\end{table}"])


def _md_escape(text: Any) -> str:
    from cxbench.results import markdown_cell

    return markdown_cell(text)


def _csv_text(text: Any) -> str:
    """A text cell that a spreadsheet will not run as a formula (``=``, ``+``, ``-``, ``@`` ...)."""
    text = str(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _markdown_table(models, cells, cols, directions, ranks, ci, caption, label, digits, ci_digits) -> str:
    arrows = {"higher": "↑", "lower": "↓"}
    lines = [f"**{caption}**", ""] if caption else []
    header = [f"{_md_escape(t)} / {_md_escape(m)} {arrows[directions[(t, m)]]}" for t, m in cols]
    lines += ["| model | " + " | ".join(header) + " |", "|---|" + "---:|" * len(cols)]
    for model in models:
        row = [_md_escape(model)]
        for column in cols:
            if (model, column) not in cells:
                row.append("–")
                continue
            value, interval = cells[(model, column)]
            text = f"{value:.{digits}f}"
            rank = ranks[column].get(model)
            if rank == 1:
                text = f"**{text}**"
            elif rank == 2:
                text = f"*{text}*"
            if ci and interval is not None:
                text += f" [{interval[0]:.{ci_digits}f}, {interval[1]:.{ci_digits}f}]"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Best per column in bold, second best in italics; ↑/↓: higher/lower is better."]
    return "\n".join(lines)


def _csv_table(models, cells, cols, ci) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["model"]
    for task, metric in cols:
        header.append(_csv_text(f"{task}/{metric}"))
        if ci:
            header += [_csv_text(f"{task}/{metric} ci_low"), _csv_text(f"{task}/{metric} ci_high")]
    writer.writerow(header)
    for model in models:
        row: list[Any] = [_csv_text(model)]
        for column in cols:
            value, interval = cells.get((model, column), (None, None))
            row.append("" if value is None else repr(value))
            if ci:
                row += ["", ""] if interval is None else [repr(interval[0]), repr(interval[1])]
        writer.writerow(row)
    return buffer.getvalue()


# ---------------------------------------------------------------- command line


def parse_columns(text: str | None) -> list[Column] | None:
    """``"task:metric,task2"`` -> ``[("task", "metric"), ("task2", "")]`` ("" = primary metric)."""
    if text is None:
        return None
    columns: list[Column] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        task, _, metric = item.rpartition(":") if ":" in item else (item, "", "")
        if not task.strip():
            raise ValueError(f"--columns: expected task:metric, got {item!r}")
        columns.append((task.strip(), metric.strip()))
    return columns or None


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cxbench table RESULTS...``."""
    parser.add_argument("results", nargs="+", help="result JSON files or folders (searched recursively)")
    parser.add_argument(
        "--columns",
        default=None,
        metavar="TASK:METRIC,...",
        help="columns (a task alone: its primary metric; default: each task's leaderboard metrics)",
    )
    parser.add_argument("--format", choices=FORMATS, default="latex", help="output format (default: latex)")
    parser.add_argument("--ci", action="store_true", help="show the 95%% confidence intervals")
    parser.add_argument("--output", default=None, metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("--caption", default=None, help="table caption (LaTeX: wraps a table float)")
    parser.add_argument("--label", default=None, help="LaTeX label")
    parser.add_argument("--digits", type=int, default=3, help="decimals of the values (default: 3)")
    parser.add_argument(
        "--rescored", action="store_true", help="use *.rescored.json results in place of the originals"
    )


def cli_table(args: argparse.Namespace) -> int:
    """``cxbench table``: print or write the table; 2 (message on stderr) on bad input."""
    from cxbench.results import atomic_write_text

    try:
        results = load_results(args.results, rescored=getattr(args, "rescored", False))
        if not results:
            raise ValueError(f"no result files in {', '.join(map(str, args.results))}")
        text = results_table(
            results,
            columns=parse_columns(args.columns),
            fmt=args.format,
            ci=args.ci,
            caption=getattr(args, "caption", None),
            label=getattr(args, "label", None),
            digits=getattr(args, "digits", 3),
        )
    except (ValueError, OSError) as exc:
        print(f"cxbench table: error: {exc}", file=sys.stderr)
        return 2
    if args.output:
        atomic_write_text(args.output, text if text.endswith("\n") else text + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


__all__ = [
    "Column",
    "add_table_arguments",
    "cli_table",
    "default_columns",
    "latex_escape",
    "load_results",
    "parse_columns",
    "results_table",
]
