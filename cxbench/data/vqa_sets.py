"""SLAKE, VQA-RAD and ReXVQA read in place from their official layouts, plus the small machinery
the VQA-style adapters share (also used by ``ms_cxr_t.py`` and ``diff_vqa.py``).

Each adapter reads its question files once (cached until a file changes), turns every
usable record into a :class:`~cxbench.schema.Sample` and keeps the records it cannot use as
problems that name the file and the record (JSON: the 0-based index of the record in the
file's list, or its key in a dict). Images are referenced by path only: no image is opened
or listed while loading. ``cxbench data check NAME ROOT`` stats them and reports the missing ones.
Image paths taken from a question file are confined to ``ROOT``: an absolute path, or one whose
``..`` leads out of ``ROOT``, is refused (the record becomes a problem). The check is made on
the path as written, so folders linked into ``ROOT`` with a symlink are followed.

Malformed records are skipped with a warning (``dataset.strict: true`` fails on the first).

Closed questions
    ``vqa_closed`` holds the closed questions whose answer is yes or no (target ``"yes"`` /
    ``"no"``) and ReXVQA's multiple-choice questions (target the option letter). SLAKE and VQA-RAD
    also have a few CLOSED questions with another answer ("Left", "Heart", ...); these are in
    neither family (counted in ``cxbench data check``) so that ``vqa_open`` stays the OPEN
    questions as the data sets define them and published open/closed numbers stay comparable.

SLAKE (Liu et al., ISBI 2021; https://www.med-vqa.com/slake/)
    ``ROOT`` is the ``Slake1.0`` folder or the folder holding it: ``train.json``,
    ``validate.json`` (split ``val``), ``test.json`` (lists of records with ``img_name``,
    ``question``, ``answer``, ``answer_type`` OPEN/CLOSED, ``q_lang``, ``modality``, ``location``,
    ``content_type``, ``qid``) and images under ``imgs/`` (``imgs/xmlab102/source.jpg``).
    Kept: English questions (``q_lang == "en"``) on chest X-rays: ``modality == "X-Ray"`` and a
    ``location`` of ``Lung`` or starting with ``Chest`` (``Chest``, ``Chest_heart``,
    ``Chest_lung``, ``Chest_mediastinal``), case-insensitive. Everything else is left out.

VQA-RAD (Lau et al., Scientific Data 2018; https://osf.io/89kps/)
    ``ROOT`` holds ``VQA_RAD Dataset Public.json`` (a list of records with ``qid``,
    ``image_name``, ``image_organ`` CHEST/HEAD/ABD, ``question``, ``answer``, ``answer_type``
    OPEN/CLOSED, ``question_type``, ``phrase_type``) and ``VQA_RAD Image Folder/``. Kept:
    ``image_organ == "CHEST"``. Split from ``phrase_type``: ``test_freeform`` / ``test_para`` are
    ``test``, ``freeform`` / ``para`` are ``train`` (VQA-RAD has no validation split). Answer
    types and organs are compared after stripping blanks and upper-casing.

ReXVQA (Pal et al. 2025, arXiv:2506.04353; https://huggingface.co/datasets/rajpurkarlab/ReXVQA)
    **Assumed layout, not verified against the released files** (recalled from the paper and
    the data set card): ``ROOT/metadata/{train,valid,test}_vqa_data.json`` (``ROOT/`` directly
    is accepted too; ``valid`` is split ``val``), each either a dict ``{question_id: record}``
    or a list of records (id from ``id`` / ``question_id``, else the index). A record has
    ``question``, ``options`` (a list such as ``["A. Left", "B. Right", ...]`` or a dict
    ``{"A": "Left", ...}``), ``correct_answer`` (a letter, ``"B. Right"`` or the option text),
    images in ``ImagePath`` (a list or a string; ``image_path`` / ``images`` / ``image`` are
    accepted), and optional ``task_name``, ``category``, ``class``, ``subcategory``,
    ``study_id``. Image paths are resolved against the JSON file's folder (``../deid_png/...``
    from ``metadata/`` is ``ROOT/deid_png/...``), else against ``ROOT``; the first that exists
    wins. The images are ReXGradient-160K's ``deid_png`` PNGs. All images of a record are sent,
    in the order given. Only the requested split's file is read (the train file is large).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError
from cxbench.data.validate import warn_skipped
from cxbench.schema import Sample

_LETTERS = "ABCDEFGHIJ"


# ---------------------------------------------------------------------------------------------
# shared machinery


@dataclass
class Loaded:
    """Everything an adapter read from ROOT: samples by (split, family), problems, notes."""

    name: str
    root: Path
    files: list[Path]  # the question / label files read (for the data identity)
    splits: tuple[str, ...]
    samples: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # entries, see ``build``
    problems: list[str] = field(default_factory=list)  # "file, row/record N: reason"
    notes: list[str] = field(default_factory=list)
    distributions: dict[str, Counter] = field(default_factory=dict)  # "split/what" -> value -> n
    #: turns a stored entry into a Sample (large sets store compact tuples and build lazily)
    build: Callable[[Any], Sample] | None = None

    def add(self, split: str, family: str, entry: Any) -> None:
        self.samples.setdefault((split, family), []).append(entry)

    def iter_samples(self, split: str, family: str) -> Iterator[Sample]:
        """Fresh Samples each call (the loaded data is cached and shared between calls)."""
        entries = self.samples.get((split, family), [])
        return map(self.build or _fresh, entries)

    def count(self, key: str, value: str) -> None:
        counter = self.distributions.get(key)
        if counter is None:
            counter = self.distributions[key] = Counter()
        counter[value] += 1


def _fresh(sample: Sample) -> Sample:
    return dataclasses.replace(
        sample,
        images=list(sample.images),
        choices=list(sample.choices) if sample.choices is not None else None,
        query=dict(sample.query),
        metadata=dict(sample.metadata),
    )


def text_of(value: Any) -> str:
    """A field as stripped text ('' for None); JSON numbers become their text."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def yes_no(answer: str) -> str | None:
    """``"yes"`` / ``"no"`` when the answer is exactly that (any case, final period allowed)."""
    key = answer.strip().lower().rstrip(".").strip()
    return key if key in ("yes", "no") else None


