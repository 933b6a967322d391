"""Time the phantom generator: 1,000 cases at 256x256 (median of a few runs).

Usage: ``python benchmarks/phantom_generation.py [--n-cases 1000] [--size 256] [--runs 3] [--workers N]``

Besides wall time it prints the CPU seconds used (this process plus its pool workers),
which stays meaningful when other jobs compete for the cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from cxbench.data.phantom import generate


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (pool workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-cases", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="default: min(2, cpu count)")
    args = parser.parse_args()
    workers = args.workers or min(2, os.cpu_count() or 1)
    print(f"cpu_count={os.cpu_count()} workers={workers} n_cases={args.n_cases} size={args.size}")
    walls, cpus = [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            cpu0, start = _cpu_seconds(), time.perf_counter()
            generate(
                Path(tmp) / "phantom", n_cases=args.n_cases, size=args.size, workers=workers, progress=False
            )
            walls.append(time.perf_counter() - start)
            cpus.append(_cpu_seconds() - cpu0)
        print(f"run {run + 1}: {walls[-1]:.2f} s wall, {cpus[-1]:.2f} s CPU")
    print(
        f"median time to generate {args.n_cases} cases: {statistics.median(walls):.2f} s wall "
        f"({statistics.median(cpus):.2f} s CPU over {workers} worker(s))"
    )


if __name__ == "__main__":
    main()
