"""The CLI end to end on a small phantom set, the console script, and packaging of tasks."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import HELPERS, TASK_NAMES

from cxbench.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_run_prints_a_leaderboard_for_all_tasks_and_models(small_tasks, tmp_path, capsys):
    tasks = ",".join(f"small_{t}" for t in TASK_NAMES)
    argv = ["run", "--include-path", str(small_tasks), "--tasks", tasks, "--output", str(tmp_path)]
    argv += ["--model", "prior", "--model", "phantom-cnn", "--model-args", "", "--model-args", "epochs=2"]
    argv += [
        "--limit",
        "15",
        "--no-progress",
        "--cache",
        str(tmp_path / "cache.sqlite"),
        "--bootstrap",
        "200",
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["prior", "phantom-cnn"]
    for task in TASK_NAMES:
        assert f"small_{task}" in lines[0]
        result = json.loads((tmp_path / "phantom-cnn" / f"small_{task}.json").read_text())
        assert result["schema_version"] == "1.0" and result["n"] <= 15
        primary = result["metrics"][result["primary_metric"]]
        assert primary["ci95"][0] <= primary["value"] <= primary["ci95"][1]
        assert result["task"]["hash"] and result["versions"]["cxbench"]
    assert (tmp_path / "leaderboard.md").read_text().strip() == table.strip()

    # re-score a log without the model: same metrics
    log = tmp_path / "prior" / "small_vqa_closed.samples.jsonl"
    assert main(["score", str(log), "--include-path", str(small_tasks), "--bootstrap", "200"]) == 0
    rescored = json.loads((tmp_path / "prior" / "small_vqa_closed.rescored.json").read_text())
    original = json.loads((tmp_path / "prior" / "small_vqa_closed.json").read_text())
    assert rescored["metrics"] == original["metrics"]


def test_folder_leaderboard_keeps_models_of_earlier_runs(small_tasks, tmp_path, capsys):
    """Runs into one output folder: stdout shows this run, leaderboard.md every model of the folder."""
    base = ["run", "--tasks", "small_vqa_closed", "--include-path", str(small_tasks), "--limit", "10"]
    base += ["--no-progress", "--no-cache", "--bootstrap", "50", "--output", str(tmp_path)]
    assert main([*base, "--model", "prior"]) == 0
    (tmp_path / "prior" / "notes.json").write_text('{"not": "a result"}')  # ignored
    capsys.readouterr()
    assert main([*base, "--model", "random"]) == 0
    printed = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines()[2:] if line]
    assert printed == ["random"]
    folder = (tmp_path / "leaderboard.md").read_text().splitlines()[2:]
    assert [line.split("|")[1].strip() for line in folder] == ["prior", "random"]
    assert main([*base, "--model", "prior"]) == 0  # a re-run replaces, never duplicates, its row
    folder = (tmp_path / "leaderboard.md").read_text().splitlines()[2:]
    assert [line.split("|")[1].strip() for line in folder] == ["random", "prior"]


def test_listing_commands(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for task in TASK_NAMES:
        assert f"| {task} |" in out
    assert "mean_recall_at_1" in out and "mean_iou" in out
    assert main(["metrics"]) == 0
    out = capsys.readouterr().out
    assert "| bleu4 | higher | corpus |" in out and "| spice | | | | unavailable here" in out


def test_bad_input_gives_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert main(["run", "--tasks", "no_such_task", "--no-progress"]) == 2
    assert "unknown task 'no_such_task'" in capsys.readouterr().err
    assert main(["run", "--tasks", "vqa_closed", "--model", "gpt-17", "--no-progress"]) == 2
    assert "unknown model spec 'gpt-17'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nfamily: vqa_closed\ndataset: {name: phantom}\nprompt: x\nparser: nope\nmetrics: []\n"
    )
    assert main(["tasks", "--include-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "parser 'nope'" in err
    assert main(["run", "--model", "predictions:/no/such/file.jsonl", "--tasks", "vqa_closed"]) == 2
    assert "predictions file not found" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "cxbench"  # installed beside the interpreter running the tests
    out = subprocess.run([str(script), "tasks"], capture_output=True, text=True, check=True).stdout
    assert "| report_generation | report_generation | phantom/test |" in out


def test_kill_9_loses_no_finished_sample(small_tasks, tmp_path):
    """SIGKILL a run midway; the re-run calls the model only for samples not yet cached."""
    cache = tmp_path / "cache.sqlite"
    counter = tmp_path / "calls.txt"
    env = {**os.environ, "CXBENCH_TEST_COUNTER": str(counter)}
    argv = [sys.executable, "-m", "cxbench", "run", "--include-path", str(small_tasks)]
    argv += ["--tasks", "small_vqa_closed", "--model", f"python:{HELPERS}:slow_yes", "--batch-size", "4"]
    argv += ["--cache", str(cache), "--output", str(tmp_path / "out"), "--no-progress"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    cached = 0
    while time.time() < deadline and cached < 12:
        time.sleep(0.1)
        if cache.exists():
            try:
                with sqlite3.connect(cache) as db:
                    cached = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    process.kill()
    process.wait()
    assert cached >= 12, "the run did not get far enough to be interrupted"
    with sqlite3.connect(cache) as db:
        cached = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    calls_before = len(counter.read_text().splitlines())
    assert cached <= calls_before
    completed = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    result = json.loads((tmp_path / "out" / "python-slow_yes" / "small_vqa_closed.json").read_text())
    calls_after = len(counter.read_text().splitlines()) - calls_before
    assert calls_after == result["n"] - cached
    assert f"{calls_after} model calls, {cached} cached" in completed.stderr


def test_builtin_tasks_ship_in_the_wheel(tmp_path):
    pytest.importorskip("hatchling")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("cxbench-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    code = (
        "from cxbench.tasks import discover, builtin_task_dir; print(builtin_task_dir(), sorted(discover()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    ).stdout
    assert str(tmp_path / "site" / "cxbench" / "_builtin_tasks") in out
    for task in TASK_NAMES:
        assert f"'{task}'" in out


def test_shards_merged_equal_a_single_run(small_tasks, tmp_path, capsys):
    """`run --shard i/N` on each shard, then `merge`: same log rows and result as one process."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "light_report.yaml").write_text(
        "name: light_report\nfamily: report_generation\n"
        "dataset: {name: phantom, split: test, n_cases: 80, seed: 0, size: 128}\n"
        "prompt: '{question}'\nparser: text\nmetrics: [bleu4, rouge_l, chexpert_micro_f1_14]\n"
    )
    base = ["run", "--include-path", str(small_tasks), "--include-path", str(tmp_path / "tasks")]
    base += ["--tasks", "light_report,small_vqa_closed"]
    base += ["--model", "random", "--no-progress", "--no-cache", "--limit", "30", "--bootstrap", "200"]
    assert main([*base, "--output", str(tmp_path / "single")]) == 0
    for shard in ("0/3", "1/3", "2/3"):
        assert main([*base, "--output", str(tmp_path / "sharded"), "--shard", shard]) == 0
    includes = ["--include-path", str(small_tasks), "--include-path", str(tmp_path / "tasks")]
    assert main(["merge", str(tmp_path / "sharded" / "random"), *includes]) == 0
    assert "small_vqa_closed: merged 30 samples" in capsys.readouterr().out
    for task in ("light_report", "small_vqa_closed"):
        single = json.loads((tmp_path / "single" / "random" / f"{task}.json").read_text())
        merged = json.loads((tmp_path / "sharded" / "random" / f"{task}.json").read_text())
        for key in ("n", "errors", "parse_failures", "metrics", "model", "task"):
            assert merged[key] == single[key], key
        rows = [
            (tmp_path / run / "random" / f"{task}.samples.jsonl").read_text().splitlines()[1:]
            for run in ("single", "sharded")
        ]
        assert rows[0] == rows[1]
    assert main(["merge", str(tmp_path / "single" / "random"), *includes]) == 2
