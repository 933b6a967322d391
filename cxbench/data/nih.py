"""NIH ChestX-ray14 (Wang et al., CVPR 2017), read in place from the official layout.

``ROOT`` (``--data-root`` or ``dataset.root``) is the folder of the official download
(https://nihcc.app.box.com/v/ChestXray-NIHCC, also on Kaggle as ``nih-chest-xrays/data``)::

    ROOT/Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv, optionally .gz)
    ROOT/BBox_List_2017.csv                  (localization only)
    ROOT/train_val_list.txt, ROOT/test_list.txt
    ROOT/images/*.png  or  ROOT/images_001/images/*.png ... ROOT/images_012/images/*.png

If ``ROOT`` lacks the two CSVs, the copies shipped in torchxrayvision's data folder
(``Data_Entry_2017_v2020.csv.gz``, ``BBox_List_2017.csv.gz``) are read in place for the
metadata; the images and the split lists must still be under ``ROOT``.

Splits: ``test`` = ``test_list.txt``; ``train`` = ``train_val_list.txt`` (NIH defines no
separate validation split). Families:

- ``diagnosis_recall1``: images with exactly one of the 14 diseases ("No Finding" and
  multi-label images are left out); target = the lower-case name of
  :data:`cxbench.labels.DISEASES_14` (``Effusion`` -> ``pleural effusion``, ...);
- ``localization``: one sample per row of ``BBox_List_2017.csv``. NIH gives its boxes in
  pixels of the distributed 1024 x 1024 PNGs (not of ``OriginalImage[Width, Height]``, the
  size before resizing), so boxes are normalised by ``box_frame`` (default 1024, settable in
  ``dataset.box_frame``). All official box images belong to ``test_list.txt``;
- ``temporal_comparison`` (task ``nih_temporal_label_change``): consecutive follow-ups of one
  patient (``Follow-up #`` k and k + 1 of a ``Patient ID``, prior image first), one sample per
  finding of :data:`cxbench.labels.DISEASES_14` in either image's ``Finding Labels``. The change
  label is **derived from the two label sets, not read by a radiologist**: a finding only in
  the prior -> ``improved`` (resolved), only in the current -> ``worsened`` (new), in both ->
  ``stable`` (persists; its severity may have changed either way, which NIH does not record).
  ``metadata.label_change`` says which (``resolved`` / ``new`` / ``persistent``);
  ``dataset.temporal_persistent: false`` leaves the persistent pairs out. Labels were mined from
  reports by NLP, so the proxy inherits their noise. Both images of a pair must be in the
  same split list (NIH's lists split by patient, so they are); pairs across lists are skipped.

Image files are indexed by name once (a directory listing; no image is opened). A sample
whose image is missing is still produced (the runner records ``missing_image``); rows that
cannot be read are skipped with a warning. ``cxbench data check nih_chestxray14 ROOT`` lists
both. Set ``dataset.strict: true`` to fail on the first malformed row instead.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import importlib.util
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError
from cxbench.data.validate import warn_skipped
from cxbench.labels import DISEASES_14
from cxbench.schema import Sample

#: NIH finding names (Data_Entry and BBox_List spellings) -> cxbench.labels.DISEASES_14 names
NIH_TO_DISEASE = {
    "atelectasis": "atelectasis",
    "cardiomegaly": "cardiomegaly",
    "effusion": "pleural effusion",
    "infiltration": "infiltration",
    "infiltrate": "infiltration",  # BBox_List_2017.csv spelling
    "mass": "mass",
    "nodule": "nodule",
    "pneumonia": "pneumonia",
    "pneumothorax": "pneumothorax",
    "consolidation": "consolidation",
    "edema": "edema",
    "emphysema": "emphysema",
    "fibrosis": "fibrosis",
    "pleural_thickening": "pleural thickening",
    "hernia": "hernia",
}
NO_FINDING = "no finding"
FAMILIES = ("diagnosis_recall1", "localization", "temporal_comparison")
SPLITS = {"train": "train_val_list.txt", "test": "test_list.txt"}
ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
BBOX_COLUMNS = ("Image Index", "Finding Label", "Bbox [x", "y", "w", "h]")
DEFAULT_BOX_FRAME = 1024.0


def packaged_data_dir() -> Path | None:
    """torchxrayvision's data folder, located without importing the package (None if absent)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def disease_of(nih_label: str) -> str | None:
    """The DISEASES_14 name of an NIH finding name, ``"no finding"``, or None if unknown."""
    key = "_".join(nih_label.strip().lower().replace("-", " ").split())
    if key == "no_finding":
        return NO_FINDING
    return NIH_TO_DISEASE.get(key)


@dataclass
class Entry:
    image: str
    labels: list[str]  # DISEASES_14 names; [] for "No Finding"
    row: dict[str, str]
    where: str  # "file, row N"


