"""Medical-Diff-VQA (Hu et al., KDD 2023): difference VQA on pairs of MIMIC-CXR studies.

Official release: https://physionet.org/content/medical-diff-vqa/ (credentialed); images from
MIMIC-CXR-JPG (https://physionet.org/content/mimic-cxr-jpg/).

``ROOT`` (``--data-root`` or ``dataset.root``) holds ``mimic_pair_questions.csv`` (columns
``study_id`` = the main study, ``subject_id``, ``ref_id`` = the reference study, ``question_type``
= abnormality / location / type / level / view / presence / difference, ``question``, ``answer``,
``split`` = train / val / test) and MIMIC-CXR-JPG's ``files/`` folder (a symlink is fine), or set
``dataset.image_root`` to the MIMIC-CXR-JPG folder holding ``files/``.

Which image shows a study (MIMIC-CXR studies often have a frontal and a lateral image):

1. if ``ROOT/mimic_all.csv`` (shipped with Medical-Diff-VQA: one row per study with
   ``study_id``, ``subject_id``, ``dicom_id``, ``view``, ``study_date``, ``study_order``) is present,
   its ``dicom_id``: the image the data set's authors used, so "which view" answers match it;
2. else MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-metadata.csv`` (or ``.csv.gz``, in ``ROOT`` or the image
   root): the frontal image, preferring ``ViewPosition`` PA, then AP, then another view starting
   with PA/AP (``AP AXIAL``, ``PA LLD``, ...), ties broken by the smallest ``dicom_id``.
   Studies with only lateral images are left out (counted in ``cxbench data check``).

Families and images:

- ``vqa_open``: questions whose answer is not yes/no (target = the answer text; scored with
  token F1 / exact match). Non-difference questions show the main image only.
- ``difference`` questions show BOTH studies: images = [reference image, main image] (the
  reference is the prior visit), and the question is prefixed with which image is which.
  The order of the two studies in time is checked where the index gives dates or study
  order (``metadata.reference_is_earlier``); pairs whose reference is not earlier are counted
  in ``cxbench data check``.
- ``vqa_closed``: questions answered yes or no (the ``presence`` questions); target yes / no.

``dataset.question_types: [difference]`` (a list) keeps those question types only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError
from cxbench.data.ms_cxr_t import csv_rows, mimic_image, mimic_jpg_path, mimic_number
from cxbench.data.vqa_sets import BaseAdapter, Loaded, yes_no
from cxbench.schema import Sample

QUESTIONS = "mimic_pair_questions.csv"
MIMIC_ALL = "mimic_all.csv"
METADATA = ("mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-metadata.csv.gz")
QUESTION_TYPES = ("abnormality", "location", "type", "level", "view", "presence", "difference")
SPLITS = {"train": "train", "val": "val", "valid": "val", "validate": "val", "test": "test"}
DIFFERENCE_PREFIX = (
    "The first image is the reference image (the prior study) and the second image is the main "
    "image (the current study). "
)


def _view_rank(view: str) -> int | None:
    key = " ".join(view.upper().split())
    if key == "PA":
        return 0
    if key == "AP":
        return 1
    if key.startswith(("PA", "AP")):
        return 2
    return None


class _Study:
    __slots__ = ("dicom", "order", "path", "subject", "view")

    def __init__(self, subject: str, dicom: str, view: str, order: tuple) -> None:
        self.subject, self.dicom, self.view, self.order = subject, dicom, view, order
        self.path = ""  # the image file, set once the image root is known


def _index_mimic_all(path: Path, needed: set[str], data: Loaded) -> dict[str, _Study]:
    studies: dict[str, _Study] = {}
    for where, row in csv_rows(path, ("study_id", "subject_id", "dicom_id")):
        if isinstance(row, str):
            data.problems.append(row)
            continue
        try:
            study = mimic_number(row["study_id"], "study_id", where)
            if study not in needed or study in studies:
                continue
            subject = mimic_number(row["subject_id"], "subject_id", where)
            _, _, dicom = mimic_image(row["dicom_id"], subject, study, where, "dicom_id")
        except DataError as exc:
            data.problems.append(str(exc))
            continue
        order: tuple = ()
        study_order, study_date = row.get("study_order", "").strip(), row.get("study_date", "").strip()
        if study_order.isdigit():
            order = (int(study_order),)
        elif study_date:
            order = (study_date,)
        studies[study] = _Study(subject, dicom, row.get("view", "").strip(), order)
    return studies


def _index_metadata(path: Path, needed: set[str], data: Loaded) -> tuple[dict[str, _Study], set[str]]:
    best: dict[str, tuple[int, str, _Study]] = {}
    lateral_only: set[str] = set()
    for where, row in csv_rows(path, ("dicom_id", "subject_id", "study_id", "ViewPosition")):
        if isinstance(row, str):
            data.problems.append(row)
            continue
        try:
            study = mimic_number(row["study_id"], "study_id", where)
            if study not in needed:
                continue
            subject = mimic_number(row["subject_id"], "subject_id", where)
            _, _, dicom = mimic_image(row["dicom_id"], subject, study, where, "dicom_id")
        except DataError as exc:
            data.problems.append(str(exc))
            continue
        rank = _view_rank(row["ViewPosition"])
        if rank is None:
            lateral_only.add(study)
            continue
        date, time = row.get("StudyDate", "").strip(), row.get("StudyTime", "").strip()
        order = (date, time.zfill(13)) if date else ()
        candidate = (rank, dicom, _Study(subject, dicom, row["ViewPosition"].strip(), order))
        if study not in best or candidate[:2] < best[study][:2]:
            best[study] = candidate
    no_frontal = lateral_only - set(best)
    if no_frontal:
        data.notes.append(
            f"{len(no_frontal)} stud(ies) have no frontal image in {path.name}: their questions are left out"
        )
    return {study: entry[2] for study, entry in best.items()}, no_frontal


class MedicalDiffVQAAdapter(BaseAdapter):
    """Medical-Diff-VQA: vqa_open (incl. difference questions with two images) and vqa_closed."""

    name = "medical_diff_vqa"
    families = ("vqa_closed", "vqa_open")
    layout_hint = (
        f"the folder holding {QUESTIONS}, mimic_all.csv or {METADATA[0]}, and MIMIC-CXR-JPG's files/"
    )
    cache_params = ("image_root",)

    @staticmethod
    def image_root(root: Path, params: dict[str, Any]) -> Path:
        return Path(params["image_root"]).expanduser() if params.get("image_root") else root

    def index_file(self, root: Path, params: dict[str, Any]) -> Path | None:
        if (root / MIMIC_ALL).is_file():
            return root / MIMIC_ALL
        for folder in dict.fromkeys((root, self.image_root(root, params))):
            for name in METADATA:
                if (folder / name).is_file():
                    return folder / name
        return None

    def manifest_files(self, root: Path, params: dict[str, Any]) -> list[Path]:
        index = self.index_file(root, params)
        return [p for p in (root / QUESTIONS, index) if p is not None and p.is_file()]

    def read(self, root: Path, params: dict[str, Any]) -> Loaded:
        questions = root / QUESTIONS
        if not questions.is_file():
            raise DataError(f"medical_diff_vqa: {QUESTIONS} not found in {root} ({self.layout_hint})")
        index = self.index_file(root, params)
        if index is None:
            raise DataError(
                f"medical_diff_vqa: no image index in {root}: need {MIMIC_ALL} (Medical-Diff-VQA) or "
                f"{' / '.join(METADATA)} (MIMIC-CXR-JPG) to find each study's image"
            )
        image_root = self.image_root(root, params)
        data = Loaded(self.name, root, [questions, index], ("train", "val", "test"))
        data.notes.append(
            f"questions: {questions}; study images from {index.name}; images under {image_root / 'files'}"
        )

        rows: list[tuple] = []
        needed: set[str] = set()
        for where, row in csv_rows(
            questions, ("study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split")
        ):
            if isinstance(row, str):
                data.problems.append(row)
                continue
            try:
                subject = mimic_number(row["subject_id"], "subject_id", where)
                study = mimic_number(row["study_id"], "study_id", where)
                qtype = row["question_type"].strip().lower()
                if qtype not in QUESTION_TYPES:
                    raise DataError(
                        f"{where}: question_type {row['question_type']!r} is not one of "
                        + ", ".join(QUESTION_TYPES)
                    )
                split = SPLITS.get(row["split"].strip().lower())
                if split is None:
                    raise DataError(f"{where}: split {row['split']!r} is not train, val or test")
                question, answer = row["question"].strip(), row["answer"].strip()
                if not question or not answer:
                    raise DataError(f"{where}: empty question or answer")
                ref = None
                if qtype == "difference":
                    if not row["ref_id"].strip():
                        raise DataError(f"{where}: a difference question needs ref_id (the reference study)")
                    ref = mimic_number(row["ref_id"], "ref_id", where)
                    if ref == study:
                        raise DataError(f"{where}: ref_id equals study_id")
            except DataError as exc:
                data.problems.append(str(exc))
                continue
            number = int(where.rsplit(" ", 1)[-1])
            rows.append((number, split, subject, study, ref, qtype, question, answer, where))
            needed.add(study)
            if ref:
                needed.add(ref)

        if index.name == MIMIC_ALL:
            studies, no_frontal = _index_mimic_all(index, needed, data), set()
        else:
            studies, no_frontal = _index_metadata(index, needed, data)
        for study, entry in studies.items():
            entry.path = mimic_jpg_path(image_root, entry.subject, study, entry.dicom)
        left_out: Counter = Counter()
        reversed_pairs = 0
        for number, split, subject, study, ref, qtype, question, answer, where in rows:
            missing = [s for s in (study, ref) if s and s not in studies]
            if any(s in no_frontal for s in missing):
                left_out["a study has no frontal image"] += 1
                continue
            if missing:
                data.problems.append(f"{where}: study {missing[0]} is not in {index.name}")
                continue
            for s in (study, ref):
                if s and studies[s].subject != subject:
                    data.problems.append(
                        f"{where}: study {s} belongs to subject {studies[s].subject}, not {subject}"
                    )
                    break
            else:
                earlier = None
                if ref and studies[study].order and studies[ref].order:
                    earlier = studies[ref].order < studies[study].order
                    reversed_pairs += earlier is False
                verdict = yes_no(answer)
                family = "vqa_closed" if verdict is not None else "vqa_open"
                data.count(f"{split}/question_type", f"{qtype} ({family})")
                target = verdict if verdict is not None else answer
                data.add(split, family, (number, split, study, ref, qtype, question, target, earlier, where))
        for reason, n in left_out.items():
            data.notes.append(f"{n} question(s) left out: {reason}")
        if reversed_pairs:
            data.notes.append(
                f"{reversed_pairs} difference question(s) whose reference study is not earlier than "
                "the main study"
            )

        def build(entry: tuple) -> Sample:
            number, split, study, ref, qtype, question, target, earlier, where = entry
            main = studies[study]
            images = [main.path]
            meta: dict[str, Any] = {
                "dataset": "medical_diff_vqa",
                "split": split,
                "subject_id": main.subject,
                "study_id": study,
                "question_type": qtype,
                "dicom_id": main.dicom,
                "view": main.view,
                "source": where,
            }
            if ref:
                prior = studies[ref]
                images.insert(0, prior.path)
                question = DIFFERENCE_PREFIX + question
                meta.update(ref_id=ref, ref_dicom_id=prior.dicom, reference_is_earlier=earlier)
            return Sample(
                id=f"diff_vqa:{number}",
                images=images,
                question=question,
                target=target,
                query={"kind": qtype},
                metadata=meta,
            )

        data.build = build
        return data

    def select(self, samples: Iterator[Sample], params: dict[str, Any]) -> Iterator[Sample]:
        wanted = params.get("question_types")
        if not wanted:
            return samples
        if isinstance(wanted, str):
            wanted = [wanted]
        unknown = [t for t in wanted if str(t).lower() not in QUESTION_TYPES]
        if unknown:
            raise DataError(
                f"medical_diff_vqa: dataset.question_types {unknown} not in {', '.join(QUESTION_TYPES)}"
            )
        keep = {str(t).lower() for t in wanted}
        return (s for s in samples if s.query["kind"] in keep)
