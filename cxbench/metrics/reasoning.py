"""Metrics on the reasoning of chest X-ray reasoning models (``inputs="output"``).

Every metric here receives an :class:`~cxbench.metrics.base.Output` (raw model text, parsed answer,
Sample) and scores the *reasoning*, not only the final answer. The raw text is split with
:func:`cxbench.parsing.split_reasoning` into ``(think, answer)`` steps; the last step with a
non-empty answer holds the **final answer**, every earlier answer is an **intermediate answer**. A
plain text without tags is one answer-only step. Two layouts are targeted:

* **CX-Mind** (interleaved): multiple choice has one ``<think>..</think><answer>..</answer>`` pair
  per option whose answer is a verdict (``A) ❌``), then a summary pair with the chosen option
  marked ✅; open diagnosis has a first pair listing differential diagnoses, one pair per candidate
  (``Atelectasis ✅``) and a final pair with the comma-separated diagnoses.
* **DeepMedix-R1** (grounded): one ``<think>`` block whose statements carry pixel boxes
  ``[x1, y1, x2, y2]`` after the finding they show, then an ``<answer>``.

Shared definitions
------------------
Verdicts
    Found in answers, line by line. A mark ✅ ✔ ✓ ☑ is positive, ❌ ✗ ✘ ✖ ❎ negative. A mark's
    *subject* is the nearest not yet used subject before it (since the previous mark), else the
    first one after it (up to the next mark): ``A) ❌ B) ✅`` and ``✅ Atelectasis`` both work. A line
    without marks is a yes/no verdict when, with its (at most one) subject removed, it has at most 8
    words and its first word after filler ("the answer is", "there is") is yes / present / positive /
    true / correct / confirmed (positive) or no / not / absent / negative / false / incorrect /
    excluded / none (negative): ``Atelectasis: yes``, ``No pneumothorax.``, ``B) No``. An answer
    whose only verdict has no subject (``<answer>❌</answer>``) takes the first subject of its step's
    think. Subjects, for a multiple-choice sample (``choices`` set): option markers (``A)``, ``(A)``,
    ``A.``, ``A:``, ``Option A``) of valid letters, else the option texts or a disease naming
    exactly one option; otherwise a disease of :data:`~cxbench.labels.DISEASE_SYNONYMS` (canonical
    :data:`~cxbench.labels.DISEASES_14` name) or "no finding" ("no finding(s)", "normal", "no
    abnormality"). Only verdicts of **intermediate** answers are scored (the final answer is scored
    by the task's own metrics).
Gold
    Multiple choice: the option letter of ``target`` (a letter or an option text). Open: the labels
    of ``metadata["findings"]`` (a list; empty = normal study); without that key, a ``target`` that
    is a disease name / "no finding" (or a list of them), or, for a yes/no question (target
    yes/no with ``query["finding"]``), the asked finding only. A candidate marked ✅ is right iff it
    is present in the gold, ❌ iff it is absent ("no finding" is present iff the gold has no
    finding). Verdicts whose truth is unknown are not counted.
Asserted findings (hallucination / omission)
    Reasoning text is labeled with the rule-based CheXpert-14 labeler
    (:mod:`cxbench.metrics.chexpert_labeler`), piece by piece, each observation aggregated over
    pieces as positive > uncertain > negative:

    * every think text; *deliberation sentences* in it (questions ending in "?", sentences
      starting with "consider", "let me consider", "check for / whether", "look for", "evaluate
      for / whether", "assess for", "rule out", "exclude", up to a colon if there is one, and option
      headings of at most 6 words such as "Option A: pneumothorax.") name a candidate without
      asserting it: their labels count
      only for observations the other sentences of the think do not label, positive ones as
      uncertain;
    * open questions: an answer with verdicts contributes the verdicts (✅ positive, ❌ negative, on
      the candidate's observations, see the mapping below); they replace the labels of those
      observations in the same step's think (the step's conclusion on its candidate) and outrank
      uncertain and negative mentions anywhere else (a positive assertion elsewhere still counts);
      in an output with intermediate verdicts, the intermediate answers before the first verdict
      are differential lists, whose positive mentions count as uncertain; every other answer is
      labeled as it is;
    * multiple choice: answers are option judgements, not statements about the image, and are not
      labeled; in a step whose answer rejects an option (❌), positive labels of that option's
      observations (the option text labeled) in the step's think count as uncertain (the step
      describes what the finding would look like: "a pneumothorax would show a pleural line").

    Long texts are labeled in chunks of about 4,000 characters cut at sentence ends (the labeler's
    cue scope never crosses a sentence end), which keeps labeling linear in the text length.
Ground-truth mapping (:data:`GOLD_TO_CHEXPERT`, :data:`CHEXPERT_PARENTS`)
    NIH-14 labels map directly to CheXpert observations: atelectasis, cardiomegaly, pleural effusion,
    pneumonia, pneumothorax, consolidation, edema -> the namesake; nodule, mass -> Lung Lesion;
    infiltration, fibrosis -> Lung Opacity; pleural thickening -> Pleural Other; emphysema, hernia ->
    none (left out on both sides). Parents in the CheXpert hierarchy are implied: Lung Opacity by
    Lung Lesion, Edema, Consolidation, Pneumonia and Atelectasis; Consolidation by Pneumonia;
    Enlarged Cardiomediastinum by Cardiomegaly. Only the 11 observations reachable this way
    (:data:`VERIFIABLE_OBSERVATIONS`) are scored: No Finding, Fracture and Support Devices cannot be
    confirmed or refuted by NIH-14 ground truth and are ignored.
Grounded boxes
    In each think and answer, text is cut into clauses at ``. ! ?`` followed by white space, ``;``
    and line breaks (not at commas, which occur inside boxes and lists). A box found by
    :func:`cxbench.parsing.parse_boxes` (with ``metadata["image_size"]``) belongs to the nearest
    preceding disease mention in its clause, else to the first following one; negated mentions
    ("no effusion", "without pneumothorax": a cue earlier in the same comma-delimited phrase,
    within 60 characters) and "no finding" do not take boxes; boxes in a clause without a mention
    are not counted. Every occurrence counts (a box repeated in the answer counts twice).

Per-sample statistics and values
--------------------------------
``format_valid`` [0/1], ``reasoning_steps`` [n], ``think_token_ratio`` [ratio] reduce by the mean.
The other metrics return ``[numerator, denominator]`` and reduce to the micro ratio
``sum(numerators) / sum(denominators)`` over the corpus (0.0 when the denominator sums to 0, as the
clinical metrics do); samples without anything to count (no verdicts, no ground truth in
``metadata["findings"]``, no grounded box) return ``[0, 0]`` and so contribute nothing. Bootstrap
CIs resample samples and recompute the ratio.

All scanning is linear in the output length: bounded regular expressions, single passes, bisect
look-ups, chunked labeling. The analysis of one output is computed once and shared by all metrics
(a small cache keyed by the raw text and the Sample object).
"""

