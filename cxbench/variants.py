"""Robustness variants of tasks, selected by a suffix: ``TASK@VARIANT[:SEED][@VARIANT...]``.

``vqa_closed@shuffle`` is the ``vqa_closed`` task with its answer options shuffled;
``localization@rotate:3`` rotates every image by a small angle drawn with seed 3; variants
chain left to right (``vqa_closed@shuffle@noise`` shuffles, then adds noise). A variant is
deterministic given its seed (default 0, which the canonical name leaves out), and sample
ids stay those of the base task, so a base log and a variant log pair sample by sample
(except under ``positions``, which expands samples into copies with ids of their own).

Variants (``VARIANTS``):

- ``shuffle``: the answer options of each sample are permuted (seeded by variant seed and
  sample id) and the target letter is remapped to the same option text. Samples without
  ``choices`` (yes/no, open, report, box, ... questions) pass through unchanged.
- ``paraphrase``: the question is rewritten with one of a few hand-written templates for
  the task family and question kind (``PARAPHRASES``), chosen per sample. Templates that
  name the finding use ``query["finding"]``; a sample whose kind has no template gets a
  generic rewording that keeps the original question. Only prompts that render
  ``{question}`` change (every built-in image task does).
- ``positions``: circular evaluation (CircularEval, as in MMBench) of multiple-choice
  questions. A sample with k options is expanded into k copies; copy j rotates the options
  circularly so that the correct option sits at position j (letter ``"ABCD..."[j]``) while
  the distractors keep their cyclic order, and the target letter moves with it (a target given
  as the option text stays as it is). Copy ids are ``"<sample id>#pos<j>"``; the copy whose
  rotation is the identity keeps the original option order. Samples without ``choices``, or
  whose correct option cannot be told from ``target``, pass through once with their id
  unchanged. Because the ids differ from the base task's, a ``@positions`` log does **not**
  pair with a base log sample by sample: compare against the base by the metric value (the
  mean over all copies), or with :func:`positional_bias`. The seed is unused (the expansion
  is deterministic). Chain it after other variants (``vqa_closed@shuffle@positions``): a
  ``shuffle`` after it would undo the placement. ``--limit`` counts copies, not base samples.

  Why: a purely positional model ("always answer A") is at chance on a data set whose
  correct letters are uniformly placed (the phantom data), with or without ``shuffle``, so
  neither shows its bias. :func:`positional_bias` reads a ``*@positions`` run log and
  returns the accuracy at each answer position (A, B, C, D), the ``spread`` (max - min over
  positions; 1.0 for "always A", about 0 for a model that reads the options) and the
  ``circular_accuracy``: the fraction of base samples all of whose k copies are correct.
- image perturbations, applied to every image of a sample (the prior and the current image
  of a temporal sample alike); each keeps the image size and pixel mode:

  - ``rotate``: rotation about the image centre by 1 to 5 degrees either way (bilinear,
    black corners). Boxes in ``target`` and in ``metadata["findings"]`` are moved with the
    image of the sample they belong to (the last one): each becomes the axis-aligned box
    of its four rotated corners, clipped to the image. That box is slightly larger than the
    rotated object, so a perfect localiser scores a little below 1 on IoU under ``rotate``.
  - ``contrast``: contrast factor in [0.7, 1.3] about the image mean, plus a brightness
    shift in [-0.1, 0.1] of the value range.
  - ``noise``: additive Gaussian noise, sigma 0.03 of the value range.
  - ``jpeg``: JPEG re-compression at quality 30 (16-bit images pass through 8 bits), saved
    back as PNG so every reader and parser keeps working.
  - ``resize``: down to 50 % and back up (bilinear): a loss of resolution.

  The random draws of an image perturbation come from a hash of the source image bytes, the
  variant and the seed, which also names the output file: perturbed images are written once
  under ``cache_dir()/variants/<variant>/`` and shared by every sample and run that asks
  for the same image. ``jpeg`` and ``resize`` draw nothing, so their pixels do not depend on
  the seed. An image that is missing or cannot be decoded is left as it is, so the runner
  records the error as for the base task.

``robustness_drop`` turns a base and a variant result into per-metric drops;
``positional_bias`` turns a ``*@positions`` log into per-position accuracies.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxbench.paths import cache_dir
from cxbench.schema import Sample
from cxbench.tasks import Task, TaskError

#: bump when a variant's output changes for the same input: it is part of every task hash
VARIANTS_VERSION = 1
_LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Variant:
    """One named transformation of samples."""

    name: str
    description: str
    #: function(sample, seed, task) -> a new Sample, or a list of them when ``expands``
    #: (the input sample is never mutated)
    transform: Callable[[Sample, int, Task], Sample | list[Sample]]
    #: True when the variant changes image pixels
    perturbs_images: bool = False
    #: True when ``transform`` returns a list of samples (one sample in, zero or more out)
    expands: bool = False


def _rng(*parts: Any) -> np.random.Generator:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# --------------------------------------------------------------------------- shuffle


def _shuffle(sample: Sample, seed: int, task: Task) -> Sample:
    choices = sample.choices
    if not choices or len(choices) < 2:
        return sample
    order = [int(i) for i in _rng("shuffle", seed, sample.id).permutation(len(choices))]
    new_choices = [choices[i] for i in order]
    target = sample.target
    if isinstance(target, str) and len(target.strip()) == 1 and target.strip().upper() in _LETTERS:
        old = _LETTERS.index(target.strip().upper())
        if old < len(choices):
            target = _LETTERS[order.index(old)]
    # a target given as the option text (not a letter) stays correct as it is
    return dataclasses.replace(sample, choices=new_choices, target=target)


# ------------------------------------------------------------------------ paraphrase

#: (family, query kind) -> question templates; ``{finding}``, ``{a_finding}`` come from the query
PARAPHRASES: dict[tuple[str, str], tuple[str, ...]] = {
    ("vqa_closed", "yes_no"): (
        "Is {a_finding} present in this chest X-ray?",
        "Does this chest radiograph show {a_finding}?",
        "Can {a_finding} be seen on this chest film?",
        "Looking at this chest X-ray, is there evidence of {finding}?",
    ),
    ("vqa_closed", "multiple_choice"): (
        "Which of these findings can be seen on this chest radiograph?",
        "Which one of the following options is present in this chest X-ray?",
        "Select the finding that this chest film shows.",
        "Looking at this chest X-ray, which of the options below is present?",
    ),
    ("vqa_open", "what"): (
        "What abnormality does this chest radiograph show? Answer with the finding name.",
        "Name the abnormal finding visible in this chest X-ray.",
        "Which abnormality is present on this chest film? Give the name of the finding.",
    ),
    ("vqa_open", "where"): (
        "In which part of the chest is the {finding}?",
        "Describe the location of the {finding} on this chest radiograph.",
        "Where on this chest X-ray can the {finding} be found?",
    ),
    ("report_generation", "findings"): (
        "Describe the findings of this chest X-ray as they would appear in a radiology report.",
        "Write the findings section for this chest radiograph.",
        "As a radiologist, report the findings you see on this chest film.",
    ),
    ("temporal_comparison", "change"): (
        "The first image is the earlier study and the second image is the latest one. Has the "
        "{finding} improved, worsened, or remained stable since the earlier study?",
        "Compare the current study (second image) with the prior study (first image): is the "
        "{finding} improved, worsened, or stable?",
        "Image one is the prior chest X-ray and image two the current one. How has the {finding} "
        "changed: has it improved, worsened, or stayed stable?",
    ),
    ("localization", "box"): (
        "Locate the {finding} in this chest X-ray.",
        "Give the location of the {finding} on this chest radiograph.",
        "Find the {finding} on this chest film and mark where it is.",
    ),
    ("diagnosis_recall1", "diagnosis"): (
        "What is the most probable diagnosis for this chest radiograph?",
        "Which diagnosis best explains this chest X-ray?",
        "Give the most likely diagnosis for this chest film.",
    ),
}
#: rewordings for samples whose (family, kind) has no template: the question is kept inside
GENERIC_PARAPHRASES = (
    "Please answer the following question about the image. {question}",
    "{question} Look carefully at the image before answering.",
    "Question about this chest X-ray: {question}",
)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _paraphrase(sample: Sample, seed: int, task: Task) -> Sample:
    fields = {"question": sample.question}
    finding = (sample.query or {}).get("finding")
    if isinstance(finding, str) and finding:
        fields.update(finding=finding, a_finding=f"{_article(finding)} {finding}")
    kind = (sample.query or {}).get("kind")
    templates = [
        t
        for t in PARAPHRASES.get((task.family, str(kind)), ())
        if all(f"{{{key}}}" not in t or key in fields for key in ("finding", "a_finding"))
    ]
    if not templates:
        templates = list(GENERIC_PARAPHRASES)
    template = templates[int(_rng("paraphrase", seed, sample.id).integers(len(templates)))]
    return dataclasses.replace(sample, question=template.format(**fields))


# ------------------------------------------------------------------------- positions

#: suffix of the copies made by ``positions``: ``"<sample id>#pos<j>"``
_POSITION_ID_RE = re.compile(r"^(?P<base>.*)#pos(?P<j>\d+)$")


def _correct_index(sample: Sample) -> int | None:
    """Index of the correct option of a multiple-choice sample: from a letter or an option text."""
    choices, target = sample.choices or [], sample.target
    if not isinstance(target, str):
        return None
    text = target.strip()
    if len(text) == 1 and text.upper() in _LETTERS and _LETTERS.index(text.upper()) < len(choices):
        return _LETTERS.index(text.upper())
    folded = [str(c).strip().lower() for c in choices]
    return folded.index(text.lower()) if text.lower() in folded else None


def _positions(sample: Sample, seed: int, task: Task) -> list[Sample]:
    choices = sample.choices
    if not choices or len(choices) < 2 or len(choices) > len(_LETTERS):
        return [sample]
    correct = _correct_index(sample)
    if correct is None:
        return [sample]
    k = len(choices)
    target_is_letter = isinstance(sample.target, str) and len(sample.target.strip()) == 1
    copies = []
    for j in range(k):
        shift = (correct - j) % k
        new_choices = [choices[(i + shift) % k] for i in range(k)]
        copies.append(
            dataclasses.replace(
                sample,
                id=f"{sample.id}#pos{j}",
                choices=new_choices,
                target=_LETTERS[j] if target_is_letter else sample.target,
            )
        )
    return copies


def _position_letter(sample: dict[str, Any]) -> str | None:
    """The letter at which a logged multiple-choice sample has its correct option."""
    if not sample.get("choices"):
        return None
    try:
        index = _correct_index(Sample(**sample))
    except TypeError:
        return None
    return None if index is None else _LETTERS[index]


def positional_bias(log_path: str | Path, metric: str = "accuracy") -> dict[str, Any]:
    """Accuracy per answer position of a ``*@positions`` run log, its spread, and CircularEval.

    Reads the per-sample rows (``sample_id``, ``sample`` with ``choices``/``target``,
    ``scores``) of the log; rows without choices (yes/no questions passed through) are
    ignored. A copy is correct when its ``metric`` value is at least 0.5 (``accuracy`` is
    1/0); a missing value (an error row) counts as wrong. Returns::

        {"metric": "accuracy",
         "per_position": {"A": 1.0, "B": 0.0, ...},   # mean metric over copies, per correct letter
         "n_per_position": {"A": 14, ...},
         "spread": 1.0,                               # max - min of per_position
         "accuracy": 0.25,                            # mean over all multiple-choice copies
         "circular_accuracy": 0.0,                    # base samples with all k copies correct
         "n_base": 14,                                # base samples with all k copies in the log
         "n_incomplete": 0}                           # base samples with missing copies (--limit)

    ``circular_accuracy`` counts only base samples whose k copies are all in the log.
    """
    per_position: dict[str, list[float]] = {}
    groups: dict[str, dict[int, bool]] = {}
    sizes: dict[str, int] = {}
    with Path(log_path).open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            if "header" in row:
                continue
            sample = row.get("sample") or {}
            letter = _position_letter(sample)
            if letter is None:
                continue
            value = (row.get("scores") or {}).get(metric)
            value = 0.0 if value is None else float(value)
            per_position.setdefault(letter, []).append(value)
            sample_id = str(row.get("sample_id", sample.get("id", "")))
            match = _POSITION_ID_RE.match(sample_id)
            base, j = (match["base"], int(match["j"])) if match else (sample_id, 0)
            groups.setdefault(base, {})[j] = value >= 0.5
            sizes[base] = len(sample["choices"])
    means = {letter: float(np.mean(per_position[letter])) for letter in sorted(per_position)}
    complete = {base: hits for base, hits in groups.items() if len(hits) == sizes[base]}
    all_values = [v for values in per_position.values() for v in values]
    return {
        "metric": metric,
        "per_position": means,
        "n_per_position": {letter: len(per_position[letter]) for letter in sorted(per_position)},
        "spread": float(max(means.values()) - min(means.values())) if means else 0.0,
        "accuracy": float(np.mean(all_values)) if all_values else 0.0,
        "circular_accuracy": (
            float(np.mean([all(hits.values()) for hits in complete.values()])) if complete else 0.0
        ),
        "n_base": len(complete),
        "n_incomplete": len(groups) - len(complete),
    }


# ---------------------------------------------------------------- image perturbations


def _to_array(image: Any) -> tuple[np.ndarray, float, np.dtype]:
    """Pixels as float32 (H, W[, C]), the value range and the dtype to write back."""
    if image.mode in ("1", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        has_alpha = image.mode == "P" and "transparency" in image.info
        image = image.convert("L" if image.mode == "1" else "RGBA" if has_alpha else "RGB")
    if image.mode == "F":
        raise ValueError("floating-point images are not supported")
    raw = np.asarray(image)
    if raw.dtype == np.uint8:
        return raw.astype(np.float32), 255.0, np.dtype(np.uint8)
    return raw.astype(np.float32), 65535.0, np.dtype(np.uint16 if raw.dtype == np.uint16 else np.int32)


def _from_array(values: np.ndarray, top: float, dtype: np.dtype) -> Any:
    from PIL import Image

    return Image.fromarray(np.clip(np.rint(values), 0, top).astype(dtype))


def _per_channel(values: np.ndarray, op: Callable[[Any], Any]) -> np.ndarray:
    """Apply a PIL operation to each channel as a float ("F") image."""
    from PIL import Image

    planes = values[..., None] if values.ndim == 2 else values
    out = [
        np.asarray(op(Image.fromarray(np.ascontiguousarray(planes[..., c]), "F")))
        for c in range(planes.shape[-1])
    ]
    stacked = np.stack(out, axis=-1).astype(np.float32)
    return stacked[..., 0] if values.ndim == 2 else stacked


def _rotation_angle(rng: np.random.Generator) -> float:
    return float(rng.uniform(1.0, 5.0)) * (1.0 if rng.random() < 0.5 else -1.0)


def _rotate(values: np.ndarray, top: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    angle = _rotation_angle(rng)
    return _per_channel(values, lambda im: im.rotate(angle, resample=Image.BILINEAR, fillcolor=0.0))


def _contrast(values: np.ndarray, top: float, rng: np.random.Generator) -> np.ndarray:
    factor, shift = float(rng.uniform(0.7, 1.3)), float(rng.uniform(-0.1, 0.1))
    if values.ndim == 3 and values.shape[-1] in (2, 4):  # leave alpha alone
        out = values.copy()
        mean = float(values[..., :-1].mean())
        out[..., :-1] = (values[..., :-1] - mean) * factor + mean + shift * top
        return out
    mean = float(values.mean())
    return (values - mean) * factor + mean + shift * top


def _noise(values: np.ndarray, top: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(values.shape).astype(np.float32) * np.float32(0.03 * top)
    if values.ndim == 3 and values.shape[-1] in (2, 4):
        noise[..., -1] = 0.0
    return values + noise


def _jpeg(values: np.ndarray, top: float, rng: np.random.Generator) -> np.ndarray:
    import io

    from PIL import Image

    scale = 255.0 / top
    alpha = None
    colour = values
    if values.ndim == 3 and values.shape[-1] in (2, 4):
        colour, alpha = values[..., :-1], values[..., -1]
        if colour.shape[-1] == 1:
            colour = colour[..., 0]
    eight = np.clip(np.rint(colour * scale), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(eight).save(buffer, format="JPEG", quality=30)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        out = np.asarray(decoded.convert("L" if eight.ndim == 2 else "RGB")).astype(np.float32) / scale
    if alpha is not None:
        out = np.concatenate([out if out.ndim == 3 else out[..., None], alpha[..., None]], axis=-1)
    return out


def _resize(values: np.ndarray, top: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    height, width = values.shape[:2]
    small = (max(1, round(width / 2)), max(1, round(height / 2)))
    return _per_channel(
        values, lambda im: im.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    )


_PERTURBATIONS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "rotate": _rotate,
    "contrast": _contrast,
    "noise": _noise,
    "jpeg": _jpeg,
    "resize": _resize,
}
# (path, mtime_ns, size, variant, seed) -> (output path, digest): avoids re-reading sources
_DONE: dict[tuple[str, int, int, str, int], tuple[str, bytes]] = {}


def _digest(name: str, seed: int, data: bytes) -> bytes:
    head = f"cxbench-variant/v{VARIANTS_VERSION}/{name}/{seed}\0".encode()
    return hashlib.sha256(head + data).digest()


def perturb_image(path: str, name: str, seed: int = 0) -> tuple[str, bytes | None]:
    """The perturbed copy of the image at ``path`` (written once) and the digest it derives from.

    Returns ``(path, None)`` unchanged when the image is missing or cannot be decoded.
    DICOM sources are perturbed as rendered by :func:`cxbench.images.load_image` (8-bit).
    """
    from cxbench.images import load_image

    try:
        stat = os.stat(path)
    except OSError:
        return path, None
    memo = (str(path), stat.st_mtime_ns, stat.st_size, name, seed)
    if memo in _DONE:
        out, digest = _DONE[memo]
        if os.path.exists(out):
            return out, digest
    data = Path(path).read_bytes()
    digest = _digest(name, seed, data)
    key = digest.hex()
    out_path = cache_dir() / "variants" / name / key[:2] / f"{key}.png"
    if not out_path.exists():
        try:
            values, top, dtype = _to_array(load_image(path, native=True))
        except Exception:  # a corrupt image stays as it is: the runner reports it
            return path, None
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        result = _from_array(_PERTURBATIONS[name](values, top, rng), top, dtype)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=out_path.parent, suffix=".png.tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                result.save(stream, format="PNG")
            os.replace(tmp, out_path)  # atomic: concurrent runs write the same bytes
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    if len(_DONE) > 200_000:
        _DONE.clear()
    _DONE[memo] = (str(out_path), digest)
    return str(out_path), digest


def rotate_box(box: list[float], angle: float, width: int, height: int) -> list[float]:
    """The axis-aligned box of ``box`` (normalised [x1, y1, x2, y2]) rotated like PIL's
    ``Image.rotate(angle)`` (counter-clockwise on screen, about the centre), clipped to [0, 1]."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = width / 2.0, height / 2.0
    rad = np.deg2rad(angle)
    cos, sin = float(np.cos(rad)), float(np.sin(rad))
    xs, ys = [], []
    for x, y in ((x1, y1), (x2, y1), (x1, y2), (x2, y2)):
        dx, dy = x * width - cx, y * height - cy
        xs.append((cx + dx * cos + dy * sin) / width)
        ys.append((cy - dx * sin + dy * cos) / height)
    clip = lambda v: round(min(1.0, max(0.0, v)), 4)  # noqa: E731
    return [clip(min(xs)), clip(min(ys)), clip(max(xs)), clip(max(ys))]


