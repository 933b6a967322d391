"""Run one curriculum stage with TRL: ``SFTTrainer`` (text warm-up, SFT, cold start) or
``GRPOTrainer`` with the verifiable rewards (closed, then open GRPO).

The stage loads its starting checkpoint (``model``), builds its data from the dataset adapter
(:func:`reference_training.data.build_stage`), trains, and writes a checkpoint that transformers
and cxbench's ``hf:`` backend load: weights + config + generation config, the tokenizer (with its
chat template) and the image processor (saved apart: a Qwen2.5-VL processor without torchvision
has no video processor and cannot save itself). ``log_history.json`` holds TRL's logs (loss,
every reward by name, the gate) and ``stage.json`` the stage's config, data counts and wall time.

Works the same under ``accelerate launch`` (DDP or DeepSpeed ZeRO-3, one or many nodes): data are
built on every process (deterministic), only the main process writes files, and ZeRO-3 weights
are gathered for saving by accelerate.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reference_training.config import StageConfig, check_environment, trl_config
from reference_training.data import FAMILIES, Example, build_stage

_PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------------------
# Model, processor, checkpoint
# ----------------------------------------------------------------------------------------


def load_processor(source: str) -> Any:
    """The checkpoint's processor; assembled from tokenizer + image processor when ``AutoProcessor``
    cannot build it (Qwen2.5-VL without torchvision), as cxbench's ``hf:`` backend does."""
    import transformers

    try:
        return transformers.AutoProcessor.from_pretrained(source)
    except Exception:  # a video processor that needs torchvision
        from cxbench.models.hf import assemble_processor

        return assemble_processor(transformers, source, {})


def load_model(source: str, trainer_kwargs: dict[str, Any], freeze_vision_tower: bool) -> Any:
    """The image-text-to-text model of ``source`` in the dtype the trainer trains in."""
    import torch
    import transformers

    dtype = torch.bfloat16 if trainer_kwargs.get("bf16") else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    attention = trainer_kwargs.get("model_init_kwargs", {}) or {}
    if "attn_implementation" in attention:
        kwargs["attn_implementation"] = attention["attn_implementation"]
    model = transformers.AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    visual = getattr(getattr(model, "model", model), "visual", None)
    if freeze_vision_tower and visual is not None:
        visual.requires_grad_(False)
    return model


def save_checkpoint(trainer: Any, processor: Any, out: Path) -> None:
    """Weights (gathered under ZeRO-3), config, generation config, tokenizer, image processor."""
    accelerator = trainer.accelerator
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(trainer.model)  # every process takes part under ZeRO-3
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        model = accelerator.unwrap_model(trainer.model)
        model.save_pretrained(out, state_dict=state_dict)
        tokenizer = getattr(processor, "tokenizer", processor)
        tokenizer.save_pretrained(out)
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is not None:
            image_processor.save_pretrained(out)
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------------------
# Datasets in TRL's formats
# ----------------------------------------------------------------------------------------


def _images_feature(examples: list[Example]) -> tuple[list[Any], Any]:
    """Image columns: file paths decoded lazily by ``datasets`` for common formats, else images
    loaded by cxbench's reader (DICOM, 16-bit) and stored."""
    from datasets import Image, Sequence

    paths = [e.images for e in examples]
    if all(p.lower().endswith(_PIL_SUFFIXES) for row in paths for p in row):
        return paths, Sequence(Image())
    from cxbench.models.hf import load_image

    return [[load_image(p) for p in row] for row in paths], Sequence(Image())


def sft_dataset(examples: list[Example]) -> Any:
    """Text-only chats (``messages``) or prompt/completion chats with an ``images`` column."""
    from datasets import Dataset, Features, Value

    if not examples:
        raise ValueError("no training examples: check the data section of the stage config")
    if all(not e.images for e in examples):
        rows = {
            "messages": [
                [{"role": "user", "content": e.prompt}, {"role": "assistant", "content": e.completion}]
                for e in examples
            ]
        }
        return Dataset.from_dict(rows)
    if any(not e.images for e in examples):
        raise ValueError(
            "a vision stage mixes examples with and without images; keep them in separate stages"
        )
    images, feature = _images_feature(examples)
    message = [{"role": Value("string"), "content": Value("string")}]
    features = Features({"prompt": message, "completion": message, "images": feature})
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": e.prompt}] for e in examples],
            "completion": [[{"role": "assistant", "content": e.completion}] for e in examples],
            "images": images,
        },
        features=features,
    )