from __future__ import annotations

import bisect
import re
import string
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from cxbench.labels import DISEASE_SYNONYMS
from cxbench.metrics.base import Metric, MetricContext, Output, first_column, mean_reduce
from cxbench.metrics.chexpert_labeler import OBSERVATIONS, label_vector
from cxbench.metrics.grounding import box_iou
from cxbench.parsing import (
    Reasoning,
    final_answer,
    parse_boxes,
    parse_choice,
    parse_ranked_labels,
    parse_yes_no,
    split_reasoning,
)

__all__ = [
    "CHEXPERT_PARENTS",
    "FORMAT_VALID",
    "GOLD_TO_CHEXPERT",
    "GROUNDING_ACC50",
    "GROUNDING_IOU",
    "HALLUCINATION_RATE",
    "NO_FINDING",
    "OMISSION_RATE",
    "REASONING_METRICS",
    "REASONING_STEPS",
    "SELF_CONSISTENCY",
    "THINK_TOKEN_RATIO",
    "VERDICT_ACCURACY",
    "VERIFIABLE_OBSERVATIONS",
    "VOCABULARY",
    "OutputAnalysis",
    "Verdict",
    "analyse",
    "clear_analysis_cache",
    "ratio_reduce",
]

# ----------------------------------------------------------------------------------------
# Vocabulary and ground-truth mapping
# ----------------------------------------------------------------------------------------

NO_FINDING = "no finding"
#: candidate vocabulary of verdicts and grounded mentions: the 14 diseases plus "no finding"
VOCABULARY: dict[str, tuple[str, ...]] = {
    **DISEASE_SYNONYMS,
    NO_FINDING: ("no finding", "no findings", "normal", "no abnormality", "no abnormalities"),
}

#: NIH ChestX-ray14 label -> CheXpert observations it states directly
GOLD_TO_CHEXPERT: dict[str, tuple[str, ...]] = {
    "atelectasis": ("Atelectasis",),
    "cardiomegaly": ("Cardiomegaly",),
    "pleural effusion": ("Pleural Effusion",),
    "infiltration": ("Lung Opacity",),
    "mass": ("Lung Lesion",),
    "nodule": ("Lung Lesion",),
    "pneumonia": ("Pneumonia",),
    "pneumothorax": ("Pneumothorax",),
    "consolidation": ("Consolidation",),
    "edema": ("Edema",),
    "emphysema": (),
    "fibrosis": ("Lung Opacity",),
    "pleural thickening": ("Pleural Other",),
    "hernia": (),
}
#: CheXpert hierarchy: an observation implies its parents
CHEXPERT_PARENTS: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("Enlarged Cardiomediastinum",),
    "Lung Lesion": ("Lung Opacity",),
    "Edema": ("Lung Opacity",),
    "Consolidation": ("Lung Opacity",),
    "Pneumonia": ("Consolidation", "Lung Opacity"),
    "Atelectasis": ("Lung Opacity",),
}


def _closure(observations: set[str]) -> set[str]:
    """``observations`` with all their ancestors in the CheXpert hierarchy."""
    out: set[str] = set()
    todo = list(observations)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(CHEXPERT_PARENTS.get(name, ()))
    return out


#: observations that NIH-14 ground truth can confirm or refute (the only ones scored)
VERIFIABLE_OBSERVATIONS: tuple[str, ...] = tuple(
    name for name in OBSERVATIONS if name in _closure({o for v in GOLD_TO_CHEXPERT.values() for o in v})
)
_VERIFIABLE_IDX: tuple[int, ...] = tuple(OBSERVATIONS.index(name) for name in VERIFIABLE_OBSERVATIONS)

# ----------------------------------------------------------------------------------------
# Text helpers
# ----------------------------------------------------------------------------------------

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_SPLIT_RE = re.compile(r"[\s\-]+")
_LETTERS = string.ascii_uppercase
_POSITIVE_MARKS = "✅✔✓☑"
_NEGATIVE_MARKS = "❌✗✘✖❎"
_MARK_RE = re.compile("[" + _POSITIVE_MARKS + _NEGATIVE_MARKS + "]")
_TAG_RE = re.compile(r"<[ \t]{0,3}/?[ \t]{0,3}(?:think|answer)[ \t]{0,3}>", re.IGNORECASE)
_DIGIT_RE = re.compile(r"\d")
_WORD_RE = re.compile(r"[a-z]+")


