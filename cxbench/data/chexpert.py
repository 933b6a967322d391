"""CheXpert and CheXpert Plus, read in place from their official layouts.

This module also holds what the CheXpert-labelled data sets share (MIMIC-CXR-JPG uses it too):
the label values of the 14 CheXpert observations, the uncertainty policy, the yes/no
questions and the single-positive diagnosis rule, and :class:`PathGuard`, which resolves the
image paths of a manifest under ROOT and refuses any that leave it.

CheXpert (``chexpert``)
-----------------------
``ROOT`` is the data set folder of the Stanford AIMI download, ``CheXpert-v1.0-small`` (or
``CheXpert-v1.0``)::

    ROOT/train.csv, ROOT/valid.csv            (optional: ROOT/test_labels.csv or ROOT/test.csv)
    ROOT/train/patient00001/study1/view1_frontal.jpg ...
    ROOT/valid/patient64541/study1/view1_frontal.jpg ...

The ``Path`` column of the official CSVs starts with the data set folder's own name
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``): paths are relative to
the *parent* of ROOT. cxbench drops that first component when it is ROOT's folder name or
any ``CheXpert-v1.0*`` name (so a renamed folder still works) and resolves the rest under
ROOT; a path without it (``train/patient00001/...``) is resolved under ROOT as is. ROOT may
also be the folder that holds exactly one ``CheXpert-v1.0*`` data set folder.

Splits: ``train`` = train.csv, ``val`` = valid.csv (the 234 radiologist-labelled images; the
tasks evaluate on it by default), ``test`` = test_labels.csv / test.csv when present (the
later released test set; a missing ``Frontal/Lateral`` column is read from the file name).

CheXpert Plus (``chexpert_plus``)
---------------------------------
``ROOT`` is the folder of ``df_chexpert_plus_240401.csv`` (any ``df_chexpert_plus*.csv``),
with the images unpacked beside it. Columns used: ``path_to_image`` (e.g.
``train/patient00001/study1/view1_frontal.jpg``), ``frontal_lateral`` (``Frontal`` /
``Lateral``), ``ap_pa``, ``deid_patient_id``, ``split`` (``train`` / ``valid``),
``section_findings``, ``section_impression``. ``path_to_image`` is resolved under the first of
``ROOT/PNG/PNG``, ``ROOT/PNG``, ``ROOT`` that has a ``train/`` or ``valid/`` folder (or under
``dataset.image_root``, a folder inside ROOT); the release's PNG files keep the CSV's path
but end in ``.png``, so a missing ``.jpg`` is looked up as ``.png`` (the original
CheXpert JPGs work as well).

Policies (both data sets)
-------------------------
- Views: one image per study, the frontal one, preferring PA, then AP, then any other
  frontal view; laterals are never used. Studies without a frontal image are left out.
- Labels (1 present, 0 absent, -1 uncertain, blank not mentioned): ``dataset.uncertain``
  ``ignore`` (default; the observation is not asked about), ``positive`` (U-Ones) or
  ``negative`` (U-Zeros); ``dataset.blank`` ``ignore`` (default: not mentioned is not
  absent) or ``negative``.
- ``vqa_closed``: one yes/no question per frontal study and observation with a decided
  label, over the 13 observations other than ``No Finding``.
- ``diagnosis_recall1`` (CheXpert): studies whose only positive pathology is one of the seven
  observations that are also ChestX-ray14 diseases (Atelectasis, Cardiomegaly,
  Consolidation, Edema, Pleural Effusion, Pneumonia, Pneumothorax). ``Support Devices`` and
  ``No Finding`` do not count; a positive parent label of the CheXpert hierarchy is allowed
  beside its child (``Lung Opacity`` beside Atelectasis, Consolidation, Edema or Pneumonia;
  ``Enlarged Cardiomediastinum`` beside Cardiomegaly); any other uncertain pathology leaves
  the study out under ``uncertain: ignore``.
- ``report_generation`` (CheXpert Plus): ``dataset.section`` ``findings`` (default; rows
  with an empty ``section_findings`` are left out), ``impression``, or
  ``findings_impression`` (both sections present, joined).

A sample whose image file is missing is still produced (the runner records ``missing_image``;
``dataset.skip_missing_images: true`` leaves it out).
Errors name the file and the row (row 1 = the first row after the header). Rows that cannot
be read are skipped with a warning (``dataset.strict: true`` fails instead); an image path
that leaves ROOT (``..``, an absolute path, a symbolic link pointing outside) refuses the
data set. ``cxbench data check chexpert ROOT`` lists both, and the image files that are
missing (looked up with ``os.stat``; no pixel is read).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError
from cxbench.data.validate import warn_skipped
from cxbench.labels import CHEXPERT_14
from cxbench.schema import Sample

# ---------------------------------------------------------------------------------------------
# what the CheXpert-labelled data sets share

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
#: observations asked about in vqa_closed (all but No Finding)
VQA_OBSERVATIONS: tuple[str, ...] = tuple(o for o in CHEXPERT_14 if o != NO_FINDING)
#: pathologies: observations whose change between studies means something (temporal, diagnosis)
PATHOLOGIES: tuple[str, ...] = tuple(o for o in CHEXPERT_14 if o not in (NO_FINDING, SUPPORT_DEVICES))
#: CheXpert observations that are also ChestX-ray14 diseases (cxbench.labels.DISEASES_14 names)
CHEXPERT_TO_DISEASE = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Pleural Effusion": "pleural effusion",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
}
#: parent observations of the CheXpert label hierarchy -> their children
PARENTS = {
    "Lung Opacity": ("Edema", "Consolidation", "Pneumonia", "Atelectasis", "Lung Lesion"),
    "Enlarged Cardiomediastinum": ("Cardiomegaly",),
}
#: observation -> (finding name used in questions and ``query``, article before it in a question)
FINDINGS: dict[str, tuple[str, str]] = {
    "Enlarged Cardiomediastinum": ("enlarged cardiomediastinum", "an "),
    "Cardiomegaly": ("cardiomegaly", ""),
    "Lung Opacity": ("lung opacity", "a "),
    "Lung Lesion": ("lung lesion", "a "),
    "Edema": ("edema", ""),
    "Consolidation": ("consolidation", ""),
    "Pneumonia": ("pneumonia", ""),
    "Atelectasis": ("atelectasis", ""),
    "Pneumothorax": ("pneumothorax", "a "),
    "Pleural Effusion": ("pleural effusion", "a "),
    "Pleural Other": ("pleural abnormality other than effusion", "a "),
    "Fracture": ("fracture", "a "),
    "Support Devices": ("support device", "a "),
}
UNCERTAIN_POLICIES = ("ignore", "positive", "negative")
BLANK_POLICIES = ("ignore", "negative")
SECTIONS = ("findings", "impression", "findings_impression")
REPORT_QUESTIONS = {
    "findings": "Write the findings section of the radiology report for this chest X-ray.",
    "impression": "Write the impression section of the radiology report for this chest X-ray.",
    "findings_impression": (
        "Write the findings and impression sections of the radiology report for this chest X-ray."
    ),
}
DIAGNOSIS_QUESTION = "What is the most likely diagnosis for this chest X-ray?"


def slug(text: str) -> str:
    return "_".join(text.lower().split())


_LABEL_TEXT: dict[str, int | None] = {"1.0": 1, "0.0": 0, "-1.0": -1, "": None, "1": 1, "0": 0, "-1": -1}


def label_value(text: str) -> int | None:
    """``1.0`` / ``0.0`` / ``-1.0`` / blank -> 1 / 0 / -1 / None; anything else raises ValueError."""
    if text in _LABEL_TEXT:
        return _LABEL_TEXT[text]
    text = text.strip()
    if not text:
        return None
    value = float(text)
    if value not in (1.0, 0.0, -1.0):
        raise ValueError(text)
    return int(value)


def read_labels(row: dict[str, str], columns: Iterable[str], where: str) -> dict[str, int | None]:
    labels = {}
    for column in columns:
        try:
            labels[column] = label_value(row.get(column, ""))
        except ValueError:
            raise DataError(
                f"{where}: label {column!r} is {row.get(column)!r}, expected 1.0, 0.0, -1.0 or blank"
            ) from None
    return labels


@dataclass(frozen=True)
class LabelPolicy:
    uncertain: str = "ignore"
    blank: str = "ignore"

    @classmethod
    def from_params(cls, params: dict[str, Any], dataset: str) -> LabelPolicy:
        uncertain = str(params.get("uncertain", "ignore")).lower()
        blank = str(params.get("blank", "ignore")).lower()
        if uncertain not in UNCERTAIN_POLICIES:
            raise DataError(
                f"{dataset}: dataset.uncertain must be one of {UNCERTAIN_POLICIES}, not {uncertain!r}"
            )
        if blank not in BLANK_POLICIES:
            raise DataError(f"{dataset}: dataset.blank must be one of {BLANK_POLICIES}, not {blank!r}")
        return cls(uncertain, blank)

    def decide(self, value: int | None) -> int | None:
        """1 (present), 0 (absent) or None (not asked about) under this policy."""
        if value is None:
            return 0 if self.blank == "negative" else None
        if value == -1:
            return {"ignore": None, "positive": 1, "negative": 0}[self.uncertain]
        return value

    def key(self) -> str:
        return f"u-{self.uncertain}/b-{self.blank}"


def yes_no_samples(
    id_prefix: str, image: str, labels: dict[str, int | None], policy: LabelPolicy, meta: dict[str, Any]
) -> Iterator[Sample]:
    """One yes/no question per observation (no ``No Finding``) with a decided label."""
    for observation in VQA_OBSERVATIONS:
        state = policy.decide(labels.get(observation))
        if state is None:
            continue
        finding, article = FINDINGS[observation]
        yield Sample(
            id=f"{id_prefix}:yn:{slug(finding)}",
            images=[image],
            question=f"Is there {article}{finding} in this chest X-ray?",
            target="yes" if state == 1 else "no",
            query={"kind": "yes_no", "finding": finding},
            metadata={**meta, "observation": observation, "label": labels.get(observation)},
        )


def single_disease(labels: dict[str, int | None], policy: LabelPolicy) -> str | None:
    """The DISEASES_14 name of a study's only positive pathology, else None (see module doc)."""
    positive = {o for o in PATHOLOGIES if policy.decide(labels.get(o)) == 1}
    uncertain = {o for o in PATHOLOGIES if labels.get(o) == -1 and policy.decide(-1) is None}
    children = {c for c in positive if c not in PARENTS}
    # a parent label is allowed beside one of its positive children
    parents = {p for p in PARENTS if p in positive | uncertain and children & set(PARENTS[p])}
    positive -= parents
    uncertain -= parents
    if len(positive) != 1 or uncertain:
        return None
    return CHEXPERT_TO_DISEASE.get(next(iter(positive)))


