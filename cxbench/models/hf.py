"""The ``hf:`` backend: transformers image-text-to-text models, run in-process.

``hf:MODEL`` loads ``MODEL`` (a local checkpoint folder or a Hugging Face model id) with
``AutoProcessor`` + ``AutoModelForImageTextToText``, falling back to the class named in the
config's ``architectures``, then ``AutoModelForCausalLM`` (text-only models: requests with
images then fail one by one). When ``AutoProcessor`` cannot be built (Qwen2-VL-style
processors need torchvision for their video processor), the processor is assembled from the
tokenizer and the image processor, without video support.

With ``HF_HUB_OFFLINE=1`` nothing is downloaded: a model id must already be in the local
Hugging Face cache, else a :class:`ModelError` says how to download it. Code from the hub runs
only with ``trust_remote_code=True``. Importing this module imports neither torch nor
transformers; the weights load on the first :meth:`HFModel.generate` (or :meth:`HFModel.load`),
so a re-run answered from the response cache never loads them.

Prompting: a request's chat messages go through the model's own chat template; images are
loaded with PIL and converted to RGB (16-bit and float images are min-max scaled to 8 bits
first), in message order (temporal tasks: prior, then current). Per-model quirks live in
:data:`PROFILES` and nowhere else; see "Profiles" below.

Generation: greedy unless the request's ``temperature`` > 0 (then sampling with
``temperature``/``top_p``, seeded per request from ``seed`` and the sample id);
``max_new_tokens`` from the request (a profile's reasoning budget or the ``max_new_tokens``
argument may change it); ``stop`` strings end generation and are cut from the text (OpenAI
semantics). Only the new tokens are decoded, special tokens skipped. ``input_tokens`` counts
the prompt tokens including image tokens; ``output_tokens`` the generated tokens up to and
including the end-of-turn token; ``latency_s`` is the wall time of the forward pass that
produced the answer (shared by a padded batch).

Batch-size invariance: with ``exact_batch_invariance=True`` (default) every request runs alone,
so an answer never depends on which requests share its batch: batch 1 and batch 4 give
identical outputs (tested). Left-padded batching (``exact_batch_invariance=False``, up to
``max_batch_size`` requests with the same generation settings per forward pass) is faster on a
GPU, but padding and batch shape change float rounding (matmul blocking, bf16), which can flip a
greedy choice; the identity then records the batching, so such answers are cached apart.

Identity (the response-cache key): the model id, the resolved folder, a digest of its files,
the dtype, the profile and every argument that changes answers, and the transformers version.
File digest: small files (config, tokenizer, templates) by content; weight files by the blob
name when they are Hugging Face cache symlinks (the blob name is the content's SHA-256), else by
content when the weights total at most 512 MB, else by name + size + mtime (hashing many GB
takes minutes; pass ``weights_hash="full"`` to hash them anyway). Device and ``device_map``
are not part of the identity: a run resumes from the cache on another GPU count (answers on
other hardware may differ in the last bits).

Profiles (matched on the model id or path, most specific first; ``profile=NAME`` forces one):

``cx-mind``
    CX-Mind (Li et al., arXiv:2508.03733), weights ``SII-JasperLi77/CX-Mind`` (linked from the
    project README). A Qwen2.5-VL-7B fine-tune answering in interleaved
    ``<think>…</think><answer>…</answer>`` pairs. From its public evaluation scripts
    (github.com/SII-zyj/CX-Mind-private ``eval/eval_close.py``, ``eval/eval_open.py``): no system
    message; the images come first, then the question followed by a newline and a format
    instruction, one wording for multiple choice (used when the request has ``choices``) and one
    for open questions (used otherwise; for yes/no, report, temporal and localization prompts
    this choice is our assumption); greedy decoding with up to 2048 new tokens. The task brief
    called it a system prompt; we follow the public code and append it to the user turn. The
    reasoning budget (at least 2048 new tokens) keeps the short task limits from cutting the
    reasoning before the answer.
``deepmedix-r1``
    DeepMedix-R1 (Lin et al., arXiv:2509.03906), weights ``Qika/DeepMedix-R1`` (Hugging Face
    collection "DeepMedix-R1", listed as 8B; a Qwen2.5-VL-7B base is our assumption,
    unverified). The format instruction (think in ``<think>`` with box coordinates, final
    answer in ``\\boxed{}``) is the training prompt of github.com/DeepReasoning/DeepMedix-R1
    ``src/xray_format.jinja``, appended after a blank line; that the released model expects it
    at inference is an assumption (unverified). Reasoning budget 2048 (assumption).
``chexagent``
    CheXagent (``StanfordAIMI/CheXagent-8b``, ``StanfordAIMI/CheXagent-2-3b``) ships its own
    modelling code (``custom_code``, ``modeling_chexagent.py`` on the hub) with its own image and
    prompt interface, not a processor chat template. Not supported here: loading raises a
    ModelError that suggests wrapping the model card's inference code in a ``python:`` backend
    (``profile=generic`` tries the generic path anyway, unverified).
``medgemma``
    MedGemma (``google/medgemma-4b-it``, ``google/medgemma-27b-it``; Gemma 3). The model card
    example loads it with ``AutoModelForImageTextToText`` in bfloat16, uses the system prompt
    "You are an expert radiologist." and puts the text before the image in the user turn; we
    do the same. Greedy decoding as in that example.
``qwen2.5-vl``
    Qwen2.5-VL-Instruct (``Qwen/Qwen2.5-VL-7B-Instruct`` and sizes; also any checkpoint whose
    config says ``qwen2_5_vl`` and matches no profile above). No quirk: its own chat template
    adds the default system prompt "You are a helpful assistant." when a chat has none; images
    before the text, as in the model card.
``generic``
    Everything else: the request's messages as they are.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxbench.models.base import Model, ModelError
from cxbench.schema import Request, Response

if TYPE_CHECKING:
    from PIL import Image

_CX_MIND_CLOSED = (
    "\nPlease review and evaluate each option in sequence, providing judgments for each, and summarize "
    "to output the final answer. Please think step by step, and conduct your reasoning within "
    "<think></think> and share intermediate answers within <answer></answer>. Use an alternating "
    "reasoning format: <think></think><answer></answer><think></think><answer></answer> until you "
    "reach the final answer."
)
_CX_MIND_OPEN = (
    "\nPlease first provide potential diagnoses, then evaluate each one in sequence, and summarize to "
    "output the final answer. Please think step by step, and conduct your reasoning within "
    "<think></think> and share intermediate answers within <answer></answer>. Use an alternating "
    "reasoning format: <think></think><answer></answer><think></think><answer></answer> until you "
    "reach the final answer."
)
_DEEPMEDIX = (
    "\n\nYou FIRST think about the reasoning process as an internal monologue and then provide the final "
    "answer. The reasoning process MUST BE enclosed within <think> </think> tags. During this reasoning "
    "process, prioritize analyzing the local regions of the image by leveraging the bounding box "
    "coordinates in the format [x_min, y_min, x_max, y_max]. The final answer MUST BE put in \\boxed{}. "
    "An example is like: <think> reasoning process 1 with [x_min1, y_min1, x_max1, y_max1]; reasoning "
    "process 2 with [x_min2, y_min2, x_max2, y_max2] </think>. The answer is: \\boxed{answer}."
)


@dataclass(frozen=True)
class Profile:
    """How one model family wants to be prompted (see the module docstring for sources)."""

    name: str
    #: regular expression searched in the lower-cased model id / path
    pattern: str = ""
    #: config ``model_type`` values that select this profile when no pattern matched
    model_types: tuple[str, ...] = ()
    #: system prompt used when the request has no system message
    system: str | None = None
    #: text appended to the last text part of the last user message
    instruction: str | None = None
    #: used instead of ``instruction`` when the request has answer choices
    instruction_choices: str | None = None
    #: "as_given" (images where the task put them: before the text) or "after_text"
    image_placement: str = "as_given"
    #: reasoning models: at least this many new tokens, whatever the task asks
    reasoning_budget: int | None = None
    #: why this backend cannot run the model (loading raises a ModelError), or None
    unsupported: str | None = None


#: Profiles, most specific first; ``generic`` matches everything.
PROFILES: tuple[Profile, ...] = (
    Profile(
        "cx-mind",
        pattern=r"cx[-_ ]?mind",
        instruction=_CX_MIND_OPEN,
        instruction_choices=_CX_MIND_CLOSED,
        reasoning_budget=2048,
    ),
    Profile("deepmedix-r1", pattern=r"deepmedix", instruction=_DEEPMEDIX, reasoning_budget=2048),
    Profile(
        "chexagent",
        pattern=r"chexagent",
        unsupported=(
            "CheXagent ships its own modelling code (trust_remote_code) with its own image/prompt "
            "interface, not a processor chat template; wrap the inference code of its model card in a "
            "`python:` backend (or pass profile=generic to try the generic path, unverified)"
        ),
    ),
    Profile(
        "medgemma",
        pattern=r"medgemma",
        system="You are an expert radiologist.",
        image_placement="after_text",
    ),
    Profile("qwen2.5-vl", pattern=r"qwen2\.5[-_]?vl", model_types=("qwen2_5_vl",)),
    Profile("generic"),
)
_PROFILES_BY_NAME = {p.name: p for p in PROFILES}

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".msgpack", ".h5", ".onnx")
_FULL_HASH_LIMIT = 512 * 2**20
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def find_profile(model: str, model_type: str | None = None, name: str = "auto") -> Profile:
    """The profile named ``name``, or (``"auto"``) the first whose pattern matches ``model``,
    else the first listing ``model_type``, else ``generic``."""
    if name != "auto":
        if name not in _PROFILES_BY_NAME:
            raise ModelError(f"hf: unknown profile {name!r}; known: auto, {', '.join(_PROFILES_BY_NAME)}")
        return _PROFILES_BY_NAME[name]
    lowered = model.lower()
    for profile in PROFILES:
        if profile.pattern and re.search(profile.pattern, lowered):
            return profile
    for profile in PROFILES:
        if model_type and model_type in profile.model_types:
            return profile
    return _PROFILES_BY_NAME["generic"]


def apply_profile(
    messages: list[dict[str, Any]],
    profile: Profile,
    choices: list[str] | None = None,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """The request's messages as this model should see them (a new list; the input is untouched).

    ``system_prompt`` (when not None) replaces every system message; ``""`` removes them. Else
    the profile's system prompt is added when the chat has none.
    """
    out = [
        {**m, "content": m["content"] if isinstance(m["content"], str) else list(m["content"])}
        for m in messages
    ]
    if system_prompt is not None:
        out = [m for m in out if m["role"] != "system"]
        if system_prompt:
            out.insert(0, {"role": "system", "content": system_prompt})
    elif profile.system and not any(m["role"] == "system" for m in out):
        out.insert(0, {"role": "system", "content": profile.system})
    instruction = (
        profile.instruction_choices if choices and profile.instruction_choices else profile.instruction
    )
    users = [m for m in out if m["role"] == "user"]
    if instruction and users:
        last = users[-1]
        if isinstance(last["content"], str):
            last["content"] += instruction
        else:
            texts = [i for i, p in enumerate(last["content"]) if p.get("type") == "text"]
            if texts:
                part = last["content"][texts[-1]]
                last["content"][texts[-1]] = {**part, "text": part["text"] + instruction}
            else:
                last["content"].append({"type": "text", "text": instruction.lstrip("\n")})
    if profile.image_placement == "after_text":
        for message in out:
            if not isinstance(message["content"], str):
                parts = message["content"]
                message["content"] = [p for p in parts if p.get("type") != "image"] + [
                    p for p in parts if p.get("type") == "image"
                ]
    return out


def load_image(path: str, max_pixels: int | None = None) -> Image.Image:
    """An RGB PIL image read by :func:`cxbench.images.load_image` (PNG/JPEG/DICOM; 16-bit / float
    images min-max scaled to 8 bits; DICOM windowed), shrunk to ``max_pixels``."""
    from PIL import Image

    from cxbench.images import load_image as read_image

    rgb = read_image(path).convert("RGB")
    if max_pixels and rgb.width * rgb.height > max_pixels:
        scale = math.sqrt(max_pixels / (rgb.width * rgb.height))
        size = (max(1, int(rgb.width * scale)), max(1, int(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
    return rgb


def _offline() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _needs(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ModelError(f"hf: {what} needs the `{module}` package: pip install 'cxbench[hf]'")


def files_digest(folder: Path, weights_hash: str = "auto") -> str:
    """A digest of a checkpoint folder (see the module docstring for what is hashed how)."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    weights = {p for p in files if p.name.endswith(_WEIGHT_SUFFIXES)}
    by_stat = weights_hash == "stat" or (
        weights_hash == "auto" and sum(p.stat().st_size for p in weights) > _FULL_HASH_LIMIT
    )
    digest = hashlib.sha256()
    for path in files:
        name = path.relative_to(folder).as_posix()
        if path in weights and path.is_symlink() and weights_hash != "full":
            how = f"blob:{Path(os.readlink(path)).name}"  # HF cache: blobs are named by content hash
        elif path in weights and by_stat:
            stat = path.stat()
            how = f"stat:{stat.st_size}:{stat.st_mtime_ns}"
        else:
            content = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    content.update(chunk)
            how = f"sha256:{content.hexdigest()}"
        digest.update(f"{name}={how}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class _Prepared:
    """One request ready for the processor."""

    index: int
    request: Request
    text: str
    images: list[Any]
    settings: dict[str, Any]


def declared_dtype(dtype: str, config: dict[str, Any], default: str) -> str:
    """The dtype setting for identities: as given, or ``auto:<dtype the checkpoint declares>``."""
    if dtype != "auto":
        return dtype
    declared = config.get("dtype") or config.get("torch_dtype")
    declared = declared or (config.get("text_config") or {}).get("dtype") or default
    return f"auto:{declared}"


def resolve_checkpoint(model_id: str, backend: str, revision: str | None = None) -> Path | None:
    """The local folder of a checkpoint given as a folder or a Hugging Face model id.

    A folder must hold ``config.json``. A hub id resolves to its snapshot in the local cache;
    when it is not cached: with ``HF_HUB_OFFLINE=1`` a ModelError saying how to download it,
    else None (the backend may then download it). Imports no model library.
    """
    given = Path(model_id).expanduser()
    if given.is_dir():
        if not (given / "config.json").is_file():
            raise ModelError(f"{backend}: {given} has no config.json: not a transformers checkpoint folder")
        return given.resolve()
    looks_local = model_id.startswith((".", "/", "~")) or given.is_absolute() or model_id.count("/") > 1
    if looks_local or given.exists():
        raise ModelError(
            f"{backend}: model folder not found: {model_id}. Pass the folder of a saved checkpoint "
            "(config.json + weights) or a Hugging Face model id such as Qwen/Qwen2.5-VL-7B-Instruct."
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, revision=revision, local_files_only=True))
    except Exception as exc:  # hub client missing, not cached (LocalEntryNotFoundError), bad id
        if _offline():
            raise ModelError(
                f"{backend}: model {model_id!r} is not in the local Hugging Face cache and "
                f"HF_HUB_OFFLINE=1 forbids downloading it ({type(exc).__name__}). Download it with "
                f"`hf download {model_id}` (or `huggingface-cli download {model_id}`), "
                "or pass a local path."
            ) from None
        return None