@dataclass
class Box:
    image: str
    label: str
    box: list[float]  # normalised [x1, y1, x2, y2]
    pixels: list[float]  # [x, y, w, h] as in the CSV
    where: str


@dataclass
class NIHData:
    """Everything read from ROOT, plus the problems found on the way (file, row, reason)."""

    root: Path
    entry_file: Path
    bbox_file: Path | None
    entries: dict[str, Entry]
    boxes: list[Box]
    splits: dict[str, set[str]]
    images: dict[str, str]  # file name -> path under ROOT
    problems: list[str] = field(default_factory=list)

    def image_path(self, name: str) -> str:
        """The indexed path of an image, else where it would be (so the runner reports it missing)."""
        return self.images.get(name) or str(self.root / "images" / name)

    def split_of(self, name: str) -> str | None:
        for split, names in self.splits.items():
            if name in names:
                return split
        return None


# ---------------------------------------------------------------------------------------------
# reading


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _find_csv(root: Path, patterns: tuple[str, ...], packaged: str) -> Path | None:
    for pattern in patterns:
        found = sorted(p for p in root.glob(pattern) if p.is_file())
        if found:
            # prefer the 2020 revision of Data_Entry when both are present
            return next((p for p in found if "v2020" in p.name), found[0])
    data_dir = packaged_data_dir()
    if data_dir is not None and (data_dir / packaged).is_file():
        return data_dir / packaged
    return None