def report_target(findings: str, impression: str, section: str) -> str | None:
    """The reference text for ``section`` (whitespace normalised), or None when it is missing."""
    findings, impression = " ".join(findings.split()), " ".join(impression.split())
    if section == "findings":
        return findings or None
    if section == "impression":
        return impression or None
    return f"{findings} {impression}" if findings and impression else None


def report_section(params: dict[str, Any], dataset: str) -> str:
    section = str(params.get("section", "findings")).lower()
    if section not in SECTIONS:
        raise DataError(f"{dataset}: dataset.section must be one of {SECTIONS}, not {section!r}")
    return section


def label_distribution(split: str, studies: list[dict[str, int | None]]) -> dict[str, dict[str, int]]:
    """``{"split/study labels = 1": {observation: n}, ... = 0, ... = -1}`` over the given studies."""
    out: dict[str, dict[str, int]] = {}
    for value in (1, 0, -1):
        counts = {o: sum(labels.get(o) == value for labels in studies) for o in CHEXPERT_14}
        if any(counts.values()):
            out[f"{split}/study labels = {value}"] = {o: n for o, n in counts.items() if n}
    return out


VIEW_RANK = {"PA": 0, "AP": 1}


def view_rank(view: str) -> int:
    return VIEW_RANK.get(view.strip().upper(), 2)


