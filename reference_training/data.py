"""Training data of every curriculum stage, built from any cxbench dataset adapter.

``get_adapter(name).samples(family, split, params)`` gives :class:`cxbench.schema.Sample` records;
this module turns them into :class:`Example` records (images, a user prompt, the assistant's
completion, and for RL prompts a verifiable :class:`~reference_training.rewards.RewardTarget`):

``text_examples``
    Stage 1, medical text warm-up: reports as text-only chats (findings -> impression, and the
    findings themselves), no images: the ``report_generation`` family, and the ``text`` family of
    report-only adapters such as ``iu_xray_reports``.
``instruction_examples``
    Stage 2, CXR instruction tuning, and the answer-only half of stage 3: every task family with
    the prompt of cxbench's built-in task of that family (``tasks/<family>.yaml``, the prompts the
    model is evaluated with) and the gold answer as plain text: ``yes``/``no`` or the option letter,
    the open answer, the findings text, the change word, a pixel box ``[x1, y1, x2, y2]``, the
    diagnosis.
``interleaved_examples``
    The interleaved half of stage 3 (cold start), in CX-Mind's layout, with the CX-Mind prompt
    instructions (:data:`cxbench.models.hf.PROFILES`, profile ``cx-mind``). Multiple choice: one
    ``<think>..</think><answer>X) ✅|❌</answer>`` pair per option, then a summary pair whose answer
    is the chosen option marked ✅. Yes/no: one pair on the asked finding, then the answer. Open
    diagnosis: a pair listing the differential (the gold diseases plus seeded distractors), one pair
    per candidate marked ✅/❌, a final pair with the comma-separated diseases (``no finding`` for a
    normal study). Each think text is *grounded in the report*: the report's sentences about that
    finding (positive sentences for a present finding, negated ones for an absent finding), with a
    short template only when the report says nothing about it.
``rl_prompts``
    Stages 4-5: closed prompts (multiple choice; target: the option letter) and open prompts
    (which diseases are present; target: the disease set), each with the reference reasoning (the
    think texts of the interleaved answer) for the think-text reward, and the boxes of the
    findings for the grounded reward.

Ground truth is read from the Sample: ``target`` and ``choices``; ``metadata["findings"]``
(``label``, optional ``box``) for the disease set of a study; reports from the
``report_generation`` samples of the same image (``images[-1]``). A sample without what a builder
needs is skipped (counted in :func:`build_stage`'s ``skipped``). Everything is deterministic:
distractors and orders are drawn from a hash of the sample id and ``seed``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxbench.labels import DISEASE_SYNONYMS, DISEASES_14
from cxbench.parsing import parse_ranked_labels
from cxbench.schema import Sample
from reference_training.rewards import NO_FINDING, RewardTarget

#: cxbench's task families (each has a built-in task of the same name).
FAMILIES: tuple[str, ...] = (
    "vqa_closed",
    "vqa_open",
    "report_generation",
    "temporal_comparison",
    "localization",
    "diagnosis_recall1",
)
STAGES: tuple[str, ...] = ("text_warmup", "sft", "cold_start", "grpo_closed", "grpo_open")
OPEN_QUESTION = "Which diseases are present in this chest X-ray?"
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


@dataclass
class Example:
    """One training record: images (paths), the user prompt, the completion, an RL target."""

    id: str
    images: list[str]
    prompt: str
    completion: str = ""
    kind: str = "instruction"  # text | instruction | interleaved | rl_closed | rl_open
    target: RewardTarget | None = None
    family: str = ""


@dataclass
class StageData:
    """The examples of one stage and the samples that could not be used (by reason)."""

    examples: list[Example]
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


# ----------------------------------------------------------------------------------------
# Reading samples and reports
# ----------------------------------------------------------------------------------------


def load_samples(dataset: str, family: str, split: str, params: dict[str, Any] | None = None) -> list[Sample]:
    """The samples of one family; an empty list when the adapter does not serve that family."""
    from cxbench.data.adapters import get_adapter

    try:
        return list(get_adapter(dataset).samples(family, split, dict(params or {})))
    except ValueError as exc:  # DataError is a ValueError; "no task family" too
        if "famil" in str(exc):  # "no task family X" / "provides the families ..., not X"
            return []
        raise


def reports_by_image(samples: Iterable[Sample]) -> dict[str, str]:
    """The findings text of each study, keyed by its (current) image path."""
    return {s.images[-1]: str(s.target) for s in samples if s.images and isinstance(s.target, str)}


def sentences(report: str) -> list[str]:
    """The sentences of a report."""
    return [s.strip() for s in _SENTENCE_RE.split(report.strip()) if s.strip()]


def _synonym_re(label: str, synonyms: Sequence[str]) -> re.Pattern[str]:
    names = sorted({label, *synonyms}, key=len, reverse=True)
    return re.compile(r"(?<![a-z])(?:" + "|".join(re.escape(n) for n in names) + r")(?![a-z])")


_SYNONYM_RE = {label: _synonym_re(label, syns) for label, syns in DISEASE_SYNONYMS.items()}


def mentions(sentence: str, label: str) -> bool:
    """Whether ``sentence`` names ``label`` (any synonym, any polarity)."""
    return bool(_SYNONYM_RE[label].search(sentence.lower()))


def finding_sentences(report: str, label: str, present: bool) -> list[str]:
    """The report's sentences about ``label``: asserting it when ``present``, negating it otherwise."""
    found = []
    for sentence in sentences(report):
        if not mentions(sentence, label):
            continue
        asserted = label in parse_ranked_labels(sentence, DISEASE_SYNONYMS)
        if asserted == present and not (present is False and "resolved" in sentence.lower()):
            found.append(sentence)
    return found


