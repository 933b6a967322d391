"""Run cxbench tasks in EleutherAI's lm-evaluation-harness and bring its outputs back.

``export_tasks`` writes, per cxbench task, an lm-eval task folder ``cxbench_<task>/``: the
task's samples as JSONL, a YAML and a ``utils.py`` that *imports* cxbench (the glue below),
so prompts, parsing and metrics are cxbench's own. Per-sample metrics return their stats
row from ``process_results`` and the aggregation calls the metric's ``reduce`` on the
stacked rows; corpus metrics (BLEU, ROUGE-L, METEOR, model-based scores) return the parsed
answer and aggregate with ``corpus_matrix`` over the whole run, exactly as cxbench does.

``import_samples`` reads lm-eval's ``--log_samples`` output, turns it into a cxbench
per-sample log, re-scores it with cxbench and writes a cxbench result file, so a model run
through lm-eval lands on cxbench leaderboards with cxbench's CIs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: text put before the prompt once per image for lm-eval's multimodal models (``hf-multimodal``
#: replaces it with the model's own image token); images come first, as in cxbench requests
IMAGE_PLACEHOLDER = "<image>"
_PREFIX = "cxbench_"


def lm_eval_task_name(task_name: str) -> str:
    return f"{_PREFIX}{task_name}"


# --------------------------------------------------------------------------------------
# the glue imported by the exported utils.py
# --------------------------------------------------------------------------------------


class TaskGlue:
    """lm-eval hooks (doc_to_text, process_results, aggregations) backed by a cxbench task."""

    def __init__(
        self,
        task_name: str,
        include_paths: Sequence[str] = (),
        task_hash: str | None = None,
        image_placeholder: str = IMAGE_PLACEHOLDER,
    ) -> None:
        self.task_name = task_name
        self.include_paths = list(include_paths)
        self.task_hash = task_hash
        self.image_placeholder = image_placeholder
        self._task = None
        self._scorer = None

    @property
    def task(self):
        if self._task is None:
            from cxbench.tasks import get_task

            self._task = get_task(self.task_name, self.include_paths)
            if self.task_hash and self._task.task_hash != self.task_hash:
                print(
                    f"cxbench: note: task {self.task_name!r} changed since it was exported "
                    f"({self.task_hash} -> {self._task.task_hash})",
                    file=sys.stderr,
                )
        return self._task

    @property
    def scorer(self):
        if self._scorer is None:
            from cxbench.scoring import Scorer

            self._scorer = Scorer(self.task)
        return self._scorer

    def metric(self, name: str):
        for metric in self.scorer.metrics:
            if metric.name == name:
                return metric
        raise KeyError(f"metric {name!r} is not available for task {self.task_name!r}")

    # -- documents ------------------------------------------------------------------
    @staticmethod
    def sample(doc: dict[str, Any]):
        from cxbench.schema import Sample

        return Sample(**doc_sample_dict(doc))

    def doc_to_text(self, doc: dict[str, Any]) -> str:
        sample = self.sample(doc)
        prompt = self.task.render_prompt(sample)
        if sample.images and self.image_placeholder:
            prompt = "".join(f"{self.image_placeholder}\n" for _ in sample.images) + prompt
        return prompt

    def doc_to_target(self, doc: dict[str, Any]) -> str:
        target = self.sample(doc).target
        return target if isinstance(target, str) else json.dumps(target)

    def doc_to_image(self, doc: dict[str, Any]) -> list:
        """PIL images of the sample, in cxbench order (prior first, then current)."""
        from cxbench.images import load_image

        return [load_image(path).convert("RGB") for path in self.sample(doc).images]

    # -- scoring --------------------------------------------------------------------
    def process_results(self, doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
        """Per metric: its stats row (per-sample metrics) or the parsed answer (corpus metrics)."""
        from cxbench.metrics.base import Output
        from cxbench.runner import score_row
        from cxbench.schema import Response

        sample = self.sample(doc)
        text = results[0] if results else ""
        if isinstance(text, (list, tuple)):
            text = text[0] if text else ""
        outcome = score_row(self.task, sample, Response(text=str(text or "")), None)
        out: dict[str, Any] = {}
        for metric in self.scorer.metrics:
            if metric.corpus_stats is not None:
                out[metric.name] = {
                    "parsed": outcome["parsed"],
                    "raw": outcome["text"],
                    "sample": sample.to_dict(),
                }
                continue
            ctx = self.scorer.ctx[metric.name]
            pred = Output(outcome["text"], outcome["parsed"], sample) if metric.inputs == "output" else None
            row = metric.stats(outcome["parsed"] if pred is None else pred, sample.target, ctx)
            out[metric.name] = [float(v) for v in row]
        return out

    def aggregate(self, name: str, items: Sequence[Any]) -> float:
        """The metric's value over all samples of the run, as cxbench computes it."""
        from cxbench import metrics as metric_registry
        from cxbench.metrics.base import Output
        from cxbench.schema import Sample

        metric = self.metric(name)
        if metric.corpus_stats is not None:
            preds = [item["parsed"] for item in items]
            refs = [item["sample"]["target"] for item in items]
            if metric.inputs == "output":
                preds = [Output(i["raw"], i["parsed"], Sample(**i["sample"])) for i in items]
            return metric_registry.corpus_matrix(metric, preds, refs, self.scorer.ctx[name])[1]
        if len(items) == 0:
            return float("nan")
        matrix = np.asarray([list(item) for item in items], dtype=float).reshape(len(items), -1)
        return float(metric.reduce(matrix))

    def aggregation(self, name: str):
        def aggregate(items: Sequence[Any]) -> float:
            return self.aggregate(name, items)

        aggregate.__name__ = f"agg_{name}"
        return aggregate


