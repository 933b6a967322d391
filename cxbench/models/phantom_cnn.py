"""``phantom-cnn``: a small CNN trained on the phantom train split, answering every task family.

One network predicts, for each of the 14 diseases, presence (logit), severity (0 = absent,
1-3) and a box. Answers are built from those predictions:

- yes/no and multiple choice: presence probabilities ("no finding" = all absent);
- open "what": the most probable disease (or "no finding"); "where": the region of the
  nearest train finding of that disease to the predicted box;
- reports: retrieval: the train report whose findings (disease and side) best match the
  predicted ones (exact set first, then the closest label set), the median-length one
  among equals;
- temporal: a second small network classifies crops of the finding (at the union of its
  predicted boxes) from the prior and the current image;
- localization: the predicted box; diagnosis: diseases ranked by probability.

Training takes well under a minute on 2 CPU cores; weights are cached in the user cache,
keyed by the data set and the hyper-parameters, and loaded with ``weights_only=True``.
Images go through the network one at a time, so answers never depend on the batch size.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxbench.labels import DISEASES_14
from cxbench.models.base import Model, ModelError
from cxbench.models.baselines import format_box
from cxbench.paths import cache_dir
from cxbench.schema import Request, Response

if TYPE_CHECKING:
    from cxbench.tasks import Task

NO_FINDING = "no finding"
_LETTERS = "ABCDEFGHIJ"
_INDEX = {d: i for i, d in enumerate(DISEASES_14)}


def _load_image(path: str, size: int) -> np.ndarray:
    from PIL import Image

    from cxbench.images import load_image

    gray = load_image(path).convert("L").resize((size, size), Image.BILINEAR)
    return np.asarray(gray, dtype=np.float32) / 255.0


class PhantomCNNModel(Model):
    """See the module docstring. Args: ``epochs``, ``input_size``, ``seed``, ``train_fraction``."""

    name = "phantom-cnn"

    def __init__(
        self,
        epochs: int = 20,
        input_size: int = 128,
        seed: int = 0,
        train_fraction: float = 1.0,
        threshold: float = 0.5,
    ) -> None:
        self.hparams = {
            "epochs": int(epochs),
            "input_size": int(input_size),
            "seed": int(seed),
            "train_fraction": float(train_fraction),
            "channels": [8, 16, 32, 64, 96],
            "version": 3,
        }
        self.threshold = float(threshold)
        self._net = None
        self._change_net = None
        self._weights_digest = ""
        self._data_id: str | None = None
        self._regions: dict[str, list[tuple[float, float, dict[str, Any]]]] = {}
        self._reports: dict[frozenset, list[str]] = {}
        self._memo: dict[str, dict[str, np.ndarray]] = {}

    # -- training ---------------------------------------------------------------------------
    def prepare(self, task: Task) -> None:
        from cxbench.data.adapters import PhantomAdapter

        if task.dataset.get("name") != "phantom":
            raise ModelError(
                f"phantom-cnn is trained on the phantom data set; task {task.name!r} uses "
                f"{task.dataset.get('name')!r}"
            )
        adapter = PhantomAdapter()
        params = task.dataset_params()
        data_id = adapter.identity(params)
        if self._net is not None and data_id == self._data_id:
            return
        cases = adapter.cases(params)
        self._data_id = data_id
        self._fit_regions(cases)
        key = hashlib.sha256(json.dumps([data_id, self.hparams], sort_keys=True).encode()).hexdigest()[:16]
        path = cache_dir() / "models" / f"phantom-cnn-{key}.pt"
        if not path.is_file():
            self._train(cases, path)
        self._load(path)

    def _fit_regions(self, cases: list[dict[str, Any]]) -> None:
        regions: dict[str, list] = {}
        reports: dict[frozenset, list[str]] = {}
        for case in cases:
            if case["split"] != "train":
                continue
            key = frozenset((f["label"], f.get("side")) for f in case["findings"])
            reports.setdefault(key, []).append(case["report"]["findings"])
            for finding in case["findings"]:
                x1, y1, x2, y2 = finding["box"]
                regions.setdefault(finding["label"], []).append(((x1 + x2) / 2, (y1 + y2) / 2, finding))
        self._regions = regions
        # the median-length report of each finding set, so retrieval is deterministic
        self._reports = {}
        for key, texts in reports.items():
            ordered = sorted(texts, key=lambda r: (len(r), r))
            self._reports[key] = [ordered[len(ordered) // 2]]

    def _retrieve_report(self, findings: list[dict[str, Any]]) -> str:
        key = frozenset((f["label"], f.get("side")) for f in findings)
        if key in self._reports:
            return self._reports[key][0]
        labels = {label for label, _ in key}

        def similarity(other: frozenset) -> tuple[float, int]:
            other_labels = {label for label, _ in other}
            union = labels | other_labels
            jaccard = len(labels & other_labels) / len(union) if union else 1.0
            return (jaccard, len(key & other))

        best = max(sorted(self._reports, key=lambda k: sorted(map(str, k))), key=similarity)
        return self._reports[best][0]

    def _training_items(self, cases: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
        items = []
        for case in cases:
            if case["split"] != "train":
                continue
            items.append((case["image"], case["findings"]))
            if case.get("prior"):
                items.append((case["prior"]["image"], case["prior"]["findings"]))
        rng = np.random.default_rng(self.hparams["seed"])
        keep = max(1, int(round(len(items) * self.hparams["train_fraction"])))
        return [items[i] for i in sorted(rng.permutation(len(items))[:keep])]

    def _change_examples(self, cases: list[dict[str, Any]], size: int) -> list[tuple]:
        from cxbench.models.phantom_nets import union_box

        examples = []
        for case in cases:
            prior = case.get("prior")
            if case["split"] != "train" or not prior:
                continue
            before = {f["label"]: f["box"] for f in prior["findings"]}
            after = {f["label"]: f["box"] for f in case["findings"]}
            prior_image, current_image = _load_image(prior["image"], size), _load_image(case["image"], size)
            for change in prior["changes"]:
                boxes = [b for b in (before.get(change["label"]), after.get(change["label"])) if b]
                box = boxes[0] if len(boxes) == 1 else union_box(*boxes)
                examples.append((prior_image, current_image, box, change["label"], change["change"]))
        return examples

    def _train(self, cases: list[dict[str, Any]], path: Path) -> None:
        import torch
        from tqdm.auto import tqdm

        from cxbench.models.phantom_nets import train_change_net, train_finding_net
        from cxbench.results import atomic_write_text

        torch.set_num_threads(min(2, torch.get_num_threads()))
        started = time.perf_counter()
        size = self.hparams["input_size"]
        items = self._training_items(cases)
        images = np.stack([_load_image(image, size) for image, _ in items])[:, None]
        with tqdm(
            total=self.hparams["epochs"], desc="training phantom-cnn", unit="epoch", leave=False
        ) as bar:
            finding_net = train_finding_net(images, [f for _, f in items], self.hparams, progress=bar)
        change_net = train_change_net(self._change_examples(cases, size), seed=self.hparams["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"finding": finding_net.state_dict(), "change": change_net.state_dict()}, tmp)
        tmp.replace(path)
        info = {"hparams": self.hparams, "data": self._data_id, "train_images": len(items)}
        info["seconds"] = round(time.perf_counter() - started, 1)
        atomic_write_text(path.with_suffix(".json"), json.dumps(info, indent=2))

    def _load(self, path: Path) -> None:
        import torch

        from cxbench.models.phantom_nets import ChangeNet, FindingNet

        finding_net = FindingNet(tuple(self.hparams["channels"]), self.hparams["input_size"])
        change_net = ChangeNet()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            finding_net.load_state_dict(state["finding"])
            change_net.load_state_dict(state["change"])
        except Exception as exc:
            raise ModelError(
                f"phantom-cnn: cannot load cached weights {path} ({exc}); delete the file"
            ) from exc
        self._net, self._change_net = finding_net.eval(), change_net.eval()
        self._weights_digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        self._memo.clear()

    def identity(self) -> str:
        if self._net is None:
            raise ModelError("phantom-cnn: prepare() must run before identity()")
        return f"phantom-cnn:{self._weights_digest}:t={self.threshold}"

    def config(self) -> dict:
        return {**self.hparams, "threshold": self.threshold}

    # -- inference --------------------------------------------------------------------------
    def _predict(self, path: str) -> dict[str, np.ndarray]:
        if path not in self._memo:
            import torch

            image = _load_image(path, self.hparams["input_size"])
            with torch.no_grad():
                logits, severity, boxes = self._net(torch.from_numpy(image)[None, None])
            self._memo[path] = {
                "image": image,
                "prob": torch.sigmoid(logits)[0].double().numpy(),
                "severity": severity[0].double().numpy(),
                "boxes": boxes[0].double().numpy(),
            }
        return self._memo[path]

    def _nearest_train_finding(self, label: str, box: np.ndarray) -> dict[str, Any]:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        candidates = self._regions.get(label) or [(0.5, 0.5, {"region": "", "side": "", "zone": None})]
        return min(candidates, key=lambda c: (c[0] - cx) ** 2 + (c[1] - cy) ** 2)[2]

    def _findings(self, pred: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        findings = []
        for i in np.argsort(-pred["prob"]):
            if pred["prob"][i] < self.threshold:
                break
            label = DISEASES_14[i]
            near = self._nearest_train_finding(label, pred["boxes"][i])
            findings.append(
                {
                    "label": label,
                    "severity": int(np.clip(np.rint(pred["severity"][i]), 1, 3)),
                    "side": near.get("side"),
                    "zone": near.get("zone"),
                    "region": near.get("region"),
                    "box": pred["boxes"][i].tolist(),
                }
            )
        return findings

    def _answer(self, request: Request) -> str:
        pred = self._predict(request.images[-1])
        prob = pred["prob"]
        finding = request.query.get("finding")
        family = request.family
        if request.choices:
            no_finding = float(np.prod(1 - prob))
            scores = [
                no_finding if c == NO_FINDING else prob[_INDEX[c]] if c in _INDEX else -1.0
                for c in request.choices
            ]
            return _LETTERS[int(np.argmax(scores))]
        if family == "vqa_closed":
            return "yes" if prob[_INDEX[finding]] >= self.threshold else "no"
        if family == "localization":
            return format_box(pred["boxes"][_INDEX[finding]].tolist())
        if family == "diagnosis_recall1":
            return ", ".join(DISEASES_14[i] for i in np.argsort(-prob, kind="stable"))
        if family == "temporal_comparison":
            from cxbench.models.phantom_nets import classify_change, union_box

            prior = self._predict(request.images[0])
            i = _INDEX[finding]
            box = union_box(prior["boxes"][i].tolist(), pred["boxes"][i].tolist())
            return classify_change(self._change_net, prior["image"], pred["image"], box, finding)
        if family == "report_generation":
            return self._retrieve_report(self._findings(pred))
        if request.query.get("kind") == "where" and finding in _INDEX:
            return self._nearest_train_finding(finding, pred["boxes"][_INDEX[finding]]).get("region") or ""
        top = int(np.argmax(prob))
        return DISEASES_14[top] if prob[top] >= self.threshold else NO_FINDING

    def generate(self, requests: list[Request]) -> list[Response]:
        if self._net is None:
            raise ModelError("phantom-cnn: prepare() must run before generate()")
        return [Response(text=self._answer(r)) for r in requests]
