"""Untrusted content: no unsafe loaders in the code base, and names from result files and data sets
(model, task, metric, sample id, breakdown key) are inert in every page and table cxbench writes."""

from __future__ import annotations

import ast
import copy
import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import chromium_flags

from cxbench.cli import main
from cxbench.models import load_model
from cxbench.report.browser import browse_log
from cxbench.report.leaderboard import build
from cxbench.report.tables import results_table
from cxbench.results import leaderboard_markdown
from cxbench.runner import RunConfig, run_task
from cxbench.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ unsafe calls


def unsafe_calls(source: str, filename: str = "<string>") -> list[str]:
    """``file:line: reason`` for each call that may load or run untrusted content."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        keywords = {k.arg: k.value for k in node.keywords}

        def constant(key: str, keywords: dict = keywords) -> object:
            value = keywords.get(key)
            return value.value if isinstance(value, ast.Constant) else "<expr>" if value is not None else None

        where = f"{filename}:{node.lineno}"
        if owner == "yaml" and name in ("load", "load_all"):
            loader = keywords.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
            if not (isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                found.append(f"{where}: yaml.{name} without SafeLoader")
        elif owner == "yaml" and name in ("unsafe_load", "full_load", "unsafe_load_all", "full_load_all"):
            found.append(f"{where}: yaml.{name}")
        elif owner in (
            "pickle",
            "cPickle",
            "dill",
            "cloudpickle",
            "marshal",
            "shelve",
            "joblib",
        ) and name in (
            "load",
            "loads",
            "open",
        ):
            found.append(f"{where}: {owner}.{name}")
        elif name == "read_pickle":
            found.append(f"{where}: read_pickle")
        elif owner == "torch" and name == "load" and constant("weights_only") is not True:
            found.append(f"{where}: torch.load without weights_only=True")
        elif owner in ("np", "numpy") and name == "load" and constant("allow_pickle") not in (None, False):
            found.append(f"{where}: numpy.load with allow_pickle")
        elif constant("trust_remote_code") is True:
            found.append(f"{where}: trust_remote_code=True")
        elif isinstance(func, ast.Name) and name in ("eval", "exec", "compile", "__import__"):
            found.append(f"{where}: builtin {name}()")
        elif owner == "os" and name in ("system", "popen"):
            found.append(f"{where}: os.{name}")
        elif constant("shell") is True:
            found.append(f"{where}: shell=True")
    for node in ast.walk(ast.parse(source, filename)):  # defaults such as ``trust_remote_code: bool = True``
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args[len(node.args.args) - len(node.args.defaults) :] + node.args.kwonlyargs
            defaults = list(node.args.defaults) + list(node.args.kw_defaults)
            for arg, default in zip(args, defaults, strict=True):
                if (
                    arg.arg == "trust_remote_code"
                    and isinstance(default, ast.Constant)
                    and default.value is True
                ):
                    found.append(f"{filename}:{node.lineno}: trust_remote_code defaults to True")
    return found


PLANTED = """
import yaml, pickle, torch, os, subprocess
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
yaml.load(text, Loader=yaml.SafeLoader)
yaml.full_load(text)
pickle.loads(blob)
torch.load(path)
torch.load(path, weights_only=False)
torch.load(path, weights_only=True)
model = AutoModel.from_pretrained(name, trust_remote_code=True)
eval(answer)
exec(code)
os.system(command)
subprocess.run(command, shell=True)
def make(trust_remote_code: bool = True): ...
def fine(trust_remote_code: bool = False): ...
net.eval()
"""


def test_the_checker_finds_every_planted_unsafe_call():
    found = unsafe_calls(PLANTED)
    assert len(found) == 12, found
    assert not any(":5:" in f or ":10:" in f or ":18:" in f for f in found)  # the safe forms pass


def test_no_unsafe_loader_or_code_execution_in_the_code_base():
    files = [
        p for folder in ("cxbench", "reference_training", "benchmarks") for p in (ROOT / folder).rglob("*.py")
    ]
    assert len(files) > 40
    found = [hit for path in files for hit in unsafe_calls(path.read_text(encoding="utf-8"), str(path))]
    assert found == []


# ------------------------------------------------------------------------------ generated pages

PAYLOADS = {
    "html": "<img src=x onerror=\"document.title='pwned'\">",
    "script": "<script>document.title='pwned'</script>",
    "csv": '=HYPERLINK("http://evil.example","x")',
    "latex": r"\input{/etc/passwd}$\undefinedmacro{x}$",
    "markdown": "a | b\n| c",
}


@pytest.fixture(scope="module")
def hostile_results(small_tasks, tmp_path_factory) -> Path:
    """Result files whose model names, metric names and breakdown keys are all payloads."""
    folder = tmp_path_factory.mktemp("hostile_results")
    config = RunConfig(output_dir=folder / "seed", cache_path="", progress=False, limit=20, n_bootstrap=20)
    result, _ = run_task(get_task("small_vqa_closed", [small_tasks]), load_model("prior"), config)
    for i, payload in enumerate(PAYLOADS.values()):
        hostile = copy.deepcopy(result)
        hostile["model"]["name"] = payload
        metrics = hostile["metrics"]
        metrics["accuracy"]["value"] = 0.1 * (i + 1)
        metrics["accuracy"]["breakdown"] = {PAYLOADS["script"]: 0.5, PAYLOADS["latex"]: 0.25}
        metrics[PAYLOADS["html"]] = dict(metrics["accuracy"])
        path = folder / "results" / f"m{i}" / "small_vqa_closed.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(hostile))
    (folder / "board.yaml").write_text(
        "name: hostile\ntitle: <b>title</b>\nresults: results\ncolumns:\n"
        "  - {task: small_vqa_closed, metric: accuracy}\n"
        f"  - {{task: small_vqa_closed, metric: {json.dumps(PAYLOADS['html'])}}}\n"
        "heatmap: {task: small_vqa_closed, metric: accuracy}\n"
    )
    return folder


def _columns(line: str) -> int:
    """Cells of a Markdown table row (pipes escaped as \\| do not count)."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def _no_raw_payload(text: str) -> None:
    assert "<script>document.title" not in text and "<img src=x" not in text


