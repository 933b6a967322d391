"""Tests for cxbench.parsing: answer extraction from model output."""

from __future__ import annotations

import time

import pytest

from cxbench import parsing
from cxbench.labels import CHANGE_LABELS, DISEASE_SYNONYMS
from cxbench.parsing import (
    Reasoning,
    answer_tokens,
    final_answer,
    normalize_text,
    parse_box,
    parse_boxes,
    parse_change,
    parse_choice,
    parse_label,
    parse_ranked_labels,
    parse_yes_no,
    split_reasoning,
)

CX_MIND_3_PAIRS = (
    "<think>Option A suggests atelectasis, but there is no volume loss or mediastinal shift.</think>"
    "<answer>A) ❌</answer>\n"
    "<think>Blunting of the right costophrenic angle with a meniscus sign: pleural effusion.</think>"
    "<answer>B) ✅</answer>\n"
    "<think>summary</think><answer>B</answer>"
)

DEEPMEDIX_R1 = (
    "<think>\nThe frontal radiograph shows a rounded opacity in the right upper zone. "
    "Its approximate extent is [10, 10, 20, 20] in my scratch grid, which I will refine.\n</think>\n"
    "The nodule is located in the right upper lobe at [120, 80, 200, 160]."
)

CHOICES = ["atelectasis", "pleural effusion", "pneumothorax", "cardiomegaly"]


def approx_box(box: list[float] | None, expected: list[float]) -> bool:
    return (
        box is not None
        and len(box) == 4
        and all(abs(a - b) < 1e-9 for a, b in zip(box, expected, strict=False))
    )


# ----------------------------------------------------------------------------------------
# split_reasoning / final_answer
# ----------------------------------------------------------------------------------------


def test_cx_mind_three_pairs() -> None:
    r = split_reasoning(CX_MIND_3_PAIRS)
    assert isinstance(r, Reasoning)
    assert r.well_formed
    assert [answer for _, answer in r.steps] == ["A) ❌", "B) ✅", "B"]
    assert r.steps[2] == ("summary", "B")
    assert r.final_answer == "B"
    assert r.think_text.splitlines()[-1] == "summary"
    assert len(r.think_text.splitlines()) == 3
    assert final_answer(CX_MIND_3_PAIRS) == "B"
    assert parse_choice(CX_MIND_3_PAIRS, CHOICES) == "B"


def test_deepmedix_single_think_then_free_text() -> None:
    r = split_reasoning(DEEPMEDIX_R1)
    assert not r.well_formed
    assert r.final_answer == "The nodule is located in the right upper lobe at [120, 80, 200, 160]."
    assert len(r.steps) == 1 and "rounded opacity" in r.steps[0][0]
    # the box in the answer wins over the scratch box in the reasoning (pixels on 256 x 256)
    assert approx_box(parse_box(DEEPMEDIX_R1, (256, 256)), [120 / 256, 80 / 256, 200 / 256, 160 / 256])


@pytest.mark.parametrize(
    ("text", "final", "well_formed", "n_steps"),
    [
        ("<think>a</think><answer>yes</answer>", "yes", True, 1),
        ("  \n<think>a</think>\n<answer>yes</answer>\n  ", "yes", True, 1),
        ("<THINK>a</Think><Answer>No</ANSWER>", "No", True, 1),
        ("<answer>C</answer>", "C", False, 1),
        ("<think>the lungs are clear and there is", None, False, 1),  # unclosed think
        ("<think>a</think>", None, False, 1),  # thinking only
        (
            "Long reasoning here.</think>\n\nYes, there is an effusion.",
            "Yes, there is an effusion.",
            False,
            1,
        ),
        ("<think>a</think><answer>B", "B", False, 1),  # unclosed answer
        ("B</answer>", "B", False, 1),  # prompt pre-filled with <answer>
        ("<think>a<answer>B</answer>", "B", False, 1),  # missing </think>
        ("<answer>B <think>hmm</think>C</answer>", "B C", False, 1),  # think inside answer
        ("<think>a</think><answer>A</answer><answer>D</answer>", "D", False, 2),
        ("<think>a</think>\nx\n<answer>A</answer>", "A", False, 1),  # stray text between tags
        ("<think>a</think><answer>A</answer> trailing", "A", False, 1),
        ("Plain answer without tags.", "Plain answer without tags.", False, 0),
        ("", None, False, 0),
        ("</answer></think><answer>", "", False, 1),
    ],
)
def test_split_reasoning_forms(text: str, final: str | None, well_formed: bool, n_steps: int) -> None:
    r = split_reasoning(text)
    assert r.final_answer == final
    assert r.well_formed is well_formed
    assert len(r.steps) == n_steps


