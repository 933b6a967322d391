"""Python-callable models used by the tests through the ``python:`` model spec."""

from __future__ import annotations

import os
import time
from pathlib import Path


def _count(request) -> None:
    counter = os.environ.get("CXBENCH_TEST_COUNTER")
    if counter:
        with Path(counter).open("a") as handle:
            handle.write(request.sample_id + "\n")


def echo_yes(request) -> str:
    """Answers "yes" (or option A); records each call in $CXBENCH_TEST_COUNTER."""
    _count(request)
    return "A" if request.choices else "yes"


def slow_yes(request) -> str:
    """Like echo_yes, but takes 50 ms per request (for kill -9 trials)."""
    time.sleep(0.05)
    return echo_yes(request)


def interrupt_after(request) -> str:
    """Raises KeyboardInterrupt once $CXBENCH_TEST_STOP_AFTER calls were made."""
    counter = Path(os.environ["CXBENCH_TEST_COUNTER"])
    done = len(counter.read_text().splitlines()) if counter.exists() else 0
    if done >= int(os.environ["CXBENCH_TEST_STOP_AFTER"]):
        raise KeyboardInterrupt
    return echo_yes(request)


def faulty(request) -> str:
    """Per-sample behaviours keyed by the sample id: empty, junk box, exception, good box."""
    if "empty" in request.sample_id:
        return ""
    if "junk" in request.sample_id:
        return "somewhere near the heart, I think"
    if "crash" in request.sample_id:
        raise RuntimeError("backend exploded")
    return "[10, 10, 50, 50]"


def answer_with_id(request) -> str:
    """Answers with the sample id: same prompt, different answers."""
    return request.sample_id


def hostile(request) -> str:
    """Outputs markup that must render as text, never execute."""
    return (
        "<think><script>document.title='pwned'</script> looks fine</think>"
        "<answer>yes <img src=x onerror=\"document.title='pwned'\"></answer>"
    )


def _cx_mind(request, planted: str | None) -> str:
    """CX-Mind-style interleaved reasoning over the options, choosing the first option."""
    letters = "ABCD"
    steps = []
    for i, option in enumerate(request.choices or []):
        mark = "✅" if i == 0 else "❌"
        steps.append(
            f"<think>Option {letters[i]}: {option}. Compare the image with its signs.</think>"
            f"<answer>{letters[i]}) {mark}</answer>"
        )
    summary = "The findings support option A."
    if planted:
        summary = f"There is a large {planted}. " + summary
    steps.append(f"<think>{summary}</think><answer>A) ✅</answer>")
    return "".join(steps)


def cx_mind_clean(request) -> str:
    return _cx_mind(request, None) if request.choices else "<think>Checking.</think><answer>no</answer>"


def cx_mind_planted(request) -> str:
    """Well-formed reasoning that asserts a right pneumothorax in every study."""
    return (
        _cx_mind(request, "right pneumothorax")
        if request.choices
        else ("<think>There is a large right pneumothorax.</think><answer>no</answer>")
    )