def _lower(text: str) -> str:
    """Lower case with offsets aligned to ``text`` (ASCII-only when full lower casing changes length)."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else text.translate(_ASCII_LOWER)


def _key(text: str) -> str:
    return " ".join(_SPLIT_RE.split(text.strip().lower())).strip(" .:;,!?")


_LOOKUP: dict[str, str] = {}
for _label, _synonyms in VOCABULARY.items():
    for _synonym in (_label, *_synonyms):
        _LOOKUP.setdefault(_key(_synonym), _label)
#: every synonym, longest first (the regex takes the first alternative that matches);
#: the left word boundary is checked in code so the engine keeps its fast first-character scan
_MENTION_RE = re.compile(
    "(?:"
    + "|".join(
        r"[\s\-]{1,5}".join(re.escape(word) for word in synonym.split())
        for synonym in sorted(_LOOKUP, key=lambda s: (-len(s), s))
    )
    + r")(?![a-z0-9])"
)


def _canonical(text: str) -> str | None:
    """The vocabulary label that ``text`` is a name of, or None."""
    return _LOOKUP.get(_key(text))


def _mentions(lowered: str, start: int = 0, end: int | None = None, first: bool = False) -> list[tuple]:
    """``(start, end, label)`` of vocabulary mentions in ``lowered[start:end]``, in order."""
    end = len(lowered) if end is None else end
    found: list[tuple[int, int, str]] = []
    position = start
    while True:
        m = _MENTION_RE.search(lowered, position, end)
        if m is None:
            return found
        if m.start() > 0 and lowered[m.start() - 1].isalnum():
            position = m.start() + 1
            continue
        position = m.end()
        label = _LOOKUP.get(" ".join(_SPLIT_RE.split(m.group(0))))
        if label is not None:
            found.append((m.start(), m.end(), label))
            if first:
                return found


_NEG_CUE_RE = re.compile(r"(?<![a-z])(?:no|not|without|negative[ \t]{1,3}for|free[ \t]{1,3}of)\s")
_NEG_SCOPE_BREAK_RE = re.compile(r"[,;:.!?\n]|\b(?:but|however|although|though)\b")
_NEG_WINDOW = 60


def _negated(lowered: str, start: int) -> bool:
    """A negation cue before ``start`` in the same comma-delimited phrase, within 60 characters."""
    low = max(0, start - _NEG_WINDOW)
    for m in _NEG_SCOPE_BREAK_RE.finditer(lowered, low, start):
        low = m.end()
    return _NEG_CUE_RE.search(lowered, low, start) is not None


_SENTENCE_END_RE = re.compile(r"[.!?]+(?=\s|$)|\n")
_CHUNK_LIMIT = 4000


def _chunks(text: str, limit: int = _CHUNK_LIMIT) -> Iterator[str]:
    """``text`` in pieces of at most ``limit`` characters, cut after a sentence end when possible."""
    n = len(text)
    start = 0
    while start < n:
        end = start + limit
        if end >= n:
            yield text[start:]
            return
        cut = max(text.rfind(". ", start, end), text.rfind("\n", start, end))
        if cut > start:
            cut += 1
        else:
            cut = text.rfind(" ", start, end)
            cut = cut + 1 if cut > start else end
        yield text[start:cut]
        start = cut


_RANK = {1.0: 3, -1.0: 2, 0.0: 1}


def _merge(values: dict[int, float], index: int, value: float) -> None:
    """Positive beats uncertain beats negative, as the labeler aggregates mentions."""
    old = values.get(index)
    if old is None or _RANK[value] > _RANK[old]:
        values[index] = value


def _label_text(text: str) -> dict[int, float]:
    """CheXpert labels (verifiable observations only, by OBSERVATIONS index) of ``text``."""
    values: dict[int, float] = {}
    if not text or not text.strip():
        return values
    for chunk in _chunks(text):
        vector = label_vector(chunk, cache=False)
        for i in _VERIFIABLE_IDX:
            if vector[i] is not None:
                _merge(values, i, vector[i])
    return values


_BULLETS = r"[\s\-*#>\u2022]{0,10}"
_DELIBERATION_RE = re.compile(
    _BULLETS + r"(?:let(?:'s|[ \t]{1,3}us|[ \t]{1,3}me)[ \t]{1,3})?(?:consider"
    r"|check(?:ing)?[ \t]{1,3}(?:for|whether|if)|look(?:ing)?[ \t]{1,3}for|search(?:ing)?[ \t]{1,3}for"
    r"|evaluat(?:e|ing)[ \t]{1,3}(?:for|whether|if)|assess(?:ing)?[ \t]{1,3}(?:for|whether|if)"
    r"|rul(?:e|ing)[ \t]{1,3}out|exclude)(?![a-z])"
)
_OPTION_HEADING_RE = re.compile(
    _BULLETS + r"(?:(?:option|choice)[ \t]{1,3}\(?[a-z]\)?|\(?[a-z]\))(?![a-z0-9])"
)
_HEADING_WORDS = 6


def _split_deliberation(text: str) -> tuple[str, str]:
    """``(assertive text, deliberation text)``: deliberation sentences moved to the second part."""
    lowered = _lower(text)
    normal: list[str] = []
    deliberation: list[str] = []
    start = 0
    n = len(text)
    ends = [m.end() for m in _SENTENCE_END_RE.finditer(lowered)]
    if not ends or ends[-1] < n:
        ends.append(n)
    for end in ends:
        sentence = lowered[start:end]
        stripped = sentence.strip()
        if not stripped:
            normal.append(text[start:end])
        elif stripped.endswith("?") or (
            _OPTION_HEADING_RE.match(sentence) and len(stripped.split()) <= _HEADING_WORDS
        ):
            deliberation.append(text[start:end])
        elif _DELIBERATION_RE.match(sentence):
            colon = sentence.find(": ")  # "Check for X: the heart is ..." -> only the heading deliberates
            cut = start + colon + 1 if colon >= 0 else end
            deliberation.append(text[start:cut])
            normal.append(text[cut:end])
        else:
            normal.append(text[start:end])
        start = end
    if not deliberation:
        return text, ""
    return "".join(normal), " ".join(deliberation)


def _label_think(text: str) -> dict[int, float]:
    """Labels of a think text; positive labels of deliberation sentences count as uncertain."""
    if not text:
        return {}
    normal, deliberation = _split_deliberation(text)
    values = _label_text(normal)
    for i, value in _label_text(deliberation).items():
        if i not in values:  # what the assertive sentences say about it comes first
            values[i] = -1.0 if value == 1.0 else value
    return values


# ----------------------------------------------------------------------------------------
# Sample facts: options, gold
# ----------------------------------------------------------------------------------------

_OPTION_MARKER_RE = re.compile(
    r"(?<![A-Za-z0-9'\-])(?:\(([A-Z])\)|([A-Z])[).:](?![A-Za-z0-9])"
    r"|(?:[Oo]ption|OPTION|[Cc]hoice|CHOICE)[ \t]{1,3}\(?([A-Za-z])(?![A-Za-z0-9])\)?)"
)
#: option references that are safe to look for in prose (the think fallback)
_THINK_OPTION_RE = re.compile(
    r"(?<![A-Za-z0-9'\-])(?:(?:[Oo]ption|OPTION|[Cc]hoice|CHOICE)[ \t]{1,3}\(?([A-Za-z])(?![A-Za-z0-9])"
    r"|\(([A-Z])\)|([A-Z])\))"
)
_OWN_LETTER_RE = re.compile(r"^\(?([A-Za-z])[).:]\s+")
_YES_WORDS = frozenset({"yes", "present", "positive", "true", "correct", "confirmed"})
_NO_WORDS = frozenset({"no", "not", "absent", "negative", "false", "incorrect", "excluded", "none"})
_FILLER_WORDS = frozenset(
    {
        "the", "answer", "verdict", "final", "is", "are", "there", "it", "this", "that", "so", "thus",
        "therefore",
    }
)  # fmt: skip
_YES_NO_MAX_WORDS = 8
_YES_NO_MAX_CHARS = 300


class _Facts:
    """What the metrics need to know about a Sample: options, gold letter, gold labels."""

    def __init__(self, sample: Any) -> None:
        choices = getattr(sample, "choices", None)
        self.choices: list[str] = [str(c) for c in choices[: len(_LETTERS)]] if choices else []
        self.is_choice = bool(self.choices)
        self.letters = _LETTERS[: len(self.choices)]
        target = getattr(sample, "target", None)
        metadata = getattr(sample, "metadata", None)
        metadata = metadata if isinstance(metadata, Mapping) else {}
        query = getattr(sample, "query", None)
        query = query if isinstance(query, Mapping) else {}
        findings = metadata.get("findings")
        #: ``metadata["findings"]`` when it is a list (the study's ground truth), else None
        self.findings: list[Mapping[str, Any]] | None = (
            [f for f in findings if isinstance(f, Mapping)] if isinstance(findings, list) else None
        )
        size = metadata.get("image_size")
        self.image_size = tuple(size) if isinstance(size, (list, tuple)) and len(size) == 2 else None

        # options: lowered text keys and the disease each option names (when unique)
        self.choice_keys: list[tuple[str, str]] = []
        named: dict[str, list[str]] = {}
        for letter, choice in zip(self.letters, self.choices, strict=False):
            text = choice.strip()
            m = _OWN_LETTER_RE.match(text)
            if m and m.group(1).upper() == letter:
                text = text[m.end() :]
            key = " ".join(_lower(text).split())
            if key:
                self.choice_keys.append((letter, key))
            labels = {label for _, _, label in _mentions(_lower(text))}
            if len(labels) == 1:
                named.setdefault(labels.pop(), []).append(letter)
        self.letter_of_label = {label: letters[0] for label, letters in named.items() if len(letters) == 1}

        self.gold_letter: str | None = None
        if self.is_choice and isinstance(target, str):
            self.gold_letter = parse_choice(target, self.choices)
        self.gold_labels = self._gold_labels(target)
        self.yes_no: str | None = None  # "yes"/"no" target of a yes/no question about one finding
        self.asked: str | None = None  # the finding a yes/no question asks about
        if not self.is_choice and isinstance(target, str) and target.strip().lower() in ("yes", "no"):
            finding = query.get("finding")
            label = _canonical(finding) if isinstance(finding, str) else None
            if label is not None:
                self.yes_no, self.asked = target.strip().lower(), label

    def _gold_labels(self, target: Any) -> set[str] | None:
        if self.findings is not None:
            labels = set()
            for finding in self.findings:
                name = finding.get("label")
                if isinstance(name, str) and name.strip():
                    label = _canonical(name) or _key(name)
                    if label != NO_FINDING:
                        labels.add(label)
            return labels
        items = [target] if isinstance(target, str) else target if isinstance(target, (list, tuple)) else None
        if not items or not all(isinstance(item, str) for item in items):
            return None
        labels = set()
        for item in items:
            label = _canonical(item)
            if label is None:
                return None
            if label != NO_FINDING:
                labels.add(label)
        return labels

    def truth(self, subject: str) -> bool | None:
        """Whether ``subject`` (an option letter or a label) is right to mark positive; None: unknown."""
        if self.is_choice:
            return None if self.gold_letter is None else subject == self.gold_letter
        if self.gold_labels is not None:
            return not self.gold_labels if subject == NO_FINDING else subject in self.gold_labels
        if self.asked is not None and subject == self.asked:
            return self.yes_no == "yes"
        return None

    # subjects ------------------------------------------------------------------------

    def subjects(self, line: str, lowered: str) -> list[tuple[int, int, str]]:
        """``(start, end, subject)`` in a line, in order (letters for options, else labels)."""
        if not self.is_choice:
            return _mentions(lowered)
        markers = []
        for m in _OPTION_MARKER_RE.finditer(line):
            letter = (m.group(1) or m.group(2) or m.group(3) or "").upper()
            if letter in self.letters:
                markers.append((m.start(), m.end(), letter))
        if markers:
            return markers
        return self._option_mentions(lowered, 0, len(lowered))

    def _option_mentions(self, lowered: str, start: int, end: int) -> list[tuple[int, int, str]]:
        found = [
            (s, e, self.letter_of_label[label])
            for s, e, label in _mentions(lowered, start, end)
            if label in self.letter_of_label
        ]
        for letter, key in self.choice_keys:
            position = lowered.find(key, start, end)
            while position >= 0:
                stop = position + len(key)
                before_ok = position == 0 or not lowered[position - 1].isalnum()
                after_ok = stop >= len(lowered) or not lowered[stop].isalnum()
                if before_ok and after_ok:
                    found.append((position, stop, letter))
                position = lowered.find(key, stop, end)
        found.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        merged: list[tuple[int, int, str]] = []
        for item in found:  # drop overlaps, the longest at a position wins
            if merged and item[0] < merged[-1][1]:
                continue
            merged.append(item)
        return merged

    def first_subject(self, think: str) -> str | None:
        """The first subject named in a think (for an answer that is a bare verdict)."""
        if self.is_choice:
            for m in _THINK_OPTION_RE.finditer(think):
                letter = (m.group(1) or m.group(2) or m.group(3) or "").upper()
                if letter in self.letters:
                    return letter
            mentions = self._option_mentions(_lower(think), 0, len(think))
            return mentions[0][2] if mentions else None
        mentions = _mentions(_lower(think), first=True)
        return mentions[0][2] if mentions else None


# ----------------------------------------------------------------------------------------
# Verdicts
# ----------------------------------------------------------------------------------------


class Verdict(NamedTuple):
    """One ✅/❌ (or yes/no) judgement found in an answer."""

    subject: str  #: option letter ("A") or vocabulary label ("pleural effusion", "no finding")
    positive: bool
    step: int  #: index of the step (of ``OutputAnalysis.steps``) whose answer holds it
    intermediate: bool  #: False when it is in the final answer


def _assign_marks(
    marks: list[tuple[int, bool]], subjects: list[tuple[int, int, str]], length: int
) -> tuple[list[tuple[str, bool]], list[bool]]:
    """Pair each mark with the nearest unused subject before it (since the previous mark), else the
    first unused one after it (before the next mark)."""
    starts = [s[0] for s in subjects]
    used: set[int] = set()
    found: list[tuple[str, bool]] = []
    loose: list[bool] = []
    for k, (position, positive) in enumerate(marks):
        low = marks[k - 1][0] if k else -1
        high = marks[k + 1][0] if k + 1 < len(marks) else length
        chosen = None
        j = bisect.bisect_left(starts, position) - 1
        while j >= 0 and starts[j] > low:
            if j not in used:
                chosen = j
                break
            j -= 1
        if chosen is None:
            j = bisect.bisect_right(starts, position)
            while j < len(starts) and starts[j] < high:
                if j not in used:
                    chosen = j
                    break
                j += 1
        if chosen is None:
            loose.append(positive)
        else:
            used.add(chosen)
            found.append((subjects[chosen][2], positive))
    return found, loose


def _yes_no(lowered: str, subjects: list[tuple[int, int, str]]) -> bool | None:
    pieces, position = [], 0
    for start, end, _ in subjects:
        pieces.append(lowered[position:start])
        position = end
    pieces.append(lowered[position:])
    words = _WORD_RE.findall(" ".join(pieces))
    if not words or len(words) > _YES_NO_MAX_WORDS:
        return None
    for word in words:
        if word in _FILLER_WORDS:
            continue
        if word in _YES_WORDS:
            return True
        if word in _NO_WORDS:
            return False
        return None
    return None


def _line_verdicts(line: str, facts: _Facts) -> tuple[list[tuple[str, bool]], list[bool]]:
    marks = [(m.start(), m.group(0) in _POSITIVE_MARKS) for m in _MARK_RE.finditer(line)]
    if not marks and len(line) > _YES_NO_MAX_CHARS:
        return [], []
    lowered = _lower(line)
    subjects = facts.subjects(line, lowered)
    if marks:
        return _assign_marks(marks, subjects, len(line))
    if len({s[2] for s in subjects}) > 1:
        return [], []
    polarity = _yes_no(lowered, subjects)
    if polarity is None:
        return [], []
    if subjects:
        return [(subjects[0][2], polarity)], []
    return [], [polarity]


def _answer_verdicts(answer: str, think: str, facts: _Facts) -> list[tuple[str, bool]]:
    found: list[tuple[str, bool]] = []
    loose: list[bool] = []
    for line in answer.splitlines():
        if line.strip():
            verdicts, subjectless = _line_verdicts(line, facts)
            found.extend(verdicts)
            loose.extend(subjectless)
    if not found and len(loose) == 1 and think:
        subject = facts.first_subject(think)
        if subject is not None:
            found.append((subject, loose[0]))
    return found


# ----------------------------------------------------------------------------------------
# Analysis of one output
# ----------------------------------------------------------------------------------------

_CLAUSE_RE = re.compile(r"[.!?](?=\s|$)|[;\n]")


def _grounded_boxes(text: str, size: Any) -> list[tuple[str, list[float]]]:
    """``(label, box)`` for every box attached to a disease mention in ``text``."""
    if not text or _DIGIT_RE.search(text) is None:
        return []
    lowered = _lower(text)
    mentions = [m for m in _mentions(lowered) if m[2] != NO_FINDING and not _negated(lowered, m[0])]
    if not mentions:
        return []
    breaks = [m.end() for m in _CLAUSE_RE.finditer(text)]
    found: list[tuple[str, list[float]]] = []
    i = 0
    while i < len(mentions):
        k = bisect.bisect_right(breaks, mentions[i][0])
        clause_start = breaks[k - 1] if k else 0
        clause_end = breaks[k] if k < len(breaks) else len(text)
        j = i
        while j < len(mentions) and mentions[j][0] < clause_end:
            j += 1
        group = mentions[i:j]
        segments = [(clause_start, group[0][0], group[0][2])]  # boxes before the first mention
        for g, (_, end, label) in enumerate(group):
            segments.append((end, group[g + 1][0] if g + 1 < len(group) else clause_end, label))
        for a, b, label in segments:
            if b > a and _DIGIT_RE.search(text, a, b) is not None:
                found.extend((label, box) for box in parse_boxes(text[a:b], size))
        i = j
    return found


class OutputAnalysis:
    """Everything the reasoning metrics read from one model output (computed lazily, once)."""

    def __init__(self, raw: str, sample: Any = None) -> None:
        self.raw = raw if isinstance(raw, str) else ""
        self.sample = sample
        self.facts = _Facts(sample)

    @cached_property
    def reasoning(self) -> Reasoning:
        return split_reasoning(self.raw)

    @cached_property
    def steps(self) -> list[tuple[str, str]]:
        """The ``(think, answer)`` steps; a plain text without tags is one answer-only step."""
        if self.reasoning.steps:
            return list(self.reasoning.steps)
        answer = self.reasoning.final_answer
        return [("", answer)] if answer else []

    @cached_property
    def final_index(self) -> int | None:
        """Index of the step holding the final answer (the last non-empty answer)."""
        for i in range(len(self.steps) - 1, -1, -1):
            if self.steps[i][1].strip():
                return i
        return None

    @cached_property
    def verdicts(self) -> list[Verdict]:
        found = []
        for i, (think, answer) in enumerate(self.steps):
            if answer:
                for subject, positive in _answer_verdicts(answer, think, self.facts):
                    found.append(Verdict(subject, positive, i, i != self.final_index))
        return found

    @cached_property
    def intermediate_verdicts(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.intermediate]

    @cached_property
    def think_tokens(self) -> tuple[int, int]:
        """``(think tokens, all tokens)``: white-space tokens, tags not counted."""
        total = len(_TAG_RE.sub(" ", self.raw).split())
        return len(self.reasoning.think_text.split()), total

    # findings ------------------------------------------------------------------------

    @cached_property
    def _choice_observations(self) -> dict[str, set[int]]:
        """Observations (positive or uncertain) that each option's text names, by letter."""
        return {
            letter: {i for i, v in _label_text(choice).items() if v in (1.0, -1.0)}
            for letter, choice in zip(self.facts.letters, self.facts.choices, strict=False)
        }

    def _option_observations(self, letter: str) -> set[int]:
        return self._choice_observations.get(letter, set())

    @cached_property
    def observation_values(self) -> dict[str, float]:
        """Aggregated CheXpert value (1 / -1 / 0) of each verifiable observation the reasoning states."""
        values: dict[int, float] = {}  # from labeled text
        judged: dict[int, float] = {}  # from verdicts on open candidates
        by_step: dict[int, list[Verdict]] = {}
        for v in self.verdicts:
            by_step.setdefault(v.step, []).append(v)
        structured = bool(self.intermediate_verdicts)
        first_verdict = min(by_step) if by_step else len(self.steps)
        for i, (think, answer) in enumerate(self.steps):
            step_values = _label_think(think)
            verdicts = by_step.get(i, [])
            for v in verdicts:
                if self.facts.is_choice:
                    if not v.positive:  # a rejected option's findings were discussed, not asserted
                        for o in self._option_observations(v.subject):
                            if step_values.get(o) == 1.0:
                                step_values[o] = -1.0
                    continue
                for o in _label_observations(v.subject):
                    step_values.pop(o, None)  # the step's conclusion on its candidate replaces its think
                    _merge(judged, o, 1.0 if v.positive else 0.0)
            for o, value in step_values.items():
                _merge(values, o, value)
            if not answer or verdicts or self.facts.is_choice:
                continue
            answer_values = _label_text(answer)
            differential = structured and i < first_verdict and i != self.final_index
            for o, value in answer_values.items():
                _merge(values, o, -1.0 if differential and value == 1.0 else value)
        for o, value in judged.items():  # verdicts outrank hedged and negative mentions elsewhere
            values[o] = 1.0 if values.get(o) == 1.0 else value
        return {OBSERVATIONS[i]: values[i] for i in sorted(values)}

    @cached_property
    def gold_observations(self) -> set[str] | None:
        """Observations the ground truth states directly (None without ``metadata["findings"]``)."""
        if self.facts.findings is None:
            return None
        gold: set[str] = set()
        for finding in self.facts.findings:
            name = finding.get("label")
            if isinstance(name, str):
                gold.update(GOLD_TO_CHEXPERT.get(_canonical(name) or _key(name), ()))
        return gold

    @cached_property
    def grounded_boxes(self) -> list[tuple[str, list[float]]]:
        """``(label, normalised box)`` of every box attached to a finding in the reasoning."""
        found = []
        for think, answer in self.steps:
            for text in (think, answer):
                found.extend(_grounded_boxes(text, self.facts.image_size))
        return found


