"""Speed of the rule-based CheXpert-14 labeler: reports per second on one core (median of runs).

Usage: ``python benchmarks/labeler_speed.py [--runs 5] [--limit N] [--phantom]``

Reports are the real IU X-ray (OpenI) reports packaged with torchxrayvision
(``data/NLMCXR_reports.tgz``, read in place without importing torchxrayvision; install it with
``pip install --no-deps torchxrayvision``): "FINDINGS: ...\\nIMPRESSION: ..." per report. Without
torchxrayvision (or with ``--phantom``) the phantom report writer provides 4,000 reports instead.
Labeling runs uncached (every report is labeled from scratch, duplicates included) in this single
process, pinned to one CPU where the OS allows it; regex compilation at import is timed apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def iu_reports() -> list[str] | None:
    """FINDINGS + IMPRESSION of every IU X-ray report, or None without torchxrayvision."""
    from cxbench.data.adapters import DataError
    from cxbench.data.iu_xray import load_reports

    try:
        reports = load_reports()
    except DataError:
        return None
    return [
        f"FINDINGS: {r['FINDINGS']}\nIMPRESSION: {r['IMPRESSION']}"
        for r in reports
        if r["FINDINGS"] or r["IMPRESSION"]
    ]


def phantom_reports(n: int = 4000, seed: int = 0) -> list[str]:
    """Reports of random phantom findings from cxbench's report writer."""
    import numpy as np

    from cxbench.data.phantom_reports import write_report
    from cxbench.labels import DISEASES_14

    rng = np.random.default_rng(seed)
    texts = []
    for i in range(n):
        labels = rng.choice(DISEASES_14, size=i % 4, replace=False)
        findings = [
            {
                "label": str(lab),
                "severity": int(rng.integers(1, 4)),
                "side": str(rng.choice(["left", "right"])),
            }
            for lab in labels
        ]
        report = write_report(findings, rng)
        texts.append(f"FINDINGS: {report['findings']}\nIMPRESSION: {report['impression']}")
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="label only the first N reports")
    parser.add_argument(
        "--phantom", action="store_true", help="use phantom reports even if IU X-ray is there"
    )
    args = parser.parse_args()

    pinned = "no"
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = f"cpu {cpu}"
    print(f"cpu_count={os.cpu_count()} pinned_to={pinned} python={sys.version.split()[0]}")

    start = time.perf_counter()
    from cxbench.metrics.chexpert_labeler import label_report

    print(f"import + regex compilation: {time.perf_counter() - start:.3f} s")

    texts = None if args.phantom else iu_reports()
    source = "IU X-ray reports (torchxrayvision NLMCXR_reports.tgz)"
    if texts is None:
        texts, source = phantom_reports(), "phantom reports (cxbench.data.phantom_reports.write_report)"
    texts = texts[: args.limit] if args.limit else texts
    chars = sum(map(len, texts)) / max(1, len(texts))
    print(f"{len(texts)} {source}, mean {chars:.0f} characters")

    rates = []
    for run in range(args.runs):
        start = time.perf_counter()
        for text in texts:
            label_report(text, cache=False)
        elapsed = time.perf_counter() - start
        rates.append(len(texts) / elapsed)
        print(f"run {run + 1}: {elapsed:.3f} s, {rates[-1]:,.0f} reports/s")
    print(f"median: {statistics.median(rates):,.0f} reports/s on one core (target >= 1,000)")


if __name__ == "__main__":
    main()
