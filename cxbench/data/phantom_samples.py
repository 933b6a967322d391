"""Turn phantom cases into Samples for each task family.

Questions are chosen deterministically from the case id, so every model sees the same
samples. ``query`` holds the structured question (which finding is asked about), never
the answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from cxbench.labels import DISEASES_14
from cxbench.schema import Sample

NO_FINDING = "no finding"
_LETTERS = "ABCD"
_CHANGE_TO_LABEL = {
    "worsened": "worsened",
    "new": "worsened",
    "improved": "improved",
    "resolved": "improved",
    "stable": "stable",
}


def _rng(case_id: str, family: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{case_id}/{family}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _metadata(case: dict[str, Any], split: str) -> dict[str, Any]:
    return {
        "dataset": "phantom",
        "split": split,
        "case_id": case["case_id"],
        "patient_id": case["patient_id"],
        "study_date": case["study_date"],
        "view": case["view"],
        "image_size": [case["width"], case["height"]],
        # ground truth of the whole study, for metrics on the reasoning (never sent to models)
        "findings": [{k: f[k] for k in ("label", "severity", "box", "region")} for f in case["findings"]],
    }


def _vqa_closed(case: dict[str, Any], meta: dict[str, Any]) -> Iterator[Sample]:
    rng = _rng(case["case_id"], "vqa_closed")
    present = [f["label"] for f in case["findings"]]
    absent = [d for d in DISEASES_14 if d not in present]
    # yes/no: half the time about a present finding when there is one
    if present and rng.random() < 0.5:
        finding, answer = present[int(rng.integers(len(present)))], "yes"
    else:
        finding, answer = absent[int(rng.integers(len(absent)))], "no"
    yield Sample(
        id=f"{case['case_id']}:yn",
        images=[case["image"]],
        question=f"Is there {_article(finding)} {finding} in this chest X-ray?",
        target=answer,
        query={"kind": "yes_no", "finding": finding},
        metadata=meta,
    )
    # multiple choice: one correct option among four
    correct = present[int(rng.integers(len(present)))] if present else NO_FINDING
    pool = [d for d in absent if d != correct] + ([NO_FINDING] if present else [])
    distractors = [pool[i] for i in rng.choice(len(pool), size=3, replace=False)]
    options = distractors + [correct]
    rng.shuffle(options)
    yield Sample(
        id=f"{case['case_id']}:mc",
        images=[case["image"]],
        question="Which of the following is present in this chest X-ray?",
        choices=options,
        target=_LETTERS[options.index(correct)],
        query={"kind": "multiple_choice"},
        metadata=meta,
    )


def _vqa_open(case: dict[str, Any], meta: dict[str, Any]) -> Iterator[Sample]:
    findings = case["findings"]
    if len(findings) <= 1:
        yield Sample(
            id=f"{case['case_id']}:what",
            images=[case["image"]],
            question="What is the abnormality in this chest X-ray? Answer with the finding name.",
            target=findings[0]["label"] if findings else NO_FINDING,
            query={"kind": "what"},
            metadata=meta,
        )
    if findings:
        rng = _rng(case["case_id"], "vqa_open")
        finding = findings[int(rng.integers(len(findings)))]
        yield Sample(
            id=f"{case['case_id']}:where",
            images=[case["image"]],
            question=f"Where is the {finding['label']} located?",
            target=finding["region"],
            query={"kind": "where", "finding": finding["label"]},
            metadata=meta,
        )


def _report(case: dict[str, Any], meta: dict[str, Any]) -> Iterator[Sample]:
    yield Sample(
        id=f"{case['case_id']}:report",
        images=[case["image"]],
        question="Write the findings section of the radiology report for this chest X-ray.",
        target=case["report"]["findings"],
        query={"kind": "findings"},
        metadata={**meta, "impression": case["report"]["impression"]},
    )


def _temporal(case: dict[str, Any], meta: dict[str, Any]) -> Iterator[Sample]:
    prior = case.get("prior")
    if not prior:
        return
    for change in prior["changes"]:
        finding = change["label"]
        yield Sample(
            id=f"{case['case_id']}:change:{finding.replace(' ', '_')}",
            images=[prior["image"], case["image"]],
            question=(
                "The first image is the prior study and the second image is the current study. "
                f"Compared with the prior, has the {finding} improved, worsened, or remained stable?"
            ),
            target=_CHANGE_TO_LABEL[change["change"]],
            query={"kind": "change", "finding": finding},
            metadata={**meta, "prior_study_date": prior["study_date"], "raw_change": change["change"]},
        )


def _localization(case: dict[str, Any], meta: dict[str, Any]) -> Iterator[Sample]:
    for finding in case["findings"]:
        yield Sample(
            id=f"{case['case_id']}:box:{finding['label'].replace(' ', '_')}",
            images=[case["image"]],
            question=f"Where is the {finding['label']} in this chest X-ray?",
            target=[finding["box"]],
            query={"kind": "box", "finding": finding["label"]},
            metadata=meta,
        )


def _diagnosis(case: dict[str, Any], meta: dict[str, Any]) -> Iterator[Sample]:
    if len(case["findings"]) != 1:
        return
    yield Sample(
        id=f"{case['case_id']}:dx",
        images=[case["image"]],
        question="What is the most likely diagnosis for this chest X-ray?",
        target=case["findings"][0]["label"],
        query={"kind": "diagnosis"},
        metadata=meta,
    )


BUILDERS = {
    "vqa_closed": _vqa_closed,
    "vqa_open": _vqa_open,
    "report_generation": _report,
    "temporal_comparison": _temporal,
    "localization": _localization,
    "diagnosis_recall1": _diagnosis,
}


def build_samples(cases: list[dict[str, Any]], family: str, split: str) -> Iterator[Sample]:
    """Samples of one task family from the cases of one split, in case order."""
    if family not in BUILDERS:
        raise ValueError(f"phantom data has no task family {family!r}; known: {', '.join(BUILDERS)}")
    builder = BUILDERS[family]
    for case in cases:
        if case["split"] == split:
            yield from builder(case, _metadata(case, split))