def test_think_inside_answer_is_thinking() -> None:
    r = split_reasoning("<think>first</think><answer>B <think>second</think>C</answer>")
    assert r.think_text == "first\nsecond"
    assert not r.well_formed


def test_free_text_after_each_think_pairs_with_it() -> None:
    r = split_reasoning("<think>a</think>\nMaybe A.\n<think>b</think>\nSo B.")
    assert r.steps == [("a", "Maybe A."), ("b", "So B.")]
    assert r.final_answer == "So B."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CX_MIND_3_PAIRS, "B"),
        ("<think>x</think><answer>Reasoning done.\n**Final Answer:** B</answer>", "B"),
        ("The effusion is large.\nAnswer: yes", "yes"),
        ("Answer: no\nFinal answer: yes", "yes"),
        ("<think>only thinking</think>", ""),
        ("<think>unclosed", ""),
        ("reasoning</think>", ""),
        ("prefix <think>x</think>", "prefix"),
        ("", ""),
        ("   \n ", ""),
        (
            "The answer: is not a marker at line start? Answer: B",
            "The answer: is not a marker at line start? Answer: B",
        ),
    ],
)
def test_final_answer(text: str, expected: str) -> None:
    assert final_answer(text) == expected


# ----------------------------------------------------------------------------------------
# normalisation
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Left Pleural Effusion.", "left pleural effusion"),
        ("An opacity, a nodule & the mass!", "opacity nodule mass"),
        ("ＣＡＲＤＩＯＭＥＧＡＬＹ", "cardiomegaly"),  # full-width -> NFKC
        ("x-ray", "xray"),
        ("", ""),
        ("\u200b ✅ \t\n", ""),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_answer_tokens() -> None:
    assert answer_tokens("The heart is ENLARGED.") == ["heart", "is", "enlarged"]
    assert answer_tokens("") == []


# ----------------------------------------------------------------------------------------
# yes / no
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("Yes, there is a small left pleural effusion.", "yes"),
        ("No.", "no"),
        ("No, the costophrenic angles are sharp.", "no"),
        ("There is no pneumothorax.", "no"),
        ("There are no focal consolidations.", "no"),
        ("<think>Could be an effusion... no, it is atelectasis.</think><answer>Yes</answer>", "yes"),
        ("<think>Lines look fine. Yes.</think><answer>No</answer>", "no"),
        ("The answer is yes.", "yes"),
        ("Final answer: No", "no"),
        ("**Yes**", "yes"),
        ("Present", "yes"),
        ("Absent.", "no"),
        ("Negative for pneumothorax.", "no"),
        ("It is not present.", "no"),
        ("The correct answer is no.", "no"),
        ("B) No", "no"),
        ("Yes/No", None),
        ("yes or no", None),
        ("Not sure.", None),
        ("Pneumothorax not excluded.", None),
        ("Not excluded.", None),
        ("Final answer: $\\boxed{\\text{Yes}}$", "yes"),
        ("There is a pneumothorax.", None),
        ("Maybe", None),
        ("The heart is enlarged.", None),
        ("", None),
        ("<think>yes</think>", None),
    ],
)
def test_parse_yes_no(text: str, expected: str | None) -> None:
    assert parse_yes_no(text) == expected


# ----------------------------------------------------------------------------------------
# multiple choice
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A", "A"),
        ("b", "B"),
        ("(C)", "C"),
        ("D)", "D"),
        ("B.", "B"),
        ("**B**", "B"),
        ("A: atelectasis", "A"),
        ("B) pleural effusion", "B"),
        ("Option C", "C"),
        ("The answer is B", "B"),
        ("The correct answer is (D) cardiomegaly.", "D"),
        ("Answer: C because the visceral pleural line is visible.", "C"),
        ("I choose B", "B"),
        ("The answer is B. Option A is unlikely because there is no volume loss.", "B"),
        ("Pleural effusion", "B"),
        ("pleural effusion.", "B"),
        ("The answer is a pleural effusion.", "B"),
        ("<think>A or B?</think><answer>A) ❌ B) ✅ C) ❌ D) ❌</answer>", "B"),
        ("<answer>A) atelectasis ❌\nB) pleural effusion ✅\nC) pneumothorax ❌</answer>", "B"),
        ("atelectasis ✗\npleural effusion ✔\ncardiomegaly ✘", "B"),
        ("C) ✓", "C"),
        ("A) ❌", None),  # only a rejection
        ("A) ✅ B) ✅", None),  # two accepted options
        ("E", None),  # out of range
        ("The answer is F.", None),
        ("A or B", None),
        ("Either A or C could fit.", None),
        ("A pleural effusion is seen.", None),
        ("Both answers are plausible but B", "B"),
        ("", None),
        ("<think>B</think>", None),
        ("No idea.", None),
    ],
)
def test_parse_choice(text: str, expected: str | None) -> None:
    assert parse_choice(text, CHOICES) == expected


