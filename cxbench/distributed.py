"""Data-parallel evaluation with Ray: shards of a task go to actors that each hold one backend.

Each actor builds its own model instance (one per GPU on a cluster: ``num_gpus`` per actor)
and evaluates one shard with the ordinary runner (``RunConfig.shard``), writing into the same
SQLite response cache and results folder. The shard logs are then merged in sample order
(``runner.merge_shards``), so the result equals a single-process run. Works on a local Ray
instance (``ray.init(num_cpus=...)``) or on a cluster (``address="auto"``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from cxbench.runner import RunConfig, merge_shards


class _ShardWorker:
    """Ray actor body: one backend instance, evaluates shards on request."""

    def __init__(self, spec: str, model_args: dict[str, Any]) -> None:
        from cxbench.models import load_model

        self.spec = spec
        self.model = load_model(spec, model_args)

    def run(self, task_name: str, include_paths: list[str], config: dict[str, Any]) -> dict[str, Any]:
        from cxbench.runner import run_task
        from cxbench.tasks import get_task

        config = RunConfig(**{**config, "shard": tuple(config["shard"])})
        result, stats = run_task(get_task(task_name, include_paths), self.model, config, spec=self.spec)
        return {"n": result["n"], "model_calls": stats.model_calls, "cache_hits": stats.cache_hits}


def run_with_ray(
    task_name: str,
    spec: str,
    model_args: dict[str, Any],
    config: RunConfig,
    workers: int,
    include_paths: list[str] | None = None,
    num_gpus_per_worker: float = 0,
    address: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate ``task_name`` with ``workers`` Ray actors; returns (merged result, per-shard stats)."""
    try:
        import ray
    except ImportError:
        raise ValueError('Ray is not installed: pip install "cxbench[ray]"') from None
    if config.shard is not None:
        raise ValueError("--ray shards the task itself; do not combine it with --shard")
    if workers < 1:
        raise ValueError("--ray needs at least one worker")
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        actor = ray.remote(num_gpus=num_gpus_per_worker, num_cpus=1)(_ShardWorker)
        pool = [actor.remote(spec, model_args) for _ in range(workers)]
        base = {k: v for k, v in asdict(config).items() if k != "shard"}
        base["output_dir"] = str(Path(config.output_dir).resolve())
        if base.get("cache_path"):
            base["cache_path"] = str(Path(base["cache_path"]).resolve())
        base["progress"] = False
        jobs = [
            worker.run.remote(task_name, list(include_paths or []), {**base, "shard": [i, workers]})
            for i, worker in enumerate(pool)
        ]
        shard_stats = ray.get(jobs)
        from cxbench.models import load_model
        from cxbench.tasks import get_task

        task = get_task(task_name, include_paths or [])
        model_name = load_model(spec, model_args).name
        merged = merge_shards(task, Path(config.output_dir) / model_name)
        return merged, shard_stats
    finally:
        if started_here:
            ray.shutdown()
