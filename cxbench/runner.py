"""Run one model on one task: batch, cache, parse, score, log, aggregate.

The flow per batch is: samples -> requests (images checked) -> cache lookup -> model for
the misses -> cache commit -> parse -> per-sample stats -> JSONL log row. Samples stream
through; only the small per-sample stats matrices are kept for the final aggregate.
Nothing a sample does (a missing or corrupt image, an empty or unparseable output, a model
exception) stops the run: it becomes an error record, scores as wrong, and is counted.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from cxbench.cache import ResponseCache, request_key
from cxbench.metrics.base import Output
from cxbench.models.base import Model
from cxbench.paths import cache_dir
from cxbench.results import now_iso, package_versions, write_result
from cxbench.schema import LOG_SCHEMA_VERSION, RESULT_SCHEMA_VERSION, Response, Sample
from cxbench.scoring import Scorer, finish_log
from cxbench.tasks import Task

#: error kinds that count as parse failures (the model answered, but not usably)
PARSE_FAILURE_KINDS = ("empty_output", "parse_failure")
ERROR_KINDS = ("missing_image", "corrupt_image", "model_error", *PARSE_FAILURE_KINDS)
_IMAGE_CHECKS: dict[tuple[str, int, int], tuple[str, str] | None] = {}


@dataclass
class RunConfig:
    batch_size: int = 8
    limit: int | None = None
    seed: int = 0
    output_dir: str | Path = "results"
    cache_path: str | Path | None = None  # None: the user cache; "" / False: no cache
    n_bootstrap: int = 1000
    split: str | None = None
    data_root: str | None = None
    progress: bool = True


@dataclass
class RunStats:
    """What happened during a run (printed, not written into the result file)."""

    samples: int = 0
    model_calls: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)


def check_image(path: str) -> tuple[str, str] | None:
    """None if the image decodes, else (error kind, message). Memoised per file version."""
    try:
        stat = os.stat(path)
    except OSError:
        return ("missing_image", f"image not found: {path}")
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _IMAGE_CHECKS:
        from PIL import Image

        try:
            with Image.open(path) as image:
                image.load()
            _IMAGE_CHECKS[key] = None
        except Exception as exc:  # PIL raises many types for bad files
            _IMAGE_CHECKS[key] = ("corrupt_image", f"cannot decode image {path}: {type(exc).__name__}: {exc}")
    return _IMAGE_CHECKS[key]


def _batched(items: Iterator[Sample], size: int) -> Iterator[list[Sample]]:
    while batch := list(islice(items, size)):
        yield batch


def _generate_safely(model: Model, requests: list) -> list[Response]:
    """Call the model on a batch; if the batch fails, retry one by one and record failures."""
    try:
        responses = model.generate(requests)
        if len(responses) != len(requests):
            raise RuntimeError(f"model returned {len(responses)} responses for {len(requests)} requests")
        return responses
    except Exception:
        if len(requests) == 1:
            import traceback

            return [Response(text="", error=traceback.format_exc(limit=3).strip().splitlines()[-1])]
        return [r for request in requests for r in _generate_safely(model, [request])]


def score_row(task: Task, sample: Sample, response: Response | None, error: tuple[str, str] | None) -> dict:
    """Parse one response and classify its failure kind, if any (no metrics yet)."""
    text = response.text if response is not None else ""
    parsed = None
    if error is None and response is not None and response.error:
        error = ("model_error", response.error)
    if error is None:
        if not text.strip():
            error = ("empty_output", "the model returned an empty output")
        else:
            try:
                parsed = task.parse(text, sample)
            except Exception as exc:  # a parser hook must not crash the run
                parsed, error = None, ("parse_failure", f"parser raised {type(exc).__name__}: {exc}")
            if parsed is None and error is None:
                error = ("parse_failure", f"could not parse a {task.parser!r} answer from the output")
    return {"text": text, "parsed": parsed, "error": error}


def run_task(task: Task, model: Model, config: RunConfig, spec: str | None = None) -> tuple[dict, RunStats]:
    """Evaluate ``model`` on ``task``; write the per-sample log and the result file; return both."""
    started = time.perf_counter()
    stats = RunStats()
    model.prepare(task)
    identity = model.identity()
    cache = None
    if config.cache_path is None or config.cache_path:
        cache = ResponseCache(config.cache_path or cache_dir() / "responses.sqlite")
    out_dir = Path(config.output_dir) / model.name
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / f"{task.name}.samples.jsonl"
    partial = log_path.with_name(log_path.name + ".partial")
    scorer = Scorer(task)
    samples: Iterable[Sample] = task.samples(split=config.split, data_root=config.data_root)
    if config.limit is not None:
        samples = islice(samples, config.limit)
    header = {
        "header": {
            "log_schema": LOG_SCHEMA_VERSION,
            "task": task.name,
            "task_hash": task.task_hash,
            "model": model.name,
            "model_identity": identity,
            "spec": spec or model.name,
        }
    }
    progress = None
    if config.progress:
        from tqdm.auto import tqdm

        progress = tqdm(desc=f"{model.name} / {task.name}", total=config.limit, unit="sample", leave=False)
    try:
        with partial.open("w", encoding="utf-8") as log:
            log.write(json.dumps(header) + "\n")
            for batch in _batched(iter(samples), max(1, config.batch_size)):
                _run_batch(task, model, identity, batch, cache, scorer, log, stats)
                log.flush()
                if progress is not None:
                    progress.update(len(batch))
    finally:
        if progress is not None:
            progress.close()
        if cache is not None:
            cache.close()
    finish_log(scorer, partial, log_path)  # corpus metrics, then the final log
    result = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "task": {
            "name": task.name,
            "family": task.family,
            "hash": task.task_hash,
            "split": task.split(config.split),
            "data": task.data_identity(config.data_root),
            "config": task.config,
        },
        "model": {
            "name": model.name,
            "spec": spec or model.name,
            "config": model.config(),
            "identity": identity,
        },
        "n": stats.samples,
        "parse_failures": sum(stats.errors[k] for k in PARSE_FAILURE_KINDS),
        "errors": {kind: stats.errors[kind] for kind in ERROR_KINDS},
        "primary_metric": task.primary_metric,
        "leaderboard_metrics": task.config.get("leaderboard_metrics", [task.primary_metric]),
        "metrics": scorer.aggregate(config.n_bootstrap, config.seed),
        "seed": config.seed,
        "n_bootstrap": config.n_bootstrap,
        "limit": config.limit,
        "batch_size_invariant": True,
        "log": log_path.name,
        "versions": package_versions(),
        "date": now_iso(),
    }
    write_result(out_dir / f"{task.name}.json", result)
    stats.seconds = time.perf_counter() - started
    return result, stats


def _run_batch(task, model, identity, batch, cache, scorer, log, stats) -> None:
    requests, errors = [], []
    for sample in batch:
        requests.append(task.build_request(sample))
        problems = [check_image(p) for p in sample.images]
        errors.append(next((p for p in problems if p), None))
    keys = [request_key(identity, r) if e is None else None for r, e in zip(requests, errors, strict=True)]
    cached = cache.get_many([k for k in keys if k]) if cache is not None else {}
    todo = [i for i, k in enumerate(keys) if k and k not in cached]
    responses: dict[int, Response] = {i: cached[k] for i, k in enumerate(keys) if k and k in cached}
    stats.cache_hits += len(responses)
    if todo:
        fresh = _generate_safely(model, [requests[i] for i in todo])
        stats.model_calls += len(todo)
        for i, response in zip(todo, fresh, strict=True):
            responses[i] = response
        if cache is not None:
            cache.put_many([(keys[i], identity, responses[i]) for i in todo if not responses[i].error])
    for i, sample in enumerate(batch):
        response = responses.get(i)
        outcome = score_row(task, sample, response, errors[i])
        row_stats, values = scorer.score(sample, outcome["parsed"], outcome["text"])
        error = outcome["error"]
        if error:
            stats.errors[error[0]] += 1
        stats.samples += 1
        log.write(
            json.dumps(
                {
                    "sample_id": sample.id,
                    "sample": sample.to_dict(),
                    "prompt": requests[i].prompt,
                    "raw_output": outcome["text"],
                    "parsed": outcome["parsed"],
                    "error": error[0] if error else None,
                    "error_message": error[1] if error else None,
                    "scores": values,
                    "stats": row_stats,
                    "input_tokens": response.input_tokens if response else None,
                    "output_tokens": response.output_tokens if response else None,
                },
                ensure_ascii=False,
            )
            + "\n"
        )


def rescore_log(
    task: Task, log_path: str | Path, n_bootstrap: int = 1000, seed: int = 0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Re-parse and re-score a per-sample log without calling the model.

    Returns the new metrics block and the re-scored rows. Errors that happened before the
    model answered (missing/corrupt image, model error) are kept as they were.
    """
    scorer = Scorer(task)
    rows: list[dict[str, Any]] = []
    errors: Counter = Counter()
    with Path(log_path).open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            record = json.loads(line)
            if "header" in record:
                if record["header"].get("task") != task.name:
                    raise ValueError(
                        f"{log_path}:{line_no}: log is for task {record['header'].get('task')!r}"
                    )
                continue
            try:
                sample = Sample(**record["sample"])
            except (KeyError, TypeError) as exc:
                raise ValueError(f"{log_path}:{line_no}: not a cxbench sample log row ({exc})") from None
            kept = record.get("error") if record.get("error") not in (None, *PARSE_FAILURE_KINDS) else None
            if kept:
                outcome = {"parsed": None, "error": (kept, record.get("error_message") or kept)}
                outcome["text"] = record.get("raw_output", "")
            else:
                outcome = score_row(task, sample, Response(text=record.get("raw_output") or ""), None)
            row_stats, values = scorer.score(sample, outcome["parsed"], outcome["text"])
            if outcome["error"]:
                errors[outcome["error"][0]] += 1
            rows.append({**record, "parsed": outcome["parsed"], "scores": values, "stats": row_stats})
    outputs = [Output(r.get("raw_output") or "", r["parsed"], Sample(**r["sample"])) for r in rows]
    matrices = scorer.score_corpus(
        [r["parsed"] for r in rows], [r["sample"]["target"] for r in rows], outputs
    )
    for name, matrix in matrices.items():
        for row, stats_row in zip(rows, matrix, strict=True):
            row["stats"][name] = stats_row.tolist()
    summary = {
        "n": len(rows),
        "parse_failures": sum(errors[k] for k in PARSE_FAILURE_KINDS),
        "errors": {kind: errors[kind] for kind in ERROR_KINDS},
        "metrics": scorer.aggregate(n_bootstrap, seed),
    }
    return summary, rows
