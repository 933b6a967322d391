"""Reasoning metrics (cxbench.metrics.reasoning) on hand-written CX-Mind and DeepMedix-R1 style outputs.

Every expected number is computed by hand in the comments next to it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from cxbench.metrics.base import MetricContext, Output
from cxbench.metrics.reasoning import (
    REASONING_METRICS,
    VERIFIABLE_OBSERVATIONS,
    analyse,
    clear_analysis_cache,
    ratio_reduce,
)
from cxbench.schema import Sample

CTX = MetricContext()


def score(raw: str, sample: Sample, parsed: object = None) -> dict[str, list[float]]:
    """Per-sample stats of every reasoning metric, called as the scorer calls them."""
    return {
        name: list(metric.stats(Output(raw, parsed, sample), sample.target, CTX))
        for name, metric in REASONING_METRICS.items()
    }


def finding(label: str, box: list[float], severity: str = "moderate", region: str = "") -> dict:
    return {"label": label, "severity": severity, "box": box, "region": region}


NODULE = finding("nodule", [0.62, 0.18, 0.70, 0.26], "mild", "right upper zone")
EFFUSION = finding("pleural effusion", [0.55, 0.60, 0.90, 0.85], "moderate", "right lower zone")
ATELECTASIS = finding("atelectasis", [0.10, 0.60, 0.40, 0.85], "mild", "left lower zone")
CARDIOMEGALY = finding("cardiomegaly", [0.30, 0.40, 0.75, 0.80], "moderate", "heart")


def mc_sample(findings: list[dict], choices: list[str], target: str) -> Sample:
    return Sample(
        id="case:mc",
        images=["case.png"],
        question="Which of the following is present in this chest X-ray?",
        target=target,
        choices=choices,
        query={"kind": "multiple_choice"},
        metadata={"findings": findings, "image_size": [1000, 1000]},
    )


def open_sample(findings: list[dict] | None, target: object = "atelectasis", **extra: object) -> Sample:
    metadata: dict = {"image_size": [1000, 1000]}
    if findings is not None:
        metadata["findings"] = findings
    return Sample(
        id="case:dx",
        images=["case.png"],
        question="What are the abnormalities in this chest X-ray?",
        target=target,
        metadata=metadata,
        **extra,
    )


# ----------------------------------------------------------------------------------------
# Realistic outputs
# ----------------------------------------------------------------------------------------

#: CX-Mind multiple choice: one pair per option, then a summary pair
CX_MIND_MC = """<think>Option A: pneumothorax. A pneumothorax would show a visceral pleural line without \
lung markings beyond it; no pleural line is seen and the lung markings reach the chest wall.</think>
<answer>A) ❌</answer>
<think>Option B: pleural effusion. The right costophrenic angle is blunted with a meniscus sign, \
consistent with a moderate right pleural effusion.</think>
<answer>B) ✅</answer>
<think>Option C: cardiomegaly. The cardiothoracic ratio is below 0.5; the heart size is normal.</think>
<answer>C) ❌</answer>
<think>Option D: nodule. No discrete nodule is identified in either lung.</think>
<answer>D) ❌</answer>
<think>Summary: only option B is supported by the imaging findings.</think>
<answer>B) ✅</answer>"""
MC_CHOICES = ["pneumothorax", "pleural effusion", "cardiomegaly", "nodule"]

#: CX-Mind open diagnosis: differential list, one pair per candidate, final list
CX_MIND_OPEN = """<think>The image shows increased density at the left base and a widened cardiac \
silhouette. Possible diagnoses include atelectasis, cardiomegaly, pleural effusion and pneumonia.</think>
<answer>Atelectasis, Cardiomegaly, Pleural Effusion, Pneumonia</answer>
<think>Atelectasis: there is a linear opacity at the left lung base with volume loss and mild elevation \
of the left hemidiaphragm.</think>
<answer>Atelectasis ✅</answer>
<think>Cardiomegaly: the cardiothoracic ratio measures about 0.6, indicating an enlarged cardiac \
silhouette.</think>
<answer>Cardiomegaly ✅</answer>
<think>Pleural effusion: an effusion would blunt the costophrenic angles, but both angles are \
sharp.</think>
<answer>Pleural Effusion ❌</answer>
<think>Pneumonia: there is no focal consolidation or air bronchogram to suggest an infection.</think>
<answer>Pneumonia ❌</answer>
<think>Combining the findings, the diagnoses are atelectasis and cardiomegaly.</think>
<answer>Atelectasis, Cardiomegaly</answer>"""

#: DeepMedix-R1: one grounded think (pixel boxes after the findings), then the answer
DEEPMEDIX = """<think>Findings: The frontal chest radiograph is adequately inspired. There is a linear band \
of opacity at the left lung base [100, 600, 400, 850] with mild volume loss, consistent with subsegmental \
atelectasis. The cardiac silhouette is enlarged [300, 400, 750, 700], consistent with cardiomegaly. In the \
right upper lobe, a small nodule [620, 180, 700, 260] is noted. There is no pneumothorax. The \
costophrenic angles are sharp.</think>
<answer>Cardiomegaly and left basilar subsegmental atelectasis.</answer>"""


# ----------------------------------------------------------------------------------------
# CX-Mind multiple choice
# ----------------------------------------------------------------------------------------


def test_cx_mind_multiple_choice():
    sample = mc_sample([EFFUSION], MC_CHOICES, "B")
    stats = score(CX_MIND_MC, sample, parsed="B")
    assert stats["format_valid"] == [1.0]
    assert stats["reasoning_steps"] == [5.0]  # four option pairs + the summary pair
    # verdicts of the 4 intermediate answers: A ❌ right, B ✅ right, C ❌ right, D ❌ right; the final
    # "B) ✅" is the final answer, not an intermediate verdict
    assert stats["verdict_accuracy"] == [4.0, 4.0]
    assert stats["self_consistency"] == [1.0, 1.0]  # final B, B marked ✅, A/C/D marked ❌
    # asserted: Pleural Effusion (step B); pneumothorax / cardiomegaly / nodule are negated -> 0 wrong
    assert stats["hallucination_rate"] == [0.0, 1.0]
    assert stats["omission_rate"] == [0.0, 1.0]  # gold {Pleural Effusion} is asserted
    assert stats["grounding_iou"] == [0.0, 0.0]  # no boxes
    values = analyse(CX_MIND_MC, sample).observation_values
    assert values["Pleural Effusion"] == 1.0
    assert values["Cardiomegaly"] == 0.0 and values["Lung Lesion"] == 0.0  # "normal", "no discrete nodule"
    # "A pneumothorax would show ..." under the rejected option A: discussed, not asserted
    assert values["Pneumothorax"] == -1.0


def test_think_token_ratio_of_multiple_choice_output():
    sample = mc_sample([EFFUSION], MC_CHOICES, "B")
    answers = ["A) ❌", "B) ✅", "C) ❌", "D) ❌", "B) ✅"]
    answer_tokens = sum(len(a.split()) for a in answers)  # 10
    think_tokens = len(analyse(CX_MIND_MC, sample).reasoning.think_text.split())
    (ratio,) = score(CX_MIND_MC, sample)["think_token_ratio"]
    assert answer_tokens == 10
    assert ratio == pytest.approx(think_tokens / (think_tokens + 10))


def test_multiple_choice_rejecting_the_chosen_option_is_inconsistent():
    sample = mc_sample([EFFUSION], MC_CHOICES, "B")
    raw = CX_MIND_MC.replace(
        "<answer>B) ✅</answer>\n<think>Option C", "<answer>B) ❌</answer>\n<think>Option C"
    )
    stats = score(raw, sample)
    assert stats["verdict_accuracy"] == [3.0, 4.0]  # B ❌ is wrong
    assert stats["self_consistency"] == [0.0, 1.0]  # final answer B although B was marked ❌
    # and choosing C after marking it ❌ is inconsistent too
    stats = score(CX_MIND_MC.rsplit("<answer>", 1)[0] + "<answer>C</answer>", sample)
    assert stats["self_consistency"] == [0.0, 1.0]


def test_planted_false_finding_in_a_well_formed_output_is_a_hallucination():
    choices = ["pneumothorax", "nodule", "cardiomegaly", "pleural effusion"]
    sample = mc_sample([NODULE], choices, "B")
    clean = """<think>Option A: pneumothorax. A pneumothorax would show a visceral pleural line; no such \
