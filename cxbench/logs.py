"""Reading cxbench per-sample logs (``*.samples.jsonl``): one header line, then a row per sample."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def iter_log(
    path: str | Path, error: type[Exception] = ValueError
) -> Iterator[tuple[dict[str, Any], int, dict]]:
    """Yield ``(header, line_no, row)`` for every sample row, validating as it goes.

    Raises ``error`` naming the file (and line) for a missing file, invalid JSON, a missing
    header or task, a row without a ``sample_id``, a sample id seen twice, or an empty log.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such log file")
    header: dict[str, Any] | None = None
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if header is None:
                if not isinstance(record, dict) or not isinstance(record.get("header"), dict):
                    raise error(f"{path}: not a cxbench per-sample log (no header on line 1)")
                header = record["header"]
                if not header.get("task"):
                    raise error(f"{path}: log header names no task")
                continue
            if not isinstance(record, dict) or "sample_id" not in record:
                raise error(f"{path}:{line_no}: log row without a sample_id")
            sample_id = str(record["sample_id"])
            if sample_id in seen:
                raise error(f"{path}:{line_no}: sample id {sample_id!r} appears twice")
            seen.add(sample_id)
            yield header, line_no, record
    if header is None:
        raise error(f"{path}: empty log")


def read_header(path: str | Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The header of a log (validated like ``iter_log``), even when the log has no rows."""
    for header, _, _ in iter_log(path, error):
        return header
    with Path(path).open(encoding="utf-8") as handle:
        return json.loads(handle.readline())["header"]
