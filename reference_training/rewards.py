"""Verifiable rewards of the CX-Mind recipe (and a grounded option), as pure functions.

Every reward takes a completion (the generated text, nothing else) and what the data builders
know about the sample, and returns a float in [0, 1]. Parsing and scoring reuse cxbench: the
think/answer grammar and final answer come from :mod:`cxbench.parsing`, the ✅/❌ verdicts and the
boxes attached to findings from :mod:`cxbench.metrics.reasoning`, BLEU-1 and ROUGE-L from
:mod:`cxbench.metrics.nlg`, IoU from :mod:`cxbench.metrics.grounding`, disease names and
synonyms from :mod:`cxbench.labels`.

CX-Mind's rewards
-----------------
``format_reward``
    1 when the whole output is one or more ``<think>...</think><answer>...</answer>`` pairs and
    nothing else (white space between and around the pairs aside), else 0
    (:attr:`cxbench.parsing.Reasoning.well_formed`: tags in ASCII, case-insensitive; a missing,
    unclosed, nested or repeated tag, or any text outside the pairs, gives 0).
``closed_outcome_reward``
    1 when the option letter of the final answer is the gold letter
    (:func:`cxbench.parsing.parse_choice`: a unique ✅-marked option, a letter, an option text).
``open_outcome_reward``
    micro-F1 between the disease set of the final answer (non-negated mentions of the 14 diseases
    and their synonyms, :func:`cxbench.parsing.parse_ranked_labels`) and the gold set; both empty
    ("no finding" for a normal study) is a perfect 1.
``base_reward``
    ``0.1 * format + 0.9 * outcome``.
``consistency_reward`` (process, weight 0.2)
    1 when the output has at least one ✅/❌ verdict and every verdict agrees with the gold
    answer: an option (or a disease) marked ✅ is the gold option (is in the gold set), one marked
    ❌ is not. Verdicts are read by cxbench's reasoning metrics (``A) ❌``, ``Pleural effusion
    ✅``, ``✅ B``); a verdict whose subject cannot be checked makes the reward 0. ✔ ✓ ☑ / ✗ ✘ ✖ ❎
    count as marks; ASCII look-alikes (``v``, ``x``, ``[x]``) do not.
``think_reward`` (process)
    ``0.3 * BLEU-1 + 0.7 * ROUGE-L`` of all think texts (joined) against the reference reasoning
    built from the report; in the closed stage only when the final answer is correct
    (``require_correct``).
Conditional gating (:class:`OutcomeGate`)
    The process rewards count only for a batch whose mean outcome is at least the exponential
    moving average of the batch means (alpha 0.2, the EMA including the current batch, which is
    the same as comparing with the EMA before it). The first batch opens the gate.

Grounded option (DeepMedix-R1, improved)
----------------------------------------
``grounding_reward``
    Boxes written in the reasoning (``[x1, y1, x2, y2]`` in pixels, 0-1 or 0-1000 units, ``<box>``
    tags) are attached to the finding named before them in the same clause (cxbench's reasoning
    metrics) and scored by IoU against that finding's ground-truth box: the mean IoU over the
    attached boxes (a box on an absent finding scores 0). DeepMedix-R1 only checks that boxes lie
    inside the image; here a box must overlap the right finding. No box: 0.

:class:`RewardTarget` holds what the rewards check against; :func:`reward_functions` wraps the
rewards for TRL's ``GRPOTrainer`` (one callable per reward, each with its own ``__name__``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxbench.labels import DISEASE_SYNONYMS
from cxbench.parsing import final_answer, parse_choice, parse_ranked_labels, split_reasoning

#: Weights of CX-Mind's total reward: 0.1 * format + 0.9 * outcome (+ gated process rewards).
FORMAT_WEIGHT = 0.1
OUTCOME_WEIGHT = 0.9
CONSISTENCY_WEIGHT = 0.2
#: The think-text weight is not fixed by our sources; 0.2 (as consistency) is our choice.
THINK_WEIGHT = 0.2
GROUNDING_WEIGHT = 0.2
#: BLEU-1 / ROUGE-L mix of the think-text reward.
THINK_BLEU1 = 0.3
THINK_ROUGE_L = 0.7
#: EMA smoothing of the conditional gate.
GATE_ALPHA = 0.2

NO_FINDING = "no finding"


@dataclass
class RewardTarget:
    """What a completion is checked against (built by :mod:`reference_training.data`).

    ``kind`` is ``"closed"`` (``choices`` and the gold ``letter``) or ``"open"`` (gold disease
    ``labels``, empty for a normal study). ``reference`` is the reference reasoning (the think
    texts of the report-grounded interleaved answer). ``findings`` (``label``, ``box``) and
    ``image_size`` serve the grounded reward.
    """

    kind: str
    choices: list[str] = field(default_factory=list)
    letter: str = ""
    labels: list[str] = field(default_factory=list)
    reference: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)
    image_size: tuple[int, int] | None = None
    #: a yes/no question (choices ``yes`` / ``no``): the finding it asks about
    asked: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("closed", "open"):
            raise ValueError(f"RewardTarget.kind must be 'closed' or 'open', not {self.kind!r}")
        if self.kind == "closed" and (not self.choices or self.letter not in _letters(self.choices)):
            raise ValueError(
                f"a closed RewardTarget needs choices and a gold letter among them, got {self.letter!r}"
            )

    def sample(self) -> Any:
        """A cxbench Sample carrying this target (what cxbench's reasoning analysis reads)."""
        from cxbench.schema import Sample

        findings = [dict(f) for f in self.findings]
        if self.kind == "open" and not findings:  # the gold set is the set of findings
            findings = [{"label": label} for label in self.labels]
        metadata: dict[str, Any] = {"findings": findings}
        if self.image_size:
            metadata["image_size"] = list(self.image_size)
        query: dict[str, Any] = {}
        if self.kind == "closed" and self.asked:  # yes/no: verdicts are about the asked finding
            target: Any = "yes" if self.letter == "A" else "no"
            choices: list[str] | None = None
            query = {"finding": self.asked}
        elif self.kind == "closed":
            target, choices = self.letter, list(self.choices)
        else:
            target, choices = list(self.labels), None
        return Sample(
            id="", images=[], question="", target=target, choices=choices, query=query, metadata=metadata
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "choices": self.choices,
                "letter": self.letter,
                "labels": self.labels,
                "reference": self.reference,
                "findings": self.findings,
                "image_size": list(self.image_size) if self.image_size else None,
                "asked": self.asked,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> RewardTarget:
        data = json.loads(text)
        size = data.get("image_size")
        return cls(
            kind=data["kind"],
            choices=list(data.get("choices") or []),
            letter=data.get("letter") or "",
            labels=list(data.get("labels") or []),
            reference=data.get("reference") or "",
            findings=list(data.get("findings") or []),
            image_size=(int(size[0]), int(size[1])) if size else None,
            asked=data.get("asked") or "",
        )


def _letters(choices: Sequence[str]) -> str:
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(choices)]


# ----------------------------------------------------------------------------------------
# CX-Mind's rewards
# ----------------------------------------------------------------------------------------


def format_reward(completion: str) -> float:
    """1.0 when ``completion`` is one or more think/answer pairs and nothing else, else 0.0."""
    return float(split_reasoning(completion).well_formed)


def closed_outcome_reward(completion: str, choices: Sequence[str], letter: str) -> float:
    """1.0 when the final answer picks the gold option ``letter`` among ``choices``, else 0.0."""
    return float(parse_choice(completion, list(choices)) == letter)


def disease_set(text: str) -> set[str]:
    """The diseases (canonical names of the 14) named, not negated, in the final answer of ``text``."""
    return set(parse_ranked_labels(text, DISEASE_SYNONYMS))


def micro_f1(predicted: set[str], gold: set[str]) -> float:
    """F1 of one predicted set against one gold set (both empty: 1.0)."""
    if not predicted and not gold:
        return 1.0
    true_positives = len(predicted & gold)
    return 2 * true_positives / (len(predicted) + len(gold))


def open_outcome_reward(completion: str, labels: Sequence[str]) -> float:
    """micro-F1 between the final answer's disease set and the gold ``labels``.

    An output with no final answer scores 0 even for a normal study: an empty prediction is only
    a correct "no finding" when the model answered something.
    """
    if not final_answer(completion):
        return 0.0
    gold = {label for label in labels if label != NO_FINDING}
    return micro_f1(disease_set(completion), gold)


def base_reward(format_score: float, outcome_score: float) -> float:
    """CX-Mind's base reward: ``0.1 * format + 0.9 * outcome``."""
    return FORMAT_WEIGHT * format_score + OUTCOME_WEIGHT * outcome_score


def outcome_reward(completion: str, target: RewardTarget) -> float:
    """The closed or open outcome reward, by ``target.kind``."""
    if target.kind == "closed":
        return closed_outcome_reward(completion, target.choices, target.letter)
    return open_outcome_reward(completion, target.labels)


def consistency_reward(completion: str, target: RewardTarget) -> float:
    """1.0 when there is at least one ✅/❌ verdict and every verdict agrees with the gold answer."""
    from cxbench.metrics.reasoning import analyse

    analysis = analyse(completion, target.sample())
    if not analysis.verdicts:
        return 0.0
    for verdict in analysis.verdicts:
        if analysis.facts.truth(verdict.subject) is not verdict.positive:
            return 0.0
    return 1.0


def think_text(completion: str) -> str:
    """All think texts of ``completion``, joined by new lines."""
    return split_reasoning(completion).think_text


def think_similarity(think: str, reference: str) -> float:
    """``0.3 * BLEU-1 + 0.7 * ROUGE-L`` of ``think`` against ``reference`` (cxbench's simple tokens)."""
    from cxbench.metrics.nlg import bleu_stats, corpus_bleu, rouge_l

    if not think.strip() or not reference.strip():
        return 0.0
    bleu1 = corpus_bleu(np.asarray([bleu_stats(think, reference)], dtype=float), 1)
    return THINK_BLEU1 * bleu1 + THINK_ROUGE_L * rouge_l(think, reference)


def think_reward(completion: str, target: RewardTarget, require_correct: bool = False) -> float:
    """Think-text similarity to the reference reasoning; 0 when ``require_correct`` and the final
    answer is wrong (CX-Mind's closed stage)."""
    if require_correct and outcome_reward(completion, target) < 1.0:
        return 0.0
    return think_similarity(think_text(completion), target.reference)


def grounding_reward(completion: str, target: RewardTarget) -> float:
    """Mean IoU of the boxes attached to findings in the reasoning against the ground-truth boxes."""
    from cxbench.metrics.grounding import box_iou
    from cxbench.metrics.reasoning import analyse

    boxes = analyse(completion, target.sample()).grounded_boxes
    if not boxes:
        return 0.0
    truth: dict[str, list[list[float]]] = {}
    for finding in target.findings:
        if finding.get("box") is not None:
            truth.setdefault(finding["label"], []).append([float(v) for v in finding["box"]])
    ious = [max((box_iou(box, t) for t in truth.get(label, ())), default=0.0) for label, box in boxes]
    return float(sum(ious) / len(ious))


# ----------------------------------------------------------------------------------------
# Conditional gating
# ----------------------------------------------------------------------------------------


class OutcomeGate:
    """CX-Mind's conditional process reward: open when the batch mean outcome >= its EMA.

    ``update(mean)`` folds one batch mean into the EMA (``ema = alpha * mean + (1 - alpha) *
    ema``; the first batch sets it) and returns whether the gate is open for that batch. Comparing
    with the EMA after the update is the same as comparing with the EMA before it, because the
    updated EMA lies between the two.
    """

    def __init__(self, alpha: float = GATE_ALPHA) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"gate alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.ema: float | None = None
        self.history: list[tuple[float, float, bool]] = []  # (batch mean, ema, open)
        self._last: tuple[Any, bool] | None = None

    def update(self, batch_mean: float) -> bool:
        batch_mean = float(batch_mean)
        self.ema = batch_mean if self.ema is None else self.alpha * batch_mean + (1 - self.alpha) * self.ema
        is_open = batch_mean >= self.ema - 1e-12
        self.history.append((batch_mean, self.ema, is_open))
        return is_open

    def decide(self, key: Any, outcomes: Sequence[float]) -> bool:
        """The gate of the batch identified by ``key``; updated once per key (every gated reward
        function of one batch asks with the same key)."""
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        is_open = self.update(_global_mean(outcomes))
        self._last = (key, is_open)
        return is_open


def _global_mean(values: Sequence[float]) -> float:
    """Mean over every process of a distributed run (each process scores its own completions)."""
    total, count = float(sum(values)), float(len(values))
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            backend = dist.get_backend()
            device = f"cuda:{torch.cuda.current_device()}" if backend == "nccl" else "cpu"
            buffer = torch.tensor([total, count], dtype=torch.float64, device=device)
            dist.all_reduce(buffer)
            total, count = float(buffer[0]), float(buffer[1])
    except ImportError:  # pragma: no cover - torch is a dependency of training
        pass
    return total / count if count else 0.0


# ----------------------------------------------------------------------------------------
# Totals (evaluation) and TRL reward functions (training)
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the total reward; the process rewards are gated during training."""

    format: float = FORMAT_WEIGHT
    outcome: float = OUTCOME_WEIGHT
    consistency: float = CONSISTENCY_WEIGHT
    think: float = THINK_WEIGHT
    grounding: float = 0.0  # the grounded option: set > 0 to use it

    @classmethod
    def from_mapping(cls, values: Mapping[str, float] | None) -> RewardWeights:
        values = dict(values or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            known = sorted(cls.__dataclass_fields__)
            raise ValueError(f"unknown reward weight(s) {sorted(unknown)}; known: {known}")
        return cls(**{k: float(v) for k, v in values.items()})


def score(completion: str, target: RewardTarget, weights: RewardWeights | None = None) -> dict[str, float]:
    """Every reward of one completion and the total with the process rewards counted (gate open).

    The closed-stage rule applies to closed targets: the think reward needs a correct answer.
    """
    weights = weights or RewardWeights()
    scores = {
        "format": format_reward(completion),
        "outcome": outcome_reward(completion, target),
        "consistency": consistency_reward(completion, target),
        "think": think_reward(completion, target, require_correct=target.kind == "closed"),
        "grounding": grounding_reward(completion, target) if weights.grounding else 0.0,
    }
    scores["base"] = base_reward(scores["format"], scores["outcome"])
    names = RewardWeights.__dataclass_fields__
    scores["total"] = sum(getattr(weights, name) * scores[name] for name in names)
    return scores


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or conversational messages (the assistant turns)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        parts = []
        for message in completion:
            content = message.get("content") if isinstance(message, Mapping) else message
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(p.get("text", "") for p in content if isinstance(p, Mapping))
        return "".join(parts)
    return "" if completion is None else str(completion)


def _batch_key(texts: Sequence[str], trainer_state: Any) -> tuple[Any, str]:
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8", "replace")).hexdigest()
    return (getattr(trainer_state, "global_step", None), digest)


def reward_functions(
    stage: str, weights: RewardWeights | None = None, gate: OutcomeGate | None = None
) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """TRL reward functions and their weights for ``stage`` (``"grpo_closed"`` / ``"grpo_open"``).

    Each function takes ``completions`` and the dataset column ``target`` (a
    :meth:`RewardTarget.to_json` string per completion) and returns one float per completion; each
    has its own ``__name__`` (TRL logs rewards by name). The process rewards share ``gate``.
    Pass the weights to ``GRPOConfig(reward_weights=...)``: TRL sums ``weight * reward``.
    """
    if stage not in ("grpo_closed", "grpo_open"):
        raise ValueError(f"reward functions exist for grpo_closed and grpo_open, not {stage!r}")
    weights = weights or RewardWeights()
    gate = gate or OutcomeGate()
    closed = stage == "grpo_closed"

    def prepare(completions: Sequence[Any], target: Sequence[str]) -> tuple[list[str], list[RewardTarget]]:
        texts = [completion_text(c) for c in completions]
        targets = [RewardTarget.from_json(t) for t in target]
        return texts, targets

    def gated(
        score_one: Callable[[str, RewardTarget], float],
    ) -> Callable[..., list[float]]:
        def reward(completions: Sequence[Any], target: Sequence[str], **kwargs: Any) -> list[float]:
            texts, targets = prepare(completions, target)
            outcomes = [outcome_reward(t, g) for t, g in zip(texts, targets, strict=True)]
            is_open = gate.decide(_batch_key(texts, kwargs.get("trainer_state")), outcomes)
            log_metric = kwargs.get("log_metric")
            if callable(log_metric):
                log_metric("process_gate_open", float(is_open))
                log_metric("outcome_ema", float(gate.ema or 0.0))
            if not is_open:
                return [0.0] * len(texts)
            return [score_one(t, g) for t, g in zip(texts, targets, strict=True)]

        return reward

    def format_fn(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [format_reward(completion_text(c)) for c in completions]

    def outcome_fn(completions: Sequence[Any], target: Sequence[str], **kwargs: Any) -> list[float]:
        texts, targets = prepare(completions, target)
        return [outcome_reward(t, g) for t, g in zip(texts, targets, strict=True)]

    format_fn.__name__ = "format_reward"
    outcome_fn.__name__ = "closed_outcome_reward" if closed else "open_outcome_reward"
    consistency_fn = gated(consistency_reward)
    consistency_fn.__name__ = "consistency_reward"
    think_fn = gated(lambda t, g: think_reward(t, g, require_correct=closed))
    think_fn.__name__ = "think_reward"
    functions = [format_fn, outcome_fn, consistency_fn, think_fn]
    values = [weights.format, weights.outcome, weights.consistency, weights.think]
    if weights.grounding:
        grounding_fn = gated(grounding_reward)
        grounding_fn.__name__ = "grounding_reward"
        functions.append(grounding_fn)
        values.append(weights.grounding)
    return functions, values
