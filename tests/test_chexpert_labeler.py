"""The rule-based CheXpert-14 labeler on hand-written sentences and reports, and on phantom reports."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxbench.metrics import chexpert_labeler
from cxbench.metrics.chexpert_labeler import COMMON_5, OBSERVATIONS, label_report, label_reports

POS, NEG, UNC = 1.0, 0.0, -1.0

# (text, {observation: expected label}); None = blank (not mentioned). Observations not listed
# are not checked, except where a case lists them explicitly.
CASES: list[tuple[str, dict[str, float | None]]] = [
    # --- plain mentions
    ("There is a small left pleural effusion.", {"Pleural Effusion": POS, "No Finding": None}),
    ("Mild cardiomegaly.", {"Cardiomegaly": POS}),
    ("Right upper lobe consolidation.", {"Consolidation": POS}),
    ("Large right pneumothorax.", {"Pneumothorax": POS}),
    ("Interstitial pulmonary edema.", {"Edema": POS}),
    ("Bibasilar atelectasis.", {"Atelectasis": POS}),
    ("Right lower lobe pneumonia.", {"Pneumonia": POS}),
    ("Patchy opacity at the left base.", {"Lung Opacity": POS}),
    ("Widened mediastinum.", {"Enlarged Cardiomediastinum": POS}),
    ("Mild pulmonary vascular congestion.", {"Edema": POS}),
    ("Findings are consistent with CHF.", {"Edema": POS}),
    # --- vocabulary mapped as CheXpert does
    ("A 2 cm nodule in the right upper lobe.", {"Lung Lesion": POS, "Lung Opacity": None}),
    ("Left hilar mass.", {"Lung Lesion": POS}),
    ("Streaky infiltrate in the right lower zone.", {"Lung Opacity": POS}),
    ("Interstitial fibrosis in both lower zones.", {"Lung Opacity": POS}),
    ("Left apical pleural thickening.", {"Pleural Other": POS}),
    ("Calcified pleural plaques.", {"Pleural Other": POS}),
    ("Hyperinflated lungs consistent with emphysema.", {o: None for o in OBSERVATIONS[1:]}),
    ("Small hiatal hernia.", {o: None for o in OBSERVATIONS[1:]}),
    ("Small pericardial effusion.", {"Pleural Effusion": None}),
    ("Known thyroid mass displacing the trachea.", {"Lung Lesion": None}),
    ("Calcified granuloma in the left lower lobe.", {"Lung Lesion": None, "No Finding": POS}),
    # --- negation before the mention
    ("No evidence of effusion.", {"Pleural Effusion": NEG, "No Finding": POS}),
    ("Lungs are clear without pneumothorax.", {"Pneumothorax": NEG}),
    ("The lungs are free of consolidation.", {"Consolidation": NEG}),
    ("No pleural effusion or pneumothorax.", {"Pleural Effusion": NEG, "Pneumothorax": NEG}),
    (
        "No focal consolidation, suspicious pulmonary opacity, large pleural effusion, or pneumothorax.",
        {"Consolidation": NEG, "Lung Opacity": NEG, "Pleural Effusion": NEG, "Pneumothorax": NEG},
    ),
    ("Negative for pneumonia.", {"Pneumonia": NEG}),
    ("Interval resolution of the right pleural effusion.", {"Pleural Effusion": NEG}),
    # --- negation after the mention
    ("Effusion is not seen.", {"Pleural Effusion": NEG}),
    ("A pneumothorax is no longer visualized.", {"Pneumothorax": NEG}),
    ("The previously seen right pleural effusion has resolved.", {"Pleural Effusion": NEG}),
    ("Pulmonary edema has cleared.", {"Edema": NEG}),
    # --- uncertainty
    ("Left basilar opacity may represent atelectasis.", {"Lung Opacity": POS, "Atelectasis": UNC}),
    ("Cannot exclude pneumonia.", {"Pneumonia": UNC}),
    ("Possible small right pleural effusion.", {"Pleural Effusion": UNC}),
    ("Findings are suggestive of pulmonary edema.", {"Edema": UNC}),
    ("Atelectasis versus consolidation at the left base.", {"Atelectasis": UNC, "Consolidation": UNC}),
    ("Left lower lobe opacity, likely atelectasis.", {"Atelectasis": UNC}),
    ("Opacity concerning for pneumonia.", {"Pneumonia": UNC, "Lung Opacity": POS}),
    ("Questionable small left pneumothorax.", {"Pneumothorax": UNC}),
    ("Small left effusion is possible.", {"Pleural Effusion": UNC}),
    ("Atelectasis or pneumonia in the right lower lobe.", {"Atelectasis": UNC, "Pneumonia": UNC}),
    (
        "Bibasilar opacities, atelectasis versus pneumonia.",
        {"Lung Opacity": POS, "Atelectasis": UNC, "Pneumonia": UNC},
    ),
    ("Subtle opacity, ? pneumonia.", {"Pneumonia": UNC}),
    # --- double negatives
    ("Pneumonia cannot be excluded.", {"Pneumonia": UNC}),
    ("Underlying consolidation is not ruled out.", {"Consolidation": UNC}),
    ("A small pneumothorax cannot be entirely excluded.", {"Pneumothorax": UNC}),
    # --- scope ends at clause boundaries
    ("No effusion, but there is atelectasis.", {"Pleural Effusion": NEG, "Atelectasis": POS}),
    (
        "No pneumothorax; however, a small effusion is present.",
        {"Pneumothorax": NEG, "Pleural Effusion": POS},
    ),
    (
        "No definite pneumonia, although atelectasis cannot be excluded.",
        {"Pneumonia": NEG, "Atelectasis": UNC},
    ),
    ("No effusion, possible atelectasis.", {"Pleural Effusion": NEG, "Atelectasis": UNC}),
    ("Pneumothorax has resolved, new small left effusion.", {"Pneumothorax": NEG, "Pleural Effusion": POS}),
    ("No pneumothorax. Moderate cardiomegaly.", {"Pneumothorax": NEG, "Cardiomegaly": POS}),
    ("There is atelectasis and the effusion has resolved.", {"Atelectasis": POS, "Pleural Effusion": NEG}),
    # --- pseudo-negations
    ("No change in the small left pleural effusion.", {"Pleural Effusion": POS}),
    ("Moderate cardiomegaly, not significantly changed.", {"Cardiomegaly": POS}),
    ("No focal consolidation to suggest pneumonia.", {"Consolidation": NEG, "Pneumonia": NEG}),
    # --- structures with attributes
    ("Normal heart size.", {"Cardiomegaly": NEG, "No Finding": POS}),
    ("The heart size is normal.", {"Cardiomegaly": NEG}),
    ("The heart is not enlarged.", {"Cardiomegaly": NEG}),
    ("The cardiac silhouette is mildly enlarged.", {"Cardiomegaly": POS}),
    ("Heart size is at the upper limits of normal.", {"Cardiomegaly": UNC}),
    (
        "The cardiomediastinal silhouette is within normal limits.",
        {"Enlarged Cardiomediastinum": NEG, "Cardiomegaly": None},
    ),
    (
        "Heart size and mediastinal contours are normal.",
        {"Cardiomegaly": NEG, "Enlarged Cardiomediastinum": NEG},
    ),
    (
        "The heart is normal in size but the mediastinum is widened.",
        {"Cardiomegaly": NEG, "Enlarged Cardiomediastinum": POS},
    ),
    ("The lungs are clear.", {"Lung Opacity": NEG, "No Finding": POS}),
    ("The lungs are well expanded and clear.", {"Lung Opacity": NEG}),
    ("Costophrenic angles are sharp.", {"Pleural Effusion": NEG}),
    ("Pulmonary vascularity is normal.", {"Edema": NEG}),
    ("Lung volumes are normal.", {"Lung Opacity": None}),
    ("A large hiatal hernia is seen behind the heart.", {"Cardiomegaly": None}),
    # --- opacity explained by something outside the lung
    (
        "Retrocardiac opacity with an air-fluid level, consistent with a hiatal hernia.",
        {"Lung Opacity": None, "No Finding": POS},
    ),
    ("Nodular density in the left base likely represents a nipple shadow.", {"Lung Lesion": None}),
    # --- support devices and fractures
    ("Endotracheal tube terminates 4 cm above the carina.", {"Support Devices": POS, "No Finding": POS}),
    ("Left chest wall pacemaker with leads in the right heart.", {"Support Devices": POS}),
    ("Right PICC line tip in the SVC.", {"Support Devices": POS}),
    ("The nasogastric tube has been removed.", {"Support Devices": NEG}),
    ("No lines or tubes.", {"Support Devices": NEG}),
    ("Lines and tubes are unchanged in position.", {"Support Devices": POS}),
    ("Healing right rib fracture.", {"Fracture": POS, "No Finding": None}),
    ("No acute displaced rib fracture.", {"Fracture": NEG}),
    # --- aggregation over several mentions: positive > uncertain > negative
    ("No effusion on the right. Small left effusion.", {"Pleural Effusion": POS}),
    ("No definite effusion. Possible small left effusion.", {"Pleural Effusion": UNC}),
    ("Possible atelectasis. Bibasilar atelectasis.", {"Atelectasis": POS}),
    # --- No Finding
    ("No acute cardiopulmonary process.", {"No Finding": POS}),
    ("Clear lungs. Normal heart size. No pneumothorax.", {"No Finding": POS, "Pneumothorax": NEG}),
    ("Possible small effusion.", {"No Finding": None}),
    ("Right IJ central line. Lungs are clear.", {"No Finding": POS, "Support Devices": POS}),
    ("", {o: None for o in OBSERVATIONS}),
    ("FINDINGS:\nIMPRESSION:", {o: None for o in OBSERVATIONS}),
    # --- sections: history-like sections are not labeled
    (
        "INDICATION: Evaluate for pneumonia.\nFINDINGS: The lungs are clear. No effusion.",
        {"Pneumonia": None, "Lung Opacity": NEG, "Pleural Effusion": NEG, "No Finding": POS},
    ),
    (
        "HISTORY: Pneumothorax. COMPARISON: Chest radiograph with effusion. "
        "FINDINGS: Normal heart size. IMPRESSION: Mild atelectasis.",
        {"Pneumothorax": None, "Pleural Effusion": None, "Cardiomegaly": NEG, "Atelectasis": POS},
    ),
    (
        "CLINICAL HISTORY: cardiomegaly\n\nTECHNIQUE: PA and lateral\n\nIMPRESSION:\nNo acute findings.",
        {"Cardiomegaly": None, "No Finding": POS},
    ),
    ("Indication: cough and fever. The lungs are clear.", {"Lung Opacity": NEG, "Pneumonia": None}),
    # --- reports without headers are labeled whole
    (
        "Heart size is normal. Small bilateral pleural effusions with bibasilar atelectasis. "
        "No pneumothorax. Right PICC line ends in the SVC.",
        {
            "Cardiomegaly": NEG,
            "Pleural Effusion": POS,
            "Atelectasis": POS,
            "Pneumothorax": NEG,
            "Support Devices": POS,
            "No Finding": None,
        },
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:60] or "<empty>" for c in CASES])
def test_labels(text: str, expected: dict[str, float | None]) -> None:
    labels = label_report(text)
    assert set(labels) == set(OBSERVATIONS)
    got = {name: labels[name] for name in expected}
    assert got == expected


def test_enough_hand_written_cases() -> None:
    assert len(CASES) >= 60


def test_observation_order_and_common_5() -> None:
    assert OBSERVATIONS[0] == "No Finding" and OBSERVATIONS[-1] == "Support Devices"
    assert len(OBSERVATIONS) == 14
    assert set(COMMON_5) <= set(OBSERVATIONS) and len(COMMON_5) == 5


def test_label_reports_array() -> None:
    array = label_reports(["Mild cardiomegaly.", "No pneumothorax.", None])
    assert array.shape == (3, 14)
    cardio, ptx, nf = (OBSERVATIONS.index(n) for n in ("Cardiomegaly", "Pneumothorax", "No Finding"))
    assert array[0, cardio] == 1.0 and math.isnan(array[0, ptx])
    assert array[1, ptx] == 0.0 and array[1, nf] == 1.0
    assert np.isnan(array[2]).all()
    assert label_reports([]).shape == (0, 14)


def test_case_and_line_breaks_do_not_matter() -> None:
    a = label_report("NO PLEURAL EFFUSION.\nMILD   CARDIOMEGALY.")
    b = label_report("no pleural effusion. mild cardiomegaly.")
    assert a == b
    # a line break inside a sentence (wrapped report text) does not end it
    assert label_report("No pleural\neffusion or\npneumothorax.")["Pneumothorax"] == NEG


def test_phrase_file_is_package_data() -> None:
    assert chexpert_labeler.PHRASES_FILE.is_file()
    assert chexpert_labeler.PHRASES_FILE.parent == chexpert_labeler.Path(chexpert_labeler.__file__).parent


# --- phantom reports: the vocabulary of cxbench.data.phantom_reports is labeled correctly

PHANTOM_TO_CHEXPERT = {
    "atelectasis": "Atelectasis",
    "cardiomegaly": "Cardiomegaly",
    "pleural effusion": "Pleural Effusion",
    "infiltration": "Lung Opacity",
    "mass": "Lung Lesion",
    "nodule": "Lung Lesion",
    "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "edema": "Edema",
    "emphysema": None,
    "fibrosis": "Lung Opacity",
    "pleural thickening": "Pleural Other",
    "hernia": None,
}
# Lung Opacity is the CheXpert parent of these: a phantom sentence such as "linear opacity with
# volume loss, likely atelectasis" is rightly Lung Opacity positive too
OPACITY_CHILDREN = {"Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis"}


def _phantom_cases(n: int = 24, seed: int = 7) -> list[tuple[list[str], dict[str, str]]]:
    from cxbench.data.phantom_reports import write_report
    from cxbench.labels import DISEASES_14

    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        labels = [str(x) for x in rng.choice(DISEASES_14, size=i % 4, replace=False)]
        findings = [
            {
                "label": lab,
                "severity": int(rng.integers(1, 4)),
                "side": str(rng.choice(["left", "right", "bilateral"])),
                "zone": str(rng.choice(["upper", "middle", "lower"])),
            }
            for lab in labels
        ]
        changes = [{"label": lab, "change": "stable"} for lab in labels] if i % 3 == 0 else None
        cases.append((labels, write_report(findings, rng, changes)))
    return cases


@pytest.mark.parametrize("index", range(24))
def test_phantom_reports(index: int) -> None:
    labels, report = _phantom_cases()[index]
    text = f"FINDINGS: {report['findings']}\nIMPRESSION: {report['impression']}"
    got = label_report(text)
    expected = {PHANTOM_TO_CHEXPERT[lab] for lab in labels} - {None}
    positive = {name for name, value in got.items() if value == POS and name != "No Finding"}
    assert expected <= positive, text
    extra = positive - expected
    if expected & OPACITY_CHILDREN:
        extra -= {"Lung Opacity"}
    assert not extra, text
    assert (got["No Finding"] == POS) == (not expected), text


def test_phantom_negated_findings_are_not_positive() -> None:
    from cxbench.data.phantom_reports import COMBINED_NEGATIONS, NEGATIONS

    sentences = [s for texts in NEGATIONS.values() for s in texts]
    sentences += [s for texts in COMBINED_NEGATIONS.values() for s in texts]
    for sentence in sentences:
        labels = label_report(sentence)
        assert all(v != POS and v != UNC for k, v in labels.items() if k != "No Finding"), sentence
        assert labels["No Finding"] == POS, sentence


def test_phantom_normal_sentences_are_negative_or_blank() -> None:
    from cxbench.data.phantom_reports import BONES_NORMAL, HEART_NORMAL, IMPRESSION_NORMAL, LUNGS_CLEAR

    for sentence in HEART_NORMAL + LUNGS_CLEAR + BONES_NORMAL + IMPRESSION_NORMAL:
        labels = label_report(sentence)
        assert labels["No Finding"] == POS, sentence
        assert all(v in (None, NEG) for k, v in labels.items() if k != "No Finding"), sentence
    for sentence in HEART_NORMAL[:2] + HEART_NORMAL[3:]:
        assert label_report(sentence)["Cardiomegaly"] == NEG, sentence
    for sentence in LUNGS_CLEAR:
        assert label_report(sentence)["Lung Opacity"] == NEG, sentence
