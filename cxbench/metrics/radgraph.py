"""RadGraph F1 (simple, partial, complete), with the reward definitions of the ``radgraph`` package.

RadGraph annotates a report with entities (a span of tokens and a label such as
``Observation::definitely present`` or ``Anatomy::definitely present``) and relations between
them (``located_at``, ``modify``, ``suggestive_of``). One report's annotation, as the package
outputs it::

    {"text": "...", "entities": {"1": {"tokens": "effusion", "label": "...", "start_ix": 3,
                                       "end_ix": 3, "relations": [["located_at", "2"]]}, ...}}

Each variant turns an annotation into a set of items and scores a hypothesis against its
reference with the F1 of the two sets (package ``radgraph.rewards``, version 0.1.x):

* ``simple``: every entity gives ``(tokens, label)``;
* ``partial``: an entity without relations gives ``(tokens, label)``, one with relations gives
  ``(tokens, label, True)`` (it matches an entity with the same tokens and label that also has
  at least one relation, whatever the relations are);
* ``complete``: an entity without relations gives ``(tokens, label)``; one with relations gives,
  for each relation, ``(tokens.lower(), label, relation_type, target_tokens.lower())`` and no
  item for itself.

A pair where either annotation has no entity scores 0 in every variant, and so does a pair
where either report is empty. The corpus value is the mean of the per-sample F1s, as the
package's ``F1RadGraph`` reports it.

The metrics annotate reports with the package's ``RadGraph`` model, loaded on first use from
local files only (see ``resolve_radgraph_model``); with no weights they raise
``MetricUnavailable`` at once, saying what to download and where to put it. Annotations made
elsewhere can be scored without the model: pass them as predictions/references, or as the
``annotations`` option (a JSONL file, or a list, of ``{"index": i, "hyp": ..., "ref": ...}``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import tarfile
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cxbench.metrics.base import Metric, MetricContext
from cxbench.metrics.nlg import MetricUnavailable  # one exception class for all metrics

VARIANTS = ("simple", "partial", "complete")
HF_REPO = "StanfordAIMI/RRG_scorers"
#: model type -> archive in ``HF_REPO`` (what ``radgraph.RadGraph`` downloads)
MODEL_ARCHIVES = {
    "radgraph": "radgraph.tar.gz",
    "radgraph-xl": "radgraph-xl.tar.gz",
    "modern-radgraph-xl": "modern-radgraph-xl.tar.gz",
}
DEFAULT_MODEL_TYPE = "radgraph-xl"  # the package's default
PATH_ENV = "CXBENCH_RADGRAPH_PATH"
INSTALL_HINT = 'pip install "cxbench[clinical]"'
DEFAULT_BATCH_SIZE = 16
_EMPTY: dict[str, Any] = {"text": "", "entities": {}}


# --------------------------------------------------------------------------- set arithmetic


def _entities(annotation: Any) -> dict[str, Any]:
    if annotation is None:
        return {}
    if not isinstance(annotation, dict) or "entities" not in annotation:
        raise TypeError(f"a RadGraph annotation is a dict with an 'entities' key, got {annotation!r:.120}")
    return annotation["entities"] or {}


def _relation_target(entities: dict[str, Any], target_id: Any) -> dict[str, Any]:
    for key in (target_id, str(target_id)):
        if key in entities:
            return entities[key]
    raise ValueError(f"relation target {target_id!r} is not an entity id of the annotation")


def radgraph_entity_sets(annotation: Any, variant: str) -> set[tuple]:
    """The set of items that ``variant`` compares for one annotation (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown RadGraph variant {variant!r}; expected one of {VARIANTS}")
    entities = _entities(annotation)
    items: set[tuple] = set()
    for entity in entities.values():
        tokens, label = entity["tokens"], entity["label"]
        relations = entity.get("relations") or []
        if variant == "simple" or not relations:
            items.add((tokens, label))
        elif variant == "partial":
            items.add((tokens, label, True))
        else:
            for relation_type, target_id in ((r[0], r[1]) for r in relations):
                target = _relation_target(entities, target_id)
                items.add((tokens.lower(), label, relation_type, target["tokens"].lower()))
    return items


def _set_f1(hyp: set[tuple], ref: set[tuple]) -> float:
    common = len(hyp & ref)
    precision = common / len(hyp) if hyp else 0.0
    recall = common / len(ref) if ref else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def radgraph_f1(hyp_annotation: Any, ref_annotation: Any, variant: str) -> float:
    """RadGraph F1 of one hypothesis annotation against its reference annotation."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown RadGraph variant {variant!r}; expected one of {VARIANTS}")
    if not _entities(hyp_annotation) or not _entities(ref_annotation):
        return 0.0
    return _set_f1(
        radgraph_entity_sets(hyp_annotation, variant), radgraph_entity_sets(ref_annotation, variant)
    )


def radgraph_f1_all(hyp_annotation: Any, ref_annotation: Any) -> tuple[float, float, float]:
    """(simple, partial, complete) F1 of one pair."""
    return tuple(radgraph_f1(hyp_annotation, ref_annotation, v) for v in VARIANTS)  # type: ignore[return-value]


# --------------------------------------------------------------------- shared loading helpers


def package_available(module: str) -> bool:
    """Whether ``module`` can be imported (checked without importing it)."""
    return importlib.util.find_spec(module) is not None


def require_package(module: str, distribution: str, what: str) -> None:
    """Raise MetricUnavailable naming the pip command when ``module`` is not installed."""
    if not package_available(module):
        raise MetricUnavailable(
            f"{what} needs the Python package '{distribution}', which is not installed. "
            f"Install it with: {INSTALL_HINT} (or: pip install {distribution})."
        )


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "huggingface" / "hub"


def cached_hub_file(repo_id: str, filename: str, cache_dirs: Sequence[Path | str | None] = ()) -> Path | None:
    """A file of a hub repo already in a local cache (never touches the network), or None."""
    from huggingface_hub import try_to_load_from_cache

    for cache_dir in (hf_hub_cache(), *cache_dirs):
        if cache_dir is None:
            continue
        try:
            found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache_dir))
        except Exception:  # an invalid repo id, an unreadable cache
            found = None
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def hub_model_cached(name: str, files: Sequence[Sequence[str]]) -> bool:
    """Whether model ``name`` (a local folder or a hub id) has one file of each group locally."""
    local = Path(name).expanduser()
    if local.is_dir():
        return all(any((local / f).is_file() for f in group) for group in files)
    return all(any(cached_hub_file(name, f) is not None for f in group) for group in files)


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face hub offline while loading files that were checked to be local.

    Sets ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` (and the already-read constant of
    ``huggingface_hub``) so a missing file fails at once instead of after network retries;
    restores them afterwards.
    """
    import huggingface_hub.constants as hub_constants

    saved_env = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    saved_constant = hub_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved_constant
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def first_reference(item: Any) -> Any:
    """A report target may be a list of references: the first one is scored."""
    if isinstance(item, (list, tuple)):
        return item[0] if item else ""
    return item


def torch_device(name: str | None) -> str:
    """``name`` or, when None, "cuda" if a GPU is available else "cpu"."""
    if name:
        return str(name)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------- model resolution


def _radgraph_cache_root() -> Path:
    """Where ``radgraph.RadGraph`` keeps extracted models: ``<user cache>/radgraph/<version>``."""
    import importlib.metadata

    from appdirs import user_cache_dir

    return Path(user_cache_dir("radgraph")) / importlib.metadata.version("radgraph")


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "weights.th").is_file()


