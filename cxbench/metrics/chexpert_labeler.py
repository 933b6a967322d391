"""A fast rule-based CheXpert-14 labeler for chest X-ray report text.

:func:`label_report` gives, for each of the 14 CheXpert observations (:data:`OBSERVATIONS`),
``1.0`` (positive), ``0.0`` (negative), ``-1.0`` (uncertain) or ``None`` (not mentioned), with the
conventions of the CheXpert labeler (Irvin et al., 2019):

* **Mentions.** Phrases naming an observation ("effusion", "cardiomegaly", "PICC line") are
  found with one regex. Matches do not overlap and the longest phrase wins at a position, so a
  longer phrase hides the shorter ones inside it ("nodular opacity" is a Lung Lesion, not also a
  Lung Opacity; "pericardial effusion" is ignored). Vocabulary follows CheXpert's definitions:
  nodule/mass/lesion -> Lung Lesion; opacity/infiltrate/density/fibrosis/scarring -> Lung Opacity;
  pleural thickening/plaques -> Pleural Other; emphysema and hiatal hernia are not observations.
* **Structures with attributes.** "heart size is normal" / "normal heart size" (Cardiomegaly 0),
  "the cardiac silhouette is mildly enlarged" (1), "top normal heart size" (-1), "the
  cardiomediastinal silhouette is within normal limits" (Enlarged Cardiomediastinum 0), "the lungs
  are clear" (Lung Opacity 0), "sharp costophrenic angles" (Pleural Effusion 0), "pulmonary
  vascularity is normal" (Edema 0). A structure without an attribute of its kind says nothing.
* **Negation and uncertainty** cues act forward ("no evidence of effusion", "possible
  pneumonia"), backward ("effusion is not seen", "atelectasis is likely.") or both ways
  ("resolved", "unlikely"), within their clause: scope ends at sentence ends and at words such as
  "but", "however", "although", "which", "except", "there is", and at a comma that starts a new
  statement ("no effusion, mild cardiomegaly"). Only the nearest cue on each side of a mention
  counts, so "no effusion, possible atelectasis" gives effusion 0 and atelectasis -1. Double
  negatives ("cannot be excluded", "not ruled out", "cannot exclude") make a mention uncertain and
  override negation; then negation gives 0; then hedging gives -1; otherwise the mention is
  positive. "or" between two adjacent mentions ("atelectasis or pneumonia") makes both uncertain,
  and "versus" the mention on each side of it, unless another cue applies ("no effusion or
  pneumothorax" stays negative; in "bibasilar opacities, atelectasis versus pneumonia" the
  opacities stay positive). Pseudo-cues ("no
  change in the effusion", "not significantly changed") shield a mention from farther cues.
  Hedge words: "likely", "probably", "possible", "may", "suspicious for", "concerning for",
  "suggestive of", "questionable", "borderline" ... are uncertain; "consistent with", "compatible
  with", "in keeping with" are positive.
* **Aggregation** over several mentions of one observation: positive beats uncertain beats
  negative.
* **No Finding** is 1.0 when none of the 12 pathologies (Enlarged Cardiomediastinum ... Fracture)
  is positive or uncertain, else blank; Support Devices do not count.
* **Sections.** Text under history-like headers ("INDICATION:", "HISTORY:", "CLINICAL HISTORY:",
  "COMPARISON:", "TECHNIQUE:", "EXAM:", "REASON FOR EXAM:" ...) is not labeled, up to the next
  header or blank line (the last such section, when neither follows, ends at its first line break
  or full stop: "Indication: cough. The lungs are clear." labels the second sentence); FINDINGS,
  IMPRESSION and any other text are labeled; text without headers is labeled whole. Headers are
  recognised case-insensitively at a line or sentence start, or anywhere in capitals, and need a
  colon.

All phrase lists live in ``chexpert_phrases.yaml`` next to this module (loaded once). Each list is
compiled into ONE alternation regex at import (longest phrases first); labeling a report runs a
handful of regexes and a small loop over the mentions found, with no loop over phrase lists
(about 2,500 IU X-ray reports/s on one core, see ``benchmarks/labeler_speed.py``). Results are
memoised per text (LRU cache of 16,384 texts), since clinical metrics label each reference
several times.

Known differences from the Stanford CheXpert labeler (NegBio-based):

* Negation/uncertainty scope comes from surface patterns, clause boundaries and nearest cues,
  not from a dependency parse; long coordinated sentences may be scoped differently.
* CheXpert labeled the impression section only; here all non-history text is labeled.
* An empty report (no text, or headers only) is all blank (no "No Finding" = 1); any other report
  with no pathology positive or uncertain gets No Finding = 1.
* A Lung Opacity or Lung Lesion mention linked later in its sentence to a non-pulmonary cause
  ("retrocardiac opacity consistent with a hiatal hernia", "nodular density likely representing a
  nipple shadow", "opacity due to overlying soft tissue") is dropped.
* Structure + attribute statements (above) are handled by explicit rules, and mentions never
  overlap; no label is propagated along the CheXpert hierarchy (as in the Stanford labeler).
* The vocabulary is cxbench's own and smaller/larger in places (e.g. "scarring" and "fibrosis"
  are Lung Opacity; granulomas and pericardial effusions are ignored; sternotomy wires, stents and
  prosthetic valves are Support Devices, surgical clips are not).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cxbench.labels import CHEXPERT_5, CHEXPERT_14

try:  # the regex parser's width computation orders alternatives longest first
    from re import _parser as _sre_parse  # Python >= 3.11
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]

OBSERVATIONS: tuple[str, ...] = CHEXPERT_14
COMMON_5: tuple[str, ...] = CHEXPERT_5
#: observations whose positive or uncertain label rules out "No Finding"
PATHOLOGIES: tuple[str, ...] = OBSERVATIONS[1:13]
PHRASES_FILE = Path(__file__).parent / "chexpert_phrases.yaml"

_INDEX = {name: i for i, name in enumerate(OBSERVATIONS)}
_NO_FINDING = _INDEX["No Finding"]
_MIMICKED = frozenset((_INDEX["Lung Opacity"], _INDEX["Lung Lesion"]))
_PATHOLOGY_IDX = tuple(_INDEX[name] for name in PATHOLOGIES)

# mention kinds
_FINDING, _STRUCTURE, _IGNORE = 0, 1, 2
# cue kinds
_PRE_NEG, _POST_NEG, _BOTH_NEG = 0, 1, 2
_PRE_UNC, _POST_UNC, _ALT = 3, 4, 5
_DNEG, _PSEUDO, _TRANSPARENT, _WEAK = 6, 7, 8, 9
_CUE_KINDS = {
    "pre_negation": _PRE_NEG,
    "post_negation": _POST_NEG,
    "both_negation": _BOTH_NEG,
    "pre_uncertainty": _PRE_UNC,
    "post_uncertainty": _POST_UNC,
    "alternative_uncertainty": _ALT,
    "double_negative": _DNEG,
    "pseudo": _PSEUDO,
    "transparent": _TRANSPARENT,
    "weak_uncertainty": _WEAK,
}
# effect of the nearest cue before / after a mention
_NONE, _NEG, _UNC = 0, 1, 2
_FORWARD = {_PRE_NEG: _NEG, _BOTH_NEG: _NEG, _PRE_UNC: _UNC, _DNEG: _DNEG}
_BACKWARD = {_POST_NEG: _NEG, _BOTH_NEG: _NEG, _POST_UNC: _UNC, _DNEG: _DNEG}
_RANK = {1.0: 3, -1.0: 2, 0.0: 1}
_ATTR_VALUE = {"positive": 1.0, "negative": 0.0, "uncertain": -1.0}

#: how far (characters) an attribute may be from its structure, before / after it
_PRE_ATTR_WINDOW = 40
_POST_ATTR_WINDOW = 60
#: how far (characters) a mention may be from an "or" joining it to another mention
_OR_WINDOW = 40


def _width_key(pattern: str) -> tuple[int, int]:
    """Sort key putting alternatives that match more characters first (min width, then max)."""
    try:
        low, high = _sre_parse.parse(pattern).getwidth()
    except Exception:  # pragma: no cover - unusual pattern: fall back to its length
        low = high = len(pattern)
    return (-low, -min(high, 10_000))


def _check(pattern: str, where: str) -> str:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{PHRASES_FILE.name}: bad regex in {where}: {pattern!r} ({exc})") from None
    if compiled.groups:
        raise ValueError(f"{PHRASES_FILE.name}: use (?:...) groups only, in {where}: {pattern!r}")
    return pattern


def _alternation(patterns: Iterable[str], words: bool = True) -> str:
    """One alternation of ``patterns`` (in the given order) that reports which one matched.

    Each alternative ends with an empty capturing group, so ``match.lastindex - 1`` is its index;
    starting the alternatives with their own first character (not with a group or ``\\b``) keeps
    the regex engine's fast first-character test, which makes a large alternation cheap.
    """
    if words:
        return r"\b(?:" + "|".join(f"(?:{p})\\b()" for p in patterns) + ")"
    return "(?:" + "|".join(f"(?:{p})()" for p in patterns) + ")"


def _ordered(entries: dict[str, Any]) -> tuple[list[str], list[Any]]:
    patterns = sorted(entries, key=_width_key)
    return patterns, [entries[p] for p in patterns]


def _load() -> dict[str, Any]:
    with PHRASES_FILE.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


_DATA = _load()


def _build_mentions(data: dict[str, Any]) -> tuple[re.Pattern[str], list[tuple]]:
    entries: dict[str, Any] = {}
    for name, phrases in data["mentions"].items():
        if name not in _INDEX:
            raise ValueError(f"{PHRASES_FILE.name}: unknown observation {name!r}")
        for p in phrases:
            _check(p, f"mentions/{name}")
            kind, obs = entries.get(p, (_FINDING, ()))
            if kind != _FINDING:
                raise ValueError(f"{PHRASES_FILE.name}: {p!r} listed under several kinds")
            entries[p] = (_FINDING, (*obs, _INDEX[name]))
    for p in data["ignore"]:
        if p in entries:
            raise ValueError(f"{PHRASES_FILE.name}: {p!r} is both a mention and ignored")
        entries[_check(p, "ignore")] = (_IGNORE,)
    for group in data["structures"]:
        for p in group["phrases"]:
            if p in entries:
                raise ValueError(f"{PHRASES_FILE.name}: structure {p!r} listed twice")
            entries[_check(p, "structures")] = (_STRUCTURE, _INDEX[group["observation"]], group["family"])
    patterns, infos = _ordered(entries)
    return re.compile(_alternation(patterns)), infos


def _build_cues(data: dict[str, Any]) -> tuple[re.Pattern[str], list[int]]:
    entries: dict[str, int] = {}
    cues = data["cues"]
    for key, kind in _CUE_KINDS.items():
        for p in cues[key]:
            if p in entries:
                raise ValueError(f"{PHRASES_FILE.name}: cue {p!r} listed twice")
            entries[_check(p, f"cues/{key}")] = kind
    patterns, kinds = _ordered(entries)
    raw = [_check(p, "cues/raw_pre_uncertainty") for p in cues["raw_pre_uncertainty"]]
    pattern = _alternation(patterns)
    if raw:
        pattern += "|" + _alternation(raw, words=False)
        kinds += [_PRE_UNC] * len(raw)
    return re.compile(pattern), kinds


def _build_attributes(data: dict[str, Any]) -> tuple[re.Pattern[str], list[dict[str, float]]]:
    entries: dict[str, dict[str, float]] = {}
    for family, groups in data["attributes"].items():
        for polarity, phrases in groups.items():
            for p in phrases:
                entries.setdefault(_check(p, f"attributes/{family}"), {})[family] = _ATTR_VALUE[polarity]
    patterns, values = _ordered(entries)
    return re.compile(_alternation(patterns)), values


def _build_boundaries(data: dict[str, Any]) -> re.Pattern[str]:
    term = data["terminators"]
    sentence = "|".join(f"(?:{_check(p, 'terminators/sentence')})" for p in term["sentence"])
    clause_words = sorted((_check(p, "terminators/clause") for p in term["clause"]), key=_width_key)
    clause = r"\b(?:" + "|".join(clause_words) + r")\b"
    comma = "|".join(f"(?:{_check(p, 'terminators/comma')})" for p in term["comma"])
    return re.compile(f"({sentence})|({clause}|{comma})")


def _build_mimics(data: dict[str, Any]) -> re.Pattern[str]:
    spec = data["opacity_mimics"]
    attribution = "|".join(sorted(spec["attribution"], key=_width_key))
    mimics = "|".join(sorted(spec["mimics"], key=_width_key))
    return re.compile(rf"\b(?:{attribution}) (?:[a-z]+ ){{0,3}}?(?:{mimics})\b")


def _build_headers(data: dict[str, Any]) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    skip = sorted(data["sections"]["skip"], key=_width_key)
    keep = sorted(data["sections"]["keep"], key=_width_key)
    known = "|".join(skip + keep).replace(" ", "[ \\t]+")
    header = re.compile(
        rf"(?:^|(?<=[\n.;]))[ \t]*(?P<k>(?i:{known}))[ \t]*:"
        r"|\b(?P<g>[A-Z][A-Z/&()]{2,}(?:[ \t]+[A-Z/&()]+){0,4})[ \t]*:"
    )
    return header, re.compile(f"(?:{'|'.join(skip)})"), re.compile(f"(?:{'|'.join(keep)})")


_MENTION_RE, _MENTION_INFO = _build_mentions(_DATA)
_CUE_RE, _CUE_KIND = _build_cues(_DATA)
_ATTR_RE, _ATTR_INFO = _build_attributes(_DATA)
_BOUND_RE = _build_boundaries(_DATA)
_MIMIC_RE = _build_mimics(_DATA)
_HEADER_RE, _SKIP_RE, _KEEP_RE = _build_headers(_DATA)
_GAP_RE = re.compile(r"\b(?:" + "|".join(map(re.escape, _DATA["attribute_gap_breakers"])) + r")\b")
_BLANK_LINE_RE = re.compile(r"\n[ \t\r]*\n")
_LINE_OR_SENTENCE_END_RE = re.compile(r"\n|\.(?!\d)")
_ABBREV_RE = re.compile(r"\b(?:vs|e\.g|i\.e|dr|approx|etc|cf)\.")
_TRANSLATE = str.maketrans({"-": " ", "\u2010": " ", "\u2011": " ", "\u2013": " ", "\u2014": " "})
_BLANK: tuple[float | None, ...] = (None,) * len(OBSERVATIONS)


def strip_sections(text: str) -> str:
    """The report text without the parts under history-like headers (see the module docstring)."""
    headers = list(_HEADER_RE.finditer(text))
    if not headers:
        return text
    pieces = [text[: headers[0].start()]]
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        name = " ".join((match.group("k") or match.group("g")).lower().split())
        if _SKIP_RE.fullmatch(name):
            # a skipped section ends at the next header or blank line; the last one, when followed
            # by neither, ends at its first line break or sentence end
            stop = _BLANK_LINE_RE.search(text, match.end(), end)
            if stop is None and i + 1 == len(headers):
                stop = _LINE_OR_SENTENCE_END_RE.search(text, match.end(), end)
            if stop:
                pieces.append(text[stop.end() : end])
        elif _KEEP_RE.fullmatch(name):
            pieces.append(text[match.end() : end])
        else:  # an unknown header ("LUNGS:") is kept with its text
            pieces.append(text[match.start() : end])
    return "\n\n".join(pieces)


def normalize(text: str) -> str:
    """Lower-case text with blank lines as sentence ends, hyphens as spaces, single spaces."""
    text = text.lower()
    if "\n" in text:
        text = _BLANK_LINE_RE.sub(" . ", text)
    if "." in text:
        text = _ABBREV_RE.sub(lambda m: m.group(0).replace(".", " "), text)
    return " ".join(text.translate(_TRANSLATE).split())


def _decide(before: int, after: int, weak: bool) -> float:
    """Label of one mention from the effects of its nearest cues."""
    if before == _DNEG or after == _DNEG:
        return -1.0
    if before == _NEG or after == _NEG:
        return 0.0
    if before == _UNC or after == _UNC or weak:
        return -1.0
    return 1.0


def _label_tuple_impl(text: str | None) -> tuple[float | None, ...]:
    if not text or not text.strip():
        return _BLANK
    if ":" in text:
        text = strip_sections(text)
        if not text.strip():  # headers without text ("FINDINGS: IMPRESSION:")
            return _BLANK
    t = normalize(text)
    values: list[float | None] = [None] * len(OBSERVATIONS)
    infos = _MENTION_INFO
    mentions = [(m.start(), m.end(), infos[m.lastindex - 1]) for m in _MENTION_RE.finditer(t)]
    mentions = [m for m in mentions if m[2][0] != _IGNORE]
    if mentions:
        _label_mentions(t, mentions, values)
    for i in _PATHOLOGY_IDX:
        if values[i] == 1.0 or values[i] == -1.0:
            break
    else:
        values[_NO_FINDING] = 1.0
    return tuple(values)


def _label_mentions(t: str, mentions: list[tuple], values: list[float | None]) -> None:
    bounds, sentences = [], []
    for m in _BOUND_RE.finditer(t):
        bounds.append(m.start())
        if m.lastindex == 1:
            sentences.append(m.start())
    cue_kind = _CUE_KIND
    cues, weak_cues = [], []
    for m in _CUE_RE.finditer(t):
        kind = cue_kind[m.lastindex - 1]
        if kind in (_WEAK, _ALT):
            weak_cues.append((m.start(), m.end(), kind))
        elif kind != _TRANSPARENT:
            cues.append((m.start(), kind))
    cue_starts = [c[0] for c in cues]
    n_bounds, n_cues, length = len(bounds), len(cues), len(t)

    def clause(pos: int) -> tuple[int, int]:
        j = bisect_right(bounds, pos)
        return (bounds[j - 1] if j else 0, bounds[j] if j < n_bounds else length)

    def before(pos: int, low: int) -> int:
        # pre-cues of the clause, nearest first, up to a pseudo-cue: the nearest negation or
        # double negative decides ("no consolidation, suspicious opacity, or effusion" negates
        # the effusion); hedging counts only without one
        effect = _NONE
        j = bisect_left(cue_starts, pos) - 1
        while j >= 0 and cues[j][0] >= low:
            kind = cues[j][1]
            if kind == _PSEUDO:
                break
            found = _FORWARD.get(kind, _NONE)
            if found in (_NEG, _DNEG):
                return found
            if found == _UNC:
                effect = _UNC
            j -= 1
        return effect

    def after(pos: int, high: int) -> int:
        k = bisect_left(cue_starts, pos)
        return _BACKWARD.get(cues[k][1], _NONE) if k < n_cues and cues[k][0] < high else _NONE

    weak: set[int] = set()  # mentions next to "or" / "versus"
    if weak_cues:
        finding_pos = [i for i, m in enumerate(mentions) if m[2][0] == _FINDING]
        starts = [mentions[i][0] for i in finding_pos]
        for w_start, w_end, kind in weak_cues:
            low, high = clause(w_start)
            k = bisect_left(starts, w_end)
            prev = finding_pos[k - 1] if k > 0 else None
            if prev is not None:
                p_start, p_end = mentions[prev][:2]
                if p_start < low or p_end > w_start or w_start - p_end > _OR_WINDOW:
                    prev = None
            nxt = finding_pos[k] if k < len(starts) else None
            if nxt is not None and (starts[k] >= high or starts[k] - w_end > _OR_WINDOW):
                nxt = None
            if kind == _ALT:
                weak.update(i for i in (prev, nxt) if i is not None)
            elif prev is not None and nxt is not None:
                weak.update((prev, nxt))

    mimicked: set[int] = set()  # mentions whose Lung Opacity / Lung Lesion is explained away
    if any(_MIMICKED.intersection(m[2][1]) for m in mentions if m[2][0] == _FINDING):
        for mimic in _MIMIC_RE.finditer(t):
            j = bisect_right(sentences, mimic.start())
            low = sentences[j - 1] if j else 0
            mimicked.update(
                i for i, m in enumerate(mentions) if low <= m[0] < mimic.start() and m[2][0] == _FINDING
            )

    attributes = None
    for i, (start, end, info) in enumerate(mentions):
        low, high = clause(start)
        if info[0] == _FINDING:
            value = _decide(before(start, low), after(end, high), i in weak)
            targets = info[1]
            if i in mimicked:
                targets = tuple(o for o in targets if o not in _MIMICKED)
        else:
            if attributes is None:
                attributes = [(m.start(), m.end(), _ATTR_INFO[m.lastindex - 1]) for m in _ATTR_RE.finditer(t)]
            value = _structure_value(t, start, end, info[2], low, high, attributes, before, after)
            if value is None:
                continue
            targets = (info[1],)
        for o in targets:
            old = values[o]
            if old is None or _RANK[value] > _RANK[old]:
                values[o] = value


def _structure_value(
    t: str,
    start: int,
    end: int,
    family: str,
    low: int,
    high: int,
    attributes: list[tuple[int, int, dict[str, float]]],
    before: Callable[[int, int], int],
    after: Callable[[int, int], int],
) -> float | None:
    """Label from a structure ("heart size") and the nearest attribute of its family in its clause.

    A positive attribute still goes through the cues: those between the structure and a following
    attribute ("the heart is not enlarged") or before a preceding one, and those after both.
    """
    pre = post = None
    for a_start, a_end, fams in attributes:
        if family not in fams:
            continue
        if a_end <= start:
            if a_start >= low and start - a_end <= _PRE_ATTR_WINDOW:
                pre = (a_start, a_end, fams[family])
        elif a_start >= end:
            if a_start < high and a_start - end <= _POST_ATTR_WINDOW and not _GAP_RE.search(t, end, a_start):
                post = (a_start, a_end, fams[family])
            break
    if pre is not None and _GAP_RE.search(t, pre[1], start):
        pre = None
    if pre is not None and (start - pre[1] <= 2 or post is None):
        a_start, a_end, value = pre
        if value != 1.0:
            return value
        return _decide(before(a_start, low), after(end, high), False)
    if post is not None:
        a_start, a_end, value = post
        if value != 1.0:
            return value
        return _decide(before(a_start, end), after(a_end, high), False)
    return None


@lru_cache(maxsize=16384)
def _label_tuple(text: str | None) -> tuple[float | None, ...]:
    return _label_tuple_impl(text)


def label_report(text: str | None, cache: bool = True) -> dict[str, float | None]:
    """CheXpert-14 labels of one report: 1.0 / 0.0 / -1.0 / None (not mentioned) per observation.

    ``None`` or blank text gives all None. Results are memoised per text unless ``cache=False``.
    """
    return dict(zip(OBSERVATIONS, label_vector(text, cache), strict=True))


def label_vector(text: str | None, cache: bool = True) -> tuple[float | None, ...]:
    """The labels of :func:`label_report` as a tuple in :data:`OBSERVATIONS` order."""
    return _label_tuple(text) if cache else _label_tuple_impl(text)


def label_reports(texts: Iterable[str | None]) -> np.ndarray:
    """Labels of many reports: an ``(n, 14)`` float array in :data:`OBSERVATIONS` order, NaN = blank."""
    rows = [[np.nan if v is None else v for v in _label_tuple(t)] for t in texts]
    return np.asarray(rows, dtype=float).reshape(len(rows), len(OBSERVATIONS))


__all__ = [
    "COMMON_5",
    "OBSERVATIONS",
    "PATHOLOGIES",
    "label_report",
    "label_reports",
    "label_vector",
    "normalize",
    "strip_sections",
]
