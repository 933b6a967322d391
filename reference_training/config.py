"""Stage and curriculum configuration: YAML files -> dataclasses -> TRL config objects.

A stage YAML (one per stage, see ``configs/gpu/`` and ``configs/toy/``)::

    stage: grpo_closed            # text_warmup | sft | cold_start | grpo_closed | grpo_open
    model: previous               # a checkpoint folder or hub id; "previous" = the last stage's output
    output_dir: outputs/grpo_closed
    data: {dataset: phantom, split: train, params: {}, limit_per_family: null, seed: 0}
    rewards: {format: 0.1, outcome: 0.9, consistency: 0.2, think: 0.2, grounding: 0.0}
    gate_alpha: 0.2
    freeze_vision_tower: false
    use_vllm: auto                # true: require vLLM; false: transformers generate; auto: vLLM if usable
    requires_gpu: true            # fail fast (before loading anything) when no CUDA device is visible
    prompts_per_step: 64          # GRPO: sets gradient_accumulation_steps for the number of processes
    trainer: {...}                # keyword arguments of trl.SFTConfig / trl.GRPOConfig

A curriculum YAML lists the stage files in order; each stage whose ``model`` is ``previous``
starts from the checkpoint the stage before it wrote::

    base_model: Qwen/Qwen2.5-VL-7B-Instruct
    output_root: outputs/cx-mind          # prefixes relative stage output_dirs
    stages: [text_warmup.yaml, sft.yaml, cold_start.yaml, grpo_closed.yaml, grpo_open.yaml]

Relative paths in a curriculum's ``stages`` are relative to the curriculum file.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reference_training.data import STAGES

SFT_STAGES = ("text_warmup", "sft", "cold_start")
GRPO_STAGES = ("grpo_closed", "grpo_open")
PREVIOUS = "previous"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A configuration file is invalid; the message names the file and the field."""


class EnvironmentProblem(RuntimeError):
    """What a stage needs is missing here (GPU, vLLM, DeepSpeed); the message says what to do."""


@dataclass
class DataConfig:
    dataset: str = "phantom"
    split: str = "train"
    params: dict[str, Any] = field(default_factory=dict)
    families: list[str] | None = None
    limit_per_family: int | None = None
    interleaved_fraction: float = 0.5
    #: GRPO closed: also yes/no questions (for data sets without multiple-choice questions)
    closed_yes_no: bool = False
    seed: int = 0


@dataclass
class StageConfig:
    stage: str
    model: str
    output_dir: str
    data: DataConfig = field(default_factory=DataConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    rewards: dict[str, float] = field(default_factory=dict)
    gate_alpha: float = 0.2
    freeze_vision_tower: bool = False
    use_vllm: bool | str = "auto"
    requires_gpu: bool = False
    #: GRPO: prompts per optimizer step; sets gradient_accumulation_steps for the world size
    prompts_per_step: int | None = None
    source: Path | None = None

    @property
    def is_grpo(self) -> bool:
        return self.stage in GRPO_STAGES


_STAGE_KEYS = set(StageConfig.__dataclass_fields__) - {"source"}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a YAML mapping")
    return data


def stage_config_from_dict(data: dict[str, Any], source: Path | None = None) -> StageConfig:
    where = str(source or "<config>")
    unknown = set(data) - _STAGE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(_STAGE_KEYS)}")
    for key in ("stage", "model", "output_dir"):
        if not data.get(key):
            raise ConfigError(f"{where}: missing field {key!r}")
    if data["stage"] not in STAGES:
        raise ConfigError(f"{where}: stage {data['stage']!r} is not one of {', '.join(STAGES)}")
    data_section = data.get("data") or {}
    unknown = set(data_section) - set(DataConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"{where}: unknown data field(s) {sorted(unknown)}")
    use_vllm = data.get("use_vllm", "auto")
    if use_vllm not in (True, False, "auto"):
        raise ConfigError(f"{where}: use_vllm must be true, false or auto, not {use_vllm!r}")
    for key in ("rewards", "prompts_per_step"):
        if data.get(key) and data["stage"] not in GRPO_STAGES:
            raise ConfigError(f"{where}: {key} is only used by the GRPO stages, not {data['stage']}")
    from reference_training.rewards import RewardWeights

    try:
        RewardWeights.from_mapping(data.get("rewards"))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return StageConfig(
        stage=data["stage"],
        model=str(data["model"]),
        output_dir=str(data["output_dir"]),
        data=DataConfig(**data_section),
        trainer=dict(data.get("trainer") or {}),
        rewards={k: float(v) for k, v in (data.get("rewards") or {}).items()},
        gate_alpha=float(data.get("gate_alpha", 0.2)),
        freeze_vision_tower=bool(data.get("freeze_vision_tower", False)),
        use_vllm=use_vllm,
        requires_gpu=bool(data.get("requires_gpu", False)),
        prompts_per_step=int(data["prompts_per_step"]) if data.get("prompts_per_step") else None,
        source=source,
    )


