"""Fuzz the answer, box and reasoning parsers with hypothesis: never raise, stay linear in time.

Two parts:

1. ``--examples`` (default 100,000) strings drawn by hypothesis from a mix of strategies: any
   unicode text; text over an alphabet of tag, bracket, digit and verdict-mark characters;
   concatenations of adversarial fragments (``<think>``/``<answer>``/``<box>`` tags, unbalanced
   and nested brackets, numbers like ``1e999``, ``nan``, ``-inf``, ``0x1p9``, 400-digit integers,
   unicode look-alikes such as fullwidth ``［``, Cyrillic ``А``, ``‹think›``, zero-width and
   right-to-left marks, surrogates and NUL), and fragments repeated up to 4,000 characters. Every string goes
   through every parser in :data:`CALLS` (including all reasoning metrics); any exception fails.
   The slowest single call is reported with its input length.
2. Linearity: each adversarial family of :data:`FAMILIES` (deep nesting, huge numbers, long
   runs of tags, look-alikes...) is built at 100 kB and at 1 MB; every parser is timed on both
   (best of 3 and of 2 runs: the CPU may be shared). Time per character must not grow (ratio of
   1 MB to 100 kB time <= 20, i.e. at most twice linear); the slowest 1 MB call is reported.

    python benchmarks/fuzz_parsers.py [--examples 100000] [--seed 0]

The pytest suite (``tests/test_reliability_fuzz.py``) runs the same strategies and families
with a smaller budget.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cxbench.labels import DISEASE_SYNONYMS  # noqa: E402
from cxbench.metrics.base import MetricContext, Output  # noqa: E402
from cxbench.metrics.reasoning import REASONING_METRICS, clear_analysis_cache  # noqa: E402
from cxbench.parsing import (  # noqa: E402
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
from cxbench.schema import Sample  # noqa: E402

CHOICES = ["atelectasis", "pleural effusion", "pneumothorax", "cardiomegaly"]
SAMPLE = Sample(
    id="fuzz",
    images=["x.png"],
    question="What are the findings?",
    target="atelectasis",
    metadata={
        "findings": [{"label": "atelectasis", "severity": "mild", "box": [0.1, 0.6, 0.4, 0.85]}],
        "image_size": [1024, 1024],
    },
)
_CTX = MetricContext()


def _reasoning_metrics(text: str) -> None:
    clear_analysis_cache()
    for metric in REASONING_METRICS.values():
        metric.stats(Output(text, None, SAMPLE), SAMPLE.target, _CTX)


#: every parser a model's output goes through, by name
CALLS: dict[str, Callable[[str], object]] = {
    "split_reasoning": split_reasoning,
    "final_answer": final_answer,
    "normalize_text": normalize_text,
    "answer_tokens": answer_tokens,
    "parse_yes_no": parse_yes_no,
    "parse_choice": lambda t: parse_choice(t, CHOICES),
    "parse_label": lambda t: parse_label(t, DISEASE_SYNONYMS),
    "parse_ranked_labels": lambda t: parse_ranked_labels(t, DISEASE_SYNONYMS),
    "parse_change": parse_change,
    "parse_box": lambda t: parse_box(t, (1024, 1024)),
    "parse_boxes_pixel": lambda t: parse_boxes(t, (640, 480), scale="pixel"),
    "parse_boxes_norm1000": lambda t: parse_boxes(t, (640, 480), scale="norm1000"),
    "reasoning_metrics": _reasoning_metrics,
}

FRAGMENTS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "< / THINK >",
    "<box>",
    "</box>",
    "<|box_start|>",
    "<|box_end|>",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    ",",
    '{"bbox_2d": [',
    "[[",
    "]]",
    "1e999",
    "-1e-999",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "0x1p9",
    "9" * 400,
    "0.5",
    "-12",
    "1,2,3,4",
    "A)",
    "(B)",
    "Option C",
    "The answer is D",
    "✅",
    "❌",
    "✔",
    "✘",
    "yes",
    "no",
    "not",
    "without",
    "pleural effusion",
    "no pneumothorax",
    "improved",
    "no significant change",
    "worsened",
    "Final answer:",
    "**Answer:**",
    "［",
    "］",
    "（",
    "）",
    "‹think›",
    "＜think＞",
    "АВС",  # Cyrillic look-alikes of ABC
    "Αnswer",  # Greek capital alpha
    "ｙｅｓ",
    "\u200b",
    "\u200d",
    "\u202e",
    "\ufeff",
    "\x00",
    "\ud800",
    "İ",
    "ß",
    "\n",
    "\r\n",
    "\t",
    " ",
]

#: the drawn strings stay short enough for 100,000 of them; 1 MB inputs are the linearity part's job
MAX_FUZZ_CHARS = 4000
fragment = st.sampled_from(FRAGMENTS)
STRATEGY = st.one_of(
    st.text(max_size=200),
    st.text(alphabet="<>/[](){},.:-+eE0123456789 \nthinkanswerboxABCD✅❌İ", max_size=400),
    st.lists(fragment, max_size=80).map("".join),
    st.lists(st.one_of(fragment, st.text(max_size=8)), max_size=60).map("".join),
    st.tuples(st.lists(fragment, min_size=1, max_size=6).map("".join), st.integers(1, 500)).map(
        lambda pair: (pair[0] * pair[1])[:MAX_FUZZ_CHARS]
    ),
    st.tuples(st.sampled_from(["<think>", "[", "(", "<answer>", "{", "<box>"]), st.integers(1, 600)).map(
        lambda pair: pair[0] * pair[1]  # deep nesting, never closed
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: f"[{x}, {x}, {x}, {x}]"),
    st.integers().map(lambda i: f"<box>({i},{i}),({i},{i})</box>"),
)


def _repeat(chunk: str, size: int) -> str:
    return (chunk * (size // len(chunk) + 1))[:size]


#: adversarial families: name -> builder of a string of about ``size`` characters
FAMILIES: dict[str, Callable[[int], str]] = {
    "nested_think": lambda n: _repeat("<think>", n),
    "nested_answer_think": lambda n: _repeat("<answer><think>", n),
    "nested_brackets": lambda n: "[" * (n // 2) + "]" * (n // 2),
    "nested_parens_numbers": lambda n: _repeat("((1,", n),
    "json_boxes_unclosed": lambda n: _repeat('{"bbox_2d": [1, 2, 3, ', n),
    "huge_number": lambda n: "[" + "9" * (n - 11) + ", 1, 2, 3]",
    "nan_inf_boxes": lambda n: _repeat("[nan, inf, -inf, 1e999] ", n),
    "box_tags_unclosed": lambda n: _repeat("<box>(1,2),(3,", n),
    "qwen_box_tags": lambda n: _repeat("<|box_start|>(10,20),(30,", n),
    "lookalike_tags": lambda n: _repeat("‹think›＜answer＞［1，2，3，4］", n),
    "cyrillic_options": lambda n: _repeat("А) ✅ В) ❌ С) ", n),
    "zero_width_words": lambda n: _repeat("ye\u200bs n\u200do \u202e", n),
    "negation_runs": lambda n: _repeat("no no not without ", n),
    "verdict_lines": lambda n: _repeat("Pleural effusion ✅\nPneumothorax ❌\n", n),
    "answer_markers": lambda n: _repeat("Final answer: **Answer:** ", n),
    "spaces_after_lt": lambda n: "<" + " " * (n - 1),
    "surrogates_nul": lambda n: _repeat("\ud800\x00\udfff", n),
}


def fuzz(examples: int, seed: int | None = 0) -> dict:
    """Run ``examples`` hypothesis strings through every call; returns counts and the slowest call."""
    stats = {"strings": 0, "calls": 0, "chars": 0, "slowest": (0.0, "", 0), "top": []}
    for call in CALLS.values():  # warm up: compiled patterns and vocabularies are built on first use
        call("warm up <think>x</think><answer>A) yes [1, 2, 3, 4]</answer>")

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed is not None,
        suppress_health_check=list(HealthCheck),
        phases=["generate"],
    )
    @given(text=STRATEGY)
    def check(text: str) -> None:
        stats["strings"] += 1
        stats["chars"] += len(text)
        for name, call in CALLS.items():
            start = time.perf_counter()
            call(text)  # must not raise: hypothesis reports the string if it does
            elapsed = time.perf_counter() - start
            stats["calls"] += 1
            if elapsed > stats["slowest"][0]:
                stats["slowest"] = (elapsed, name, len(text))
            if len(stats["top"]) < 10 or elapsed > stats["top"][-1][0]:
                stats["top"] = sorted([*stats["top"], (elapsed, name, text)], reverse=True)[:10]

    check()
    return stats


def linearity(
    small: int,
    large: int,
    families: dict[str, Callable[[int], str]] | None = None,
    repeats: tuple[int, int] = (3, 2),
    calls: dict[str, Callable[[str], object]] | None = None,
) -> list[dict]:
    """Time every call on every family at two sizes; one row per (family, call)."""
    rows = []
    for family, build in (families or FAMILIES).items():
        texts = {size: build(size) for size in (small, large)}
        for name, call in (calls or CALLS).items():
            times = {}
            for size, text in texts.items():
                best = float("inf")
                for _ in range(repeats[0] if size == small else repeats[1]):
                    start = time.perf_counter()
                    call(text)
                    best = min(best, time.perf_counter() - start)
                times[size] = best
            rows.append({"family": family, "call": name, "small_s": times[small], "large_s": times[large]})
    return rows


def _timed(call: Callable[[str], object], text: str) -> float:
    start = time.perf_counter()
    call(text)
    return time.perf_counter() - start


def growth(row: dict, small: int, large: int, floor: float = 0.002) -> float:
    """How much faster than linear the time grew (1 = linear); tiny times are floored against noise."""
    return max(row["large_s"], floor) / max(row["small_s"], floor) / (large / small)


def report_fuzz(stats: dict, started: float) -> None:
    slow_s, slow_call, slow_len = stats["slowest"]
    print(
        f"fuzz: {stats['strings']} strings ({stats['chars'] / 1e6:.1f} M characters), "
        f"{stats['calls']} parser calls over {len(CALLS)} parsers, no exception, "
        f"{time.perf_counter() - started:.0f} s; "
        f"slowest call: {slow_call} {slow_s * 1000:.1f} ms on {slow_len} characters"
    )
    # a single slow call on a shared CPU may be a scheduling pause: time the ten slowest again
    print("the ten slowest calls, timed again (best of 5):")
    for first, name, text in stats["top"]:
        again = min(_timed(CALLS[name], text) for _ in range(5))
        print(
            f"  {name:<22} {len(text):>6} chars: {first * 1000:8.1f} ms in the run, "
            f"{again * 1000:8.2f} ms again"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    started = time.perf_counter()
    if args.examples > 0:
        report_fuzz(fuzz(args.examples, args.seed), started)
    small, large = 100_000, 1_000_000
    rows = linearity(small, large)
    worst = max(rows, key=lambda r: r["large_s"])
    steepest = max(rows, key=lambda r: growth(r, small, large))
    print(
        f"linearity: {len(FAMILIES)} adversarial families x {len(CALLS)} parsers at 100 kB and 1 MB; "
        f"slowest 1 MB call: {worst['call']} on {worst['family']} {worst['large_s']:.3f} s; "
        f"largest growth over linear: {growth(steepest, small, large):.2f}x "
        f"({steepest['call']} on {steepest['family']}: "
        f"{steepest['small_s']:.4f} s -> {steepest['large_s']:.4f} s)"
    )
    print("| family | slowest parser at 1 MB | s at 100 kB | s at 1 MB |")
    print("|---|---|---|---|")
    for family in FAMILIES:
        row = max((r for r in rows if r["family"] == family), key=lambda r: r["large_s"])
        print(f"| {family} | {row['call']} | {row['small_s']:.4f} | {row['large_s']:.4f} |")
    bad = []
    for row in (r for r in rows if growth(r, small, large) > 2.0):  # confirm: a shared CPU adds noise
        family, name = {row["family"]: FAMILIES[row["family"]]}, {row["call"]: CALLS[row["call"]]}
        again = linearity(small, large, family, repeats=(5, 5), calls=name)[0]
        print(f"re-timed (best of 5): {again}")
        if growth(again, small, large) > 2.0:
            bad.append(again)
    for row in bad:
        print(f"NOT LINEAR: {row}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
