"""MS-CXR-T (Bannur et al., CVPR 2023): temporal image classification on MIMIC-CXR pairs.

Official release: https://physionet.org/content/ms-cxr-t/ (credentialed). The images are
MIMIC-CXR-JPG's (https://physionet.org/content/mimic-cxr-jpg/).

``ROOT`` (``--data-root`` or ``dataset.root``) is the folder holding
``MS_CXR_T_temporal_image_classification_v1.0.0.csv`` (any
``MS_CXR_T_temporal_image_classification*.csv`` is accepted; ``ROOT`` may also be the CSV
itself) and MIMIC-CXR-JPG's ``files/`` folder (a symlink to it is fine), or set
``dataset.image_root`` to the MIMIC-CXR-JPG folder that holds ``files/``. Images are
``files/p<first 2 digits of subject>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.

Columns read (by name; the order does not matter):

- ``dicom_id`` / ``previous_dicom_id``: the current and prior image. The release writes them
  path-like (``p10/p10002428/s55758034/<dicom id>``); a bare dicom id is accepted too, with the
  folder then built from ``subject_id`` and ``study_id`` / ``previous_study_id``. Path-like ids
  must agree with those columns when they are present. Anything else (``..``, absolute paths,
  other folders) is refused: the row becomes a problem.
- one label column per finding, ``<finding>_progression`` (as released) or a bare
  ``<finding>`` column, for consolidation, edema, pleural_effusion, pneumonia, pneumothorax;
  values ``improving`` / ``stable`` / ``worsening`` (any case) or empty (not labelled).
- optional ``<finding>_label_quality`` (kept in the metadata).

One ``temporal_comparison`` sample per (pair, labelled finding); images = [prior, current].
MS-CXR-T's classes map onto :data:`cxbench.labels.CHANGE_LABELS`: improving -> ``improved``,
stable -> ``stable``, worsening -> ``worsened`` (the raw word is kept in the metadata). The
question asks "improving, stable or worsening" in MS-CXR-T's own words; the change parser
reads improving/improved/better, worsening/worse/progressing and stable/unchanged alike.

MS-CXR-T is an evaluation set: every pair is in split ``test`` and there is no ``train``
split (baselines that learn from a train split cannot be fitted on it).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError
from cxbench.data.vqa_sets import BaseAdapter, Loaded, text_of
from cxbench.schema import Sample

CSV_NAME = "MS_CXR_T_temporal_image_classification_v1.0.0.csv"
FINDINGS = ("consolidation", "edema", "pleural_effusion", "pneumonia", "pneumothorax")
#: MS-CXR-T class -> cxbench change label
TO_CHANGE = {"improving": "improved", "stable": "stable", "worsening": "worsened"}

# ---------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG paths (also used by diff_vqa.py)

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_NUMBER_RE = re.compile(r"^\d+(?:\.0)?$")
_MIMIC_PATH_RE = re.compile(r"^(?:files/)?p(\d{2})/p(\d+)/s(\d+)/([A-Za-z0-9][A-Za-z0-9-]*)(?:\.jpg)?$")


def mimic_number(value: str, column: str, where: str) -> str:
    """A subject / study id as digits (``"10000032"``; ``"10000032.0"`` is read as the same)."""
    text = value.strip() if isinstance(value, str) else text_of(value)
    if text.isdigit():
        return text
    if not _NUMBER_RE.match(text):
        raise DataError(f"{where}: {column} {value!r} is not a number")
    return text.split(".")[0]


def mimic_jpg_path(image_root: Path | str, subject_id: str, study_id: str, dicom_id: str) -> str:
    """``image_root/files/pXX/pSUBJECT/sSTUDY/DICOM.jpg`` for MIMIC-CXR-JPG (no file is touched).

    Plain string joins: this runs once per question on data sets with ~10^6 questions.
    """
    parts = ("files", f"p{subject_id[:2]}", f"p{subject_id}", f"s{study_id}", f"{dicom_id}.jpg")
    return os.sep.join((os.fspath(image_root), *parts))


def mimic_image(
    value: str, subject_id: str | None, study_id: str | None, where: str, column: str
) -> tuple[str, str, str]:
    """``(subject, study, dicom id)`` from a path-like or bare dicom id, checked against the row."""
    text = text_of(value)
    match = _MIMIC_PATH_RE.match(text)
    if match:
        prefix, subject, study, dicom = match.groups()
        if prefix != subject[:2]:
            raise DataError(
                f"{where}: {column} {value!r}: folder p{prefix} does not match subject p{subject}"
            )
        if subject_id is not None and subject != subject_id:
            raise DataError(
                f"{where}: {column} {value!r} is under subject {subject}, the row says {subject_id}"
            )
        if study_id is not None and study != study_id:
            raise DataError(f"{where}: {column} {value!r} is under study {study}, the row says {study_id}")
        return subject, study, dicom
    if _ID_RE.match(text):
        if subject_id is None or study_id is None:
            raise DataError(
                f"{where}: {column} {value!r} is a bare dicom id, so subject and study ids are needed"
            )
        return subject_id, study_id, text
    raise DataError(
        f"{where}: {column} {value!r} is not a MIMIC-CXR dicom id or pXX/pSUBJECT/sSTUDY/ID path (refused)"
    )


# ---------------------------------------------------------------------------------------------
# CSV reading


def open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[str, dict[str, str] | str]]:
    """``(where, row)`` for each row (row 1 = first line after the header), or ``(where, error)``."""
    with open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file (expected columns {', '.join(required)})")
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; found {header}")
        width = len(header)
        for number, values in enumerate(reader, 1):
            if not any(values):
                continue
            where = f"{path}, row {number}"
            if len(values) != width:
                yield where, f"{where}: {len(values)} values for {width} columns"
                continue
            yield where, dict(zip(header, values, strict=True))  # unstripped: callers strip what they use


# ---------------------------------------------------------------------------------------------
# adapter


def _label_column(header: set[str], finding: str) -> str | None:
    for name in (f"{finding}_progression", finding):
        if name in header:
            return name
    return None


class MSCXRTAdapter(BaseAdapter):
    """MS-CXR-T pairs: temporal_comparison (improving / stable / worsening per finding)."""

    name = "ms_cxr_t"
    families = ("temporal_comparison",)
    layout_hint = f"the folder holding {CSV_NAME} and MIMIC-CXR-JPG's files/ (or set dataset.image_root)"
    split_hint = "MS-CXR-T is an evaluation set: it defines no train split, every pair is in 'test'"
    cache_params = ("image_root",)

    def csv_path(self, root: Path) -> Path:
        if root.is_file():
            return root
        if (root / CSV_NAME).is_file():
            return root / CSV_NAME
        found = sorted(root.glob("MS_CXR_T_temporal_image_classification*.csv"))
        if not found:
            raise DataError(f"ms_cxr_t: {CSV_NAME} not found in {root} ({self.layout_hint})")
        return found[-1]

    def manifest_files(self, root: Path, params: dict[str, Any]) -> list[Path]:
        return [self.csv_path(root)]

    def read(self, root: Path, params: dict[str, Any]) -> Loaded:
        path = self.csv_path(root)
        folder = path.parent
        image_root = Path(params["image_root"]).expanduser() if params.get("image_root") else folder
        data = Loaded(self.name, folder, [path], ("test",))
        data.notes.append(f"labels: {path}; images under {image_root / 'files'}")
        with open_text(path) as handle:
            header = {h.strip() for h in next(csv.reader(handle), [])}
        columns = {f: _label_column(header, f) for f in FINDINGS}
        if not any(columns.values()):
            raise DataError(
                f"{path}: no finding column; expected <finding>_progression (or <finding>) for "
                f"{', '.join(FINDINGS)}; found {sorted(header)}"
            )
        seen: dict[str, str] = {}
        for where, row in csv_rows(path, ("dicom_id", "previous_dicom_id")):
            if isinstance(row, str):
                data.problems.append(row)
                continue
            try:
                subject, study, prev_study = (
                    row.get(c, "").strip() or None for c in ("subject_id", "study_id", "previous_study_id")
                )
                subject = mimic_number(subject, "subject_id", where) if subject else None
                study = mimic_number(study, "study_id", where) if study else None
                prev_study = mimic_number(prev_study, "previous_study_id", where) if prev_study else None
                current = mimic_image(row["dicom_id"], subject, study, where, "dicom_id")
                prior = mimic_image(
                    row["previous_dicom_id"], subject or current[0], prev_study, where, "previous_dicom_id"
                )
                if prior[0] != current[0]:
                    raise DataError(f"{where}: prior and current images belong to different subjects")
                labels = {}
                for finding, column in columns.items():
                    value = row[column].strip().lower() if column else ""
                    if not value or value == "nan":
                        continue
                    if value not in TO_CHANGE:
                        raise DataError(
                            f"{where}: {column} is {row[column]!r}; "
                            "expected improving, stable, worsening or empty"
                        )
                    labels[finding] = value
                if not labels:
                    raise DataError(f"{where}: no finding is labelled")
            except DataError as exc:
                data.problems.append(str(exc))
                continue
            images = [mimic_jpg_path(image_root, *prior), mimic_jpg_path(image_root, *current)]
            for finding, value in labels.items():
                sample_id = f"ms_cxr_t:{current[2]}:{prior[2]}:{finding}"
                if sample_id in seen:
                    data.problems.append(
                        f"{where}: the pair and {finding} are labelled again (first at {seen[sample_id]})"
                    )
                    continue
                seen[sample_id] = where
                display = finding.replace("_", " ")
                data.count("test/finding: label", f"{display}: {value}")
                data.add(
                    "test",
                    "temporal_comparison",
                    Sample(
                        id=sample_id,
                        images=images,
                        question=(
                            "The first image is the prior study and the second image is the current study. "
                            f"Compared with the prior, is the {display} improving, stable or worsening?"
                        ),
                        target=TO_CHANGE[value],
                        query={"kind": "change", "finding": display},
                        metadata={
                            "dataset": "ms_cxr_t",
                            "split": "test",
                            "subject_id": current[0],
                            "study_id": current[1],
                            "previous_study_id": prior[1],
                            "dicom_id": current[2],
                            "previous_dicom_id": prior[2],
                            "label": value,
                            "label_quality": row.get(f"{finding}_label_quality", "").strip(),
                            "source": where,
                        },
                    ),
                )
        return data

    def select(self, samples: Iterator[Sample], params: dict[str, Any]) -> Iterator[Sample]:
        """``dataset.findings: [edema, ...]`` keeps those findings only."""
        wanted = params.get("findings")
        if not wanted:
            return samples
        keep = {str(f).replace("_", " ").lower() for f in wanted}
        return (s for s in samples if s.query["finding"] in keep)