# ---------------------------------------------------------------------------------------------
# reading files


def open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def csv_rows(
    path: Path, required: Iterable[str], keep: Iterable[str] | None = None
) -> Iterator[tuple[int, dict[str, str] | str]]:
    """(row number, row) pairs, or (row number, reason) for a row that cannot be read.

    Row 1 is the first row after the header; blank rows are skipped (but counted). With
    ``keep``, a row holds only those columns (faster on large files).
    """
    required = tuple(required)
    csv.field_size_limit(1 << 26)  # report texts can be long
    with open_text(path) as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file (expected columns {', '.join(required)})")
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing}; found {header}")
            kept = [(c, header.index(c)) for c in dict.fromkeys(keep) if c in header] if keep else None
            for number, values in enumerate(reader, 1):
                if len(values) != len(header) or not any(values):  # the common case skips this
                    if not any(v.strip() for v in values):
                        continue  # a blank row
                    if len(values) != len(header):
                        yield number, f"{len(values)} values for {len(header)} columns"
                        continue
                if kept is not None:
                    yield number, {c: values[i].strip() for c, i in kept}
                else:
                    yield number, dict(zip(header, (v.strip() for v in values), strict=True))
        except csv.Error as exc:
            raise DataError(f"{path}, line {reader.line_num}: not valid CSV ({exc})") from None


