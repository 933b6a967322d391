"""Memory at scale: resident memory of one 100,000-sample run of ``prior``, sampled every 10,000 samples.

Builds the same kind of JSONL data set as ``harness_overhead.py`` (yes/no questions over 2,000
distinct 256x256 PNG images, a small train split for the prior), then runs ``run_task`` on it in
a fresh child process with a cold response cache (every sample goes through the model, the
cache commit, the parser, the scorer and the log). The child reads its resident set size
(``VmRSS``) from ``/proc/self/status`` each time another 10,000 samples have been answered, and
the peak (``VmHWM``) after the run, which includes the final bootstrap and the result write.

Flat memory means the RSS at 100,000 samples is close to the RSS at 10,000: the runner streams
samples and keeps only 8 bytes per metric statistic per sample.

    python benchmarks/memory_scale.py [--n 100000] [--every 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness_overhead import build_dataset  # noqa: E402


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(folder: Path, n: int, every: int) -> dict:
    """Runs in the child process."""
    from cxbench.models import load_model
    from cxbench.runner import RunConfig, run_task
    from cxbench.tasks import Task

    task = Task.from_yaml(folder / f"bench_{n}.yaml")
    model = load_model("prior")
    generate = model.generate
    seen = {"n": 0, "next": every}
    samples: list[dict] = []
    started = time.perf_counter()

    def sampling_generate(requests):
        responses = generate(requests)
        seen["n"] += len(requests)
        while seen["n"] >= seen["next"]:
            samples.append(
                {
                    "samples": seen["next"],
                    "rss_mb": round(_status_mb("VmRSS"), 1),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            seen["next"] += every
        return responses

    model.generate = sampling_generate
    baseline = _status_mb("VmRSS")
    config = RunConfig(
        output_dir=folder / "out", cache_path=folder / "cache.sqlite", batch_size=32, progress=False
    )
    result, stats = run_task(task, model, config)
    return {
        "n": result["n"],
        "model_calls": stats.model_calls,
        "wall_s": round(time.perf_counter() - started, 1),
        "rss_before_run_mb": round(baseline, 1),
        "rss": samples,
        "rss_after_run_mb": round(_status_mb("VmRSS"), 1),
        "peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "accuracy": result["metrics"]["accuracy"]["value"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--child", nargs=3, metavar=("FOLDER", "N", "EVERY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), int(args.child[1]), int(args.child[2]))))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build_dataset(folder, args.n)
        env = {**os.environ, "CXBENCH_CACHE": str(folder / "cache")}
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(folder), str(args.n), str(args.every)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        figures = json.loads(child.stdout.strip().splitlines()[-1])
    print(
        f"{figures['n']} samples, {figures['model_calls']} model calls, {figures['wall_s']} s; "
        f"RSS before the run {figures['rss_before_run_mb']} MB"
    )
    print("| samples answered | RSS MB | seconds |")
    print("|---|---|---|")
    for row in figures["rss"]:
        print(f"| {row['samples']} | {row['rss_mb']} | {row['seconds']} |")
    print(f"RSS after the run (incl. bootstrap, result write): {figures['rss_after_run_mb']} MB")
    print(f"peak RSS of the process: {figures['peak_rss_mb']} MB")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
