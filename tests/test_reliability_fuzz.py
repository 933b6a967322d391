"""Parser fuzzing with hypothesis (a small budget; ``benchmarks/fuzz_parsers.py`` runs 100,000 strings)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_parsers.py"
_SPEC = importlib.util.spec_from_file_location("fuzz_parsers", _PATH)
fuzz_parsers = importlib.util.module_from_spec(_SPEC)
sys.modules["fuzz_parsers"] = fuzz_parsers
_SPEC.loader.exec_module(fuzz_parsers)


def test_two_thousand_random_and_adversarial_strings_never_raise():
    stats = fuzz_parsers.fuzz(2000, seed=0)
    assert stats["strings"] >= 1900  # hypothesis may drop a few duplicates
    assert stats["calls"] == stats["strings"] * len(fuzz_parsers.CALLS)
    assert stats["slowest"][0] < 1.0, stats["slowest"]


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(text=fuzz_parsers.STRATEGY)
def test_parsers_return_their_documented_types(text):
    from cxbench.parsing import (
        final_answer,
        parse_box,
        parse_boxes,
        parse_choice,
        parse_yes_no,
        split_reasoning,
    )

    assert isinstance(final_answer(text), str)
    assert parse_yes_no(text) in (None, "yes", "no")
    assert parse_choice(text, fuzz_parsers.CHOICES) in (None, "A", "B", "C", "D")
    box = parse_box(text, (1024, 1024))
    assert box is None or (len(box) == 4 and all(0.0 <= v <= 1.0 for v in box) and box[0] <= box[2])
    for box in parse_boxes(text, (640, 480), scale="pixel"):
        assert all(v == v and 0.0 <= v <= 1.0 for v in box)  # never NaN, never outside the image
    reasoning = split_reasoning(text)
    assert all(isinstance(t, str) and isinstance(a, str) for t, a in reasoning.steps)


def test_adversarial_families_scale_linearly():
    # sizes past the CPU caches (a 10 kB string is up to twice faster per character than 100 kB)
    small, large = 50_000, 200_000
    fast = {k: v for k, v in fuzz_parsers.CALLS.items() if k != "reasoning_metrics"}
    rows = fuzz_parsers.linearity(small, large, repeats=(3, 3), calls=fast)
    slow = {
        k: v
        for k, v in fuzz_parsers.FAMILIES.items()
        if k in ("nested_think", "box_tags_unclosed", "cyrillic_options", "zero_width_words")
    }
    rows += fuzz_parsers.linearity(20_000, 80_000, slow, repeats=(3, 3), calls=fuzz_parsers.CALLS)
    # best of 3 on a shared CPU; quadratic work would grow 16-fold for 4 times the text, i.e. 4.0 here
    steep = [r for r in rows if fuzz_parsers.growth(r, small, large, floor=0.005) > 3.0]
    assert not steep, steep
    assert max(r["large_s"] for r in rows) < 2.0


@pytest.mark.parametrize("name", sorted(fuzz_parsers.FAMILIES))
def test_families_build_strings_of_the_asked_size(name):
    text = fuzz_parsers.FAMILIES[name](5000)
    assert 4000 <= len(text) <= 5000
