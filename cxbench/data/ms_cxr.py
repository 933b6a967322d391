"""MS-CXR (Boecking et al., ECCV 2022): phrase grounding, phrase -> box(es), on MIMIC-CXR-JPG images.

``ROOT`` (``--data-root`` or ``dataset.root``) holds the PhysioNet MS-CXR annotation CSV and
the MIMIC-CXR-JPG images it points to::

    ROOT/MS_CXR_Local_Alignment_v1.1.0.csv   (or v1.0.0; also found in ROOT/ms-cxr/)
    ROOT/files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg   (MIMIC-CXR-JPG layout)

``dataset.images_root`` may point to the MIMIC-CXR-JPG folder elsewhere (the folder holding
``files/``); ``dataset.annotations`` to the CSV itself.

Columns read (as released): ``dicom_id, category_name, label_text, path, x, y, w, h,
image_width, image_height`` and, from v1.1.0, ``split`` (train / val / test). ``path`` is
relative to the MIMIC-CXR-JPG root (``files/p1X/...jpg``); a path that leaves the image root
(``..``, absolute, or through a symlink) is refused as malformed. Boxes are ``x, y, w, h``
pixels of the JPG, whose size the CSV gives (``image_width``, ``image_height``): no image file
is opened. The JSON (COCO-style) release of MS-CXR is not read.

Splits: the CSV's ``split`` column when present. Without it (v1.0.0), cxbench assigns whole
patients (``pXXXXXXXX`` in ``path``) by ``sha256(patient)``: the lowest 70% of the hash range
to ``train``, the next 10% to ``val``, the rest to ``test``.

Family ``localization``: one sample per image and phrase (``dicom_id``, ``label_text``), with
all the boxes of that phrase as the target; the question quotes the phrase and
``query["phrase"]`` holds it for prompt templates; ``query["finding"]`` is the
``category_name`` (e.g. ``Pneumonia``), which the ``prior`` baseline keys its mean box on.

Malformed rows (missing or non-numeric box or size, a box outside the image, a path leaving
the root, an unknown split) are skipped with a warning and listed by ``cxbench data check
ms_cxr ROOT`` with file and row (``dataset.strict: true`` fails instead). Missing image files
still give samples (the runner records ``missing_image``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError
from cxbench.data.validate import warn_skipped
from cxbench.data.vindr import Problems, csv_rows, file_digest, folder_fingerprint, normalise_box, numbers
from cxbench.schema import Sample

NAME = "ms_cxr"
FAMILIES = ("localization",)
SPLITS = ("train", "val", "test")
COLUMNS = (
    "dicom_id",
    "category_name",
    "label_text",
    "path",
    "x",
    "y",
    "w",
    "h",
    "image_width",
    "image_height",
)
CSV_PATTERN = "MS_CXR_Local_Alignment_v*.csv"
_PATIENT_RE = re.compile(r"(?:^|/)(p\d{6,10})(?:/|$)")


def split_of_patient(patient: str) -> str:
    value = int(hashlib.sha256(patient.encode()).hexdigest()[:8], 16) / 16**8
    return "train" if value < 0.7 else "val" if value < 0.8 else "test"


@dataclass
class Phrase:
    dicom_id: str
    category: str
    text: str
    image: str  # resolved path under the image root
    size: tuple[float, float]
    split: str
    boxes: list[list[float]]  # normalised
    pixels: list[list[float]]  # x, y, w, h
    where: str


@dataclass
class MSCXRData:
    root: Path
    csv_file: Path
    images_root: Path
    phrases: list[Phrase]
    has_split_column: bool
    problems: Problems = field(default_factory=Problems)


def find_csv(root: Path) -> Path:
    for folder in (root, root / "ms-cxr", root / "ms_cxr", root / "MS-CXR"):
        found = sorted(folder.glob(CSV_PATTERN)) if folder.is_dir() else []
        if found:
            return found[-1]  # the newest version
    raise DataError(f"{NAME}: no {CSV_PATTERN} in {root} (or its ms-cxr/ folder); set dataset.annotations")


def _inside(path_text: str, images_root: Path) -> Path | None:
    candidate = Path(path_text)
    if not path_text or candidate.is_absolute():
        return None
    resolved = (images_root / candidate).resolve()
    return resolved if resolved.is_relative_to(images_root) else None


def _read(csv_file: Path, images_root: Path, problems: Problems) -> tuple[list[Phrase], bool]:
    phrases: dict[tuple[str, str], Phrase] = {}
    has_split = False
    for number, row in csv_rows(csv_file, COLUMNS):
        where = f"{csv_file}, row {number}"
        has_split = has_split or "split" in row
        if not row["dicom_id"] or not row["label_text"] or not row["category_name"]:
            problems.add(f"{where}: empty dicom_id, category_name or label_text")
            continue
        image = _inside(row["path"], images_root)
        if image is None:
            problems.add(f"{where}: image path {row['path']!r} leaves the image root {images_root} (refused)")
            continue
        size = numbers(row, ("image_width", "image_height"))
        box = numbers(row, ("x", "y", "w", "h"))
        if size is None or size[0] <= 0 or size[1] <= 0:
            problems.add(f"{where}: image size {[row['image_width'], row['image_height']]} is not usable")
            continue
        if box is None:
            problems.add(
                f"{where}: box [x, y, w, h] = {[row[c] for c in 'xywh']} is missing, NaN or not numbers"
            )
            continue
        norm = normalise_box([box[0], box[1], box[0] + box[2], box[1] + box[3]], (size[0], size[1]))
        if norm is None:
            problems.add(
                f"{where}: box [x, y, w, h] = {box} is empty or outside the {size[0]:g} x {size[1]:g} image"
            )
            continue
        if "split" in row:
            split = row["split"].lower()
            if split not in SPLITS:
                problems.add(f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
                continue
        else:
            match = _PATIENT_RE.search(row["path"])
            split = split_of_patient(match.group(1) if match else row["dicom_id"])
        key = (row["dicom_id"], row["label_text"])
        phrase = phrases.get(key)
        if phrase is None:
            phrases[key] = Phrase(
                row["dicom_id"], row["category_name"], row["label_text"], str(image),
                (size[0], size[1]), split, [norm], [box], where,
            )  # fmt: skip
            continue
        if (phrase.category, phrase.image, phrase.size, phrase.split) != (
            row["category_name"], str(image), (size[0], size[1]), split
        ):  # fmt: skip
            problems.add(
                f"{where}: category, path, size or split differ from {phrase.where} (same image and phrase)"
            )
            continue
        phrase.boxes.append(norm)
        phrase.pixels.append(box)
    return list(phrases.values()), has_split


def load(
    root: str | os.PathLike[str], images_root: str | None = None, annotations: str | None = None
) -> MSCXRData:
    path = Path(root).expanduser() if str(root) else None
    if path is None or not path.is_dir():
        raise DataError(
            f"{NAME}: data folder not found: {root!s} (pass --data-root ROOT, the folder with "
            f"{CSV_PATTERN} and the MIMIC-CXR-JPG files/ tree)"
        )
    path = path.resolve()
    csv_file = Path(annotations).expanduser().resolve() if annotations else find_csv(path)
    if not csv_file.is_file():
        raise DataError(f"{NAME}: annotation file not found: {csv_file}")
    image_root = Path(images_root).expanduser().resolve() if images_root else path
    stat = csv_file.stat()
    return _load(path, csv_file, image_root, (stat.st_size, stat.st_mtime_ns, folder_fingerprint(path)))


@lru_cache(maxsize=4)
def _load(root: Path, csv_file: Path, images_root: Path, _key: tuple) -> MSCXRData:
    problems = Problems()
    phrases, has_split = _read(csv_file, images_root, problems)
    return MSCXRData(root, csv_file, images_root, phrases, has_split, problems)


def build_samples(data: MSCXRData, family: str, split: str) -> Iterator[Sample]:
    if family not in FAMILIES:
        raise DataError(f"{NAME} provides the families {', '.join(FAMILIES)}, not {family!r}")
    if split not in SPLITS:
        raise DataError(f"{NAME} has the splits {', '.join(SPLITS)}, not {split!r}")
    for phrase in data.phrases:
        if phrase.split != split:
            continue
        digest = hashlib.sha256(phrase.text.encode()).hexdigest()[:10]
        yield Sample(
            id=f"ms_cxr:{phrase.dicom_id}:{digest}",
            images=[phrase.image],
            question=f'Locate the region of this chest X-ray described by the phrase: "{phrase.text}"',
            target=phrase.boxes,
            query={"kind": "box", "finding": phrase.category, "phrase": phrase.text},
            metadata={
                "dataset": NAME,
                "split": split,
                "dicom_id": phrase.dicom_id,
                "category_name": phrase.category,
                "image_size": [int(phrase.size[0]), int(phrase.size[1])],
                "box_pixels": phrase.pixels,
            },
        )


class MSCXRAdapter:
    """MS-CXR phrase grounding from ROOT (``params['root']``)."""

    name = NAME

    def data(self, params: dict[str, Any]) -> MSCXRData:
        return load(params.get("root") or "", params.get("images_root"), params.get("annotations"))

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        data = self.data(params)
        if data.problems:
            if params.get("strict"):
                raise DataError(f"{NAME}: {data.problems.first()}")
            warn_skipped(NAME, len(data.problems), data.problems.first(), data.root)
        return build_samples(data, family, split)

    def identity(self, params: dict[str, Any]) -> str:
        data = self.data(params)
        return f"{NAME}-{file_digest([data.csv_file], str(data.images_root))}"

    def check(self, report: Any, root: str) -> None:
        from cxbench.data.check import tally

        data = load(root)
        report.notes.append(f"annotations: {data.csv_file}; images under {data.images_root}")
        if not data.has_split_column:
            report.notes.append("no split column (v1.0.0): splits assigned by sha256(patient), 70/10/20")
        seen: set[str] = set()
        for split in SPLITS:
            tally(report, split, "localization", build_samples(data, "localization", split), seen)
        report.malformed.extend(data.problems)