class HFModel(Model):
    """A transformers image-text-to-text model (see the module docstring).

    ``path``: local checkpoint folder or Hugging Face model id. ``revision``: hub revision.
    ``dtype``: "auto" (the checkpoint's), "bfloat16", "float16" or "float32". ``device``: "auto"
    (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...; ignored when ``device_map``
    is given ("auto" spreads the model over all visible GPUs; needs ``accelerate``).
    ``attn_implementation``: e.g. "sdpa", "flash_attention_2". ``trust_remote_code``: run
    modelling code from the checkpoint (off by default). ``profile``: "auto" or a name in
    :data:`PROFILES`. ``system_prompt``: replaces the system message of every request ("" removes
    it). ``max_image_pixels``: shrink larger images (aspect kept) before the processor.
    ``max_new_tokens``: replaces every request's limit (and the profile's reasoning budget).
    ``exact_batch_invariance`` / ``max_batch_size``: see "Batch-size invariance". ``seed``: base
    seed for sampled requests. ``weights_hash``: "auto", "full" or "stat" (identity digest).
    ``cpu_threads``: ``torch.set_num_threads`` at load (process-wide; on a busy or small CPU, 1
    thread can be several times faster for small models).
    """

    def __init__(
        self,
        path: str,
        dtype: str = "auto",
        device: str = "auto",
        device_map: str | dict | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        profile: str = "auto",
        system_prompt: str | None = None,
        max_image_pixels: int | None = None,
        max_new_tokens: int | None = None,
        exact_batch_invariance: bool = True,
        max_batch_size: int = 8,
        seed: int = 0,
        weights_hash: str = "auto",
        cpu_threads: int | None = None,
        name: str | None = None,
    ) -> None:
        self.model_id = str(path)
        dtype = str(dtype).lower()
        if dtype != "auto" and dtype not in _DTYPES:
            raise ModelError(f"hf: dtype must be auto, bfloat16, float16 or float32, got {dtype!r}")
        self.dtype = _DTYPES.get(dtype, "auto")
        self.device = str(device)
        self.device_map = device_map
        self.attn_implementation = attn_implementation
        self.trust_remote_code = bool(trust_remote_code)
        self.revision = revision
        self.system_prompt = system_prompt
        self.max_image_pixels = int(max_image_pixels) if max_image_pixels else None
        self.max_new_tokens = int(max_new_tokens) if max_new_tokens else None
        self.exact_batch_invariance = bool(exact_batch_invariance)
        self.max_batch_size = max(1, int(max_batch_size))
        self.seed = int(seed)
        if weights_hash not in ("auto", "full", "stat"):
            raise ModelError(f"hf: weights_hash must be auto, full or stat, got {weights_hash!r}")
        self.weights_hash = weights_hash
        self.cpu_threads = int(cpu_threads) if cpu_threads else None
        named = find_profile(self.model_id, None, profile)
        if named.unsupported:
            raise ModelError(f"hf: {self.model_id}: {named.unsupported}")
        self.folder = self._resolve()  # None: a hub id to download on load (online only)
        _needs("transformers", "the hf: backend")
        if device_map is not None:
            _needs("accelerate", "device_map")
        self._config = self._read_config() if self.folder else {}
        self.profile = find_profile(self.model_id, self._config.get("model_type"), profile)
        self._digest = files_digest(self.folder, weights_hash) if self.folder else None
        short = (
            self.model_id.rstrip("/").split("/")[-1] if self.folder and Path(self.model_id).exists() else None
        )
        self.name = name or "hf-" + (short or self.model_id.replace("/", "_"))
        self._model: Any = None
        self._processor: Any = None
        self._tokenizer: Any = None
        self._load_error: ModelError | None = None

    # ----------------------------------------------------------------- resolving and loading

    def _resolve(self) -> Path | None:
        """The local folder of the checkpoint; fails fast (before importing transformers)."""
        _needs("huggingface_hub", "the hf: backend")
        return resolve_checkpoint(self.model_id, "hf", self.revision)

    def _read_config(self) -> dict[str, Any]:
        try:
            return json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"hf: cannot read {self.folder / 'config.json'}: {exc}") from None

    def _declared_dtype(self) -> str:
        return declared_dtype(self.dtype, self._config, default="float32")

    def _load_kwargs(self) -> dict[str, Any]:
        return {
            "trust_remote_code": self.trust_remote_code,
            "local_files_only": _offline(),
            "revision": self.revision,
        }

    def load(self) -> None:
        """Load processor and weights now (otherwise done by the first ``generate``)."""
        if self._model is not None:
            return
        if self._load_error is not None:
            raise self._load_error
        try:
            self._load()
        except ModelError as exc:
            self._load_error = exc
            raise
        except Exception as exc:
            self._load_error = ModelError(f"hf: cannot load {self.model_id}: {type(exc).__name__}: {exc}")
            raise self._load_error from exc

    def _load(self) -> None:
        import torch
        import transformers

        if self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        source = str(self.folder or self.model_id)
        kwargs = self._load_kwargs()
        processor = self._load_processor(transformers, source, kwargs)
        tokenizer = getattr(processor, "tokenizer", processor)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model_kwargs: dict[str, Any] = dict(kwargs)
        dtype_key = "dtype" if _transformers_version() >= (4, 56) else "torch_dtype"
        model_kwargs[dtype_key] = "auto" if self.dtype == "auto" else getattr(torch, self.dtype)
        if self.device_map is not None:
            model_kwargs["device_map"] = self.device_map
        if self.attn_implementation:
            model_kwargs["attn_implementation"] = self.attn_implementation
        model = self._load_weights(transformers, source, model_kwargs)
        if self.device_map is None:
            device = self.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            model.to(device)
        model.eval()
        if self.folder is None:  # downloaded just now: hash what is in the cache
            self.folder = self._resolve()
            self._config = self._read_config() if self.folder else {}
            self._digest = files_digest(self.folder, self.weights_hash) if self.folder else None
        self._processor, self._tokenizer, self._model = processor, tokenizer, model

    def _load_processor(self, transformers: Any, source: str, kwargs: dict[str, Any]) -> Any:
        try:
            return transformers.AutoProcessor.from_pretrained(source, **kwargs)
        except Exception as first:  # e.g. a video processor that needs torchvision
            try:
                return assemble_processor(transformers, source, kwargs)
            except Exception as second:
                raise ModelError(
                    f"hf: cannot build the processor of {self.model_id}: {type(first).__name__}: {first}; "
                    "assembling it from tokenizer + image processor failed too: "
                    f"{type(second).__name__}: {second}"
                ) from None

    def _load_weights(self, transformers: Any, source: str, kwargs: dict[str, Any]) -> Any:
        architectures = self._config.get("architectures") or []
        candidates = [
            getattr(transformers, "AutoModelForImageTextToText", None),
            getattr(transformers, architectures[0], None) if architectures else None,
            transformers.AutoModelForCausalLM,
        ]
        refused = []
        for cls in candidates:
            if cls is None:
                continue
            try:
                return cls.from_pretrained(source, **kwargs)
            except ValueError as exc:  # "Unrecognized configuration class ..." for this auto class
                refused.append(f"{cls.__name__}: {str(exc).splitlines()[0]}")
        raise ModelError(
            f"hf: no transformers class loads {self.model_id} ({'; '.join(refused)}). Upgrade transformers, "
            "or pass trust_remote_code=true if the checkpoint ships its own code and you trust it."
        )

    # ----------------------------------------------------------------- contract

    def identity(self) -> str:
        if self._digest is None:
            self.load()  # a hub id that was not cached: download it to know what it is
        return "hf:" + json.dumps(
            {
                "model": self.model_id,
                "path": str(self.folder),
                "revision": self.revision,
                "files": self._digest,
                "dtype": self._declared_dtype(),
                "attn_implementation": self.attn_implementation,
                "profile": asdict(self.profile),
                "system_prompt": self.system_prompt,
                "max_image_pixels": self.max_image_pixels,
                "max_new_tokens": self.max_new_tokens,
                "batching": "exact" if self.exact_batch_invariance else f"padded:{self.max_batch_size}",
                "seed": self.seed,
                "transformers": _package_version("transformers"),
            },
            sort_keys=True,
        )

    def config(self) -> dict:
        return {
            "model": self.model_id,
            "path": str(self.folder),
            "revision": self.revision,
            "files_digest": self._digest,
            "dtype": self._declared_dtype(),
            "device": self.device,
            "device_map": self.device_map,
            "attn_implementation": self.attn_implementation,
            "trust_remote_code": self.trust_remote_code,
            "profile": self.profile.name,
            "system_prompt": self.system_prompt,
            "max_image_pixels": self.max_image_pixels,
            "max_new_tokens": self.max_new_tokens,
            "exact_batch_invariance": self.exact_batch_invariance,
            "max_batch_size": self.max_batch_size,
            "seed": self.seed,
            "weights_hash": self.weights_hash,
            "cpu_threads": self.cpu_threads,
            "transformers": _package_version("transformers"),
        }

    def render(self, request: Request) -> str:
        """The exact prompt text the model gets for ``request`` (chat template applied)."""
        self.load()
        return self._render(self._messages(request))

    def generate(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        self.load()
        responses: list[Response | None] = [None] * len(requests)
        ready: list[_Prepared] = []
        for index, request in enumerate(requests):
            try:
                ready.append(self._prepare(index, request))
            except Exception as exc:
                responses[index] = Response(text="", error=f"hf: {type(exc).__name__}: {exc}")
        for group in self._groups(ready):
            try:
                answers = self._run(group)
            except Exception as exc:
                if len(group) > 1:  # find the request at fault; the others still get answers
                    answers = [self._run_safely(item) for item in group]
                else:
                    answers = [Response(text="", error=f"hf: {type(exc).__name__}: {exc}")]
            for item, answer in zip(group, answers, strict=True):
                responses[item.index] = answer
        return [r if r is not None else Response(text="", error="hf: no answer") for r in responses]

    # ----------------------------------------------------------------- one batch

    def _messages(self, request: Request) -> list[dict[str, Any]]:
        return apply_profile(request.messages, self.profile, request.choices, self.system_prompt)

    def _render(self, messages: list[dict[str, Any]]) -> str:
        # the template only needs to know where images go; the pixels go to the processor apart
        messages = [
            {
                "role": m["role"],
                "content": m["content"]
                if isinstance(m["content"], str)
                else [{"type": "image"} if p.get("type") == "image" else p for p in m["content"]],
            }
            for m in messages
        ]
        renderer = self._processor if getattr(self._processor, "chat_template", None) else self._tokenizer
        if renderer is self._tokenizer and not getattr(self._tokenizer, "chat_template", None):
            raise ModelError(f"hf: {self.model_id} has no chat template")
        if renderer is self._tokenizer:  # a text-only tokenizer template wants plain strings
            messages = [
                {
                    "role": m["role"],
                    "content": m["content"]
                    if isinstance(m["content"], str)
                    else "".join(p.get("text", "") for p in m["content"]),
                }
                for m in messages
            ]
        return renderer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _prepare(self, index: int, request: Request) -> _Prepared:
        messages = self._messages(request)
        paths = [
            p["path"]
            for m in messages
            if not isinstance(m["content"], str)
            for p in m["content"]
            if p.get("type") == "image"
        ]
        if paths and not hasattr(self._processor, "image_processor"):
            raise ModelError(f"{self.model_id} is a text-only model; this request has {len(paths)} image(s)")
        images = [load_image(p, self.max_image_pixels) for p in paths]
        return _Prepared(index, request, self._render(messages), images, self._settings(request))

    def _settings(self, request: Request) -> dict[str, Any]:
        generation = request.generation
        limit = generation.get("max_new_tokens") or generation.get("max_tokens") or 256
        if self.max_new_tokens:
            limit = self.max_new_tokens
        elif self.profile.reasoning_budget:
            limit = max(int(limit), self.profile.reasoning_budget)
        temperature = float(generation.get("temperature") or 0.0)
        stop = generation.get("stop") or ()
        return {
            "max_new_tokens": int(limit),
            "temperature": temperature,
            "top_p": generation.get("top_p") if temperature > 0 else None,
            "stop": (stop,) if isinstance(stop, str) else tuple(stop),
            "seed": int(generation.get("seed", self.seed)),
        }

    def _groups(self, items: list[_Prepared]) -> list[list[_Prepared]]:
        if self.exact_batch_invariance:
            return [[item] for item in items]
        groups: dict[str, list[_Prepared]] = {}
        for item in items:
            key = json.dumps([item.settings, bool(item.images)], sort_keys=True)
            groups.setdefault(key, []).append(item)
        return [
            members[start : start + self.max_batch_size]
            for members in groups.values()
            for start in range(0, len(members), self.max_batch_size)
        ]

    def _run_safely(self, item: _Prepared) -> Response:
        try:
            return self._run([item])[0]
        except Exception as exc:
            return Response(text="", error=f"hf: {type(exc).__name__}: {exc}")

    def _run(self, items: list[_Prepared]) -> list[Response]:
        import torch

        settings = items[0].settings
        texts = [item.text for item in items]
        if any(item.images for item in items):
            inputs = self._processor(
                text=texts,
                images=[item.images for item in items],
                padding=True,
                add_special_tokens=False,
                return_tensors="pt",
            )
        else:
            inputs = self._tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
        inputs = inputs.to(self._model.device)
        if self._model.dtype in (torch.float16, torch.bfloat16):
            inputs = inputs.to(self._model.dtype)  # floating tensors only (pixel values)
        kwargs: dict[str, Any] = {"max_new_tokens": settings["max_new_tokens"]}
        if settings["temperature"] > 0:
            kwargs.update(do_sample=True, temperature=settings["temperature"], top_k=None)
            if settings["top_p"] is not None:
                kwargs["top_p"] = float(settings["top_p"])
            item = items[0]
            torch.manual_seed(_request_seed(settings["seed"], item.request))
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if settings["stop"]:
            kwargs.update(stop_strings=list(settings["stop"]), tokenizer=self._tokenizer)
        generation_config = self._model.generation_config
        end_ids = generation_config.eos_token_id
        end_ids = set(end_ids if isinstance(end_ids, list) else [end_ids] if end_ids is not None else [])
        end_ids |= {self._tokenizer.pad_token_id, self._tokenizer.eos_token_id} - {None}
        started = time.perf_counter()
        with torch.inference_mode():
            sequences = self._model.generate(**inputs, **kwargs)
        elapsed = round(time.perf_counter() - started, 6)
        prompt_length = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        responses = []
        for row in range(len(items)):
            new = sequences[row, prompt_length:].tolist()
            count = next((i + 1 for i, token in enumerate(new) if token in end_ids), len(new))
            text = self._tokenizer.decode(new[:count], skip_special_tokens=True)
            for stop in settings["stop"]:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            responses.append(
                Response(
                    text=text, input_tokens=int(prompt_tokens[row]), output_tokens=count, latency_s=elapsed
                )
            )
        return responses


def assemble_processor(transformers: Any, source: str, kwargs: dict[str, Any]) -> Any:
    """The model's processor class built from its tokenizer and image processor, without video.

    Public: ``reference_training`` loads its checkpoints' processors with it too."""
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    config = transformers.AutoConfig.from_pretrained(source, **kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    class_name = PROCESSOR_MAPPING_NAMES.get(config.model_type)
    if not class_name:
        return tokenizer  # a text-only model
    base = getattr(transformers, class_name)

    class WithoutVideo(base):  # the stock class check refuses a missing video processor
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    parts: dict[str, Any] = {}
    for attribute in base.get_attributes():
        if attribute == "tokenizer":
            parts[attribute] = tokenizer
        elif attribute == "image_processor":
            parts[attribute] = transformers.AutoImageProcessor.from_pretrained(source, **kwargs)
        elif attribute == "video_processor":
            parts[attribute] = None
        else:
            raise ModelError(f"hf: {class_name} needs a {attribute}, which this backend cannot build")
    return WithoutVideo(**parts, chat_template=getattr(tokenizer, "chat_template", None))


def _request_seed(seed: int, request: Request) -> int:
    digest = hashlib.sha256(f"{seed}/{request.task}/{request.sample_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _transformers_version() -> tuple[int, int]:
    numbers = re.findall(r"\d+", _package_version("transformers") or "0.0")
    return (int(numbers[0]), int(numbers[1])) if len(numbers) > 1 else (0, 0)