def test_parse_choice_edge_inputs() -> None:
    assert parse_choice("A", []) is None
    assert parse_choice("B", ["yes", "no"]) == "B"
    assert parse_choice("C", ["yes", "no"]) is None
    assert parse_choice("B", ["A) yes", "B) no"]) == "B"
    assert parse_choice("no", ["A) yes", "B) no"]) == "B"


# ----------------------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Pleural effusion", "pleural effusion"),
        ("Findings are most consistent with a left-sided effusion.", "pleural effusion"),
        ("Right pleural thickening.", "pleural thickening"),
        ("Thickened pleura at the apex, possibly with a small effusion.", "pleural thickening"),
        ("Diagnosis: CARDIOMEGALY", "cardiomegaly"),
        ("Hiatal hernia.", "hernia"),
        ("Pulmonary edema with vascular congestion.", "edema"),
        ("<think>Could this be pneumonia?</think><answer>Atelectasis</answer>", "atelectasis"),
        ("No pneumothorax. The most likely diagnosis is atelectasis.", "atelectasis"),
        ("massive effusion", "pleural effusion"),  # "mass" needs a word boundary
        ("Normal chest radiograph.", None),
        ("", None),
    ],
)
def test_parse_label(text: str, expected: str | None) -> None:
    assert parse_label(text, DISEASE_SYNONYMS) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1. Nodule\n2. Mass\n3. Atelectasis", ["nodule", "mass", "atelectasis"]),
        ("Nodule, mass, nodules, consolidation", ["nodule", "mass", "consolidation"]),
        (
            "The most likely finding is cardiomegaly, followed by pulmonary edema and a small effusion.",
            ["cardiomegaly", "edema", "pleural effusion"],
        ),
        ("No pneumothorax. Right lower lobe consolidation.", ["consolidation"]),
        ("Without effusion; emphysema is present.", ["emphysema"]),
        ("Negative for pneumonia, but there is hyperinflation.", ["emphysema"]),
        ("No pneumothorax, pleural effusion, or consolidation.", []),
        ("Lungs free of infiltrates. Cardiomegaly.", ["cardiomegaly"]),
        ("Pleural thickening and pleural effusion", ["pleural thickening", "pleural effusion"]),
        ("<think>1. Mass</think><answer>1. Fibrosis\n2. Hernia</answer>", ["fibrosis", "hernia"]),
        ("", []),
    ],
)
def test_parse_ranked_labels(text: str, expected: list[str]) -> None:
    assert parse_ranked_labels(text, DISEASE_SYNONYMS) == expected


def test_label_custom_vocabulary() -> None:
    vocab = {"left": ("left",), "right": "right"}  # a bare string is one synonym
    assert parse_label("On the RIGHT side", vocab) == "right"
    assert parse_ranked_labels("left and right", vocab) == ["left", "right"]
    assert parse_label("anything", {}) is None


# ----------------------------------------------------------------------------------------
# temporal change
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Improved", "improved"),
        ("The right pleural effusion has decreased in size since the prior study.", "improved"),
        ("Resolving left lower lobe consolidation.", "improved"),
        ("The effusion is no longer seen.", "improved"),
        ("Worsened.", "worsened"),
        ("Interval progression of the bilateral opacities.", "worsened"),
        ("New right upper lobe consolidation.", "worsened"),
        ("Enlarged cardiac silhouette compared with prior.", "worsened"),
        ("Stable", "stable"),
        ("No significant interval change.", "stable"),
        ("No change.", "stable"),
        ("Unchanged appearance of the nodule.", "stable"),
        ("Not improved.", None),
        ("No improvement; the effusion is larger.", "worsened"),
        ("No new opacity. Stable cardiomegaly.", "stable"),
        ("No evidence of progression; unchanged.", "stable"),
        ("<think>It looked worse at first.</think><answer>Improved</answer>", "improved"),
        ("The heart is normal.", None),
        ("", None),
    ],
)
def test_parse_change(text: str, expected: str | None) -> None:
    assert parse_change(text) == expected
    assert expected is None or expected in CHANGE_LABELS


