"""Crash/resume trials: SIGKILL a 1,000-sample run at 20 random points and resume; nothing may be lost.

A JSONL data set of 1,000 yes/no questions over 100 small PNGs is evaluated with ``cxbench run``
(a subprocess) by a deterministic model that takes ~3 ms per request (``slow_answer`` below,
loaded as ``python:benchmarks/crash_resume_trials.py:slow_answer``), batch size 8.

Kill points (seeded): 16 are progress points, a random number of cached answers in 1..999 (the
run is killed as soon as the cache holds at least that many); 4 are random delays after the
start of a run whose answers are all cached (uniform over 90% of the length of such a run), so that
the kill lands in start-up, the cached pass, the final scoring/bootstrap, or the log and result
writes. After every kill:

* the cache passes ``check_cache_file`` and SQLite's full ``integrity_check``;
* no answer that was in the cache before the kill is gone, none is stored twice;
* every ``*.json`` and ``*.samples.jsonl`` file present parses completely (atomic writes).

The last resume runs to the end. Its result file (less the date) and per-sample log must equal
those of an uninterrupted run into a fresh cache, with each of the 1,000 sample ids exactly once.
The script prints a table per trial and a summary; exit status 1 if any check failed.

    python benchmarks/crash_resume_trials.py [--kills 20] [--samples 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def slow_answer(request) -> str:
    """Deterministic answer from the sample id, ~3 ms per request; each call is appended to a file."""
    time.sleep(0.003)
    counter = os.environ.get("CXBENCH_TRIAL_CALLS")
    if counter:
        with open(counter, "a") as handle:
            handle.write(request.sample_id + "\n")
    return "yes" if sum(map(ord, request.sample_id)) % 3 else "no"


def build(folder: Path, n: int) -> Path:
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(100):
        Image.new("L", (64, 64), color=(i * 37) % 256).save(folder / "images" / f"{i}.png")
    findings = ["nodule", "mass", "pleural effusion", "edema"]
    with (folder / "data.jsonl").open("w") as handle:
        for i in range(n):
            row = {
                "id": f"s{i}",
                "images": [f"images/{i % 100}.png"],
                "question": f"Is there a {findings[i % 4]}?",
                "target": "yes" if i % 2 else "no",
                "query": {"kind": "yes_no", "finding": findings[i % 4]},
            }
            handle.write(json.dumps(row) + "\n")
    tasks = folder / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "crash_trial.yaml").write_text(
        "name: crash_trial\nfamily: vqa_closed\n"
        f"dataset: {{name: jsonl, path: {folder / 'data.jsonl'}, split: test}}\n"
        "prompt: '{question} Answer yes or no.'\nparser: closed\nlabels: [yes, no]\n"
        "metrics: [accuracy, macro_f1]\n"
    )
    return tasks


def argv(folder: Path, tasks: Path, cache: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cxbench",
        "run",
        "--include-path",
        str(tasks),
        "--tasks",
        "crash_trial",
        "--model",
        f"python:{Path(__file__).resolve()}:slow_answer",
        "--batch-size",
        "8",
        "--cache",
        str(cache),
        "--output",
        str(out),
        "--no-progress",
        "--bootstrap",
        "200",
    ]


def cached_keys(cache: Path) -> list[str]:
    if not cache.exists():
        return []
    with sqlite3.connect(cache, timeout=30) as db:
        try:
            return [k for (k,) in db.execute("SELECT key FROM responses")]
        except sqlite3.OperationalError:  # table not created yet
            return []


def cached_count(cache: Path) -> int:
    try:
        with sqlite3.connect(f"{cache.as_uri()}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.Error:
        return 0


def files_parse(out: Path) -> list[str]:
    """Problems with the result and log files present (they must always be whole)."""
    problems = []
    for path in out.rglob("*.json"):
        try:
            json.loads(path.read_text())
        except ValueError as exc:
            problems.append(f"{path.name}: {exc}")
    for path in out.rglob("*.samples.jsonl"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                json.loads(line)
            except ValueError as exc:
                problems.append(f"{path.name}:{number}: {exc}")
                break
    return problems


def without_date(path: Path) -> dict:
    result = json.loads(path.read_text())
    result.pop("date", None)
    result["model"].get("config", {}).pop("path", None)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from cxbench.cache import check_cache_file

    rng = random.Random(args.seed)
    n_time = max(1, args.kills // 5)
    targets = sorted(rng.sample(range(1, args.samples), args.kills - n_time))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tasks = build(folder, args.samples)
        calls = folder / "calls.txt"
        env = {**os.environ, "CXBENCH_CACHE": str(folder / "user-cache"), "CXBENCH_TRIAL_CALLS": str(calls)}
        # the uninterrupted reference run, in its own cache
        started = time.perf_counter()
        ref_out = folder / "reference"
        subprocess.run(
            argv(folder, tasks, folder / "ref.sqlite", ref_out),
            env={**env, "CXBENCH_TRIAL_CALLS": ""},
            check=True,
            capture_output=True,
        )
        full_run_s = time.perf_counter() - started
        started = time.perf_counter()  # the same again, all answers cached: how long a warm run lasts
        subprocess.run(
            argv(folder, tasks, folder / "ref.sqlite", folder / "warm"),
            env=env,
            check=True,
            capture_output=True,
        )
        warm_run_s = time.perf_counter() - started
        cache, out = folder / "cache.sqlite", folder / "out"
        command = argv(folder, tasks, cache, out)
        print(
            f"uninterrupted run: {full_run_s:.1f} s for {args.samples} samples; "
            f"all cached: {warm_run_s:.1f} s"
        )
        print("| trial | kill trigger | killed after s | cached before | cached after | checks |")
        print("|---|---|---|---|---|---|")
        before: set[str] = set()
        plan = [("progress", t) for t in targets] + [("delay", None)] * n_time
        completed_early = 0
        for trial, (kind, target) in enumerate(plan, 1):
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            start = time.perf_counter()
            if kind == "progress":
                target = max(target, len(before) + 1)  # always a point ahead of the work already done
                while process.poll() is None and cached_count(cache) < target:
                    time.sleep(0.005)
                trigger = f">= {target} cached"
            else:
                delay = rng.uniform(0.0, 0.9 * warm_run_s)
                while process.poll() is None and time.perf_counter() - start < delay:
                    time.sleep(0.005)
                trigger = f"{delay:.2f} s delay"
            finished = process.poll() is not None
            if finished:
                completed_early += 1
            else:
                process.send_signal(signal.SIGKILL)
            process.wait()
            elapsed = time.perf_counter() - start
            checks = []
            problem = check_cache_file(cache)
            if problem:
                checks.append(f"cache: {problem}")
            if cache.exists():
                with sqlite3.connect(cache) as db:
                    integrity = db.execute("PRAGMA integrity_check").fetchall()
                if integrity != [("ok",)]:
                    checks.append(f"integrity_check: {integrity[:3]}")
            keys = cached_keys(cache)
            if len(keys) != len(set(keys)):
                checks.append("an answer is stored twice")
            lost = before - set(keys)
            if lost:
                checks.append(f"{len(lost)} cached answers lost")
            checks += files_parse(out)
            failures += [f"trial {trial}: {c}" for c in checks]
            print(
                f"| {trial} | {trigger} | {elapsed:.2f}{' (run finished first)' if finished else ''} | "
                f"{len(before)} | {len(keys)} | {'ok' if not checks else '; '.join(checks)} |"
            )
            before = set(keys)
        final = subprocess.run(command, env=env, capture_output=True, text=True)
        if final.returncode != 0:
            failures.append(f"final resume failed: {final.stderr[-500:]}")
        else:
            model_dir = next(p for p in out.iterdir() if p.is_dir())
            ref_dir = ref_out / model_dir.name
            if without_date(model_dir / "crash_trial.json") != without_date(ref_dir / "crash_trial.json"):
                failures.append("final result differs from the uninterrupted run")
            log = (model_dir / "crash_trial.samples.jsonl").read_text()
            if log != (ref_dir / "crash_trial.samples.jsonl").read_text():
                failures.append("final per-sample log differs from the uninterrupted run")
            rows = [json.loads(line) for line in log.splitlines()[1:]]
            ids = [r["sample_id"] for r in rows]
            if len(ids) != args.samples or len(set(ids)) != args.samples:
                failures.append(f"final log has {len(ids)} rows, {len(set(ids))} distinct ids")
            names = [p.name for p in model_dir.iterdir()]
            leftovers = sorted(n for n in names if ".partial-" in n or ".done-" in n)
            temp_files = sorted(n for n in names if n.startswith("."))
            print(f"final resume: {final.stderr.strip().splitlines()[-1] if final.stderr.strip() else 'ok'}")
            print(f"partial logs left after the final run: {leftovers or 'none'}")
            print(f"temporary files left by killed result writes: {temp_files or 'none'}")
        answered = [line for line in calls.read_text().splitlines() if line] if calls.exists() else []
        print(
            f"kills: {args.kills - completed_early} SIGKILLs ({completed_early} run(s) finished before their "
            f"kill point); model calls in all: {len(answered)} for {args.samples} samples "
            f"({len(answered) - args.samples} answered but killed before their batch was committed, redone)"
        )
    print("FAILED:\n  " + "\n  ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