def doc_sample_dict(doc: dict[str, Any]) -> dict[str, Any]:
    """The cxbench Sample dict stored in an exported document (a JSON string, for Arrow)."""
    sample = doc["sample"]
    return json.loads(sample) if isinstance(sample, str) else dict(sample)


# --------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------

_UTILS = '''"""lm-eval hooks for cxbench task {task!r}; generated by `cxbench export lm-eval`.

Prompts, parsing and metrics come from the installed cxbench package (nothing is copied).
"""

from cxbench.interop.lm_eval import TaskGlue

GLUE = TaskGlue({task!r}, include_paths={include!r}, task_hash={task_hash!r})

doc_to_text = GLUE.doc_to_text
doc_to_target = GLUE.doc_to_target
doc_to_image = GLUE.doc_to_image
process_results = GLUE.process_results
{aggregations}
'''


def _q(value: Any) -> str:
    """A YAML scalar (JSON strings and numbers are valid YAML)."""
    return json.dumps(value)


def _task_yaml(task, data_file: Path, metrics: list) -> str:
    name = lm_eval_task_name(task.name)
    stop = task.generation.get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    lines = [
        f"# lm-eval task for cxbench task {task.name!r} (task hash {task.task_hash}); "
        "generated by `cxbench export lm-eval`",
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {_q(str(data_file))}",
        "test_split: test",
        "output_type: generate_until",
        "doc_to_text: !function utils.doc_to_text",
        "doc_to_target: !function utils.doc_to_target",
    ]
    if task.family != "text":
        lines.append("doc_to_image: !function utils.doc_to_image")
    lines += [
        "process_results: !function utils.process_results",
        "generation_kwargs:",
        f"  until: {_q(stop)}",
        f"  max_gen_toks: {int(task.generation.get('max_new_tokens', 256))}",
        "  do_sample: false",
        "  temperature: 0.0",
        "metric_list:",
    ]
    for metric in metrics:
        lines += [
            f"  - metric: {metric.name}",
            f"    aggregation: !function utils.agg_{metric.name}",
            f"    higher_is_better: {'true' if metric.direction == 'higher' else 'false'}",
        ]
    lines += ["metadata:", "  version: 1.0", f"  cxbench_task_hash: {_q(task.task_hash)}"]
    return "\n".join(lines) + "\n"


def export_tasks(
    outdir: str | Path,
    task_names: Iterable[str],
    include_paths: Sequence[str | Path] = (),
    split: str | None = None,
    data_root: str | None = None,
) -> list[Path]:
    """Write an lm-eval task folder ``outdir/cxbench_<task>/`` per task; returns the YAML paths."""
    from cxbench.scoring import Scorer
    from cxbench.tasks import get_task

    outdir = Path(outdir).resolve()
    include = [str(Path(p).resolve()) for p in include_paths]
    written = []
    for task_name in task_names:
        task = get_task(task_name, include)
        folder = outdir / lm_eval_task_name(task.name)
        folder.mkdir(parents=True, exist_ok=True)
        data_file = folder / f"{lm_eval_task_name(task.name)}.jsonl"
        with data_file.open("w", encoding="utf-8") as handle:
            for index, sample in enumerate(task.samples(split=split, data_root=data_root)):
                sample.images = [str(Path(p).resolve()) for p in sample.images]
                doc = {
                    "sample_id": sample.id,
                    "index": index,
                    "task": task.name,
                    "task_hash": task.task_hash,
                    "sample": json.dumps(sample.to_dict(), ensure_ascii=False),
                }
                handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
        metrics = Scorer(task).metrics  # unavailable metrics (e.g. SPICE without Java) are left out
        aggregations = "\n".join(f"agg_{m.name} = GLUE.aggregation({m.name!r})" for m in metrics)
        (folder / "utils.py").write_text(
            _UTILS.format(
                task=task.name, include=include, task_hash=task.task_hash, aggregations=aggregations
            ),
            encoding="utf-8",
        )
        yaml_path = folder / f"{lm_eval_task_name(task.name)}.yaml"
        yaml_path.write_text(_task_yaml(task, data_file, metrics), encoding="utf-8")
        written.append(yaml_path)
    return written


