"""Samples/s and tokens/s per model backend, on the tiny Qwen2.5-VL (or any ``--model``).

Backends: ``hf:`` one request at a time (the default, batch-size invariant), ``hf:`` with
left-padded batches, ``prior`` (the harness's floor) and ``openai:`` against ``cxbench serve``
of ``prior`` on loopback (HTTP + base64 image cost), each on the same requests: phantom
vqa_closed (1 image), temporal_comparison (2 images) and report_generation prompts, round
robin. ``hf:`` runs on the CPU, and also on the GPU when torch sees one. Model loading is
excluded; the first batch is a warm-up. Generation length is fixed by ``--max-new-tokens``
(the untrained tiny model rarely stops early).

    python benchmarks/throughput.py [--n 48] [--batch 8] [--max-new-tokens 32] [--threads 1]
    python benchmarks/throughput.py --model Qwen/Qwen2.5-VL-7B-Instruct --n 64   # on a GPU box
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from itertools import islice, zip_longest
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAMILIES = ("vqa_closed", "temporal_comparison", "report_generation")


def small_tasks(folder: Path, size: int) -> Path:
    import yaml

    from cxbench.tasks import builtin_task_dir

    for name in FAMILIES:
        config = yaml.safe_load((builtin_task_dir() / f"{name}.yaml").read_text())
        config["name"] = f"bench_{name}"
        config["dataset"].update({"n_cases": 120, "seed": 0, "size": size})
        (folder / f"bench_{name}.yaml").write_text(yaml.safe_dump(config))
    return folder


def build_requests(task_dir: Path, n: int):
    from cxbench.tasks import get_task

    per_task = []
    for name in FAMILIES:
        task = get_task(f"bench_{name}", [task_dir])
        per_task.append((task, [task.build_request(s) for s in islice(task.samples(), n)]))
    rounds = zip_longest(*(rs for _, rs in per_task))
    requests = [r for group in rounds for r in group if r is not None][:n]
    return [task for task, _ in per_task], requests


def measure(model, requests, batch: int) -> dict:
    """Throughput of ``model`` on ``requests`` in calls of ``batch``; also the answers."""
    model.generate(requests[:batch])  # warm-up
    started = time.perf_counter()
    responses = []
    for start in range(0, len(requests), batch):
        responses.extend(model.generate(requests[start : start + batch]))
    seconds = time.perf_counter() - started
    errors = [r.error for r in responses if r.error]
    if errors:
        raise SystemExit(f"{len(errors)} errors, e.g. {errors[0]}")
    out_tokens = sum(r.output_tokens or 0 for r in responses)
    in_tokens = sum(r.input_tokens or 0 for r in responses)
    return {
        "samples_s": len(responses) / seconds,
        "out_tok_s": out_tokens / seconds if out_tokens else None,
        "in_tok_s": in_tokens / seconds if in_tokens else None,
        "seconds": seconds,
        "texts": [r.text for r in responses],
    }


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="hf model path or id (default: a tiny Qwen2.5-VL built now)")
    parser.add_argument("--n", type=int, default=48, help="requests per backend")
    parser.add_argument("--batch", type=int, default=8, help="requests per generate() call")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--size", type=int, default=256, help="phantom image size in pixels")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    import torch

    from cxbench.models import load_model
    from cxbench.models.hf import HFModel
    from cxbench.models.openai_compat import OpenAIModel
    from cxbench.models.tiny_vlm import build_tiny_qwen2_5_vl
    from cxbench.serve import serve_in_thread

    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus ({torch.get_num_threads()} torch threads), "
        f"GPU: {gpu}; python {platform.python_version()}, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="cxbench-throughput-") as tmp:
        tmp_path = Path(tmp)
        model_path = args.model or str(build_tiny_qwen2_5_vl(tmp_path / "tiny-qwen2.5-vl"))
        tasks, requests = build_requests(small_tasks(tmp_path, args.size), args.n)
        print(
            f"model: {args.model or 'tiny Qwen2.5-VL (random weights)'}; {len(requests)} requests "
            f"({', '.join(FAMILIES)}), {args.size}px images, batch {args.batch}, "
            f"max_new_tokens {args.max_new_tokens}\n"
        )
        rows = []
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            for exact in (True, False):
                model = HFModel(
                    model_path,
                    device=device,
                    max_new_tokens=args.max_new_tokens,
                    exact_batch_invariance=exact,
                    max_batch_size=args.batch,
                )
                model.load()
                mode = "one at a time" if exact else f"padded x{args.batch}"
                row = measure(model, requests, args.batch)
                if not exact:
                    same = sum(a == b for a, b in zip(row["texts"], rows[-1][1]["texts"], strict=True))
                    mode += f", {same}/{len(requests)} answers as one at a time"
                rows.append((f"hf ({device}, {mode})", row))
                del model
        prior = load_model("prior")
        for task in tasks:
            prior.prepare(task)
        rows.append(("prior", measure(prior, requests, args.batch)))
        server, base_url = serve_in_thread(load_model("prior"), include_paths=[tmp_path])
        try:
            client = OpenAIModel("prior", base_url=base_url, send_cxbench_fields=True, concurrency=8)
            rows.append(("openai -> cxbench serve prior", measure(client, requests, args.batch)))
        finally:
            server.shutdown()
            server.server_close()
    print("| backend | samples/s | output tokens/s | input tokens/s |")
    print("|---|---|---|---|")
    for name, row in rows:
        print(f"| {name} | {fmt(row['samples_s'])} | {fmt(row['out_tok_s'])} | {fmt(row['in_tok_s'])} |")


if __name__ == "__main__":
    main()
