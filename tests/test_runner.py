"""Runner behaviour: error records, cache resume, warm-cache reproducibility, batch invariance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import HELPERS
from PIL import Image

from cxbench.models import load_model
from cxbench.runner import RunConfig, rescore_log, run_task
from cxbench.tasks import Task, get_task


def _write_box_task(tmp_path: Path) -> Task:
    """A localization task on a JSONL data set with one sample per failure kind."""
    Image.new("L", (64, 64), 90).save(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes((tmp_path / "good.png").read_bytes()[:40])
    box = [[10 / 64, 10 / 64, 50 / 64, 50 / 64]]
    rows = [
        {"id": "s_good", "images": ["good.png"], "question": "Where?", "target": box},
        {"id": "s_missing", "images": ["nope.png"], "question": "Where?", "target": box},
        {"id": "s_corrupt", "images": ["corrupt.png"], "question": "Where?", "target": box},
        {"id": "s_empty", "images": ["good.png"], "question": "Where?", "target": box},
        {"id": "s_junk", "images": ["good.png"], "question": "Where?", "target": box},
        {"id": "s_crash", "images": ["good.png"], "question": "Where?", "target": box},
    ]
    for row in rows:
        row["metadata"] = {"image_size": [64, 64]}
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "boxes.yaml").write_text(
        "name: boxes\nfamily: localization\n"
        f"dataset: {{name: jsonl, path: {tmp_path / 'data.jsonl'}, split: test}}\n"
        "prompt: '{question}'\nparser: box\nmetrics: [mean_iou, acc_iou50]\n"
    )
    return Task.from_yaml(tmp_path / "boxes.yaml")


def test_every_failure_kind_is_recorded_and_the_run_completes(tmp_path):
    task = _write_box_task(tmp_path)
    model = load_model(f"python:{HELPERS}:faulty")
    result, stats = run_task(
        task, model, RunConfig(output_dir=tmp_path / "out", cache_path="", progress=False)
    )
    assert result["n"] == 6
    assert result["errors"] == {
        "missing_image": 1,
        "corrupt_image": 1,
        "model_error": 1,
        "empty_output": 1,
        "parse_failure": 1,
    }
    assert result["parse_failures"] == 2
    # only the good sample scores (IoU 1); every failure scores 0 and stays in the denominator
    assert result["metrics"]["mean_iou"]["value"] == pytest.approx(1 / 6, abs=1e-6)
    rows = [json.loads(line) for line in (tmp_path / "out" / model.name / "boxes.samples.jsonl").open()][1:]
    by_id = {r["sample_id"]: r for r in rows}
    assert "nope.png" in by_id["s_missing"]["error_message"]
    assert "corrupt.png" in by_id["s_corrupt"]["error_message"]
    assert "backend exploded" in by_id["s_crash"]["error_message"]
    assert by_id["s_good"]["parsed"] == pytest.approx([10 / 64, 10 / 64, 50 / 64, 50 / 64])
    assert stats.model_calls == 4  # images that failed their check never reach the model


def _result_without_date(path: Path) -> dict:
    result = json.loads(path.read_text())
    result.pop("date")
    return result


def test_warm_cache_makes_no_model_calls_and_reproduces_the_result(small_tasks, tmp_path):
    task = get_task("small_vqa_closed", [small_tasks])
    config = RunConfig(output_dir=tmp_path / "out", cache_path=tmp_path / "cache.sqlite", progress=False)
    first, cold = run_task(task, load_model("random"), config)
    result_path = tmp_path / "out" / "random" / "small_vqa_closed.json"
    before = _result_without_date(result_path)
    second, warm = run_task(task, load_model("random"), config)
    assert cold.model_calls == first["n"] > 0
    assert warm.model_calls == 0 and warm.cache_hits == first["n"]
    assert _result_without_date(result_path) == before


def test_interrupted_run_resumes_without_redoing_finished_samples(small_tasks, tmp_path, monkeypatch):
    task = get_task("small_vqa_closed", [small_tasks])
    counter = tmp_path / "calls.txt"
    monkeypatch.setenv("CXBENCH_TEST_COUNTER", str(counter))
    monkeypatch.setenv("CXBENCH_TEST_STOP_AFTER", "12")
    config = RunConfig(
        output_dir=tmp_path / "out", cache_path=tmp_path / "cache.sqlite", batch_size=4, progress=False
    )
    with pytest.raises(KeyboardInterrupt):
        run_task(task, load_model(f"python:{HELPERS}:interrupt_after"), config)
    assert len(counter.read_text().splitlines()) == 12  # three full batches were answered and cached
    monkeypatch.setenv("CXBENCH_TEST_STOP_AFTER", "1000000")
    resumed, stats = run_task(task, load_model(f"python:{HELPERS}:interrupt_after"), config)
    assert stats.cache_hits == 12 and stats.model_calls == resumed["n"] - 12
    calls = counter.read_text().splitlines()
    assert len(calls) == len(set(calls)) == resumed["n"]  # every sample answered exactly once
    # identical to an uninterrupted run in a fresh cache
    fresh_config = RunConfig(output_dir=tmp_path / "fresh", cache_path="", progress=False)
    fresh, _ = run_task(task, load_model(f"python:{HELPERS}:echo_yes"), fresh_config)
    assert resumed["metrics"] == fresh["metrics"]


@pytest.mark.parametrize(
    "spec, task_name",
    [
        ("prior", "small_localization"),
        ("random", "small_localization"),
        ("phantom-cnn", "small_localization"),
        ("phantom-cnn", "small_temporal_comparison"),
    ],
)
def test_batch_size_does_not_change_results(small_tasks, tmp_path, spec, task_name):
    task = get_task(task_name, [small_tasks])
    results = []
    for batch_size in (1, 8):
        config = RunConfig(
            output_dir=tmp_path / f"b{batch_size}", cache_path="", batch_size=batch_size, progress=False
        )
        model = load_model(spec, {"epochs": 2} if spec == "phantom-cnn" else {})
        result, _ = run_task(task, model, config)
        log = (tmp_path / f"b{batch_size}" / spec / f"{task_name}.samples.jsonl").read_text()
        results.append((result["metrics"], log))
    assert results[0] == results[1]


def test_rescoring_a_log_reproduces_the_metrics(small_tasks, tmp_path):
    task = get_task("small_diagnosis_recall1", [small_tasks])
    config = RunConfig(output_dir=tmp_path, cache_path="", progress=False)
    result, _ = run_task(task, load_model("prior"), config)
    summary, rows = rescore_log(task, tmp_path / "prior" / "small_diagnosis_recall1.samples.jsonl")
    assert summary["metrics"] == result["metrics"]
    assert summary["n"] == result["n"] == len(rows)


def test_corpus_metrics_score_at_the_end_and_a_failing_one_is_reported(small_tasks, tmp_path):
    import numpy as np

    from cxbench import metrics
    from cxbench.metrics.base import Metric, mean_reduce

    def lengths(predictions, references, ctx):
        # a corpus-level statistic: each answer's length relative to the longest answer in the run
        sizes = np.array([len(p or "") for p in predictions], dtype=float)
        return (sizes / sizes.max())[:, None], None

    def broken(predictions, references, ctx):
        raise RuntimeError("weights not found: put them in /models")

    metrics.register(Metric("test_rel_len", "test", stats=None, reduce=mean_reduce, corpus_stats=lengths))
    metrics.register(Metric("test_broken", "test", stats=None, reduce=mean_reduce, corpus_stats=broken))
    (tmp_path / "t.yaml").write_text(
        "name: corpus_t\nfamily: report_generation\n"
        "dataset: {name: phantom, split: test, n_cases: 80, seed: 0, size: 128}\n"
        "prompt: '{question}'\nparser: text\nmetrics: [bleu1, test_rel_len, test_broken]\n"
    )
    task = Task.from_yaml(tmp_path / "t.yaml")
    result, _ = run_task(
        task, load_model("random"), RunConfig(output_dir=tmp_path, cache_path="", progress=False)
    )
    assert 0 < result["metrics"]["test_rel_len"]["value"] <= 1
    assert result["metrics"]["test_broken"]["value"] is None
    assert "weights not found" in result["metrics"]["test_broken"]["unavailable"]
    rows = [json.loads(line) for line in (tmp_path / "random" / "corpus_t.samples.jsonl").open()][1:]
    assert len(rows) == result["n"] and all(len(r["stats"]["test_rel_len"]) == 1 for r in rows)
    assert max(r["stats"]["test_rel_len"][0] for r in rows) == 1.0
    assert not (tmp_path / "random" / "corpus_t.samples.jsonl.partial").exists()
    summary, _ = rescore_log(task, tmp_path / "random" / "corpus_t.samples.jsonl")
    assert summary["metrics"]["test_rel_len"] == result["metrics"]["test_rel_len"]


def test_identical_requests_of_different_samples_are_cached_separately(tmp_path):
    """A seeded model answers per sample id; the warm run must not merge equal-looking samples."""
    rows = [{"id": f"dup{i}", "images": [], "question": "same text", "target": "x"} for i in range(6)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(
        f"name: dup\nfamily: vqa_open\ndataset: {{name: jsonl, path: {tmp_path / 'd.jsonl'}}}\n"
        "prompt: '{question}'\nparser: text\nmetrics: [exact_match]\n"
    )
    task = Task.from_yaml(tmp_path / "t.yaml")
    config = RunConfig(output_dir=tmp_path / "out", cache_path=tmp_path / "c.sqlite", progress=False)
    logs = []
    for _ in range(2):
        run_task(task, load_model(f"python:{HELPERS}:answer_with_id"), config)
        logs.append((tmp_path / "out" / "python-answer_with_id" / "dup.samples.jsonl").read_text())
    assert logs[0] == logs[1]
    assert [json.loads(line)["raw_output"] for line in logs[1].splitlines()[1:]] == [r["id"] for r in rows]


def test_output_metrics_receive_raw_text_and_the_sample(small_tasks, tmp_path):
    from cxbench import metrics
    from cxbench.metrics.base import Metric, Output, mean_reduce

    seen = []

    def stats(output, target, ctx):
        assert isinstance(output, Output)
        seen.append((output.raw, output.parsed, output.sample.metadata["findings"]))
        return [float(len(output.raw) > 0)]

    metrics.register(Metric("test_raw_nonempty", "test", stats=stats, reduce=mean_reduce, inputs="output"))
    (tmp_path / "t.yaml").write_text(
        "name: raw_t\nfamily: vqa_closed\n"
        "dataset: {name: phantom, split: test, n_cases: 80, seed: 0, size: 128}\n"
        "prompt: '{question}'\nparser: closed\nlabels: closed\nmetrics: [accuracy, test_raw_nonempty]\n"
    )
    task = Task.from_yaml(tmp_path / "t.yaml")
    result, _ = run_task(
        task, load_model("prior"), RunConfig(output_dir=tmp_path, cache_path="", progress=False)
    )
    assert result["metrics"]["test_raw_nonempty"]["value"] == 1.0
    assert len(seen) == result["n"] and all(raw in ("yes", "no", "A", "B", "C", "D") for raw, _, _ in seen)
    assert any(findings for _, _, findings in seen)
