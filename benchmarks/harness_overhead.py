"""Harness overhead per sample and peak memory, with the ``prior`` model.

Builds a JSONL data set of N yes/no samples over 2,000 distinct 256x256 PNG images (plus a
small train split for the prior), then runs ``cxbench`` on it in a fresh subprocess per size
with a cold and then a warm response cache. Overhead per sample = wall time of the run
minus the time spent inside the model, divided by N. Memory is the peak traced Python
allocation during the run (tracemalloc) and the process's peak RSS.

Targets: <= 2 ms overhead per sample; memory that does not grow with N.

    python benchmarks/harness_overhead.py [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_IMAGES = 2000


def build_dataset(folder: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        path = images / f"{i}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(path)
    data = folder / f"data_{n}.jsonl"
    findings = ["nodule", "mass", "pleural effusion", "edema"]
    with data.open("w") as handle:
        for i in range(n + 500):
            split = "train" if i >= n else "test"
            row = {
                "id": f"s{i}",
                "split": split,
                "images": [f"images/{i % N_IMAGES}.png"],
                "question": f"Is there a {findings[i % 4]}?",
                "target": "yes" if i % 3 == 0 else "no",
                "query": {"kind": "yes_no", "finding": findings[i % 4]},
                "metadata": {"image_size": [256, 256]},
            }
            handle.write(json.dumps(row) + "\n")
    (folder / f"bench_{n}.yaml").write_text(
        f"name: bench_{n}\nfamily: vqa_closed\n"
        f"dataset: {{name: jsonl, path: {data}, split: test}}\n"
        "prompt: '{question} Answer yes or no.'\nparser: closed\nlabels: [yes, no]\n"
        "metrics: [accuracy, macro_f1]\n"
    )
    return folder


def measure(folder: Path, n: int) -> dict:
    """Runs in a child process: one cold and one warm run of ``prior`` on N samples."""
    import tracemalloc

    from cxbench.models import load_model
    from cxbench.runner import RunConfig, run_task
    from cxbench.tasks import Task

    task = Task.from_yaml(folder / f"bench_{n}.yaml")
    model = load_model("prior")
    inner = {"seconds": 0.0}
    generate = model.generate

    def timed_generate(requests):
        start = time.perf_counter()
        try:
            return generate(requests)
        finally:
            inner["seconds"] += time.perf_counter() - start

    model.generate = timed_generate
    out = {}
    cache = folder / f"cache_{n}.sqlite"
    cache.unlink(missing_ok=True)
    for phase in ("cold", "warm"):
        inner["seconds"] = 0.0
        config = RunConfig(
            output_dir=folder / "out", cache_path=cache, batch_size=32, progress=False, n_bootstrap=1000
        )
        tracemalloc.start()
        start = time.perf_counter()
        result, stats = run_task(task, model, config)
        wall = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[phase] = {
            "n": result["n"],
            "wall_s": wall,
            "model_s": inner["seconds"],
            "overhead_ms_per_sample": (wall - inner["seconds"]) / result["n"] * 1000,
            "traced_peak_mb": peak / 2**20,
            "model_calls": stats.model_calls,
        }
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), int(args.child[1]))))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, "CXBENCH_CACHE": str(folder / "cache")}
        print("| samples | phase | wall s | overhead ms/sample | traced peak MB | peak RSS MB |")
        print("|---|---|---|---|---|---|")
        for n in sizes:
            build_dataset(folder, n)
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(folder), str(n)],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            for phase in ("cold", "warm"):
                f = figures[phase]
                print(
                    f"| {f['n']} | {phase} | {f['wall_s']:.2f} | {f['overhead_ms_per_sample']:.3f} | "
                    f"{f['traced_peak_mb']:.1f} | {figures['peak_rss_mb']:.0f} |"
                )


if __name__ == "__main__":
    main()