# ----------------------------------------------------------------------------------------
# boxes
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size", "expected"),
    [
        # pixels on a 256 x 256 image
        ("The nodule is at [64, 32, 128, 96].", (256, 256), [0.25, 0.125, 0.5, 0.375]),
        # 0-1 coordinates
        ("[0.25, 0.125, 0.5, 0.375]", (256, 256), [0.25, 0.125, 0.5, 0.375]),
        ("[0.25, 0.125, 0.5, 0.375]", (1024, 1024), [0.25, 0.125, 0.5, 0.375]),
        # 0-1000 values on a 256 image: larger than the image, so they cannot be pixels
        ("[250, 125, 500, 375]", (256, 256), [0.25, 0.125, 0.5, 0.375]),
        # the same numbers on a 1024 image are pixels
        ("[250, 125, 500, 375]", (1024, 1024), [250 / 1024, 125 / 1024, 500 / 1024, 375 / 1024]),
        # pixel values beyond 1000 on a 1024 image
        ("(256, 512, 1020, 1000)", (1024, 1024), [0.25, 0.5, 1020 / 1024, 1000 / 1024]),
        # tag forms are always 0-1000 in auto mode
        ("<box>(250,125),(500,375)</box>", (1024, 1024), [0.25, 0.125, 0.5, 0.375]),
        ("<box>(250,125),(500,375)</box>", (256, 256), [0.25, 0.125, 0.5, 0.375]),
        (
            "<|object_ref_start|>nodule<|object_ref_end|><|box_start|>(250,125),(500,375)<|box_end|>",
            (1024, 1024),
            [0.25, 0.125, 0.5, 0.375],
        ),
        ('{"bbox_2d": [64, 32, 128, 96], "label": "nodule"}', (256, 256), [0.25, 0.125, 0.5, 0.375]),
        ('```json\n[{"bbox_2d": [0.1, 0.2, 0.3, 0.4]}]\n```', (512, 512), [0.1, 0.2, 0.3, 0.4]),
        ("Bounding box: 64, 32, 128, 96", (256, 256), [0.25, 0.125, 0.5, 0.375]),
        ("box: (64, 32, 128, 96)", (256, 256), [0.25, 0.125, 0.5, 0.375]),
        ("[(64, 32), (128, 96)]", (256, 256), [0.25, 0.125, 0.5, 0.375]),
        ("[[64, 32], [128, 96]]", (256, 256), [0.25, 0.125, 0.5, 0.375]),
        # reversed corners are reordered, out-of-image corners clipped
        ("[128, 96, 64, 32]", (256, 256), [0.25, 0.125, 0.5, 0.375]),
        # 300 > width and all <= 1000, so 0-1000 by the auto rule; -10 is clipped to 0
        ("[-10, 32, 300, 96]", (256, 256), [0.0, 0.032, 0.3, 0.096]),
        ("[-0.5, 0.2, 0.9, 0.4]", (256, 256), [0.0, 0.2, 0.9, 0.4]),
        # an unclosed tag still uses the tag convention
        ("<box>(100,200),(300,400)", (1024, 1024), [0.1, 0.2, 0.3, 0.4]),
        # CX-Mind style: the last box of the final answer
        (
            "<think>maybe [0, 0, 10, 10]</think><answer>[10, 10, 20, 20]</answer>"
            "<think>refine</think><answer>Nodule at [64, 32, 128, 96]</answer>",
            (256, 256),
            [0.25, 0.125, 0.5, 0.375],
        ),
    ],
)
def test_parse_box_forms(text: str, size: tuple[int, int], expected: list[float]) -> None:
    assert approx_box(parse_box(text, size), expected)


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        ("pixel", [0.25, 0.125, 0.5, 0.375]),
        ("norm1000", [0.064, 0.032, 0.128, 0.096]),
        ("auto", [0.25, 0.125, 0.5, 0.375]),
    ],
)
def test_parse_box_explicit_scale(scale: str, expected: list[float]) -> None:
    assert approx_box(parse_box("[64, 32, 128, 96]", (256, 256), scale=scale), expected)


def test_parse_box_explicit_scale_overrides_tag_convention() -> None:
    assert approx_box(
        parse_box("<box>(64,32),(128,96)</box>", (256, 256), scale="pixel"), [0.25, 0.125, 0.5, 0.375]
    )
    assert approx_box(parse_box("[0.1, 0.2, 0.3, 0.4]", (256, 256), scale="unit"), [0.1, 0.2, 0.3, 0.4])