def _extract(archive: Path, dest: Path) -> Path:
    """Extract a RadGraph model archive into ``dest``; the folder holding config.json."""
    if not _is_model_dir(dest):
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(archive, "r:*") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(dest, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tar.extractall(dest)
        except (tarfile.TarError, OSError) as exc:
            raise MetricUnavailable(f"{archive} is not a readable RadGraph model archive: {exc}") from exc
    if _is_model_dir(dest):
        return dest
    inner = [p for p in dest.iterdir() if p.is_dir() and _is_model_dir(p)]
    if len(inner) == 1:
        return inner[0]
    raise MetricUnavailable(
        f"{archive} is not a RadGraph model archive (no config.json and weights.th in it)"
    )


def _missing_model_message(model_type: str, detail: str) -> str:
    archive = MODEL_ARCHIVES[model_type]
    root = _radgraph_cache_root()
    return (
        f"RadGraph F1 needs the RadGraph model '{model_type}', which is not available locally "
        f"({detail}; nothing is downloaded at run time). Download '{archive}' from the Hugging Face "
        f"repo {HF_REPO} (e.g. `hf download {HF_REPO} {archive}`), then either extract it into "
        f"{root / model_type}/ (so that folder holds config.json, weights.th and vocabulary/), or "
        f"give the path of the archive or of the extracted folder as the metric option model_path "
        f"(metric_args: {{radgraph_f1_partial: {{model_path: ...}}}}) or in the environment variable "
        f"{PATH_ENV}. The BERT backbone named in its config.json must be in the Hugging Face cache "
        f"({hf_hub_cache()}) too. Alternatively score pre-computed annotations with the option "
        f"'annotations'."
    )


def _backbone_names(model_dir: Path) -> list[str]:
    config = json.loads((model_dir / "config.json").read_text())
    names = []
    for keys in (
        ("dataset_reader", "token_indexers", "bert", "model_name"),
        ("model", "embedder", "token_embedders", "bert", "model_name"),
    ):
        node: Any = config
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str) and node not in names:
            names.append(node)
    return names


