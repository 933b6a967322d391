"""Local labelled sets in the style of Rui-CXR: one CSV or JSONL file listing images.

``ROOT`` (``--data-root`` or ``dataset.root``) is the file itself. Fields of each row:

- ``image`` (required): image path relative to the file's folder (absolute paths are allowed
  if they stay inside that folder; paths leaving it, also through symlinks, are refused);
- ``label``: one of the 14 diseases of :data:`cxbench.labels.DISEASES_14`, case-insensitive,
  synonyms of :data:`cxbench.labels.DISEASE_SYNONYMS` and NIH spellings (``Effusion``,
  ``Pleural_Thickening``) accepted; required for ``diagnosis_recall1``;
- ``report`` (optional): the reference findings text; rows that have one make the
  ``report_generation`` family;
- ``split`` (optional, default ``test``).

Every error names the file and the row (row 1 = the first row after a CSV's header, or the
first line of a JSONL file). Missing image files are not errors here: the sample is still
produced and the runner records ``missing_image``; ``cxbench data check local_csv FILE`` lists them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError
from cxbench.labels import DISEASE_SYNONYMS, DISEASES_14
from cxbench.schema import Sample

FAMILIES = ("diagnosis_recall1", "report_generation")
DEFAULT_SPLIT = "test"


def _key(text: str) -> str:
    return " ".join(text.strip().lower().replace("_", " ").replace("-", " ").split())


_LABELS: dict[str, str] = {
    _key(synonym): disease
    for disease in DISEASES_14
    for synonym in (disease, *DISEASE_SYNONYMS.get(disease, ()))
}


def canonical_label(text: str) -> str | None:
    """The DISEASES_14 name for a label or one of its synonyms (case-insensitive), else None."""
    return _LABELS.get(_key(text))


@dataclass
class Row:
    number: int
    image: str  # resolved absolute path
    label: str | None
    report: str | None
    split: str
    where: str  # "file, row N"


def _raw_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(row number, row dict) pairs, or (row number, error message) for unreadable rows."""
    from cxbench.data.validate import MAX_FIELD_CHARS, decoded_lines

    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for number, line in enumerate(decoded_lines(path, lambda n: f"{path}, row {n}"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"not valid JSON ({exc.msg})"
                continue
            yield number, row if isinstance(row, dict) else "not a JSON object"
        return
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (expected a header with an 'image' column)")
    # physical lines are decoded one by one, so a non-UTF-8 byte is reported with its line
    lines = decoded_lines(path, lambda n: f"{path}, line {n}")
    csv.field_size_limit(MAX_FIELD_CHARS)  # the same limit whatever another module set before
    reader = csv.DictReader(lines)
    number = 0
    try:
        if not reader.fieldnames or "image" not in [f.strip() for f in reader.fieldnames]:
            raise DataError(f"{path}: no 'image' column (columns: {reader.fieldnames})")
        for number, row in enumerate(reader, 1):
            if None in row:
                yield number, f"more values than columns: {row[None]}"  # type: ignore[index]
                continue
            yield number, {k.strip(): v for k, v in row.items() if k is not None}
    except csv.Error as exc:
        raise DataError(f"{path}, row {number + 1}: unreadable CSV ({exc})") from None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _parse_row(path: Path, folder: Path, number: int, row: dict[str, Any]) -> Row:
    where = f"{path}, row {number}"
    image = _text(row.get("image"))
    if not image:
        raise DataError(f"{where}: empty 'image'")
    candidate = Path(image).expanduser()
    resolved = (candidate if candidate.is_absolute() else folder / candidate).resolve()
    if resolved != folder and not resolved.is_relative_to(folder):
        raise DataError(f"{where}: image path {image!r} leaves the data folder {folder} (refused)")
    label = _text(row.get("label")) or None
    if label is not None:
        canonical = canonical_label(label)
        if canonical is None:
            raise DataError(f"{where}: unknown label {label!r}; expected one of {', '.join(DISEASES_14)}")
        label = canonical
    split = _text(row.get("split")) or DEFAULT_SPLIT
    return Row(number, str(resolved), label, _text(row.get("report")) or None, split, where)


def scan(root: str | os.PathLike[str]) -> tuple[Path, list[Row], list[str]]:
    """Every readable row of the file, and one message (file, row, reason) per bad row."""
    path = Path(root).expanduser() if str(root) else Path("")
    if not str(root) or not path.is_file():
        raise DataError(f"local_csv: file not found: {path} (pass --data-root FILE.csv or FILE.jsonl)")
    folder = path.absolute().parent.resolve()
    rows: list[Row] = []
    problems: list[str] = []
    for number, row in _raw_rows(path):
        if isinstance(row, str):
            problems.append(f"{path}, row {number}: {row}")
            continue
        try:
            rows.append(_parse_row(path, folder, number, row))
        except DataError as exc:
            problems.append(str(exc))
    if not rows and not problems:
        problems.append(f"{path}: no rows")
    return path, rows, problems


def build_samples(path: Path, rows: list[Row], family: str, split: str) -> Iterator[Sample]:
    if family not in FAMILIES:
        raise DataError(f"local_csv provides the families {', '.join(FAMILIES)}, not {family!r}")
    for row in rows:
        if row.split != split:
            continue
        meta = {"dataset": path.stem, "split": split, "row": row.number}
        if family == "diagnosis_recall1":
            if row.label is None:
                raise DataError(f"{row.where}: no 'label' (needed for diagnosis_recall1)")
            yield Sample(
                id=f"{path.stem}:{row.number}:dx",
                images=[row.image],
                question="What is the most likely diagnosis for this chest X-ray?",
                target=row.label,
                query={"kind": "diagnosis"},
                metadata=meta,
            )
        elif row.report:
            yield Sample(
                id=f"{path.stem}:{row.number}:report",
                images=[row.image],
                question="Write the findings section of the radiology report for this chest X-ray.",
                target=row.report,
                query={"kind": "findings"},
                metadata={**meta, **({"label": row.label} if row.label else {})},
            )


class LocalCSVAdapter:
    """A local CSV/JSONL of images with a disease label and optional report (``params['root']``)."""

    name = "local_csv"

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        if family not in FAMILIES:
            raise DataError(f"local_csv provides the families {', '.join(FAMILIES)}, not {family!r}")
        path, rows, problems = scan(params.get("root") or params.get("path") or "")
        if problems:
            raise DataError(
                problems[0] + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else "")
            )
        if family == "report_generation" and not any(r.report for r in rows):
            raise DataError(f"{path}: no row has a 'report', so there is no report_generation family")
        yield from build_samples(path, rows, family, split)

    def identity(self, params: dict[str, Any]) -> str:
        path = Path(params.get("root") or params.get("path") or "")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"
        return f"local_csv-{path.name}-{digest}"
