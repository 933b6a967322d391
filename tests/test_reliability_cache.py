"""Reliability of the response cache and of result files: corrupt caches, concurrent runs, atomic writes."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HELPERS

from cxbench.cache import CacheError, ResponseCache, check_cache_file, repair_cache
from cxbench.cli import main
from cxbench.models import load_model
from cxbench.results import atomic_write_text
from cxbench.runner import RunConfig, run_task
from cxbench.schema import Response
from cxbench.tasks import get_task

N_ROWS = 3000


@pytest.fixture(scope="module")
def healthy_cache(tmp_path_factory) -> bytes:
    """The bytes of a closed (checkpointed) cache database with N_ROWS answers over ~200 pages."""
    path = tmp_path_factory.mktemp("cache") / "c.sqlite"
    cache = ResponseCache(path)
    cache.put_many([(f"k{i}", "m", Response(text=f"answer {i} " + "x" * 200)) for i in range(N_ROWS)])
    cache.close()
    data = path.read_bytes()
    assert len(data) > 100 * 4096
    return data


def _damaged(kind: str, data: bytes) -> bytes:
    page = 4096
    if kind == "garbage":
        return bytes((i * 7919) % 251 for i in range(20_000))
    if kind == "truncated_half":
        return data[: len(data) // 2]
    if kind == "truncated_to_header":
        return data[:100]
    if kind == "page_overwritten":  # one b-tree page in the middle replaced by junk
        return data[: 40 * page] + bytes((i * 31) % 256 for i in range(page)) + data[41 * page :]
    if kind == "foreign_schema":
        return b""  # built below
    raise AssertionError(kind)


CORRUPTIONS = ("garbage", "truncated_half", "truncated_to_header", "page_overwritten", "foreign_schema")


def _write_damaged(kind: str, healthy: bytes, path: Path) -> None:
    if kind == "foreign_schema":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE responses (id INTEGER, blob BLOB)")
        return
    path.write_bytes(_damaged(kind, healthy))


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_damaged_cache_is_detected_at_start_with_a_way_on(kind, healthy_cache, small_tasks, tmp_path, capsys):
    path = tmp_path / "responses.sqlite"
    _write_damaged(kind, healthy_cache, path)
    original = path.read_bytes()
    problem = check_cache_file(path)
    assert problem, f"{kind} was not detected"
    with pytest.raises(CacheError, match=r"cxbench cache repair .*responses\.sqlite"):
        ResponseCache(path)
    # the command line: one clear line and exit 2, no traceback, no model call, file untouched
    argv = ["run", "--include-path", str(small_tasks), "--tasks", "small_vqa_closed", "--model", "prior"]
    argv += ["--cache", str(path), "--output", str(tmp_path / "out"), "--no-progress", "--bootstrap", "10"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"response cache {path} is corrupt" in err and "Traceback" not in err
    assert path.read_bytes() == original
    assert main(["cache", "check", str(path)]) == 1
    # repair: the damaged file is kept aside byte for byte, a usable cache takes its place
    assert main(["cache", "repair", str(path)]) == 0
    quarantined = [p for p in tmp_path.iterdir() if p.name.startswith("responses.sqlite.corrupt-")]
    assert [p.read_bytes() for p in quarantined if not p.name.endswith(("-wal", "-shm"))] == [original]
    assert check_cache_file(path) is None and main(["cache", "check", str(path)]) == 0
    assert main(argv) == 0
    assert json.loads((tmp_path / "out" / "prior" / "small_vqa_closed.json").read_text())["n"] > 0


def test_repair_keeps_every_readable_answer(healthy_cache, tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(_damaged("page_overwritten", healthy_cache))
    quarantine, kept, lost = repair_cache(path)
    assert quarantine is not None and quarantine.exists()
    # the rows under the junk page (a leaf, or an interior page and its leaves) are gone; the rows on
    # either side of it are found by probing past the damage, and come back unchanged
    assert N_ROWS // 2 < kept < N_ROWS and lost == 0
    cache = ResponseCache(path)
    found = cache.get_many([f"k{i}" for i in range(N_ROWS)])
    cache.close()
    assert len(found) == kept
    assert all(r.text == f"answer {k[1:]} " + "x" * 200 for k, r in found.items())
    # a healthy cache is left alone
    assert repair_cache(path) == (None, 0, 0)


def test_empty_file_and_missing_file_are_fresh_caches(tmp_path):
    (tmp_path / "empty.sqlite").write_bytes(b"")
    for name in ("empty.sqlite", "new.sqlite"):
        assert check_cache_file(tmp_path / name) is None
        cache = ResponseCache(tmp_path / name)
        cache.put_many([("k", "m", Response(text="t"))])
        assert cache.get_many(["k"])["k"].text == "t"
        cache.close()


def test_a_row_damaged_after_start_gives_a_clear_error(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    cache.put_many([("k", "m", Response(text="t"))])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE responses SET response = '{not json' WHERE key = 'k'")
    with pytest.raises(CacheError, match="a stored answer is unreadable"):
        cache.get_many(["k"])
    cache.close()


def _cli_run(small_tasks: Path, tmp_path: Path, spec: str, extra_env: dict | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "cxbench", "run", "--include-path", str(small_tasks)]
    argv += ["--tasks", "small_vqa_closed,small_localization", "--model", spec, "--batch-size", "4"]
    argv += ["--cache", str(tmp_path / "shared.sqlite"), "--output", str(tmp_path / "shared_out")]
    argv += ["--no-progress", "--bootstrap", "50"]
    env = {**os.environ, **(extra_env or {})}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _without_date(path: Path) -> dict:
    result = json.loads(path.read_text())
    result.pop("date")
    return result


def test_two_processes_share_one_cache_and_results_folder(small_tasks, tmp_path):
    """Two models (one of them slow) evaluated at once into one cache and one folder lose nothing."""
    slow = f"python:{HELPERS}:slow_yes"
    processes = [_cli_run(small_tasks, tmp_path, "prior"), _cli_run(small_tasks, tmp_path, slow)]
    for process in processes:
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
    out = tmp_path / "shared_out"
    n = {}
    for model in ("prior", "python-slow_yes"):
        for task in ("small_vqa_closed", "small_localization"):
            result = json.loads((out / model / f"{task}.json").read_text())
            rows = (out / model / f"{task}.samples.jsonl").read_text().splitlines()[1:]
            assert len(rows) == result["n"] == len({json.loads(r)["sample_id"] for r in rows})
            n[(model, task)] = result["n"]
    with sqlite3.connect(tmp_path / "shared.sqlite") as db:
        stored = db.execute("SELECT model FROM responses").fetchall()
    per_model = n[("prior", "small_vqa_closed")] + n[("prior", "small_localization")]
    assert len(stored) == 2 * per_model  # every answer of both runs was committed
    assert sum("slow_yes" in model for (model,) in stored) == per_model
    # no partial log or temporary file is left (leaderboard.md: the table of every result in the folder)
    leftovers = [p.name for p in out.rglob("*") if p.is_file() and not p.name.endswith((".json", ".jsonl"))]
    assert leftovers == ["leaderboard.md"]
    # each result equals the result of the same model run alone, in a fresh cache
    task = get_task("small_vqa_closed", [small_tasks])
    alone, _ = run_task(
        task,
        load_model("prior"),
        RunConfig(output_dir=tmp_path / "alone", cache_path="", batch_size=4, n_bootstrap=50, progress=False),
    )
    shared = json.loads((out / "prior" / "small_vqa_closed.json").read_text())
    assert shared["metrics"] == alone["metrics"]


def test_the_same_model_and_task_twice_at_once_write_one_complete_log(small_tasks, tmp_path):
    spec = f"python:{HELPERS}:slow_yes"
    processes = [_cli_run(small_tasks, tmp_path, spec) for _ in range(2)]
    for process in processes:
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
    folder = tmp_path / "shared_out" / "python-slow_yes"
    for task in ("small_vqa_closed", "small_localization"):
        result = json.loads((folder / f"{task}.json").read_text())
        lines = (folder / f"{task}.samples.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines[1:]]  # every line is whole JSON
        assert [r["index"] for r in rows] == list(range(result["n"]))
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{t}{s}" for t in ("small_vqa_closed", "small_localization") for s in (".json", ".samples.jsonl")
    )


def test_partial_logs_of_dead_runs_are_removed_and_live_ones_kept(small_tasks, tmp_path):
    folder = tmp_path / "out" / "prior"
    folder.mkdir(parents=True)
    host = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = folder / f"small_vqa_closed.samples.jsonl.partial-{host}-{dead_pid}"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = folder / f"small_vqa_closed.samples.jsonl.partial-{host}-{sleeper.pid}"
        other_host = folder / f"small_vqa_closed.samples.jsonl.partial-otherhost-{dead_pid}"
        for path in (stale, live, other_host):
            path.write_text("{}\n")
        config = RunConfig(output_dir=tmp_path / "out", cache_path="", n_bootstrap=10, progress=False)
        run_task(get_task("small_vqa_closed", [small_tasks]), load_model("prior"), config)
        # a live process of this host may still be writing; another host's pids mean nothing here
        assert not stale.exists() and live.exists() and other_host.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    atomic_write_text(target, "old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and oct(target.stat().st_mode & 0o777) != "0o600"
