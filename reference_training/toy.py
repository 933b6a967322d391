"""The CPU toy reproduction: a tiny Qwen2.5-VL through the whole curriculum on the phantom data.

    python -m reference_training.toy [--output DIR] [--results results/toy-curl-vpr/training]

1. builds a tiny Qwen2.5-VL from a config (:func:`cxbench.models.tiny_vlm.build_tiny_qwen2_5_vl`:
   random weights, a byte-level BPE tokenizer trained on the phantom corpus -- phantom reports,
   cxbench's task prompts, CX-Mind's format instructions and interleaved answers of the train
   split -- with single-token think/answer tags);
2. runs the five stages of ``configs/toy/curriculum.yaml`` on the phantom train split, each from
   the previous stage's checkpoint (text warm-up, instruction SFT, cold start, GRPO closed, GRPO
   open);
3. scores the cold-start, GRPO-closed and GRPO-open checkpoints on held-out RL prompts (phantom
   ``val`` split, greedy decoding, :mod:`reference_training.evaluate`);
4. writes the reward curves (``reward_curves.png``), the numbers behind them (``rewards.csv``: one
   row per logged GRPO step; ``losses.csv`` for the SFT stages) and ``summary.json`` (held-out
   rewards per checkpoint, wall time per stage) to ``--results``; the final checkpoint is copied to
   ``DIR/toy-curl-vpr``, which cxbench evaluates: ``cxbench run --model hf:DIR/toy-curl-vpr``.

Weights stay in ``--output`` (default ``~/.cache/cxbench/reference_training/toy``), outside the
repository.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reference_training.config import CONFIG_DIR, load_curriculum

FINAL_NAME = "toy-curl-vpr"
#: Size of the toy model (~1.3 M parameters; most are the embeddings of the 2,000-token vocabulary).
TOY_MODEL = {
    "vocab_size": 2000,
    "hidden_size": 128,
    "num_layers": 4,
    "vision_depth": 2,
    "vision_hidden_size": 64,
    "max_image_tokens": 16,  # a 256 px phantom image -> 112 px, 4x4 merged patches
}
REWARD_KEYS = (
    "reward",
    "rewards/format_reward/mean",
    "rewards/closed_outcome_reward/mean",
    "rewards/open_outcome_reward/mean",
    "rewards/consistency_reward/mean",
    "rewards/think_reward/mean",
    "process_gate_open",
    "outcome_ema",
    "kl",
    "completions/mean_length",
)


def default_output() -> Path:
    from cxbench.paths import cache_dir

    return Path(cache_dir()) / "reference_training" / "toy"


def toy_corpus(seed: int = 0) -> Iterator[str]:
    """Tokenizer text: cxbench's default corpus plus CX-Mind instructions and interleaved answers."""
    from cxbench.models.tiny_vlm import default_corpus
    from reference_training.data import build_stage, cx_mind_instruction

    yield from default_corpus(seed)
    for _ in range(20):
        yield cx_mind_instruction(closed=True)
        yield cx_mind_instruction(closed=False)
    for stage in ("grpo_closed", "grpo_open"):
        for example in build_stage(stage, split="train", limit_per_family=200, seed=seed).examples:
            yield example.prompt
            yield example.completion


def build_base(out: Path, seed: int = 0) -> Path:
    from cxbench.models.tiny_vlm import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(out, corpus=toy_corpus(seed), seed=seed, **TOY_MODEL)