def file_digest(paths: Iterable[Path | None], extra: str = "") -> str:
    """A content fingerprint: name, size and the first and last MiB of each file."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        if path is None or not path.is_file():
            continue
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def stat_key(paths: Iterable[Path | None]) -> tuple:
    """Cheap key that changes when one of the files changes."""
    key = []
    for path in paths:
        try:
            stat = path.stat() if path is not None else None
        except OSError:
            stat = None
        key.append((str(path), stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1))
    return tuple(key)


class PathGuard:
    """Resolves manifest paths under ROOT and refuses any that leave it.

    Refused: absolute paths, any ``..`` component, and paths that a symbolic link (a folder
    or the file itself) leads outside ROOT. ROOT itself may be a symbolic link. Directories
    are resolved once and cached, so a manifest of 100,000s of rows costs one ``lstat`` per
    file; files are not required to exist.
    """

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self._dirs: dict[tuple[str, ...], str] = {(): self.root}

    def inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root.rstrip(os.sep) + os.sep)

    @staticmethod
    def _follow(parent: str, name: str) -> str:
        candidate = os.path.join(parent, name)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate

    def _dir(self, parts: tuple[str, ...]) -> str:
        found = self._dirs.get(parts)
        if found is None:
            found = self._follow(self._dir(parts[:-1]), parts[-1])
            self._dirs[parts] = found
        return found

    def resolve(self, relative: str, where: str) -> str:
        text = relative.strip()
        if not text:
            raise DataError(f"{where}: empty image path")
        posix = text.replace("\\", "/")
        if posix.startswith("/") or re.match(r"^[A-Za-z]:/", posix):
            raise DataError(
                f"{where}: absolute image path {text!r} refused; paths must be relative to the "
                f"data folder {self.root}"
            )
        parts = tuple(p for p in posix.split("/") if p not in ("", "."))
        if ".." in parts or not parts:
            raise DataError(f"{where}: image path {text!r} leaves the data folder {self.root} (refused)")
        real = self._follow(self._dir(parts[:-1]), parts[-1])
        if not self.inside(real):
            raise DataError(
                f"{where}: image path {text!r} leads outside the data folder {self.root} through a "
                "symbolic link (refused)"
            )
        return real


def warn_problems(dataset: str, root: Path, problems: list[str], params: dict[str, Any]) -> None:
    if not problems:
        return
    if params.get("strict"):
        raise DataError(f"{dataset}: {problems[0]}")
    warn_skipped(dataset, len(problems), problems[0], root)


def refuse_escapes(escapes: list[str]) -> None:
    if escapes:
        more = f" (and {len(escapes) - 1} more)" if len(escapes) > 1 else ""
        raise DataError(escapes[0] + more)


def check_split(dataset: str, split: str, splits: Iterable[str]) -> None:
    splits = list(splits)
    if split not in splits:
        raise DataError(f"{dataset} has the splits {', '.join(splits)} here, not {split!r}")


# ---------------------------------------------------------------------------------------------
# CheXpert

CHEXPERT_FAMILIES = ("vqa_closed", "diagnosis_recall1")
CHEXPERT_SPLITS = {"train": ("train.csv",), "val": ("valid.csv",), "test": ("test_labels.csv", "test.csv")}
CHEXPERT_COLUMNS = ("Path", *CHEXPERT_14)
_STUDY_RE = re.compile(r"(patient\d+)/(study\d+)/")


@dataclass
class CheXpertImage:
    path: str  # resolved under ROOT
    relative: str  # as in the CSV
    split: str
    patient: str
    study: str
    frontal: bool
    view: str  # AP / PA / "" (frontal), LL / RL (lateral)
    labels: dict[str, int | None]
    row: dict[str, str]
    where: str


@dataclass
class CheXpertData:
    root: Path
    files: dict[str, Path]  # split -> CSV
    images: list[CheXpertImage]
    problems: list[str] = field(default_factory=list)
    escapes: list[str] = field(default_factory=list)

    def studies(self, split: str) -> list[CheXpertImage]:
        """The preferred frontal image of each study of ``split``, in CSV order."""
        best: dict[tuple[str, str], CheXpertImage] = {}
        for image in self.images:
            if image.split != split or not image.frontal:
                continue
            key = (image.patient, image.study)
            if key not in best or view_rank(image.view) < view_rank(best[key].view):
                best[key] = image
        return list(best.values())


def chexpert_root(root: str | os.PathLike[str]) -> Path:
    path = Path(root).expanduser() if str(root) else Path("")
    if not str(root) or not path.is_dir():
        raise DataError(
            f"chexpert: data folder not found: {path} (pass --data-root ROOT, the CheXpert-v1.0-small "
            "or CheXpert-v1.0 folder with train.csv and valid.csv)"
        )
    if not any((path / name).is_file() for names in CHEXPERT_SPLITS.values() for name in names):
        inner = sorted(p for p in path.glob("CheXpert-v1.0*") if (p / "valid.csv").is_file())
        if len(inner) == 1:
            return inner[0]
        raise DataError(f"chexpert: no train.csv or valid.csv in {path}")
    return path


def _chexpert_relative(text: str, root: Path) -> str:
    """The CSV ``Path`` relative to ROOT: drop the data set folder's name when it leads."""
    posix = text.strip().replace("\\", "/")
    head, _, rest = posix.partition("/")
    if rest and (head == root.name or head.startswith("CheXpert-v1.0")):
        return rest
    return posix


