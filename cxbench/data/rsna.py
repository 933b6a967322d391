"""RSNA Pneumonia Detection Challenge (Kaggle, 2018), read in place: lung-opacity boxes.

``ROOT`` (``--data-root`` or ``dataset.root``) is the folder of the Kaggle download
(``rsna-pneumonia-detection-challenge``)::

    ROOT/stage_2_train_labels.csv          patientId, x, y, width, height, Target (one row per box;
                                           Target 0 rows have no box)
    ROOT/stage_2_detailed_class_info.csv   patientId, class (Lung Opacity / No Lung Opacity /
                                           Not Normal / Normal); optional, counted by ``check``
    ROOT/stage_2_train_images/<patientId>.dcm

If ``ROOT`` has no ``stage_2_train_labels.csv``, the copy shipped in torchxrayvision's data
folder (``kaggle_stage_2_train_labels.csv.zip``) is read in place; the images must still be
under ``ROOT``.

Splits: only the stage-2 *train* images have public labels, so cxbench splits them by patient
id, deterministically: a patient is in ``test`` when the first 8 hex digits of
``sha256(patientId)`` fall in the lowest ``test_fraction`` (default 0.2) of the range, else in
``train``. Each image is one patient, so no patient is in both.

Family ``localization``: one sample per image with ``Target`` 1, target = all its boxes
(x, y, width, height in pixels -> normalised ``[x1, y1, x2, y2]``). The image size is read
from the DICOM header (``Columns`` x ``Rows``; no pixel data) when the file is there; the
challenge's images are all 1024 x 1024, so a missing image falls back to ``dataset.image_size``
(default 1024) and its sample is still produced (the runner records ``missing_image``).

Rows with an unusable box (missing/NaN values while ``Target`` is 1, a box outside the image,
a box on a ``Target`` 0 row, a ``Target`` that is not 0/1, a patientId that is not a plain file
name) are malformed: skipped with a warning and listed by ``cxbench data check rsna_pneumonia
ROOT`` with file and row (``dataset.strict: true`` fails instead).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError
from cxbench.data.nih import packaged_data_dir
from cxbench.data.validate import warn_skipped
from cxbench.data.vindr import (
    Problems,
    csv_rows,
    dicom_size,
    file_digest,
    folder_fingerprint,
    is_plain_name,
    normalise_box,
    numbers,
)
from cxbench.schema import Sample

NAME = "rsna_pneumonia"
FAMILIES = ("localization",)
SPLITS = ("train", "test")
LABELS_FILE = "stage_2_train_labels.csv"
CLASS_FILE = "stage_2_detailed_class_info.csv"
IMAGE_FOLDER = "stage_2_train_images"
PACKAGED_LABELS = "kaggle_stage_2_train_labels.csv.zip"
LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_IMAGE_SIZE = 1024
FINDING = "pneumonia"


def split_of(patient: str, test_fraction: float = DEFAULT_TEST_FRACTION) -> str:
    """``test`` or ``train`` for a patient id (see the module docstring)."""
    value = int(hashlib.sha256(patient.encode()).hexdigest()[:8], 16) / 16**8
    return "test" if value < test_fraction else "train"


@dataclass
class Box:
    patient: str
    pixels: list[float]  # x, y, width, height
    where: str


@dataclass
class RSNAData:
    root: Path
    labels_file: Path
    class_file: Path | None
    patients: dict[str, str]  # patientId -> "file, row N" of its first row (every labelled image)
    boxes: dict[str, list[Box]]  # patientId -> boxes (Target 1 patients only)
    classes: dict[str, str]  # patientId -> detailed class
    images: dict[str, str]  # patientId -> DICOM path
    problems: Problems = field(default_factory=Problems)
    sizes: dict[str, tuple[tuple[int, int] | None, str | None]] = field(default_factory=dict)

    def image_path(self, patient: str) -> str:
        return self.images.get(patient) or str(self.root / IMAGE_FOLDER / f"{patient}.dcm")


def _read_labels(path: Path, problems: Problems) -> tuple[dict[str, str], dict[str, list[Box]]]:
    patients: dict[str, str] = {}
    boxes: dict[str, list[Box]] = {}
    targets: dict[str, str] = {}
    for number, row in csv_rows(path, LABEL_COLUMNS):
        where = f"{path}, row {number}"
        patient, target = row["patientId"], row["Target"]
        if not is_plain_name(patient):
            problems.add(f"{where}: patientId {patient!r} is not a plain file name (refused)")
            continue
        if target not in ("0", "1"):
            problems.add(f"{where}: Target {target!r} is not 0 or 1")
            continue
        if targets.setdefault(patient, target) != target:
            problems.add(
                f"{where}: Target {target} contradicts Target {targets[patient]} of {patients[patient]}"
            )
            continue
        patients.setdefault(patient, where)
        values = [row[c] for c in LABEL_COLUMNS[1:5]]
        if target == "0":
            if any(v and v.lower() != "nan" for v in values):
                problems.add(f"{where}: box values {values} on a Target 0 row")
            continue
        box = numbers(row, LABEL_COLUMNS[1:5])
        if box is None or box[2] <= 0 or box[3] <= 0 or box[0] < 0 or box[1] < 0:
            problems.add(f"{where}: box [x, y, width, height] = {values} is missing, NaN, empty or negative")
            continue
        boxes.setdefault(patient, []).append(Box(patient, box, where))
    return patients, boxes


def _read_classes(path: Path | None, problems: Problems) -> dict[str, str]:
    classes: dict[str, str] = {}
    if path is None:
        return classes
    for number, row in csv_rows(path, ("patientId", "class")):
        if not row["class"]:
            problems.add(f"{path}, row {number}: empty class")
            continue
        classes.setdefault(row["patientId"], row["class"])
    return classes


def _index(folder: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    if folder.is_dir():
        with os.scandir(folder) as listing:
            for item in listing:
                stem, suffix = os.path.splitext(item.name)
                if suffix.lower() in (".dcm", ".dicom") and item.is_file():
                    found.setdefault(stem, item.path)
    return found


def load(root: str | os.PathLike[str]) -> RSNAData:
    path = Path(root).expanduser()
    if not str(root) or not path.is_dir():
        raise DataError(
            f"{NAME}: data folder not found: {path!s} (pass --data-root ROOT, the folder of "
            f"{LABELS_FILE} and {IMAGE_FOLDER}/)"
        )
    path = path.resolve()
    return _load(path, folder_fingerprint(path))


@lru_cache(maxsize=4)
def _load(root: Path, _key: tuple) -> RSNAData:
    labels_file = root / LABELS_FILE
    if not labels_file.is_file():
        data_dir = packaged_data_dir()
        if data_dir is None or not (data_dir / PACKAGED_LABELS).is_file():
            raise DataError(f"{NAME}: {labels_file} not found (and torchxrayvision's copy was not found)")
        labels_file = data_dir / PACKAGED_LABELS
    class_file = root / CLASS_FILE if (root / CLASS_FILE).is_file() else None
    problems = Problems()
    patients, boxes = _read_labels(labels_file, problems)
    classes = _read_classes(class_file, problems)
    for patient, where in patients.items():
        cls = classes.get(patient)
        if cls is not None and (cls == "Lung Opacity") != (patient in boxes):
            problems.add(
                f"{where}: {CLASS_FILE} says {cls!r} but the labels give "
                f"{len(boxes.get(patient, []))} box(es)"
            )
    return RSNAData(
        root, labels_file, class_file, patients, boxes, classes, _index(root / IMAGE_FOLDER), problems
    )


def _settings(params: dict[str, Any]) -> tuple[float, int]:
    fraction = float(params.get("test_fraction", DEFAULT_TEST_FRACTION))
    size = int(params.get("image_size", DEFAULT_IMAGE_SIZE))
    if not 0.0 < fraction < 1.0 or size <= 0:
        raise DataError(f"{NAME}: test_fraction must be in (0, 1) and image_size > 0, not {fraction}, {size}")
    return fraction, size


def build_samples(
    data: RSNAData, family: str, split: str, test_fraction: float, default_size: int
) -> Iterator[Sample]:
    if family not in FAMILIES:
        raise DataError(f"{NAME} provides the families {', '.join(FAMILIES)}, not {family!r}")
    if split not in SPLITS:
        raise DataError(f"{NAME} has the splits {', '.join(SPLITS)}, not {split!r}")
    for patient, boxes in data.boxes.items():
        if split_of(patient, test_fraction) != split:
            continue
        path = data.image_path(patient)
        if path not in data.sizes:
            data.sizes[path] = dicom_size(path) if patient in data.images else (None, "missing")
        size, reason = data.sizes[path]
        if size is None and reason != "missing":
            data.problems.add(f"{data.patients[patient]}: {reason}")
            continue
        size = size or (default_size, default_size)
        targets, pixels = [], []
        for box in boxes:
            x, y, w, h = box.pixels
            norm = normalise_box([x, y, x + w, y + h], size)
            if norm is None:
                data.problems.add(
                    f"{box.where}: box [x, y, width, height] = {box.pixels} is outside the "
                    f"{size[0]} x {size[1]} image"
                )
                continue
            targets.append(norm)
            pixels.append(box.pixels)
        if not targets:
            continue
        yield Sample(
            id=f"rsna:{patient}",
            images=[path],
            question="Where are the lung opacities suggestive of pneumonia in this chest X-ray?",
            target=targets,
            query={"kind": "box", "finding": FINDING},
            metadata={
                "dataset": NAME,
                "split": split,
                "patient_id": patient,
                "detailed_class": data.classes.get(patient, ""),
                "image_size": list(size),
                "box_pixels": pixels,
            },
        )


class RSNAPneumoniaAdapter:
    """RSNA Pneumonia from ROOT (``params['root']``): localization / detection samples."""

    name = NAME

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        data = load(params.get("root") or "")
        fraction, size = _settings(params)
        if data.problems and params.get("strict"):
            raise DataError(f"{NAME}: {data.problems.first()}")
        before = len(data.problems)
        yield from build_samples(data, family, split, fraction, size)
        if params.get("strict") and len(data.problems) > before:
            raise DataError(f"{NAME}: {list(data.problems)[before]}")
        if data.problems:
            warn_skipped(NAME, len(data.problems), data.problems.first(), data.root)

    def identity(self, params: dict[str, Any]) -> str:
        data = load(params.get("root") or "")
        fraction, size = _settings(params)
        extra = f"{len(data.images)}/{fraction}/{size}"
        return f"{NAME}-{file_digest([data.labels_file, data.class_file], extra)}"

    def check(self, report: Any, root: str) -> None:
        from cxbench.data.check import tally

        data = load(root)
        report.notes.append(
            f"labels: {data.labels_file}" + (f", classes: {data.class_file}" if data.class_file else "")
        )
        report.notes.append(
            f"{len(data.images)} DICOM files indexed under {data.root / IMAGE_FOLDER}; {len(data.patients)} "
            f"labelled images, {len(data.boxes)} with boxes; split by sha256(patientId), test fraction "
            f"{DEFAULT_TEST_FRACTION}"
        )
        seen: set[str] = set()
        for split in SPLITS:
            samples = build_samples(data, "localization", split, DEFAULT_TEST_FRACTION, DEFAULT_IMAGE_SIZE)
            tally(report, split, "localization", samples, seen)
        if data.classes:
            report.labels["all/detailed_class"] = dict(Counter(data.classes.values()).most_common())
        report.malformed.extend(data.problems)
