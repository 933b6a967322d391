"""Results tables: LaTeX structure, escaping, best/second-best marks, Markdown, CSV, loading, CLI."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from pathlib import Path

import pytest

from cxbench.report.tables import (
    add_table_arguments,
    cli_table,
    latex_escape,
    load_results,
    parse_columns,
    results_table,
)
from cxbench.schema import RESULT_SCHEMA_VERSION


def result(model: str, task: str, metrics: dict[str, tuple], primary: str | None = None) -> dict:
    """A minimal result dict; ``metrics``: name -> (value, direction[, (ci_low, ci_high)])."""
    block = {}
    for name, spec in metrics.items():
        value, direction = spec[0], spec[1]
        ci = list(spec[2]) if len(spec) > 2 else [value - 0.05, value + 0.05] if value is not None else None
        block[name] = {"value": value, "ci95": ci, "direction": direction}
    return {
        "schema_version": RESULT_SCHEMA_VERSION,
        "task": {"name": task},
        "model": {"name": model},
        "n": 100,
        "metrics": block,
        "primary_metric": primary or next(iter(metrics)),
    }


@pytest.fixture()
def results() -> list[dict]:
    return [
        result("model_a", "vqa_closed", {"accuracy": (0.81, "higher"), "err%": (0.30, "lower")}),
        result("model_b", "vqa_closed", {"accuracy": (0.85, "higher"), "err%": (0.20, "lower")}),
        result("model_c", "vqa_closed", {"accuracy": (0.70, "higher"), "err%": (0.25, "lower")}),
        result("model_a", "report_gen", {"bleu4": (0.12, "higher", (0.10, 0.14))}),
        result("model_b", "report_gen", {"bleu4": (None, "higher")}),  # unavailable
        result("model_c", "report_gen", {"bleu4": (0.10, "higher")}),
    ]


COLUMNS = [("vqa_closed", "accuracy"), ("vqa_closed", "err%"), ("report_gen", "bleu4")]


def _body_rows(latex: str) -> list[list[str]]:
    body = latex.split("\\midrule\n", 1)[1].split("\n\\bottomrule", 1)[0]
    return [[cell.strip() for cell in line.removesuffix(r" \\").split(" & ")] for line in body.splitlines()]


def test_latex_structure_escaping_and_marks(results):
    latex = results_table(results, COLUMNS, fmt="latex")
    lines = latex.splitlines()
    spec = re.search(r"\\begin\{tabular\}\{([^}]*)\}", latex).group(1)
    assert spec == "lccc"
    assert [line for line in lines if line in (r"\toprule", r"\midrule", r"\bottomrule")] == [
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
    ]
    # header: the task row's spans plus the stub column, and the metric row's cells, match the spec
    task_row = lines[lines.index(r"\toprule") + 1]
    spans = [int(s) for s in re.findall(r"\\multicolumn\{(\d+)\}", task_row)]
    assert 1 + sum(spans) == len(spec) and spans == [2, 1]
    metric_row = lines[lines.index(r"\midrule") - 1].removesuffix(r" \\").split(" & ")
    assert len(metric_row) == len(spec)
    assert all(len(row) == len(spec) for row in _body_rows(latex))
    # escaping of _ and % in model, task and metric names
    assert r"vqa\_closed" in task_row and r"report\_gen" in task_row
    assert metric_row[2].startswith(r"err\%") and r"$\downarrow$" in metric_row[2]
    assert "model_a" not in latex and r"model\_a" in latex and "err%" not in latex
    rows = {row[0]: row[1:] for row in _body_rows(latex)}
    # accuracy (higher): b best, a second; err% (lower): b 0.20 best, c 0.25 second; bleu4: a, c
    assert rows[r"model\_b"][0] == r"\textbf{0.850}" and rows[r"model\_a"][0] == r"\underline{0.810}"
    assert rows[r"model\_c"][0] == "0.700"
    assert rows[r"model\_b"][1] == r"\textbf{0.200}" and rows[r"model\_c"][1] == r"\underline{0.250}"
    assert rows[r"model\_a"][1] == "0.300"
    assert rows[r"model\_a"][2] == r"\textbf{0.120}" and rows[r"model\_c"][2] == r"\underline{0.100}"
    assert rows[r"model\_b"][2] == "--"  # unavailable value
    assert latex.count(r"\textbf{") == 3 and latex.count(r"\underline{") == 3


def test_latex_cis_caption_and_ties(results):
    latex = results_table(
        results, [("report_gen", "bleu4")], ci=True, caption="Main results", label="tab:main"
    )
    assert r"\textbf{0.120} {\scriptsize [0.10, 0.14]}" in latex
    assert latex.startswith("\\begin{table}[t]") and latex.rstrip().endswith("\\end{table}")
    assert r"\caption{Main results}" in latex and r"\label{tab:main}" in latex
    tied = [result(m, "t", {"acc": (v, "higher")}) for m, v in (("x", 0.5), ("y", 0.5), ("z", 0.4))]
    rows = {row[0]: row[1] for row in _body_rows(results_table(tied))}
    assert rows == {"x": r"\textbf{0.500}", "y": r"\textbf{0.500}", "z": r"\underline{0.400}"}
    single = results_table([result("only", "t", {"acc": (0.5, "higher")})])
    assert r"\textbf" not in single and r"\underline" not in single


def test_latex_escape_every_special():
    assert latex_escape(r"a_b%c&d#e$f{g}h~i^j\k") == (
        r"a\_b\%c\&d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )


def test_markdown_and_csv(results):
    md = results_table(results, COLUMNS, fmt="markdown", ci=True)
    lines = md.splitlines()
    assert lines[0] == "| model | vqa_closed / accuracy ↑ | vqa_closed / err% ↓ | report_gen / bleu4 ↑ |"
    assert lines[1] == "|---|---:|---:|---:|"
    row_b = next(line for line in lines if line.startswith("| model_b"))
    assert "**0.850** [0.80, 0.90]" in row_b and "**0.200**" in row_b and row_b.endswith("| – |")
    assert "*0.250*" in next(line for line in lines if line.startswith("| model_c"))

    text = results_table(results, COLUMNS, fmt="csv", ci=True)
    table = list(csv.reader(io.StringIO(text)))
    assert table[0][:4] == [
        "model",
        "vqa_closed/accuracy",
        "vqa_closed/accuracy ci_low",
        "vqa_closed/accuracy ci_high",
    ]
    assert len(table) == 4 and all(len(row) == 1 + 3 * 3 for row in table)
    by_model = {row[0]: row[1:] for row in table[1:]}
    assert float(by_model["model_a"][0]) == 0.81 and by_model["model_b"][6:] == ["", "", ""]
    plain = list(csv.reader(io.StringIO(results_table(results, COLUMNS, fmt="csv"))))
    assert plain[0] == ["model", "vqa_closed/accuracy", "vqa_closed/err%", "report_gen/bleu4"]


def test_default_columns_and_bad_columns(results):
    latex = results_table(results)  # each task's primary metric
    assert "accuracy" in latex and "bleu4" in latex and "err" not in latex
    assert parse_columns("vqa_closed:accuracy, report_gen") == [
        ("vqa_closed", "accuracy"),
        ("report_gen", ""),
    ]
    assert "bleu4" in results_table(results, parse_columns("report_gen"))
    with pytest.raises(ValueError, match="no metric 'f1'"):
        results_table(results, [("vqa_closed", "f1")])
    with pytest.raises(ValueError, match="no result for task"):
        results_table(results, [("nope", "accuracy")])
    with pytest.raises(ValueError, match="two results for model"):
        results_table(results + [results[0]])


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_load_results_recursively_skipping_rescored(tmp_path, results):
    _write(tmp_path / "res" / "model_a" / "vqa_closed.json", results[0])
    _write(tmp_path / "res" / "model_b" / "vqa_closed.json", results[1])
    rescored = {**results[1], "metrics": {"accuracy": {"value": 0.99, "ci95": None, "direction": "higher"}}}
    _write(tmp_path / "res" / "model_b" / "vqa_closed.rescored.json", rescored)
    _write(tmp_path / "res" / "other.json", {"not": "a result"})
    (tmp_path / "res" / "model_a" / "vqa_closed.samples.jsonl").write_text("{}\n")
    loaded = load_results(tmp_path / "res")
    assert [r["model"]["name"] for r in loaded] == ["model_a", "model_b"]
    assert loaded[1]["metrics"]["accuracy"]["value"] == 0.85
    with_rescored = load_results([tmp_path / "res"], rescored=True)
    assert [r["metrics"]["accuracy"]["value"] for r in with_rescored] == [0.81, 0.99]
    with pytest.raises(ValueError, match="not a cxbench result"):
        load_results(tmp_path / "res" / "other.json")
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "missing")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_table_arguments(parser)
    return cli_table(parser.parse_args(argv))


def test_cli(tmp_path, results, capsys):
    for r in results:
        _write(tmp_path / "res" / r["model"]["name"] / f"{r['task']['name']}.json", r)
    out = tmp_path / "table.tex"
    assert (
        _cli(
            [str(tmp_path / "res"), "--columns", "vqa_closed:accuracy,vqa_closed:err%", "--output", str(out)]
        )
        == 0
    )
    assert r"\toprule" in out.read_text() and r"err\%" in out.read_text()
    assert _cli([str(tmp_path / "res"), "--format", "markdown", "--ci"]) == 0
    assert "| model |" in capsys.readouterr().out
    assert _cli([str(tmp_path / "res"), "--columns", "vqa_closed:nope"]) == 2
    assert "no metric 'nope'" in capsys.readouterr().err
    assert _cli([str(tmp_path / "empty_or_missing")]) == 2
