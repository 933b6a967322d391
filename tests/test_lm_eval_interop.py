"""cxbench <-> lm-evaluation-harness: export tasks, import --log_samples output, parity of scores."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TRIMMED = "fs_trim"
TRIMMED_METRICS = ["bleu4", "rouge_l", "chexpert_micro_f1_14"]
N = 40


def first_sentence(request) -> str:
    """Deterministic 'model': the first sentence of the findings."""
    findings = request.query.get("findings", "") if hasattr(request, "query") else request
    return findings.split(". ")[0].rstrip(".") + "."


def _load_utils(folder: Path):
    spec = importlib.util.spec_from_file_location(f"utils_{folder.name}", folder / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _yaml_load(path: Path) -> dict:
    """Load an exported YAML, reading ``!function x`` tags as the string ``x``."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")
    return yaml.load(path.read_text(), Loader=Loader)


@pytest.fixture(scope="module")
def trimmed_dir(tmp_path_factory) -> Path:
    from cxbench.tasks import builtin_task_dir

    folder = tmp_path_factory.mktemp("trimmed_tasks")
    config = yaml.safe_load((builtin_task_dir() / "findings_summarization.yaml").read_text())
    config.update(name=TRIMMED, metrics=TRIMMED_METRICS, primary_metric="rouge_l")
    config["leaderboard_metrics"] = ["rouge_l"]
    (folder / f"{TRIMMED}.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trimmed_dir) -> Path:
    from cxbench.interop import export_tasks

    out = tmp_path_factory.mktemp("lm_eval_tasks")
    export_tasks(out, [TRIMMED], [trimmed_dir])
    return out


@pytest.fixture(scope="module")
def native(tmp_path_factory, trimmed_dir) -> dict:
    from cxbench.models import load_model
    from cxbench.runner import RunConfig, run_task
    from cxbench.tasks import get_task

    task = get_task(TRIMMED, [trimmed_dir])
    model = load_model(f"python:{__file__}:first_sentence")
    config = RunConfig(
        limit=N, output_dir=tmp_path_factory.mktemp("native"), cache_path="", n_bootstrap=50, progress=False
    )
    return run_task(task, model, config)[0]


def _synthetic_log_samples(export_dir: Path, out: Path, texts_by_index=None, limit: int = N) -> Path:
    """An lm-eval ``--log_samples`` file in lm-eval's format, answering with ``first_sentence``."""
    name = f"cxbench_{TRIMMED}"
    docs = [json.loads(line) for line in (export_dir / name / f"{name}.jsonl").open()][:limit]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"samples_{name}_2026-01-01T00-00-00.000000.jsonl"
    with path.open("w") as handle:
        for doc_id, doc in enumerate(docs):
            findings = json.loads(doc["sample"])["query"]["findings"]
            text = first_sentence(findings) if texts_by_index is None else texts_by_index[doc_id]
            row = {
                "doc_id": doc_id,
                "doc": doc,
                "target": json.loads(doc["sample"])["target"],
                "arguments": {"gen_args_0": {"arg_0": "prompt", "arg_1": {"until": []}}},
                "resps": [[text]],
                "filtered_resps": [text],
                "filter": "none",
                "metrics": TRIMMED_METRICS,
            }
            handle.write(json.dumps(row) + "\n")
    return path


def test_export_structure_and_hooks(tmp_path, exported, small_tasks):
    from cxbench import metrics as registry
    from cxbench.interop import export_tasks
    from cxbench.metrics.base import MetricContext
    from cxbench.schema import Sample
    from cxbench.tasks import get_task

    paths = export_tasks(tmp_path, ["findings_summarization", "small_vqa_closed"], [small_tasks])
    assert [p.parent.name for p in paths] == ["cxbench_findings_summarization", "cxbench_small_vqa_closed"]
    for path in paths:
        config = _yaml_load(path)
        task = get_task(path.parent.name.removeprefix("cxbench_"), [small_tasks])
        assert config["task"] == path.parent.name
        assert config["dataset_path"] == "json" and config["test_split"] == "test"
        data_file = Path(config["dataset_kwargs"]["data_files"]["test"])
        assert data_file.is_absolute() and data_file.is_file()
        assert config["output_type"] == "generate_until"
        assert config["doc_to_text"] == "!function utils.doc_to_text"
        assert config["process_results"] == "!function utils.process_results"
        assert config["generation_kwargs"]["max_gen_toks"] == task.generation["max_new_tokens"]
        assert config["generation_kwargs"]["do_sample"] is False
        assert config["generation_kwargs"]["until"] == []
        listed = [m["metric"] for m in config["metric_list"]]
        assert set(listed) <= set(task.metrics) and "rouge_l" in listed or task.family != "text"
        for entry in config["metric_list"]:
            assert entry["aggregation"] == f"!function utils.agg_{entry['metric']}"
            assert entry["higher_is_better"] == (registry.get(entry["metric"]).direction == "higher")
        utils = _load_utils(path.parent)
        assert "import cxbench" in (path.parent / "utils.py").read_text().replace(
            "from cxbench", "import cxbench"
        )
        docs = [json.loads(line) for line in data_file.open()]
        first = Sample(**json.loads(docs[0]["sample"]))
        assert utils.doc_to_text(docs[0]).endswith(task.render_prompt(first))
        if task.family == "text":
            assert "doc_to_image" not in config
            assert utils.doc_to_text(docs[0]) == task.render_prompt(first)
        else:
            assert config["doc_to_image"] == "!function utils.doc_to_image"
            images = utils.doc_to_image(docs[0])
            assert len(images) == len(first.images) >= 1 and images[0].mode == "RGB"
            # hand-made answers: the gold letter/word for half, nonsense for the rest
            samples = [Sample(**json.loads(d["sample"])) for d in docs[:12]]
            texts = [str(s.target) if i % 2 else "no idea" for i, s in enumerate(samples)]
            rows = [utils.process_results(d, [t]) for d, t in zip(docs[:12], texts, strict=True)]
            for name in listed:
                value = getattr(utils, f"agg_{name}")([r[name] for r in rows])
                parsed = [task.parse(t, s) for t, s in zip(texts, samples, strict=True)]
                ctx = MetricContext(labels=task.labels)
                expected = registry.corpus_matrix(
                    registry.get(name), parsed, [s.target for s in samples], ctx
                )
                assert value == pytest.approx(expected[1], abs=1e-12), name

    # text task: hand-made responses through lm-eval hooks == cxbench metrics (incl. corpus BLEU)
    folder = paths[0].parent
    utils = _load_utils(folder)
    task = get_task("findings_summarization")
    docs = [json.loads(line) for line in (folder / f"{folder.name}.jsonl").open()][:8]
    samples = [Sample(**json.loads(d["sample"])) for d in docs]
    texts = ["No acute cardiopulmonary abnormality.", "", "Cardiomegaly with small pleural effusion."] * 3
    texts = texts[: len(docs)]
    rows = [utils.process_results(d, [t]) for d, t in zip(docs, texts, strict=True)]
    for name in ("bleu4", "rouge_l", "chexpert_micro_f1_14", "chexpert_macro_f1_5"):
        value = getattr(utils, f"agg_{name}")([r[name] for r in rows])
        parsed = [task.parse(t, s) if t else None for t, s in zip(texts, samples, strict=True)]
        ctx = MetricContext(labels=task.labels)
        expected = registry.corpus_matrix(registry.get(name), parsed, [s.target for s in samples], ctx)[1]
        assert value == pytest.approx(expected, abs=1e-12), name
    json.dumps(rows[0])  # lm-eval writes per-sample metric values into its --log_samples JSONL


def test_import_parity_with_native_run(tmp_path, exported, trimmed_dir, native):
    from cxbench.interop import import_samples

    samples_file = _synthetic_log_samples(exported, tmp_path / "lm_eval_out" / "tiny")
    result = import_samples(
        tmp_path / "lm_eval_out",
        TRIMMED,
        model_name="first-sentence",
        include_paths=[trimmed_dir],
        output_dir=tmp_path / "results",
        n_bootstrap=50,
    )
    assert result["n"] == native["n"] == N
    assert result["model"]["name"] == "first-sentence" and result["model"]["spec"] == "lm-eval"
    assert result["task"]["hash"] == native["task"]["hash"]
    for name in TRIMMED_METRICS:
        assert result["metrics"][name]["value"] == pytest.approx(native["metrics"][name]["value"], abs=1e-9)
        assert result["metrics"][name]["ci95"] == pytest.approx(native["metrics"][name]["ci95"], abs=1e-9)
    assert result["parse_failures"] == native["parse_failures"]
    log = tmp_path / "results" / "first-sentence" / f"{TRIMMED}.samples.jsonl"
    lines = [json.loads(line) for line in log.open()]
    assert lines[0]["header"]["task"] == TRIMMED and lines[0]["header"]["spec"] == "lm-eval"
    assert [row["index"] for row in lines[1:]] == list(range(N))
    assert (tmp_path / "results" / "first-sentence" / f"{TRIMMED}.json").is_file()
    assert (
        import_samples(
            samples_file, TRIMMED, include_paths=[trimmed_dir], output_dir=tmp_path / "r2", n_bootstrap=50
        )["metrics"]["rouge_l"]["value"]
        == result["metrics"]["rouge_l"]["value"]
    )

    # the same rows aggregated on the lm-eval side (process_results + agg_*) give the same numbers
    utils = _load_utils(exported / f"cxbench_{TRIMMED}")
    rows = [json.loads(line) for line in samples_file.open()]
    processed = [utils.process_results(r["doc"], r["filtered_resps"]) for r in rows]
    for name in TRIMMED_METRICS:
        value = getattr(utils, f"agg_{name}")([p[name] for p in processed])
        assert value == pytest.approx(native["metrics"][name]["value"], abs=1e-6)  # results round to 6


def test_cli_export_import(tmp_path, trimmed_dir, exported):
    import argparse

    from cxbench.interop.lm_eval import add_interop_arguments, cli_export, cli_import

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_interop_arguments(sub)
    args = parser.parse_args(
        ["export", "lm-eval", str(tmp_path / "ex"), "--tasks", TRIMMED, "--include-path", str(trimmed_dir)]
    )
    assert cli_export(args) == 0
    assert (tmp_path / "ex" / f"cxbench_{TRIMMED}" / "utils.py").is_file()
    _synthetic_log_samples(tmp_path / "ex", tmp_path / "out", limit=5)
    args = parser.parse_args(
        [
            "import",
            "lm-eval",
            str(tmp_path / "out"),
            "--task",
            f"cxbench_{TRIMMED}",
            "--model-name",
            "m",
            "--output",
            str(tmp_path / "res"),
            "--include-path",
            str(trimmed_dir),
            "--bootstrap",
            "10",
        ]
    )
    assert cli_import(args) == 0
    assert json.loads((tmp_path / "res" / "m" / f"{TRIMMED}.json").read_text())["n"] == 5


def _build_tiny_lm(folder: Path, texts: list[str]) -> Path:
    """A 2-layer Qwen2 causal LM with a word-level tokenizer trained here (random weights)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "</s>"], vocab_size=2000)
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="</s>"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=fast.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.skipif(
    shutil.which("lm_eval", path=str(Path(sys.executable).parent)) is None
    and importlib.util.find_spec("lm_eval") is None,
    reason="lm-eval is not installed",
)
def test_lm_eval_cli_offline_parity(tmp_path, exported, trimmed_dir):
    from cxbench.interop import import_samples
    from cxbench.models import load_model
    from cxbench.runner import RunConfig, run_task
    from cxbench.tasks import get_task

    name = f"cxbench_{TRIMMED}"
    docs = [json.loads(line) for line in (exported / name / f"{name}.jsonl").open()]
    texts = [
        json.loads(d["sample"])["query"]["findings"] + " " + json.loads(d["sample"])["target"] for d in docs
    ]
    model_dir = _build_tiny_lm(
        tmp_path / "tiny_lm",
        texts
        + ["Summarize the following chest X-ray findings into a concise impression. Findings: Impression:"],
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        "-m",
        "lm_eval",
        "--include_path",
        str(exported),
        "--tasks",
        name,
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model_dir},dtype=float32",
        "--device",
        "cpu",
        "--limit",
        "5",
        "--log_samples",
        "--output_path",
        str(tmp_path / "out"),
        "--gen_kwargs",
        "max_gen_toks=16",
        "--batch_size",
        "1",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"lm_eval did not run offline here: {done.stderr.strip().splitlines()[-3:]}")
    result = import_samples(
        tmp_path / "out",
        TRIMMED,
        model_name="tiny-lm",
        include_paths=[trimmed_dir],
        output_dir=tmp_path / "results",
        n_bootstrap=20,
    )
    assert result["n"] == 5
    # native cxbench run on the texts lm-eval produced (a predictions file) gives the same numbers
    log = tmp_path / "results" / "tiny-lm" / f"{TRIMMED}.samples.jsonl"
    rows = [json.loads(line) for line in log.open()][1:]
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text(
        "".join(json.dumps({"id": r["sample_id"], "output": r["raw_output"]}) + "\n" for r in rows)
    )
    native, _ = run_task(
        get_task(TRIMMED, [trimmed_dir]),
        load_model(f"predictions:{predictions}"),
        RunConfig(limit=5, output_dir=tmp_path / "native", cache_path="", n_bootstrap=20, progress=False),
    )
    lm_values = result.get("lm_eval_metrics") or {}
    for metric in TRIMMED_METRICS:
        assert result["metrics"][metric]["value"] == pytest.approx(
            native["metrics"][metric]["value"], abs=1e-9
        )
        key = next(k for k in lm_values if k.split(",")[0] == metric)
        assert lm_values[key] == pytest.approx(native["metrics"][metric]["value"], abs=1e-6)


def test_lm_eval_api_custom_model_parity(tmp_path, exported, trimmed_dir, native):
    """lm-eval itself loads the exported task, calls the hooks, aggregates and writes --log_samples."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.api.model import LM
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from cxbench.interop import import_samples

    class FirstSentence(LM):
        def generate_until(self, requests):
            return [
                first_sentence(r.args[0].split("Findings: ", 1)[1].split("\nImpression:")[0])
                for r in requests
            ]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    name = f"cxbench_{TRIMMED}"
    out = lm_eval.simple_evaluate(
        model=FirstSentence(),
        tasks=[name],
        task_manager=TaskManager(include_path=str(exported)),
        limit=N,
        log_samples=True,
        bootstrap_iters=0,
    )
    tracker = EvaluationTracker(output_path=str(tmp_path / "out"))
    tracker.general_config_tracker.model_name_sanitized = "first_sentence"
    tracker.save_results_aggregated(results=out, samples=out["samples"])
    tracker.save_results_samples(task_name=name, samples=out["samples"][name])
    result = import_samples(
        tmp_path / "out",
        TRIMMED,
        model_name="fs",
        include_paths=[trimmed_dir],
        output_dir=tmp_path / "results",
        n_bootstrap=50,
    )
    assert result["n"] == N
    for metric in TRIMMED_METRICS:
        lm_value = out["results"][name][f"{metric},none"]
        assert lm_value == pytest.approx(result["metrics"][metric]["value"], abs=1e-6)
        assert result["metrics"][metric]["value"] == pytest.approx(
            native["metrics"][metric]["value"], abs=1e-9
        )


def test_image_task_through_lm_eval_hf_multimodal(small_tasks, tmp_path):
    """An exported image task run by `lm_eval --model hf-multimodal` on the tiny Qwen2.5-VL.

    On machines without torchvision this cannot run: transformers' AutoProcessor for
    Qwen2.5-VL builds Qwen2VLVideoProcessor, which requires torchvision (and PyPI torchvision
    does not import beside the CPU torch 2.13 build used here). The skip message says so.
    """
    import os
    import shutil
    import subprocess

    from cxbench.interop.lm_eval import export_tasks, import_samples
    from cxbench.models.tiny_vlm import build_tiny_qwen2_5_vl

    lm_eval = shutil.which("lm_eval") or str(Path(sys.executable).parent / "lm_eval")
    if not Path(lm_eval).exists():
        pytest.skip("lm_eval CLI not installed")
    model = build_tiny_qwen2_5_vl(tmp_path / "tiny")
    export_tasks(tmp_path / "tasks", ["small_vqa_closed"], include_paths=[small_tasks])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    argv = [lm_eval, "--include_path", str(tmp_path / "tasks"), "--tasks", "cxbench_small_vqa_closed"]
    argv += ["--model", "hf-multimodal", "--model_args", f"pretrained={model}", "--limit", "4"]
    argv += ["--log_samples", "--output_path", str(tmp_path / "out")]
    run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    if run.returncode != 0 and "requires the Torchvision library" in run.stderr:
        pytest.skip(
            "lm_eval hf-multimodal cannot load Qwen2.5-VL here: AutoProcessor builds "
            "Qwen2VLVideoProcessor, which requires torchvision (not installable beside torch 2.13 CPU)"
        )
    assert run.returncode == 0, run.stderr[-2000:]
    result = import_samples(
        tmp_path / "out", "small_vqa_closed", include_paths=[small_tasks], output_dir=tmp_path / "imported"
    )
    assert result["n"] == 4
