"""Rewards of a checkpoint on held-out RL prompts (greedy decoding), for comparing stages.

:func:`held_out_rewards` generates one greedy answer per prompt with transformers and scores it
with :func:`reference_training.rewards.score` (every reward, and the total with the process
rewards counted as if the gate were open: gating is a property of a training batch, not of a
single answer). The prompts are built from a split the stage did not train on (``val`` by default)
by the same builders as the training prompts.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from reference_training.data import Example, build_stage
from reference_training.rewards import RewardWeights, score


def held_out_prompts(
    dataset: str = "phantom",
    split: str = "val",
    params: dict[str, Any] | None = None,
    n_closed: int | None = 60,
    n_open: int | None = 60,
    seed: int = 0,
) -> list[Example]:
    """Closed and open RL prompts of a held-out split (seeded subsets)."""
    closed = build_stage("grpo_closed", dataset, split, params, limit_per_family=n_closed, seed=seed)
    opened = build_stage("grpo_open", dataset, split, params, limit_per_family=n_open, seed=seed)
    return closed.examples + opened.examples


def generate(
    model_dir: str, examples: Sequence[Example], max_new_tokens: int = 256, batch_size: int = 16
) -> list[str]:
    """Greedy completions of ``examples`` (left-padded batches; images through cxbench's reader)."""
    import torch
    import transformers

    from cxbench.models.hf import load_image
    from reference_training.train import load_processor

    processor = load_processor(model_dir)
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    model = transformers.AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    outputs: list[str] = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        texts = [
            processor.apply_chat_template(
                [
                    {
                        "role": "user",
                        "content": [{"type": "image"} for _ in e.images]
                        + [{"type": "text", "text": e.prompt}],
                    }
                ],
                tokenize=False,
                add_generation_prompt=True,
            )
            for e in batch
        ]
        images = [[load_image(p) for p in e.images] for e in batch]
        inputs = processor(
            text=texts, images=images, padding=True, return_tensors="pt", add_special_tokens=False
        )
        with torch.inference_mode():
            sequences = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        new = sequences[:, inputs["input_ids"].shape[1] :]
        outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    return outputs


def summarize(examples: Sequence[Example], completions: Sequence[str], weights: RewardWeights | None = None):
    """Mean of every reward over all prompts and per kind (``closed`` / ``open``)."""
    rows = [score(c, e.target, weights) for e, c in zip(examples, completions, strict=True)]  # type: ignore[arg-type]
    out: dict[str, Any] = {"n": len(rows)}
    names = list(rows[0]) if rows else []
    out["all"] = {name: statistics.fmean(r[name] for r in rows) for name in names}
    out["per_prompt_total"] = [round(r["total"], 6) for r in rows]  # for paired comparisons
    for kind in ("closed", "open"):
        subset = [r for e, r in zip(examples, rows, strict=True) if e.target and e.target.kind == kind]
        if subset:
            out[kind] = {name: statistics.fmean(r[name] for r in subset) for name in names}
            out[kind]["n"] = len(subset)
    return out


def held_out_rewards(
    model_dir: str, examples: Sequence[Example], max_new_tokens: int = 256, batch_size: int = 16
) -> tuple[dict[str, Any], list[str]]:
    """Summary of the rewards of ``model_dir`` on ``examples`` and the completions."""
    completions = generate(model_dir, examples, max_new_tokens, batch_size)
    return summarize(examples, completions), completions
