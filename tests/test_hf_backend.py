"""The ``hf:`` backend on a tiny Qwen2.5-VL built offline: every task family, batch-size
invariance, prompts per model profile, identity, and fast clear failures."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from conftest import TASK_NAMES
from PIL import Image

from cxbench.models.base import ModelError
from cxbench.models.hf import HFModel, apply_profile, files_digest, find_profile, load_image
from cxbench.models.tiny_vlm import build_tiny_qwen2_5_vl
from cxbench.runner import RunConfig, run_task
from cxbench.schema import Request
from cxbench.tasks import get_task

MAX_NEW = 24  # keeps the untrained model's rambling short


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices on a shared 2-core machine: one torch thread is several times faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl", seed=0)


@pytest.fixture(scope="module")
def hf(tiny) -> HFModel:
    model = HFModel(str(tiny), max_new_tokens=MAX_NEW)
    model.load()
    return model


class ProcessorSpy:
    """Wraps the processor; records (images given, image groups in input_ids) per prompt."""

    def __init__(self, processor, vision_start_id: int) -> None:
        self._processor = processor
        self._vision_start_id = vision_start_id
        self.calls: list[tuple[list[int], list[int], list]] = []

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, *args, **kwargs):
        inputs = self._processor(*args, **kwargs)
        images = kwargs.get("images") or [[] for _ in kwargs["text"]]
        groups = (inputs["input_ids"] == self._vision_start_id).sum(dim=1).tolist()
        self.calls.append(([len(i) for i in images], groups, images))
        return inputs


def _cheap(task):
    """Report metrics limited to fast ones (BERTScore / METEOR would dominate the test time)."""
    if task.family != "report_generation":
        return task
    metrics = ["bleu4", "rouge_l", "chexpert_micro_f1_14"]
    config = {**task.config, "metrics": metrics, "primary_metric": "bleu4", "leaderboard_metrics": ["bleu4"]}
    return dataclasses.replace(task, metrics=metrics, primary_metric="bleu4", config=config)


def _run(task, model, out: Path, batch_size: int = 4, limit: int = 4):
    config = RunConfig(
        output_dir=out, cache_path="", progress=False, limit=limit, n_bootstrap=20, batch_size=batch_size
    )
    result, _ = run_task(task, model, config, spec="hf:tiny")
    rows = [json.loads(line) for line in (out / model.name / f"{task.name}.samples.jsonl").open()]
    return result, [r for r in rows if "header" not in r]


def test_every_task_family_runs_and_temporal_prompts_carry_two_images(hf, small_tasks, tmp_path, monkeypatch):
    vision_start = hf._tokenizer.convert_tokens_to_ids("<|vision_start|>")
    processor = hf._processor
    for name in TASK_NAMES:
        spy = ProcessorSpy(processor, vision_start)
        monkeypatch.setattr(hf, "_processor", spy)
        task = _cheap(get_task(f"small_{name}", [small_tasks]))
        result, rows = _run(task, hf, tmp_path)
        assert result["n"] == 4
        assert result["errors"]["model_error"] == 0 and result["errors"]["missing_image"] == 0
        assert result["model"]["spec"] == "hf:tiny" and result["model"]["config"]["profile"] == "qwen2.5-vl"
        for row in rows:
            assert row["input_tokens"] > 20 and 1 <= row["output_tokens"] <= MAX_NEW
        # exact mode: one processor call per request, each with its images in the prompt
        expected = 2 if name == "temporal_comparison" else 1
        assert [(given, groups) for given, groups, _ in spy.calls] == [([expected], [expected])] * 4
        if name == "temporal_comparison":  # prior first, then current
            for (_, _, images), row in zip(spy.calls, rows, strict=True):
                prior, current = row["sample"]["images"]
                assert np.array_equal(np.asarray(images[0][0]), np.asarray(load_image(prior)))
                assert np.array_equal(np.asarray(images[0][1]), np.asarray(load_image(current)))
                assert prior != current


@pytest.mark.parametrize("task_name", ["temporal_comparison", "vqa_closed"])
def test_batch_size_does_not_change_greedy_outputs(hf, small_tasks, tmp_path, task_name):
    task = get_task(f"small_{task_name}", [small_tasks])
    _, one = _run(task, hf, tmp_path / "b1", batch_size=1, limit=8)
    _, four = _run(task, hf, tmp_path / "b4", batch_size=4, limit=8)
    assert [r["raw_output"] for r in one] == [r["raw_output"] for r in four]
    assert [(r["input_tokens"], r["output_tokens"]) for r in one] == [
        (r["input_tokens"], r["output_tokens"]) for r in four
    ]
    assert len({r["raw_output"] for r in one}) > 1  # the model does look at its inputs


def _requests(small_tasks, n: int = 3) -> list[Request]:
    task = get_task("small_vqa_closed", [small_tasks])
    return [task.build_request(s) for s in islice(task.samples(), n)]


def test_stop_strings_sampling_seeds_and_per_request_errors(hf, small_tasks):
    requests = _requests(small_tasks)
    greedy = hf.generate(requests)
    text = greedy[0].text
    stop = text[len(text) // 2 :][:3]
    assert stop.strip()
    stopped = hf.generate(
        [dataclasses.replace(requests[0], generation={"max_new_tokens": 64, "stop": [stop]})]
    )
    assert stopped[0].text == text[: text.index(stop)]
    # sampling is seeded per request: the same answer alone or in a batch, again and again
    sampled = [
        dataclasses.replace(r, generation={"max_new_tokens": 16, "temperature": 1.0}) for r in requests
    ]
    assert [r.text for r in hf.generate(sampled)] == [hf.generate([r])[0].text for r in sampled]
    # a broken request fails alone
    broken = dataclasses.replace(
        requests[1],
        messages=[
            {
                "role": "user",
                "content": [{"type": "image", "path": "/no/such.png"}, {"type": "text", "text": "?"}],
            }
        ],
    )
    answers = hf.generate([requests[0], broken, requests[2]])
    assert answers[1].error and "such.png" in answers[1].error and answers[1].text == ""
    assert [answers[0].text, answers[2].text] == [greedy[0].text, greedy[2].text]


def test_missing_models_fail_fast_with_a_clear_message_and_import_no_torch(tmp_path):
    code = """
