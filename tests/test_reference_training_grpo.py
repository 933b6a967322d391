"""reference_training end to end on the tiny Qwen2.5-VL (CPU, offline): a short cold-start SFT,
a 3-step GRPO run with the CX-Mind rewards, and the checkpoint answering through cxbench's hf:
backend."""

from __future__ import annotations

import json

import pytest
from conftest import SMALL_PHANTOM

from reference_training.config import stage_config_from_dict
from reference_training.train import run_stage


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices on a shared 2-core machine: one torch thread is several times faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from cxbench.models.tiny_vlm import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("models") / "tiny", seed=0, max_image_tokens=16)


def _stage(stage: str, model, out, trainer: dict, **extra):
    data = {"dataset": "phantom", "split": "train", "params": dict(SMALL_PHANTOM), "limit_per_family": 4}
    common = {
        "bf16": False,
        "activation_checkpointing": False,
        "disable_tqdm": True,
        "seed": 0,
        "logging_steps": 1,
    }
    return stage_config_from_dict(
        {
            "stage": stage,
            "model": str(model),
            "output_dir": str(out),
            "data": data,
            "trainer": {**common, **trainer},
        }
        | extra
    )


def test_cold_start_then_three_grpo_steps_then_hf_backend(tiny, tmp_path):
    cold = _stage("cold_start", tiny, tmp_path / "cold", {"max_steps": 2, "per_device_train_batch_size": 4})
    summary = run_stage(cold)
    assert summary["examples"] > 0 and (tmp_path / "cold" / "model.safetensors").is_file()
    losses = [e["loss"] for e in summary["log_history"] if "loss" in e]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)

    grpo = _stage(
        "grpo_closed",
        tmp_path / "cold",
        tmp_path / "grpo",
        {
            "max_steps": 3,
            "per_device_train_batch_size": 4,
            "num_generations": 2,
            "max_completion_length": 12,
            "learning_rate": 1e-4,
            "beta": 0.01,
            "top_p": 0.99,
        },
        rewards={"format": 0.1, "outcome": 0.9, "consistency": 0.2, "think": 0.2},
        use_vllm="auto",  # not installed here: transformers generation
    )
    summary = run_stage(grpo)
    steps = [e for e in summary["log_history"] if "reward" in e]
    assert [e["step"] for e in steps] == [1, 2, 3]
    for entry in steps:
        for name in ("format_reward", "closed_outcome_reward", "consistency_reward", "think_reward"):
            assert 0.0 <= entry[f"rewards/{name}/mean"] <= 1.0
        assert "process_gate_open" in entry and "kl" in entry
        assert entry["completions/max_length"] <= 12
    assert len(summary["gate_history"]) == 3  # one gate decision per GRPO batch
    saved = json.loads((tmp_path / "grpo" / "stage.json").read_text())
    assert saved["config"]["trainer"]["num_generations"] == 2

    # the checkpoint loads in cxbench's hf: backend and answers a task request
    from cxbench.data.adapters import get_adapter
    from cxbench.models.hf import HFModel
    from cxbench.tasks import get_task

    task = get_task("vqa_closed")
    sample = next(get_adapter("phantom").samples("vqa_closed", "test", dict(SMALL_PHANTOM)))
    model = HFModel(str(tmp_path / "grpo"), max_new_tokens=8)
    response = model.generate([task.build_request(sample)])[0]
    assert response.error is None and response.output_tokens and response.output_tokens <= 8
