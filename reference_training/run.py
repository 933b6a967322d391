"""Command line: one stage, or the whole curriculum in order.

    python -m reference_training.run --stage grpo_closed \\
        --config reference_training/configs/gpu/grpo_closed.yaml
    python -m reference_training.run --curriculum reference_training/configs/gpu/curriculum.yaml
    accelerate launch --config_file reference_training/configs/accelerate/zero3.yaml \\
        -m reference_training.run --stage sft --config reference_training/configs/gpu/sft.yaml

``--set key=value`` overrides a config field (dotted keys reach into sections:
``--set trainer.max_steps=10``; values are read as YAML). ``--model`` / ``--output-dir`` replace
the stage's starting checkpoint and output folder. With ``--curriculum``, ``--from-stage``
resumes at a stage (its ``previous`` model is the earlier stage's output folder, which must exist).
Exit status: 0 done, 2 bad configuration or a missing requirement (GPU, vLLM, DeepSpeed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from reference_training.config import (
    PREVIOUS,
    ConfigError,
    EnvironmentProblem,
    load_curriculum,
    load_stage_config,
)
from reference_training.data import STAGES


def _overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reference_training.run", description=__doc__.split("\n")[0]
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", help="a stage config YAML (with --stage)")
    what.add_argument("--curriculum", help="a curriculum YAML: every stage in order")
    parser.add_argument("--stage", choices=STAGES, help="the stage the --config file must describe")
    parser.add_argument("--from-stage", choices=STAGES, help="with --curriculum: start at this stage")
    parser.add_argument("--model", help="starting checkpoint (replaces the config's model)")
    parser.add_argument("--output-dir", help="output folder (replaces the config's output_dir)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    args = parser.parse_args(argv)
    try:
        overrides = _overrides(args.set)
        if args.config:
            if not args.stage:
                parser.error("--config needs --stage (the stage the file describes)")
            if args.model:
                overrides["model"] = args.model
            if args.output_dir:
                overrides["output_dir"] = args.output_dir
            config = load_stage_config(args.config, overrides)
            if config.stage != args.stage:
                raise ConfigError(f"{args.config} describes stage {config.stage!r}, not {args.stage!r}")
            if config.model == PREVIOUS:
                raise ConfigError(
                    f"{args.config}: model is 'previous', which only a curriculum resolves; pass --model PATH"
                )
            stages = [config]
        else:
            curriculum = load_curriculum(args.curriculum, overrides)
            if args.model:
                curriculum.base_model = args.model
            if args.output_dir:
                curriculum.output_root = Path(args.output_dir)
            stages = curriculum.resolved()
            if args.from_stage:
                names = [s.stage for s in stages]
                if args.from_stage not in names:
                    raise ConfigError(f"{args.curriculum} has no stage {args.from_stage!r}")
                stages = stages[names.index(args.from_stage) :]
        from reference_training.train import run_stage

        for config in stages:
            summary = run_stage(config)
            done = f"{summary['examples']} examples, {summary['seconds']} s"
            print(f"[{config.stage}] {done} -> {summary['output_dir']}")
    except (ConfigError, EnvironmentProblem) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