def load_stage_config(path: str | Path, overrides: dict[str, Any] | None = None) -> StageConfig:
    """A stage config from YAML; ``overrides`` (``model``, ``output_dir``, ``trainer.max_steps``
    style dotted keys) replace fields."""
    path = Path(path)
    data = _read_yaml(path)
    for key, value in (overrides or {}).items():
        target = data
        *parents, last = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    return stage_config_from_dict(data, path)


@dataclass
class Curriculum:
    base_model: str
    output_root: Path
    stages: list[StageConfig]
    source: Path | None = None

    def resolved(self) -> list[StageConfig]:
        """The stages with ``previous`` replaced by the prior stage's output (the base model first)
        and relative output folders placed under ``output_root``."""
        previous = self.base_model
        out = []
        for stage in self.stages:
            output_dir = Path(stage.output_dir)
            if not output_dir.is_absolute():
                output_dir = self.output_root / output_dir
            model = previous if stage.model == PREVIOUS else stage.model
            out.append(StageConfig(**{**stage.__dict__, "model": str(model), "output_dir": str(output_dir)}))
            previous = str(output_dir)
        return out


def load_curriculum(path: str | Path, overrides: dict[str, Any] | None = None) -> Curriculum:
    path = Path(path)
    data = _read_yaml(path)
    for key in ("base_model", "output_root", "stages"):
        if key not in data:
            raise ConfigError(f"{path}: missing field {key!r}")
    files = data["stages"]
    if not isinstance(files, list) or not files:
        raise ConfigError(f"{path}: stages must be a non-empty list of stage config files")
    stages = [load_stage_config(path.parent / name, overrides) for name in files]
    order = [s.stage for s in stages]
    if order != sorted(order, key=STAGES.index):
        raise ConfigError(f"{path}: stages must run in curriculum order {list(STAGES)}, got {order}")
    root = Path(data["output_root"])
    return Curriculum(str(data["base_model"]), root, stages, path)


# ----------------------------------------------------------------------------------------
# Environment checks and TRL config objects
# ----------------------------------------------------------------------------------------


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def vllm_usable() -> bool:
    """vLLM installed and a CUDA device visible."""
    if not _installed("vllm"):
        return False
    import torch

    return torch.cuda.is_available()