def _is_box(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def _image_size(path: str, sample: Sample) -> tuple[int, int] | None:
    size = (sample.metadata or {}).get("image_size")
    if size:
        return int(size[0]), int(size[1])
    try:
        from cxbench.images import image_size

        return image_size(path)
    except Exception:
        return None


def _perturb(name: str) -> Callable[[Sample, int, Task], Sample]:
    def transform(sample: Sample, seed: int, task: Task) -> Sample:
        outputs = [perturb_image(p, name, seed) for p in sample.images]
        metadata = dict(sample.metadata or {})
        metadata.setdefault("source_images", list(sample.images))
        new = dataclasses.replace(sample, images=[p for p, _ in outputs], metadata=metadata)
        if name != "rotate" or not outputs or outputs[-1][1] is None:
            return new
        # boxes belong to the last (current) image: move them with it
        digest = outputs[-1][1]
        angle = _rotation_angle(np.random.default_rng(int.from_bytes(digest[:8], "little")))
        size = _image_size(sample.images[-1], sample)
        if size is None:
            return new
        if isinstance(new.target, list) and new.target and all(_is_box(b) for b in new.target):
            new.target = [rotate_box(b, angle, *size) for b in new.target]
        findings = metadata.get("findings")
        if isinstance(findings, list) and any(
            isinstance(f, dict) and _is_box(f.get("box")) for f in findings
        ):
            findings = copy.deepcopy(findings)
            for finding in findings:
                if isinstance(finding, dict) and _is_box(finding.get("box")):
                    finding["box"] = rotate_box(finding["box"], angle, *size)
            metadata["findings"] = findings
        metadata["rotation_degrees"] = round(angle, 4)
        return new

    return transform


# ------------------------------------------------------------------------- registry

VARIANTS: dict[str, Variant] = {
    "shuffle": Variant(
        "shuffle", "answer options shuffled per sample, target letter remapped (MC samples only)", _shuffle
    ),
    "paraphrase": Variant("paraphrase", "question reworded with a per-family template", _paraphrase),
    "positions": Variant(
        "positions",
        "circular evaluation: each MC sample becomes k copies, the correct option at each position",
        _positions,
        expands=True,
    ),
    "rotate": Variant(
        "rotate", "rotation by 1-5 degrees either way; boxes moved along", _perturb("rotate"), True
    ),
    "contrast": Variant("contrast", "brightness/contrast jitter", _perturb("contrast"), True),
    "noise": Variant("noise", "Gaussian noise, sigma 0.03 of the range", _perturb("noise"), True),
    "jpeg": Variant("jpeg", "JPEG re-compression at quality 30, stored as PNG", _perturb("jpeg"), True),
    "resize": Variant("resize", "down to 50% and back up", _perturb("resize"), True),
}


def parse_task_name(name: str) -> tuple[str, list[tuple[str, int]]]:
    """``"vqa_closed@shuffle:3@noise"`` -> ``("vqa_closed", [("shuffle", 3), ("noise", 0)])``."""
    base, *parts = name.split("@")
    if not base.strip():
        raise TaskError(f"task name {name!r} has no base task before '@'")
    variants = []
    for part in parts:
        variant, sep, seed_text = part.partition(":")
        variant = variant.strip()
        if variant not in VARIANTS:
            raise TaskError(
                f"unknown variant {variant!r} in task {name!r}; known variants: {', '.join(VARIANTS)}"
            )
        seed = 0
        if sep:
            try:
                seed = int(seed_text)
            except ValueError:
                raise TaskError(f"variant seed {seed_text!r} in task {name!r} is not an integer") from None
        variants.append((variant, seed))
    return base.strip(), variants


def variant_name(base: str, variants: Iterable[tuple[str, int]]) -> str:
    """The canonical suffixed name (a seed of 0 is left out)."""
    return base + "".join(f"@{name}" + (f":{seed}" if seed else "") for name, seed in variants)


def _normalise(variants: Iterable[tuple[str, int] | str]) -> list[tuple[str, int]]:
    out = []
    for item in variants:
        if isinstance(item, str):
            out.extend(parse_task_name(f"_@{item}")[1])
            continue
        name, seed = item
        if name not in VARIANTS:
            raise TaskError(f"unknown variant {name!r}; known variants: {', '.join(VARIANTS)}")
        out.append((name, int(seed)))
    return out


@dataclass
class VariantTask(Task):
    """A task whose samples are those of ``base`` passed through ``variants`` in order."""

    base: Task | None = None
    variants: tuple[tuple[str, int], ...] = ()

    def samples(self, split: str | None = None, data_root: str | None = None) -> Iterator[Sample]:
        assert self.base is not None
        steps = [(VARIANTS[name].transform, seed) for name, seed in self.variants]
        for sample in self.base.samples(split, data_root):
            yield from self._transformed(sample, steps)

    def _transformed(self, sample: Sample, steps: list) -> Iterator[Sample]:
        """``sample`` through ``steps``; an expanding variant's copies each go through the rest."""
        for i, (transform, seed) in enumerate(steps):
            out = transform(sample, seed, self)
            if not isinstance(out, Sample):
                for copy_ in out:
                    yield from self._transformed(copy_, steps[i + 1 :])
                return
            sample = out
        yield sample


def apply_variants(task: Task, variants: Iterable[tuple[str, int] | str]) -> Task:
    """A new task named ``TASK@VARIANT...`` whose samples are transformed as it streams them.

    ``variants`` holds ``(name, seed)`` pairs or ``"name[:seed]"`` strings. The new task's
    ``config`` records them (so its ``task_hash`` differs from the base's); everything else
    (prompt, parser, metrics, hooks) is the base task's. Applying to a variant task appends.
    """
    steps = _normalise(variants)
    base = task
    if isinstance(task, VariantTask) and task.base is not None:
        steps = [*task.variants, *steps]
        base = task.base
    name = variant_name(base.name, steps)
    config = {
        **base.config,
        "name": name,
        "base_task": base.name,
        "variants": [{"name": v, "seed": s} for v, s in steps],
        "variants_version": VARIANTS_VERSION,
    }
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Task)}
    fields.update(name=name, config=config)
    return VariantTask(**fields, base=base, variants=tuple(steps))


def robustness_drop(
    base_result: dict[str, Any], variant_result: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Per metric present in both results: ``{"base", "variant", "drop"}``.

    ``drop`` is how much worse the variant is: ``base - variant`` for higher-is-better
    metrics, ``variant - base`` for lower-is-better ones (read from the result's metric
    info, else the metric registry). Metrics without a value in either result are skipped.
    """
    from cxbench import metrics as registry

    base_metrics, variant_metrics = base_result.get("metrics", {}), variant_result.get("metrics", {})
    out: dict[str, dict[str, float]] = {}
    for name, info in base_metrics.items():
        other = variant_metrics.get(name)
        if not isinstance(info, dict) or not isinstance(other, dict):
            continue
        base_value, variant_value = info.get("value"), other.get("value")
        if base_value is None or variant_value is None:
            continue
        direction = info.get("direction") or other.get("direction")
        if direction is None:
            try:
                direction = registry.get(name).direction
            except Exception:  # an unknown plugin metric: assume higher is better
                direction = "higher"
        drop = base_value - variant_value if direction != "lower" else variant_value - base_value
        out[name] = {"base": float(base_value), "variant": float(variant_value), "drop": float(drop)}
    return out
