"""Deterministic synthetic "phantom" frontal chest radiographs with known findings.

Each case is a PA chest radiograph of a synthetic patient (seeded anatomy: soft tissue,
lungs, heart, mediastinum, spine, ribs, clavicles, diaphragm) with 0-3 of the 14
ChestX-ray14 diseases drawn at severity 1-3, a tight box per finding, a templated report,
and for some cases a prior study of the same patient with per-finding changes.

Side convention: images are stored in the radiological convention, as if facing the
patient. "left" / "right" in the data (``side``, ``region``) are always the PATIENT's
sides, so a patient-left finding appears on the IMAGE's right half (the heart bulges to
the image's right). Boxes are ``[x1, y1, x2, y2]`` normalised to [0, 1] of the image,
x to the right and y downwards.

Everything is a pure function of ``(n_cases, seed, size, prior_fraction)``: case ``i``
draws from ``np.random.default_rng([seed, i])``, so the output is byte-identical whatever
the number of worker processes.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cxbench.data.phantom_render import CHANGE_P, _place, _sample_anatomy, _slots, render
from cxbench.data.phantom_reports import write_report
from cxbench.labels import DISEASES_14
from cxbench.paths import cache_dir

PHANTOM_VERSION: str = "1"


# ----------------------------------------------------------------------------- cases
def _public(f: dict, sev: int, box: list[float]) -> dict[str, Any]:
    keys = ("label", "side", "zone", "region")
    return {"label": f["label"], "severity": int(sev), **{k: f[k] for k in keys[1:]}, "box": box}


def _severities(rng: np.random.Generator, change: str) -> tuple[int, int | None]:
    if change == "worsened":
        cur = int(rng.integers(2, 4))
        return cur, (1 if cur == 3 and rng.random() < 0.3 else cur - 1)
    if change == "improved":
        cur = int(rng.integers(1, 3))
        return cur, (3 if cur == 1 and rng.random() < 0.3 else cur + 1)
    cur = int(rng.integers(1, 4))
    return cur, (cur if change == "stable" else None)


def _build_case(job: tuple) -> dict[str, Any]:
    index, seed, size, kind, single, has_prior, split, out = job
    rng = np.random.default_rng([seed, index])
    an = _sample_anatomy(rng)
    chosen: list[dict] = []
    while kind and not chosen:  # 1: one given finding; 2: two or three compatible findings
        labels = (
            [single]
            if kind == 1
            else [DISEASES_14[i] for i in rng.choice(14, 2 + (rng.random() < 0.4), False)]
        )
        claimed: set = set()
        placed = [_place(rng, an, lab, claimed, "cardiomegaly" in labels) for lab in labels]
        chosen = [f for f in placed if f is not None] if all(placed) else []
    cur, prior, changes = [], [], []
    for f in chosen:
        change = str(rng.choice(list(CHANGE_P), p=list(CHANGE_P.values()))) if has_prior else ""
        s_cur, s_prior = _severities(rng, change) if has_prior else (int(rng.integers(1, 4)), None)
        cur.append((f, s_cur))
        if has_prior:
            changes.append({"label": f["label"], "change": change})
            if s_prior is not None:
                prior.append((f, s_prior))
    if has_prior and (not cur or rng.random() < 0.2):
        taken = {f["label"] for f in chosen}
        claimed = set().union(*[_slots(f["label"], f["side"], f["zone"]) for f in chosen])
        for lab in rng.permutation([d for d in DISEASES_14 if d not in taken]):
            f = _place(rng, an, str(lab), claimed, "cardiomegaly" in taken or lab == "cardiomegaly")
            if f is not None:
                prior.append((f, int(rng.integers(1, 4))))
                changes.append({"label": f["label"], "change": "resolved"})
                break
    case_id = f"ph{index + 1:05d}"
    img, boxes = render(an, cur, size, rng)
    Image.fromarray(img).save(out / "images" / f"{case_id}.png", compress_level=3)
    findings = [_public(f, s, b) for (f, s), b in zip(cur, boxes, strict=True)]
    day = date(2015, 1, 1) + timedelta(days=int(rng.integers(0, 3000)))
    case = {
        "case_id": case_id,
        "patient_id": f"pt{index + 1:05d}",
        "split": split,
        "image": f"images/{case_id}.png",
        "width": size,
        "height": size,
        "view": "PA",
        "study_date": day.isoformat(),
        "findings": findings,
        "report": write_report(findings, rng, changes if has_prior else None),
        "prior": None,
    }
    if has_prior:
        shift = tuple(int(rng.integers(-2, 3)) / size for _ in range(2))
        pimg, pboxes = render(an, prior, size, rng, shift)
        Image.fromarray(pimg).save(out / "images" / f"{case_id}_prior.png", compress_level=3)
        pfind = [_public(f, s, b) for (f, s), b in zip(prior, pboxes, strict=True)]
        case["prior"] = {
            "image": f"images/{case_id}_prior.png",
            "study_date": (day - timedelta(days=int(rng.integers(30, 1100)))).isoformat(),
            "findings": pfind,
            "changes": changes,
            "report": write_report(pfind, rng),
        }
    return case


def _plan(n: int, seed: int, prior_fraction: float) -> list[tuple]:
    """Case kinds, single-finding labels, priors and splits, balanced over the whole set."""
    rng = np.random.default_rng([seed, 2**31 - 1])
    n_norm, n_one = round(0.25 * n), round(0.40 * n)
    kinds = np.array([0] * n_norm + [1] * n_one + [2] * (n - n_norm - n_one))
    rng.shuffle(kinds)
    cycle = [DISEASES_14[i] for _ in range(n_one // 14 + 1) for i in rng.permutation(14)]
    singles = iter(cycle)
    has_prior = np.zeros(n, bool)  # priors go mostly to abnormal cases (a normal one can only "resolve")
    weight = np.where(kinds == 0, 0.3, 1.0)
    has_prior[rng.choice(n, min(n, round(prior_fraction * n)), replace=False, p=weight / weight.sum())] = True
    splits = np.empty(n, object)
    order = rng.permutation(n)
    n_train, n_val = round(0.7 * n), round(0.1 * n)
    splits[order[:n_train]], splits[order[n_train : n_train + n_val]], splits[order[n_train + n_val :]] = (
        "train",
        "val",
        "test",
    )
    return [
        (i, int(k), next(singles) if k == 1 else None, bool(has_prior[i]), str(splits[i]))
        for i, k in enumerate(kinds)
    ]


def _same_meta(root: Path, meta: dict[str, Any]) -> bool:
    try:
        done = (root / "cases.jsonl").exists()
        return done and json.loads((root / "meta.json").read_text()) == meta
    except (OSError, ValueError):
        return False


def _run_job(job: tuple) -> dict[str, Any]:
    return _build_case(job)


def generate(
    out_dir: str | Path,
    n_cases: int = 1500,
    seed: int = 0,
    size: int = 256,
    prior_fraction: float = 0.4,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the phantom data set into ``out_dir`` atomically and return it."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
    try:
        (tmp / "images").mkdir(parents=True)
        jobs = [
            (i, seed, size, k, lab, p, s, tmp) for i, k, lab, p, s in _plan(n_cases, seed, prior_fraction)
        ]
        bar = tqdm(total=n_cases, desc="phantom", unit="case", disable=not progress)
        with open(tmp / "cases.jsonl", "w", encoding="utf-8") as fh:
            if workers > 1:
                import multiprocessing as mp

                with mp.get_context().Pool(workers) as pool:
                    for case in pool.imap(_run_job, jobs, chunksize=8):
                        fh.write(json.dumps(case) + "\n")
                        bar.update()
            else:
                for job in jobs:
                    fh.write(json.dumps(_run_job(job)) + "\n")
                    bar.update()
        bar.close()
        meta = {"name": "phantom", "version": PHANTOM_VERSION, "seed": seed, "n_cases": n_cases, "size": size}
        meta.update(prior_fraction=prior_fraction, labels=list(DISEASES_14))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if _same_meta(out, meta):  # another process built the identical data set meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        elif out.exists():  # replace an older data set: move it aside first, then delete it
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def default_root(n_cases: int = 1500, seed: int = 0, size: int = 256, prior_fraction: float = 0.4) -> Path:
    """Where the data set with these parameters lives in the user cache."""
    return cache_dir() / "phantom" / f"v{PHANTOM_VERSION}-n{n_cases}-s{seed}-{size}-p{prior_fraction}"


def ensure_phantom(root: str | Path | None = None, **generate_kwargs: Any) -> Path:
    """Return ``root`` (default: :func:`default_root`), generating the data set if missing."""
    if root is None:
        keys = ("n_cases", "seed", "size", "prior_fraction")
        root = default_root(**{k: generate_kwargs[k] for k in keys if k in generate_kwargs})
    root = Path(root)
    if not (root / "cases.jsonl").exists():
        generate(root, **generate_kwargs)
    return root


def load_cases(root: str | Path) -> list[dict[str, Any]]:
    """Read ``cases.jsonl`` of a data set, with image paths made absolute."""
    root = Path(root).resolve()
    cases = []
    with open(root / "cases.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            case = json.loads(line)
            case["image"] = str(root / case["image"])
            if case.get("prior"):
                case["prior"]["image"] = str(root / case["prior"]["image"])
            cases.append(case)
    return cases