# --------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------


def find_samples_file(path: str | Path, task_name: str) -> Path:
    """The newest ``samples_cxbench_<task>_*.jsonl`` under ``path`` (or ``path`` itself)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such lm-eval output folder or samples file")
    pattern = f"samples_{lm_eval_task_name(task_name)}_*.jsonl"
    found = sorted(path.rglob(pattern), key=lambda p: (p.stat().st_mtime, p.name))
    if not found:
        raise FileNotFoundError(f"{path}: no {pattern} (run lm_eval with --log_samples)")
    return found[-1]


def _response_text(row: dict[str, Any]) -> str:
    for key in ("filtered_resps", "resps"):
        value = row.get(key)
        while isinstance(value, (list, tuple)):
            value = value[0] if value else ""
        if value is not None and key in row:
            return str(value)
    return ""


def _lm_eval_run_info(samples_file: Path, lm_task: str) -> dict[str, Any]:
    """Model arguments and sample counts from the ``results_*.json`` next to the samples, if any."""
    results = sorted(samples_file.parent.glob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not results:
        return {}
    try:
        data = json.loads(results[-1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    config = data.get("config") or {}
    return {
        "model": config.get("model"),
        "model_args": config.get("model_args"),
        "limit": config.get("limit"),
        "n_samples": (data.get("n-samples") or {}).get(lm_task),
        "lm_eval_version": data.get("lm_eval_version"),
        "lm_eval_metrics": (data.get("results") or {}).get(lm_task),
    }


def import_samples(
    lm_eval_dir_or_jsonl: str | Path,
    task_name: str,
    model_name: str | None = None,
    include_paths: Sequence[str | Path] = (),
    output_dir: str | Path = "results",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Turn lm-eval ``--log_samples`` output into a cxbench log and result; returns the result."""
    from cxbench.results import write_result
    from cxbench.runner import RunConfig, build_result, rescore_log
    from cxbench.tasks import get_task

    task = get_task(task_name, [str(p) for p in include_paths])
    samples_file = find_samples_file(lm_eval_dir_or_jsonl, task.name)
    rows_by_index: dict[int, dict[str, Any]] = {}
    with samples_file.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            doc = record.get("doc")
            if not isinstance(doc, dict) or "sample" not in doc:
                raise ValueError(f"{samples_file}:{line_no}: not a sample of an exported cxbench task")
            if doc.get("task") not in (None, task.name):
                raise ValueError(
                    f"{samples_file}:{line_no}: sample of task {doc.get('task')!r}, not {task.name!r}"
                )
            sample = doc_sample_dict(doc)
            index = int(doc.get("index", record.get("doc_id", line_no - 1)))
            rows_by_index[index] = {
                "sample_id": sample["id"],
                "index": index,
                "sample": sample,
                "prompt": (record.get("arguments") or {}).get("gen_args_0", {}).get("arg_0")
                if isinstance(record.get("arguments"), dict)
                else None,
                "raw_output": _response_text(record),
                "lm_eval_doc_id": record.get("doc_id"),
            }
    if not rows_by_index:
        raise ValueError(f"{samples_file}: no samples")
    hashes = {json.loads(line)["doc"].get("task_hash") for line in samples_file.open() if line.strip()}
    if hashes - {None, task.task_hash}:
        print(f"cxbench: note: task {task.name!r} changed since it was exported to lm-eval", file=sys.stderr)
    digest = hashlib.sha256(samples_file.read_bytes()).hexdigest()[:16]
    info = _lm_eval_run_info(samples_file, lm_eval_task_name(task.name))
    name = model_name or "lm-eval-import"
    identity = f"lm-eval:{info.get('model') or '?'}:{info.get('model_args') or ''}:{digest}"
    out_dir = Path(output_dir) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / f"{task.name}.samples.jsonl"
    header = {
        "header": {
            "log_schema": "1.0",
            "task": task.name,
            "task_hash": task.task_hash,
            "model": name,
            "model_identity": identity,
            "spec": "lm-eval",
            "shard": None,
            "data_root": None,
            "imported_from": str(samples_file.resolve()),
        }
    }
    from cxbench.schema import LOG_SCHEMA_VERSION

    header["header"]["log_schema"] = LOG_SCHEMA_VERSION
    tmp = log_path.with_name(log_path.name + ".tmp")
    ordered = [rows_by_index[i] for i in sorted(rows_by_index)]
    with tmp.open("w", encoding="utf-8") as out:
        out.write(json.dumps(header) + "\n")
        for row in ordered:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary, rescored = rescore_log(task, tmp, n_bootstrap=n_bootstrap, seed=seed)
    with tmp.open("w", encoding="utf-8") as out:
        out.write(json.dumps(header) + "\n")
        for row in rescored:
            row["error"] = None
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(log_path)
    limit = info.get("limit")
    config = RunConfig(
        seed=seed, n_bootstrap=n_bootstrap, limit=int(limit) if limit else None, output_dir=output_dir
    )
    model_info = {
        "name": name,
        "spec": "lm-eval",
        "config": {
            "source": str(samples_file.resolve()),
            "lm_eval_model": info.get("model"),
            "lm_eval_model_args": info.get("model_args"),
            "lm_eval_version": info.get("lm_eval_version"),
        },
        "identity": identity,
    }
    result = build_result(task, model_info, summary, config, log_path.name)
    if info.get("lm_eval_metrics"):
        result["lm_eval_metrics"] = info["lm_eval_metrics"]
    write_result(out_dir / f"{task.name}.json", result)
    return result


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def add_interop_arguments(subparsers: Any) -> None:
    """Add ``export lm-eval`` and ``import lm-eval`` to cxbench's subcommands (``add_subparsers()``)."""
    export = subparsers.add_parser("export", help="export cxbench tasks to another harness (lm-eval)")
    export.add_argument("format", choices=["lm-eval"], help="target harness")
    export.add_argument("outdir", help="folder for the lm-eval task folders (use as lm_eval --include_path)")
    export.add_argument(
        "--tasks", default=None, help="comma-separated cxbench tasks (default: the default suite)"
    )
    export.add_argument("--split", default=None, help="data split (default: each task's)")
    export.add_argument("--data-root", default=None, help="data folder override")
    export.add_argument(
        "--include-path", action="append", default=[], metavar="DIR", help="extra folder of task YAMLs"
    )
    imp = subparsers.add_parser("import", help="import another harness's outputs as a cxbench result")
    imp.add_argument("format", choices=["lm-eval"], help="source harness")
    imp.add_argument("results_dir", help="lm_eval --output_path folder, or one samples_*.jsonl file")
    imp.add_argument("--task", required=True, help="the cxbench task name (without the cxbench_ prefix)")
    imp.add_argument(
        "--model-name", default=None, help="model name in cxbench results (default lm-eval-import)"
    )
    imp.add_argument("--output", default="results", help="cxbench results folder")
    imp.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs")
    imp.add_argument("--seed", type=int, default=0)
    imp.add_argument(
        "--include-path", action="append", default=[], metavar="DIR", help="extra folder of task YAMLs"
    )


def cli_export(args: argparse.Namespace) -> int:
    if args.tasks:
        names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    else:
        from cxbench.cli import DEFAULT_TASKS

        names = list(DEFAULT_TASKS)
    paths = export_tasks(
        args.outdir,
        names,
        args.include_path,
        split=getattr(args, "split", None),
        data_root=getattr(args, "data_root", None),
    )
    for path in paths:
        print(f"wrote {path}")
    tasks = ",".join(p.parent.name for p in paths)
    print(f"run: lm_eval --include_path {Path(args.outdir).resolve()} --tasks {tasks} --log_samples ...")
    return 0


def cli_import(args: argparse.Namespace) -> int:
    task = args.task.removeprefix(_PREFIX)
    result = import_samples(
        args.results_dir,
        task,
        model_name=args.model_name,
        include_paths=args.include_path,
        output_dir=args.output,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
    )
    values = ", ".join(
        f"{k}={v['value']:.4f}" for k, v in result["metrics"].items() if v.get("value") is not None
    )
    out = Path(args.output) / result["model"]["name"] / f"{task}.json"
    print(f"{task} ({result['n']} samples): {values} -> {out}")
    return 0
