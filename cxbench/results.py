"""Result files: a schema-versioned JSON per (model, task), written atomically, and tables."""

from __future__ import annotations

import html
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from cxbench.schema import RESULT_SCHEMA_VERSION

_KEY_PACKAGES = ("cxbench", "numpy", "pandas", "pillow", "scikit-learn", "torch", "pyyaml")


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the key packages, read without importing them."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _KEY_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=False) + "\n")


def load_result(path: str | Path) -> dict[str, Any]:
    result = json.loads(Path(path).read_text(encoding="utf-8"))
    if result.get("schema_version", "").split(".")[0] != RESULT_SCHEMA_VERSION.split(".")[0]:
        raise ValueError(f"{path}: result schema {result.get('schema_version')!r} is not supported")
    return result


def markdown_cell(text: Any) -> str:
    """``text`` safe inside a Markdown table cell: no HTML, no column break, no line break.

    Model, task, metric and sample names come from result files and data sets; Markdown renders
    raw HTML, so ``< > &`` become entities, ``|`` is escaped and line breaks become spaces.
    """
    text = html.escape(str(text), quote=False).replace("|", "\\|")
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


def leaderboard_markdown(results: list[dict[str, Any]], with_ci: bool = True) -> str:
    """Models as rows, each task's primary metric (and any extra listed ones) as columns."""
    columns: list[tuple[str, str]] = []
    for result in results:
        for metric in result.get("leaderboard_metrics") or [result["primary_metric"]]:
            column = (result["task"]["name"], metric)
            if column not in columns:
                columns.append(column)
    models: list[str] = []
    for result in results:
        if result["model"]["name"] not in models:
            models.append(result["model"]["name"])
    cells: dict[tuple[str, str, str], str] = {}
    for result in results:
        for task_metric in columns:
            if task_metric[0] != result["task"]["name"] or task_metric[1] not in result["metrics"]:
                continue
            m = result["metrics"][task_metric[1]]
            if m.get("value") is None:
                cells[(result["model"]["name"], *task_metric)] = "n/a"
                continue
            text = f"{m['value']:.3f}"
            if with_ci and m.get("ci95"):
                text += f" [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"
            cells[(result["model"]["name"], *task_metric)] = text
    header = "| model | " + " | ".join(f"{markdown_cell(t)} {markdown_cell(m)}" for t, m in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    lines = [header, rule]
    for model in models:
        row = [cells.get((model, *c), "–") for c in columns]
        lines.append(f"| {markdown_cell(model)} | " + " | ".join(row) + " |")
    return "\n".join(lines)