def inside(root: Path, relative: str, where: str, base: str = "") -> Path:
    """``root / base / relative``, refusing absolute paths and ``..`` that lead out of ``root``.

    The check is lexical (symlinks under ``root`` are followed later, when the file is read).
    """
    text = relative.strip().replace("\\", "/")
    if not text:
        raise DataError(f"{where}: empty image path")
    if text.startswith("/") or re.match(r"^[A-Za-z]:/", text) or text.startswith("~"):
        raise DataError(
            f"{where}: image path {relative!r} is absolute; it must be relative to {root} (refused)"
        )
    joined = os.path.normpath(os.path.join(base, text)) if base else os.path.normpath(text)
    if joined == ".." or joined.startswith("../") or joined == ".":
        raise DataError(f"{where}: image path {relative!r} leaves the data folder {root} (refused)")
    return root / joined


def file_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def fingerprint(paths: list[Path]) -> tuple:
    """Cheap key that changes when one of the files changes (name, size, mtime)."""
    items = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        items.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(items)


def read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8-sig") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def json_records(path: Path, data: Any) -> Iterator[tuple[str, str | None, Any]]:
    """``(where, key, record)`` for each record of a JSON list, or of a dict ``{id: record}``."""
    if isinstance(data, list):
        for index, record in enumerate(data):
            yield f"{path}, record {index}", None, record
    elif isinstance(data, dict):
        for index, (key, record) in enumerate(data.items()):
            yield f"{path}, record {index} (key {key!r})", str(key), record
    else:
        raise DataError(
            f"{path}: expected a JSON list of records (or a dict of records), not {type(data).__name__}"
        )