def check_environment(config: StageConfig) -> dict[str, Any]:
    """Fail fast with an actionable message when the stage cannot run here; return the trainer
    keyword arguments adjusted to the machine (``use_vllm`` resolved)."""
    import torch

    where = f"{config.source or config.stage}"
    kwargs = dict(config.trainer)
    has_gpu = torch.cuda.is_available()
    wants_gpu = config.requires_gpu or kwargs.get("bf16") or kwargs.get("fp16")
    if wants_gpu and not has_gpu:
        raise EnvironmentProblem(
            f"{where}: this stage is configured for GPUs (requires_gpu / bf16 / fp16) but no CUDA device is "
            "visible. Run it on a GPU machine (see reference_training/README.md), or run the CPU toy "
            "instead: python -m reference_training.toy"
        )
    import os

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true") and not _installed(
        "deepspeed"
    ):
        raise EnvironmentProblem(
            f"{where}: accelerate was launched with a DeepSpeed config but deepspeed is not installed: "
            "pip install deepspeed (a CUDA toolkit matching your torch build is needed to compile its ops)"
        )
    if config.is_grpo:
        if config.use_vllm is True and not _installed("vllm"):
            raise EnvironmentProblem(
                f"{where}: use_vllm is true but vLLM is not installed: pip install vllm (a CUDA build "
                "matching your torch), or set use_vllm: auto (falls back to transformers generation) / false"
            )
        if config.use_vllm is True and not has_gpu:
            raise EnvironmentProblem(
                f"{where}: use_vllm is true but no CUDA device is visible; vLLM needs GPUs"
            )
        kwargs["use_vllm"] = config.use_vllm is True or (config.use_vllm == "auto" and vllm_usable())
        if config.prompts_per_step:
            kwargs["gradient_accumulation_steps"] = accumulation_steps(config, kwargs, world_size())
        if not kwargs["use_vllm"]:
            for key in [k for k in kwargs if k.startswith("vllm_")]:
                kwargs.pop(key)
    if not has_gpu:
        kwargs.setdefault("use_cpu", True)
        kwargs.setdefault("bf16", False)  # TRL's default bf16 autocast runs many times slower on a CPU
    return kwargs


def world_size() -> int:
    """Processes of the run (``accelerate launch`` sets ``WORLD_SIZE``; 1 otherwise)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def accumulation_steps(config: StageConfig, kwargs: dict[str, Any], processes: int) -> int:
    """Gradient accumulation that makes one optimizer step see ``prompts_per_step`` prompts of
    ``num_generations`` completions each, with ``per_device_train_batch_size`` completions per
    process and micro-step: ``prompts * generations / (per_device * processes)``."""
    generations = int(kwargs.get("num_generations", 8))
    per_device = int(kwargs.get("per_device_train_batch_size", 8))
    completions = int(config.prompts_per_step or 0) * generations
    if completions % (per_device * processes):
        raise ConfigError(
            f"{config.source or config.stage}: prompts_per_step x num_generations = {completions} "
            "completions per step is not a multiple of per_device_train_batch_size x processes = "
            f"{per_device} x {processes}; change per_device_train_batch_size or the number of GPUs"
        )
    return completions // (per_device * processes)


def trl_config(config: StageConfig, trainer_kwargs: dict[str, Any] | None = None) -> Any:
    """The ``trl.SFTConfig`` / ``trl.GRPOConfig`` of a stage (``trainer_kwargs`` from
    :func:`check_environment`, else the YAML's ``trainer`` section as is)."""
    from reference_training.rewards import RewardWeights, reward_functions

    kwargs = dict(config.trainer if trainer_kwargs is None else trainer_kwargs)
    kwargs.setdefault("output_dir", config.output_dir)
    kwargs.setdefault("report_to", [])
    kwargs.setdefault("save_strategy", "no")  # the stage saves its final checkpoint itself
    where = f"{config.source or config.stage}: trainer"
    if config.is_grpo:
        from trl import GRPOConfig

        _, weights = reward_functions(config.stage, RewardWeights.from_mapping(config.rewards))
        if "reward_weights" in kwargs:
            raise ConfigError(f"{where}: set the reward weights in 'rewards', not trainer.reward_weights")
        kwargs["reward_weights"] = weights
        kwargs.setdefault("remove_unused_columns", False)  # the reward functions read the 'target' column
        cls = GRPOConfig
    else:
        from trl import SFTConfig

        if config.stage != "text_warmup":
            kwargs.setdefault("completion_only_loss", True)
        cls = SFTConfig
    try:
        return cls(**kwargs)
    except TypeError as exc:  # an argument this TRL version does not know
        raise ConfigError(f"{where}: {exc} (see the {cls.__name__} of trl {_trl_version()})") from None


def _trl_version() -> str:
    import trl

    return trl.__version__
