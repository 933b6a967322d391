"""Leaderboards: a YAML definition + result files -> tables, plots and a static HTML page.

A definition (``leaderboards/NAME.yaml``) names the columns (task + metric), where the
result files are, how models are ranked and which per-class breakdown feeds the heatmap::

    name: default
    title: cxbench default suite
    results: results                 # folder searched recursively for <model>/<task>.json
    columns:
      - {task: vqa_closed, metric: accuracy}
      - {task: report_generation, metric: chexpert_micro_f1_14}
    rank: mean_normalized            # see ``rank_models``
    heatmap: {task: report_generation, metric: chexpert_micro_f1_14}

``cxbench leaderboard build NAME`` writes Markdown, CSV and LaTeX tables, PNG + PDF plots
(bars with CI whiskers per column, a radar chart, a per-finding heatmap) and ``index.html``
into ``leaderboards/NAME/`` (or ``--output``).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cxbench.results import atomic_write_text


class LeaderboardError(ValueError):
    """A leaderboard definition or its results are unusable; the message names the file."""


@dataclass
class Leaderboard:
    name: str
    title: str
    results: str
    columns: list[tuple[str, str]]
    rank: str = "mean_normalized"
    description: str = ""
    heatmap: tuple[str, str] | None = None
    source: Path | None = None
    models: list[str] = field(default_factory=list)  # optional allow-list

    @classmethod
    def from_yaml(cls, path: str | Path) -> Leaderboard:
        path = Path(path)
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise LeaderboardError(f"{path}: cannot read leaderboard definition: {exc}") from None
        if not isinstance(config, dict) or "columns" not in config:
            raise LeaderboardError(f"{path}: a leaderboard needs a mapping with 'columns'")
        columns = []
        for i, column in enumerate(config["columns"]):
            if not isinstance(column, dict) or not {"task", "metric"} <= set(column):
                raise LeaderboardError(f"{path}: columns[{i}] needs 'task' and 'metric'")
            columns.append((str(column["task"]), str(column["metric"])))
        if config.get("rank", "mean_normalized") != "mean_normalized":
            raise LeaderboardError(f"{path}: rank {config['rank']!r} is not supported (mean_normalized)")
        heatmap = config.get("heatmap")
        return cls(
            name=str(config.get("name", path.stem)),
            title=str(config.get("title", path.stem)),
            results=str(config.get("results", "results")),
            columns=columns,
            description=str(config.get("description", "")).strip(),
            heatmap=(heatmap["task"], heatmap["metric"]) if heatmap else None,
            source=path,
            models=list(config.get("models", [])),
        )


def find_leaderboard(name: str, folder: str | Path = "leaderboards") -> Path:
    """``NAME`` as a path, or ``leaderboards/NAME.yaml``."""
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(folder).glob("*.yaml")) if Path(folder).is_dir() else []
        raise LeaderboardError(
            f"no leaderboard {name!r} (looked for {path}); known: {', '.join(known) or 'none'}"
        )
    return path


def collect_results(board: Leaderboard, results_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Result files for the board's tasks; the newest file wins when a model/task repeats."""
    folder = Path(results_dir or board.results)
    if not folder.is_dir():
        raise LeaderboardError(f"results folder not found: {folder}")
    tasks = {task for task, _ in board.columns}
    chosen: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for path in sorted(folder.rglob("*.json")):
        if path.name.endswith(".rescored.json"):
            continue
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise LeaderboardError(f"{path}: not a readable result file ({exc})") from None
        if not isinstance(result, dict) or "task" not in result or "model" not in result:
            continue  # not a cxbench result (e.g. a stray JSON)
        task, model = result["task"]["name"], result["model"]["name"]
        if task not in tasks or (board.models and model not in board.models):
            continue
        key = (model, task)
        if key not in chosen or result.get("date", "") >= chosen[key][0]:
            chosen[key] = (result.get("date", ""), result)
    if not chosen:
        raise LeaderboardError(f"no results for tasks {sorted(tasks)} under {folder}")
    return [result for _, result in chosen.values()]


def _cell(results: list[dict[str, Any]], model: str, task: str, metric: str) -> dict[str, Any] | None:
    for result in results:
        if result["model"]["name"] == model and result["task"]["name"] == task:
            value = result["metrics"].get(metric)
            if value and value.get("value") is not None:
                return value
    return None


