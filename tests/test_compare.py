"""Paired comparison of runs: significance tests, Holm, verdicts, exit codes, a real phantom run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import HELPERS

from cxbench import metrics as registry
from cxbench.compare import (
    IMPROVEMENT,
    NO_CHANGE,
    REGRESSION,
    CompareError,
    add_compare_arguments,
    cli_compare,
    compare_logs,
    compare_runs,
)
from cxbench.metrics.base import Metric, first_column, mean_reduce
from cxbench.metrics.nlg import corpus_bleu
from cxbench.stats import approximate_randomization, holm, paired_bootstrap

# a lower-is-better mean metric, registered for these tests only
ERROR_RATE = registry.register(
    Metric(
        name="test_error_rate",
        description="fraction of wrong answers (test metric, lower is better)",
        stats=None,
        reduce=mean_reduce,
        direction="lower",
        sample_value=first_column,
    )
)


# ---------------------------------------------------------------- synthetic logs


def write_log(path: Path, stats: dict[str, list], task: str = "toy", task_hash: str = "h1", ids=None) -> Path:
    """A per-sample log with the given per-sample stats rows (metric -> list of rows)."""
    n = len(next(iter(stats.values())))
    ids = ids or [f"s{i:04d}" for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "header": {"log_schema": "1.0", "task": task, "task_hash": task_hash, "model": path.parent.name}
    }
    lines = [json.dumps(header)]
    for i, sample_id in enumerate(ids):
        row = {name: list(np.atleast_1d(np.asarray(rows[i], dtype=float))) for name, rows in stats.items()}
        lines.append(json.dumps({"sample_id": sample_id, "stats": row, "scores": {}, "error": None}))
    path.write_text("\n".join(lines) + "\n")
    return path


def hits(n: int, accuracy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(n)
    out[rng.choice(n, size=round(n * accuracy), replace=False)] = 1.0
    return out


def bleu_rows(n: int, quality: float, seed: int) -> np.ndarray:
    """Per-sample BLEU statistics [matches_1..4, totals_1..4, hyp_len, ref_len]."""
    rng = np.random.default_rng(seed)
    length = rng.integers(15, 30, size=n).astype(float)
    totals = np.stack([length - k for k in range(4)], axis=1)
    matches = np.floor(totals * np.clip(quality * 0.7 ** np.arange(4) + rng.normal(0, 0.05, (n, 4)), 0, 1))
    return np.column_stack([matches, totals, length, length])


def test_paired_bootstrap_vectorised_path_matches_the_generic_one():
    base, cand = hits(200, 0.6, 1)[:, None], hits(200, 0.7, 2)[:, None]
    fast = paired_bootstrap(base, cand, mean_reduce, n_boot=300, seed=3)
    slow = paired_bootstrap(base, cand, lambda m: float(np.mean(m[:, 0])), n_boot=300, seed=3)
    assert fast == pytest.approx(slow)
    assert fast["delta"] == pytest.approx(0.1)
    assert fast["ci_low"] < fast["delta"] < fast["ci_high"]
    # chunked draws give the same numbers as one big draw
    chunked = paired_bootstrap(
        base, cand, lambda m: float(np.mean(m[:, 0])), n_boot=300, seed=3, max_draws=1000
    )
    assert chunked == pytest.approx(slow)


def test_identical_systems_give_p_one_and_a_zero_delta():
    base = hits(150, 0.6, 1)[:, None]
    assert approximate_randomization(base, base.copy(), mean_reduce, n_perm=200, seed=0) == 1.0
    bleu = bleu_rows(60, 0.5, 0)
    reduce4 = lambda m: corpus_bleu(m, 4)  # noqa: E731
    assert approximate_randomization(bleu, bleu.copy(), reduce4, n_perm=50, seed=0) == 1.0
    boot = paired_bootstrap(bleu, bleu.copy(), reduce4, n_boot=50, seed=0)
    assert boot["delta"] == 0 and boot["p_value"] == 1.0 and boot["ci_low"] == boot["ci_high"] == 0


def test_randomization_detects_a_real_difference_and_is_bounded_below():
    base, cand = hits(300, 0.5, 1)[:, None], hits(300, 0.8, 2)[:, None]
    p = approximate_randomization(base, cand, mean_reduce, n_perm=500, seed=0)
    assert p == pytest.approx(1 / 501)  # no permutation reaches a 0.3 gap
    boot = paired_bootstrap(base, cand, mean_reduce, n_boot=500, seed=0)
    assert boot["p_value"] == pytest.approx(1 / 501) and boot["p_greater"] == pytest.approx(1 / 501)
    assert boot["p_less"] > 0.9


def test_holm_by_hand():
    # sorted: b 0.01 (x3 = 0.03), c 0.02 (x2 = 0.04), a 0.04 (x1 = 0.04); monotone; d NaN ignored
    adjusted = holm({"a": 0.04, "b": 0.01, "c": 0.02, "d": float("nan")})
    assert list(adjusted) == ["a", "b", "c", "d"]
    assert adjusted["b"] == pytest.approx(0.03)
    assert adjusted["c"] == pytest.approx(0.04)
    assert adjusted["a"] == pytest.approx(0.04)
    assert adjusted["d"] != adjusted["d"]
    # step-down monotonicity and the cap at 1
    adjusted = holm({"x": 0.03, "y": 0.02, "z": 0.6})
    assert adjusted == pytest.approx({"y": 0.06, "x": 0.06, "z": 0.6})
    assert holm({"x": 0.5, "y": 0.9}) == pytest.approx({"x": 1.0, "y": 1.0})
    assert holm({}) == {}


@pytest.fixture()
def toy_logs(tmp_path):
    n = 400
    base = {"accuracy": hits(n, 0.70, 1), "bleu4": bleu_rows(n, 0.6, 1), "test_error_rate": hits(n, 0.20, 5)}
    worse = {"accuracy": hits(n, 0.55, 2), "bleu4": bleu_rows(n, 0.3, 2), "test_error_rate": hits(n, 0.40, 6)}
    return {
        "base": write_log(tmp_path / "base" / "toy.samples.jsonl", base),
        "same": write_log(tmp_path / "same" / "toy.samples.jsonl", base),
        "worse": write_log(tmp_path / "worse" / "toy.samples.jsonl", worse),
    }


def test_a_degraded_candidate_is_flagged_on_every_metric(toy_logs):
    comparison = compare_logs(toy_logs["base"], toy_logs["worse"], n_boot=300)
    assert comparison.regressed and comparison.n_paired == 400
    assert [m.metric for m in comparison.metrics] == ["accuracy", "bleu4", "test_error_rate"]
    acc = comparison.metric("accuracy")
    assert acc.base == pytest.approx(0.70) and acc.candidate == pytest.approx(0.55)
    assert acc.delta == pytest.approx(-0.15) and acc.ci_low < -0.15 < acc.ci_high < 0
    # lower is better: the error rate went up 0.2 -> 0.4, which is a drop of 0.2
    err = comparison.metric("test_error_rate")
    assert (
        err.direction == "lower" and err.delta == pytest.approx(-0.2) and err.raw_delta == pytest.approx(0.2)
    )
    assert err.ci_high < 0
    assert all(m.verdict == REGRESSION for m in comparison.metrics)
    # swapped, the same differences are improvements (including the lower-is-better metric)
    reverse = compare_logs(toy_logs["worse"], toy_logs["base"], n_boot=300, method="randomization")
    assert not reverse.regressed and all(m.verdict == IMPROVEMENT for m in reverse.metrics)
    assert reverse.metric("test_error_rate").delta == pytest.approx(0.2)
    table = comparison.to_markdown()
    assert "| metric | base | candidate | delta [95% CI] | p (Holm) | verdict |" in table
    assert "test_error_rate ↓" in table and "**regression**" in table


def test_an_identical_candidate_passes(toy_logs):
    for method in ("bootstrap", "randomization"):
        comparison = compare_logs(toy_logs["base"], toy_logs["same"], n_boot=200, method=method)
        assert not comparison.regressed
        assert all(
            m.delta == 0 and m.p_adjusted == 1.0 and m.verdict == NO_CHANGE for m in comparison.metrics
        )


def test_max_drop_and_holm_decide_the_verdict(toy_logs):
    # a 0.15 accuracy drop is tolerated with max_drop 0.2
    comparison = compare_logs(
        toy_logs["base"], toy_logs["worse"], metrics=["accuracy"], max_drop=0.2, n_boot=200
    )
    assert comparison.metric("accuracy").verdict == NO_CHANGE and not comparison.regressed
    # p-values are Holm-adjusted across the chosen metrics
    comparison = compare_logs(toy_logs["base"], toy_logs["worse"], n_boot=200)
    assert [m.p_adjusted for m in comparison.metrics] == pytest.approx(
        list(holm({m.metric: m.p_value for m in comparison.metrics}).values())
    )


def test_pairing_by_sample_id_uses_the_intersection(tmp_path):
    base = write_log(tmp_path / "a" / "t.samples.jsonl", {"accuracy": [1, 0, 1, 1]}, ids=["x", "y", "z", "w"])
    cand = write_log(tmp_path / "b" / "t.samples.jsonl", {"accuracy": [1, 1, 0]}, ids=["q", "z", "x"])
    with pytest.warns(UserWarning, match="paired 2 samples"):
        comparison = compare_logs(base, cand, n_boot=20)
    assert (comparison.n_paired, comparison.dropped_base, comparison.dropped_cand) == (2, 2, 1)
    # pairs: x (1 vs 0), z (1 vs 1)
    assert comparison.metric("accuracy").base == 1.0 and comparison.metric("accuracy").candidate == 0.5
    none = write_log(tmp_path / "c" / "t.samples.jsonl", {"accuracy": [1]}, ids=["other"])
    with pytest.raises(CompareError, match="share no sample id"):
        compare_logs(base, none)


def test_bad_inputs_are_refused_with_the_file_names(tmp_path, toy_logs):
    other = write_log(tmp_path / "o" / "other.samples.jsonl", {"accuracy": [1, 0]}, task="other_task")
    with pytest.raises(CompareError, match="different tasks") as info:
        compare_logs(toy_logs["base"], other)
    assert str(toy_logs["base"]) in str(info.value) and str(other) in str(info.value)
    changed = write_log(tmp_path / "h" / "toy.samples.jsonl", {"accuracy": [1, 0]}, task_hash="h2")
    with pytest.warns(UserWarning) as caught:
        comparison = compare_logs(toy_logs["base"], changed, n_boot=10)
    assert any("changed between the runs" in str(w.message) for w in caught)
    assert any("changed between the runs" in note for note in comparison.warnings)
    with pytest.raises(CompareError, match="cannot compare metric 'rouge_l'"):
        compare_logs(toy_logs["base"], toy_logs["same"], metrics=["rouge_l"])
    junk = tmp_path / "junk.samples.jsonl"
    junk.write_text('{"sample_id": "a"}\n')
    with pytest.raises(CompareError, match="no header"):
        compare_logs(junk, toy_logs["base"])


def test_missing_metric_values_are_skipped_by_default(tmp_path):
    base = write_log(tmp_path / "a" / "t.samples.jsonl", {"accuracy": [1, 0, 1], "meteor": [0.2, 0.3, 0.4]})
    cand = write_log(tmp_path / "b" / "t.samples.jsonl", {"accuracy": [1, 1, 1]})  # meteor unavailable
    comparison = compare_logs(base, cand, n_boot=20)
    assert [m.metric for m in comparison.metrics] == ["accuracy"]
    assert "meteor" in comparison.skipped and "meteor" in comparison.to_markdown()


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_compare_arguments(parser)
    return cli_compare(parser.parse_args(argv))


def test_cli_exit_codes(toy_logs, tmp_path, capsys):
    assert _cli([str(toy_logs["base"]), str(toy_logs["same"]), "--bootstrap", "100"]) == 0
    assert "no significant change" in capsys.readouterr().out
    assert _cli([str(toy_logs["base"]), str(toy_logs["worse"]), "--bootstrap", "100"]) == 1
    assert "**regression**" in capsys.readouterr().out
    assert (
        _cli([str(toy_logs["base"]), str(toy_logs["worse"]), "--max-drop", "0.5", "--bootstrap", "100"]) == 0
    )
    # folders of one model each: tasks paired by file name
    assert _cli([str(toy_logs["base"].parent), str(toy_logs["worse"].parent), "--bootstrap", "100"]) == 1
    capsys.readouterr()
    # too few resamples for any significance: passes, with a warning saying so
    assert _cli([str(toy_logs["base"]), str(toy_logs["worse"]), "--bootstrap", "20"]) == 0
    assert "nothing can be significant" in capsys.readouterr().err
    missing = tmp_path / "nope.samples.jsonl"
    assert _cli([str(toy_logs["base"]), str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert _cli([str(toy_logs["base"]), str(toy_logs["same"].parent)]) == 2
    assert "folder" in capsys.readouterr().err
    other = write_log(tmp_path / "o" / "other.samples.jsonl", {"accuracy": [1, 0]}, task="other_task")
    assert _cli([str(toy_logs["base"]), str(other)]) == 2
    err = capsys.readouterr().err
    assert "different tasks" in err and str(other) in err
    assert _cli([str(toy_logs["base"]), str(toy_logs["same"]), "--metrics", "nonexistent"]) == 2


def test_compare_runs_pairs_tasks_by_file_name(tmp_path):
    a = {"accuracy": hits(100, 0.8, 1)}
    write_log(tmp_path / "base" / "t1.samples.jsonl", a, task="t1")
    write_log(tmp_path / "cand" / "t1.samples.jsonl", a, task="t1")
    write_log(tmp_path / "base" / "t2.samples.jsonl", a, task="t2")
    write_log(tmp_path / "cand" / "t3.samples.jsonl", a, task="t3")
    runs = compare_runs(tmp_path / "base", tmp_path / "cand", n_boot=20)
    assert [c.task for c in runs.comparisons] == ["t1"] and not runs.regressed
    assert runs.only_base == ["t2.samples.jsonl"] and runs.only_cand == ["t3.samples.jsonl"]
    assert "only in the baseline" in runs.to_markdown()
    with pytest.raises(CompareError, match="no \\*.samples.jsonl logs"):
        compare_runs(tmp_path, tmp_path / "cand")


# ---------------------------------------------------------------- a real run


def test_real_phantom_runs(small_tasks, tmp_path, capsys):
    """phantom-cnn against itself passes; against a model answering "yes"/"A" it is flagged."""
    from cxbench.models import load_model
    from cxbench.runner import RunConfig, run_task
    from cxbench.tasks import get_task

    task = get_task("small_vqa_closed", [small_tasks])
    config = dict(cache_path="", progress=False, n_bootstrap=10)
    run_task(task, load_model("phantom-cnn", {"epochs": 2}), RunConfig(output_dir=tmp_path / "a", **config))
    run_task(task, load_model("phantom-cnn", {"epochs": 2}), RunConfig(output_dir=tmp_path / "b", **config))
    run_task(task, load_model(f"python:{HELPERS}:echo_yes"), RunConfig(output_dir=tmp_path / "c", **config))
    cnn_a = tmp_path / "a" / "phantom-cnn" / "small_vqa_closed.samples.jsonl"
    cnn_b = tmp_path / "b" / "phantom-cnn" / "small_vqa_closed.samples.jsonl"
    (echo_log,) = (tmp_path / "c").glob("*/small_vqa_closed.samples.jsonl")

    assert _cli([str(cnn_a), str(cnn_b), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "accuracy ↑ (primary)" in out and "no significant change" in out
    comparison = compare_logs(cnn_a, echo_log, n_boot=200)
    assert comparison.metric("accuracy").delta < -0.1, comparison.to_markdown()
    assert _cli([str(cnn_a), str(echo_log), "--bootstrap", "200"]) == 1
    assert "regression" in capsys.readouterr().out
