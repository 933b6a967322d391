"""Robustness variants: TASK@VARIANT names, determinism, shuffle, image perturbations, boxes."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from conftest import HELPERS
from PIL import Image

from cxbench import variants as variant_module
from cxbench.cli import main
from cxbench.models import load_model
from cxbench.paths import cache_dir
from cxbench.runner import RunConfig, run_task
from cxbench.tasks import Task, TaskError, get_task
from cxbench.variants import (
    VARIANTS,
    apply_variants,
    parse_task_name,
    perturb_image,
    robustness_drop,
    rotate_box,
)

IMAGE_VARIANTS = ("rotate", "contrast", "noise", "jpeg", "resize")
_LETTERS = "ABCD"
#: a fixed preference over option texts: the choice depends on the text, never on the position
_PREFERENCE = ("no finding", "cardiomegaly", "pleural effusion", "atelectasis", "edema", "pneumothorax")


def always_a(request) -> str:
    """Option A for multiple choice, "yes" otherwise: a purely positional answer."""
    return "A" if request.choices else "yes"


def reads_options(request) -> str:
    """Picks the option whose text ranks first in a fixed preference: order-invariant."""
    if not request.choices:
        return "no"
    rank = {text: i for i, text in enumerate(_PREFERENCE)}
    best = min(
        range(len(request.choices)), key=lambda i: (rank.get(request.choices[i], 99), request.choices[i])
    )
    return _LETTERS[best]


def _dicts(samples) -> list[dict]:
    return [s.to_dict() for s in samples]


def _config(tmp_path: Path, **kwargs) -> RunConfig:
    return RunConfig(output_dir=tmp_path, cache_path="", progress=False, n_bootstrap=50, **kwargs)


# ------------------------------------------------------------------ names and tasks


def test_parse_task_name_and_canonical_names(small_tasks):
    assert parse_task_name("vqa_closed") == ("vqa_closed", [])
    assert parse_task_name("vqa_closed@shuffle:3@noise") == ("vqa_closed", [("shuffle", 3), ("noise", 0)])
    for bad, message in [
        ("vqa_closed@twirl", "unknown variant 'twirl'"),
        ("vqa_closed@shuffle:x", "not an integer"),
        ("@shuffle", "no base task"),
    ]:
        with pytest.raises(TaskError, match=message):
            parse_task_name(bad)
    with pytest.raises(TaskError, match="unknown variant"):
        get_task("small_vqa_closed@twirl", [small_tasks])
    with pytest.raises(TaskError, match="unknown task 'nope'"):
        get_task("nope@shuffle", [small_tasks])

    base = get_task("small_vqa_closed", [small_tasks])
    task = get_task("small_vqa_closed@shuffle:0@noise:2", [small_tasks])
    assert task.name == "small_vqa_closed@shuffle@noise:2"  # seed 0 is the default, left out
    assert task.config["variants"] == [{"name": "shuffle", "seed": 0}, {"name": "noise", "seed": 2}]
    assert task.config["base_task"] == "small_vqa_closed" and task.config["name"] == task.name
    assert (task.family, task.prompt, task.metrics, task.parser) == (
        base.family,
        base.prompt,
        base.metrics,
        base.parser,
    )
    assert base.name == "small_vqa_closed" and "variants" not in base.config  # base untouched
    hashes = {
        get_task(name, [small_tasks]).task_hash
        for name in ("small_vqa_closed", "small_vqa_closed@shuffle", "small_vqa_closed@shuffle:1")
    }
    assert len(hashes) == 3
    assert (
        get_task("small_vqa_closed@shuffle", [small_tasks]).task_hash
        == apply_variants(base, ["shuffle"]).task_hash
    )
    # applying to a variant task appends to its chain
    chained = apply_variants(apply_variants(base, [("shuffle", 0)]), ["noise:2"])
    assert chained.name == task.name and chained.task_hash == task.task_hash
    assert set(VARIANTS) == {"shuffle", "paraphrase", "positions", *IMAGE_VARIANTS}


def test_samples_stream_without_materialising_the_base(tmp_path):
    (tmp_path / "endless_hooks.py").write_text(
        "import itertools\nfrom cxbench.schema import Sample\n\n"
        "def samples(task, split):\n"
        "    for i in itertools.count():\n"
        "        yield Sample(id=f's{i}', images=[], question='Which?', target='A', choices=['x', 'y'])\n"
    )
    (tmp_path / "endless.yaml").write_text(
        "name: endless\nfamily: vqa_closed\ndataset: {name: phantom}\nprompt: '{question}'\n"
        "parser: closed\nmetrics: [accuracy]\nhooks: endless_hooks.py\n"
    )
    task = apply_variants(Task.from_yaml(tmp_path / "endless.yaml"), ["shuffle", "paraphrase"])
    first = list(islice(task.samples(), 5))
    assert [s.id for s in first] == [f"s{i}" for i in range(5)]


# ------------------------------------------------------------------------- shuffle


def test_shuffle_is_seeded_and_keeps_the_correct_option_text(small_tasks):
    base = list(get_task("small_vqa_closed", [small_tasks]).samples("train"))
    shuffled = list(get_task("small_vqa_closed@shuffle", [small_tasks]).samples("train"))
    again = list(get_task("small_vqa_closed@shuffle", [small_tasks]).samples("train"))
    other = list(get_task("small_vqa_closed@shuffle:3", [small_tasks]).samples("train"))
    assert _dicts(shuffled) == _dicts(again)
    assert [s.id for s in shuffled] == [s.id for s in base] == [s.id for s in other]
    assert _dicts(shuffled) != _dicts(other)
    moved = 0
    for b, s in zip(base, shuffled, strict=True):
        if not b.choices:  # yes/no questions are unchanged
            assert s.to_dict() == b.to_dict()
            continue
        assert sorted(s.choices) == sorted(b.choices)
        assert s.choices[_LETTERS.index(s.target)] == b.choices[_LETTERS.index(b.target)]
        assert (s.question, s.images, s.query, s.metadata) == (b.question, b.images, b.query, b.metadata)
        moved += s.choices != b.choices
    assert moved > 0.8 * sum(1 for b in base if b.choices)


def test_base_option_order_is_already_uniform_so_always_a_stays_at_chance(small_tasks, tmp_path):
    """Finding: the phantom MC targets are already uniformly placed (the generator shuffles), so
    a positional model is at chance on the base and under ``shuffle``, and drops by ~0; a model
    that reads the option text scores identically on every sample (order-invariant)."""
    mc = [
        s
        for split in ("train", "val", "test")
        for s in get_task("small_vqa_closed", [small_tasks]).samples(split)
    ]
    letters = Counter(s.target for s in mc if s.choices)
    total = sum(letters.values())
    assert total == 80 and all(0.1 < letters[x] / total < 0.4 for x in _LETTERS)

    results = {}
    for model_name in ("always_a", "reads_options"):
        model = load_model(f"python:{__file__}:{model_name}")
        for name in ("small_vqa_closed", "small_vqa_closed@shuffle"):
            task = get_task(name, [small_tasks])
            result, _ = run_task(task, model, _config(tmp_path / name, split="train"))
            log = tmp_path / name / model.name / f"{task.name}.samples.jsonl"
            rows = [json.loads(line) for line in log.open()][1:]
            hits = {r["sample_id"]: r["scores"]["accuracy"] for r in rows}
            results[model_name, name] = (result, hits)

    base, base_hits = results["always_a", "small_vqa_closed"]
    shuf, shuf_hits = results["always_a", "small_vqa_closed@shuffle"]
    mc_ids = [i for i in base_hits if i.endswith(":mc")]
    assert len(mc_ids) == 56
    for hits in (base_hits, shuf_hits):
        assert 0.1 < np.mean([hits[i] for i in mc_ids]) < 0.4  # chance is 0.25
    drop = robustness_drop(base, shuf)
    assert set(drop) >= {"accuracy", "macro_f1"}
    assert abs(drop["accuracy"]["drop"]) < 0.05
    assert drop["accuracy"]["base"] == base["metrics"]["accuracy"]["value"]

    base, base_hits = results["reads_options", "small_vqa_closed"]
    shuf, shuf_hits = results["reads_options", "small_vqa_closed@shuffle"]
    assert base_hits == shuf_hits  # the same samples right and wrong
    assert robustness_drop(base, shuf)["accuracy"]["drop"] == 0.0


def _write_biased_mc_task(tmp_path: Path) -> Task:
    """A data set whose correct option is always listed first: positional bias pays off."""
    Image.new("L", (16, 16), 100).save(tmp_path / "img.png")
    options = ["cardiomegaly", "mass", "nodule", "edema", "hernia", "fibrosis"]
    rows = []
    for i in range(40):
        correct, *rest = options[i % 6 :] + options[: i % 6]
        rows.append(
            {
                "id": f"b{i}",
                "images": ["img.png"],
                "question": "Which is present?",
                "choices": [correct, *rest[:3]],
                "target": "A",
            }
        )
    (tmp_path / "biased.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "biased.yaml").write_text(
        "name: biased\nfamily: vqa_closed\n"
        f"dataset: {{name: jsonl, path: {tmp_path / 'biased.jsonl'}, split: test}}\n"
        'prompt: "{question}\\n{options}"\nparser: closed\nlabels: closed\nmetrics: [accuracy]\n'
    )
    return Task.from_yaml(tmp_path / "biased.yaml")


def test_shuffle_exposes_positional_bias_on_a_biased_ordering(tmp_path):
    task = _write_biased_mc_task(tmp_path)
    model = load_model(f"python:{__file__}:always_a")
    base, _ = run_task(task, model, _config(tmp_path / "base"))
    shuffled, _ = run_task(apply_variants(task, ["shuffle"]), model, _config(tmp_path / "shuffle"))
    assert base["metrics"]["accuracy"]["value"] == 1.0
    assert shuffled["task"]["name"] == "biased@shuffle"
    assert shuffled["metrics"]["accuracy"]["value"] < 0.45
    assert robustness_drop(base, shuffled)["accuracy"]["drop"] > 0.55


def test_robustness_drop_orients_by_direction():
    base = {
        "metrics": {
            "accuracy": {"value": 0.8, "direction": "higher"},
            "error_rate": {"value": 0.1, "direction": "lower"},
            "gone": {"value": None, "unavailable": "no java"},
            "only_base": {"value": 0.5},
        }
    }
    variant = {
        "metrics": {
            "accuracy": {"value": 0.6, "direction": "higher"},
            "error_rate": {"value": 0.3, "direction": "lower"},
            "gone": {"value": 0.2},
        }
    }
    drop = robustness_drop(base, variant)
    assert set(drop) == {"accuracy", "error_rate"}
    assert drop["accuracy"] == pytest.approx({"base": 0.8, "variant": 0.6, "drop": 0.2})
    assert drop["error_rate"] == pytest.approx({"base": 0.1, "variant": 0.3, "drop": 0.2})


# ---------------------------------------------------------------------- paraphrase


def test_paraphrase_rewrites_questions_deterministically(small_tasks):
    for family in ("vqa_closed", "vqa_open", "temporal_comparison", "localization", "diagnosis_recall1"):
        base_task = get_task(f"small_{family}", [small_tasks])
        base = list(base_task.samples())
        para = list(get_task(f"small_{family}@paraphrase", [small_tasks]).samples())
        assert _dicts(para) == _dicts(get_task(f"small_{family}@paraphrase", [small_tasks]).samples())
        other = list(get_task(f"small_{family}@paraphrase:1", [small_tasks]).samples())
        assert [s.question for s in para] != [s.question for s in other]
        for b, p in zip(base, para, strict=True):
            assert p.id == b.id and p.question != b.question
            assert (p.target, p.choices, p.images, p.query) == (b.target, b.choices, b.images, b.query)
            if "finding" in b.query:
                assert b.query["finding"] in p.question
            assert p.question in base_task.build_request(p).prompt
    # a sample kind without templates keeps its question inside a generic rewording
    task = get_task("small_vqa_closed", [small_tasks])
    odd = next(iter(task.samples()))
    odd.query = {"kind": "unheard_of"}
    new = VARIANTS["paraphrase"].transform(odd, 0, task)
    assert odd.question in new.question and new.question != odd.question


# ------------------------------------------------------------- image perturbations


@pytest.mark.parametrize("variant", IMAGE_VARIANTS)
def test_image_perturbations_are_cached_deterministic_and_keep_the_size(small_tasks, variant):
    base = list(islice(get_task("small_temporal_comparison", [small_tasks]).samples(), 2))
    out = list(islice(get_task(f"small_temporal_comparison@{variant}", [small_tasks]).samples(), 2))
    other = list(islice(get_task(f"small_temporal_comparison@{variant}:5", [small_tasks]).samples(), 2))
    root = cache_dir() / "variants" / variant
    for b, s, o in zip(base, out, other, strict=True):
        assert s.id == b.id and len(s.images) == len(b.images) == 2  # prior and current both changed
        assert s.metadata["source_images"] == b.images
        for src, new, new_other in zip(b.images, s.images, o.images, strict=True):
            assert Path(new).parent.parent == root
            with Image.open(src) as a, Image.open(new) as c:
                assert (a.size, a.mode) == (c.size, c.mode)
                original, changed = np.asarray(a, float), np.asarray(c, float)
            assert Path(new).read_bytes() != Path(src).read_bytes()
            assert np.abs(original - changed).mean() > 0.3
            assert new != new_other  # the seed is part of the key
            if variant in ("rotate", "contrast", "noise"):  # the seed drives the draws
                assert Path(new).read_bytes() != Path(new_other).read_bytes()
            if variant == "noise":
                assert 5.0 < float(np.std(changed - original)) < 9.0  # sigma 0.03 * 255 = 7.65
            # written once, and the same bytes when rebuilt from scratch
            first = Path(new).read_bytes()
            Path(new).unlink()
            assert perturb_image(src, variant, 0)[0] == new
            assert Path(new).read_bytes() == first
        if variant != "rotate":
            assert s.metadata["findings"] == b.metadata["findings"] and s.target == b.target


def test_missing_images_are_left_for_the_runner_to_report(tmp_path):
    assert perturb_image(str(tmp_path / "nope.png"), "noise") == (str(tmp_path / "nope.png"), None)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    assert perturb_image(str(tmp_path / "bad.png"), "rotate")[0] == str(tmp_path / "bad.png")


def test_rgb_and_16_bit_images_keep_their_mode(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(rng.integers(0, 65535, (20, 30), dtype=np.uint16)).save(tmp_path / "deep.png")
    for name in ("rgb.png", "deep.png"):
        for variant in IMAGE_VARIANTS:
            out, _ = perturb_image(str(tmp_path / name), variant, 0)
            with Image.open(tmp_path / name) as a, Image.open(out) as b:
                assert (a.size, a.mode) == (b.size, b.mode)


def _write_box_task(tmp_path: Path, size=(100, 80), rect=(20, 10, 50, 30)) -> Task:
    """A white rectangle on black with its box as the target and as a finding."""
    width, height = size
    pixels = np.zeros((height, width), np.uint8)
    pixels[rect[1] : rect[3], rect[0] : rect[2]] = 255
    Image.fromarray(pixels).save(tmp_path / "rect.png")
    box = [rect[0] / width, rect[1] / height, rect[2] / width, rect[3] / height]
    finding = {"label": "mass", "box": box, "region": "somewhere"}
    rows = [
        {
            "id": f"r{i}",
            "images": ["rect.png"],
            "question": "Where is the mass?",
            "target": [box],
            "query": {"kind": "box", "finding": "mass"},
            "metadata": {"image_size": [width, height], "findings": [finding]},
        }
        for i in range(2)
    ]
    (tmp_path / "rect.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "rect.yaml").write_text(
        "name: rect\nfamily: localization\n"
        f"dataset: {{name: jsonl, path: {tmp_path / 'rect.jsonl'}, split: test}}\n"
        "prompt: '{question}'\nparser: box\nmetrics: [mean_iou]\n"
    )
    return Task.from_yaml(tmp_path / "rect.yaml")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rotate_moves_boxes_with_the_image(tmp_path, seed):
    task = _write_box_task(tmp_path)
    base = next(iter(task.samples()))
    sample = next(iter(apply_variants(task, [("rotate", seed)]).samples()))
    angle = sample.metadata["rotation_degrees"]
    assert 1.0 <= abs(angle) <= 5.0
    with Image.open(sample.images[0]) as image:
        ys, xs = np.nonzero(np.asarray(image) > 127)
    seen = [xs.min() / 100, ys.min() / 80, (xs.max() + 1) / 100, (ys.max() + 1) / 80]
    (box,) = sample.target
    assert box == pytest.approx(rotate_box(base.target[0], angle, 100, 80))
    assert box != pytest.approx(base.target[0], abs=1e-3)
    assert np.abs(np.array(box) * [100, 80, 100, 80] - np.array(seen) * [100, 80, 100, 80]).max() < 1.6
    assert sample.metadata["findings"][0]["box"] == box
    assert base.metadata["findings"][0]["box"] == base.target[0]  # the base sample is not mutated


def test_rotate_box_geometry():
    assert rotate_box([0.25, 0.25, 0.75, 0.75], 0.0, 64, 64) == [0.25, 0.25, 0.75, 0.75]
    # a quarter turn of a centred square is the same square; corners outside the image are clipped
    assert rotate_box([0.25, 0.25, 0.75, 0.75], 90.0, 64, 64) == pytest.approx([0.25, 0.25, 0.75, 0.75])
    assert rotate_box([0.0, 0.0, 1.0, 1.0], 5.0, 64, 64) == [0.0, 0.0, 1.0, 1.0]
    # counter-clockwise on screen: a box right of the centre moves up
    x1, y1, x2, y2 = rotate_box([0.8, 0.45, 0.9, 0.55], 10.0, 100, 100)
    assert (y1 + y2) / 2 < 0.5


# --------------------------------------------------------------------- end to end


def test_run_task_on_a_rotated_localization_task(small_tasks, tmp_path):
    model = load_model(f"python:{HELPERS}:faulty")  # always "[10, 10, 50, 50]" for these ids
    base_task = get_task("small_localization", [small_tasks])
    task = get_task("small_localization@rotate", [small_tasks])
    base, _ = run_task(base_task, model, _config(tmp_path))
    result, stats = run_task(task, model, _config(tmp_path))
    assert result["task"]["name"] == "small_localization@rotate"
    assert result["task"]["hash"] == task.task_hash != base["task"]["hash"]
    assert result["task"]["config"]["variants"] == [{"name": "rotate", "seed": 0}]
    assert result["n"] == base["n"] == stats.samples > 0 and not any(result["errors"].values())
    rows = [json.loads(line) for line in (tmp_path / model.name / f"{task.name}.samples.jsonl").open()]
    assert rows[0]["header"]["task"] == task.name
    base_rows = [
        json.loads(line) for line in (tmp_path / model.name / "small_localization.samples.jsonl").open()
    ]
    assert [r["sample_id"] for r in rows[1:]] == [r["sample_id"] for r in base_rows[1:]]
    assert all("/variants/rotate/" in r["sample"]["images"][0] for r in rows[1:])
    assert set(robustness_drop(base, result)) == {"mean_iou", "acc_iou50"}


def test_cli_runs_a_variant_task(small_tasks, tmp_path):
    code = main(
        [
            "run",
            "--include-path",
            str(small_tasks),
            "--tasks",
            "small_vqa_closed@shuffle",
            "--model",
            f"python:{__file__}:always_a",
            "--output",
            str(tmp_path),
            "--no-cache",
            "--no-progress",
            "--bootstrap",
            "50",
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "python-always_a" / "small_vqa_closed@shuffle.json").read_text())
    assert result["task"]["name"] == "small_vqa_closed@shuffle" and result["n"] == 32
    assert "small_vqa_closed@shuffle" in (tmp_path / "leaderboard.md").read_text()


def test_variant_module_names_every_variant_in_its_docstring():
    for name in VARIANTS:
        assert f"``{name}``" in variant_module.__doc__


def test_compare_pairs_a_variant_log_with_its_base(small_tasks, tmp_path):
    from cxbench.compare import compare_logs
    from cxbench.models import load_model
    from cxbench.runner import RunConfig, run_task
    from cxbench.tasks import get_task

    config = RunConfig(output_dir=tmp_path, cache_path="", progress=False, n_bootstrap=50)
    for name in ("small_vqa_closed", "small_vqa_closed@shuffle"):
        run_task(get_task(name, [small_tasks]), load_model("prior"), config)
    comparison = compare_logs(
        tmp_path / "prior" / "small_vqa_closed.samples.jsonl",
        tmp_path / "prior" / "small_vqa_closed@shuffle.samples.jsonl",
        n_boot=50,
    )
    assert comparison.n_paired > 0
    assert any("variant" in note for note in comparison.warnings + getattr(comparison, "notes", []))