def grpo_dataset(examples: list[Example]) -> Any:
    """Prompts (chat), images and the ``target`` column (a RewardTarget as JSON) for the rewards."""
    from datasets import Dataset, Features, Value

    if not examples:
        raise ValueError("no RL prompts: check the data section of the stage config")
    images, feature = _images_feature(examples)
    message = [{"role": Value("string"), "content": Value("string")}]
    features = Features({"prompt": message, "images": feature, "target": Value("string")})
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": e.prompt}] for e in examples],
            "images": images,
            "target": [e.target.to_json() for e in examples],  # type: ignore[union-attr]
        },
        features=features,
    )


def stage_examples(config: StageConfig) -> tuple[list[Example], dict[str, int]]:
    data = config.data
    built = build_stage(
        config.stage,
        data.dataset,
        data.split,
        data.params,
        families=tuple(data.families or FAMILIES),
        limit_per_family=data.limit_per_family,
        interleaved_fraction=data.interleaved_fraction,
        closed_yes_no=data.closed_yes_no,
        seed=data.seed,
    )
    if not built.examples:
        needs = {
            "text_warmup": "report_generation or text samples",
            "grpo_closed": "multiple-choice vqa_closed samples whose options name findings (e.g. phantom); "
            "for yes/no-only data sets such as mimic_cxr or chexpert set data.closed_yes_no: true",
            "grpo_open": "studies with a disease set: metadata['findings'] or diagnosis_recall1 targets",
        }.get(config.stage, "samples of the configured families")
        skipped = ", ".join(f"{reason}: {n}" for reason, n in built.skipped.items()) or "none"
        raise ValueError(
            f"stage {config.stage}: data set {data.dataset!r} (split {data.split!r}) gave no examples; "
            f"this stage needs {needs}. Samples skipped: {skipped}"
        )
    return built.examples, built.skipped


# ----------------------------------------------------------------------------------------
# One stage
# ----------------------------------------------------------------------------------------


def run_stage(config: StageConfig, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Train one stage from ``config.model`` and save its checkpoint in ``config.output_dir``.

    Returns the stage summary also written to ``stage.json`` (data counts, TRL log history, wall
    time). Raises :class:`~reference_training.config.EnvironmentProblem` before loading anything
    when the machine lacks what the stage needs.
    """
    started = time.perf_counter()
    trainer_kwargs = check_environment(config)
    args = trl_config(config, trainer_kwargs)
    examples, skipped = stage_examples(config)
    processor = load_processor(config.model)
    model = load_model(config.model, trainer_kwargs, config.freeze_vision_tower)
    if config.is_grpo:
        from trl import GRPOTrainer

        from reference_training.rewards import OutcomeGate, RewardWeights, reward_functions

        gate = OutcomeGate(config.gate_alpha)
        functions, _ = reward_functions(config.stage, RewardWeights.from_mapping(config.rewards), gate)
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=functions,
            args=args,
            train_dataset=grpo_dataset(examples),
            processing_class=processor,
            callbacks=callbacks,
        )
    else:
        from trl import SFTTrainer

        text_only = all(not e.images for e in examples)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=sft_dataset(examples),
            processing_class=getattr(processor, "tokenizer", processor) if text_only else processor,
            callbacks=callbacks,
        )
    trainer.train()
    out = Path(config.output_dir)
    save_checkpoint(trainer, processor, out)
    summary = {
        "stage": config.stage,
        "model": config.model,
        "output_dir": str(out),
        "examples": len(examples),
        "skipped": skipped,
        "seconds": round(time.perf_counter() - started, 1),
        "config": {k: v for k, v in asdict(config).items() if k != "source"},
        "gate_history": gate.history if config.is_grpo else None,
        "log_history": trainer.state.log_history,
    }
    if trainer.accelerator.is_main_process:
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1, default=str))
        (out / "stage.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
