"""Reference baselines that use only the task's train split: ``prior`` and ``random``.

They read the structured question (``Request.query`` / ``choices``), never the answer, and
answer in plain text that goes through the task's parser like any model's output.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from cxbench.labels import CHANGE_LABELS, DISEASES_14
from cxbench.models.base import Model, ModelError
from cxbench.schema import Request, Response

if TYPE_CHECKING:
    from cxbench.tasks import Task

_LETTERS = "ABCDEFGHIJ"


def format_box(box: list[float]) -> str:
    """A normalised box as text the box parser reads back (0-1 scale)."""
    return "[" + ", ".join(f"{v:.4f}" for v in box) + "]"


def _key(query: dict[str, Any]) -> str:
    return f"{query.get('kind', '')}|{query.get('finding', '')}"


def _train_samples(task: Task) -> list:
    try:
        samples = list(task.samples(split="train"))
    except Exception as exc:  # the adapter's own error says what is missing
        raise ModelError(f"baseline needs the train split of task {task.name!r}: {exc}") from exc
    if not samples:
        raise ModelError(f"baseline needs train samples, but task {task.name!r} has none in split 'train'")
    return samples


class PriorModel(Model):
    """Answers with the most frequent train answer for the same kind of question.

    yes/no and change questions: the majority answer for that finding (else overall);
    multiple choice: the option most often correct in train; open questions: the most
    frequent answer; boxes: the mean train box of the finding; diagnosis: diseases ranked by
    train frequency; reports: the most frequent train report.
    """

    name = "prior"

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, Any]] = {}
        self._task: str | None = None

    def prepare(self, task: Task) -> None:
        by_key: dict[str, Counter] = defaultdict(Counter)
        overall: Counter = Counter()
        correct_options: Counter = Counter()
        boxes: dict[str, list] = defaultdict(list)
        for sample in _train_samples(task):
            target = sample.target
            if task.family == "localization":
                boxes[sample.query.get("finding", "")].append(target[0])
                continue
            if sample.choices:
                correct_options[sample.choices[_LETTERS.index(target)]] += 1
                continue
            value = json.dumps(target)
            by_key[_key(sample.query)][value] += 1
            overall[value] += 1
        table = {
            "by_key": {k: c.most_common(1)[0][0] for k, c in sorted(by_key.items())},
            "overall": overall.most_common(1)[0][0] if overall else None,
            "option_rank": [o for o, _ in correct_options.most_common()],
            "boxes": {k: np.mean(v, axis=0).round(4).tolist() for k, v in sorted(boxes.items())},
            "mean_box": np.mean([b for v in boxes.values() for b in v], axis=0).round(4).tolist()
            if boxes
            else None,
            "diseases": [json.loads(v) for v, _ in overall.most_common()],
        }
        self._tables[task.name] = table
        self._task = task.name

    def identity(self) -> str:
        table = self._tables.get(self._task or "", {})
        digest = hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()[:16]
        return f"prior-v1:{self._task}:{digest}"

    def _answer(self, request: Request) -> str:
        table = self._tables.get(request.task)
        if table is None:
            raise ModelError(f"prior: task {request.task!r} was not prepared")
        if request.family == "localization":
            box = table["boxes"].get(request.query.get("finding", ""), table["mean_box"])
            return format_box(box)
        if request.choices:
            rank = {option: i for i, option in enumerate(table["option_rank"])}
            best = min(range(len(request.choices)), key=lambda i: rank.get(request.choices[i], len(rank)))
            return _LETTERS[best]
        if request.family == "diagnosis_recall1":
            ranked = [d for d in table["diseases"] if d in DISEASES_14]
            ranked += [d for d in DISEASES_14 if d not in ranked]
            return ", ".join(ranked)
        value = table["by_key"].get(_key(request.query), table["overall"])
        answer = json.loads(value) if value is not None else ""
        return answer if isinstance(answer, str) else ", ".join(map(str, answer))

    def generate(self, requests: list[Request]) -> list[Response]:
        return [Response(text=self._answer(r)) for r in requests]


class RandomModel(Model):
    """Seeded random answers; each answer depends only on (seed, sample id), not on batching."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._answers: dict[str, dict[str, list]] = {}

    def prepare(self, task: Task) -> None:
        pools: dict[str, set] = defaultdict(set)
        try:
            train = _train_samples(task)
        except ModelError:
            # boxes, yes/no, options, change words and disease rankings are drawn without
            # train data; only free-text answers need the train pool
            if task.family in ("vqa_open", "report_generation", "text"):
                raise
            train = []
        for sample in train:
            if isinstance(sample.target, str) and not sample.choices:
                pools[_key(sample.query)].add(sample.target)
                pools["*"].add(sample.target)
        self._answers[task.name] = {k: sorted(v) for k, v in sorted(pools.items())}

    def identity(self) -> str:
        digest = hashlib.sha256(json.dumps(self._answers, sort_keys=True).encode()).hexdigest()[:16]
        return f"random-v1:seed={self.seed}:{digest}"

    def config(self) -> dict:
        return {"seed": self.seed}

    def _answer(self, request: Request) -> str:
        digest = hashlib.sha256(f"{self.seed}/{request.task}/{request.sample_id}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        if request.family == "localization":
            x1, y1 = rng.uniform(0, 0.8, size=2)
            w, h = rng.uniform(0.05, 0.5, size=2)
            return format_box([x1, y1, min(x1 + w, 1.0), min(y1 + h, 1.0)])
        if request.choices:
            return _LETTERS[int(rng.integers(len(request.choices)))]
        if request.family == "vqa_closed":
            return str(rng.choice(["yes", "no"]))
        if request.family == "temporal_comparison":
            return str(rng.choice(CHANGE_LABELS))
        if request.family == "diagnosis_recall1":
            return ", ".join(DISEASES_14[i] for i in rng.permutation(len(DISEASES_14)))
        pools = self._answers.get(request.task, {})
        pool = pools.get(_key(request.query)) or pools.get("*") or [""]
        return pool[int(rng.integers(len(pool)))]

    def generate(self, requests: list[Request]) -> list[Response]:
        return [Response(text=self._answer(r)) for r in requests]
