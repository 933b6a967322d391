"""Model backends, selected by a spec string plus ``--model-args`` (lm-eval style).

=====================  ================================================================
spec                   backend
=====================  ================================================================
``prior``              majority / most frequent answers from the task's train split
``random``             seeded random answers
``phantom-cnn``        small CNN trained on the phantom train split (cached)
``predictions:F``      answers read from a JSONL file ``{"id": ..., "output": ...}``
``python:MOD:FN``      any callable ``FN(request) -> str``; MOD is a module or a .py path
``openai:MODEL``       any OpenAI-compatible chat-completions server (``base_url=...``)
``hf:ID_OR_PATH``      a transformers image-text-to-text model (Qwen2.5-VL, CX-Mind, MedGemma, ...)
``vllm:ID_OR_PATH``    the vLLM offline engine in-process (tensor / data parallel)
=====================  ================================================================
"""

from __future__ import annotations

from typing import Any

from cxbench.models.base import Model, ModelError

BUILTIN = ("prior", "random", "phantom-cnn")


def parse_model_args(text: str | None) -> dict[str, Any]:
    """``"a=1,b=x,c=true"`` -> ``{"a": 1, "b": "x", "c": True}``."""
    args: dict[str, Any] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ModelError(f"--model-args: expected key=value, got {item!r}")
        key, value = (part.strip() for part in item.split("=", 1))
        args[key] = _coerce(value)
    return args


def _coerce(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def load_model(spec: str, model_args: dict[str, Any] | None = None) -> Model:
    """Build the model named by ``spec`` (see the module docstring)."""
    args = dict(model_args or {})
    kind, _, rest = spec.partition(":")
    if kind == "prior":
        from cxbench.models.baselines import PriorModel

        return PriorModel(**args)
    if kind == "random":
        from cxbench.models.baselines import RandomModel

        return RandomModel(**args)
    if kind == "phantom-cnn":
        from cxbench.models.phantom_cnn import PhantomCNNModel

        return PhantomCNNModel(**args)
    if kind == "predictions":
        from cxbench.models.external import PredictionsModel

        return PredictionsModel(rest, **args)
    if kind == "hf":
        from cxbench.models.hf import HFModel

        return HFModel(rest, **args)
    if kind == "vllm":
        from cxbench.models.vllm_backend import VLLMModel

        return VLLMModel(rest, **args)
    if kind == "openai":
        from cxbench.models.openai_compat import OpenAIModel

        return OpenAIModel(rest, **args)
    if kind == "python":
        from cxbench.models.external import PythonModel

        return PythonModel(rest, **args)
    raise ModelError(
        f"unknown model spec {spec!r}; use one of: prior, random, phantom-cnn, "
        "predictions:FILE.jsonl, python:module:function, openai:MODEL_NAME, hf:MODEL_ID_OR_PATH, "
        "vllm:MODEL_ID_OR_PATH"
    )


__all__ = ["BUILTIN", "Model", "ModelError", "load_model", "parse_model_args"]
