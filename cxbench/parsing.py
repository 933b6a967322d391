"""Extract answers from free-form model output.

Every public function accepts any ``str`` (empty, megabytes long, unbalanced tags, unicode
junk) and never raises: on failure it returns ``None`` (or ``""`` / ``[]`` where documented).
All scanning is linear in the input length: tags are located with bounded patterns and
processed in a single pass, and no regular expression here has nested unbounded quantifiers.

Recognised forms
----------------
Reasoning (:func:`split_reasoning`, :func:`final_answer`)
    * CX-Mind style interleaved ``<think>...</think><answer>...</answer>`` pairs (the last
      answer is final), tags case-insensitive, up to 3 blanks allowed inside a tag
      (``</ think >``);
    * a single ``<think>`` block followed by free text (DeepSeek-R1 / DeepMedix-R1 style): the
      text after ``</think>`` is the answer; a stray ``</think>`` without an opening tag
      (prompt pre-filled with ``<think>``) closes everything before it as thinking;
    * answers without thinking, an unclosed ``<think>`` (everything after it is thinking, no
      answer), an unclosed ``<answer>`` (runs to the end), a stray ``</answer>`` (the text
      before it is the answer), ``<think>`` nested inside ``<answer>`` (removed from the
      answer, counted as thinking);
    * plain text without tags (the whole text is the answer);
    * a line starting with ``Final answer:`` / ``Answer:`` (markdown bold allowed) inside the
      final answer: the text after the last such marker.
Closed questions
    * yes/no: the first word(s) of the final answer (:func:`parse_yes_no`);
    * multiple choice: ``A``, ``(A)``, ``A)``, ``A.``, ``A: text``, ``Option A``,
      ``The answer is B``, the exact option text, and CX-Mind verdict lists such as
      ``A) ❌ B) ✅`` where the option marked ✅/✔/✓ wins and ❌/✗/✘ options are excluded
      (:func:`parse_choice`).
Labels
    * disease synonyms with word boundaries, first mention (:func:`parse_label`) or all
      mentions in order (:func:`parse_ranked_labels`), skipping negated mentions
      ("no pneumothorax", "without effusion", "negative for", "free of", "not").
Temporal change
    * improved / stable / worsened cue words, negations such as "no improvement" are
      neutral, first decisive cue wins (:func:`parse_change`).
Boxes (:func:`parse_box`, :func:`parse_boxes`)
    * ``[x1, y1, x2, y2]`` / ``(x1, y1, x2, y2)``, ``[(x1, y1), (x2, y2)]``,
      ``[[x1, y1], [x2, y2]]``, ``box: x1, y1, x2, y2`` (also ``bbox``/``coordinates``),
      JSON ``{"bbox_2d": [x1, y1, x2, y2]}``, ``<box>(x1,y1),(x2,y2)</box>`` and Qwen2-VL
      ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>``.
"""

from __future__ import annotations

import bisect
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Reasoning",
    "answer_tokens",
    "final_answer",
    "normalize_text",
    "parse_box",
    "parse_boxes",
    "parse_change",
    "parse_choice",
    "parse_label",
    "parse_ranked_labels",
    "parse_yes_no",
    "split_reasoning",
]

# ----------------------------------------------------------------------------------------
# Reasoning / answer splitting
# ----------------------------------------------------------------------------------------

#: ``<think>``, ``</answer>``, ``< /THINK >`` ... (bounded blanks: constant work per ``<``).
_TAG_RE = re.compile(r"<[ \t]{0,3}(/?)[ \t]{0,3}(think|answer)[ \t]{0,3}>", re.IGNORECASE)