def _chexpert_image(
    guard: PathGuard, root: Path, split: str, row: dict[str, str], where: str
) -> CheXpertImage:
    relative = _chexpert_relative(row["Path"], root)
    path = guard.resolve(relative, where)
    labels = read_labels(row, CHEXPERT_14, where)
    side = row.get("Frontal/Lateral")
    if side is None:  # the test set's CSV has no view columns: read the file name
        name = relative.rsplit("/", 1)[-1].lower()
        side = "Frontal" if "frontal" in name else "Lateral" if "lateral" in name else ""
    if side not in ("Frontal", "Lateral"):
        raise DataError(f"{where}: 'Frontal/Lateral' is {side!r}, expected Frontal or Lateral")
    match = _STUDY_RE.search(relative)
    parts = relative.split("/")
    patient, study = match.groups() if match else (parts[-3] if len(parts) > 2 else "", parts[-2])
    return CheXpertImage(
        path=path,
        relative=row["Path"],
        split=split,
        patient=patient,
        study=study,
        frontal=side == "Frontal",
        view=row.get("AP/PA", ""),
        labels=labels,
        row=row,
        where=where,
    )


def load_chexpert(root: str | os.PathLike[str]) -> CheXpertData:
    path = chexpert_root(root).resolve()
    files = {}
    for split, names in CHEXPERT_SPLITS.items():
        found = next((path / name for name in names if (path / name).is_file()), None)
        if found is not None:
            files[split] = found
    return _load_chexpert(path, tuple(files.items()), stat_key(files.values()))