def _decoded(path: Path, handle: Any) -> Iterator[str]:
    """Lines of a binary stream decoded as UTF-8 one by one (BOM dropped), so errors name their line."""
    for number, raw in enumerate(handle, 1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}, line {number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at position {exc.start})"
            ) from None


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number, row) pairs; row 1 is the first line after the header.

    A file that cannot be read to its end (not UTF-8, a truncated or invalid gzip stream, a
    broken CSV quote) raises ``DataError`` naming the file and the row where reading stopped.
    """
    number = 0
    try:
        with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as handle:
            reader = csv.reader(_decoded(path, handle))
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
                cells = {h: (values[i].strip() if i < len(values) else "") for i, h in enumerate(header)}
                yield number, cells
    except (UnicodeDecodeError, EOFError, OSError, csv.Error) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise DataError(f"{path}, row {number + 1}: cannot read the file from here on ({reason})") from None


def _read_entries(path: Path, problems: list[str]) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for number, row in _rows(path, ENTRY_COLUMNS):
        where = f"{path}, row {number}"
        image = row["Image Index"]
        if not image:
            problems.append(f"{where}: empty 'Image Index'")
            continue
        if "/" in image or "\\" in image or image.startswith("."):
            problems.append(f"{where}: 'Image Index' {image!r} is not a plain file name (refused)")
            continue
        if image in entries:
            problems.append(f"{where}: duplicate image {image!r} (first at {entries[image].where})")
            continue
        names = [n for n in row["Finding Labels"].split("|") if n.strip()]
        labels = [disease_of(n) for n in names]
        if not names or None in labels:
            unknown = [n for n, lab in zip(names, labels, strict=False) if lab is None]
            problems.append(f"{where}: unknown or empty 'Finding Labels' {row['Finding Labels']!r} {unknown}")
            continue
        entries[image] = Entry(image, [lab for lab in labels if lab != NO_FINDING], row, where)  # type: ignore[misc]
    return entries


def _read_boxes(path: Path, frame: float, problems: list[str]) -> list[Box]:
    boxes = []
    for number, row in _rows(path, BBOX_COLUMNS):
        where = f"{path}, row {number}"
        label = disease_of(row["Finding Label"])
        if label in (None, NO_FINDING):
            problems.append(f"{where}: unknown 'Finding Label' {row['Finding Label']!r}")
            continue
        try:
            x, y, w, h = (float(row[c]) for c in BBOX_COLUMNS[2:])
        except ValueError:
            problems.append(f"{where}: box values are not numbers: {[row[c] for c in BBOX_COLUMNS[2:]]}")
            continue
        if not row["Image Index"]:
            problems.append(f"{where}: empty 'Image Index'")
            continue
        if not (w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= frame * 1.01 and y + h <= frame * 1.01):
            problems.append(f"{where}: box [x={x}, y={y}, w={w}, h={h}] is empty or outside {frame:g} px")
            continue
        norm = [x / frame, y / frame, min((x + w) / frame, 1.0), min((y + h) / frame, 1.0)]
        boxes.append(Box(row["Image Index"], label, norm, [x, y, w, h], where))  # type: ignore[arg-type]
    return boxes


def _read_split(path: Path) -> set[str]:
    from cxbench.data.validate import decoded_lines

    return {line.strip() for line in decoded_lines(path) if line.strip()}


def index_images(root: Path) -> dict[str, str]:
    """File name -> path of every file in ROOT/images*/ and ROOT/images*/images/ (no file opened)."""
    found: dict[str, str] = {}
    folders = sorted(p for p in root.glob("images*") if p.is_dir())
    while folders:
        folder = folders.pop(0)
        with os.scandir(folder) as listing:
            for item in sorted(listing, key=lambda e: e.name):
                if item.is_dir() and item.name.startswith("images"):
                    folders.append(Path(item.path))
                elif item.is_file():
                    found.setdefault(item.name, item.path)
    return found


def _fingerprint(root: Path) -> tuple:
    """Cheap key that changes when the data under ROOT changes (file sizes and mtimes)."""
    items = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            stat = path.stat()
        except OSError:
            continue
        items.append((path.name, stat.st_size, stat.st_mtime_ns))
        if path.is_dir() and path.name.startswith("images"):
            items.extend(
                (f"{path.name}/{p.name}", p.stat().st_mtime_ns) for p in path.iterdir() if p.is_dir()
            )
    return tuple(items)


def load(root: str | os.PathLike[str], box_frame: float = DEFAULT_BOX_FRAME) -> NIHData:
    """Read ROOT (cached until a file at its top level changes)."""
    path = Path(root).expanduser()
    if not str(root) or not path.is_dir():
        raise DataError(
            f"nih_chestxray14: data folder not found: {path!s} (pass --data-root ROOT, the folder of "
            "Data_Entry_2017.csv, train_val_list.txt, test_list.txt and images*/)"
        )
    return _load(path.resolve(), float(box_frame), _fingerprint(path.resolve()))


@lru_cache(maxsize=4)
def _load(root: Path, box_frame: float, _key: tuple) -> NIHData:
    problems: list[str] = []
    entry_file = _find_csv(
        root, ("Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz"), "Data_Entry_2017_v2020.csv.gz"
    )
    if entry_file is None:
        raise DataError(
            f"nih_chestxray14: no Data_Entry_2017*.csv in {root} (and torchxrayvision's copy was not found)"
        )
    bbox_file = _find_csv(root, ("BBox_List_2017*.csv", "BBox_List_2017*.csv.gz"), "BBox_List_2017.csv.gz")
    splits = {}
    for split, name in SPLITS.items():
        if not (root / name).is_file():
            raise DataError(f"nih_chestxray14: split list not found: {root / name}")
        splits[split] = _read_split(root / name)
    entries = _read_entries(entry_file, problems)
    boxes = _read_boxes(bbox_file, box_frame, problems) if bbox_file else []
    for box in boxes:
        if box.image not in entries:
            problems.append(f"{box.where}: image {box.image!r} is not listed in {entry_file.name}")
    boxes = [b for b in boxes if b.image in entries]
    return NIHData(root, entry_file, bbox_file, entries, boxes, splits, index_images(root), problems)


# ---------------------------------------------------------------------------------------------
# samples


def _metadata(data: NIHData, entry: Entry, split: str) -> dict[str, Any]:
    row = entry.row
    meta: dict[str, Any] = {
        "dataset": "nih_chestxray14",
        "split": split,
        "image_index": entry.image,
        "patient_id": row.get("Patient ID", ""),
        "follow_up": row.get("Follow-up #", ""),
        "age": row.get("Patient Age", ""),
        "sex": row.get("Patient Gender", ""),
        "view": row.get("View Position", ""),
        "labels": entry.labels,  # every finding of the image (never sent to models)
    }
    with contextlib.suppress(KeyError, ValueError):
        meta["original_size"] = [int(row["OriginalImage[Width"]), int(row["Height]"])]
    return meta


def check_family(family: str) -> None:
    if family not in FAMILIES:
        raise DataError(f"nih_chestxray14 provides the families {', '.join(FAMILIES)}, not {family!r}")


def follow_up_pairs(data: NIHData, split: str) -> Iterator[tuple[Entry, Entry]]:
    """(prior, current) entries of consecutive follow-ups of one patient, both in ``split``.

    Consecutive means follow-up numbers k and k + 1 of the same ``Patient ID``; a gap (an
    image missing from the metadata) breaks the chain. Ordered by patient, then follow-up.
    """
    members = data.splits[split]
    by_patient: dict[str, dict[int, Entry]] = {}
    for entry in data.entries.values():
        try:
            number = int(entry.row.get("Follow-up #", ""))
        except ValueError:
            continue
        by_patient.setdefault(entry.row.get("Patient ID", ""), {})[number] = entry
    for patient in sorted(by_patient, key=lambda p: (len(p), p)):
        visits = by_patient[patient]
        for number in sorted(visits):
            prior, current = visits[number], visits.get(number + 1)
            if current is not None and prior.image in members and current.image in members:
                yield prior, current


#: label-derived change -> cxbench.labels.CHANGE_LABELS word
LABEL_CHANGE = {"resolved": "improved", "new": "worsened", "persistent": "stable"}


def _temporal(data: NIHData, split: str, persistent: bool = True) -> Iterator[Sample]:
    for prior, current in follow_up_pairs(data, split):
        before, after = set(prior.labels), set(current.labels)
        for finding in (d for d in DISEASES_14 if d in before | after):
            change = "persistent" if finding in before & after else "resolved" if finding in before else "new"
            if change == "persistent" and not persistent:
                continue
            meta = _metadata(data, current, split)
            meta.update(
                prior_image_index=prior.image,
                prior_follow_up=prior.row.get("Follow-up #", ""),
                prior_labels=prior.labels,
                prior_view=prior.row.get("View Position", ""),
                label_change=change,
                change_source="Finding Labels of the two images (label-derived, not a radiologist's reading)",
            )
            yield Sample(
                id=f"nih:{prior.image}>{current.image}:{finding.replace(' ', '_')}",
                images=[data.image_path(prior.image), data.image_path(current.image)],
                question=(
                    "The first image is the prior study and the second image is the current study. "
                    f"Compared with the prior, has the {finding} improved, worsened, or remained stable?"
                ),
                target=LABEL_CHANGE[change],
                query={"kind": "change", "finding": finding},
                metadata=meta,
            )


def build_samples(
    data: NIHData,
    family: str,
    split: str,
    box_frame: float = DEFAULT_BOX_FRAME,
    temporal_persistent: bool = True,
) -> Iterator[Sample]:
    """Samples of one family and split, in CSV order (temporal: by patient and follow-up)."""
    check_family(family)
    if split not in data.splits:
        raise DataError(f"nih_chestxray14 has the splits {', '.join(data.splits)}, not {split!r}")
    members = data.splits[split]
    if family == "temporal_comparison":
        yield from _temporal(data, split, temporal_persistent)
        return
    if family == "diagnosis_recall1":
        for image, entry in data.entries.items():
            if image not in members or len(entry.labels) != 1:
                continue
            yield Sample(
                id=f"nih:{image}:dx",
                images=[data.image_path(image)],
                question="What is the most likely diagnosis for this chest X-ray?",
                target=entry.labels[0],
                query={"kind": "diagnosis"},
                metadata=_metadata(data, entry, split),
            )
        return
    seen: dict[str, int] = {}
    for box in data.boxes:
        if box.image not in members:
            continue
        key = f"{box.image}:{box.label.replace(' ', '_')}"
        seen[key] = seen.get(key, 0) + 1
        suffix = f":{seen[key]}" if seen[key] > 1 else ""
        meta = _metadata(data, data.entries[box.image], split)
        # boxes are given in the distributed image's pixels: box_frame x box_frame
        meta.update(image_size=[int(box_frame), int(box_frame)], box_pixels=box.pixels)
        yield Sample(
            id=f"nih:{key}:box{suffix}",
            images=[data.image_path(box.image)],
            question=f"Where is the {box.label} in this chest X-ray?",
            target=[box.box],
            query={"kind": "box", "finding": box.label},
            metadata=meta,
        )


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


class NIHChestXray14Adapter:
    """NIH ChestX-ray14 from ROOT (``params['root']``): diagnosis, localization, label-derived change."""

    name = "nih_chestxray14"

    def data(self, params: dict[str, Any]) -> NIHData:
        return load(params.get("root") or "", params.get("box_frame", DEFAULT_BOX_FRAME))

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        check_family(family)
        data = self.data(params)
        if data.problems:
            if params.get("strict"):
                raise DataError(f"nih_chestxray14: {data.problems[0]}")
            warn_skipped("nih_chestxray14", len(data.problems), data.problems[0], data.root)
        frame = float(params.get("box_frame", DEFAULT_BOX_FRAME))
        persistent = _flag(params.get("temporal_persistent", True))
        for sample in build_samples(data, family, split, frame, persistent):
            names = [sample.metadata["image_index"], sample.metadata.get("prior_image_index")]
            if params.get("skip_missing_images") and any(n and n not in data.images for n in names):
                continue
            yield sample

    def identity(self, params: dict[str, Any]) -> str:
        data = self.data(params)
        digest = hashlib.sha256()
        files = [data.entry_file, data.bbox_file, *(data.root / name for name in SPLITS.values())]
        for path in files:
            if path is not None:
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
        digest.update(f"{len(data.images)}/{params.get('box_frame', DEFAULT_BOX_FRAME)}".encode())
        if not _flag(params.get("temporal_persistent", True)):
            digest.update(b"/no-persistent")
        return f"nih_chestxray14-{digest.hexdigest()[:16]}"