def _label_observations(label: str) -> set[int]:
    return {OBSERVATIONS.index(o) for o in GOLD_TO_CHEXPERT.get(label, ())}


_CACHE: dict[tuple[str, int], tuple[Any, OutputAnalysis]] = {}
_CACHE_SIZE = 8


def analyse(output: Any, sample: Any = None) -> OutputAnalysis:
    """The (cached) analysis of an :class:`Output`, or of a raw string with an optional Sample.

    Metrics of one sample share it: the cache is keyed by the raw text and the Sample object
    (identity), holding the last few outputs only.
    """
    if isinstance(output, Output):
        raw, sample = output.raw, output.sample
    else:
        raw = output
    raw = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    key = (raw, id(sample))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is sample:
        return hit[1]
    analysis = OutputAnalysis(raw, sample)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (sample, analysis)
    return analysis


def clear_analysis_cache() -> None:
    """Forget cached analyses (for timing)."""
    _CACHE.clear()


# ----------------------------------------------------------------------------------------
# Per-sample statistics
# ----------------------------------------------------------------------------------------


def ratio_reduce(matrix: np.ndarray) -> float:
    """Micro ratio ``sum(column 0) / sum(column 1)``; 0.0 when the denominator is 0."""
    matrix = np.asarray(matrix, dtype=float)
    if len(matrix) == 0:
        return 0.0
    denominator = float(matrix[:, 1].sum())
    return float(matrix[:, 0].sum() / denominator) if denominator else 0.0