import sys, time
started = time.perf_counter()
import cxbench.models.hf, cxbench.models.tiny_vlm
from cxbench.models.base import ModelError
assert "torch" not in sys.modules and "transformers" not in sys.modules, "imported too much"
for spec in ("nobody/no-such-model", "/no/such/folder"):
    try:
        cxbench.models.hf.HFModel(spec)
    except ModelError as exc:
        print(exc)
    else:
        raise SystemExit("no error for " + spec)
assert "torch" not in sys.modules and "transformers" not in sys.modules, "imported too much"
print(round(time.perf_counter() - started, 3))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    hub, local, seconds = done.stdout.strip().splitlines()
    assert "`hf download nobody/no-such-model`" in hub and "local path" in hub and "HF_HUB_OFFLINE=1" in hub
    assert "model folder not found: /no/such/folder" in local
    assert float(seconds) < 5


def test_a_cached_hub_id_resolves_offline_and_weights_are_keyed_by_blob(tiny, tmp_path):
    repo = tmp_path / "hf_home" / "hub" / "models--someone--tiny-qwen2.5-vl"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    (repo / "snapshots" / commit).mkdir(parents=True)
    for file in tiny.iterdir():  # the cache layout: snapshot files link to blobs named by content hash
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copy(file, repo / "blobs" / blob)
        (repo / "snapshots" / commit / file.name).symlink_to(f"../../blobs/{blob}")
    code = """
import json, sys
from cxbench.models.hf import HFModel
model = HFModel("someone/tiny-qwen2.5-vl")
print(model.name, model.profile.name, json.loads(model.identity()[3:])["path"])
assert "torch" not in sys.modules
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    name, profile, path = done.stdout.split()
    assert (name, profile) == ("hf-someone_tiny-qwen2.5-vl", "qwen2.5-vl")
    assert path == str(repo / "snapshots" / commit)
    snapshot = repo / "snapshots" / commit
    assert files_digest(snapshot) == files_digest(snapshot, "stat")  # weights by blob name, no reading
    assert files_digest(snapshot) != files_digest(snapshot, "full")


def test_profiles_are_found_by_name_and_shape_the_messages():
    assert find_profile("SII-JasperLi77/CX-Mind").name == "cx-mind"
    assert find_profile("Qika/DeepMedix-R1").name == "deepmedix-r1"
    assert find_profile("google/medgemma-4b-it").name == "medgemma"
    assert find_profile("Qwen/Qwen2.5-VL-7B-Instruct").name == "qwen2.5-vl"
    assert find_profile("/ckpt/global_step_288", model_type="qwen2_5_vl").name == "qwen2.5-vl"
    assert find_profile("org/other-model", model_type="llava").name == "generic"
    assert find_profile("org/anything", name="cx-mind").name == "cx-mind"
    with pytest.raises(ModelError, match="python:"):
        HFModel("StanfordAIMI/CheXagent-2-3b")

    messages = [
        {"role": "user", "content": [{"type": "image", "path": "p.png"}, {"type": "text", "text": "Q?"}]}
    ]
    closed = apply_profile(messages, find_profile("cx-mind"), choices=["a", "b"])
    opened = apply_profile(messages, find_profile("cx-mind"))
    assert closed[0]["content"][1]["text"].startswith("Q?\nPlease review and evaluate each option")
    assert opened[0]["content"][1]["text"].startswith("Q?\nPlease first provide potential diagnoses")
    assert "<think></think><answer></answer>" in opened[0]["content"][1]["text"]
    assert [m["role"] for m in closed] == ["user"]  # CX-Mind's public eval code sends no system turn
    medgemma = apply_profile(messages, find_profile("medgemma"))
    assert medgemma[0] == {"role": "system", "content": "You are an expert radiologist."}
    assert [p["type"] for p in medgemma[1]["content"]] == ["text", "image"]
    own = apply_profile(messages, find_profile("medgemma"), system_prompt="Be brief.")
    assert own[0] == {"role": "system", "content": "Be brief."}
    assert messages[0]["content"][1]["text"] == "Q?"  # the request itself is untouched


def test_rendered_prompt_follows_the_profile(tiny, small_tasks):
    request = _requests(small_tasks, 1)[0]
    plain = HFModel(str(tiny)).render(request)
    assert plain.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>Is there" in plain
    assert plain.endswith("<|im_end|>\n<|im_start|>assistant\n")
    cx = HFModel(str(tiny), profile="cx-mind")
    assert cx.profile.reasoning_budget == 2048
    assert 'Answer with "yes" or "no"' in cx.render(request)
    assert "Use an alternating reasoning format" in cx.render(request)
    assert cx.identity() != HFModel(str(tiny)).identity()


def test_identity_names_the_checkpoint_and_changes_with_its_files(tiny, tmp_path):
    copy = Path(shutil.copytree(tiny, tmp_path / "copy"))
    before = HFModel(str(copy)).identity()
    fields = json.loads(before.removeprefix("hf:"))
    assert fields["path"] == str(copy.resolve()) and fields["dtype"] == "auto:float32"
    assert fields["profile"]["name"] == "qwen2.5-vl" and fields["batching"] == "exact"
    os.utime(copy / "model.safetensors", (1, 1))  # same bytes, new mtime: hashed by content here
    assert HFModel(str(copy)).identity() == before
    assert files_digest(copy, "stat") != files_digest(copy, "full")
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert HFModel(str(copy)).identity() != before
    assert HFModel(str(copy), dtype="bf16").identity() != HFModel(str(copy)).identity()
    assert HFModel(str(copy), exact_batch_invariance=False).identity() != HFModel(str(copy)).identity()


def test_tiny_checkpoint_is_deterministic_for_a_seed(tiny, tmp_path):
    again = build_tiny_qwen2_5_vl(tmp_path / "again", seed=0)
    other = build_tiny_qwen2_5_vl(tmp_path / "other", seed=1)
    assert files_digest(again, "full") == files_digest(tiny, "full")
    assert (other / "model.safetensors").read_bytes() != (tiny / "model.safetensors").read_bytes()
    config = json.loads((tiny / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["vision_config"]["depth"] == 1
    tokenizer = json.loads((tiny / "tokenizer.json").read_text())
    added = {t["content"] for t in tokenizer["added_tokens"]}
    assert {"<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<think>"} <= added


def test_images_are_loaded_as_rgb_and_16_bit_is_scaled(tmp_path):
    ramp = np.linspace(1000, 4000, 64 * 32).reshape(64, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    image = load_image(str(tmp_path / "ramp16.png"))
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.min() == 0 and pixels.max() == 255
    small = load_image(str(tmp_path / "ramp16.png"), max_pixels=512)
    assert small.width * small.height <= 512 and abs(small.width / small.height - 0.5) < 0.1


def test_device_map_without_accelerate_says_what_to_install(tiny):
    if importlib.util.find_spec("accelerate") is not None:
        pytest.skip("accelerate is installed")
    with pytest.raises(ModelError, match="accelerate"):
        HFModel(str(tiny), device_map="auto")


def test_padded_batching_is_opt_in_and_keyed_apart(tiny, small_tasks):
    padded = HFModel(str(tiny), max_new_tokens=8, exact_batch_invariance=False, max_batch_size=2)
    requests = _requests(small_tasks, 3)
    started = time.perf_counter()
    answers = padded.generate(requests)
    assert time.perf_counter() - started < 30
    assert [a.error for a in answers] == [None] * 3 and all(a.output_tokens <= 8 for a in answers)
    assert '"batching": "padded:2"' in padded.identity()
