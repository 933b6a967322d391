"""Speed of the reasoning metrics: split_reasoning + all of REASONING_METRICS on one long output.

Usage: ``python benchmarks/reasoning_parse.py [--runs 5] [--sizes 1000,10000,100000,1000000]``

Outputs are CX-Mind-style interleaved think/answer steps (a differential list, one verdict step per
candidate with DeepMedix-style pixel boxes in the thinking, a final list), repeated up to each size
in characters. Each run starts from a cold analysis cache (the labeler's own cache is not used by
these metrics), so every run parses and labels from scratch. Prints the median of ``--runs`` runs
and the time per 1,000 characters, which stays flat when scoring is linear in the output length.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxbench.metrics.base import MetricContext, Output  # noqa: E402
from cxbench.metrics.reasoning import REASONING_METRICS, clear_analysis_cache  # noqa: E402
from cxbench.parsing import split_reasoning  # noqa: E402
from cxbench.schema import Sample  # noqa: E402

SAMPLE = Sample(
    id="bench:dx",
    images=["bench.png"],
    question="What are the abnormalities in this chest X-ray?",
    target="atelectasis",
    metadata={
        "findings": [
            {
                "label": "atelectasis",
                "severity": "mild",
                "box": [0.1, 0.6, 0.4, 0.85],
                "region": "left lower zone",
            },
            {
                "label": "cardiomegaly",
                "severity": "moderate",
                "box": [0.3, 0.4, 0.75, 0.8],
                "region": "heart",
            },
        ],
        "image_size": [1000, 1000],
    },
)
HEAD = (
    "<think>The frontal radiograph shows increased density at the left base and a widened cardiac "
    "silhouette. Possible diagnoses include atelectasis, cardiomegaly, pleural effusion and pneumonia."
    "</think>\n<answer>Atelectasis, Cardiomegaly, Pleural Effusion, Pneumonia</answer>\n"
)
STEPS = (
    "<think>Atelectasis: there is a linear opacity at the left lung base [100, 600, 400, 850] with volume "
    "loss and mild elevation of the left hemidiaphragm.</think>\n<answer>Atelectasis ✅</answer>\n",
    "<think>Cardiomegaly: the cardiothoracic ratio is about 0.6; the heart is enlarged [300, 400, 750, 800]."
    "</think>\n<answer>Cardiomegaly ✅</answer>\n",
    "<think>Pleural effusion: would blunt the costophrenic angles, but both angles are sharp. Is there "
    "fluid in the fissures? No.</think>\n<answer>Pleural Effusion ❌</answer>\n",
    "<think>Pneumonia: no focal consolidation or air bronchogram suggests an infection; a small nodule "
    "[620, 180, 700, 260] is noted in the right upper lobe.</think>\n<answer>Pneumonia ❌</answer>\n",
)
TAIL = (
    "<think>Combining the findings: atelectasis and cardiomegaly.</think>\n"
    "<answer>Atelectasis, Cardiomegaly</answer>"
)


def make_output(size: int) -> str:
    """A well-formed CX-Mind-style output of about ``size`` characters."""
    parts, length, i = [HEAD], len(HEAD) + len(TAIL), 0
    while length + len(STEPS[i % len(STEPS)]) <= size or i < len(STEPS):
        parts.append(STEPS[i % len(STEPS)])
        length += len(STEPS[i % len(STEPS)])
        i += 1
    parts.append(TAIL)
    return "".join(parts)


def score_once(raw: str) -> tuple[float, dict[str, list[float]]]:
    clear_analysis_cache()
    ctx = MetricContext()
    start = time.perf_counter()
    split_reasoning(raw)
    stats = {
        name: list(m.stats(Output(raw, None, SAMPLE), SAMPLE.target, ctx))
        for name, m in REASONING_METRICS.items()
    }
    return time.perf_counter() - start, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}; median of {args.runs} runs; {len(REASONING_METRICS)} metrics")
    print(f"{'chars':>9} {'steps':>6} {'median s':>9} {'ms / 1k chars':>14}")
    for size in (int(s) for s in args.sizes.split(",")):
        raw = make_output(size)
        times = [score_once(raw)[0] for _ in range(args.runs)]
        median = statistics.median(times)
        steps = len(split_reasoning(raw).steps)
        print(f"{len(raw):>9} {steps:>6} {median:>9.4f} {1000 * median / len(raw) * 1000:>14.3f}")


if __name__ == "__main__":
    main()