def _ratio_value(row: np.ndarray) -> float | None:
    return float(row[0] / row[1]) if row[1] else None


def _format_valid(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    return [float(analyse(prediction).reasoning.well_formed)]


def _reasoning_steps(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    return [float(sum(1 for think, _ in analyse(prediction).reasoning.steps if think))]


def _think_token_ratio(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    think, total = analyse(prediction).think_tokens
    return [min(1.0, think / total) if total else 0.0]


def _verdict_accuracy(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    a = analyse(prediction)
    correct = total = 0
    for v in a.intermediate_verdicts:
        truth = a.facts.truth(v.subject)
        if truth is not None:
            total += 1
            correct += truth == v.positive
    return [float(correct), float(total)]


def _self_consistency(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    a = analyse(prediction)
    verdicts = a.intermediate_verdicts
    if not verdicts or not final_answer(a.raw):
        return [0.0, 0.0]
    facts = a.facts
    if facts.is_choice:
        letter = parse_choice(a.raw, facts.choices)
        decided = {letter} if letter else set()
    elif facts.asked is not None:  # a yes/no question: only verdicts on the asked finding matter
        verdicts = [v for v in verdicts if v.subject == facts.asked]
        answer = parse_yes_no(a.raw)
        if not verdicts or answer is None:
            return [0.0, 0.0]
        decided = {facts.asked} if answer == "yes" else set()
    else:
        decided = set(parse_ranked_labels(a.raw, VOCABULARY))
    consistent = all((v.subject in decided) == v.positive for v in verdicts)
    return [float(consistent), 1.0]


def _hallucination(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    a = analyse(prediction)
    gold = a.gold_observations
    if gold is None:
        return [0.0, 0.0]
    asserted = {o for o, value in a.observation_values.items() if value == 1.0}
    return [float(len(asserted - _closure(gold))), float(len(asserted))]


def _omission(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    a = analyse(prediction)
    gold = a.gold_observations
    if gold is None:
        return [0.0, 0.0]
    mentioned = _closure({o for o, value in a.observation_values.items() if value in (1.0, -1.0)})
    return [float(len(gold - mentioned)), float(len(gold))]


def _box_ious(prediction: Any) -> list[float] | None:
    a = analyse(prediction)
    if a.facts.findings is None:
        return None
    truth: dict[str, list[list[float]]] = {}
    for finding in a.facts.findings:
        name = finding.get("label")
        try:
            box = [float(v) for v in finding.get("box")]
        except (TypeError, ValueError):
            continue
        if isinstance(name, str) and len(box) == 4:
            truth.setdefault(_canonical(name) or _key(name), []).append(box)
    return [
        max((box_iou(box, t) for t in truth.get(label, ())), default=0.0) for label, box in a.grounded_boxes
    ]


def _grounding_iou(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    ious = _box_ious(prediction)
    return [float(sum(ious)), float(len(ious))] if ious else [0.0, 0.0]


def _grounding_acc50(prediction: Any, target: Any, ctx: MetricContext) -> list[float]:
    ious = _box_ious(prediction)
    return [float(sum(iou >= 0.5 for iou in ious)), float(len(ious))] if ious else [0.0, 0.0]


# ----------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------

_CITATION = (
    "CX-Mind (Li et al., 2025, interleaved think/answer verdict reasoning for chest X-ray) and "
    "DeepMedix-R1 (grounded chest X-ray reasoning); CheXpert observations (Irvin et al., 2019)"
)
_LABELER = "rule-based CheXpert-14 labeler (cxbench)"
_MICRO = (
    " Per sample [numerator, denominator]; the score is sum(numerators) / sum(denominators) over "
    "the corpus (0.0 when nothing is counted); samples with nothing to count contribute nothing."
)


def _metric(name: str, description: str, stats: Any, **kwargs: Any) -> Metric:
    options: dict[str, Any] = {"reduce": ratio_reduce, "sample_value": _ratio_value, "averaging": "micro"}
    options.update(kwargs)
    return Metric(
        name=name, description=description, stats=stats, inputs="output", citation=_CITATION, **options
    )


FORMAT_VALID = _metric(
    "format_valid",
    "Fraction of outputs that are one or more <think>...</think><answer>...</answer> pairs and nothing "
    "else (white space aside): anything outside the pairs, a missing, unclosed, nested or repeated tag "
    "makes the output invalid.",
    _format_valid,
    reduce=mean_reduce,
    sample_value=first_column,
    averaging="mean",
)
REASONING_STEPS = _metric(
    "reasoning_steps",
    "Descriptive: mean number of reasoning steps per output, a step being a (think, answer) pair of the "
    "split output with a non-empty think (answers without thinking, empty <think></think> pairs and "
    "plain text count 0). More is not better; direction 'higher' is nominal.",
    _reasoning_steps,
    reduce=mean_reduce,
    sample_value=first_column,
    averaging="mean",
    range=(0.0, float("inf")),
)
THINK_TOKEN_RATIO = _metric(
    "think_token_ratio",
    "Descriptive: mean over outputs of think tokens / all tokens (white-space tokens; think/answer tags "
    "are not tokens; 0 for an empty output). Direction 'higher' is nominal.",
    _think_token_ratio,
    reduce=mean_reduce,
    sample_value=first_column,
    averaging="mean",
)
VERDICT_ACCURACY = _metric(
    "verdict_accuracy",
    "Accuracy of the ✅/❌ (✓ ✔ ☑ / ✗ ✘ ✖ ❎) and short yes/no verdicts of intermediate answers on an "
    "option or candidate: for multiple choice an option marked ✅ is right iff it is the gold option "
    "(target), ❌ iff it is not; for open diagnosis a candidate marked ✅ is right iff it is in the "
    "ground truth (metadata['findings'] labels, else a label target), ❌ iff it is not." + _MICRO,
    _verdict_accuracy,
)
SELF_CONSISTENCY = _metric(
    "self_consistency",
    "Fraction of outputs whose intermediate verdicts agree with the final answer: no option / candidate "
    "marked ❌ is in the final answer and every one marked ✅ is (for yes/no questions, only verdicts on "
    "the asked finding against the yes/no answer). Only outputs with intermediate verdicts and a final "
    "answer count." + _MICRO,
    _self_consistency,
)
HALLUCINATION_RATE = _metric(
    "hallucination_rate",
    "Of the CheXpert observations asserted positive in the reasoning (think texts + answers, rule-based "
    "CheXpert-14 labeler; deliberation and ❌ verdicts are not assertions), the fraction the ground truth "
    "(metadata['findings'], NIH-14 labels mapped to CheXpert with hierarchy parents implied) says is "
    "absent. Scored over the 11 observations NIH-14 can verify; samples without metadata['findings'] "
    "are skipped." + _MICRO,
    _hallucination,
    direction="lower",
    model=_LABELER,
)
OMISSION_RATE = _metric(
    "omission_rate",
    "Of the CheXpert observations the ground truth states (metadata['findings'] mapped to CheXpert), the "
    "fraction the reasoning never mentions as positive or uncertain (a mention of a child observation "
    "covers its parents). Samples without metadata['findings'] are skipped." + _MICRO,
    _omission,
    direction="lower",
    model=_LABELER,
)
GROUNDING_IOU = _metric(
    "grounding_iou",
    "Mean IoU of the boxes written in the reasoning against the ground-truth box of the finding each is "
    "attached to (the nearest preceding non-negated disease mention in its clause, else the next one); "
    "0 when that finding is absent from metadata['findings']. Boxes without a mention in their clause "
    "are not counted." + _MICRO,
    _grounding_iou,
)
GROUNDING_ACC50 = _metric(
    "grounding_acc50",
    "Fraction of the attached boxes written in the reasoning (as for grounding_iou) whose IoU with the "
    "ground-truth box of their finding is >= 0.5." + _MICRO,
    _grounding_acc50,
)

REASONING_METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        FORMAT_VALID,
        REASONING_STEPS,
        THINK_TOKEN_RATIO,
        VERDICT_ACCURACY,
        SELF_CONSISTENCY,
        HALLUCINATION_RATE,
        OMISSION_RATE,
        GROUNDING_IOU,
        GROUNDING_ACC50,
    )
}