_BACKBONE_FILES = (
    ("config.json",),
    (
        "model.safetensors",
        "pytorch_model.bin",
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    ),
)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def transformers_problem() -> str | None:
    """Why the installed transformers cannot run the installed radgraph, or None."""
    import importlib.metadata

    try:
        radgraph_version = importlib.metadata.version("radgraph")
        transformers_version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None
    # radgraph <= 0.1.18 calls tokenizer.encode_plus, which transformers 5 removed
    if _version_tuple(transformers_version) >= (5,) and _version_tuple(radgraph_version) <= (0, 1, 18):
        return (
            f"radgraph {radgraph_version} calls tokenizer.encode_plus, which transformers "
            f"{transformers_version} no longer has: install transformers 4 with "
            f'pip install "transformers>=4.39,<5"'
        )
    return None


def resolve_radgraph_model(options: dict[str, Any]) -> tuple[Path, str]:
    """(extracted model folder, model type) from local files only, or MetricUnavailable.

    Looks at ``options["model_path"]`` or ``$CXBENCH_RADGRAPH_PATH`` (an archive, an extracted
    model folder, or a folder holding either), else the ``radgraph`` package's own cache
    (``<user cache>/radgraph/<version>/<model_type>``), else the archive in a Hugging Face cache.
    Also checks that the installed transformers can run the installed radgraph.
    """
    require_package("radgraph", "radgraph", "RadGraph F1")
    problem = transformers_problem()
    try:
        found = _locate_model(options)
    except MetricUnavailable as exc:
        if problem is None:
            raise
        raise MetricUnavailable(f"{exc} Also, {problem}.") from None
    if problem is not None:
        raise MetricUnavailable(f"RadGraph F1 cannot run: {problem}.")
    return found


def _locate_model(options: dict[str, Any]) -> tuple[Path, str]:
    model_type = str(options.get("model_type") or DEFAULT_MODEL_TYPE)
    if model_type not in MODEL_ARCHIVES:
        raise ValueError(
            f"unknown RadGraph model_type {model_type!r}; expected one of {list(MODEL_ARCHIVES)}"
        )
    archive_name = MODEL_ARCHIVES[model_type]
    root = _radgraph_cache_root()
    raw = options.get("model_path") or os.environ.get(PATH_ENV)
    model_dir: Path | None = None
    if raw:
        path = Path(str(raw)).expanduser()
        source = "model_path option" if options.get("model_path") else PATH_ENV
        if path.is_dir():
            inside = [c for c in (path, path / model_type) if _is_model_dir(c)]
            if inside:
                model_dir = inside[0]
            elif (path / archive_name).is_file():
                path = path / archive_name
            else:
                detail = f"{source} {path} holds neither config.json + weights.th nor {archive_name}"
                raise MetricUnavailable(_missing_model_message(model_type, detail))
        if model_dir is None:
            if not path.is_file():
                raise MetricUnavailable(_missing_model_message(model_type, f"{source} {path} does not exist"))
            model_dir = _extract(path, _extraction_dir(path, model_type))
    elif _is_model_dir(root / model_type):
        model_dir = root / model_type
    else:
        archive = cached_hub_file(HF_REPO, archive_name, cache_dirs=[root])
        if archive is None:
            raise MetricUnavailable(
                _missing_model_message(
                    model_type, f"not in {root / model_type} nor in the Hugging Face cache {hf_hub_cache()}"
                )
            )
        model_dir = _extract(archive, root / model_type)
    missing = [name for name in _backbone_names(model_dir) if not hub_model_cached(name, _BACKBONE_FILES)]
    if missing:
        raise MetricUnavailable(
            f"The RadGraph model in {model_dir} uses the BERT backbone {', '.join(map(repr, missing))} "
            f"(named in its config.json), which is not in the Hugging Face cache ({hf_hub_cache()}) and "
            f"is not downloaded at run time. Download it there with "
            + " and ".join(f"`hf download {name}`" for name in missing)
            + " (config, tokenizer and weights), or set HF_HOME to a cache that holds it."
        )
    return model_dir, model_type