line is seen.</think>
<answer>A) ❌</answer>
<think>Option B: nodule. A well-circumscribed round nodule of about 1.5 cm is seen in the right upper \
lobe.</think>
<answer>B) ✅</answer>
<think>Option C: cardiomegaly. The cardiothoracic ratio is under 0.5, so the heart size is normal.</think>
<answer>C) ❌</answer>
<think>Option D: pleural effusion. Both costophrenic angles are sharp.</think>
<answer>D) ❌</answer>
<think>Summary: option B fits the right upper lobe nodule.{planted}</think>
<answer>B) ✅</answer>"""
    honest = clean.format(planted="")
    planted = clean.format(planted=" In addition, there is a right pneumothorax.")
    assert score(honest, sample)["hallucination_rate"] == [0.0, 1.0]  # asserted {Lung Lesion}
    stats = score(planted, sample)
    assert stats["format_valid"] == [1.0]  # the format cannot tell
    assert stats["verdict_accuracy"] == [4.0, 4.0]  # neither can the verdicts
    assert stats["self_consistency"] == [1.0, 1.0]
    # asserted {Lung Lesion, Pneumothorax}; the ground truth has only the nodule
    assert stats["hallucination_rate"] == [1.0, 2.0]
    assert analyse(planted, sample).observation_values["Pneumothorax"] == 1.0


# ----------------------------------------------------------------------------------------
# CX-Mind open diagnosis
# ----------------------------------------------------------------------------------------


def test_cx_mind_open_diagnosis():
    sample = open_sample([ATELECTASIS, CARDIOMEGALY])
    stats = score(CX_MIND_OPEN, sample)
    assert stats["format_valid"] == [1.0]
    assert stats["reasoning_steps"] == [6.0]
    # atelectasis ✅ (present), cardiomegaly ✅ (present), effusion ❌ (absent), pneumonia ❌ (absent)
    assert stats["verdict_accuracy"] == [4.0, 4.0]
    assert stats["self_consistency"] == [1.0, 1.0]  # final list = the two ✅, none of the ❌
    # asserted: Atelectasis, Lung Opacity ("linear opacity"), Cardiomegaly; Lung Opacity is implied by
    # atelectasis in the ground truth -> 0 of 3 hallucinated. The differential list and "possible
    # diagnoses include" do not assert effusion / pneumonia, whose ❌ verdicts make them negative.
    assert stats["hallucination_rate"] == [0.0, 3.0]
    assert stats["omission_rate"] == [0.0, 2.0]
    values = analyse(CX_MIND_OPEN, sample).observation_values
    assert values["Pleural Effusion"] == 0.0 and values["Pneumonia"] == 0.0


def test_cx_mind_open_diagnosis_with_wrong_and_inconsistent_verdicts():
    sample = open_sample([ATELECTASIS, CARDIOMEGALY])
    raw = CX_MIND_OPEN.replace("Pleural Effusion ❌", "Pleural Effusion ✅")
    stats = score(raw, sample)
    assert stats["verdict_accuracy"] == [3.0, 4.0]  # effusion ✅ is wrong
    assert stats["self_consistency"] == [0.0, 1.0]  # effusion ✅ but missing from the final list
    # asserted: Atelectasis, Lung Opacity, Cardiomegaly, Pleural Effusion (by its ✅) -> 1 of 4
    assert stats["hallucination_rate"] == [1.0, 4.0]

    # a final list that includes a candidate marked ❌ is inconsistent as well
    raw = CX_MIND_OPEN.replace(
        "<answer>Atelectasis, Cardiomegaly</answer>", "<answer>Atelectasis, Cardiomegaly, Pneumonia</answer>"
    )
    stats = score(raw, sample)
    assert stats["verdict_accuracy"] == [4.0, 4.0]
    assert stats["self_consistency"] == [0.0, 1.0]
    # the final answer asserts pneumonia: Pneumonia hallucinated (Consolidation/Lung Opacity are not
    # asserted by it) -> asserted {Atelectasis, Lung Opacity, Cardiomegaly, Pneumonia}
    assert stats["hallucination_rate"] == [1.0, 4.0]


def test_missed_finding_is_an_omission():
    sample = open_sample([ATELECTASIS, CARDIOMEGALY, EFFUSION])
    stats = score(CX_MIND_OPEN, sample)
    assert stats["verdict_accuracy"] == [3.0, 4.0]  # effusion ❌ is wrong now
    assert stats["omission_rate"] == [1.0, 3.0]  # Pleural Effusion never asserted (only rejected)


# ----------------------------------------------------------------------------------------
# DeepMedix-R1 grounded reasoning
# ----------------------------------------------------------------------------------------


def test_deepmedix_grounded_reasoning():
    sample = open_sample([ATELECTASIS, CARDIOMEGALY])
    stats = score(DEEPMEDIX, sample)
    assert stats["format_valid"] == [1.0]
    assert stats["reasoning_steps"] == [1.0]
    assert stats["verdict_accuracy"] == [0.0, 0.0]  # no verdicts: contributes nothing
    assert stats["self_consistency"] == [0.0, 0.0]
    # boxes (1000 x 1000 px): atelectasis [.1 .6 .4 .85] = gold -> IoU 1; cardiomegaly [.3 .4 .75 .7]
    # vs gold [.3 .4 .75 .8]: 0.45*0.3 / (0.45*0.4) = 0.75; nodule: not in the ground truth -> 0
    iou_sum, n_boxes = stats["grounding_iou"]
    assert n_boxes == 3 and iou_sum == pytest.approx(1.75)
    assert stats["grounding_acc50"] == [2.0, 3.0]
    # asserted: Lung Opacity, Atelectasis, Cardiomegaly, Lung Lesion (the nodule) -> 1 of 4 hallucinated
    assert stats["hallucination_rate"] == [1.0, 4.0]
    assert stats["omission_rate"] == [0.0, 2.0]
    labels = [label for label, _ in analyse(DEEPMEDIX, sample).grounded_boxes]
    assert labels == ["atelectasis", "cardiomegaly", "nodule"]


def test_deepmedix_with_the_nodule_in_the_ground_truth():
    sample = open_sample([ATELECTASIS, CARDIOMEGALY, NODULE])
    stats = score(DEEPMEDIX, sample)
    assert stats["grounding_iou"] == pytest.approx([2.75, 3.0])
    assert stats["grounding_acc50"] == [3.0, 3.0]
    assert stats["hallucination_rate"] == [0.0, 4.0]
    assert stats["omission_rate"] == [0.0, 3.0]


def test_box_attachment_rules():
    sample = open_sample([ATELECTASIS, EFFUSION])
    raw = (
        "<think>At the left base [100, 600, 400, 850] there is atelectasis. "  # no mention before: next one
        "A band [100, 600, 400, 850] is seen. "  # no mention in the clause: not counted
        "Pleural effusion on the right [550, 600, 900, 850], no pneumothorax [0, 0, 100, 100]; "
        "atelectasis [0, 0, 100, 100]\n"  # the negated pneumothorax takes no box: it goes to effusion
        "Atelectasis (0.1, 0.6, 0.4, 0.85)</think><answer>atelectasis</answer>"  # unit coordinates
    )
    boxes = analyse(raw, sample).grounded_boxes
    assert [label for label, _ in boxes] == [
        "atelectasis",
        "pleural effusion",
        "pleural effusion",
        "atelectasis",
        "atelectasis",
    ]
    # IoUs: 1, 1, 0 (a 0.1 x 0.1 box in the corner vs the effusion), 0, 1
    assert score(raw, sample)["grounding_iou"] == pytest.approx([3.0, 5.0])
    assert score(raw, sample)["grounding_acc50"] == [3.0, 5.0]


# ----------------------------------------------------------------------------------------
# Verdict forms, gold fallbacks, ground-truth mapping
# ----------------------------------------------------------------------------------------


def test_verdict_forms():
    choices = ["pneumothorax", "pleural effusion", "cardiomegaly", "no finding"]
    sample = mc_sample([EFFUSION], choices, "B")
    # marks before the option, option texts without letters, other mark characters
    raw = "<think>x</think><answer>✅ B) pleural effusion\n❌ A) pneumothorax</answer><answer>B</answer>"
    assert [(v.subject, v.positive) for v in analyse(raw, sample).verdicts] == [("B", True), ("A", False)]
    raw = (
        "<think>x</think><answer>Pleural effusion ✔\nPneumothorax ✗ Cardiomegaly ✘</answer><answer>B</answer>"
    )
    assert score(raw, sample)["verdict_accuracy"] == [3.0, 3.0]
    # a bare verdict takes the option its think is about; yes/no answers are verdicts
    raw = (
        "<think>Option C: is the heart enlarged? The ratio is 0.45.</think><answer>No</answer>"
        "<think>Option D: is the study normal?</think><answer>❌</answer>"
        "<think>Option B</think><answer>B) yes</answer><think>So B.</think><answer>B</answer>"
    )
    verdicts = analyse(raw, sample).verdicts
    assert [(v.subject, v.positive, v.intermediate) for v in verdicts] == [
        ("C", False, True),
        ("D", False, True),
        ("B", True, True),
    ]
    assert score(raw, sample)["verdict_accuracy"] == [3.0, 3.0]

    open_ = open_sample([NODULE], target="nodule")
    raw = (
        "<think>Nodule: a round opacity.</think><answer>Nodule: yes</answer>"
        "<think>Pneumothorax?</think><answer>No pneumothorax.</answer>"
        "<think>Normal?</think><answer>Normal ❌</answer>"
        "<think>Effusion?</think><answer>Pleural effusion ✓</answer>"  # wrong
        "<think>Anything else?</think><answer>The answer is no</answer>"  # no subject anywhere: skipped
        "<think>Done.</think><answer>Nodule</answer>"
    )
    assert [(v.subject, v.positive) for v in analyse(raw, open_).intermediate_verdicts] == [
        ("nodule", True),
        ("pneumothorax", False),
        ("no finding", False),
        ("pleural effusion", True),
    ]
    assert score(raw, open_)["verdict_accuracy"] == [3.0, 4.0]
    assert score(raw, open_)["self_consistency"] == [0.0, 1.0]  # effusion ✅ is not in the final answer


def test_only_intermediate_verdicts_are_scored():
    sample = mc_sample([EFFUSION], MC_CHOICES, "B")
    raw = "<think>Looking at each option.</think><answer>A) ❌ B) ✅ C) ❌ D) ❌</answer>"
    stats = score(raw, sample)
    assert [v.intermediate for v in analyse(raw, sample).verdicts] == [False] * 4
    assert stats["verdict_accuracy"] == [0.0, 0.0]
    assert stats["self_consistency"] == [0.0, 0.0]


def test_gold_from_target_and_yes_no_questions():
    # no metadata["findings"]: the label target is the gold; no ground truth for findings metrics
    sample = open_sample(None, target="atelectasis")
    stats = score(CX_MIND_OPEN, sample)
    assert stats["verdict_accuracy"] == [3.0, 4.0]  # cardiomegaly ✅ is wrong against the target alone
    assert stats["hallucination_rate"] == [0.0, 0.0]
    assert stats["omission_rate"] == [0.0, 0.0]
    assert stats["grounding_iou"] == [0.0, 0.0]
    # a target that is not a label (a region) gives no gold: nothing is counted
    assert score(CX_MIND_OPEN, open_sample(None, target="left lower zone"))["verdict_accuracy"] == [0.0, 0.0]

    question = open_sample(None, target="yes", query={"kind": "yes_no", "finding": "nodule"})
    raw = (
        "<think>Is there a nodule? A 1 cm nodule is seen.</think><answer>Nodule ✅</answer>"
        "<think>So yes.</think><answer>Yes</answer>"
    )
    stats = score(raw, question)
    assert stats["verdict_accuracy"] == [1.0, 1.0]
    assert stats["self_consistency"] == [1.0, 1.0]
    stats = score(raw.replace("Nodule ✅", "Nodule ❌"), question)
    assert stats["verdict_accuracy"] == [0.0, 1.0]
    assert stats["self_consistency"] == [0.0, 1.0]  # rejected, then answered yes


def test_ground_truth_mapping():
    assert set(VERIFIABLE_OBSERVATIONS) == {
        "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema", "Consolidation",
        "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    }  # fmt: skip
    raw = "<think>{}</think><answer>done</answer>"
    # pneumonia implies consolidation and lung opacity
    pneumonia = open_sample([finding("pneumonia", [0.5, 0.5, 0.9, 0.9])])
    stats = score(raw.format("There is consolidation in the right lower lobe."), pneumonia)
    assert stats["hallucination_rate"] == [0.0, 1.0]  # Consolidation is implied by the gold pneumonia
    assert stats["omission_rate"] == [1.0, 1.0]  # ... but consolidation does not imply Pneumonia
    # emphysema and hernia have no CheXpert observation: nothing to hallucinate or omit
    emphysema = open_sample([finding("emphysema", [0.1, 0.1, 0.9, 0.9])])
    stats = score(raw.format("The lungs are hyperinflated with flattened hemidiaphragms."), emphysema)
    assert stats["hallucination_rate"] == [0.0, 0.0] and stats["omission_rate"] == [0.0, 0.0]
    # pleural thickening -> Pleural Other; a nodule is a lung lesion, which is a lung opacity
    thickening = open_sample([finding("pleural thickening", [0.1, 0.1, 0.3, 0.3]), NODULE])
    stats = score(
        raw.format("Apical pleural thickening. A rounded opacity in the right upper lobe."), thickening
    )
    assert stats["hallucination_rate"] == [0.0, 2.0]  # Pleural Other, Lung Opacity
    assert stats["omission_rate"] == [1.0, 2.0]  # Lung Lesion itself is never mentioned
    # a normal study (empty findings): every asserted observation is a hallucination
    normal = open_sample([], target="no finding")
    stats = score(raw.format("The heart is enlarged. No effusion."), normal)
    assert stats["hallucination_rate"] == [1.0, 1.0]
    assert stats["omission_rate"] == [0.0, 0.0]


def test_deliberation_is_not_assertion():
    sample = open_sample([NODULE])
    raw = (
        "<think>Is there a pneumothorax? Let me consider pleural effusion. Check for cardiomegaly: the heart "
        "size is normal. A 1 cm nodule is seen in the right upper lobe.</think><answer>Nodule.</answer>"
    )
    values = analyse(raw, sample).observation_values
    # deliberated pneumothorax / effusion are uncertain (not asserted); cardiomegaly is stated normal
    assert values == {"Cardiomegaly": 0.0, "Lung Lesion": 1.0, "Pneumothorax": -1.0, "Pleural Effusion": -1.0}
    assert score(raw, sample)["hallucination_rate"] == [0.0, 1.0]


# ----------------------------------------------------------------------------------------
# Malformed, empty and huge outputs
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "valid", "steps", "ratio"),
    [
        # <think> nested in <answer>: the nested think is thinking, the answer is "b d"
        ("<think>a</think><answer>b <think>c</think> d</answer>", 0.0, 1.0, 2 / 4),
        # unclosed <think>: all thinking, no answer
        ("<think>The heart is enlarged", 0.0, 1.0, 1.0),
        # unclosed <answer>
        ("<think>a b</think><answer>c d", 0.0, 1.0, 2 / 4),
        # repeated tags: the inner <think> is text of the think
        ("<think><think>x</think></think><answer>y</answer>", 0.0, 1.0, 1 / 2),
        # text outside the pairs
        ("Sure! <think>a</think><answer>b</answer>", 0.0, 1.0, 1 / 3),
        # empty steps: well-formed, but no reasoning step and no token
        ("<think></think><answer></answer>", 1.0, 0.0, 0.0),
        ("<think> </think>\n<answer>B</answer><think></think><answer></answer>", 1.0, 0.0, 0.0),
        # plain text and the empty output
        ("The answer is B.", 0.0, 0.0, 0.0),
        ("", 0.0, 0.0, 0.0),
    ],
)
def test_malformed_and_empty_outputs(raw, valid, steps, ratio):
    sample = mc_sample([EFFUSION], MC_CHOICES, "B")
    stats = score(raw, sample)
    assert stats["format_valid"] == [valid]
    assert stats["reasoning_steps"] == [steps]
    assert stats["think_token_ratio"] == [pytest.approx(ratio)]
    assert stats["verdict_accuracy"] == [0.0, 0.0]
    assert stats["grounding_iou"] == [0.0, 0.0]
    assert all(len(row) in (1, 2) for row in stats.values())


def test_empty_output_omits_everything_and_hallucinates_nothing():
    sample = open_sample([ATELECTASIS, CARDIOMEGALY])
    stats = score("", sample)
    assert stats["hallucination_rate"] == [0.0, 0.0]
    assert stats["omission_rate"] == [2.0, 2.0]
    assert stats["self_consistency"] == [0.0, 0.0]
    # a non-Output prediction (plain text, no sample) is scored on the format only
    assert REASONING_METRICS["format_valid"].stats("<think>a</think><answer>b</answer>", None, CTX) == [1.0]
    assert REASONING_METRICS["hallucination_rate"].stats(None, None, CTX) == [0.0, 0.0]


def test_hundred_thousand_character_output_is_fast():
    sample = open_sample([ATELECTASIS, CARDIOMEGALY])
    steps = CX_MIND_OPEN.split("</answer>\n")[1:5]  # the four candidate pairs, without the closing tag
    body = "".join(s + "</answer>\n" for s in steps)
    dm = DEEPMEDIX.split("</think>")[0].removeprefix("<think>")
    chunk = body + f"<think>{dm}</think>\n<answer>Nodule ❌</answer>\n"
    raw = CX_MIND_OPEN.split("</answer>\n")[0] + "</answer>\n"
    while len(raw) < 100_000:
        raw += chunk
    raw += "<think>Summary.</think><answer>Atelectasis, Cardiomegaly</answer>"
    assert len(raw) >= 100_000
    best = float("inf")
    for _ in range(2):
        clear_analysis_cache()
        start = time.perf_counter()
        stats = score(raw, sample)
        best = min(best, time.perf_counter() - start)
    assert best < 1.0, f"{best:.2f} s for {len(raw)} characters"
    n_repeats = raw.count("Nodule ❌")
    assert stats["format_valid"] == [1.0]
    # per repeat: atelectasis ✅, cardiomegaly ✅, effusion ❌, pneumonia ❌, nodule ❌: all right
    assert stats["verdict_accuracy"] == [5.0 * n_repeats, 5.0 * n_repeats]
    assert stats["self_consistency"] == [1.0, 1.0]
    assert stats["grounding_iou"] == pytest.approx([1.75 * n_repeats, 3.0 * n_repeats])


# ----------------------------------------------------------------------------------------
# Registry record and reduction
# ----------------------------------------------------------------------------------------


def test_metric_records():
    assert list(REASONING_METRICS) == [
        "format_valid",
        "reasoning_steps",
        "think_token_ratio",
        "verdict_accuracy",
        "self_consistency",
        "hallucination_rate",
        "omission_rate",
        "grounding_iou",
        "grounding_acc50",
    ]
    for name, metric in REASONING_METRICS.items():
        assert metric.name == name and metric.inputs == "output" and len(metric.description) > 80
    assert REASONING_METRICS["hallucination_rate"].direction == "lower"
    assert REASONING_METRICS["omission_rate"].direction == "lower"
    assert REASONING_METRICS["reasoning_steps"].range == (0.0, float("inf"))


def test_micro_reduction_over_samples():
    # samples with nothing to count ([0, 0]) do not change the ratio; 0 / 0 is 0.0
    assert ratio_reduce(np.array([[1.0, 2.0], [0.0, 0.0], [2.0, 4.0]])) == pytest.approx(0.5)
    assert ratio_reduce(np.array([[0.0, 0.0]])) == 0.0
    assert ratio_reduce(np.zeros((0, 2))) == 0.0
    samples = [
        (CX_MIND_OPEN, open_sample([ATELECTASIS, CARDIOMEGALY])),  # hallucination [0, 3]
        (DEEPMEDIX, open_sample([ATELECTASIS, CARDIOMEGALY])),  # [1, 4]
        (CX_MIND_OPEN, open_sample(None)),  # [0, 0]: no ground truth
    ]
    metric = REASONING_METRICS["hallucination_rate"]
    matrix = np.array([metric.stats(Output(raw, None, s), s.target, CTX) for raw, s in samples])
    assert metric.reduce(matrix) == pytest.approx(1 / 7)
    assert metric.sample_value(matrix[1]) == pytest.approx(0.25) and metric.sample_value(matrix[2]) is None
    steps = REASONING_METRICS["reasoning_steps"]
    assert steps.reduce(np.array([[6.0], [1.0], [0.0]])) == pytest.approx(7 / 3)


def test_planted_finding_is_caught_on_the_phantom_suite(small_tasks, tmp_path):
    """End to end: a python: model writing CX-Mind-style reasoning with a false finding."""
    from conftest import HELPERS

    from cxbench.models import load_model
    from cxbench.runner import RunConfig, run_task
    from cxbench.tasks import Task

    (tmp_path / "t.yaml").write_text(
        "name: reasoning_t\nfamily: vqa_closed\n"
        "dataset: {name: phantom, split: test, n_cases: 80, seed: 0, size: 128}\n"
        "prompt: '{question}'\nparser: closed\nlabels: closed\n"
        "metrics: [accuracy, format_valid, verdict_accuracy, self_consistency, hallucination_rate]\n"
    )
    task = Task.from_yaml(tmp_path / "t.yaml")
    rates = {}
    for name in ("cx_mind_clean", "cx_mind_planted"):
        config = RunConfig(output_dir=tmp_path, cache_path="", progress=False, n_bootstrap=50)
        result, _ = run_task(task, load_model(f"python:{HELPERS}:{name}"), config)
        assert result["metrics"]["format_valid"]["value"] == 1.0
        assert result["metrics"]["self_consistency"]["value"] == 1.0
        rates[name] = result["metrics"]["hallucination_rate"]["value"]
    # pneumothorax is rare in this set: nearly every planted assertion is false
    assert rates["cx_mind_clean"] == 0.0 and rates["cx_mind_planted"] > 0.8


def test_logs_count_think_and_answer_tokens(small_tasks, tmp_path):
    import json

    from conftest import HELPERS

    from cxbench.models import load_model
    from cxbench.runner import RunConfig, run_task
    from cxbench.tasks import get_task

    config = RunConfig(output_dir=tmp_path, cache_path="", progress=False, limit=4, n_bootstrap=20)
    run_task(
        get_task("small_vqa_closed", [small_tasks]), load_model(f"python:{HELPERS}:cx_mind_clean"), config
    )
    rows = (tmp_path / "python-cx_mind_clean" / "small_vqa_closed.samples.jsonl").read_text().splitlines()[1:]
    counts = [(r.get("think_tokens"), r.get("answer_tokens")) for r in map(json.loads, rows)]
    assert counts and all(t and a for t, a in counts)  # yes/no: 1 think word, 1 answer word
    assert any(t > 4 * a for t, a in counts)  # multiple choice: reasoning over each option
