"""Scoring: per-sample metric statistics as samples stream by, corpus metrics at the end.

Per-sample metrics (``Metric.stats``) are computed as each batch finishes. Corpus metrics
(``Metric.corpus_stats``: Java tools, model-based scorers, document frequencies) run once
over all parsed answers after the last batch; their per-sample values are then written
into the log. A corpus metric that cannot run (e.g. missing weights) is reported as
unavailable in the result, with its message, and never costs the run's finished work.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cxbench import metrics as metric_registry
from cxbench.metrics.base import Metric, MetricContext, Output
from cxbench.schema import Sample
from cxbench.stats import bootstrap_ci
from cxbench.tasks import Task

_WARNED: set[str] = set()


def _warn_unavailable(name: str, exc: Exception) -> None:
    """Print why a metric is unavailable, in full once per process, then briefly."""
    if name in _WARNED:
        print(f"cxbench: metric {name} unavailable (see above)", file=sys.stderr)
    else:
        _WARNED.add(name)
        print(f"cxbench: metric {name} unavailable: {exc}", file=sys.stderr)


class Scorer:
    """Accumulates the statistics of every metric of a task over a run."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.unavailable: dict[str, str] = {}
        self.metrics = []
        for name in task.metrics:
            try:
                self.metrics.append(metric_registry.get(name))
            except Exception as exc:  # e.g. SPICE without its jars: report it, score the rest
                self.unavailable[name] = f"{type(exc).__name__}: {exc}"
                _warn_unavailable(name, exc)
        args = task.config.get("metric_args") or {}
        self.ctx = {
            m.name: MetricContext(labels=task.labels, options=dict(args.get(m.name, {})))
            for m in self.metrics
        }
        # compact 8-byte floats: the only per-sample state kept in memory during a run
        self.rows: dict[str, array] = {m.name: array("d") for m in self.metrics}
        self.width: dict[str, int] = {}
        self.corpus_values: dict[str, float] = {}

    @property
    def corpus_metrics(self) -> list[Metric]:
        return [m for m in self.metrics if m.corpus_stats is not None]

    def _store(self, metric: Metric, row: list[float], sample_id: str) -> None:
        if self.width.setdefault(metric.name, len(row)) != len(row):
            raise ValueError(f"metric {metric.name!r} returned {len(row)} stats for sample {sample_id!r}")
        self.rows[metric.name].extend(row)

    def score(
        self, sample: Any, parsed: Any, raw: str = ""
    ) -> tuple[dict[str, list[float]], dict[str, float | None]]:
        """Per-sample metrics of one sample: (stats by metric, display value by metric)."""
        stats, values = {}, {}
        for metric in self.metrics:
            if metric.corpus_stats is not None:
                continue
            prediction = Output(raw, parsed, sample) if metric.inputs == "output" else parsed
            try:
                row = [float(v) for v in metric.stats(prediction, sample.target, self.ctx[metric.name])]
            except Exception as exc:
                raise ValueError(
                    f"task {self.task.name!r}, sample {sample.id!r}: metric {metric.name!r} failed "
                    f"on target {sample.target!r}: {exc}"
                ) from exc
            self._store(metric, row, sample.id)
            stats[metric.name] = row
            values[metric.name] = metric.sample_value(np.asarray(row)) if metric.sample_value else None
        return stats, values

    def score_corpus(
        self, predictions: list[Any], references: list[Any], outputs: list[Output] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the corpus metrics; returns each one's (n, k) matrix (unavailable ones are skipped)."""
        matrices = {}
        for metric in self.corpus_metrics:
            inputs = outputs if metric.inputs == "output" and outputs is not None else predictions
            try:
                ctx = self.ctx[metric.name]
                matrix, value = metric_registry.corpus_matrix(metric, inputs, references, ctx)
            except Exception as exc:  # a missing model or tool must not lose the run
                self.unavailable[metric.name] = f"{type(exc).__name__}: {exc}"
                _warn_unavailable(metric.name, exc)
                continue
            for i, row in enumerate(matrix):
                self._store(metric, row.tolist(), str(i))
            self.corpus_values[metric.name] = value
            matrices[metric.name] = matrix
        return matrices

    def aggregate(self, n_bootstrap: int, seed: int) -> dict[str, Any]:
        """Metric values with 95% bootstrap CIs and metadata, for the result file."""
        out: dict[str, Any] = {
            name: {"value": None, "ci95": None, "unavailable": reason}
            for name, reason in self.unavailable.items()
            if name not in self.rows
        }
        for metric in self.metrics:
            info = {k: v for k, v in metric.info().items() if k != "name"}
            if metric.name in self.unavailable:
                out[metric.name] = {
                    "value": None,
                    "ci95": None,
                    "unavailable": self.unavailable[metric.name],
                    **info,
                }
                continue
            width = self.width.get(metric.name, 1)
            matrix = np.frombuffer(self.rows[metric.name], dtype=float).reshape(-1, width)
            value = self.corpus_values.get(metric.name)
            if value is None:
                value = metric.reduce(matrix) if len(matrix) else float("nan")
            low, high = bootstrap_ci(matrix, metric.reduce, n_boot=n_bootstrap, seed=seed)
            out[metric.name] = {"value": round(value, 6), "ci95": [round(low, 6), round(high, 6)], **info}
            if metric.breakdown is not None and len(matrix):
                parts = metric.breakdown(matrix)
                labels = self.ctx[metric.name].labels
                out[metric.name]["breakdown"] = {
                    # integer class keys name the task's labels
                    (labels[int(k)] if k.isdigit() and int(k) < len(labels) else k): (
                        None if v != v else round(v, 6)  # NaN (undefined) -> null
                    )
                    for k, v in parts.items()
                }
        return out


def _log_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if "header" not in record:
                yield record


def finish_log(scorer: Scorer, partial: Path, final: Path) -> None:
    """Score corpus metrics from a finished partial log and write the final log with their values."""
    if scorer.corpus_metrics:
        predictions, references, outputs = [], [], []
        needs_outputs = any(m.inputs == "output" for m in scorer.corpus_metrics)
        for row in _log_rows(partial):
            predictions.append(row["parsed"])
            references.append(row["sample"]["target"])
            if needs_outputs:
                outputs.append(Output(row["raw_output"], row["parsed"], Sample(**row["sample"])))
        matrices = scorer.score_corpus(predictions, references, outputs if needs_outputs else None)
        by_name = {m.name: m for m in scorer.corpus_metrics}
        tmp = final.with_name(final.name + ".tmp")
        with partial.open(encoding="utf-8") as source, tmp.open("w", encoding="utf-8") as target:
            index = 0
            for line in source:
                record = json.loads(line)
                if "header" not in record:
                    for name, matrix in matrices.items():
                        row = matrix[index]
                        sample_value = by_name[name].sample_value
                        record["stats"][name] = row.tolist()
                        record["scores"][name] = sample_value(row) if sample_value else None
                    index += 1
                target.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(final)
        partial.unlink()
    else:
        partial.replace(final)
