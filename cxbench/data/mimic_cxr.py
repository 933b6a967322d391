"""MIMIC-CXR-JPG with the MIMIC-CXR free-text reports, read in place from the PhysioNet layout.

``ROOT`` (``--data-root`` or ``dataset.root``) is the MIMIC-CXR-JPG folder
(``physionet.org/files/mimic-cxr-jpg/2.0.0`` or ``2.1.0``)::

    ROOT/mimic-cxr-2.0.0-split.csv.gz        dicom_id, study_id, subject_id, split
    ROOT/mimic-cxr-2.0.0-metadata.csv.gz     dicom_id, ..., ViewPosition, StudyDate, StudyTime
    ROOT/mimic-cxr-2.0.0-chexpert.csv.gz     subject_id, study_id, 14 CheXpert labels
    ROOT/mimic-cxr-2.0.0-negbio.csv.gz       the same labels from NegBio (dataset.labeler: negbio)
    ROOT/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg

(each CSV plain or ``.gz``). A DICOM copy (MIMIC-CXR, ``<dicom_id>.dcm`` in the same folders)
is used where the ``.jpg`` is absent. The reports come from MIMIC-CXR's
``mimic-cxr-reports.zip`` (``files/p10/p10000032/s50414267.txt``), looked up in this order:
``dataset.reports_root`` (a folder holding ``files/`` or the ``p10``... folders, or the zip
itself), ``ROOT/files/`` (the zip unpacked into ROOT, the ``.txt`` beside each study folder),
``ROOT/mimic-cxr-reports/files/``, ``ROOT/mimic-cxr-reports.zip`` (read in place).

Splits: the official ``split`` column, ``train``, ``validate`` (cxbench ``val``) and ``test``.

Policies
--------
- Views: one image per study, the frontal one by ``ViewPosition``: PA, then AP (set another
  order with ``dataset.views``, e.g. ``[AP, PA]``); studies without one are left out of
  every family. Ties go to the first ``dicom_id`` of the split file.
- ``report_generation``: the target is the ``FINDINGS:`` section of the report
  (``dataset.section: impression`` for ``IMPRESSION:``, or ``findings_impression`` for both
  joined). Sections are found by their upper-case header at the start of a line and run to
  the next such header; the last occurrence wins; ``FINDINGS AND IMPRESSION:`` counts as
  both, ``CONCLUSION:`` as the impression. A study whose report lacks the section, or has
  no report file, is left out (``cxbench data check`` counts both).
- Labels: ``dataset.labeler`` ``chexpert`` (default) or ``negbio``; uncertain (-1) and blank
  values follow ``dataset.uncertain`` / ``dataset.blank`` as in :mod:`cxbench.data.chexpert`
  (default: neither is asked about).
- ``vqa_closed``: one yes/no question per frontal study and observation with a decided
  label (13 observations, not ``No Finding``).
- ``temporal_comparison`` (**label-derived**): each patient's frontal studies with labels,
  ordered by ``StudyDate``, ``StudyTime`` (then ``study_id``), form consecutive pairs (prior,
  current) within a split. For each of the 12 pathologies (not ``No Finding`` or ``Support
  Devices``) decided in both studies: 0 -> 1 is ``worsened`` (new), 1 -> 0 ``improved``
  (resolved), 1 -> 1 ``stable`` (persistent); 0 -> 0 is not asked. The change comes from the
  two reports' labels, not from a radiologist comparing the images; a persistent finding
  that grew or shrank is still ``stable``.
- ``diagnosis_recall1``: the single-positive rule of :mod:`cxbench.data.chexpert`.

A study whose image file is missing still gives its samples (the runner records
``missing_image``; ``dataset.skip_missing_images: true`` leaves them out).
Errors name the file and the row (row 1 = the first row after the header). Unreadable rows
are skipped with a warning (``dataset.strict: true`` fails instead); ids that would make an
image path leave ROOT, or a symbolic link leading outside it, refuse the data set.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError
from cxbench.data.chexpert import (
    DIAGNOSIS_QUESTION,
    FINDINGS,
    PATHOLOGIES,
    REPORT_QUESTIONS,
    LabelPolicy,
    PathGuard,
    check_split,
    csv_rows,
    file_digest,
    label_distribution,
    read_labels,
    refuse_escapes,
    report_section,
    report_target,
    single_disease,
    slug,
    stat_key,
    warn_problems,
    yes_no_samples,
)
from cxbench.labels import CHEXPERT_14
from cxbench.schema import Sample

NAME = "mimic_cxr"
FAMILIES = ("report_generation", "vqa_closed", "temporal_comparison", "diagnosis_recall1")
LABELERS = ("chexpert", "negbio")
SPLITS = {"train": "train", "validate": "val", "test": "test"}
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
META_COLUMNS = ("dicom_id", "ViewPosition", "StudyDate", "StudyTime")
LABEL_COLUMNS = ("subject_id", "study_id", *CHEXPERT_14)
DEFAULT_VIEWS = ("PA", "AP")
TEMPORAL_QUESTION = (
    "The first image is the prior study and the second image is the current study. "
    "Compared with the prior, has the {finding} improved, worsened, or remained stable?"
)
_DICOM_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.-]*$")


# ---------------------------------------------------------------------------------------------
# reports


_HEADER_RE = re.compile(r"^[ \t]*([A-Z][A-Z0-9 ,/&()'-]{0,60}?)[ \t]*:", re.MULTILINE)


def report_sections(text: str) -> dict[str, str]:
    """Upper-case ``HEADER:`` sections of a report (whitespace normalised; the last one wins)."""
    matches = list(_HEADER_RE.finditer(text))
    sections: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        sections[" ".join(match.group(1).split())] = " ".join(text[match.end() : end].split())
    return sections


def findings_and_impression(text: str) -> tuple[str, str]:
    """(findings, impression) of a MIMIC-CXR report; "" where the section is missing."""
    sections = report_sections(text)
    both = sections.get("FINDINGS AND IMPRESSION") or sections.get("IMPRESSION AND FINDINGS") or ""
    findings = sections.get("FINDINGS") or both
    impression = sections.get("IMPRESSION") or sections.get("CONCLUSION") or both
    return findings, impression


class ReportStore:
    """Finds ``pXX/pNNNNNNNN/sNNNNNNNN.txt`` in report folders or a zip (see module doc)."""

    def __init__(self, root: Path, reports_root: str | None) -> None:
        folders: list[Path] = []
        zips: list[Path] = []
        if reports_root:
            base = Path(reports_root).expanduser()
            if not base.exists():
                raise DataError(f"{NAME}: dataset.reports_root {base} does not exist")
            if base.is_file():
                zips.append(base)
            else:
                folders += [base / "files", base]
        folders += [root / "files", root / "mimic-cxr-reports" / "files"]
        zips.append(root / "mimic-cxr-reports.zip")
        self.folders = [f for f in folders if f.is_dir()]
        self.zips = [z for z in zips if z.is_file()]
        self._zip_index: dict[str, tuple[Path, str]] | None = None

    def key(self) -> tuple:
        """Where reports are looked up (part of the cache key of the loaded data)."""
        return tuple(str(p) for p in (*self.folders, *self.zips)) + stat_key(self.zips)

    def __hash__(self) -> int:
        return hash(self.key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReportStore) and self.key() == other.key()

    def describe(self) -> str:
        places = [str(p) for p in (*self.folders, *self.zips)]
        return ", ".join(places) or "nowhere"

    def _index(self) -> dict[str, tuple[Path, str]]:
        if self._zip_index is None:
            self._zip_index = {}
            for path in self.zips:
                with zipfile.ZipFile(path) as archive:
                    for member in archive.namelist():
                        match = re.search(r"(p\d\d/p\d+/s\d+\.txt)$", member)
                        if match:
                            self._zip_index.setdefault(match.group(1), (path, member))
        return self._zip_index

    def find(self, subject: str, study: str) -> tuple[str | None, str]:
        """(report text or None, where it is or was looked for)."""
        relative = f"p{subject[:2]}/p{subject}/s{study}.txt"
        for folder in self.folders:
            path = folder / relative
            try:
                return path.read_text(encoding="utf-8", errors="replace"), str(path)
            except FileNotFoundError:
                continue
        if self.zips:
            found = self._index().get(relative)
            if found is not None:
                with zipfile.ZipFile(found[0]) as archive:
                    return archive.read(found[1]).decode("utf-8", errors="replace"), f"{found[0]}:{found[1]}"
        return None, relative


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class MimicImage:
    dicom: str
    view: str
    date: str
    time: str
    where: str  # row of the split file


@dataclass
class Study:
    subject: str
    study: str
    split: str
    where: str  # split file row of its first image
    images: list[MimicImage] = field(default_factory=list)
    frontal: MimicImage | None = None
    path: str = ""  # resolved path of the frontal image
    labels: dict[str, int | None] | None = None

    @property
    def order(self) -> tuple:
        image = self.frontal
        try:
            time = float(image.time) if image else 0.0
        except ValueError:
            time = 0.0
        return (image.date if image else "", time, self.study)


@dataclass
class MimicData:
    root: Path
    files: dict[str, Path | None]  # split, metadata, labels
    studies: dict[tuple[str, str], Study]
    reports: ReportStore
    views: tuple[str, ...]
    problems: list[str] = field(default_factory=list)
    escapes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        return [s for s in ("train", "val", "test") if any(st.split == s for st in self.studies.values())]

    def frontal_studies(self, split: str) -> list[Study]:
        return [s for s in self.studies.values() if s.split == split and s.frontal is not None]

    def report(self, study: Study) -> tuple[str | None, str]:
        """(report text or None, where); read on each call (the texts are not kept in memory)."""
        return self.reports.find(study.subject, study.study)


def _find(root: Path, kind: str) -> Path | None:
    """``mimic-cxr-2.0.0-<kind>.csv`` or ``.csv.gz`` (another release number is accepted too)."""
    for pattern in (f"mimic-cxr-2.0.0-{kind}.csv", f"mimic-cxr-2.0.0-{kind}.csv.gz"):
        if (root / pattern).is_file():
            return root / pattern
    found = sorted(p for p in root.glob(f"mimic-cxr-*-{kind}.csv*") if p.is_file())
    return found[-1] if found else None


def _digits(value: str, column: str, where: str) -> str:
    text = value.strip()
    if text.endswith(".0"):
        text = text[:-2]
    if not text.isdigit():
        raise DataError(f"{where}: {column!r} is {value!r}, expected a number")
    return text


def load(
    root: str | os.PathLike[str],
    labeler: str = "chexpert",
    reports_root: str | None = None,
    views: tuple[str, ...] = DEFAULT_VIEWS,
) -> MimicData:
    path = Path(root).expanduser() if str(root) else Path("")
    if not str(root) or not path.is_dir():
        raise DataError(
            f"{NAME}: data folder not found: {path} (pass --data-root ROOT, the MIMIC-CXR-JPG folder "
            "with mimic-cxr-2.0.0-split.csv.gz, mimic-cxr-2.0.0-metadata.csv.gz and files/)"
        )
    if labeler not in LABELERS:
        raise DataError(f"{NAME}: dataset.labeler must be one of {LABELERS}, not {labeler!r}")
    path = path.resolve()
    files = {
        "split": _find(path, "split"),
        "metadata": _find(path, "metadata"),
        "labels": _find(path, labeler),
    }
    for kind in ("split", "metadata"):
        if files[kind] is None:
            raise DataError(f"{NAME}: no mimic-cxr-2.0.0-{kind}.csv(.gz) in {path}")
    views = tuple(v.strip().upper() for v in views)
    key = stat_key(files.values())
    return _load(path, labeler, ReportStore(path, reports_root), views, tuple(files.items()), key)


@lru_cache(maxsize=2)
def _load(
    root: Path, labeler: str, reports: ReportStore, views: tuple[str, ...], files: tuple, _key: tuple
) -> MimicData:
    file_map: dict[str, Path | None] = dict(files)
    data = MimicData(root, file_map, {}, reports, views)
    meta_file, split_file = file_map["metadata"], file_map["split"]
    assert meta_file is not None and split_file is not None

    metadata: dict[str, tuple[str, str, str]] = {}
    for number, row in csv_rows(meta_file, META_COLUMNS, META_COLUMNS):
        where = f"{meta_file}, row {number}"
        if isinstance(row, str):
            data.problems.append(f"{where}: {row}")
            continue
        date, time = row["StudyDate"], row["StudyTime"]
        if not (len(date) == 8 and date.isdigit()):
            data.problems.append(f"{where}: 'StudyDate' is {date!r}, expected YYYYMMDD")
            continue
        try:
            float(time)
        except ValueError:
            data.problems.append(f"{where}: 'StudyTime' is {time!r}, expected HHMMSS(.fff)")
            continue
        metadata[row["dicom_id"]] = (row["ViewPosition"].strip().upper(), date, time)

    for number, row in csv_rows(split_file, SPLIT_COLUMNS, SPLIT_COLUMNS):
        where = f"{split_file}, row {number}"
        if isinstance(row, str):
            data.problems.append(f"{where}: {row}")
            continue
        try:
            subject = _digits(row["subject_id"], "subject_id", where)
            study_id = _digits(row["study_id"], "study_id", where)
        except DataError as exc:
            data.problems.append(str(exc))
            continue
        dicom = row["dicom_id"]
        if not _DICOM_RE.match(dicom) or ".." in dicom:
            message = f"{where}: 'dicom_id' {dicom!r} is not a DICOM id"
            if ".." in dicom or dicom.startswith(("/", "\\")):
                data.escapes.append(f"{message}; as a path it would leave the data folder {root} (refused)")
            else:
                data.problems.append(message)
            continue
        split = SPLITS.get(row["split"].strip().lower())
        if split is None:
            data.problems.append(
                f"{where}: unknown split {row['split']!r} (expected train, validate or test)"
            )
            continue
        if dicom not in metadata:
            data.problems.append(f"{where}: dicom_id {dicom!r} is not in {meta_file.name}")
            continue
        study = data.studies.setdefault((subject, study_id), Study(subject, study_id, split, where))
        if study.split != split:
            data.problems.append(
                f"{where}: study {study_id} is in split {split!r} here, {study.split!r} at {study.where}"
            )
            continue
        view, date, time = metadata[dicom]
        study.images.append(MimicImage(dicom, view, date, time, where))

    guard = PathGuard(root)
    lateral_only = 0
    for study in data.studies.values():
        ranked = [i for i in study.images if i.view in views]
        if not ranked:
            lateral_only += 1
            continue
        frontal = min(ranked, key=lambda i: views.index(i.view))
        folder = f"files/p{study.subject[:2]}/p{study.subject}/s{study.study}"
        try:
            path = guard.resolve(f"{folder}/{frontal.dicom}.jpg", frontal.where)
            if not os.path.exists(path):
                dcm = guard.resolve(f"{folder}/{frontal.dicom}.dcm", frontal.where)
                path = dcm if os.path.exists(dcm) else path
        except DataError as exc:
            data.escapes.append(str(exc))
            continue
        study.frontal, study.path = frontal, path
    if lateral_only:
        data.notes.append(f"{lateral_only} study(ies) have no {'/'.join(views)} image (left out)")

    label_file = file_map["labels"]
    if label_file is None:
        data.notes.append(f"no mimic-cxr-2.0.0-{labeler}.csv(.gz): only report_generation is available")
        return data
    unlisted = 0
    for number, row in csv_rows(label_file, LABEL_COLUMNS, LABEL_COLUMNS):
        where = f"{label_file}, row {number}"
        if isinstance(row, str):
            data.problems.append(f"{where}: {row}")
            continue
        try:
            key = (
                _digits(row["subject_id"], "subject_id", where),
                _digits(row["study_id"], "study_id", where),
            )
            labels = read_labels(row, CHEXPERT_14, where)
        except DataError as exc:
            data.problems.append(str(exc))
            continue
        study = data.studies.get(key)
        if study is None:
            unlisted += 1
        elif study.labels is not None:
            data.problems.append(f"{where}: duplicate labels for study {key[1]}")
        else:
            study.labels = labels
    if unlisted:
        data.notes.append(f"{unlisted} labelled studies of {label_file.name} are not in {split_file.name}")
    return data


# ---------------------------------------------------------------------------------------------
# samples


def _meta(study: Study, split: str) -> dict[str, Any]:
    image = study.frontal
    assert image is not None
    return {
        "dataset": NAME,
        "split": split,
        "subject_id": study.subject,
        "study_id": study.study,
        "dicom_id": image.dicom,
        "view": image.view,
        "study_date": image.date,
        "study_time": image.time,
        # the study's labels (never sent to models)
        "labels": {k: v for k, v in (study.labels or {}).items() if v is not None},
    }


def _labelled(data: MimicData, split: str, family: str) -> list[Study]:
    if data.files["labels"] is None:
        raise DataError(
            f"{NAME}: {family} needs the label file mimic-cxr-2.0.0-chexpert.csv(.gz) in {data.root}"
        )
    return [s for s in data.frontal_studies(split) if s.labels is not None]


def _temporal(data: MimicData, split: str, policy: LabelPolicy) -> Iterator[Sample]:
    by_subject: dict[str, list[Study]] = {}
    for study in _labelled(data, split, "temporal_comparison"):
        by_subject.setdefault(study.subject, []).append(study)
    for subject, studies in by_subject.items():
        studies.sort(key=lambda s: s.order)
        for prior, current in zip(studies, studies[1:], strict=False):
            assert prior.labels is not None and current.labels is not None and prior.frontal is not None
            for observation in PATHOLOGIES:
                before = policy.decide(prior.labels.get(observation))
                after = policy.decide(current.labels.get(observation))
                if before is None or after is None or (before, after) == (0, 0):
                    continue
                change, transition = {
                    (0, 1): ("worsened", "new"),
                    (1, 0): ("improved", "resolved"),
                    (1, 1): ("stable", "persistent"),
                }[(before, after)]
                finding = FINDINGS[observation][0]
                yield Sample(
                    id=f"{NAME}:{subject}:s{prior.study}-s{current.study}:change:{slug(finding)}",
                    images=[prior.path, current.path],
                    question=TEMPORAL_QUESTION.format(finding=finding),
                    target=change,
                    query={"kind": "change", "finding": finding},
                    metadata={
                        **_meta(current, split),
                        "prior_study_id": prior.study,
                        "prior_dicom_id": prior.frontal.dicom,
                        "prior_study_date": prior.frontal.date,
                        "prior_labels": {k: v for k, v in prior.labels.items() if v is not None},
                        "observation": observation,
                        "raw_change": transition,
                        "change_source": "labels",  # derived from the two reports' labels
                    },
                )


def build_samples(data: MimicData, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
    if family not in FAMILIES:
        raise DataError(f"{NAME} provides the families {', '.join(FAMILIES)}, not {family!r}")
    check_split(NAME, split, data.splits)
    policy = LabelPolicy.from_params(params, NAME)
    if family == "temporal_comparison":
        yield from _temporal(data, split, policy)
        return
    if family == "report_generation":
        section = report_section(params, NAME)
        if not data.reports.folders and not data.reports.zips:
            raise DataError(
                f"{NAME}: no reports found (looked for files/p*/p*/s*.txt under {data.root}/files, "
                f"{data.root}/mimic-cxr-reports/files and {data.root}/mimic-cxr-reports.zip; "
                "set dataset.reports_root)"
            )
        studies = data.frontal_studies(split)
        found = 0
        for study in studies:
            text, _where = data.report(study)
            if text is None:
                continue
            found += 1
            findings, impression = findings_and_impression(text)
            target = report_target(findings, impression, section)
            if target is None:
                continue
            yield Sample(
                id=f"{NAME}:{study.subject}:s{study.study}:report",
                images=[study.path],
                question=REPORT_QUESTIONS[section],
                target=target,
                query={"kind": section},
                metadata={**_meta(study, split), "findings": findings, "impression": impression},
            )
        if studies and not found:
            raise DataError(
                f"{NAME}: none of the {len(studies)} {split} studies has a report file (looked in "
                f"{data.reports.describe()}; set dataset.reports_root to the unpacked mimic-cxr-reports)"
            )
        return
    for study in _labelled(data, split, family):
        assert study.labels is not None
        prefix = f"{NAME}:{study.subject}:s{study.study}"
        if family == "vqa_closed":
            yield from yes_no_samples(prefix, study.path, study.labels, policy, _meta(study, split))
            continue
        disease = single_disease(study.labels, policy)
        if disease is not None:
            yield Sample(
                id=f"{prefix}:dx",
                images=[study.path],
                question=DIAGNOSIS_QUESTION,
                target=disease,
                query={"kind": "diagnosis"},
                metadata=_meta(study, split),
            )


def _views(params: dict[str, Any]) -> tuple[str, ...]:
    views = params.get("views", DEFAULT_VIEWS)
    return (views,) if isinstance(views, str) else tuple(views)


#: splits with more studies than this are not read report by report in ``cxbench data check``
CHECK_READ_LIMIT = 20_000


class MimicCXRAdapter:
    """MIMIC-CXR-JPG + reports from ROOT: report_generation, vqa_closed, temporal, diagnosis."""

    name = NAME

    def data(self, params: dict[str, Any]) -> MimicData:
        return load(
            params.get("root") or "",
            str(params.get("labeler", "chexpert")).lower(),
            params.get("reports_root"),
            _views(params),
        )

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        if family not in FAMILIES:
            raise DataError(f"{NAME} provides the families {', '.join(FAMILIES)}, not {family!r}")
        data = self.data(params)
        refuse_escapes(data.escapes)
        warn_problems(NAME, data.root, data.problems, params)
        for sample in build_samples(data, family, split, params):
            if params.get("skip_missing_images") and not all(os.path.exists(p) for p in sample.images):
                continue
            yield sample

    def identity(self, params: dict[str, Any]) -> str:
        data = self.data(params)
        policy = LabelPolicy.from_params(params, NAME)
        extra = "/".join(
            [policy.key(), report_section(params, NAME), ",".join(data.views), data.reports.describe()]
        )
        return f"{NAME}-{file_digest(data.files.values(), extra)}"

    def check(self, report: Any, root: str) -> None:
        from cxbench.data.check import tally

        data = load(root)
        report.malformed.extend(data.escapes + data.problems)
        report.notes.append(
            "files: " + ", ".join(f"{k}={v.name}" for k, v in data.files.items() if v is not None)
        )
        report.notes.append(f"reports looked up in: {data.reports.describe()}")
        report.notes.extend(data.notes)
        seen: set[str] = set()
        families = [
            f for f in FAMILIES if f != "report_generation" or data.reports.folders or data.reports.zips
        ]
        if data.files["labels"] is None:
            families = [f for f in families if f == "report_generation"]
        for split in data.splits:
            studies = data.frontal_studies(split)
            for family in families:
                if family == "report_generation" and len(studies) > CHECK_READ_LIMIT:
                    report.notes.append(
                        f"{split}: {len(studies)} studies; their reports are not read by the check "
                        f"(more than {CHECK_READ_LIMIT}), report_generation not counted"
                    )
                    continue
                try:
                    tally(report, split, family, build_samples(data, family, split, {}), seen)
                except DataError as exc:  # e.g. no report at all: the other families still count
                    report.notes.append(f"{split}/{family}: {exc}")
            if "report_generation" in families and len(studies) <= CHECK_READ_LIMIT:
                self._report_problems(report, data, split, studies)
            report.labels.update(label_distribution(split, [s.labels for s in studies if s.labels]))

    @staticmethod
    def _report_problems(report: Any, data: MimicData, split: str, studies: list[Study]) -> None:
        missing, no_findings = [], 0
        for study in studies:
            text, where = data.report(study)
            if text is None:
                missing.append(f"study s{study.study} ({study.where}): report file {where} not found")
            elif not findings_and_impression(text)[0]:
                no_findings += 1
        if len(missing) < len(studies):  # no report at all is noted once by the tally above
            report.malformed.extend(missing)
        if no_findings:
            report.notes.append(
                f"{split}: {no_findings} report(s) without a FINDINGS section (left out of report_generation)"
            )