def _label_name(label: str) -> str:
    return label[:1].upper() + label[1:]


def grounded_think(label: str, present: bool, report: str | None) -> str:
    """The think text of one finding: the report's sentences about it, else a short template."""
    if label == NO_FINDING:
        return "No abnormality is seen." if present else "An abnormal finding is present."
    found = finding_sentences(report, label, present) if report else []
    if found:
        return f"Signs of {label}: " + " ".join(found)
    fallback = f"{_label_name(label)} is present." if present else f"No {label} is seen."
    return f"Signs of {label}: {fallback}"


def _rng(key: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _study_labels(sample: Sample) -> list[str] | None:
    """The disease set of the sample's study: ``metadata["findings"]`` labels, else None."""
    findings = sample.metadata.get("findings") if isinstance(sample.metadata, dict) else None
    if not isinstance(findings, list):
        return None
    labels = []
    for finding in findings:
        label = finding.get("label") if isinstance(finding, dict) else None
        if isinstance(label, str) and label in DISEASE_SYNONYMS and label not in labels:
            labels.append(label)
    return labels


def _image_size(sample: Sample) -> tuple[int, int]:
    size = sample.metadata.get("image_size") if isinstance(sample.metadata, dict) else None
    if size:
        return int(size[0]), int(size[1])
    from cxbench.images import image_size

    return image_size(sample.images[-1])  # header only; DICOM too


def _boxes(sample: Sample) -> list[dict[str, Any]]:
    findings = sample.metadata.get("findings") if isinstance(sample.metadata, dict) else None
    return [
        {"label": f["label"], "box": [float(v) for v in f["box"]]}
        for f in findings or []
        if isinstance(f, dict) and f.get("label") in DISEASE_SYNONYMS and f.get("box") is not None
    ]


# ----------------------------------------------------------------------------------------
# Stage 1 and 2: text warm-up and instruction tuning
# ----------------------------------------------------------------------------------------


def text_examples(reports: Sequence[Sample], summaries: Sequence[Sample] = ()) -> Iterator[Example]:
    """Text-only chats: write the impression for findings, restate the findings.

    ``reports`` are ``report_generation`` samples (findings in ``target``, the impression in
    ``metadata["impression"]`` when known); ``summaries`` are ``text``-family samples (findings in
    ``question``, impression in ``target``, e.g. IU X-ray reports).
    """
    pairs = []
    for sample in reports:
        impression = sample.metadata.get("impression") if isinstance(sample.metadata, dict) else None
        pairs.append((sample.id, str(sample.target).strip(), str(impression or "").strip()))
    pairs += [(s.id, str(s.question).strip(), str(s.target or "").strip()) for s in summaries]
    for sample_id, findings, impression in pairs:
        if not findings:
            continue
        if impression:
            yield Example(
                id=f"{sample_id}:impression",
                images=[],
                prompt=f"Summarize these chest X-ray findings as an impression.\nFindings: {findings}",
                completion=impression,
                kind="text",
            )
        yield Example(
            id=f"{sample_id}:findings",
            images=[],
            prompt="Write the findings section of a chest X-ray report.",
            completion=findings,
            kind="text",
        )


def instruction_answer(sample: Sample, family: str) -> str | None:
    """The gold answer of a sample as the plain text a model should write, or None."""
    target = sample.target
    if family == "localization":
        boxes = target if target and isinstance(target[0], (list, tuple)) else [target]
        if not boxes or not boxes[0] or len(boxes[0]) != 4:
            return None
        width, height = _image_size(sample)
        x1, y1, x2, y2 = boxes[0]
        return f"[{round(x1 * width)}, {round(y1 * height)}, {round(x2 * width)}, {round(y2 * height)}]"
    if family == "diagnosis_recall1" and isinstance(target, (list, tuple)):
        return ", ".join(str(t) for t in target) or None
    if isinstance(target, str) and target.strip():
        return target.strip()
    return None


def instruction_examples(samples: Sequence[Sample], family: str, data: StageData) -> Iterator[Example]:
    """Answer-only examples with the prompt of cxbench's built-in task of ``family``."""
    from cxbench.tasks import get_task

    task = get_task(family)
    for sample in samples:
        answer = instruction_answer(sample, family)
        if answer is None:
            data.skip(f"{family}: no usable target")
            continue
        yield Example(
            id=sample.id,
            images=list(sample.images),
            prompt=task.render_prompt(sample),
            completion=answer,
            kind="instruction",
            family=family,
        )


# ----------------------------------------------------------------------------------------
# Stage 3: interleaved reasoning (CX-Mind layout)
# ----------------------------------------------------------------------------------------


def cx_mind_instruction(closed: bool) -> str:
    """CX-Mind's format instruction (from its public evaluation scripts, via cxbench's profile)."""
    from cxbench.models.hf import find_profile

    profile = find_profile("cx-mind")
    text = profile.instruction_choices if closed else profile.instruction
    return (text or "").strip()


def pair(think: str, answer: str) -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def choice_label(choice: str) -> str | None:
    """The disease (or ``no finding``) an option names, if exactly one."""
    if choice.strip().lower() == NO_FINDING:
        return NO_FINDING
    labels = [label for label in DISEASE_SYNONYMS if mentions(choice, label)]
    return labels[0] if len(labels) == 1 else None


def closed_reasoning(sample: Sample, report: str | None) -> tuple[str, str] | None:
    """(completion, reference reasoning) of a multiple-choice or yes/no sample, or None."""
    labels = _study_labels(sample)
    if sample.choices:
        gold = str(sample.target).strip().upper()
        letters = _LETTERS[: len(sample.choices)]
        if gold not in letters or labels is None:
            return None
        steps, thinks = [], []
        for letter, choice in zip(letters, sample.choices, strict=False):
            label = choice_label(choice)
            if label is None:
                return None
            present = (not labels) if label == NO_FINDING else label in labels
            if present != (letter == gold):  # the option texts disagree with the study's findings
                return None
            think = f"Option {letter}, {choice}. " + grounded_think(label, present, report)
            thinks.append(think)
            steps.append(pair(think, f"{letter}) {'✅' if present else '❌'}"))
        summary = f"Only option {gold} is supported by the image."
        thinks.append(summary)
        steps.append(pair(summary, f"{gold}) ✅"))
        return "".join(steps), "\n".join(thinks)
    finding = sample.query.get("finding") if isinstance(sample.query, dict) else None
    answer = str(sample.target).strip().lower()
    if finding not in DISEASE_SYNONYMS or answer not in ("yes", "no"):
        return None
    present = answer == "yes"
    think = grounded_think(finding, present, report)
    summary = f"The {finding} is {'present' if present else 'absent'}."
    completion = pair(think, f"{_label_name(finding)} {'✅' if present else '❌'}") + pair(summary, answer)
    return completion, f"{think}\n{summary}"


def differential(labels: Sequence[str], key: str, seed: int, n_distractors: int = 2) -> list[str]:
    """The gold diseases plus ``n_distractors`` (3 for a normal study) absent ones, in seeded order."""
    rng = _rng(key, seed)
    absent = [d for d in DISEASES_14 if d not in labels]
    k = n_distractors + (0 if labels else 1)
    picks = [absent[i] for i in rng.choice(len(absent), size=min(k, len(absent)), replace=False)]
    candidates = list(labels) + picks
    return [candidates[i] for i in rng.permutation(len(candidates))]


def open_reasoning(labels: Sequence[str], report: str | None, key: str, seed: int) -> tuple[str, str]:
    """(completion, reference reasoning) of an open diagnosis with gold ``labels``."""
    candidates = differential(labels, key, seed)
    overview = "The lungs, pleura, heart and mediastinum are reviewed for abnormal findings."
    steps = [pair(overview, "Possible diagnoses: " + ", ".join(candidates))]
    thinks = [overview]
    for label in candidates:
        present = label in labels
        think = grounded_think(label, present, report)
        thinks.append(think)
        steps.append(pair(think, f"{_label_name(label)} {'✅' if present else '❌'}"))
    confirmed = [c for c in candidates if c in labels]
    if confirmed:
        summary, final = "Confirmed: " + ", ".join(confirmed) + ".", ", ".join(confirmed)
    else:
        summary, final = "None of the candidates is confirmed.", NO_FINDING
    thinks.append(summary)
    steps.append(pair(summary, final))
    return "".join(steps), "\n".join(thinks)


def _open_studies(samples: Iterable[Sample]) -> Iterator[tuple[Sample, list[str]]]:
    """One (sample, gold disease set) per study image: from ``metadata["findings"]``, else from a
    diagnosis target naming one disease."""
    seen: set[str] = set()
    for sample in samples:
        if not sample.images or sample.images[-1] in seen or len(sample.images) != 1:
            continue
        labels = _study_labels(sample)
        if labels is None and isinstance(sample.target, str) and sample.target in DISEASE_SYNONYMS:
            labels = [sample.target]
        if labels is None:
            continue
        seen.add(sample.images[-1])
        yield sample, labels


def interleaved_examples(
    closed: Sequence[Sample], studies: Sequence[Sample], reports: dict[str, str], data: StageData, seed: int
) -> Iterator[Example]:
    """CX-Mind interleaved examples: closed questions, then open diagnoses."""
    instruction = cx_mind_instruction(closed=True)
    from cxbench.tasks import format_options

    for sample in closed:
        built = closed_reasoning(sample, reports.get(sample.images[-1]))
        if built is None:
            data.skip("interleaved closed: options or findings not verifiable")
            continue
        prompt = "\n".join(p for p in (sample.question, format_options(sample.choices), instruction) if p)
        images = list(sample.images)
        yield Example(sample.id + ":cot", images, prompt, built[0], "interleaved", None, "vqa_closed")
    instruction = cx_mind_instruction(closed=False)
    for sample, labels in _open_studies(studies):
        completion, _ = open_reasoning(labels, reports.get(sample.images[-1]), sample.images[-1], seed)
        yield Example(
            sample.id + ":open-cot",
            list(sample.images),
            f"{OPEN_QUESTION}\n{instruction}",
            completion,
            "interleaved",
            family="diagnosis",
        )


# ----------------------------------------------------------------------------------------
# Stages 4-5: RL prompts with verifiable targets
# ----------------------------------------------------------------------------------------


def rl_closed_prompts(
    samples: Sequence[Sample], reports: dict[str, str], data: StageData, yes_no: bool = False
) -> Iterator[Example]:
    """Multiple-choice prompts; target: the option letter (+ reference reasoning, boxes).

    With ``yes_no``, yes/no questions about one of the 14 diseases are RL prompts too (data sets
    such as MIMIC-CXR or CheXpert have no multiple-choice questions): the target is the two
    options ``yes`` / ``no`` with the gold letter, and the asked finding (present or not) is what
    the ✅/❌ verdicts are checked against.
    """
    from cxbench.tasks import format_options

    instruction = cx_mind_instruction(closed=True)
    for sample in samples:
        if not sample.choices:
            if yes_no:
                example = _rl_yes_no(sample, reports, instruction, data)
                if example is not None:
                    yield example
            continue
        built = closed_reasoning(sample, reports.get(sample.images[-1]))
        if built is None:
            data.skip("rl closed: options or findings not verifiable")
            continue
        target = RewardTarget(
            kind="closed",
            choices=list(sample.choices),
            letter=str(sample.target).strip().upper(),
            reference=built[1],
            findings=_boxes(sample),
            image_size=_image_size(sample),
        )
        prompt = f"{sample.question}\n{format_options(sample.choices)}\n{instruction}"
        yield Example(sample.id, list(sample.images), prompt, built[0], "rl_closed", target, "vqa_closed")


def _rl_yes_no(sample: Sample, reports: dict[str, str], instruction: str, data: StageData) -> Example | None:
    built = closed_reasoning(sample, reports.get(sample.images[-1]))
    if built is None:
        data.skip("rl closed yes/no: finding not one of the 14 diseases, or answer not yes/no")
        return None
    finding = sample.query["finding"]
    present = str(sample.target).strip().lower() == "yes"
    findings = _boxes(sample)
    if present and not any(f["label"] == finding for f in findings):
        findings.append({"label": finding, "box": None})  # known present, location unknown
    target = RewardTarget(
        kind="closed",
        choices=["yes", "no"],
        letter="A" if present else "B",
        reference=built[1],
        findings=findings,
        image_size=_image_size(sample),
        asked=finding,
    )
    prompt = f"{sample.question}\n{instruction}"
    return Example(sample.id, list(sample.images), prompt, built[0], "rl_closed", target, "vqa_closed")


def rl_open_prompts(studies: Sequence[Sample], reports: dict[str, str], seed: int) -> Iterator[Example]:
    """Open diagnosis prompts; target: the study's disease set (+ reference reasoning, boxes)."""
    instruction = cx_mind_instruction(closed=False)
    for sample, labels in _open_studies(studies):
        report = reports.get(sample.images[-1])
        completion, reference = open_reasoning(labels, report, sample.images[-1], seed)
        target = RewardTarget(
            kind="open",
            labels=list(labels),
            reference=reference,
            findings=_boxes(sample),
            image_size=_image_size(sample),
        )
        yield Example(
            sample.id + ":open",
            list(sample.images),
            f"{OPEN_QUESTION}\n{instruction}",
            completion,
            "rl_open",
            target,
            "diagnosis",
        )


# ----------------------------------------------------------------------------------------
# One stage
# ----------------------------------------------------------------------------------------


def _limit(items: list[Any], limit: int | None, key: str, seed: int) -> list[Any]:
    """At most ``limit`` items, a seeded random subset in the original order."""
    if limit is None or len(items) <= limit:
        return items
    keep = sorted(_rng(key, seed).choice(len(items), size=limit, replace=False))
    return [items[i] for i in keep]


def build_stage(
    stage: str,
    dataset: str = "phantom",
    split: str = "train",
    params: dict[str, Any] | None = None,
    *,
    families: Sequence[str] = FAMILIES,
    limit_per_family: int | None = None,
    interleaved_fraction: float = 0.5,
    seed: int = 0,
    closed_yes_no: bool = False,
) -> StageData:
    """The examples of one curriculum stage.

    ``limit_per_family`` caps the examples per family (seeded subset); in the cold start,
    ``interleaved_fraction`` of the examples are interleaved, the rest answer-only.
    ``closed_yes_no`` adds yes/no questions to the closed GRPO stage (see :func:`rl_closed_prompts`).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    data = StageData([])
    reports_samples = load_samples(dataset, "report_generation", split, params)
    reports = reports_by_image(reports_samples)
    if stage == "text_warmup":
        summaries = load_samples(dataset, "text", split, params)
        texts = list(text_examples(reports_samples, summaries))
        data.examples = _limit(texts, limit_per_family, "text", seed)
        return data
    by_family = {family: load_samples(dataset, family, split, params) for family in families}
    for family, samples in by_family.items():  # a missing image would stop training later
        present = [s for s in samples if all(os.path.exists(p) for p in s.images)]
        for _ in range(len(samples) - len(present)):
            data.skip(f"{family}: image file missing")
        by_family[family] = present
    studies = [s for family in families for s in by_family[family]]
    if stage == "grpo_closed":
        prompts = list(rl_closed_prompts(by_family.get("vqa_closed", []), reports, data, closed_yes_no))
        data.examples = _limit(prompts, limit_per_family, stage, seed)
        return data
    if stage == "grpo_open":
        data.examples = _limit(list(rl_open_prompts(studies, reports, seed)), limit_per_family, stage, seed)
        return data
    answer_only: list[Example] = []
    for family in families:
        answer_only += _limit(
            list(instruction_examples(by_family[family], family, data)), limit_per_family, family, seed
        )
    if stage == "sft":
        data.examples = answer_only
        return data
    # cold start: interleaved examples plus answer-only ones
    interleaved = list(interleaved_examples(by_family.get("vqa_closed", []), studies, reports, data, seed))
    n_interleaved = len(interleaved)
    if limit_per_family is not None:
        cap = int(round(limit_per_family * len(families) * interleaved_fraction))
        n_interleaved = min(n_interleaved, cap)
    interleaved = _limit(interleaved, n_interleaved, "interleaved", seed)
    n_answer = int(round(len(interleaved) * (1 - interleaved_fraction) / max(interleaved_fraction, 1e-9)))
    mixed = interleaved + _limit(answer_only, n_answer, "answer-only", seed)
    data.examples = [mixed[i] for i in _rng("cold_start", seed).permutation(len(mixed))]
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reference_training.data --stage cold_start --dataset phantom [--out FILE.jsonl]``:
    build a stage's examples, print their counts, and optionally write them as JSONL to inspect."""
    import argparse
    import json
    from collections import Counter

    parser = argparse.ArgumentParser(prog="python -m reference_training.data", description=main.__doc__)
    parser.add_argument("--stage", choices=STAGES, required=True)
    parser.add_argument("--dataset", default="phantom")
    parser.add_argument("--split", default="train")
    parser.add_argument("--data-root", help="the adapter's root (params['root'])")
    parser.add_argument("--limit-per-family", type=int)
    parser.add_argument("--out", help="write the examples here as JSONL")
    args = parser.parse_args(argv)
    params = {"root": args.data_root} if args.data_root else {}
    built = build_stage(args.stage, args.dataset, args.split, params, limit_per_family=args.limit_per_family)
    counts = Counter(f"{e.kind}/{e.family or '-'}" for e in built.examples)
    for key, count in sorted(counts.items()):
        print(f"{count:8d}  {key}")
    for reason, count in sorted(built.skipped.items()):
        print(f"{count:8d}  skipped: {reason}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            for e in built.examples:
                row = {"id": e.id, "kind": e.kind, "family": e.family, "images": e.images, "prompt": e.prompt}
                row["completion"] = e.completion
                row["target"] = json.loads(e.target.to_json()) if e.target else None
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