#: A line starting with ``Final answer:`` / ``Answer:`` (optionally markdown-decorated).
_MARKER_RE = re.compile(
    r"^[ \t>*#_-]{0,10}(?:final[ \t]{1,3})?answer[ \t]{0,3}[*_]{0,3}[ \t]{0,3}:",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass
class Reasoning:
    """A model output split into reasoning steps and a final answer.

    ``steps`` are ``(think, answer)`` pairs in order (either part may be ``""``; a trailing
    think without an answer gives ``(think, "")``). ``final_answer`` is the last answer, or
    ``None`` when the output has thinking but no answer. ``well_formed`` is True only when
    the whole output (ignoring surrounding white space and white space between tags) is one
    or more ``<think>...</think><answer>...</answer>`` pairs and nothing else.
    """

    steps: list[tuple[str, str]] = field(default_factory=list)
    final_answer: str | None = None
    well_formed: bool = False
    think_text: str = ""


def _tags(text: str) -> list[tuple[str, bool, int, int]]:
    """``(name, is_close, start, end)`` for every think/answer tag, in order."""
    return [(m.group(2).lower(), bool(m.group(1)), m.start(), m.end()) for m in _TAG_RE.finditer(text)]


def _is_well_formed(text: str, tags: list[tuple[str, bool, int, int]]) -> bool:
    if not tags or len(tags) % 4:
        return False
    expected = (("think", False), ("think", True), ("answer", False), ("answer", True))
    previous_end = 0
    for i, (name, is_close, start, end) in enumerate(tags):
        if (name, is_close) != expected[i % 4]:
            return False
        # gaps outside pairs (before <think>, between </think> and <answer>) must be blank
        if i % 4 in (0, 2) and text[previous_end:start].strip():
            return False
        previous_end = end
    return not text[previous_end:].strip()


def split_reasoning(text: str) -> Reasoning:
    """Split ``text`` into ``(think, answer)`` steps; the last answer is final.

    See the module docstring for the recognised (and tolerated malformed) layouts.
    """
    try:
        return _split_reasoning(text)
    except Exception:  # pragma: no cover - defensive: never raise on model output
        return Reasoning()


def _split_reasoning(text: str, tags: list[tuple[str, bool, int, int]] | None = None) -> Reasoning:
    if not isinstance(text, str) or not text:
        return Reasoning()
    if tags is None:
        tags = _tags(text)
    if not tags:
        stripped = text.strip()
        return Reasoning(steps=[], final_answer=stripped or None, well_formed=False, think_text="")

    steps: list[tuple[str, str]] = []
    thinks: list[str] = []  # every think content, for think_text
    pending: list[str] = []  # thinks waiting for their answer
    final: str | None = None
    state = "out"  # "out" | "think" | "answer"
    content_start = 0  # start of the current think/answer content, or of the outside gap
    answer_parts: list[str] = []  # answer content pieces (thinks nested in an answer are cut out)
    nested_think_start = -1  # >= 0 while inside a <think> nested in an <answer>
    after_think = False  # the outside gap follows a closed </think>

    def emit_answer(answer: str) -> None:
        nonlocal final, pending
        steps.append(("\n".join(pending), answer))
        pending = []
        final = answer

    def emit_think(content: str) -> None:
        content = content.strip()
        thinks.append(content)
        pending.append(content)

    for name, is_close, start, end in tags:
        if state == "out":
            gap = text[content_start:start].strip()
            if name == "think" and not is_close:
                if after_think and gap and pending:
                    emit_answer(gap)  # free text after </think> answers that think
                state, content_start, after_think = "think", end, False
            elif name == "answer" and not is_close:
                state, content_start, after_think, answer_parts = "answer", end, False, []
            elif name == "think":  # stray </think>: everything since the last tag was thinking
                if gap:
                    if after_think and pending:
                        emit_answer(gap)
                    else:
                        emit_think(gap)
                content_start, after_think = end, True
            else:  # stray </answer>: the text since the last tag is the answer
                if gap:
                    emit_answer(gap)
                content_start, after_think = end, False
        elif state == "think":
            if name == "think" and is_close:
                emit_think(text[content_start:start])
                state, content_start, after_think = "out", end, True
            elif name == "answer" and not is_close:  # missing </think>: close it implicitly
                emit_think(text[content_start:start])
                state, content_start, after_think, answer_parts = "answer", end, False, []
            # a repeated <think> or a stray </answer> inside thinking is just thinking text
        else:  # inside an answer
            if nested_think_start >= 0:
                if name == "think" and is_close:
                    emit_think(text[nested_think_start:start])
                    nested_think_start, content_start = -1, end
                elif name == "answer":  # the nested think was never closed
                    emit_think(text[nested_think_start:start])
                    nested_think_start = -1
                    if is_close:
                        emit_answer("".join(answer_parts).strip())
                        state, content_start = "out", end
                    else:
                        emit_answer("".join(answer_parts).strip())
                        content_start, answer_parts = end, []
                continue
            if name == "think" and not is_close:
                answer_parts.append(text[content_start:start])
                nested_think_start = end
            elif name == "answer":
                answer_parts.append(text[content_start:start])
                emit_answer("".join(answer_parts).strip())
                answer_parts = []
                if is_close:
                    state, content_start = "out", end
                else:  # missing </answer> before a new <answer>
                    content_start = end
            else:  # stray </think> inside an answer: drop the tag
                answer_parts.append(text[content_start:start])
                content_start = end

    # end of text
    if state == "think":  # unclosed <think>: the rest is thinking, no answer
        emit_think(text[content_start:])
    elif state == "answer":  # unclosed <answer>: runs to the end
        if nested_think_start >= 0:
            emit_think(text[nested_think_start:])
        else:
            answer_parts.append(text[content_start:])
        emit_answer("".join(answer_parts).strip())
    else:
        gap = text[content_start:].strip()
        if after_think and gap and pending:
            emit_answer(gap)
    if pending:
        steps.append(("\n".join(pending), ""))

    return Reasoning(
        steps=steps,
        final_answer=final,
        well_formed=_is_well_formed(text, tags),
        think_text="\n".join(thinks),
    )


def _strip_thinks(text: str, tags: list[tuple[str, bool, int, int]]) -> str:
    """``text`` with every think block (and all think/answer tags) removed."""
    pieces: list[str] = []
    position = 0
    depth = 0
    for name, is_close, start, end in tags:
        if depth == 0:
            pieces.append(text[position:start])
        if name == "think":
            if is_close and depth == 0:
                pieces = []  # stray </think>: everything before it was thinking
            depth = 0 if is_close else 1
        position = end
    if depth == 0:
        pieces.append(text[position:])
    return "".join(pieces)


def _after_marker(answer: str) -> str:
    last = None
    for last in _MARKER_RE.finditer(answer):  # noqa: B007 - only the last marker matters
        pass
    if last is None:
        return answer.strip()
    return answer[last.end() :].strip().strip("*_").strip()


def final_answer(text: str) -> str:
    """The final answer text, stripped; ``""`` when there is none.

    The last ``<answer>`` content (or the free text after ``</think>``) if any, else the text
    with think blocks removed; then, if a line starts with ``final answer:`` / ``answer:``
    (case-insensitive), only the text after the last such marker.
    """
    try:
        if not isinstance(text, str) or not text:
            return ""
        tags = _tags(text)
        answer = _split_reasoning(text, tags).final_answer
        if answer is None:
            answer = _strip_thinks(text, tags)
        return _after_marker(answer)
    except Exception:  # pragma: no cover
        return ""


# ----------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------

_PUNCT_RE = re.compile(r"[^\w\s]|_")
_ARTICLES_RE = re.compile(r"\b(?:a|an|the)\b")


def normalize_text(text: str) -> str:
    """SQuAD-style normalisation: NFKC, lower case, punctuation and articles removed, white
    space collapsed. Punctuation (any character that is neither a word character nor white
    space) is deleted without a space, as in SQuAD (``x-ray`` -> ``xray``)."""
    try:
        if not isinstance(text, str) or not text:
            return ""
        text = unicodedata.normalize("NFKC", text).lower()
        text = _PUNCT_RE.sub("", text)
        text = _ARTICLES_RE.sub(" ", text)
        return " ".join(text.split())
    except Exception:  # pragma: no cover
        return ""


def answer_tokens(text: str) -> list[str]:
    """``normalize_text(text).split()``."""
    return normalize_text(text).split()


# ----------------------------------------------------------------------------------------
# Yes / no
# ----------------------------------------------------------------------------------------

_YES_WORDS = frozenset({"yes", "yeah", "yep", "yup", "true", "present", "positive", "correct", "affirmative"})
_NO_WORDS = frozenset({"no", "nope", "not", "false", "absent", "negative", "incorrect", "none"})
_UNSURE_AFTER_NOT = frozenset(
    {"sure", "certain", "clear", "determinable", "known", "possible", "able", "excluded", "ruled"}
)
_FILLER_WORDS = frozenset(
    {
        "answer", "final", "the", "is", "my", "i", "would", "say", "so", "therefore", "thus", "hence",
        "well", "okay", "ok", "it", "this", "that", "finally", "in", "conclusion", "summary", "short",
        "overall", "brief", "definitely", "clearly", "certainly", "likely", "most", "probably",
        "boxed", "text",
    }
)  # fmt: skip
_BE_WORDS = frozenset({"is", "are", "was", "were"})
_WORD_RE = re.compile(r"[a-z]+|/")


def _polarity(word: str) -> str | None:
    if word in _YES_WORDS:
        return "yes"
    if word in _NO_WORDS:
        return "no"
    return None


def parse_yes_no(text: str) -> str | None:
    """``"yes"`` / ``"no"`` decided from the first word(s) of the final answer, else None.

    Leading filler ("The answer is", "Final answer:", "I would say", ``\\boxed{``) is skipped; yes words:
    yes/yeah/yep/true/present/positive/correct; no words: no/not/false/absent/negative/none.
    "There is/are no ..." -> ``"no"``. "Yes/No", "yes or no", "not sure" -> None.
    """
    try:
        answer = final_answer(text)
        if not answer:
            return None
        head = unicodedata.normalize("NFKC", answer[:2000]).lower()
        words = _WORD_RE.findall(head)[:40]
        i = 0
        # a lone option letter ("A) Yes") or filler before the decisive word
        if len(words) > 1 and len(words[0]) == 1 and words[0] not in ("i", "/"):
            i = 1
        skipped = 0
        while i < len(words) and skipped < 8:
            if words[i] in _FILLER_WORDS:
                i += 1
            elif words[i] in ("correct", "right", "best") and i + 1 < len(words) and words[i + 1] == "answer":
                i += 2  # "the correct answer is no"
            else:
                break
            skipped += 1
        if i >= len(words):
            return None
        if words[i] == "there" and i + 2 < len(words) and words[i + 1] in _BE_WORDS:
            return "no" if words[i + 2] in ("no", "not") else None
        polarity = _polarity(words[i])
        if polarity is None:
            return None
        if words[i] == "not" and i + 1 < len(words) and words[i + 1] in _UNSURE_AFTER_NOT:
            return None
        if i + 2 < len(words) and words[i + 1] in ("or", "/"):
            other = _polarity(words[i + 2])
            if other is not None and other != polarity:
                return None
        return polarity
    except Exception:  # pragma: no cover
        return None


# ----------------------------------------------------------------------------------------
# Multiple choice
# ----------------------------------------------------------------------------------------

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CHOICE_SCAN_LIMIT = 10_000
_POSITIVE_MARKS = "✅✔✓☑"
_NEGATIVE_MARKS = "❌✗✘✖❎"
_NOT_WORDCHAR = r"(?<![A-Za-z0-9'\-])"

#: an option marker that starts a verdict segment: ``A)``, ``(A)``, ``A.``, ``A:``, ``Option A``
_OPTION_MARKER_RE = re.compile(
    _NOT_WORDCHAR
    + r"(?:\(([A-Z])\)|([A-Z])[).:](?![A-Za-z0-9])|(?:[Oo]ption|[Cc]hoice)[ \t]{1,3}\(?([A-Za-z])\b\)?)"
)
#: the whole answer is just a letter: ``B``, ``(b)``, ``**C.**``
_ONLY_LETTER_RE = re.compile(r"^[\W_]{0,10}([A-Za-z])[\W_]{0,10}$")
#: the answer starts with a letter marker: ``B) pleural effusion``, ``C: ...``, ``Option D``
_LEADING_LETTER_RE = re.compile(
    r"^[\s*_#>\"'`-]{0,10}(?:(?:option|choice)[ \t]{0,3})?\(?([A-Z])"
    r"(?:\)|[.:](?![A-Za-z0-9])|[ \t]{1,3}[-\u2013\u2014])",
    re.IGNORECASE,
)
#: ``the answer is B``, ``answer: (C)``, ``option d``, ``choice B``
_LETTER_AFTER_KEYWORD = (
    r"(?![A-Za-z])(?:[ \t]{1,3}(?:is|would[ \t]be))?(?:[ \t]{0,3}[:=\-])?[ \t*_]{0,5}\(?([A-Za-z])\b(?![\-'])"
    r"(?:[ \t)*_]{1,5}([A-Za-z]+))?"
)
_STRONG_LETTER_RE = re.compile(
    r"\b(?:answer|select|choose|pick|go[ \t]with)" + _LETTER_AFTER_KEYWORD, re.IGNORECASE
)
#: ``option B``, ``choice (c)``
_WEAK_LETTER_RE = re.compile(r"\b(?:option|choice)" + _LETTER_AFTER_KEYWORD, re.IGNORECASE)
#: words that may follow an option letter "A" / "I" without making it an article / pronoun
_LETTER_FOLLOWERS = frozenset(
    {"because", "since", "as", "which", "and", "or", "is", "was", "given", "due", "seems", "appears", "fits"}
)
#: any stand-alone capital letter used as an option reference
_LETTER_MENTION_RE = re.compile(_NOT_WORDCHAR + r"\(?([A-Z])\)?(?![A-Za-z0-9'\-])(?:[ \t]{1,3}([a-z]+))?")
_ANSWER_PREFIX_RE = re.compile(
    r"^(?:(?:the|my)[ \t]{1,3})?(?:(?:correct|final|best)[ \t]{1,3})?(?:answer|option|choice)"
    r"[ \t]{0,3}(?:is|:)[ \t]{0,3}",
    re.IGNORECASE,
)


def _is_letter_reference(m: re.Match[str]) -> bool:
    """False for "answer is a pleural effusion" / "choose I think": an article or pronoun."""
    letter, follower = m.group(1), m.group(2)
    if letter not in "aAiI" or not follower:
        return True
    return letter.isupper() and follower.lower() in _LETTER_FOLLOWERS


def _choice_key(choice: str, letter: str) -> str:
    """Normalised option text with a leading ``A)`` / ``A.`` of its own letter removed."""
    text = choice.strip()
    match = re.match(r"^\(?([A-Za-z])[).:]\s+", text)
    if match and match.group(1).upper() == letter:
        text = text[match.end() :]
    return normalize_text(text)


def _mark_verdicts(answer: str, keys: list[tuple[str, str]]) -> tuple[set[str], set[str]]:
    """Letters marked positive / negative with ✅ / ❌ style marks in ``answer``."""
    positive: set[str] = set()
    negative: set[str] = set()
    if not any(ch in answer for ch in _POSITIVE_MARKS + _NEGATIVE_MARKS):
        return positive, negative
    for line in answer.splitlines():
        if not any(ch in line for ch in _POSITIVE_MARKS + _NEGATIVE_MARKS):
            continue
        markers = list(_OPTION_MARKER_RE.finditer(line))
        segments: list[tuple[str, str]] = []
        if markers:
            for j, m in enumerate(markers):
                letter = (m.group(1) or m.group(2) or m.group(3) or "").upper()
                seg_end = markers[j + 1].start() if j + 1 < len(markers) else len(line)
                segment = line[m.end() : seg_end]
                if j == 0 and len(markers) == 1:
                    segment = line[: m.start()] + segment  # "✅ B) effusion"
                segments.append((letter, segment))
        else:  # "pleural effusion ✅": find the option text on the line
            norm_line = " " + normalize_text(line) + " "
            found = [(len(key), letter) for letter, key in keys if key and f" {key} " in norm_line]
            if found:
                segments.append((max(found)[1], line))
        for letter, segment in segments:
            has_pos = any(ch in segment for ch in _POSITIVE_MARKS)
            has_neg = any(ch in segment for ch in _NEGATIVE_MARKS)
            if has_pos and not has_neg:
                positive.add(letter)
            elif has_neg and not has_pos:
                negative.add(letter)
    return positive, negative


def parse_choice(text: str, choices: Sequence[str]) -> str | None:
    """The option letter (``"A"``, ``"B"``, ...) chosen in the final answer, else None.

    In order: a unique ✅/✔/✓-marked option (❌/✗/✘-marked options are never returned); the
    whole answer being a letter; a leading letter marker (``B) ...``, ``C: ...``, ``(A)``);
    ``the answer is B`` / ``Option B``; the exact option text (normalised); finally a single
    distinct stand-alone letter. Out-of-range letters and several different letters -> None.
    """
    try:
        if not isinstance(text, str) or not choices:
            return None
        choices = [str(c) for c in list(choices)[: len(_LETTERS)]]
        valid = _LETTERS[: len(choices)]
        answer = final_answer(text)
        if not answer:
            return None
        if len(answer) > 2 * _CHOICE_SCAN_LIMIT:  # a real answer is short: look at both ends only
            answer = answer[:_CHOICE_SCAN_LIMIT] + "\n" + answer[-_CHOICE_SCAN_LIMIT:]
        keys = [(valid[i], _choice_key(c, valid[i])) for i, c in enumerate(choices)]

        positive, negative = _mark_verdicts(answer, keys)
        positive &= set(valid)
        if len(positive) == 1:
            return positive.pop()
        if len(positive) > 1:
            return None

        def accept(letter: str) -> str | None:
            letter = letter.upper()
            return letter if letter in valid and letter not in negative else None

        match = _ONLY_LETTER_RE.match(answer)
        if match:
            return accept(match.group(1))
        match = _LEADING_LETTER_RE.match(answer)
        if match:
            return accept(match.group(1))

        for regex in (_STRONG_LETTER_RE, _WEAK_LETTER_RE):
            explicit = {m.group(1).upper() for m in regex.finditer(answer) if _is_letter_reference(m)}
            if len(explicit) == 1:
                return accept(explicit.pop())
            if len(explicit) > 1:
                return None

        norm = normalize_text(_ANSWER_PREFIX_RE.sub("", answer.strip(), count=1))
        for letter, key in keys:
            if key and norm == key:
                return accept(letter)
        # "B) pleural effusion" where the option text follows a marker is handled above;
        # here a bare option text with a trailing period or bold was normalised away.

        mentions = {m.group(1) for m in _LETTER_MENTION_RE.finditer(answer) if _is_letter_reference(m)}
        mentions -= negative
        if len(mentions) == 1:
            return accept(mentions.pop())
        return None
    except Exception:  # pragma: no cover
        return None


# ----------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
#: negation cues; the left word boundary is checked in code (a leading look-behind would
#: defeat the regex engine's fast scan for the first character)
_NEGATION_RE = re.compile(r"(?:no|not|without|negative[ \t]{1,3}for|free[ \t]{1,3}of)\s")
_CLAUSE_BREAK_RE = re.compile(r"[.;:!?\n]|\b(?:but|however|although|though|whereas|yet|except)\b")
_NEGATION_WINDOW = 120
_SYNONYM_SPLIT_RE = re.compile(r"[\s\-]+")
_VocabMatcher = tuple[re.Pattern[str], dict[str, str]]
_VOCAB_CACHE: dict[tuple[tuple[str, tuple[str, ...]], ...], _VocabMatcher] = {}


def _vocab_matcher(vocabulary: Mapping[str, Sequence[str]]) -> _VocabMatcher | None:
    """A compiled alternation of all synonyms (longest first) and a synonym -> label map."""
    key = tuple(
        (str(label), (syns,) if isinstance(syns, str) else tuple(str(s) for s in syns or ()))
        for label, syns in vocabulary.items()
    )
    cached = _VOCAB_CACHE.get(key)
    if cached is not None:
        return cached
    lookup: dict[str, str] = {}
    for label, synonyms in key:
        for synonym in (label, *synonyms):
            norm = " ".join(synonym.lower().split())
            if norm and norm not in lookup:
                lookup[norm] = label
    if not lookup:
        return None
    alternatives = [
        r"[\s\-]+".join(re.escape(part) for part in syn.split())
        for syn in sorted(lookup, key=lambda s: (-len(s), s))
    ]
    pattern = re.compile("(?:" + "|".join(alternatives) + r")(?![a-z0-9])")
    if len(_VOCAB_CACHE) > 64:
        _VOCAB_CACHE.clear()
    _VOCAB_CACHE[key] = (pattern, lookup)
    return pattern, lookup


def _lower_aligned(text: str) -> str:
    """Lower case with offsets kept aligned to ``text`` (ASCII-only if full lower casing
    would change the length, e.g. for a dotted capital I)."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else text.translate(_ASCII_LOWER)


def _starts_word(text: str, start: int) -> bool:
    return start == 0 or not text[start - 1].isalnum()


class _Negations:
    """Clause breaks and negation cues of a text, for O(log n) "is this mention negated?"."""

    def __init__(self, lowered: str) -> None:
        self.break_ends = [m.end() for m in _CLAUSE_BREAK_RE.finditer(lowered)]
        cues = [m for m in _NEGATION_RE.finditer(lowered) if _starts_word(lowered, m.start())]
        self.cue_starts = [m.start() for m in cues]
        self.cue_ends = [m.end() for m in cues]

    def negated(self, start: int) -> bool:
        """True when a cue ends before ``start`` within the same clause and a bounded window."""
        i = bisect.bisect_right(self.break_ends, start)
        clause_start = self.break_ends[i - 1] if i else 0
        j = bisect.bisect_right(self.cue_ends, start)
        return bool(j) and self.cue_starts[j - 1] >= max(clause_start, start - _NEGATION_WINDOW)


def _label_mentions(answer: str, vocabulary: Mapping[str, Sequence[str]]) -> Iterator[str]:
    """Canonical labels of the non-negated synonym mentions in ``answer``, in order."""
    matcher = _vocab_matcher(vocabulary)
    if matcher is None:
        return
    pattern, lookup = matcher
    lowered = _lower_aligned(answer)
    negations: _Negations | None = None
    labels: dict[str, str | None] = {}
    position = 0
    while True:
        m = pattern.search(lowered, position)
        if m is None:
            return
        if not _starts_word(lowered, m.start()):
            position = m.start() + 1
            continue
        position = max(m.end(), m.start() + 1)
        if negations is None:
            negations = _Negations(lowered)
        if negations.negated(m.start()):
            continue
        matched = m.group(0)
        if matched not in labels:
            label = lookup.get(" ".join(_SYNONYM_SPLIT_RE.split(matched.lower())))
            labels[matched] = label if label is not None else lookup.get(" ".join(matched.lower().split()))
        label = labels[matched]
        if label is not None:
            yield label


def parse_label(text: str, vocabulary: Mapping[str, Sequence[str]]) -> str | None:
    """The canonical label whose synonym occurs first in the final answer, else None.

    Matching is case-insensitive with word boundaries; at one position the longest synonym
    wins. Negated mentions ("no pneumothorax") are skipped, as in :func:`parse_ranked_labels`.
    """
    try:
        if not isinstance(text, str) or not vocabulary:
            return None
        answer = final_answer(text)
        return next(_label_mentions(answer, vocabulary), None) if answer else None
    except Exception:  # pragma: no cover
        return None


def parse_ranked_labels(text: str, vocabulary: Mapping[str, Sequence[str]]) -> list[str]:
    """Canonical labels in order of first (non-negated) mention in the final answer.

    Works for numbered lists, comma-separated lists and prose. A mention preceded in the
    same clause (clauses end at ``. ; : ! ?``, new lines, "but", "however", ...) by "no",
    "without", "not", "negative for" or "free of" is skipped.
    """
    try:
        if not isinstance(text, str) or not vocabulary:
            return []
        answer = final_answer(text)
        if not answer:
            return []
        seen: dict[str, None] = {}
        for label in _label_mentions(answer, vocabulary):
            seen.setdefault(label, None)
            if len(seen) == len(vocabulary):
                break
        return list(seen)
    except Exception:  # pragma: no cover
        return []


# ----------------------------------------------------------------------------------------
# Temporal change
# ----------------------------------------------------------------------------------------

_DEGREE_WORDS = (
    "significant|significantly|substantial|appreciable|interval|major|definite|relevant|much|any"
    "|further|real|meaningful|obvious|apparent"
)
#: up to three degree words: "no significant interval change"
_DEGREE = r"(?:(?:" + _DEGREE_WORDS + r")[ \t]{1,3}){0,3}"
_STABLE_CUES = (
    r"no\s{1,3}" + _DEGREE + r"(?:change|changes|difference)",
    r"not\s{1,3}(?:significantly\s{1,3})?changed",
    r"without\s{1,3}" + _DEGREE + r"change",
    r"unchanged|stable|stability|similar|same|unaltered",
)
_CHANGE_WORDS = (
    r"improv[a-z]{0,6}|better|wors[a-z]{0,6}|increas[a-z]{0,3}|decreas[a-z]{0,3}|progress[a-z]{0,4}"
    r"|resol[a-z]{0,6}|new|larger|smaller|enlarg[a-z]{0,5}|regress[a-z]{0,4}|deteriorat[a-z]{0,4}"
    r"|reduc[a-z]{0,5}"
)
#: negated change words ("no improvement", "not worse", "no evidence of progression", "no new")
_NEUTRAL_CUE = (
    r"(?:not|no|without|never)\s{1,3}(?:evidence\s{1,3}(?:of|for)\s{1,3})?"
    + _DEGREE
    + "(?:"
    + _CHANGE_WORDS
    + ")"
)
_IMPROVED_CUES = (
    r"no\s{1,3}longer|improv(?:ed|ing|ement|es)|better|decreas(?:ed|ing|e)|smaller|resolv(?:ed|ing)"
    r"|resolution|regress(?:ed|ing|ion)|reduc(?:ed|tion)|diminish(?:ed|ing)|lessened|cleared|clearing"
)
_WORSENED_CUES = (
    r"wors(?:e|ened|ening)|increas(?:ed|ing|e)|larger|progress(?:ed|ing|ion|ive)|new"
    r"|enlarg(?:ed|ing|ement)|deteriorat(?:ed|ing|ion)|extended"
)
# Alternatives are tried in this order at each position, so "no change" is stable and
# "no improvement" is neutral before "improvement" could be read as improved. The left word
# boundary is checked in code (a leading look-behind would slow the scan down); the leading
# look-ahead lists the first letters of all cues so that other positions are skipped fast.
_CHANGE_RE = re.compile(
    r"(?=[bcdeilnprsuw])(?:"
    + "(?P<stable>" + "|".join(_STABLE_CUES) + ")"
    + "|(?P<neutral>" + _NEUTRAL_CUE + ")"
    + "|(?P<improved>" + _IMPROVED_CUES + ")"
    + "|(?P<worsened>" + _WORSENED_CUES + ")"
    + r")(?![a-z])"
)  # fmt: skip


def parse_change(text: str) -> str | None:
    """``"improved"`` / ``"stable"`` / ``"worsened"`` from the first decisive cue, else None.

    Improved: improved/improving/better/decreased/smaller/resolved/resolving/regressed/...;
    worsened: worse/worsening/increased/larger/progressed/progression/new/enlarged/...;
    stable: stable/unchanged/similar/same/"no (significant) change". Negated cues such as
    "not improved", "no improvement", "no new" are neutral (skipped).
    """
    try:
        answer = final_answer(text)
        if not answer:
            return None
        lowered = _lower_aligned(answer)
        position = 0
        while True:
            m = _CHANGE_RE.search(lowered, position)
            if m is None:
                return None
            if m.start() > 0 and lowered[m.start() - 1].isalpha():
                position = m.start() + 1
                continue
            position = max(m.end(), m.start() + 1)
            if m.group("stable"):
                return "stable"
            if m.group("improved"):
                return "improved"
            if m.group("worsened"):
                return "worsened"
    except Exception:  # pragma: no cover
        return None


# ----------------------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------------------

_NUM = r"([-+]?(?:\d{1,12}(?:\.\d{1,12})?|\.\d{1,12})(?:[eE][-+]?\d{1,4})?)"
_SEP = r"[ \t]{0,3},[ \t]{0,3}"
_NUMBER_RE = re.compile(_NUM)
_BOX_TAG_RE = re.compile(r"<box>|<\|box_start\|>", re.IGNORECASE)
_BOX_TAG_LIMIT = 300
#: ``[x1, y1, x2, y2]`` / ``(x1, y1, x2, y2)``
_FLAT_BOX_RE = re.compile(r"[\[(][ \t]{0,3}" + _SEP.join([_NUM] * 4) + r"[ \t]{0,3}[\])]")
#: ``[(x1, y1), (x2, y2)]``, ``[[x1, y1], [x2, y2]]``, ``(x1,y1),(x2,y2)``
_PAIR_BOX_RE = re.compile(
    r"[\[(][ \t]{0,3}" + _NUM + _SEP + _NUM + r"[ \t]{0,3}[\])]" + _SEP + r"[\[(][ \t]{0,3}"
    + _NUM + _SEP + _NUM + r"[ \t]{0,3}[\])]"
)  # fmt: skip
#: ``box: x1, y1, x2, y2`` without brackets (matched against ASCII-lower-cased text)
_KEYWORD_BOX_RE = re.compile(
    r"(?:bounding[ \t]box|bbox|box|coordinates)[ \t]{0,3}[:=][ \t]{0,3}" + _SEP.join([_NUM] * 4)
)
_SCALES = ("auto", "pixel", "unit", "norm1000")


def _raw_boxes(text: str) -> list[tuple[list[float], bool]]:
    """``([x1, y1, x2, y2], is_tag_form)`` for every box-like group, in order of position.

    Candidates that start inside an earlier accepted one (e.g. ``[..]`` inside ``<box>``) are
    dropped; tag forms take precedence at the same position.
    """
    candidates: list[tuple[int, int, int, list[float], bool]] = []  # start, priority, end, ...
    lowered = text.translate(_ASCII_LOWER)
    for m in _BOX_TAG_RE.finditer(lowered):
        closer = "</box>" if m.group(0) == "<box>" else "<|box_end|>"
        stop = lowered.find(closer, m.end(), m.end() + _BOX_TAG_LIMIT)
        end = stop + len(closer)
        if stop < 0:  # unclosed tag: up to the next tag or the length limit
            stop = lowered.find("<", m.end(), m.end() + _BOX_TAG_LIMIT)
            if stop < 0:
                stop = min(len(text), m.end() + _BOX_TAG_LIMIT)
            end = stop
        numbers = _NUMBER_RE.findall(text, m.end(), stop)
        if len(numbers) == 4:
            candidates.append((m.start(), 0, end, [float(n) for n in numbers], True))
    for priority, regex in enumerate((_FLAT_BOX_RE, _PAIR_BOX_RE, _KEYWORD_BOX_RE), start=1):
        for m in regex.finditer(lowered if regex is _KEYWORD_BOX_RE else text):
            candidates.append((m.start(), priority, m.end(), [float(g) for g in m.groups()], False))
    candidates.sort(key=lambda c: (c[0], c[1]))
    found: list[tuple[list[float], bool]] = []
    covered_until = -1
    for start, _, end, values, is_tag in candidates:
        if start < covered_until:
            continue
        covered_until = end
        found.append((values, is_tag))
    return found


def _valid_size(image_size: object) -> tuple[float, float] | None:
    try:
        width, height = (float(v) for v in image_size)  # type: ignore[union-attr]
    except Exception:
        return None
    if not (math.isfinite(width) and math.isfinite(height)) or width <= 0 or height <= 0:
        return None
    return width, height


def _normalise_box(
    values: list[float], is_tag: bool, size: tuple[float, float] | None, scale: str
) -> list[float] | None:
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return None
    x1, y1, x2, y2 = values
    if scale == "auto":
        if is_tag:
            scale = "norm1000"
        elif all(v <= 1.0 for v in values):
            scale = "unit"
        else:
            if size is None:
                return None
            width, height = size
            beyond = max(x1, x2) > width or max(y1, y2) > height
            scale = "norm1000" if beyond and all(v <= 1000 for v in values) else "pixel"
    if scale == "pixel":
        if size is None:
            return None
        x1, x2, y1, y2 = x1 / size[0], x2 / size[0], y1 / size[1], y2 / size[1]
    elif scale == "norm1000":
        x1, y1, x2, y2 = x1 / 1000.0, y1 / 1000.0, x2 / 1000.0, y2 / 1000.0
    x1, x2 = sorted((min(max(x1, 0.0), 1.0), min(max(x2, 0.0), 1.0)))
    y1, y2 = sorted((min(max(y1, 0.0), 1.0), min(max(y2, 0.0), 1.0)))
    if not x2 > x1 or not y2 > y1:
        return None
    return [x1, y1, x2, y2]


def _boxes_in(text: str, size: tuple[float, float] | None, scale: str) -> list[list[float]]:
    boxes = []
    for values, is_tag in _raw_boxes(text):
        box = _normalise_box(values, is_tag, size, scale)
        if box is not None:
            boxes.append(box)
    return boxes


def parse_boxes(text: str, image_size: tuple[int, int], scale: str = "auto") -> list[list[float]]:
    """All boxes as ``[x1, y1, x2, y2]`` in [0, 1] image units, in order of appearance.

    Boxes are taken from the final answer if it has any, else from the whole text.
    ``image_size`` is ``(width, height)`` in pixels. ``scale`` is one of:

    * ``"pixel"``: coordinates are pixels (divided by width / height);
    * ``"unit"``: coordinates are already in [0, 1];
    * ``"norm1000"``: coordinates are in [0, 1000] (Qwen-VL convention);
    * ``"auto"`` (default): ``<box>`` and ``<|box_start|>`` forms are 0-1000; for bracket,
      keyword and JSON forms, if all four values are <= 1.0 the box is in unit coordinates;
      otherwise, if some x exceeds the width or some y exceeds the height (so the values
      cannot be pixels) and all values are <= 1000, it is 0-1000; otherwise pixels.

    Coordinates are ordered (x1 <= x2, y1 <= y2) and clipped to [0, 1]; boxes with zero
    area or non-finite values are dropped. An unknown ``scale`` gives ``[]``.
    """
    try:
        if not isinstance(text, str) or not text or scale not in _SCALES:
            return []
        size = _valid_size(image_size)
        answer = final_answer(text)
        boxes = _boxes_in(answer, size, scale) if answer else []
        if not boxes and answer != text.strip():
            boxes = _boxes_in(text, size, scale)
        return boxes
    except Exception:  # pragma: no cover
        return []


def parse_box(text: str, image_size: tuple[int, int], scale: str = "auto") -> list[float] | None:
    """The last box of the final answer (else the last box anywhere in ``text``), or None.

    Same forms and ``scale`` rule as :func:`parse_boxes`.
    """
    boxes = parse_boxes(text, image_size, scale)
    return boxes[-1] if boxes else None