@lru_cache(maxsize=4)
def _load_chexpert(root: Path, files: tuple[tuple[str, Path], ...], _key: tuple) -> CheXpertData:
    guard = PathGuard(root)
    data = CheXpertData(root, dict(files), [])
    seen: dict[str, str] = {}
    for split, path in files:
        for number, row in csv_rows(path, CHEXPERT_COLUMNS):
            where = f"{path}, row {number}"
            if isinstance(row, str):
                data.problems.append(f"{where}: {row}")
                continue
            try:
                image = _chexpert_image(guard, root, split, row, where)
            except DataError as exc:
                (data.escapes if "refused" in str(exc) else data.problems).append(str(exc))
                continue
            if image.path in seen:
                first = seen[image.path]
                data.problems.append(f"{where}: duplicate image {row['Path']!r} (first at {first})")
                continue
            seen[image.path] = where
            data.images.append(image)
    return data


def _chexpert_meta(image: CheXpertImage) -> dict[str, Any]:
    return {
        "dataset": "chexpert",
        "split": image.split,
        "patient_id": image.patient,
        "study_id": image.study,
        "image_path": image.relative,
        "view": image.view or "frontal",
        "sex": image.row.get("Sex", ""),
        "age": image.row.get("Age", ""),
        # the study's labels (never sent to models)
        "labels": {k: v for k, v in image.labels.items() if v is not None},
    }


def chexpert_samples(data: CheXpertData, family: str, split: str, policy: LabelPolicy) -> Iterator[Sample]:
    if family not in CHEXPERT_FAMILIES:
        raise DataError(f"chexpert provides the families {', '.join(CHEXPERT_FAMILIES)}, not {family!r}")
    check_split("chexpert", split, data.files)
    for image in data.studies(split):
        meta = _chexpert_meta(image)
        prefix = f"chexpert:{image.patient}:{image.study}"
        if family == "vqa_closed":
            yield from yes_no_samples(prefix, image.path, image.labels, policy, meta)
            continue
        disease = single_disease(image.labels, policy)
        if disease is not None:
            yield Sample(
                id=f"{prefix}:dx",
                images=[image.path],
                question=DIAGNOSIS_QUESTION,
                target=disease,
                query={"kind": "diagnosis"},
                metadata=meta,
            )


def _tally_all(report: Any, splits: Iterable[str], families: Iterable[str], build) -> None:
    from cxbench.data.check import tally

    seen: set[str] = set()
    for split in splits:
        for family in families:
            tally(report, split, family, build(family, split), seen)


class CheXpertAdapter:
    """CheXpert(-small) from ROOT: ``vqa_closed`` and ``diagnosis_recall1`` (see module doc)."""

    name = "chexpert"

    def data(self, params: dict[str, Any]) -> CheXpertData:
        return load_chexpert(params.get("root") or "")

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        if family not in CHEXPERT_FAMILIES:
            raise DataError(f"chexpert provides the families {', '.join(CHEXPERT_FAMILIES)}, not {family!r}")
        policy = LabelPolicy.from_params(params, self.name)
        data = self.data(params)
        refuse_escapes(data.escapes)
        warn_problems(self.name, data.root, data.problems, params)
        for sample in chexpert_samples(data, family, split, policy):
            if params.get("skip_missing_images") and not os.path.exists(sample.images[0]):
                continue
            yield sample

    def identity(self, params: dict[str, Any]) -> str:
        data = self.data(params)
        policy = LabelPolicy.from_params(params, self.name)
        return f"chexpert-{file_digest(data.files.values(), policy.key())}"

    def check(self, report: Any, root: str) -> None:
        data = load_chexpert(root)
        report.malformed.extend(data.escapes + data.problems)
        report.notes.append("label files: " + ", ".join(f"{s}={p.name}" for s, p in data.files.items()))
        frontal = sum(i.frontal for i in data.images)
        report.notes.append(
            f"{len(data.images)} images ({frontal} frontal); one frontal image per study (PA, then AP); "
            "uncertain labels ignored, blank = not mentioned"
        )
        policy = LabelPolicy()
        _tally_all(report, data.files, CHEXPERT_FAMILIES, lambda f, s: chexpert_samples(data, f, s, policy))
        for split in data.files:
            report.labels.update(label_distribution(split, [i.labels for i in data.studies(split)]))


