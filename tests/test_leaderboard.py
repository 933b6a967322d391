"""Leaderboard builds: tables, plots and a page that renders in a real headless browser."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import chromium_flags

from cxbench.cli import main
from cxbench.models import load_model
from cxbench.runner import RunConfig, run_task
from cxbench.tasks import get_task


@pytest.fixture(scope="module")
def board(small_tasks, tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    results = root / "results"
    config = RunConfig(output_dir=results, cache_path="", progress=False, limit=20, n_bootstrap=100)
    for spec in ("prior", "random"):
        for name in ("small_vqa_closed", "small_localization", "small_diagnosis_recall1"):
            run_task(get_task(name, [small_tasks]), load_model(spec), config)
    (root / "small.yaml").write_text(
        "name: small\ntitle: Small <board> & co\nresults: results\ncolumns:\n"
        "  - {task: small_vqa_closed, metric: accuracy}\n"
        "  - {task: small_localization, metric: mean_iou}\n"
        "  - {task: small_diagnosis_recall1, metric: mean_recall_at_1}\n"
        "heatmap: {task: small_diagnosis_recall1, metric: mean_recall_at_1}\n"
    )
    out = root / "built"
    argv = ["leaderboard", "build", str(root / "small.yaml"), "--results", str(results), "--output", str(out)]
    assert main(argv) == 0
    return out, results


def test_build_writes_tables_plots_and_page(board):
    out, results = board
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.tex", "index.html", "ranking.json"):
        assert (out / name).is_file(), name
    for stem in ("bar_small_vqa_closed_accuracy", "radar", "heatmap"):
        assert (out / "plots" / f"{stem}.png").stat().st_size > 1000
        assert (out / "plots" / f"{stem}.pdf").stat().st_size > 1000
    ranking = json.loads((out / "ranking.json").read_text())
    assert {r["model"] for r in ranking} == {"prior", "random"}
    assert ranking[0]["score"] >= ranking[1]["score"]

    def value(model, task, metric):
        return json.loads((results / model / f"{task}.json").read_text())["metrics"][metric]["value"]

    columns = [
        ("small_vqa_closed", "accuracy"),
        ("small_localization", "mean_iou"),
        ("small_diagnosis_recall1", "mean_recall_at_1"),
    ]
    wins = sum(value("prior", t, m) > value("random", t, m) for t, m in columns)
    # min-max normalisation over two models: the score is the share of columns won (ties give 1 to both)
    ties = sum(value("prior", t, m) == value("random", t, m) for t, m in columns)
    assert {r["model"]: r["score"] for r in ranking}["prior"] == pytest.approx((wins + ties) / 3, abs=1e-6)
    page = (out / "index.html").read_text()
    assert "Small &lt;board&gt; &amp; co" in page and "<board>" not in page


def test_unknown_leaderboard_is_a_clear_error(tmp_path, capsys):
    assert main(["leaderboard", "build", "nope", "--results", str(tmp_path)]) == 2
    assert "no leaderboard 'nope'" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_page_renders_in_headless_chromium(board, tmp_path):
    out, results = board
    flags = chromium_flags(tmp_path / "p")
    page = (out / "index.html").as_uri()
    shot = tmp_path / "board.png"
    subprocess.run(
        ["chromium", *flags, "--window-size=1200,900", f"--screenshot={shot}", page],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 10_000
    dom = subprocess.run(
        ["chromium", *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120
    ).stdout
    value = json.loads((results / "prior" / "small_vqa_closed.json").read_text())["metrics"]["accuracy"][
        "value"
    ]
    assert ">prior<" in dom and ">random<" in dom and f"{value:.3f}" in dom
    assert 'src="plots/radar.png"' in dom
