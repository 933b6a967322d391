"""Run one model on one task: batch, cache, parse, score, log, aggregate.

The flow per batch is: samples -> requests (images checked) -> cache lookup -> model for
the misses -> cache commit -> parse -> per-sample stats -> JSONL log row. Samples stream
through; only the small per-sample stats matrices are kept for the final aggregate.
Nothing a sample does (a missing or corrupt image, an empty or unparseable output, a model
exception) stops the run: it becomes an error record, scores as wrong, and is counted.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import socket
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
    #: (i, n): evaluate only samples whose position in the task's order is i modulo n;
    #: ``cxbench merge`` then joins the n shard logs into the log of a single run
    shard: tuple[int, int] | None = None


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
        from cxbench.images import ImageError, load_image

        try:
            load_image(path)  # the loader the model backends use (PNG/JPEG/DICOM, size limit)
            _IMAGE_CHECKS[key] = None
        except ImageError as exc:  # names the file and the reason
            _IMAGE_CHECKS[key] = ("corrupt_image", str(exc))
        except Exception as exc:  # e.g. MemoryError: still only this sample fails
            _IMAGE_CHECKS[key] = ("corrupt_image", f"cannot read image {path}: {type(exc).__name__}: {exc}")
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
    if config.data_root:  # baselines read the train split through the task: point it at the root too
        task = dataclasses.replace(task, dataset={**task.dataset, "root": config.data_root})
    model.prepare(task)
    identity = model.identity()
    cache = None
    if config.cache_path is None or config.cache_path:
        cache = ResponseCache(config.cache_path or cache_dir() / "responses.sqlite")
    out_dir = Path(config.output_dir) / model.name
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = task.name
    if config.shard is not None:
        index, count = config.shard
        if not 0 <= index < count:
            raise ValueError(f"--shard {index}/{count}: the shard index must be in 0..{count - 1}")
        stem = f"{task.name}{shard_suffix(index, count)}"
    log_path = out_dir / f"{stem}.samples.jsonl"
    # per-process names: two runs of the same model and task at once never write into one file;
    # the last to finish renames its complete log into place (atomic, like the result file)
    partial = log_path.with_name(f"{log_path.name}.partial-{_process_tag()}")
    _remove_stale_partials(log_path)
    scorer = Scorer(task)
    samples: Iterable[tuple[int, Sample]] = enumerate(
        task.samples(split=config.split, data_root=config.data_root)
    )
    if config.limit is not None:
        samples = islice(samples, config.limit)
    if config.shard is not None:
        samples = ((i, s) for i, s in samples if i % config.shard[1] == config.shard[0])
    header = {
        "header": {
            "log_schema": LOG_SCHEMA_VERSION,
            "task": task.name,
            "task_hash": task.task_hash,
            "model": model.name,
            "model_identity": identity,
            "spec": spec or model.name,
            "shard": list(config.shard) if config.shard else None,
            "data_root": config.data_root,
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
    finished = partial.with_name(f"{log_path.name}.done-{_process_tag()}")
    finish_log(scorer, partial, finished)  # corpus metrics, then the final log
    os.replace(finished, log_path)
    model_info = {
        "name": model.name,
        "spec": spec or model.name,
        "config": model.config(),
        "identity": identity,
    }
    summary = {
        "n": stats.samples,
        "parse_failures": sum(stats.errors[k] for k in PARSE_FAILURE_KINDS),
        "errors": {kind: stats.errors[kind] for kind in ERROR_KINDS},
        "metrics": scorer.aggregate(config.n_bootstrap, config.seed),
    }
    result = build_result(task, model_info, summary, config, log_path.name)
    write_result(out_dir / f"{stem}.json", result)
    stats.seconds = time.perf_counter() - started
    return result, stats


def _process_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _remove_stale_partials(log_path: Path) -> None:
    """Delete partial logs left by killed runs of this host (their process no longer exists)."""
    host = socket.gethostname()
    for stale in log_path.parent.glob(f"{glob.escape(log_path.name)}.*-{glob.escape(host)}-*"):
        kind, _, pid = stale.name[len(log_path.name) + 1 :].rpartition("-")
        if not pid.isdigit() or kind not in (f"partial-{host}", f"done-{host}"):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except OSError:
            pass  # a live process of another user


def shard_suffix(index: int, count: int) -> str:
    return f".shard{index}of{count}"


def build_result(
    task: Task, model_info: dict[str, Any], summary: dict[str, Any], config: RunConfig, log_name: str
) -> dict[str, Any]:
    """The schema-versioned result record of one (model, task) run."""
    return {
        "schema_version": RESULT_SCHEMA_VERSION,
        "task": {
            "name": task.name,
            "family": task.family,
            "hash": task.task_hash,
            "split": task.split(config.split),
            "data": task.data_identity(config.data_root),
            "config": task.config,
        },
        "model": model_info,
        "n": summary["n"],
        "parse_failures": summary["parse_failures"],
        "errors": summary["errors"],
        "primary_metric": task.primary_metric,
        "leaderboard_metrics": task.config.get("leaderboard_metrics", [task.primary_metric]),
        "metrics": summary["metrics"],
        "seed": config.seed,
        "n_bootstrap": config.n_bootstrap,
        "limit": config.limit,
        "batch_size_invariant": True,
        "shard": list(config.shard) if config.shard else None,
        "log": log_name,
        "versions": package_versions(),
        "date": now_iso(),
    }


def _reasoning_lengths(text: str) -> dict[str, int]:
    """Whitespace-token counts of the think and answer parts, for outputs with think tags."""
    if "<think" not in text.lower():
        return {}
    from cxbench.parsing import split_reasoning

    reasoning = split_reasoning(text)
    answers = " ".join(answer for _, answer in reasoning.steps) or (reasoning.final_answer or "")
    return {"think_tokens": len(reasoning.think_text.split()), "answer_tokens": len(answers.split())}


def _run_batch(task, model, identity, indexed_batch, cache, scorer, log, stats) -> None:
    positions = [i for i, _ in indexed_batch]
    batch = [sample for _, sample in indexed_batch]
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
                    "index": positions[i],
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
                    **_reasoning_lengths(outcome["text"]),
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
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{log_path}:{line_no}: not valid JSON ({exc.msg}); the log is damaged or truncated"
                ) from None
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
        metric = next(m for m in scorer.corpus_metrics if m.name == name)
        for row, stats_row in zip(rows, matrix, strict=True):
            row["stats"][name] = stats_row.tolist()
            row["scores"][name] = metric.sample_value(stats_row) if metric.sample_value else None
    summary = {
        "n": len(rows),
        "parse_failures": sum(errors[k] for k in PARSE_FAILURE_KINDS),
        "errors": {kind: errors[kind] for kind in ERROR_KINDS},
        "metrics": scorer.aggregate(n_bootstrap, seed),
    }
    return summary, rows


def merge_shards(task: Task, run_dir: str | Path) -> dict[str, Any]:
    """Join ``TASK.shardIofN`` logs of one model into the log and result of a single run.

    Rows are put back in the task's sample order, so the merged log, metrics and CIs are
    identical to an unsharded run's. Checks that every shard is there and that all shards
    ran the same task definition and model identity.
    """
    run_dir = Path(run_dir)
    logs = sorted(run_dir.glob(f"{task.name}.shard*of*.samples.jsonl"))
    if not logs:
        raise ValueError(f"no shard logs {task.name}.shard*of*.samples.jsonl in {run_dir}")
    headers, rows = {}, []
    for log in logs:
        with log.open(encoding="utf-8") as handle:
            header = json.loads(handle.readline()).get("header") or {}
            shard = tuple(header.get("shard") or ())
            if len(shard) != 2:
                raise ValueError(f"{log}: not a shard log (no shard in its header)")
            headers[shard] = (log, header)
            rows.extend(json.loads(line) for line in handle if line.strip())
    counts = {count for _, count in headers}
    if len(counts) != 1:
        raise ValueError(f"shard logs of different shard counts in {run_dir}: {sorted(headers)}")
    count = counts.pop()
    missing = sorted(set(range(count)) - {index for index, _ in headers})
    if missing:
        raise ValueError(f"{task.name}: shard(s) {missing} of {count} missing in {run_dir}")
    first_log, first = headers[(0, count)]
    for log, header in headers.values():
        for key in ("task_hash", "model_identity"):
            if header.get(key) != first.get(key):
                raise ValueError(f"{log}: {key} differs from {first_log}; shards must be one run")
    rows.sort(key=lambda row: row["index"])
    merged_log = run_dir / f"{task.name}.samples.jsonl"
    header = {**first, "shard": None, "merged_from": [str(log.name) for log, _ in sorted(headers.values())]}
    tmp = merged_log.with_name(merged_log.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"header": header}) + "\n")
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    shard_result = json.loads((run_dir / f"{task.name}{shard_suffix(0, count)}.json").read_text())
    config = RunConfig(
        seed=shard_result["seed"],
        n_bootstrap=shard_result["n_bootstrap"],
        limit=shard_result.get("limit"),
        split=shard_result["task"]["split"],
        data_root=first.get("data_root"),
    )
    summary, rescored = rescore_log(task, tmp, n_bootstrap=config.n_bootstrap, seed=config.seed)
    with tmp.open("w", encoding="utf-8") as out:  # the log with corpus-metric values filled in
        out.write(json.dumps({"header": header}) + "\n")
        for row in rescored:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(merged_log)
    result = build_result(task, shard_result["model"], summary, config, merged_log.name)
    write_result(run_dir / f"{task.name}.json", result)
    return result
