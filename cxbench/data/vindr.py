"""VinDr-CXR (Nguyen et al., Scientific Data 2022), read in place: boxes from several radiologists.

``ROOT`` (``--data-root`` or ``dataset.root``) is the folder of one of these releases:

- the official PhysioNet release (https://physionet.org/content/vindr-cxr/)::

      ROOT/annotations/annotations_train.csv   image_id, rad_id, class_name, x_min, y_min, x_max, y_max
      ROOT/annotations/annotations_test.csv    the same columns (rad_id optional): consensus boxes
      ROOT/annotations/image_labels_{train,test}.csv   (image-level labels; only counted by ``check``)
      ROOT/train/<image_id>.dicom, ROOT/test/<image_id>.dicom

- the Kaggle "VinBigData Chest X-ray Abnormalities Detection" release: ``ROOT/train.csv``
  (image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max) and
  ``ROOT/train/<image_id>.dicom``; it has labels for the ``train`` split only.

If ``ROOT`` has neither annotation file, torchxrayvision's packaged copy of the Kaggle CSV
(``vinbigdata-train.csv.gz``) is read in place for the ``train`` boxes; the images must still
be under ``ROOT/train/``.

Family ``localization``: one sample per image and class (``"No finding"`` rows give none),
target = every box of that class in the image, normalised to [0, 1] by the image's size, which
is read from the DICOM header (``Columns`` x ``Rows``; no pixel data is read). The same samples
serve the single-box task (``vindr_localization``: mean IoU against the best-matching box) and
the detection task (``vindr_detection``: all boxes, mAP@0.5).

**Consensus of the train split.** Each train image was read independently by three
radiologists and the CSV has one row per radiologist and box. For each image and class the
boxes are clustered across radiologists: taken in a fixed order (radiologist id, then
coordinates), each box joins the existing cluster whose mean box overlaps it most, provided
the IoU is >= ``consensus_iou`` (default 0.4) and the cluster has no box of the same
radiologist yet; otherwise it opens a new cluster. A cluster is kept if boxes of at least
``consensus_k`` different radiologists (default 2) are in it, and becomes one box, the
coordinate-wise mean (``consensus_merge: mean``, default) or median of its boxes.
Why these defaults: 2 of 3 is the majority of the readers, so a box only one radiologist drew
(disputed) is dropped, which brings the train labels closer to the test labels (a consensus of
five radiologists); an IoU of 0.4, below the 0.5 used for scoring, lets boxes of one lesion drawn
with different margins merge. ``consensus_k: 1`` keeps every radiologist's box (merging the
overlapping ones). **The test split** uses the released consensus boxes as they are.

Rows that cannot be used (empty class, coordinates that are missing/NaN/inverted, outside the
image, an image id that is not a plain file name) are malformed: skipped with a warning, listed
by ``cxbench data check vindr_cxr ROOT`` with file and row (``dataset.strict: true`` fails
instead). An image whose DICOM header cannot be read (missing or unreadable file) has no size,
so its boxes cannot be normalised: its samples are left out with a warning naming the files,
and ``check`` lists them as missing images.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import math
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError
from cxbench.data.nih import packaged_data_dir
from cxbench.data.validate import warn_skipped
from cxbench.metrics.grounding import box_iou
from cxbench.schema import Sample

log = logging.getLogger(__name__)

NAME = "vindr_cxr"
FAMILIES = ("localization",)
BOX_COLUMNS = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")
NO_FINDING = "no finding"
PACKAGED_CSV = "vinbigdata-train.csv.gz"
DICOM_SUFFIXES = (".dicom", ".dcm")
DEFAULT_CONSENSUS_K = 2
DEFAULT_CONSENSUS_IOU = 0.4
DEFAULT_CONSENSUS_MERGE = "mean"
#: box coordinates may exceed the image by this many pixels (annotation tools round outwards)
PIXEL_TOLERANCE = 1.0

# ---------------------------------------------------------------------------------------------
# helpers shared by the box data sets (VinDr-CXR, RSNA Pneumonia, MS-CXR)

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class Problems:
    """Ordered, de-duplicated "file, row N: reason" messages (samples may be built twice)."""

    def __init__(self) -> None:
        self._items: dict[str, None] = {}

    def add(self, message: str) -> None:
        self._items.setdefault(message, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def first(self) -> str:
        return next(iter(self._items))


def is_plain_name(name: str) -> bool:
    """True for an id usable as a file name inside a folder (no separators, no ``..``)."""
    return bool(_PLAIN_NAME.match(name)) and ".." not in name


def open_text(path: Path) -> io.TextIOBase:
    """A CSV file as text: plain, ``.gz``, or the only ``.csv`` member of a ``.zip``."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8-sig", newline="")
    if path.suffix == ".zip":
        archive = zipfile.ZipFile(path)
        members = [n for n in archive.namelist() if n.endswith(".csv")]
        if len(members) != 1:
            raise DataError(f"{path}: expected one .csv inside the zip archive, found {members}")
        return io.TextIOWrapper(archive.open(members[0]), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number, row) pairs; row 1 is the first line after the header; blank lines skipped."""
    with open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file (expected columns {', '.join(required)})")
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; found {header}")
        for number, values in enumerate(reader, 1):
            if not any(v.strip() for v in values):
                continue
            yield number, {h: (values[i].strip() if i < len(values) else "") for i, h in enumerate(header)}


def numbers(row: dict[str, str], columns: tuple[str, ...]) -> list[float] | None:
    """The columns as finite floats, or None if one is empty, not a number, NaN or infinite."""
    try:
        values = [float(row.get(c, "")) for c in columns]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def dicom_size(path: str | os.PathLike[str]) -> tuple[tuple[int, int] | None, str | None]:
    """``((width, height), None)`` from a DICOM header (Columns, Rows), else ``(None, reason)``.

    Only the header is parsed (``stop_before_pixels``); the pixel data is never read.
    """
    try:
        import pydicom
    except ImportError:  # pragma: no cover - pydicom is a test dependency
        return None, "pydicom is not installed (pip install pydicom) to read DICOM headers"
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        width, height = int(header.Columns), int(header.Rows)
    except FileNotFoundError:
        return None, "missing"
    except Exception as exc:  # InvalidDicomError, AttributeError (no Rows), OSError, ...
        return None, f"cannot read the DICOM header of {path}: {type(exc).__name__}: {exc}"
    if width <= 0 or height <= 0:
        return None, f"DICOM header of {path} gives an empty image ({width} x {height})"
    return (width, height), None


def normalise_box(box: list[float], size: tuple[float, float]) -> list[float] | None:
    """Pixel ``[x1, y1, x2, y2]`` -> [0, 1] of a ``(width, height)`` image; None if outside/empty."""
    width, height = size
    x1, y1, x2, y2 = box
    tol = PIXEL_TOLERANCE
    if not (x2 > x1 and y2 > y1 and x1 >= -tol and y1 >= -tol and x2 <= width + tol and y2 <= height + tol):
        return None
    return [max(x1 / width, 0.0), max(y1 / height, 0.0), min(x2 / width, 1.0), min(y2 / height, 1.0)]


def display_name(class_name: str) -> str:
    """A class name as the question uses it: lower case, acronyms kept (``Enlarged PA``, ``ILD``)."""
    return " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in class_name.split())


def file_digest(paths: list[Path | None], extra: str = "") -> str:
    digest = hashlib.sha256()
    for path in paths:
        if path is not None and path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(extra.encode())
    return digest.hexdigest()[:16]


def folder_fingerprint(root: Path, subfolders: tuple[str, ...] = ()) -> tuple:
    """Names, sizes and mtimes of ROOT's entries (and of the named sub-folders' entries).

    A folder's own mtime changes when files are added to or removed from it, so image folders
    need not be listed file by file.
    """
    items = []
    for folder in (root, *(root / name for name in subfolders)):
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            try:
                stat = entry.stat()
            except OSError:
                continue
            items.append((entry.path, stat.st_size, stat.st_mtime_ns))
    return tuple(items)


# ---------------------------------------------------------------------------------------------
# consensus of several radiologists


def consensus(
    marks: list[tuple[str, list[float]]],
    k: int = DEFAULT_CONSENSUS_K,
    iou_threshold: float = DEFAULT_CONSENSUS_IOU,
    merge: str = DEFAULT_CONSENSUS_MERGE,
) -> list[tuple[list[float], list[str]]]:
    """Consensus boxes of one image and class from ``(radiologist, box)`` marks.

    Returns ``(merged box, radiologists)`` per kept cluster, in the order the clusters were
    opened. See the module docstring for the policy.
    """
    if merge not in ("mean", "median"):
        raise DataError(f"{NAME}: consensus_merge must be 'mean' or 'median', not {merge!r}")
    clusters: list[dict[str, Any]] = []
    for reader, box in sorted(marks, key=lambda m: (m[0], m[1])):
        best, best_iou = None, -1.0
        for cluster in clusters:
            if reader in cluster["readers"]:
                continue
            iou = box_iou(box, cluster["mean"])
            if iou >= iou_threshold and iou > best_iou:
                best, best_iou = cluster, iou
        if best is None:
            clusters.append({"boxes": [box], "readers": [reader], "mean": list(box)})
            continue
        best["boxes"].append(box)
        best["readers"].append(reader)
        best["mean"] = [sum(c) / len(best["boxes"]) for c in zip(*best["boxes"], strict=True)]
    kept = []
    for cluster in clusters:
        if len(set(cluster["readers"])) < k:
            continue
        if merge == "mean":
            merged = cluster["mean"]
        else:
            merged = [_median(list(c)) for c in zip(*cluster["boxes"], strict=True)]
        kept.append(([round(v, 3) for v in merged], sorted(cluster["readers"])))
    return kept


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class Mark:
    image: str
    class_name: str
    reader: str
    box: list[float]  # pixels [x1, y1, x2, y2]
    where: str


@dataclass
class VinDrData:
    root: Path
    layout: str  # "official" | "kaggle" | "packaged"
    files: dict[str, Path]  # split -> annotation file
    marks: dict[str, list[Mark]]  # split -> usable box rows
    no_finding: dict[str, set[str]]  # split -> images with a "No finding" row
    images: dict[str, dict[str, str]]  # split -> image id -> DICOM path
    problems: Problems = field(default_factory=Problems)
    sizes: dict[str, tuple[tuple[int, int] | None, str | None]] = field(default_factory=dict)

    def image_path(self, split: str, image: str) -> str:
        return self.images.get(split, {}).get(image) or str(self.root / split / f"{image}.dicom")

    def size(self, path: str) -> tuple[tuple[int, int] | None, str | None]:
        if path not in self.sizes:
            self.sizes[path] = dicom_size(path)
        return self.sizes[path]


def _annotation_files(root: Path) -> tuple[str, dict[str, Path]]:
    official = {
        split: root / "annotations" / f"annotations_{split}.csv"
        for split in ("train", "test")
        if (root / "annotations" / f"annotations_{split}.csv").is_file()
    }
    if official:
        return "official", official
    if (root / "train.csv").is_file():
        return "kaggle", {"train": root / "train.csv"}
    data_dir = packaged_data_dir()
    if data_dir is not None and (data_dir / PACKAGED_CSV).is_file():
        return "packaged", {"train": data_dir / PACKAGED_CSV}
    raise DataError(
        f"{NAME}: no annotations in {root}: expected annotations/annotations_{{train,test}}.csv (PhysioNet) "
        "or train.csv (Kaggle VinBigData), and torchxrayvision's packaged copy was not found"
    )


def _index_dicoms(folder: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    with os.scandir(folder) as listing:
        for item in sorted(listing, key=lambda e: e.name):
            stem, suffix = os.path.splitext(item.name)
            if suffix.lower() in DICOM_SUFFIXES and item.is_file():
                found.setdefault(stem, item.path)
    return found


def _read_marks(path: Path, problems: Problems) -> tuple[list[Mark], set[str]]:
    marks, no_finding = [], set()
    for number, row in csv_rows(path, BOX_COLUMNS):
        where = f"{path}, row {number}"
        image, class_name = row["image_id"], row["class_name"]
        if not is_plain_name(image):
            problems.add(f"{where}: image_id {image!r} is not a plain file name (refused)")
            continue
        if not class_name:
            problems.add(f"{where}: empty class_name")
            continue
        coords = [row[c] for c in BOX_COLUMNS[2:]]
        if class_name.lower() == NO_FINDING:
            if any(c and c.lower() != "nan" for c in coords):
                problems.add(f"{where}: 'No finding' row with box coordinates {coords}")
            no_finding.add(image)
            continue
        box = numbers(row, BOX_COLUMNS[2:])
        if box is None:
            problems.add(f"{where}: box coordinates missing, NaN or not numbers: {coords}")
            continue
        tol = PIXEL_TOLERANCE
        if not (box[2] > box[0] and box[3] > box[1] and box[0] >= -tol and box[1] >= -tol):
            problems.add(f"{where}: box {box} is empty, inverted or negative")
            continue
        reader = row.get("rad_id") or row.get("rad_ID") or f"row{number}"
        marks.append(Mark(image, class_name, reader, box, where))
    return marks, no_finding


def load(root: str | os.PathLike[str]) -> VinDrData:
    """Read ROOT (cached until a file at its top levels changes)."""
    path = Path(root).expanduser()
    if not str(root) or not path.is_dir():
        raise DataError(
            f"{NAME}: data folder not found: {path!s} (pass --data-root ROOT, the folder with annotations/ "
            "(PhysioNet) or train.csv (Kaggle) and train/, test/ DICOM folders)"
        )
    path = path.resolve()
    return _load(path, folder_fingerprint(path, ("annotations",)))


@lru_cache(maxsize=4)
def _load(root: Path, _key: tuple) -> VinDrData:
    layout, files = _annotation_files(root)
    problems = Problems()
    marks, no_finding, images = {}, {}, {}
    for split, file in files.items():
        marks[split], no_finding[split] = _read_marks(file, problems)
        images[split] = _index_dicoms(root / split)
    return VinDrData(root, layout, files, marks, no_finding, images, problems)


# ---------------------------------------------------------------------------------------------
# samples


@dataclass
class Params:
    k: int = DEFAULT_CONSENSUS_K
    iou: float = DEFAULT_CONSENSUS_IOU
    merge: str = DEFAULT_CONSENSUS_MERGE

    @classmethod
    def of(cls, params: dict[str, Any]) -> Params:
        out = cls(
            int(params.get("consensus_k", DEFAULT_CONSENSUS_K)),
            float(params.get("consensus_iou", DEFAULT_CONSENSUS_IOU)),
            str(params.get("consensus_merge", DEFAULT_CONSENSUS_MERGE)),
        )
        if out.k < 1 or not 0.0 <= out.iou <= 1.0 or out.merge not in ("mean", "median"):
            raise DataError(
                f"{NAME}: bad consensus settings k={out.k}, iou={out.iou}, merge={out.merge!r} "
                "(k >= 1, 0 <= iou <= 1, merge mean|median)"
            )
        return out


def check_family_split(data: VinDrData, family: str, split: str) -> None:
    if family not in FAMILIES:
        raise DataError(f"{NAME} provides the families {', '.join(FAMILIES)}, not {family!r}")
    if split not in data.files:
        raise DataError(
            f"{NAME}: no {split!r} split in {data.root} ({data.layout} layout has the splits "
            f"{', '.join(data.files)}; test labels: annotations/annotations_test.csv of PhysioNet)"
        )


def build_samples(
    data: VinDrData, family: str, split: str, params: Params, missing: dict[str, str] | None = None
) -> Iterator[Sample]:
    """Samples of one split, in the order (image, class) first appears in the CSV.

    Images whose size cannot be read are left out and recorded in ``missing`` (path -> reason).
    """
    check_family_split(data, family, split)
    groups: dict[tuple[str, str], list[Mark]] = {}
    for mark in data.marks[split]:
        groups.setdefault((mark.image, mark.class_name), []).append(mark)
    given_consensus = split == "test"
    for (image, class_name), marks in groups.items():
        path = data.image_path(split, image)
        size, reason = data.size(path)
        if size is None:
            if missing is not None:
                missing.setdefault(path, reason or "missing")
            continue
        valid = []
        for mark in marks:
            box = normalise_box(mark.box, size)
            if box is None:
                data.problems.add(
                    f"{mark.where}: box {mark.box} is outside the {size[0]} x {size[1]} image "
                    f"{Path(path).name}"
                )
                continue
            valid.append(mark)
        if given_consensus:
            boxes = [(m.box, [m.reader]) for m in valid]
        else:
            boxes = consensus([(m.reader, m.box) for m in valid], params.k, params.iou, params.merge)
        if not boxes:
            continue
        finding = display_name(class_name)
        slug = re.sub(r"[^a-z0-9]+", "_", class_name.lower()).strip("_")
        yield Sample(
            id=f"vindr:{image}:{slug}",
            images=[path],
            question=f"Where is the {finding} in this chest X-ray?",
            target=[normalise_box(box, size) for box, _ in boxes],
            query={"kind": "box", "finding": finding},
            metadata={
                "dataset": NAME,
                "split": split,
                "image_id": image,
                "class_name": class_name,
                "image_size": list(size),
                "box_pixels": [box for box, _ in boxes],
                "readers": [readers for _, readers in boxes],
                "consensus": "released test consensus"
                if given_consensus
                else f"k={params.k}, iou={params.iou:g}, merge={params.merge}",
            },
        )


def _row_key(problem: str) -> tuple[str, int]:
    """Sort key of a "file, row N: reason" message: file, then row number."""
    match = re.match(r"(.*?), row (\d+):", problem)
    return (match.group(1), int(match.group(2))) if match else (problem, 0)


class VinDrCXRAdapter:
    """VinDr-CXR from ROOT (``params['root']``): localization / detection samples."""

    name = NAME

    def data(self, params: dict[str, Any]) -> VinDrData:
        return load(params.get("root") or "")

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        data = self.data(params)
        check_family_split(data, family, split)
        settings = Params.of(params)
        if data.problems and params.get("strict"):
            raise DataError(f"{NAME}: {data.problems.first()}")
        missing: dict[str, str] = {}
        before = len(data.problems)
        yield from build_samples(data, family, split, settings, missing)
        if params.get("strict") and len(data.problems) > before:
            raise DataError(f"{NAME}: {list(data.problems)[before]}")
        if data.problems:
            warn_skipped(NAME, len(data.problems), data.problems.first(), data.root)
        if missing:
            first = next(iter(missing.items()))
            log.warning(
                "%s: left out the samples of %d image(s) whose DICOM header cannot be read (no size to "
                "normalise boxes), first: %s (%s)",
                NAME,
                len(missing),
                *first,
            )

    def identity(self, params: dict[str, Any]) -> str:
        data = self.data(params)
        settings = Params.of(params)
        counts = "/".join(f"{s}:{len(v)}" for s, v in data.images.items())
        extra = f"{data.layout}/{counts}/k={settings.k}/iou={settings.iou}/{settings.merge}"
        return f"{NAME}-{file_digest(list(data.files.values()), extra)}"

    def check(self, report: Any, root: str) -> None:
        """Fill a :class:`cxbench.data.check.CheckReport` (counts, labels, missing, malformed)."""
        from cxbench.data.check import tally

        data = load(root)
        settings = Params()
        files = ", ".join(map(str, data.files.values()))
        report.notes.append(f"layout: {data.layout}; annotations: {files}")
        report.notes.append(
            f"train consensus: boxes of >= {settings.k} radiologists, clustered at IoU >= {settings.iou:g}, "
            f"merged by {settings.merge}; test: released consensus"
        )
        seen: set[str] = set()
        missing: dict[str, str] = {}
        for split in data.files:
            pairs = {(m.image, m.class_name) for m in data.marks[split]}
            samples = list(build_samples(data, "localization", split, settings, missing))
            tally(report, split, "localization", samples, seen)
            sized = [p for p in pairs if data.image_path(split, p[0]) not in missing]
            dropped = len(sized) - len(samples)
            report.notes.append(
                f"{split}: {len(data.images[split])} DICOM files indexed; {len(data.no_finding[split])} "
                f"image(s) with a 'No finding' row; {len(pairs)} (image, class) pairs with boxes"
                + (f", {dropped} of them without a usable box (consensus or malformed)" if dropped else "")
            )
        for path, reason in missing.items():
            if reason == "missing":
                report.missing_images.append(path)
            else:
                report.malformed.append(reason)
        report.images = len(seen | set(missing))
        report.malformed.extend(sorted(data.problems, key=_row_key))
        for split in ("train", "test"):
            labels = data.root / "annotations" / f"image_labels_{split}.csv"
            if labels.is_file():
                report.notes.append(f"image-level labels present (not used by the tasks): {labels}")