def test_parse_boxes_order_and_source() -> None:
    text = (
        "<think>[1, 1, 2, 2]</think>"
        "<answer>Nodule [0.1, 0.1, 0.2, 0.2]; mass <box>(500,500),(600,700)</box></answer>"
    )
    assert parse_boxes(text, (1024, 1024)) == [[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.6, 0.7]]
    # no box in the final answer: fall back to the reasoning
    reasoning_only = "<think>[0.1, 0.2, 0.3, 0.4]</think><answer>left apex</answer>"
    assert approx_box(parse_box(reasoning_only, (8, 8)), [0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "No box.",
        "[0, 0, 0, 5]",  # zero width
        "[10, 20, 10, 40]",
        "[1e999, 2, 3, 4]",  # infinite
        "[nan, 2, 3, 4]",
        "[1, 2, 3]",
        "[1, 2, 3, 4, 5]",
        "<box>(1,2),(3,</box>",
        "[2000, 2000, 3000, 3000]",  # pixels entirely outside the image: zero area after clipping
    ],
)
def test_parse_box_rejects(text: str) -> None:
    assert parse_box(text, (256, 256)) is None
    assert parse_boxes(text, (256, 256)) == []


def test_parse_box_bad_arguments() -> None:
    assert parse_box("[1, 2, 3, 4]", (256, 256), scale="weird") is None
    assert parse_box("[10, 20, 30, 40]", (0, 0)) is None  # pixels need a valid size
    assert approx_box(parse_box("[10, 20, 30, 40]", (0, 0), scale="norm1000"), [0.01, 0.02, 0.03, 0.04])
    assert parse_box("[0.1, 0.2, 0.3, 0.4]", None) == [0.1, 0.2, 0.3, 0.4]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------
# robustness
# ----------------------------------------------------------------------------------------

_MB = 1_000_000


def _repeat(chunk: str) -> str:
    return (chunk * (_MB // len(chunk) + 1))[:_MB]


ADVERSARIAL = {
    "open_think": _repeat("<think>"),
    "mixed_tags": _repeat("<think><answer></think>x</answer>"),
    "spaced_lt": "<" + " " * _MB,
    "digits": "9" * _MB,
    "brackets": _repeat("[1, 2, 3, "),
    "box_tags": _repeat("<box>(1,2),(3,"),
    "marks": _repeat("A) ✅ B) ❌ "),
    "negations": _repeat("no pleural "),
    "change_words": _repeat("no significant "),
    "unicode_junk": _repeat("é✅\u200b\U0001f600İ\x00\ud800"),
}

PUBLIC_CALLS = {
    "split_reasoning": split_reasoning,
    "final_answer": final_answer,
    "normalize_text": normalize_text,
    "answer_tokens": answer_tokens,
    "parse_yes_no": parse_yes_no,
    "parse_choice": lambda t: parse_choice(t, CHOICES),
    "parse_label": lambda t: parse_label(t, DISEASE_SYNONYMS),
    "parse_ranked_labels": lambda t: parse_ranked_labels(t, DISEASE_SYNONYMS),
    "parse_change": parse_change,
    "parse_box": lambda t: parse_box(t, (256, 256)),
    "parse_boxes": lambda t: parse_boxes(t, (1024, 1024)),
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_one_megabyte_adversarial_input_is_fast(name: str) -> None:
    text = ADVERSARIAL[name]
    for call_name, call in PUBLIC_CALLS.items():
        start = time.perf_counter()
        call(text)
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, f"{call_name} took {elapsed:.2f}s on {name}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "<",
        "<think",
        "</answer>",
        "<answer><think></answer></think>",
        "<think></think></think><answer><answer>",
        "<box>",
        "<|box_start|><|box_end|>",
        "[,,,]",
        "\x00\ud800\uffff",
        "✅❌✔✘",
        "A) B) C)",
        "İİİ no pleural effusion İ",
        "[1e5000, -1e5000, 1, 2]",
    ],
)
def test_never_raises_on_junk(text: str) -> None:
    for call in PUBLIC_CALLS.values():
        call(text)
    assert isinstance(final_answer(text), str)
    assert isinstance(split_reasoning(text), Reasoning)


def test_non_string_input_does_not_raise() -> None:
    for value in (None, 12, b"yes"):
        assert final_answer(value) == ""  # type: ignore[arg-type]
        assert parse_yes_no(value) is None  # type: ignore[arg-type]
        assert parse_boxes(value, (1, 1)) == []  # type: ignore[arg-type]
        assert normalize_text(value) == ""  # type: ignore[arg-type]


def test_public_names() -> None:
    for name in parsing.__all__:
        assert hasattr(parsing, name)
