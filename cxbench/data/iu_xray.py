"""IU X-ray (OpenI) reports, read from the copy that ships inside the ``torchxrayvision`` package.

``torchxrayvision/data/NLMCXR_reports.tgz`` holds 3,955 report XMLs of the Indiana University
chest X-ray collection (CC BY-NC-ND 4.0). cxbench reads them in place and never copies them.
The package folder is located without importing torchxrayvision (whose import needs
torchvision). Install it with ``pip install --no-deps torchxrayvision``.

The collection has no official split; cxbench assigns one deterministically from a hash of
the report id: 70% train, 10% val, 20% test.
"""

from __future__ import annotations

import hashlib
import importlib.util
import tarfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError
from cxbench.schema import Sample

SECTIONS = ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")


def reports_archive() -> Path:
    """Path of ``NLMCXR_reports.tgz`` inside the installed torchxrayvision package."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "IU X-ray reports need the torchxrayvision package's data files: "
            "pip install --no-deps torchxrayvision"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "NLMCXR_reports.tgz"
    if not path.is_file():
        raise DataError(f"torchxrayvision is installed but {path} is missing; reinstall it")
    return path


def split_of(report_id: str) -> str:
    bucket = int(hashlib.sha256(report_id.encode()).hexdigest(), 16) % 10
    return "train" if bucket < 7 else "val" if bucket == 7 else "test"


def parse_report(data: bytes, name: str, where: str) -> dict[str, Any]:
    """One report XML as {id, split, COMPARISON, INDICATION, FINDINGS, IMPRESSION, images}.

    Missing sections are ""; ``images`` lists the ``parentImage id`` attributes in order
    (e.g. ``CXR1_1_IM-0001-3001``, the stem of the image file). Raises DataError naming ``where``.
    """
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise DataError(f"{where}: not valid XML ({exc})") from None
    report_id = "iu-" + Path(name).stem
    record: dict[str, Any] = {"id": report_id, "split": split_of(report_id)}
    for section in SECTIONS:
        node = root.find(f".//AbstractText[@Label='{section}']")
        record[section] = " ".join((node.text or "").split()) if node is not None else ""
    record["images"] = [node.get("id", "") for node in root.iter("parentImage")]
    return record


def report_files(source: Path) -> Iterator[tuple[str, bytes, str]]:
    """(member name, XML bytes, where) for every ``.xml`` of a ``.tgz`` or a folder of XMLs."""
    if source.is_dir():
        for path in sorted(source.glob("*.xml")):
            yield path.name, path.read_bytes(), str(path)
        return
    with tarfile.open(source) as tar:
        for member in tar:
            if not (member.isfile() and member.name.endswith(".xml")):
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                yield member.name, handle.read(), f"{source}:{member.name}"


def _report_number(record: dict[str, Any]) -> int:
    tail = record["id"].split("-", 1)[1]
    return int(tail) if tail.isdigit() else 1 << 62


@lru_cache(maxsize=2)
def load_reports(archive: str | None = None) -> tuple[dict[str, Any], ...]:
    """Every report as {id, split, COMPARISON, INDICATION, FINDINGS, IMPRESSION, images}."""
    path = Path(archive) if archive else reports_archive()
    reports = [parse_report(data, name, where) for name, data, where in report_files(path)]
    reports.sort(key=_report_number)
    return tuple(reports)


class IUXrayReportsAdapter:
    """Text-only samples from IU X-ray reports: family ``text`` = findings -> impression."""

    name = "iu_xray_reports"

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        if family != "text":
            raise DataError(f"iu_xray_reports provides the 'text' family only, not {family!r}")
        for report in load_reports(params.get("root")):
            if report["split"] != split or not report["FINDINGS"] or not report["IMPRESSION"]:
                continue
            yield Sample(
                id=report["id"],
                images=[],
                question=report["FINDINGS"],
                target=report["IMPRESSION"],
                query={"kind": "summarize", "findings": report["FINDINGS"]},
                metadata={"dataset": "iu_xray", "split": split, "indication": report["INDICATION"]},
            )

    def identity(self, params: dict[str, Any]) -> str:
        path = Path(params["root"]) if params.get("root") else reports_archive()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return f"iu_xray_reports-{digest}"
