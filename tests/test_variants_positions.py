"""The ``positions`` variant (circular evaluation) and ``positional_bias`` on its run logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import HELPERS

from cxbench.models import load_model
from cxbench.runner import RunConfig, run_task
from cxbench.schema import Sample
from cxbench.tasks import get_task
from cxbench.variants import VARIANTS, positional_bias

TASK = "small_vqa_closed@positions"


def _config(tmp_path: Path) -> RunConfig:
    return RunConfig(output_dir=tmp_path, cache_path="", progress=False, n_bootstrap=20)


def _run(small_tasks, model, tmp_path: Path) -> tuple[dict, Path]:
    task = get_task(TASK, [small_tasks])
    result, _ = run_task(task, model, _config(tmp_path))
    return result, tmp_path / model.name / f"{task.name}.samples.jsonl"


def test_positions_expands_each_multiple_choice_sample_into_k_rotations(small_tasks):
    base = list(get_task("small_vqa_closed", [small_tasks]).samples())
    expanded = list(get_task(TASK, [small_tasks]).samples())
    n_mc = sum(1 for s in base if s.choices)
    assert n_mc > 0 and len(expanded) == len(base) + 3 * n_mc  # 4 options each
    by_id = {s.id: s for s in expanded}
    for b in base:
        if not b.choices:
            assert by_id[b.id] == b  # yes/no passes through once, id unchanged
            continue
        assert b.id not in by_id
        correct = b.choices["ABCD".index(b.target)]
        for j, letter in enumerate("ABCD"):
            copy = by_id[f"{b.id}#pos{j}"]
            assert copy.target == letter and copy.choices[j] == correct
            assert sorted(copy.choices) == sorted(b.choices)
            # circular: the cyclic order of the options is kept
            shift = copy.choices.index(b.choices[0])
            assert copy.choices == [b.choices[(i - shift) % 4] for i in range(4)]
            assert (copy.question, copy.images, copy.query) == (b.question, b.images, b.query)
        assert by_id[f"{b.id}#pos{'ABCD'.index(b.target)}"].choices == b.choices  # identity copy
    # deterministic, and chains after shuffle (the placement is kept)
    assert [s.to_dict() for s in expanded] == [s.to_dict() for s in get_task(TASK, [small_tasks]).samples()]
    chained = list(get_task("small_vqa_closed@shuffle@positions", [small_tasks]).samples())
    assert [s.id for s in chained] == [s.id for s in expanded]
    assert all(
        s.choices["ABCD".index(s.target)] == by_id[s.id].choices[int(s.id[-1])] for s in chained if s.choices
    )


def test_positions_keeps_text_targets_and_skips_unknown_targets(small_tasks):
    task = get_task("small_vqa_closed", [small_tasks])
    transform = VARIANTS["positions"].transform
    sample = Sample("s", ["x.png"], "Which?", "Edema", choices=["mass", "edema", "nodule"])
    copies = transform(sample, 0, task)
    assert [c.id for c in copies] == ["s#pos0", "s#pos1", "s#pos2"]
    assert [c.choices.index("edema") for c in copies] == [0, 1, 2]
    assert all(c.target == "Edema" for c in copies)
    assert sample.id == "s" and sample.choices == ["mass", "edema", "nodule"]  # not mutated
    unknown = Sample("u", ["x.png"], "Which?", "hernia", choices=["mass", "edema"])
    assert transform(unknown, 0, task) == [unknown]


def test_positional_bias_of_always_a_and_of_phantom_cnn(small_tasks, tmp_path):
    """The issue's acceptance point: "A model that always answers 'A' shows a large positional-bias
    drop; the phantom-cnn shows a small one". The phantom data already place the correct letter
    uniformly, so "always A" is at chance with and without ``shuffle``; circular evaluation shows it.
    """
    result, log = _run(small_tasks, load_model(f"python:{HELPERS}:echo_yes"), tmp_path)
    assert result["task"]["name"] == TASK
    bias = positional_bias(log)
    assert bias["per_position"] == {"A": 1.0, "B": 0.0, "C": 0.0, "D": 0.0}
    assert bias["spread"] == 1.0 and bias["circular_accuracy"] == 0.0
    assert bias["accuracy"] == 0.25 and bias["n_incomplete"] == 0
    assert bias["n_base"] == 16 and set(bias["n_per_position"].values()) == {16}

    _, log = _run(small_tasks, load_model("phantom-cnn", {"epochs": 2}), tmp_path)
    cnn = positional_bias(log)
    print("phantom-cnn positional bias:", cnn)
    assert set(cnn["per_position"]) == set("ABCD")
    assert cnn["spread"] < 0.35
    assert cnn["circular_accuracy"] <= min(cnn["per_position"].values())


def test_positional_bias_counts_incomplete_groups_and_errors(tmp_path):
    def row(sample_id, target, score, choices=("a", "b")):
        sample = {"id": sample_id, "images": [], "question": "?", "target": target, "choices": list(choices)}
        return {"sample_id": sample_id, "sample": sample, "scores": {"accuracy": score}}

    rows = [
        {"header": {"task": "t@positions"}},
        row("s1#pos0", "A", 1.0),
        row("s1#pos1", "B", 1.0),
        row("s2#pos0", "A", 1.0),
        row("s2#pos1", "B", None),  # an error row: wrong
        row("s3#pos0", "A", 0.0),  # s3#pos1 cut off by --limit
        {"sample_id": "yn", "sample": {"id": "yn", "target": "yes", "choices": None}, "scores": {}},
    ]
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bias = positional_bias(log)
    assert bias["per_position"] == pytest.approx({"A": 2 / 3, "B": 0.5})
    assert bias["spread"] == pytest.approx(2 / 3 - 0.5)
    assert bias["circular_accuracy"] == 0.5 and bias["n_base"] == 2 and bias["n_incomplete"] == 1


def test_variant_runs_record_the_drop_against_their_base(small_tasks, tmp_path):
    import json

    from cxbench.cli import main

    base = ["run", "--include-path", str(small_tasks), "--model", "prior", "--no-progress", "--no-cache"]
    base += ["--output", str(tmp_path), "--bootstrap", "50", "--tasks"]
    assert main([*base, "small_localization"]) == 0
    assert main([*base, "small_localization@noise"]) == 0
    result = json.loads((tmp_path / "prior" / "small_localization@noise.json").read_text())
    drop = result["robustness_drop"]
    assert drop["base_task"] == "small_localization"
    assert drop["mean_iou"]["base"] - drop["mean_iou"]["variant"] == pytest.approx(drop["mean_iou"]["drop"])
