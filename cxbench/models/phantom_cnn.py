"""``phantom-cnn``: a small CNN trained on the phantom train split, answering every task family.

One network predicts, for each of the 14 diseases, presence (logit), severity (0 = absent,
1-3) and a box. Answers are built from those predictions:

- yes/no and multiple choice: presence probabilities ("no finding" = all absent);
- open "what": the most probable disease (or "no finding"); "where": the region of the
  nearest train finding of that disease to the predicted box;
- reports: the phantom report writer applied to the predicted findings;
- temporal: predicted severity on the current minus the prior image;
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
_N = len(DISEASES_14)
_INDEX = {d: i for i, d in enumerate(DISEASES_14)}


def _build_net(channels: tuple[int, ...], input_size: int):
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    in_ch = 1
    for out_ch in channels:
        layers += [
            nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        ]
        in_ch = out_ch
    grid = input_size // 2 ** len(channels)

    class PhantomNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.squeeze = nn.Conv2d(in_ch, 16, 1)
            self.head = nn.Sequential(
                nn.Linear(16 * grid * grid + 2 * in_ch, 256), nn.ReLU(inplace=True), nn.Dropout(0.1)
            )
            self.presence = nn.Linear(256, _N)
            self.severity = nn.Linear(256, _N)
            self.boxes = nn.Linear(256, _N * 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            f = self.features(x)
            pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
            h = self.head(torch.cat([self.squeeze(f).flatten(1), pooled], dim=1))
            boxes = torch.sigmoid(self.boxes(h)).view(-1, _N, 4)
            return self.presence(h), self.severity(h), boxes

    return PhantomNet()


def _load_image(path: str, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        gray = image.convert("L").resize((size, size), Image.BILINEAR)
        return np.asarray(gray, dtype=np.float32) / 255.0


def _targets(findings: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    presence = np.zeros(_N, np.float32)
    severity = np.zeros(_N, np.float32)
    boxes = np.zeros((_N, 4), np.float32)
    for finding in findings:
        i = _INDEX[finding["label"]]
        presence[i], severity[i], boxes[i] = 1.0, float(finding["severity"]), finding["box"]
    return presence, severity, boxes


class PhantomCNNModel(Model):
    """See the module docstring. Args: ``epochs``, ``input_size``, ``seed``, ``train_fraction``."""

    name = "phantom-cnn"

    def __init__(
        self,
        epochs: int = 14,
        input_size: int = 128,
        seed: int = 0,
        train_fraction: float = 1.0,
        threshold: float = 0.5,
        change_margin: float = 0.5,
    ) -> None:
        self.hparams = {
            "epochs": int(epochs),
            "input_size": int(input_size),
            "seed": int(seed),
            "train_fraction": float(train_fraction),
            "channels": [16, 32, 64, 96],
            "version": 1,
        }
        self.threshold = float(threshold)
        self.change_margin = float(change_margin)
        self._net = None
        self._weights_digest = ""
        self._data_id: str | None = None
        self._regions: dict[str, list[tuple[float, float, dict[str, Any]]]] = {}
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
        for case in cases:
            if case["split"] != "train":
                continue
            for finding in case["findings"]:
                x1, y1, x2, y2 = finding["box"]
                regions.setdefault(finding["label"], []).append(((x1 + x2) / 2, (y1 + y2) / 2, finding))
        self._regions = regions

    def _training_set(self, cases: list[dict[str, Any]]) -> tuple[np.ndarray, ...]:
        items = []
        for case in cases:
            if case["split"] != "train":
                continue
            items.append((case["image"], case["findings"]))
            if case.get("prior"):
                items.append((case["prior"]["image"], case["prior"]["findings"]))
        rng = np.random.default_rng(self.hparams["seed"])
        keep = max(1, int(round(len(items) * self.hparams["train_fraction"])))
        items = [items[i] for i in sorted(rng.permutation(len(items))[:keep])]
        size = self.hparams["input_size"]
        images = np.stack([_load_image(path, size) for path, _ in items])[:, None]
        presence, severity, boxes = (np.stack(t) for t in zip(*(_targets(f) for _, f in items), strict=True))
        return images, presence, severity, boxes

    def _train(self, cases: list[dict[str, Any]], path: Path) -> None:
        import torch
        from torch.nn import functional as F

        from cxbench.results import atomic_write_text

        torch.manual_seed(self.hparams["seed"])
        started = time.perf_counter()
        images, presence, severity, boxes = (torch.from_numpy(a) for a in self._training_set(cases))
        net = _build_net(tuple(self.hparams["channels"]), self.hparams["input_size"])
        epochs = self.hparams["epochs"]
        optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
        steps_per_epoch = (len(images) + 31) // 32
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=3e-3, total_steps=epochs * steps_per_epoch
        )
        generator = torch.Generator().manual_seed(self.hparams["seed"])
        from tqdm.auto import tqdm

        net.train()
        for _ in tqdm(range(epochs), desc="training phantom-cnn", unit="epoch", leave=False):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images), 32):
                idx = order[start : start + 32]
                x = images[idx]
                x = x + 0.02 * torch.randn(x.shape, generator=generator)  # light noise augmentation
                logits, sev, box = net(x)
                mask = presence[idx].unsqueeze(-1)
                loss = (
                    F.binary_cross_entropy_with_logits(logits, presence[idx])
                    + 0.3 * F.smooth_l1_loss(sev, severity[idx])
                    + 5.0
                    * (F.l1_loss(box, boxes[idx], reduction="none") * mask).sum()
                    / mask.sum().clamp(min=1)
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(net.state_dict(), tmp)
        tmp.replace(path)
        info = {"hparams": self.hparams, "data": self._data_id, "train_images": len(images)}
        info["seconds"] = round(time.perf_counter() - started, 1)
        atomic_write_text(path.with_suffix(".json"), json.dumps(info, indent=2))

    def _load(self, path: Path) -> None:
        import torch

        net = _build_net(tuple(self.hparams["channels"]), self.hparams["input_size"])
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise ModelError(
                f"phantom-cnn: cannot load cached weights {path} ({exc}); delete the file"
            ) from exc
        net.eval()
        self._net = net
        self._weights_digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        self._memo.clear()

    def identity(self) -> str:
        if self._net is None:
            raise ModelError("phantom-cnn: prepare() must run before identity()")
        return f"phantom-cnn:{self._weights_digest}:t={self.threshold}:m={self.change_margin}"

    def config(self) -> dict:
        return {**self.hparams, "threshold": self.threshold, "change_margin": self.change_margin}

    # -- inference --------------------------------------------------------------------------
    def _predict(self, path: str) -> dict[str, np.ndarray]:
        if path not in self._memo:
            import torch

            x = torch.from_numpy(_load_image(path, self.hparams["input_size"]))[None, None]
            with torch.no_grad():
                logits, severity, boxes = self._net(x)
            self._memo[path] = {
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
            prior = self._predict(request.images[0])
            i = _INDEX[finding]
            delta = pred["severity"][i] * (prob[i] >= 0.2) - prior["severity"][i] * (prior["prob"][i] >= 0.2)
            if delta > self.change_margin:
                return "worsened"
            return "improved" if delta < -self.change_margin else "stable"
        if family == "report_generation":
            from cxbench.data.phantom_reports import write_report

            digest = hashlib.sha256(request.sample_id.encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            return write_report(self._findings(pred), rng)["findings"]
        if request.query.get("kind") == "where" and finding in _INDEX:
            return self._nearest_train_finding(finding, pred["boxes"][_INDEX[finding]]).get("region") or ""
        top = int(np.argmax(prob))
        return DISEASES_14[top] if prob[top] >= self.threshold else NO_FINDING

    def generate(self, requests: list[Request]) -> list[Response]:
        if self._net is None:
            raise ModelError("phantom-cnn: prepare() must run before generate()")
        return [Response(text=self._answer(r)) for r in requests]