# ---------------------------------------------------------------------------------------------
# CheXpert Plus

PLUS_FAMILIES = ("report_generation",)
PLUS_CSV_GLOB = "df_chexpert_plus*.csv"
PLUS_COLUMNS = (
    "path_to_image",
    "frontal_lateral",
    "deid_patient_id",
    "split",
    "section_findings",
    "section_impression",
)
PLUS_SPLITS = {"train": "train", "valid": "val", "validate": "val", "val": "val", "test": "test"}
_IMAGE_BASES = ("PNG/PNG", "PNG", "")


@dataclass
class PlusRow:
    path: str
    relative: str
    split: str
    patient: str
    study: str
    view: str
    findings: str
    impression: str
    where: str


@dataclass
class PlusData:
    root: Path
    csv: Path
    image_base: Path
    rows: list[PlusRow]
    problems: list[str] = field(default_factory=list)
    escapes: list[str] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(r.split for r in self.rows))

    def studies(self, split: str) -> list[PlusRow]:
        best: dict[tuple[str, str], PlusRow] = {}
        for row in self.rows:
            if row.split != split:
                continue
            key = (row.patient, row.study)
            if key not in best or view_rank(row.view) < view_rank(best[key].view):
                best[key] = row
        return list(best.values())


def plus_files(root: str | os.PathLike[str], image_root: str | None = None) -> tuple[Path, Path, Path]:
    """(ROOT, the metadata CSV, the folder ``path_to_image`` is relative to)."""
    path = Path(root).expanduser() if str(root) else Path("")
    if not str(root) or not path.is_dir():
        raise DataError(
            f"chexpert_plus: data folder not found: {path} (pass --data-root ROOT, the folder of "
            "df_chexpert_plus_240401.csv and the unpacked PNG/ images)"
        )
    path = path.resolve()
    found = sorted(p for p in path.glob(PLUS_CSV_GLOB) if p.is_file())
    if not found:
        raise DataError(f"chexpert_plus: no {PLUS_CSV_GLOB} (e.g. df_chexpert_plus_240401.csv) in {path}")
    if image_root:
        base = (path / image_root).resolve()
        if base != path and not base.is_relative_to(path):
            raise DataError(f"chexpert_plus: dataset.image_root {image_root!r} leaves {path} (refused)")
    else:
        bases = [path / b for b in _IMAGE_BASES]
        base = next((b for b in bases if (b / "train").is_dir() or (b / "valid").is_dir()), path)
    return path, found[-1], base


def load_plus(root: str | os.PathLike[str], image_root: str | None = None) -> PlusData:
    path, csv_path, base = plus_files(root, image_root)
    return _load_plus(path, csv_path, base, stat_key([csv_path]))


def _plus_image(guard: PathGuard, base_parts: str, relative: str, where: str, used: bool) -> str:
    """Resolve ``path_to_image``; a missing ``.jpg`` is looked up as the release's ``.png``."""
    path = guard.resolve(f"{base_parts}/{relative}" if base_parts else relative, where)
    if used and not os.path.exists(path) and path.lower().endswith((".jpg", ".jpeg")):
        png = path.rsplit(".", 1)[0] + ".png"
        if os.path.exists(png):
            return guard.resolve(os.path.relpath(png, guard.root), where)
    return path


