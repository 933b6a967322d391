"""Tests of the synthetic phantom CXR generator and its report writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxbench.data import phantom, phantom_render
from cxbench.data.phantom_reports import IMPRESSION_NORMAL, write_report
from cxbench.labels import DISEASE_SYNONYMS, DISEASES_14

N, SIZE = 40, 128
CHANGES = {"worsened", "improved", "stable", "new", "resolved"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ph") / "w1"
    return phantom.generate(out, n_cases=N, seed=3, size=SIZE, workers=1, progress=False)


@pytest.fixture(scope="module")
def cases(data_root: Path) -> list[dict]:
    return phantom.load_cases(data_root)


def _mentions(text: str, label: str) -> bool:
    return any(s in text.lower() for s in DISEASE_SYNONYMS[label])


def test_deterministic_and_independent_of_workers(data_root: Path, tmp_path: Path) -> None:
    other = phantom.generate(tmp_path / "w2", n_cases=N, seed=3, size=SIZE, workers=2, progress=False)
    for name in ("cases.jsonl", "meta.json"):
        assert (data_root / name).read_bytes() == (other / name).read_bytes()
    images = sorted(p.name for p in (data_root / "images").iterdir())
    assert images == sorted(p.name for p in (other / "images").iterdir())
    for name in images:
        assert (data_root / "images" / name).read_bytes() == (other / "images" / name).read_bytes()


def test_different_seed_differs(data_root: Path, tmp_path: Path) -> None:
    other = phantom.generate(tmp_path / "s4", n_cases=N, seed=4, size=SIZE, workers=1, progress=False)
    assert (data_root / "cases.jsonl").read_bytes() != (other / "cases.jsonl").read_bytes()
    a, b = (np.asarray(Image.open(r / "images" / "ph00001.png")) for r in (data_root, other))
    assert not np.array_equal(a, b)


def test_meta_and_layout(data_root: Path, cases: list[dict]) -> None:
    meta = json.loads((data_root / "meta.json").read_text())
    assert meta["name"] == "phantom" and meta["version"] == phantom.PHANTOM_VERSION
    assert (meta["n_cases"], meta["seed"], meta["size"], meta["prior_fraction"]) == (N, 3, SIZE, 0.4)
    assert meta["labels"] == list(DISEASES_14)
    assert [c["case_id"] for c in cases] == [f"ph{i + 1:05d}" for i in range(N)]
    for case in cases:
        assert Path(case["image"]).is_absolute()
        with Image.open(case["image"]) as im:
            assert im.mode == "L" and im.size == (SIZE, SIZE)
        assert case["view"] == "PA" and case["width"] == case["height"] == SIZE


def test_case_mix(cases: list[dict]) -> None:
    counts = [len(c["findings"]) for c in cases]
    assert counts.count(0) == round(0.25 * N)
    assert counts.count(1) == round(0.40 * N)
    assert all(n in (2, 3) for n in counts if n > 1)
    assert sum(c["prior"] is not None for c in cases) == round(0.4 * N)


def test_findings_schema_and_boxes(cases: list[dict]) -> None:
    for case in cases:
        findings = case["findings"] + (case["prior"]["findings"] if case["prior"] else [])
        labels = [f["label"] for f in case["findings"]]
        assert len(labels) == len(set(labels))
        for f in findings:
            assert f["label"] in DISEASES_14
            assert f["severity"] in (1, 2, 3)
            assert f["side"] in ("left", "right", "bilateral", "midline")
            assert f["zone"] in ("upper", "middle", "lower", None)
            assert isinstance(f["region"], str) and f["region"]
            x1, y1, x2, y2 = f["box"]
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
            assert all(round(v, 4) == v for v in f["box"])


def test_side_convention() -> None:
    """A patient-left nodule is drawn on the image's right half."""
    rng = np.random.default_rng(0)
    an = phantom_render._sample_anatomy(rng)
    for side in ("left", "right"):
        f = None
        while f is None or f["side"] != side:
            f = phantom_render._place(rng, an, "nodule", set(), False)
        _, (box,) = phantom_render.render(an, [(f, 2)], SIZE, np.random.default_rng(1))
        centre = (box[0] + box[2]) / 2
        assert centre > 0.5 if side == "left" else centre < 0.5


def test_splits_disjoint_by_patient(cases: list[dict]) -> None:
    by_split: dict[str, set[str]] = {}
    for case in cases:
        by_split.setdefault(case["split"], set()).add(case["patient_id"])
    assert set(by_split) == {"train", "val", "test"}
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"])
    assert not by_split["val"] & by_split["test"]
    assert len(by_split["train"]) == round(0.7 * N)


def test_priors_and_changes(cases: list[dict]) -> None:
    seen = set()
    for case in (c for c in cases if c["prior"]):
        prior = case["prior"]
        assert Path(prior["image"]).exists()
        assert prior["study_date"] < case["study_date"]
        assert prior["changes"], "every case with a prior has at least one change"
        cur = {f["label"]: f["severity"] for f in case["findings"]}
        old = {f["label"]: f["severity"] for f in prior["findings"]}
        for ch in prior["changes"]:
            label, change = ch["label"], ch["change"]
            assert change in CHANGES
            seen.add(change)
            if change == "new":
                assert label in cur and label not in old
            elif change == "resolved":
                assert label in old and label not in cur
            else:
                rel = {"worsened": old[label] < cur[label], "improved": old[label] > cur[label]}
                assert rel.get(change, old[label] == cur[label])
        assert {ch["label"] for ch in prior["changes"]} == set(cur) | set(old)
    assert {"worsened", "improved", "stable"} <= seen