def require(record: Any, where: str, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: not a JSON object")
    missing = [f for f in fields if f not in record or record[f] is None or text_of(record[f]) == ""]
    if missing:
        raise DataError(f"{where}: missing or empty field(s) {missing}")
    return record


class BaseAdapter:
    """An adapter over a :class:`Loaded` data set; subclasses define ``name``, ``families``, ``read``."""

    name = ""
    families: tuple[str, ...] = ()
    #: shown when a family or split is asked for that the data set does not have
    split_hint = ""

    def read(self, root: Path, params: dict[str, Any]) -> Loaded:  # pragma: no cover - abstract
        raise NotImplementedError

    def manifest_files(self, root: Path, params: dict[str, Any]) -> list[Path]:  # pragma: no cover
        raise NotImplementedError

    def root_of(self, params: dict[str, Any]) -> Path:
        root = text_of(params.get("root"))
        path = Path(root).expanduser()
        if not root or not path.exists():
            raise DataError(
                f"{self.name}: data folder not found: {root or '(none)'} "
                f"(pass --data-root ROOT; {self.layout_hint})"
            )
        return path.resolve()

    layout_hint = ""

    def load(self, params: dict[str, Any], split: str | None = None) -> Loaded:
        """The data set (cached); adapters with ``split_files`` read only ``split``'s file if given."""
        root = self.root_of(params)
        key_params = tuple(sorted((k, str(v)) for k, v in params.items() if k in self.cache_params))
        if self.split_files and split is not None:
            key_params += (("_split", split),)
        files = self.manifest_files(root, params)
        return _cached_load(self, root, key_params, fingerprint(files))

    #: params that change what ``read`` produces (part of the cache key)
    cache_params: tuple[str, ...] = ()
    #: one question file per split: ``read`` honours ``params["_split"]`` (large train files)
    split_files = False

    def check_family(self, family: str) -> None:
        if family not in self.families:
            raise DataError(f"{self.name} provides the families {', '.join(self.families)}, not {family!r}")

    def select(self, samples: Iterator[Sample], params: dict[str, Any]) -> Iterator[Sample]:
        """Hook for task-level filters (``dataset.question_types`` ...); all samples by default."""
        return samples

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        self.check_family(family)
        data = self.load(params, split)
        if split not in data.splits:
            raise DataError(
                f"{self.name} has the splits {', '.join(data.splits)}, not {split!r}"
                + (f" ({self.split_hint})" if self.split_hint else "")
            )
        if data.problems:
            if params.get("strict"):
                raise DataError(f"{self.name}: {data.problems[0]}")
            warn_skipped(self.name, len(data.problems), data.problems[0], data.root)
        return self.select(data.iter_samples(split, family), params)

    def identity(self, params: dict[str, Any]) -> str:
        root = self.root_of(params)
        files = self.manifest_files(root, params)
        extra = ",".join(f"{k}={params[k]}" for k in sorted(params) if k in self.cache_params)
        digest = hashlib.sha256((file_digest(files) + extra).encode()).hexdigest()[:16]
        return f"{self.name}-{digest}"

    def check(self, report: Any, root: str) -> None:
        """``cxbench data check``: counts per split and family, answer distributions, problems."""
        from cxbench.data.check import tally

        data = self.load({"root": root})
        report.malformed.extend(data.problems)
        report.notes.extend(data.notes)
        seen: set[str] = set()
        for split in data.splits:
            for family in self.families:
                tally(report, split, family, data.iter_samples(split, family), seen)
        for key, counter in data.distributions.items():
            report.labels[key] = dict(counter.most_common())


@lru_cache(maxsize=8)
def _cached_load(adapter: BaseAdapter, root: Path, key_params: tuple, _fingerprint: tuple) -> Loaded:
    return adapter.read(root, dict(key_params))


# ---------------------------------------------------------------------------------------------
# SLAKE and VQA-RAD: OPEN / CLOSED questions


def _add_open_closed(
    data: Loaded,
    split: str,
    answer_type: str,
    answer: str,
    make: Callable[[str, Any], Sample],
) -> None:
    """Put a question into vqa_closed (yes/no), vqa_open (OPEN) or neither (other CLOSED)."""
    data.count(f"{split}/answer_type", answer_type)
    if answer_type == "OPEN":
        data.add(split, "vqa_open", make("open", answer))
        return
    verdict = yes_no(answer)
    if verdict is None:
        data.count(f"{split}/left_out", "closed, answer not yes/no")
        return
    data.add(split, "vqa_closed", make("closed", verdict))


def _is_chest(location: str) -> bool:
    key = location.strip().lower()
    return key == "lung" or key.startswith("chest")


class SlakeAdapter(BaseAdapter):
    """SLAKE 1.0, English questions on chest X-rays: vqa_closed (yes/no) and vqa_open."""

    name = "slake"
    families = ("vqa_closed", "vqa_open")
    layout_hint = "the Slake1.0 folder (train.json, validate.json, test.json, imgs/) or its parent"
    SPLIT_FILES = (("train", "train.json"), ("val", "validate.json"), ("test", "test.json"))

    @staticmethod
    def base(root: Path) -> Path:
        return root / "Slake1.0" if (root / "Slake1.0").is_dir() else root

    def manifest_files(self, root: Path, params: dict[str, Any]) -> list[Path]:
        base = self.base(root)
        return [base / name for _, name in self.SPLIT_FILES if (base / name).is_file()]

    def read(self, root: Path, params: dict[str, Any]) -> Loaded:
        base = self.base(root)
        present = [(split, base / name) for split, name in self.SPLIT_FILES if (base / name).is_file()]
        if not present:
            raise DataError(
                f"slake: none of train.json, validate.json, test.json found in {base} ({self.layout_hint})"
            )
        data = Loaded(self.name, base, [p for _, p in present], tuple(s for s, _ in present))
        missing = [name for split, name in self.SPLIT_FILES if split not in data.splits]
        if missing:
            data.notes.append(f"split file(s) not found: {', '.join(missing)}")
        left_out: Counter = Counter()
        ids: dict[str, str] = {}
        for split, path in present:
            try:
                records = list(json_records(path, read_json(path)))
            except DataError as exc:  # one unreadable split file: the others still load
                data.problems.append(str(exc))
                continue
            for where, _, record in records:
                try:
                    row = require(record, where, ("img_name", "question", "answer", "answer_type"))
                    if text_of(row.get("q_lang")).lower() not in ("en", ""):
                        left_out["not English"] += 1
                        continue
                    if text_of(row.get("modality")).lower() != "x-ray" or not _is_chest(
                        text_of(row.get("location"))
                    ):
                        left_out["not a chest X-ray"] += 1
                        continue
                    answer_type = text_of(row["answer_type"]).upper()
                    if answer_type not in ("OPEN", "CLOSED"):
                        raise DataError(f"{where}: answer_type {row['answer_type']!r} is not OPEN or CLOSED")
                    image = inside(base / "imgs", text_of(row["img_name"]), where)
                    index = where.rsplit(" ", 1)[-1]
                    sample_id = f"slake:{text_of(row.get('qid')) or split + '-' + index}"
                    if sample_id in ids:
                        raise DataError(
                            f"{where}: duplicate qid {row.get('qid')!r} (first at {ids[sample_id]})"
                        )
                    ids[sample_id] = where
                except DataError as exc:
                    data.problems.append(str(exc))
                    continue
                content = text_of(row.get("content_type"))
                meta = {
                    "dataset": "slake",
                    "split": split,
                    "img_id": text_of(row.get("img_id")),
                    "img_name": text_of(row["img_name"]),
                    "answer_type": answer_type,
                    "content_type": content,
                    "location": text_of(row.get("location")),
                    "modality": text_of(row.get("modality")),
                    "base_type": text_of(row.get("base_type")),
                    "source": where,
                }

                def make(kind: str, target: Any, row=row, image=image, meta=meta, sid=sample_id) -> Sample:
                    return Sample(
                        id=sid,
                        images=[str(image)],
                        question=text_of(row["question"]),
                        target=target,
                        query={"kind": (text_of(row.get("content_type")) or kind).lower()},
                        metadata=meta,
                    )

                _add_open_closed(data, split, answer_type, text_of(row["answer"]), make)
        for reason, n in left_out.items():
            data.notes.append(f"{n} question(s) left out: {reason}")
        return data


class VQARadAdapter(BaseAdapter):
    """VQA-RAD, chest images only: vqa_closed (yes/no) and vqa_open; splits from phrase_type."""

    name = "vqa_rad"
    families = ("vqa_closed", "vqa_open")
    layout_hint = "the folder holding 'VQA_RAD Dataset Public.json' and 'VQA_RAD Image Folder/'"
    JSON_NAME = "VQA_RAD Dataset Public.json"
    IMAGE_FOLDER = "VQA_RAD Image Folder"
    PHRASE_SPLITS = {"freeform": "train", "para": "train", "test_freeform": "test", "test_para": "test"}

    def manifest_files(self, root: Path, params: dict[str, Any]) -> list[Path]:
        path = root / self.JSON_NAME
        return [path] if path.is_file() else []

    def read(self, root: Path, params: dict[str, Any]) -> Loaded:
        path = root / self.JSON_NAME
        if not path.is_file():
            raise DataError(f"vqa_rad: {self.JSON_NAME!r} not found in {root} ({self.layout_hint})")
        data = Loaded(self.name, root, [path], ("train", "test"))
        other_organs: Counter = Counter()
        ids: dict[str, int] = {}
        for where, _, record in json_records(path, read_json(path)):
            try:
                row = require(
                    record, where, ("image_name", "question", "answer", "answer_type", "phrase_type")
                )
                organ = text_of(row.get("image_organ")).upper()
                if organ != "CHEST":
                    other_organs[organ or "(none)"] += 1
                    continue
                phrase = text_of(row["phrase_type"]).lower()
                if phrase not in self.PHRASE_SPLITS:
                    raise DataError(
                        f"{where}: phrase_type {row['phrase_type']!r} is not one of "
                        f"{sorted(self.PHRASE_SPLITS)}"
                    )
                answer_type = text_of(row["answer_type"]).upper()
                if answer_type not in ("OPEN", "CLOSED"):
                    raise DataError(f"{where}: answer_type {row['answer_type']!r} is not OPEN or CLOSED")
                image = inside(root / self.IMAGE_FOLDER, text_of(row["image_name"]), where)
            except DataError as exc:
                data.problems.append(str(exc))
                continue
            split = self.PHRASE_SPLITS[phrase]
            qid = text_of(row.get("qid")) or where.rsplit(" ", 1)[-1]
            ids[qid] = ids.get(qid, 0) + 1
            sample_id = f"vqa_rad:{qid}" + (f":{ids[qid]}" if ids[qid] > 1 else "")
            question_type = text_of(row.get("question_type"))
            meta = {
                "dataset": "vqa_rad",
                "split": split,
                "image_name": text_of(row["image_name"]),
                "answer_type": answer_type,
                "question_type": question_type,
                "phrase_type": phrase,
                "source": where,
            }

            def make(
                kind: str, target: Any, row=row, image=image, meta=meta, sid=sample_id, qt=question_type
            ) -> Sample:
                return Sample(
                    id=sid,
                    images=[str(image)],
                    question=text_of(row["question"]),
                    target=target,
                    query={"kind": (qt or kind).lower()},
                    metadata=meta,
                )

            _add_open_closed(data, split, answer_type, text_of(row["answer"]), make)
        if other_organs:
            shown = ", ".join(f"{organ} {n}" for organ, n in other_organs.most_common())
            data.notes.append(f"{sum(other_organs.values())} question(s) on other organs left out ({shown})")
        return data


# ---------------------------------------------------------------------------------------------
# ReXVQA: multiple choice

_OPTION_RE = re.compile(r"^\s*\(?([A-Ja-j])\s*[.):]\s*(.*)$", re.DOTALL)


def _options(value: Any, where: str) -> list[str]:
    """Option texts in letter order from ``["A. x", "B. y"]`` or ``{"A": "x", "B": "y"}``."""
    if isinstance(value, dict):
        letters = sorted(text_of(k).upper() for k in value)
        texts = [text_of(value[k]) for k in sorted(value, key=lambda k: text_of(k).upper())]
    elif isinstance(value, list):
        letters, texts = [], []
        for item in value:
            match = _OPTION_RE.match(text_of(item))
            if match is None:
                raise DataError(f"{where}: option {item!r} does not start with a letter such as 'A.'")
            letters.append(match.group(1).upper())
            texts.append(match.group(2).strip())
    else:
        raise DataError(
            f"{where}: 'options' must be a list like ['A. ...', 'B. ...'] or a dict, not {value!r}"
        )
    if not 2 <= len(texts) <= len(_LETTERS) or letters != list(_LETTERS[: len(texts)]):
        raise DataError(f"{where}: options must be lettered A, B, C, ... in order; found {letters}")
    if any(not t for t in texts):
        raise DataError(f"{where}: an option has no text")
    return texts


def _answer_letter(value: Any, options: list[str], where: str) -> str:
    answer = text_of(value)
    letters = _LETTERS[: len(options)]
    match = _OPTION_RE.match(answer)
    if len(answer) == 1 and answer.upper() in letters:
        return answer.upper()
    if (
        match
        and match.group(1).upper() in letters
        and (not match.group(2) or match.group(2).strip() in options)
    ):
        return match.group(1).upper()
    lowered = [o.lower() for o in options]
    if answer.lower() in lowered:
        return letters[lowered.index(answer.lower())]
    raise DataError(
        f"{where}: correct_answer {value!r} is not one of the option letters {', '.join(letters)}"
    )


class ReXVQAAdapter(BaseAdapter):
    """ReXVQA multiple-choice questions (layout assumed, see the module docstring): vqa_closed."""

    name = "rexvqa"
    families = ("vqa_closed",)
    layout_hint = "the folder with metadata/{train,valid,test}_vqa_data.json and the deid_png images"
    SPLIT_FILES = (
        ("train", "train_vqa_data.json"),
        ("val", "valid_vqa_data.json"),
        ("test", "test_vqa_data.json"),
    )
    IMAGE_FIELDS = ("ImagePath", "image_path", "images", "image")
    split_files = True  # the train file is large: evaluating on test reads only test_vqa_data.json

    def _files(self, root: Path) -> list[tuple[str, Path]]:
        found = []
        for split, name in self.SPLIT_FILES:
            for folder in (root / "metadata", root):
                if (folder / name).is_file():
                    found.append((split, folder / name))
                    break
        return found

    def manifest_files(self, root: Path, params: dict[str, Any]) -> list[Path]:
        return [p for _, p in self._files(root)]

    def _images(self, root: Path, path: Path, row: dict[str, Any], where: str) -> list[str]:
        field_name = next((f for f in self.IMAGE_FIELDS if row.get(f)), None)
        if field_name is None:
            raise DataError(f"{where}: no image path (expected one of {', '.join(self.IMAGE_FIELDS)})")
        value = row[field_name]
        paths = [value] if isinstance(value, str) else value
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise DataError(f"{where}: {field_name!r} must be a path or a list of paths, not {value!r}")
        base = os.path.relpath(path.parent, root)
        resolved = []
        for relative in paths:
            candidates: list[Path] = []
            error: DataError | None = None
            for folder in dict.fromkeys(("" if base == "." else base, "")):
                try:
                    candidates.append(inside(root, relative, where, base=folder))
                except DataError as exc:
                    error = error or exc
            if not candidates:
                raise error or DataError(f"{where}: image path {relative!r} refused")
            # the JSON's folder first, else ROOT: the first that exists (a stat, no pixels)
            if len(candidates) > 1:
                candidates.sort(key=lambda c: not c.exists())
            resolved.append(str(candidates[0]))
        return resolved

    def read(self, root: Path, params: dict[str, Any]) -> Loaded:
        files = self._files(root)
        if not files:
            raise DataError(
                f"rexvqa: no {{train,valid,test}}_vqa_data.json in {root}/metadata or {root} "
                f"({self.layout_hint})"
            )
        data = Loaded(self.name, root, [p for _, p in files], tuple(s for s, _ in files))
        data.notes.append(
            "ReXVQA layout assumed from the paper / data set card, not verified against the real files"
        )
        ids: dict[str, str] = {}
        only = params.get("_split")
        for split, path in files:
            if only is not None and split != only:
                continue
            try:
                records = list(json_records(path, read_json(path)))
            except DataError as exc:  # one unreadable split file: the others still load
                data.problems.append(str(exc))
                continue
            for where, key, record in records:
                try:
                    row = require(record, where, ("question", "options", "correct_answer"))
                    options = _options(row["options"], where)
                    letter = _answer_letter(row["correct_answer"], options, where)
                    images = self._images(root, path, row, where)
                    qid = (
                        key
                        or text_of(row.get("id"))
                        or text_of(row.get("question_id"))
                        or where.rsplit(" ", 1)[-1]
                    )
                    sample_id = f"rexvqa:{qid}"
                    if sample_id in ids:
                        raise DataError(f"{where}: duplicate question id {qid!r} (first at {ids[sample_id]})")
                    ids[sample_id] = where
                except DataError as exc:
                    data.problems.append(str(exc))
                    continue
                task_name = text_of(row.get("task_name")) or text_of(row.get("category"))
                data.count(f"{split}/task_name", task_name or "(none)")
                data.add(
                    split,
                    "vqa_closed",
                    Sample(
                        id=sample_id,
                        images=images,
                        question=text_of(row["question"]),
                        target=letter,
                        choices=options,
                        query={"kind": "multiple_choice", "task": task_name.lower()},
                        metadata={
                            "dataset": "rexvqa",
                            "split": split,
                            "task_name": text_of(row.get("task_name")),
                            "category": text_of(row.get("category")),
                            "class": text_of(row.get("class")),
                            "subcategory": text_of(row.get("subcategory")),
                            "study_id": text_of(row.get("study_id")),
                            "source": where,
                        },
                    ),
                )
        return data