@lru_cache(maxsize=2)
def _load_plus(root: Path, csv_path: Path, base: Path, _key: tuple) -> PlusData:
    guard = PathGuard(root)
    base_parts = os.path.relpath(base, root).replace(os.sep, "/")
    base_parts = "" if base_parts == "." else base_parts
    data = PlusData(root, csv_path, base, [])
    for number, row in csv_rows(csv_path, PLUS_COLUMNS, (*PLUS_COLUMNS, "ap_pa")):
        where = f"{csv_path}, row {number}"
        if isinstance(row, str):
            data.problems.append(f"{where}: {row}")
            continue
        split = PLUS_SPLITS.get(row["split"].lower())
        if split is None:
            data.problems.append(f"{where}: unknown split {row['split']!r} (expected train or valid)")
            continue
        if row["frontal_lateral"] not in ("Frontal", "Lateral"):
            data.problems.append(
                f"{where}: 'frontal_lateral' is {row['frontal_lateral']!r}, expected Frontal or Lateral"
            )
            continue
        try:
            path = _plus_image(
                guard, base_parts, row["path_to_image"], where, row["frontal_lateral"] == "Frontal"
            )
        except DataError as exc:
            (data.escapes if "refused" in str(exc) else data.problems).append(str(exc))
            continue
        if row["frontal_lateral"] != "Frontal":
            continue  # laterals are never used (their paths are still checked above)
        relative = row["path_to_image"].replace("\\", "/")
        match = _STUDY_RE.search(relative)
        study = "/".join(match.groups()) if match else relative.rsplit("/", 1)[0]
        data.rows.append(
            PlusRow(
                path=path,
                relative=row["path_to_image"],
                split=split,
                patient=row["deid_patient_id"] or (match.group(1) if match else ""),
                study=study,
                view=row.get("ap_pa", ""),
                findings=row["section_findings"],
                impression=row["section_impression"],
                where=where,
            )
        )
    return data


def plus_samples(data: PlusData, family: str, split: str, section: str) -> Iterator[Sample]:
    if family not in PLUS_FAMILIES:
        raise DataError(f"chexpert_plus provides the families {', '.join(PLUS_FAMILIES)}, not {family!r}")
    check_split("chexpert_plus", split, data.splits)
    for row in data.studies(split):
        target = report_target(row.findings, row.impression, section)
        if target is None:
            continue
        yield Sample(
            id=f"chexpert_plus:{row.study.replace('/', ':')}:report",
            images=[row.path],
            question=REPORT_QUESTIONS[section],
            target=target,
            query={"kind": section},
            metadata={
                "dataset": "chexpert_plus",
                "split": split,
                "patient_id": row.patient,
                "study_id": row.study,
                "image_path": row.relative,
                "view": row.view or "frontal",
                "findings": " ".join(row.findings.split()),
                "impression": " ".join(row.impression.split()),
            },
        )


class CheXpertPlusAdapter:
    """CheXpert Plus from ROOT: ``report_generation`` from the parsed report sections."""

    name = "chexpert_plus"

    def data(self, params: dict[str, Any]) -> PlusData:
        return load_plus(params.get("root") or "", params.get("image_root"))

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        if family not in PLUS_FAMILIES:
            raise DataError(f"chexpert_plus provides the families {', '.join(PLUS_FAMILIES)}, not {family!r}")
        section = report_section(params, self.name)
        data = self.data(params)
        refuse_escapes(data.escapes)
        warn_problems(self.name, data.root, data.problems, params)
        for sample in plus_samples(data, family, split, section):
            if params.get("skip_missing_images") and not os.path.exists(sample.images[0]):
                continue
            yield sample

    def identity(self, params: dict[str, Any]) -> str:
        data = self.data(params)
        section = report_section(params, self.name)
        return f"chexpert_plus-{file_digest([data.csv], section + str(data.image_base))}"

    def check(self, report: Any, root: str) -> None:
        data = load_plus(root)
        report.malformed.extend(data.escapes + data.problems)
        report.notes.append(f"metadata: {data.csv}; images under {data.image_base}")
        for split in data.splits:
            studies = data.studies(split)
            no_findings = sum(not r.findings.strip() for r in studies)
            if no_findings:
                report.notes.append(
                    f"{split}: {no_findings} of {len(studies)} frontal studies have no findings section "
                    "(left out of report_generation with section=findings)"
                )
        _tally_all(report, data.splits, PLUS_FAMILIES, lambda f, s: plus_samples(data, f, s, "findings"))