def model_names(results: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for result in results:
        if result["model"]["name"] not in names:
            names.append(result["model"]["name"])
    return names


def rank_models(board: Leaderboard, results: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Models by the mean over columns of min-max normalised scores (best = 1, worst = 0).

    Direction-aware; a column where all models tie gives everyone 1; a missing cell counts 0.
    """
    models = model_names(results)
    scores = {model: [] for model in models}
    for task, metric in board.columns:
        cells = {m: _cell(results, m, task, metric) for m in models}
        values = [c["value"] for c in cells.values() if c]
        if not values:
            continue
        low, high = min(values), max(values)
        for model, cell in cells.items():
            if cell is None:
                scores[model].append(0.0)
                continue
            norm = 1.0 if high == low else (cell["value"] - low) / (high - low)
            scores[model].append(norm if cell.get("direction", "higher") == "higher" else 1 - norm)
    ranked = [(m, sum(s) / len(s) if s else 0.0) for m, s in scores.items()]
    return sorted(ranked, key=lambda item: (-item[1], item[0]))


def _plots(board: Leaderboard, results: list[dict[str, Any]], ranking: list[tuple[str, float]], out: Path):
    import matplotlib

    matplotlib.use("Agg")
    # names and breakdown keys come from result files: draw them as plain text, never as
    # mathtext ("$\\frac{...}$" would be parsed, and a malformed one would stop the build)
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _draw_plots(board, results, ranking, out)


def _draw_plots(
    board: Leaderboard, results: list[dict[str, Any]], ranking: list[tuple[str, float]], out: Path
) -> dict[str, str]:
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    models = [m for m, _ in ranking]
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)

    def save(fig, stem: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / f"{stem}.png", dpi=110)
        fig.savefig(folder / f"{stem}.pdf", metadata={"CreationDate": None})  # reproducible builds
        plt.close(fig)
        plots[stem] = f"plots/{stem}.png"

    for task, metric in board.columns:
        cells = [_cell(results, m, task, metric) for m in models]
        fig, ax = plt.subplots(figsize=(4.2, 2.8))
        values = [c["value"] if c else 0.0 for c in cells]
        # a percentile bootstrap CI need not contain the point estimate (skewed corpus metrics):
        # whiskers then start at the bar's top instead of failing the build
        low = [max(c["value"] - c["ci95"][0], 0.0) if c and c.get("ci95") else 0.0 for c in cells]
        high = [max(c["ci95"][1] - c["value"], 0.0) if c and c.get("ci95") else 0.0 for c in cells]
        ax.bar(range(len(models)), values, yerr=[low, high], capsize=4, color="#4c72b0")
        ax.set_xticks(range(len(models)), models, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{task}\n{metric}", fontsize=9)
        save(fig, f"bar_{task}_{metric}")

    if len(board.columns) >= 3:
        angles = [2 * math.pi * i / len(board.columns) for i in range(len(board.columns))]
        fig = plt.figure(figsize=(5, 5))
        ax = fig.add_subplot(polar=True)
        for model in models:
            values = []
            for task, metric in board.columns:
                cell = _cell(results, model, task, metric)
                lo, hi = cell.get("range", [0, 1]) if cell else (0, 1)
                value = cell["value"] if cell else 0.0
                span = (hi - lo) if isinstance(hi, (int, float)) and hi not in (None, math.inf) else 1
                values.append((value - lo) / span if span else 0.0)
            ax.plot(angles + angles[:1], values + values[:1], label=model)
            ax.fill(angles + angles[:1], values + values[:1], alpha=0.1)
        ax.set_xticks(angles, [f"{t}\n{m}" for t, m in board.columns], fontsize=7)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=8)
        save(fig, "radar")

    if board.heatmap:
        task, metric = board.heatmap
        rows = {m: (_cell(results, m, task, metric) or {}).get("breakdown") or {} for m in models}
        classes = sorted({k for r in rows.values() for k, v in r.items() if v is not None})
        if classes:
            import numpy as np

            grid = np.array(
                [[rows[m].get(k) if rows[m].get(k) is not None else np.nan for k in classes] for m in models],
                dtype=float,
            )
            fig, ax = plt.subplots(figsize=(1 + 0.55 * len(classes), 1 + 0.45 * len(models)))
            image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(len(models)), models, fontsize=8)
            for (i, j), v in np.ndenumerate(grid):
                if not np.isnan(v):
                    ax.text(
                        j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k"
                    )
            fig.colorbar(image, ax=ax, fraction=0.03)
            ax.set_title(f"{task}: {metric} per finding", fontsize=9)
            save(fig, "heatmap")
    return plots


_SORT_JS = """
document.querySelectorAll('th[data-col]').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], col = +th.dataset.col;
    var asc = th.dataset.asc !== 'true'; th.dataset.asc = asc;
    Array.from(body.rows).sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
      return asc ? c : -c;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""


def render_html(board: Leaderboard, results: list[dict[str, Any]], ranking, plots: dict[str, str]) -> str:
    """A self-contained page; every name and value from result files is HTML-escaped."""
    esc = html.escape
    head = ["rank", "model", "score"] + [f"{esc(t)}<br><small>{esc(m)}</small>" for t, m in board.columns]
    header = "".join(f'<th data-col="{i}">{h}</th>' for i, h in enumerate(head))
    body = []
    for position, (model, score) in enumerate(ranking, 1):
        cells = [
            f'<td data-v="{position}">{position}</td>',
            f'<td data-v="{esc(model)}">{esc(model)}</td>',
            f'<td data-v="{score:.6f}">{score:.3f}</td>',
        ]
        for task, metric in board.columns:
            cell = _cell(results, model, task, metric)
            if cell is None:
                cells.append('<td data-v="">–</td>')
                continue
            ci = cell.get("ci95") or [cell["value"], cell["value"]]
            cells.append(
                f'<td data-v="{cell["value"]:.6f}">{cell["value"]:.3f}'
                f"<br><small>[{ci[0]:.3f}, {ci[1]:.3f}]</small></td>"
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    figures = "".join(
        f'<figure><img src="{esc(src)}" alt="{esc(stem)}"><figcaption>{esc(stem)}</figcaption></figure>'
        for stem, src in plots.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(board.title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 14px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 6px 10px; text-align: right; }}
th {{ cursor: pointer; background: #f4f4f4; }} td:nth-child(2), th:nth-child(2) {{ text-align: left; }}
figure {{ display: inline-block; margin: 8px; }} img {{ max-width: 460px; }}
</style></head><body>
<h1>{esc(board.title)}</h1>
<p>{esc(board.description)}</p>
<p>Score: mean over columns of min-max normalised values (best 1, worst 0). Values with 95% bootstrap CIs.
Click a column header to sort.</p>
<table id="leaderboard"><thead><tr>{header}</tr></thead><tbody>
{"".join(body)}
</tbody></table>
<h2>Plots</h2>
{figures}
<script>{_SORT_JS}</script>
</body></html>
"""


def build(
    name: str, results_dir: str | None = None, output: str | None = None, folder: str | Path = "leaderboards"
) -> Path:
    """Build a leaderboard's tables, plots and page; returns the output folder."""
    from cxbench.report.tables import results_table

    board = Leaderboard.from_yaml(find_leaderboard(name, folder))
    results = collect_results(board, results_dir)
    ranking = rank_models(board, results)
    order = {model: i for i, (model, _) in enumerate(ranking)}
    results = sorted(results, key=lambda r: order.get(r["model"]["name"], len(order)))
    out = Path(output) if output else Path(folder) / board.name
    out.mkdir(parents=True, exist_ok=True)
    for fmt, suffix in (("markdown", "md"), ("csv", "csv"), ("latex", "tex")):
        table = results_table(
            results, columns=board.columns, fmt=fmt, ci=True, caption=board.title, label=f"tab:{board.name}"
        )
        atomic_write_text(out / f"leaderboard.{suffix}", table + "\n")
    plots = _plots(board, results, ranking, out)
    atomic_write_text(out / "index.html", render_html(board, results, ranking, plots))
    atomic_write_text(
        out / "ranking.json",
        json.dumps([{"model": m, "score": round(s, 6)} for m, s in ranking], indent=2) + "\n",
    )
    return out