def test_reports(cases: list[dict]) -> None:
    for case in cases:
        for study in (case, case["prior"]) if case["prior"] else (case,):
            report = study["report"]
            for f in study["findings"]:
                assert _mentions(report["findings"], f["label"]), (f["label"], report)
                assert _mentions(report["impression"], f["label"]), (f["label"], report)
            if not study["findings"] and not (study is case and case["prior"]):
                assert report["impression"] in IMPRESSION_NORMAL
                assert "normal" in report["findings"].lower() or "clear" in report["findings"].lower()
        if case["prior"]:
            text = " ".join(case["report"].values()).lower()
            words = {"worsened": "increased", "improved": "decreased", "stable": "unchanged"}
            words.update(new="new", resolved="resolved")
            for ch in case["prior"]["changes"]:
                assert words[ch["change"]] in text


def test_write_report_partial_and_varied() -> None:
    partial = [
        {"label": "nodule"},
        {"label": "pleural effusion", "side": "left"},
        {"label": "edema", "severity": 2},
    ]
    a = write_report(partial, np.random.default_rng(5))
    assert a == write_report(partial, np.random.default_rng(5))
    assert all(_mentions(a["findings"], f["label"]) for f in partial)
    texts = {write_report(partial, np.random.default_rng(s))["findings"] for s in range(20)}
    assert len(texts) > 10
    normal = {write_report([], np.random.default_rng(s))["impression"] for s in range(20)}
    assert normal <= set(IMPRESSION_NORMAL) and len(normal) > 1
    full = {
        "label": "mass",
        "severity": 3,
        "side": "right",
        "zone": "upper",
        "region": "right upper lung zone",
    }
    rep = write_report([full], np.random.default_rng(0), [{"label": "mass", "change": "worsened"}])
    assert "increased" in (rep["findings"] + rep["impression"]).lower()


def test_rendered_findings_change_pixels() -> None:
    rng = np.random.default_rng(7)
    an = phantom_render._sample_anatomy(rng)
    base, _ = phantom_render.render(an, [], SIZE, np.random.default_rng(1))
    for label in DISEASES_14:
        f = phantom_render._place(rng, an, label, set(), label == "cardiomegaly")
        assert f is not None, label
        prev = 0.0
        for sev in (1, 2, 3):
            img, (box,) = phantom_render.render(an, [(f, sev)], SIZE, np.random.default_rng(1))
            x1, y1, x2, y2 = (int(round(v * SIZE)) for v in box)
            diff = np.abs(img[y1:y2, x1:x2].astype(float) - base[y1:y2, x1:x2]).mean()
            assert diff > 6, (label, sev, diff)
            # a severity step changes the picture: more pixels or larger differences overall
            total = np.abs(img.astype(float) - base).sum()
            assert total > prev, (label, sev)
            prev = total


def test_prior_differs_from_current(cases: list[dict]) -> None:
    case = next(c for c in cases if c["prior"] and any(ch["change"] == "new" for ch in c["prior"]["changes"]))
    cur = np.asarray(Image.open(case["image"]), float)
    old = np.asarray(Image.open(case["prior"]["image"]), float)
    f = next(
        f
        for f in case["findings"]
        if f["label"] in {ch["label"] for ch in case["prior"]["changes"] if ch["change"] == "new"}
    )
    x1, y1, x2, y2 = (int(round(v * SIZE)) for v in f["box"])
    assert np.abs(cur[y1:y2, x1:x2] - old[y1:y2, x1:x2]).mean() > 5


def test_generation_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "atomic"
    real, calls = phantom._run_job, []

    def job(args: tuple) -> dict:
        assert not out.exists(), "out_dir must not appear before generation is complete"
        calls.append(args[0])
        if len(calls) == 5:
            raise RuntimeError("interrupted")
        return real(args)

    monkeypatch.setattr(phantom, "_run_job", job)
    with pytest.raises(RuntimeError):
        phantom.generate(out, n_cases=10, size=64, workers=1, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    calls.clear()
    monkeypatch.setattr(phantom, "_run_job", lambda args: (calls.append(0), real(args))[1])
    phantom.generate(out, n_cases=3, size=64, workers=1, progress=False)
    assert (out / "cases.jsonl").exists() and [p.name for p in tmp_path.iterdir()] == ["atomic"]


def test_ensure_phantom_and_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXBENCH_CACHE", str(tmp_path))
    root = phantom.default_root(n_cases=6, seed=1, size=64, prior_fraction=0.5)
    assert root == tmp_path / "phantom" / f"v{phantom.PHANTOM_VERSION}-n6-s1-64-p0.5"
    got = phantom.ensure_phantom(n_cases=6, seed=1, size=64, prior_fraction=0.5, progress=False)
    assert got == root and (root / "cases.jsonl").exists()
    stamp = (root / "cases.jsonl").stat().st_mtime_ns
    assert phantom.ensure_phantom(root) == root
    assert (root / "cases.jsonl").stat().st_mtime_ns == stamp
    assert len(phantom.load_cases(root)) == 6


def test_generate_over_existing_data_set(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    phantom.generate(out, n_cases=4, seed=0, size=64, workers=1, progress=False)
    first = (out / "cases.jsonl").read_bytes()
    phantom.generate(out, n_cases=4, seed=0, size=64, workers=1, progress=False)  # identical: kept
    assert (out / "cases.jsonl").read_bytes() == first
    phantom.generate(out, n_cases=4, seed=1, size=64, workers=1, progress=False)  # different: replaced
    assert json.loads((out / "meta.json").read_text())["seed"] == 1
    assert (out / "cases.jsonl").read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
