"""The two small torch networks behind ``phantom-cnn`` and their training loops.

- ``FindingNet``: one image -> per-disease presence logit, severity and box.
- ``ChangeNet``: the same finding cropped from the prior and the current image (plus their
  difference) and the disease -> improved / stable / worsened.

Both train on the phantom train split on a CPU in well under a minute. torch is imported
only here, when the model is first used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cxbench.labels import CHANGE_LABELS, DISEASES_14

N_LABELS = len(DISEASES_14)
LABEL_INDEX = {d: i for i, d in enumerate(DISEASES_14)}
CROP = 32
_CHANGE_INDEX = {"improved": 0, "resolved": 0, "stable": 1, "worsened": 2, "new": 2}
_SWAPPED = {0: 2, 1: 1, 2: 0}  # prior/current swapped: improved <-> worsened
assert tuple(CHANGE_LABELS) == ("improved", "stable", "worsened")


def _conv(in_ch: int, out_ch: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
    ]


class FindingNet(nn.Module):
    """Strided conv stages, then a head on a coarse spatial map plus global pooling."""

    def __init__(self, channels: tuple[int, ...], input_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for out_ch in channels:
            layers += _conv(in_ch, out_ch, 2)
            in_ch = out_ch
        grid = input_size // 2 ** len(channels)
        self.features = nn.Sequential(*layers)
        self.squeeze = nn.Conv2d(in_ch, 16, 1)
        self.head = nn.Sequential(nn.Linear(16 * grid * grid + 2 * in_ch, 256), nn.ReLU(), nn.Dropout(0.1))
        self.presence = nn.Linear(256, N_LABELS)
        self.severity = nn.Linear(256, N_LABELS)
        self.boxes = nn.Linear(256, N_LABELS * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        h = self.head(torch.cat([self.squeeze(f).flatten(1), pooled], dim=1))
        return self.presence(h), self.severity(h), torch.sigmoid(self.boxes(h)).view(-1, N_LABELS, 4)


class ChangeNet(nn.Module):
    """3-channel crop (prior, current, current - prior) + disease one-hot -> 3 change classes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*_conv(3, 16, 2), *_conv(16, 32, 2), *_conv(32, 48, 2))
        self.head = nn.Sequential(nn.Linear(2 * 48 + N_LABELS, 64), nn.ReLU(), nn.Linear(64, 3))

    def forward(self, crops: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        f = self.features(crops)
        return self.head(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3)), labels], dim=1))


def finding_targets(findings: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    presence = np.zeros(N_LABELS, np.float32)
    severity = np.zeros(N_LABELS, np.float32)
    boxes = np.zeros((N_LABELS, 4), np.float32)
    for finding in findings:
        i = LABEL_INDEX[finding["label"]]
        presence[i], severity[i], boxes[i] = 1.0, float(finding["severity"]), finding["box"]
    return presence, severity, boxes


def _epochs(n_items: int, epochs: int, batch: int, seed: int, params, lr: float):
    """Yield index batches for ``epochs`` passes, stepping a one-cycle AdamW schedule."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps = epochs * ((n_items + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(n_items, generator=generator)
        for start in range(0, n_items, batch):
            yield order[start : start + batch], optimizer, generator
            schedule.step()


def train_finding_net(
    images: np.ndarray, findings: list[list[dict[str, Any]]], hparams: dict[str, Any], progress: Any = None
) -> FindingNet:
    torch.manual_seed(hparams["seed"])
    x_all = torch.from_numpy(images)
    presence, severity, boxes = (
        torch.from_numpy(np.stack(t)) for t in zip(*map(finding_targets, findings), strict=True)
    )
    # rare diseases would otherwise be predicted absent everywhere: weight positives up
    positives = presence.sum(0)
    pos_weight = ((len(presence) - positives) / positives.clamp(min=1)).clamp(1, 10)
    net = FindingNet(tuple(hparams["channels"]), hparams["input_size"])
    net.train()
    batches = _epochs(len(x_all), hparams["epochs"], 32, hparams["seed"], net.parameters(), 3e-3)
    per_epoch = (len(x_all) + 31) // 32
    for step, (idx, optimizer, generator) in enumerate(batches):
        x = x_all[idx] + 0.02 * torch.randn(x_all[idx].shape, generator=generator)  # light noise
        logits, sev, box = net(x)
        present = presence[idx]
        n_present = present.sum().clamp(min=1)
        loss = (
            F.binary_cross_entropy_with_logits(logits, present, pos_weight=pos_weight)
            + (F.smooth_l1_loss(sev, severity[idx], reduction="none") * present).sum() / n_present
            + 5.0 * (F.l1_loss(box, boxes[idx], reduction="none") * present.unsqueeze(-1)).sum() / n_present
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress is not None and (step + 1) % per_epoch == 0:
            progress.update(1)
    net.eval()
    return net


def crop_pair(prior: np.ndarray, current: np.ndarray, box: list[float]) -> np.ndarray:
    """(3, CROP, CROP) crop of both images around ``box`` (normalised, 15% margin)."""
    size = prior.shape[-1]
    x1, y1, x2, y2 = box
    mx, my = 0.15 * (x2 - x1) + 0.02, 0.15 * (y2 - y1) + 0.02
    a, b = int(np.floor(max(0.0, x1 - mx) * size)), int(np.ceil(min(1.0, x2 + mx) * size))
    c, d = int(np.floor(max(0.0, y1 - my) * size)), int(np.ceil(min(1.0, y2 + my) * size))
    b, d = max(b, a + 2), max(d, c + 2)
    pair = torch.from_numpy(np.stack([prior[c:d, a:b], current[c:d, a:b]]))[None]
    pair = F.interpolate(pair, size=(CROP, CROP), mode="bilinear", align_corners=False)[0]
    return torch.cat([pair, pair[1:2] - pair[0:1]]).numpy()


def union_box(a: list[float], b: list[float]) -> list[float]:
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def train_change_net(
    examples: list[tuple[np.ndarray, np.ndarray, list[float], str, str]], seed: int, epochs: int = 40
) -> ChangeNet:
    """Train on (prior image, current image, box, disease, raw change) examples, each also swapped."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    crops, labels, targets = [], [], []
    for prior, current, box, disease, change in examples:
        for _ in range(2):  # the box as given and a jittered copy, like the noisy predicted boxes
            w, h = box[2] - box[0], box[3] - box[1]
            jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
            jittered = np.clip(np.asarray(box) + jitter, 0, 1).tolist()
            for swap in (False, True):
                first, second = (current, prior) if swap else (prior, current)
                target = _CHANGE_INDEX[change]
                crops.append(crop_pair(first, second, jittered))
                labels.append(LABEL_INDEX[disease])
                targets.append(_SWAPPED[target] if swap else target)
    x_all = torch.from_numpy(np.stack(crops))
    onehot = F.one_hot(torch.tensor(labels), N_LABELS).float()
    y_all = torch.tensor(targets)
    net = ChangeNet()
    net.train()
    for idx, optimizer, _ in _epochs(len(x_all), epochs, 64, seed, net.parameters(), 3e-3):
        loss = F.cross_entropy(net(x_all[idx], onehot[idx]), y_all[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    return net


def classify_change(
    net: ChangeNet, prior: np.ndarray, current: np.ndarray, box: list[float], disease: str
) -> str:
    crops = torch.from_numpy(crop_pair(prior, current, box))[None]
    onehot = F.one_hot(torch.tensor([LABEL_INDEX[disease]]), N_LABELS).float()
    with torch.no_grad():
        return CHANGE_LABELS[int(net(crops, onehot).argmax())]
