"""Templated radiology reports for phantom studies (and for predicted findings).

:func:`write_report` turns a list of findings (``label``, ``severity``, ``side``, ``zone``,
``region``; every key but ``label`` optional) into ``{"findings", "impression"}`` text with
varied synonyms, phrasings and sentence order, negated statements about some absent
findings, and comparison wording when the changes since a prior study are given. Every
phrase naming a disease contains one of :data:`cxbench.labels.DISEASE_SYNONYMS`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

# (noun phrase, countable) per disease; countable nouns take "a"/"an"
NAMES: dict[str, tuple[tuple[str, bool], ...]] = {
    "atelectasis": (
        ("atelectasis", False),
        ("plate-like atelectasis", False),
        ("subsegmental atelectasis", False),
    ),
    "cardiomegaly": (("cardiomegaly", False), ("cardiac enlargement", False)),
    "pleural effusion": (("pleural effusion", True), ("effusion", True)),
    "infiltration": (("infiltrate", True), ("infiltration", False), ("streaky infiltrate", True)),
    "mass": (("mass", True), ("pulmonary mass", True), ("mass lesion", True)),
    "nodule": (("nodule", True), ("pulmonary nodule", True), ("nodular opacity", True)),
    "pneumonia": (("pneumonia", False), ("patchy pneumonia", False), ("focus of pneumonia", True)),
    "pneumothorax": (("pneumothorax", True),),
    "consolidation": (
        ("consolidation", False),
        ("airspace consolidation", False),
        ("lobar consolidation", False),
    ),
    "edema": (("pulmonary edema", False), ("interstitial edema", False), ("edema", False)),
    "emphysema": (("emphysema", False), ("emphysematous change", False)),
    "fibrosis": (("fibrosis", False), ("interstitial fibrosis", False), ("fibrotic change", False)),
    "pleural thickening": (("pleural thickening", False), ("smooth pleural thickening", False)),
    "hernia": (("hiatal hernia", True), ("hiatus hernia", True), ("hernia", True)),
}
SEVERITY_WORDS: dict[str, dict[int, tuple[str, ...]]] = {
    "size": {1: ("small",), 2: ("moderate", "moderate-sized"), 3: ("large",)},
    "degree": {1: ("mild", "minimal"), 2: ("moderate",), 3: ("severe", "marked", "extensive")},
    "nodule": {1: ("small", "tiny"), 2: ("medium-sized", "subcentimeter"), 3: ("large",)},
    "adverb": {1: ("mildly", "slightly"), 2: ("moderately",), 3: ("markedly", "severely")},
}
SEVERITY_SCALE: dict[str, str] = {
    "pleural effusion": "size",
    "pneumothorax": "size",
    "mass": "size",
    "hernia": "size",
    "nodule": "nodule",
}
ZONE_LABELS = ("nodule", "mass", "pneumonia", "consolidation", "infiltration", "atelectasis")
LOCATIONS: dict[str, tuple[str, ...]] = {
    "zone": (
        "in the {side} {zone} lung zone",
        "in the {side} {zone} zone",
        "within the {side} {zone} lung",
        "projecting over the {side} {zone} lung zone",
    ),
    "side": ("on the {side}", "in the {side} hemithorax", "in the {side} lung"),
    "bilateral": ("bilaterally", "in both lungs"),
    "pleural effusion": ("on the {side}", "at the {side} costophrenic angle", "in the {side} pleural space"),
    "pleural effusion/bilateral": ("bilaterally", "at both costophrenic angles", "at both lung bases"),
    "pneumothorax": ("on the {side}", "in the {side} hemithorax", "at the {side} apex and lateral chest"),
    "pleural thickening": ("along the {side} lateral chest wall", "along the {side} lateral pleural surface"),
    "edema": ("in a perihilar distribution", "in both perihilar regions", "bilaterally"),
    "fibrosis": (
        "in both {zone} lung zones",
        "with {zone} zone predominance",
        "in the {zone} zones bilaterally",
    ),
    "emphysema": ("in both lungs", "bilaterally", ""),
    "hernia": ("in the retrocardiac region", "behind the heart"),
    "cardiomegaly": ("",),
    "region": ("in the {region}",),
}
POSITIVE_TEMPLATES: tuple[str, ...] = (
    "There is {np} {loc}.",
    "{np} is present {loc}.",
    "{np} is seen {loc}.",
    "{loc}, there is {np}.",
    "{bare} {loc}.",
)
SPECIAL_TEMPLATES: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        "The heart is {adv} enlarged, consistent with cardiomegaly.",
        "{adv} enlarged cardiac silhouette.",
        "There is {sev} cardiomegaly.",
        "{sev} cardiac enlargement is noted.",
    ),
    "pleural effusion": (
        "{sev} pleural effusion {loc} with a fluid meniscus.",
        "There is a {sev} amount of pleural fluid {loc}.",
    ),
    "pneumothorax": ("There is a {sev} pneumothorax {loc} with a visible pleural line.",),
    "emphysema": (
        "The lungs are hyperinflated with flattened hemidiaphragms, consistent with {sev} emphysema.",
        "Hyperinflated lungs with {sev} emphysematous change.",
    ),
    "hernia": (
        "Retrocardiac opacity with an air-fluid level, consistent with a {sev} hiatal hernia.",
        "There is a {sev} hiatal hernia {loc} containing an air-fluid level.",
    ),
    "edema": ("{sev} perihilar haziness consistent with pulmonary edema.",),
    "fibrosis": ("{sev} reticular opacities {loc}, consistent with fibrosis.",),
    "pleural thickening": ("Thickened pleura {loc}, in keeping with {sev} pleural thickening.",),
    "pneumonia": ("Patchy mottled opacity {loc}, concerning for pneumonia.",),
    "atelectasis": ("Linear opacity {loc} with volume loss, likely atelectasis.",),
}
CHANGE_CLAUSES: dict[str, tuple[str, ...]] = {
    "worsened": (
        "increased compared with the prior study",
        "which has increased since the prior examination",
    ),
    "improved": (
        "decreased compared with the prior study",
        "which has decreased since the prior examination",
    ),
    "stable": ("unchanged from the prior study", "which is unchanged compared with the prior"),
    "new": ("new since the prior study", "which is new compared with the prior examination"),
}
CHANGE_WORDS: dict[str, tuple[str, ...]] = {
    "worsened": ("Increased",),
    "improved": ("Decreased",),
    "stable": ("Unchanged", "Stable, unchanged"),
    "new": ("New",),
}
RESOLVED_SENTENCES: tuple[str, ...] = (
    "The previously seen {name} has resolved.",
    "The {name} seen on the prior study has resolved.",
    "Previously noted {name} has resolved.",
)
RESOLVED_IMPRESSIONS: tuple[str, ...] = ("Resolved {name}.", "Previously seen {name} has resolved.")
COMPARISON_INTRO: tuple[str, ...] = (
    "Comparison is made with the prior study.",
    "Compared with the prior radiograph.",
    "Prior chest radiograph available for comparison.",
)
NEGATIONS: dict[str, tuple[str, ...]] = {
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax.", "No evidence of pneumothorax."),
    "pleural effusion": (
        "No pleural effusion.",
        "There is no pleural effusion.",
        "No pleural effusions are seen.",
    ),
    "consolidation": ("No focal consolidation.", "There is no focal airspace consolidation."),
    "edema": ("No pulmonary edema.", "There is no evidence of pulmonary edema."),
    "nodule": ("No suspicious pulmonary nodule.",),
    "mass": ("No pulmonary mass is identified.",),
    "pneumonia": ("No radiographic evidence of pneumonia.",),
    "hernia": ("No hiatal hernia.",),
}
COMBINED_NEGATIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("pleural effusion", "pneumothorax"): (
        "No pleural effusion or pneumothorax.",
        "There is no effusion or pneumothorax.",
    ),
    ("nodule", "mass"): ("No suspicious pulmonary nodules or masses.",),
}
HEART_NORMAL: tuple[str, ...] = (
    "The heart size is normal.",
    "Heart size is within normal limits.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Normal heart size.",
    "The cardiac silhouette is normal in size.",
)
LUNGS_CLEAR: tuple[str, ...] = (
    "The lungs are clear.",
    "The lungs are clear without focal consolidation.",
    "Clear lungs.",
    "The lungs are well expanded and clear.",
)
BONES_NORMAL: tuple[str, ...] = (
    "No acute osseous abnormality.",
    "The osseous structures are intact.",
    "The visualized bones are unremarkable.",
)
IMPRESSION_NORMAL: tuple[str, ...] = (
    "No acute cardiopulmonary abnormality.",
    "No acute cardiopulmonary process.",
    "Normal chest radiograph.",
    "No radiographic evidence of acute cardiopulmonary disease.",
)
_NON_LUNG = {"cardiomegaly", "hernia"}


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _clean(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,])", r"\1", text).replace(",.", ".").lstrip(", ")
    text = re.sub(r"\b([Aa]) ([aeiou])", r"\1n \2", text)
    return text[:1].upper() + text[1:]


def _severity(rng: np.random.Generator, f: dict[str, Any], scale: str | None = None) -> str:
    sev = f.get("severity")
    if not isinstance(sev, (int, np.integer)) or not 1 <= int(sev) <= 3:
        return ""
    scale = scale or SEVERITY_SCALE.get(f.get("label", ""), "degree")
    return _pick(rng, SEVERITY_WORDS[scale][int(sev)])


def _location(rng: np.random.Generator, f: dict[str, Any]) -> str:
    label, side, zone, region = f.get("label"), f.get("side"), f.get("zone"), f.get("region")
    key = None
    if label in ZONE_LABELS and side in ("left", "right") and zone:
        key = "zone"
    elif label == "pleural effusion" and side == "bilateral":
        key = "pleural effusion/bilateral"
    elif label in LOCATIONS and (
        side in ("left", "right") or label in ("edema", "emphysema", "hernia", "cardiomegaly")
    ):
        key = label
    elif label == "fibrosis" and zone:
        key = "fibrosis"
    elif side in ("left", "right"):
        key = "side"
    elif side == "bilateral":
        key = "bilateral"
    elif region:
        key = "region"
    if key is None:
        return ""
    return _pick(rng, LOCATIONS[key]).format(side=side, zone=zone, region=region)


def _name(rng: np.random.Generator, label: str) -> tuple[str, bool]:
    options = NAMES.get(label, ((label, True),))
    return options[int(rng.integers(len(options)))]


def _positive(rng: np.random.Generator, f: dict[str, Any], clause: str = "") -> str:
    label = f.get("label", "")
    loc, sev = _location(rng, f), _severity(rng, f)
    special = SPECIAL_TEMPLATES.get(label, ())
    if special and rng.random() < 0.4:
        template = _pick(rng, special)
        if "{loc}" in template and not loc:
            template = template.replace("{loc}", "")
        adv = _severity(rng, f, "adverb")
        text = template.format(sev=sev, adv=adv, loc=loc)
    else:
        name, countable = _name(rng, label)
        bare = f"{sev} {name}".strip()
        np_ = f"a {bare}" if countable else bare
        templates = [t for t in POSITIVE_TEMPLATES if loc or not t.startswith("{loc}")]
        text = _pick(rng, templates).format(np=np_, bare=bare, loc=loc)
    if clause:
        text = text.rstrip(". ") + ", " + clause + "."
    return _clean(text)


def _impression_item(rng: np.random.Generator, f: dict[str, Any], change: str | None) -> str:
    name, _ = _name(rng, f.get("label", ""))
    loc = _location(rng, f) if rng.random() < 0.6 else ""
    bare = f"{_severity(rng, f)} {name} {loc}"
    if change in CHANGE_WORDS:
        return _clean(f"{_pick(rng, CHANGE_WORDS[change])} {bare}.")
    return _clean(bare + ".")


def _negations(rng: np.random.Generator, absent: set[str]) -> list[str]:
    options: list[tuple[set[str], tuple[str, ...]]] = []
    for pair, texts in COMBINED_NEGATIONS.items():
        if set(pair) <= absent:
            options.append((set(pair), texts))
    options += [({lab}, texts) for lab, texts in NEGATIONS.items() if lab in absent]
    order = rng.permutation(len(options))
    k = int(rng.integers(1, 3))
    out, covered = [], set()
    for i in order:
        labs, texts = options[i]
        if labs & covered:
            continue
        out.append(_pick(rng, texts))
        covered |= labs
        if len(out) == k:
            break
    return out


def write_report(
    findings: list[dict[str, Any]],
    rng: np.random.Generator,
    changes: list[dict[str, Any]] | None = None,
) -> dict[str, str]:
    """Write ``{"findings", "impression"}`` text for the given findings (deterministic in ``rng``).

    ``changes`` (``[{"label", "change"}]`` with worsened/improved/stable/new/resolved) adds
    comparison statements against a prior study.
    """
    findings = [f for f in findings if f.get("label")]
    present = {f["label"] for f in findings}
    change_of = {c["label"]: c.get("change") for c in (changes or []) if c.get("label")}
    resolved = [lab for lab, ch in change_of.items() if ch == "resolved" and lab not in present]
    positives = []
    for f in findings:
        ch = change_of.get(f["label"])
        clause = _pick(rng, CHANGE_CLAUSES[ch]) if ch in CHANGE_CLAUSES else ""
        positives.append(_positive(rng, f, clause))
    positives = [positives[i] for i in rng.permutation(len(positives))] if rng.random() < 0.5 else positives
    resolved_text = [_pick(rng, RESOLVED_SENTENCES).format(name=_name(rng, lab)[0]) for lab in resolved]
    heart = (
        [] if "cardiomegaly" in present or (findings and rng.random() < 0.25) else [_pick(rng, HEART_NORMAL)]
    )
    lungs = [_pick(rng, LUNGS_CLEAR)] if present <= _NON_LUNG and not resolved else []
    negs = _negations(rng, set(NEGATIONS) - present - set(resolved))
    if not findings and rng.random() < 0.3:
        negs = negs[:1]
    bones = [_pick(rng, BONES_NORMAL)] if rng.random() < 0.3 else []
    if rng.random() < 0.5:
        body = heart + positives + resolved_text + lungs + negs + bones
    else:
        body = positives + resolved_text + heart + lungs + negs + bones
    if changes is not None and rng.random() < 0.5:
        body = [_pick(rng, COMPARISON_INTRO)] + body
    items = [_impression_item(rng, f, change_of.get(f["label"])) for f in findings]
    items += [_clean(_pick(rng, RESOLVED_IMPRESSIONS).format(name=_name(rng, lab)[0])) for lab in resolved]
    if not items:
        impression = _pick(rng, IMPRESSION_NORMAL)
    elif len(items) > 1 and rng.random() < 0.5:
        impression = " ".join(f"{i + 1}. {t}" for i, t in enumerate(items))
    else:
        impression = " ".join(items)
    return {"findings": " ".join(body), "impression": impression}
