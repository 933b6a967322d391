"""Checks shared by the file-based adapters: text decoding, paths confined to a folder, boxes.

Every error is a :class:`~cxbench.data.adapters.DataError` whose message starts with the file
and the line or row, so a bad data file never surfaces as a deep traceback.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError

log = logging.getLogger(__name__)

#: the largest CSV field accepted (Python's default of 128 KiB is smaller than some reports)
MAX_FIELD_CHARS = 16 * 1024 * 1024


def decoded_lines(path: Path, where: Callable[[int], str] | None = None) -> Iterator[str]:
    """The file's lines (line endings kept), decoded as UTF-8 one line at a time.

    A byte-order mark at the start is dropped; CRLF is left to the caller (``json`` and ``csv``
    both accept it). A line that is not UTF-8 raises ``DataError`` naming the file and line
    (``where(line_number)``, default ``"FILE:N"``) and the byte offset within the line.
    """
    where = where or (lambda number: f"{path}:{number}")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{where(number)}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at position "
                    f"{exc.start} of the line); re-save the file as UTF-8"
                ) from None


def confined(image: str, folder: Path, where: str) -> str:
    """``image`` (relative to ``folder``, or absolute) resolved; refused if it leaves ``folder``.

    Symlinks are resolved first, so a link inside the folder pointing outside is refused too.
    """
    candidate = Path(image).expanduser()
    resolved = (candidate if candidate.is_absolute() else folder / candidate).resolve()
    if resolved != folder and not resolved.is_relative_to(folder):
        raise DataError(f"{where}: image path {image!r} leaves the data folder {folder} (refused)")
    return str(resolved)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_boxes(target: Any, where: str, tolerance: float = 1e-6) -> list[list[float]]:
    """A localization target as a list of ``[x1, y1, x2, y2]`` boxes normalised to [0, 1].

    Accepts one box or a list of boxes. Refuses (``DataError``) anything else: non-numbers,
    NaN or infinity, coordinates outside the image (beyond ``tolerance``), empty boxes
    (``x2 <= x1`` or ``y2 <= y1``), and an empty list.
    """
    boxes = (
        [target] if isinstance(target, list) and len(target) == 4 and all(map(_is_number, target)) else target
    )
    if not isinstance(boxes, list) or not boxes:
        raise DataError(
            f"{where}: target must be a box [x1, y1, x2, y2] or a list of boxes, got {target!r:.80}"
        )
    checked = []
    for box in boxes:
        if not isinstance(box, list) or len(box) != 4 or not all(map(_is_number, box)):
            raise DataError(f"{where}: box {box!r:.80} is not four numbers [x1, y1, x2, y2]")
        if not all(math.isfinite(v) for v in box):
            raise DataError(f"{where}: box {box!r:.80} has a NaN or infinite coordinate")
        if min(box) < -tolerance or max(box) > 1 + tolerance:
            raise DataError(
                f"{where}: box {box!r:.80} lies outside the image (boxes are normalised to [0, 1])"
            )
        x1, y1, x2, y2 = (min(max(float(v), 0.0), 1.0) for v in box)
        if not (x2 > x1 and y2 > y1):
            raise DataError(f"{where}: box {box!r:.80} is empty (needs x1 < x2 and y1 < y2)")
        checked.append([x1, y1, x2, y2])
    return checked


def check_row(row: Any, where: str, folder: Path, family: str) -> tuple[str, list[str]]:
    """Validate one JSONL Sample row; returns its id (as text) and its confined image paths."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    missing = {"id", "images", "question", "target"} - set(row)
    if missing:
        raise DataError(f"{where}: missing field(s) {sorted(missing)}")
    sample_id = row["id"]
    if isinstance(sample_id, bool) or not isinstance(sample_id, (str, int)) or str(sample_id).strip() == "":
        raise DataError(f"{where}: 'id' must be a non-empty string or integer, got {sample_id!r:.80}")
    images = row["images"]
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise DataError(f"{where}: 'images' must be a list of file paths, got {images!r:.80}")
    if not isinstance(row["question"], str):
        raise DataError(f"{where}: 'question' must be text, got {type(row['question']).__name__}")
    choices = row.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        raise DataError(f"{where}: 'choices' must be a list of strings, got {choices!r:.80}")
    for key in ("query", "metadata"):
        if row.get(key) is not None and not isinstance(row[key], dict):
            raise DataError(f"{where}: '{key}' must be a JSON object, got {type(row[key]).__name__}")
    if row["target"] is None:
        raise DataError(f"{where}: 'target' is null")
    if family == "localization":
        row["target"] = check_boxes(row["target"], where)
    return str(sample_id), [confined(p, folder, where) for p in images]


def warn_skipped(dataset: str, count: int, first: str, root: Any) -> None:
    """The one warning for the rows an adapter skipped: how many, the first, and the command that
    lists them all (shown once per process, see ``cxbench.data.adapters``)."""
    log.warning(
        "%s: skipped %d malformed row(s), first: %s (run `cxbench data check %s %s` for all)",
        dataset,
        count,
        first,
        dataset,
        root,
    )