def _rows(stage: str, history: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for entry in history:
        if "step" not in entry or not any(k in entry for k in keys):
            continue
        rows.append({"stage": stage, "step": entry["step"], **{k: entry.get(k, "") for k in keys}})
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]], keys: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def plot_curves(
    rewards: list[dict[str, Any]], losses: list[dict[str, Any]], held_out: dict, path: Path
) -> None:
    """Reward curves of the two GRPO stages, SFT losses, and held-out total rewards per checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    names = {
        "reward": "total (weighted)",
        "rewards/format_reward/mean": "format",
        "rewards/closed_outcome_reward/mean": "outcome",
        "rewards/open_outcome_reward/mean": "outcome",
        "rewards/consistency_reward/mean": "consistency (gated)",
        "rewards/think_reward/mean": "think text (gated)",
    }
    for ax, stage in zip(axes[:2], ("grpo_closed", "grpo_open"), strict=True):
        rows = [r for r in rewards if r["stage"] == stage]
        for key, label in names.items():
            points = [(r["step"], r[key]) for r in rows if r.get(key) not in ("", None)]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=label)
        ax.set_title(f"{stage}: mean reward per step (training batches)")
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[2]
    for stage in ("text_warmup", "sft", "cold_start"):
        points = [(r["step"], r["loss"]) for r in losses if r["stage"] == stage and r.get("loss") != ""]
        if points:
            ax.plot(*zip(*points, strict=True), label=stage)
    ax.set_title("SFT stages: training loss")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[3]
    stages = list(held_out)
    for offset, key in ((-0.25, "format"), (0.0, "outcome"), (0.25, "total")):
        ax.bar(
            [i + offset for i in range(len(stages))],
            [held_out[s]["all"][key] for s in stages],
            0.25,
            label=key,
        )
    ax.set_xticks(range(len(stages)), stages)
    ax.set_title("held-out prompts (val split, greedy)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reference_training.toy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--output", default=None, help="checkpoints folder (default: the cxbench cache)")
    parser.add_argument("--results", default="results/toy-curl-vpr/training", help="curves and numbers")
    parser.add_argument("--config", default=str(CONFIG_DIR / "toy" / "curriculum.yaml"))
    parser.add_argument("--held-out", type=int, default=100, help="held-out prompts of each kind")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for tiny matrices)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    from reference_training.evaluate import held_out_prompts, held_out_rewards
    from reference_training.train import run_stage

    transformers.set_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output) if args.output else default_output()
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    t = time.perf_counter()
    base = build_base(out / "0_base", args.seed)
    timings["build_model"] = round(time.perf_counter() - t, 1)
    curriculum = load_curriculum(args.config)
    curriculum.base_model, curriculum.output_root = str(base), out
    prompts = held_out_prompts(split="val", n_closed=args.held_out, n_open=args.held_out, seed=args.seed)

    rewards: list[dict[str, Any]] = []
    losses: list[dict[str, Any]] = []
    held_out: dict[str, Any] = {}
    samples: dict[str, list[str]] = {}
    for config in curriculum.resolved():
        summary = run_stage(config)
        timings[config.stage] = summary["seconds"]
        history = summary["log_history"]
        if config.is_grpo:
            rewards += _rows(config.stage, history, REWARD_KEYS)
        else:
            losses += _rows(config.stage, history, ("loss", "mean_token_accuracy"))
        if config.stage in ("cold_start", "grpo_closed", "grpo_open"):
            t = time.perf_counter()
            held_out[config.stage], completions = held_out_rewards(config.output_dir, prompts)
            samples[config.stage] = (
                completions[:2] + completions[len(completions) // 2 : len(completions) // 2 + 2]
            )
            timings[f"held_out_{config.stage}"] = round(time.perf_counter() - t, 1)
            print(f"[{config.stage}] held-out: " + json.dumps(held_out[config.stage]["all"]), flush=True)
    comparison = grpo_vs_cold_start(held_out)
    if comparison:
        print("[grpo vs cold start] held-out total reward: " + json.dumps(comparison), flush=True)
    final = out / FINAL_NAME
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(curriculum.resolved()[-1].output_dir, final)
    timings["total"] = round(time.perf_counter() - started, 1)

    _write_csv(results / "rewards.csv", rewards, ["stage", "step", *REWARD_KEYS])
    _write_csv(results / "losses.csv", losses, ["stage", "step", "loss", "mean_token_accuracy"])
    plot_curves(rewards, losses, held_out, results / "reward_curves.png")
    summary = {
        "command": "python -m reference_training.toy " + " ".join(argv if argv is not None else sys.argv[1:]),
        "checkpoint": str(final),
        "model": TOY_MODEL,
        "held_out_prompts": {"split": "val", "closed": args.held_out, "open": args.held_out},
        "held_out_rewards": held_out,
        "grpo_vs_cold_start": comparison,
        "example_completions": samples,
        "seconds": timings,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": _trl()},
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    print(f"toy curriculum done in {timings['total']} s; checkpoint {final}; curves in {results}")
    return 0


def grpo_vs_cold_start(held_out: dict[str, Any], n_boot: int = 2000) -> dict[str, float] | None:
    """Paired bootstrap (over held-out prompts) of the final GRPO checkpoint's mean total reward
    minus the cold start's: the observed difference and its 95% interval."""
    import numpy as np

    from cxbench.stats import paired_bootstrap

    stages = [s for s in ("grpo_open", "grpo_closed") if s in held_out]
    if "cold_start" not in held_out or not stages:
        return None
    base = np.asarray(held_out["cold_start"]["per_prompt_total"], dtype=float)[:, None]
    cand = np.asarray(held_out[stages[0]]["per_prompt_total"], dtype=float)[:, None]
    result = paired_bootstrap(base, cand, lambda m: float(m[:, 0].mean()), n_boot=n_boot, seed=0)
    return {
        "stage": stages[0],
        "cold_start": round(float(base.mean()), 4),
        "grpo": round(float(cand.mean()), 4),
        **{k: round(float(result[k]), 4) for k in ("delta", "ci_low", "ci_high") if k in result},
        "n_prompts": int(base.shape[0]),
    }


def _trl() -> str:
    import trl

    return trl.__version__


if __name__ == "__main__":
    sys.exit(main())