def _extraction_dir(archive: Path, model_type: str) -> Path:
    """Where a user-given archive is extracted: the cxbench cache, keyed by the archive."""
    from cxbench.paths import cache_dir

    stat = archive.stat()
    key = hashlib.sha1(f"{archive.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "radgraph" / f"{model_type}-{key}"


# ------------------------------------------------------------------------ model and corpus

_MODELS: dict[tuple[str, str, str], Any] = {}
_ANNOTATIONS: dict[tuple[tuple[str, str, str], str], dict[str, Any]] = {}
_ANNOTATION_CACHE_SIZE = 100_000


def _load_model(model_dir: Path, model_type: str, device: str) -> tuple[tuple[str, str, str], Any]:
    key = (str(model_dir), model_type, device)
    if key in _MODELS:
        return key, _MODELS[key]
    from radgraph import RadGraph

    # RadGraph reads <model_cache_dir>/<model_type>/; point it at the resolved folder.
    if model_dir.name == model_type:
        cache_parent = model_dir.parent
    else:
        cache_parent = Path(tempfile.mkdtemp(prefix="cxbench-radgraph-"))
        (cache_parent / model_type).symlink_to(model_dir.resolve(), target_is_directory=True)
    cuda = -1 if device == "cpu" else int(device.split(":")[1]) if ":" in device else 0
    try:
        with hub_offline(), contextlib.redirect_stdout(io.StringIO()):
            model = RadGraph(model_type=model_type, model_cache_dir=str(cache_parent), cuda=cuda)
    except Exception as exc:
        raise MetricUnavailable(f"Loading the RadGraph model from {model_dir} failed: {exc!r}") from exc
    _MODELS[key] = model
    return key, model


def annotate_reports(texts: Sequence[str], options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """RadGraph annotations of ``texts`` with the local model (batched, cached per text)."""
    options = options or {}
    texts = [str(t) for t in texts]
    todo = list(dict.fromkeys(t for t in texts if t.strip()))
    if not todo:
        return [dict(_EMPTY) for _ in texts]
    model_dir, model_type = resolve_radgraph_model(options)
    key, model = _load_model(model_dir, model_type, torch_device(options.get("device")))
    if len(_ANNOTATIONS) + len(todo) > _ANNOTATION_CACHE_SIZE:
        _ANNOTATIONS.clear()  # bounded memory: start the cache afresh
    todo = [t for t in todo if (key, t) not in _ANNOTATIONS]
    if todo:
        import torch

        batch_size = int(options.get("batch_size") or DEFAULT_BATCH_SIZE)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "a sentence with a single token", per report
                result = model(chunk)
            for i, text in enumerate(chunk):
                _ANNOTATIONS[(key, text)] = result.get(str(i)) or {"text": text, "entities": {}}
    return [_ANNOTATIONS[(key, t)] if t.strip() else dict(_EMPTY) for t in texts]


def _is_annotation(item: Any) -> bool:
    return isinstance(item, dict) and "entities" in item


def load_annotation_pairs(source: Any, n: int) -> list[tuple[Any, Any]]:
    """(hyp, ref) pairs from a JSONL path or a list of ``{"index"/"id", "hyp", "ref"}`` rows.

    A row's ``index`` (or an integer ``id``) places it; rows without one are taken in order.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        with path.open(encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        where = str(path)
    else:
        rows, where = list(source), "the annotations option"
    if len(rows) != n:
        raise ValueError(f"{where} has {len(rows)} rows for {n} samples")
    pairs: list[tuple[Any, Any] | None] = [None] * n
    for order, row in enumerate(rows):
        position = row.get("index", row.get("id", order))
        if isinstance(position, str) and position.strip().isdigit():
            position = int(position)
        if not isinstance(position, int) or isinstance(position, bool):
            position = order
        if not 0 <= position < n or pairs[position] is not None:
            raise ValueError(f"{where}: row {order} has a bad or repeated index {position!r}")
        pairs[position] = (row.get("hyp"), row.get("ref"))
    return pairs  # type: ignore[return-value]


def _to_annotations(items: list[Any], lookup: dict[str, dict[str, Any]]) -> list[Any]:
    out = []
    for item in items:
        if _is_annotation(item):
            out.append(item)
        else:
            out.append(lookup.get(item, _EMPTY) if item.strip() else _EMPTY)
    return out


def annotation_pairs(
    predictions: list[Any], references: list[Any], options: dict[str, Any]
) -> list[tuple[Any, Any]]:
    """(hyp, ref) annotations: pre-computed ones, or made by the model for texts."""
    if options.get("annotations") is not None:
        return load_annotation_pairs(options["annotations"], len(predictions))

    def item(value: Any) -> Any:
        value = first_reference(value)
        if _is_annotation(value):
            return value
        return "" if value is None else str(value)

    hyps = [item(p) for p in predictions]
    refs = [item(r) for r in references]
    # as F1RadGraph: a pair with an empty report scores 0 and is not annotated
    texts: list[str] = []
    for pair in zip(hyps, refs, strict=True):
        if all(_is_annotation(x) or x.strip() for x in pair):
            texts.extend(x for x in pair if isinstance(x, str))
    texts = list(dict.fromkeys(texts))
    lookup = dict(zip(texts, annotate_reports(texts, options), strict=True)) if texts else {}
    return list(zip(_to_annotations(hyps, lookup), _to_annotations(refs, lookup), strict=True))


def radgraph_corpus_stats(
    predictions: list[Any], references: list[Any], ctx: MetricContext
) -> tuple[np.ndarray, float | None]:
    """Rows of (simple, partial, complete) F1 per sample; each metric reduces its column."""
    pairs = annotation_pairs(predictions, references, dict(ctx.options))
    rows = [radgraph_f1_all(hyp, ref) for hyp, ref in pairs]
    return np.asarray(rows, dtype=float).reshape(len(rows), len(VARIANTS)), None


def _column_mean(index: int, matrix: np.ndarray) -> float:
    if len(matrix) == 0:
        return 0.0
    return float(np.mean(matrix[:, index]))


def _column(index: int, row: np.ndarray) -> float:
    return float(row[index])


_DESCRIPTIONS = {
    "simple": "RadGraph F1 over entities (tokens, label)",
    "partial": "RadGraph F1 over entities (tokens, label, whether it has a relation)",
    "complete": "RadGraph F1 over entities with each of their relations (type, target tokens)",
}


def _make_metric(variant: str) -> Metric:
    index = VARIANTS.index(variant)
    return Metric(
        name=f"radgraph_f1_{variant}",
        description=_DESCRIPTIONS[variant] + "; mean over samples",
        stats=None,
        reduce=partial(_column_mean, index),
        sample_value=partial(_column, index),
        averaging="mean",
        citation=(
            "Jain et al., RadGraph, NeurIPS Datasets and Benchmarks 2021; Delbrouck et al., "
            "Improving the Factual Correctness of Radiology Report Generation with Semantic Rewards, "
            "Findings of EMNLP 2022"
        ),
        model=f"{DEFAULT_MODEL_TYPE} ({HF_REPO}, radgraph package)",
        corpus_stats=radgraph_corpus_stats,
        extra={"variant": variant, "columns": list(VARIANTS)},
    )


RADGRAPH_F1_SIMPLE = _make_metric("simple")
RADGRAPH_F1_PARTIAL = _make_metric("partial")
RADGRAPH_F1_COMPLETE = _make_metric("complete")
RADGRAPH_METRICS: dict[str, Metric] = {
    m.name: m for m in (RADGRAPH_F1_SIMPLE, RADGRAPH_F1_PARTIAL, RADGRAPH_F1_COMPLETE)
}

__all__ = [
    "RADGRAPH_METRICS",
    "VARIANTS",
    "MetricUnavailable",
    "annotate_reports",
    "load_annotation_pairs",
    "radgraph_entity_sets",
    "radgraph_f1",
    "radgraph_f1_all",
    "resolve_radgraph_model",
]