def test_leaderboard_outputs_keep_every_name_inert(hostile_results):
    out = build(
        str(hostile_results / "board.yaml"), str(hostile_results / "results"), str(hostile_results / "board")
    )
    page = (out / "index.html").read_text()
    _no_raw_payload(page)
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    assert "<b>title</b>" not in page and "&lt;b&gt;title&lt;/b&gt;" in page
    markdown = (out / "leaderboard.md").read_text()
    _no_raw_payload(markdown)
    assert "&lt;img src=x" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert {_columns(line) for line in rows} == {3}  # no payload adds a column
    table = list(csv.reader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert all(not cell.startswith(("=", "+", "@")) for row in table for cell in row)
    assert any(cell.startswith("'=HYPERLINK") for row in table for cell in row)
    latex = (out / "leaderboard.tex").read_text()
    assert r"\input{" not in latex and r"\textbackslash{}input\{/etc/passwd\}" in latex
    assert (out / "plots" / "heatmap.png").stat().st_size > 0  # "$\undefinedmacro$" drawn as text


def test_table_command_and_run_summary_escape_names(hostile_results, capsys):
    assert main(["table", str(hostile_results / "results"), "--format", "markdown"]) == 0
    _no_raw_payload(capsys.readouterr().out)
    results = [json.loads(p.read_text()) for p in sorted((hostile_results / "results").rglob("*.json"))]
    summary = leaderboard_markdown(results)
    _no_raw_payload(summary)
    assert {_columns(line) for line in summary.splitlines() if line.startswith("| ")} == {2}
    assert r"\input{" not in results_table(results, fmt="latex")
    cells = [c for row in csv.reader(io.StringIO(results_table(results, fmt="csv"))) for c in row]
    assert '\'=HYPERLINK("http://evil.example","x")' in cells and not any(c.startswith("=") for c in cells)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_leaderboard_page_executes_nothing_in_a_real_browser(hostile_results, tmp_path):
    out = build(str(hostile_results / "board.yaml"), str(hostile_results / "results"), str(tmp_path / "b"))
    dom = subprocess.run(
        ["chromium", *chromium_flags(tmp_path / "p"), "--dump-dom", (out / "index.html").as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "<title>&lt;b&gt;title&lt;/b&gt;</title>" in dom  # no script renamed the page
    assert '<img src="x"' not in dom and "&lt;img src=x" in dom


def test_browse_escapes_sample_ids_and_ignores_text_in_boxes(tmp_path):
    header = {"header": {"task": "t<script>x</script>", "model": "m<script>y</script>"}}
    row = {
        "sample_id": PAYLOADS["script"],
        "sample": {
            "images": [],
            "question": PAYLOADS["html"],
            "target": [["<svg onload=alert(1)>", 0, 1, 1]],
        },
        "raw_output": PAYLOADS["html"],
        "parsed": [0.1, 0.1, float("nan"), 0.5],
        "error": "model_error",
        "error_message": PAYLOADS["script"],
        "scores": {PAYLOADS["html"]: 1.0},
    }
    log = tmp_path / "t.samples.jsonl"
    log.write_text(json.dumps(header) + "\n" + json.dumps(row) + "\n")
    page = browse_log(log).read_text()
    _no_raw_payload(page)
    assert "<svg onload" not in page and "<rect" not in page  # neither the text box nor the NaN box is drawn
    assert "&lt;script&gt;document.title" in page
