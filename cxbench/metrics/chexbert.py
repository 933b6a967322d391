"""CheXbert F1: micro/macro F1 of the 14 (or 5) CheXpert observations labelled in reports.

The CheXbert labeler (the ``f1chexbert`` package's model) reads a report and gives each of 14
observations one of blank / positive / negative / uncertain. As ``f1chexbert`` does for report
generation, an observation is 1 when positive *or uncertain* and 0 otherwise (blank or
negative); the references and the generated reports are labelled alike, and F1 compares the
two 0/1 matrices:

* per observation, F1 = 2 TP / (2 TP + FP + FN), and 0 when that observation is never
  positive in either matrix (scikit-learn's ``classification_report`` as ``f1chexbert`` calls it);
* macro F1 = the mean of the per-observation F1s; micro F1 = the same formula on the TP/FP/FN
  summed over observations.

The 14 observations, in the order used for label vectors here (``CHEXPERT_LABELS``): No Finding,
Enlarged Cardiomediastinum, Cardiomegaly, Lung Lesion, Lung Opacity, Edema, Consolidation,
Pneumonia, Atelectasis, Pneumothorax, Pleural Effusion, Pleural Other, Fracture, Support
Devices; the 5: Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion.

Each sample's stats row holds its TP, FP and FN per observation, so the bootstrap resamples
reports and recomputes micro/macro F1. The model is loaded on first use from local files only;
without them the metrics raise ``MetricUnavailable`` at once, saying what to download and where.
Labels made elsewhere can be scored without the model: predictions/references given as label
vectors (14 values in ``CHEXPERT_LABELS`` order, or a dict observation -> value; CheXpert codes
1 positive, 0 negative, -1 uncertain, blank/None/NaN), or the ``annotations`` option (a JSONL
file, or a list, of ``{"index": i, "hyp": labels, "ref": labels}``).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cxbench.labels import CHEXPERT_5, CHEXPERT_14
from cxbench.metrics.base import Metric, MetricContext
from cxbench.metrics.radgraph import (
    HF_REPO,
    MetricUnavailable,
    cached_hub_file,
    first_reference,
    hf_hub_cache,
    hub_model_cached,
    hub_offline,
    load_annotation_pairs,
    require_package,
    torch_device,
)

CHEXPERT_LABELS = CHEXPERT_14
CHEXBERT_5_LABELS = CHEXPERT_5
INDEX_5 = tuple(CHEXPERT_LABELS.index(name) for name in CHEXBERT_5_LABELS)
#: the labeler's output heads, in order (CheXbert's CONDITIONS; f1chexbert's target_names)
MODEL_HEAD_ORDER = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
_HEAD_TO_CHEXPERT = np.array([MODEL_HEAD_ORDER.index(name) for name in CHEXPERT_LABELS])
CHECKPOINT = "chexbert.pth"
TOKENIZER = "bert-base-uncased"  # the tokenizer/config f1chexbert loads
PATH_ENV = "CXBENCH_CHEXBERT_PATH"
DEFAULT_BATCH_SIZE = 16
_NORMALISED = {name.lower(): name for name in CHEXPERT_LABELS}


# ------------------------------------------------------------------------ label arithmetic


def _binary(value: Any, uncertain_positive: bool) -> int:
    if value is None or value == "":
        return 0
    number = float(value)
    if math.isnan(number):
        return 0
    if number == 1:
        return 1
    if number == -1:
        return int(uncertain_positive)
    if number == 0:
        return 0
    raise ValueError(f"a CheXpert label is 1, 0, -1 or blank, got {value!r}")


def label_vector(labels: Any, uncertain_positive: bool = True) -> np.ndarray:
    """0/1 vector over ``CHEXPERT_LABELS`` from 14 values in that order or an observation dict.

    Positive (1) and, as ``f1chexbert`` counts them, uncertain (-1) are 1; negative (0) and
    blank (None, NaN, "") are 0. With ``uncertain_positive=False`` uncertain is 0.
    """
    if isinstance(labels, dict):
        values: list[Any] = [None] * len(CHEXPERT_LABELS)
        for name, value in labels.items():
            key = _NORMALISED.get(str(name).strip().lower())
            if key is None:
                raise ValueError(f"unknown CheXpert observation {name!r}; expected one of {CHEXPERT_LABELS}")
            values[CHEXPERT_LABELS.index(key)] = value
    else:
        values = list(np.asarray(labels, dtype=object).reshape(-1))
        if len(values) != len(CHEXPERT_LABELS):
            raise ValueError(
                f"a CheXbert label vector has {len(CHEXPERT_LABELS)} values ({', '.join(CHEXPERT_LABELS)}), "
                f"got {len(values)}"
            )
    return np.array([_binary(v, uncertain_positive) for v in values], dtype=np.int64)


def label_matrix(rows: Sequence[Any], uncertain_positive: bool = True) -> np.ndarray:
    """(n, 14) 0/1 matrix from ``n`` label vectors (see ``label_vector``)."""
    if len(rows) == 0:
        return np.zeros((0, len(CHEXPERT_LABELS)), dtype=np.int64)
    return np.stack([label_vector(r, uncertain_positive) for r in rows])


def chexbert_counts(hyp_labels: Any, ref_labels: Any) -> np.ndarray:
    """Per-sample counts ``[TP_1..TP_L, FP_1..FP_L, FN_1..FN_L]`` of two (n, L) 0/1 matrices."""
    hyp = np.asarray(hyp_labels) > 0
    ref = np.asarray(ref_labels) > 0
    if hyp.shape != ref.shape or hyp.ndim != 2:
        raise ValueError(f"label matrices must be (n, L) and alike, got {hyp.shape} and {ref.shape}")
    tp, fp, fn = hyp & ref, hyp & ~ref, ~hyp & ref
    return np.concatenate([tp, fp, fn], axis=1).astype(float)


def f1_from_counts(counts: np.ndarray, average: str) -> float:
    """Micro or macro F1 from a (n, 3L) count matrix (summed over rows) or one summed row."""
    counts = np.asarray(counts, dtype=float)
    if counts.ndim == 2:
        counts = counts.sum(axis=0)
    tp, fp, fn = np.split(counts, 3)
    if average == "micro":
        denominator = 2 * tp.sum() + fp.sum() + fn.sum()
        return float(2 * tp.sum() / denominator) if denominator > 0 else 0.0
    if average == "macro":
        if tp.size == 0:
            return 0.0
        denominator = 2 * tp + fp + fn
        per_label = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
        return float(per_label.mean())
    raise ValueError(f"average is 'micro' or 'macro', got {average!r}")


def chexbert_f1(hyp_labels: Any, ref_labels: Any, average: str = "micro") -> float:
    """Micro or macro F1 of hypothesis labels against reference labels, (n, L) 0/1 matrices."""
    return f1_from_counts(chexbert_counts(hyp_labels, ref_labels), average)


def subset_5(matrix: np.ndarray) -> np.ndarray:
    """The 5 competition observations' columns of a (n, 14) label matrix."""
    return np.asarray(matrix)[:, list(INDEX_5)]


# ------------------------------------------------------------------------- model resolution


def _chexbert_cache_dir() -> Path:
    """Where ``f1chexbert`` looks for ``chexbert.pth``: ``<user cache>/chexbert``."""
    from appdirs import user_cache_dir

    return Path(user_cache_dir("chexbert"))


_TOKENIZER_FILES = (("config.json",), ("vocab.txt",))


def resolve_chexbert_checkpoint(options: dict[str, Any]) -> Path:
    """The local ``chexbert.pth`` (and a cached bert-base-uncased tokenizer), or MetricUnavailable.

    Looks at ``options["model_path"]`` or ``$CXBENCH_CHEXBERT_PATH`` (the file, or a folder
    holding it), else ``f1chexbert``'s cache ``<user cache>/chexbert/chexbert.pth``, else a
    Hugging Face cache.
    """
    require_package("f1chexbert", "f1chexbert", "CheXbert F1")
    cache = _chexbert_cache_dir()
    raw = options.get("model_path") or os.environ.get(PATH_ENV)
    problems = []
    checkpoint: Path | None = None
    if raw:
        path = Path(str(raw)).expanduser()
        source = "model_path option" if options.get("model_path") else PATH_ENV
        candidate = path / CHECKPOINT if path.is_dir() else path
        if candidate.is_file():
            checkpoint = candidate
        else:
            problems.append(f"the {source} {path} is not {CHECKPOINT} nor a folder holding it")
    elif (cache / CHECKPOINT).is_file():
        checkpoint = cache / CHECKPOINT
    else:
        checkpoint = cached_hub_file(HF_REPO, CHECKPOINT, cache_dirs=[cache])
        if checkpoint is None:
            problems.append(f"{CHECKPOINT} is not in {cache} nor in the Hugging Face cache {hf_hub_cache()}")
    tokenizer_ok = hub_model_cached(TOKENIZER, _TOKENIZER_FILES)
    if checkpoint is not None and tokenizer_ok:
        return checkpoint
    steps = []
    if checkpoint is None:
        steps.append(
            f"download '{CHECKPOINT}' from the Hugging Face repo {HF_REPO} "
            f"(e.g. `hf download {HF_REPO} {CHECKPOINT}`) and put it at {cache / CHECKPOINT}, or give "
            f"its path as the metric option model_path (metric_args: {{chexbert_micro_f1_14: "
            f"{{model_path: .../{CHECKPOINT}}}}}) or in the environment variable {PATH_ENV}"
        )
    if not tokenizer_ok:
        problems.append(f"the {TOKENIZER} tokenizer is not in the Hugging Face cache {hf_hub_cache()}")
        steps.append(
            f"put the {TOKENIZER} tokenizer and config in the Hugging Face cache "
            f"(`hf download {TOKENIZER} config.json vocab.txt tokenizer_config.json`)"
        )
    raise MetricUnavailable(
        "CheXbert F1 needs the CheXbert labeler, which is not available locally ("
        + "; ".join(problems)
        + "; nothing is downloaded at run time). To use it, "
        + "; and ".join(steps)
        + ". Alternatively score pre-computed labels with the option 'annotations'."
    )


# ------------------------------------------------------------------------ model and corpus

_MODELS: dict[tuple[str, str], tuple[Any, Any]] = {}
_LABELS: dict[tuple[tuple[str, str], str], np.ndarray] = {}
_LABEL_CACHE_SIZE = 100_000


def _load_labeler(checkpoint: Path, device: str) -> tuple[tuple[str, str], Any, Any]:
    key = (str(checkpoint), device)
    if key in _MODELS:
        return (key, *_MODELS[key])
    try:
        import torch
        from f1chexbert.f1chexbert import bert_labeler
        from transformers import BertTokenizer

        with hub_offline(), contextlib.redirect_stdout(io.StringIO()):
            tokenizer = BertTokenizer.from_pretrained(TOKENIZER)
            tokenizer.model_max_length = 1 << 30  # reports are cut to 512 ids below, without warnings
            model = bert_labeler(inference=True)
        state = torch.load(checkpoint, map_location=device, weights_only=True)  # never unpickle code
        state = state.get("model_state_dict", state)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        result = model.load_state_dict(state, strict=False)  # strict=False as f1chexbert
        missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
        if missing:
            raise ValueError(f"the checkpoint lacks {len(missing)} labeler weights, e.g. {missing[:3]}")
        model = model.to(device).eval()
    except MetricUnavailable:
        raise
    except Exception as exc:
        raise MetricUnavailable(f"Loading the CheXbert labeler from {checkpoint} failed: {exc!r}") from exc
    _MODELS[key] = (tokenizer, model)
    return key, tokenizer, model


def label_reports(texts: Sequence[str], options: dict[str, Any] | None = None) -> np.ndarray:
    """(n, 14) 0/1 CheXbert labels of ``texts`` (``CHEXPERT_LABELS`` order), batched and cached."""
    options = options or {}
    texts = [str(t).strip() for t in texts]
    if not texts:
        return label_matrix([])
    checkpoint = resolve_chexbert_checkpoint(options)
    key, tokenizer, model = _load_labeler(checkpoint, torch_device(options.get("device")))
    todo = list(dict.fromkeys(texts))
    if len(_LABELS) + len(todo) > _LABEL_CACHE_SIZE:
        _LABELS.clear()  # bounded memory: start the cache afresh
    todo = [t for t in todo if (key, t) not in _LABELS]
    if todo:
        import torch
        from f1chexbert.f1chexbert import generate_attention_masks

        encoded = [encode_report(t, tokenizer) for t in todo]
        order = sorted(range(len(todo)), key=lambda i: len(encoded[i]))  # little padding per batch
        batch_size = int(options.get("batch_size") or DEFAULT_BATCH_SIZE)
        device = next(model.parameters()).device
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            lengths = [len(encoded[i]) for i in chunk]
            batch = torch.full((len(chunk), max(lengths)), tokenizer.pad_token_id, dtype=torch.long)
            for row, i in enumerate(chunk):
                batch[row, : lengths[row]] = torch.tensor(encoded[i], dtype=torch.long)
            with torch.no_grad():
                heads = model(batch.to(device), generate_attention_masks(batch, lengths, device))
            classes = torch.stack([h.argmax(dim=1) for h in heads], dim=1).cpu().numpy()
            # classes: 0 blank, 1 positive, 2 negative, 3 uncertain; positive or uncertain -> 1
            positive = ((classes == 1) | (classes == 3)).astype(np.int64)[:, _HEAD_TO_CHEXPERT]
            for row, i in enumerate(chunk):
                _LABELS[(key, todo[i])] = positive[row]
    return np.stack([_LABELS[(key, t)] for t in texts])


def encode_report(text: str, tokenizer: Any) -> list[int]:
    """Token ids of one report as f1chexbert's ``tokenize`` makes them.

    Whitespace collapsed, WordPiece tokens between [CLS] and [SEP], cut to 512 ids (the last
    one [SEP]); an empty report is [CLS] [SEP]. Written out here because ``f1chexbert`` calls
    ``encode_plus``, which transformers 5 no longer has.
    """
    tokens = tokenizer.tokenize(re.sub(r"\s+", " ", text).strip())
    ids = [tokenizer.cls_token_id, *tokenizer.convert_tokens_to_ids(tokens), tokenizer.sep_token_id]
    if len(ids) > 512:
        ids = ids[:511] + [tokenizer.sep_token_id]
    return ids


def _is_labels(item: Any) -> bool:
    return isinstance(item, (dict, list, tuple, np.ndarray)) and not (
        isinstance(item, (list, tuple)) and item and isinstance(item[0], str)
    )


def label_pairs(
    predictions: list[Any], references: list[Any], options: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 14) hypothesis and reference label matrices: pre-computed, or made by the labeler."""
    uncertain_positive = str(options.get("uncertain", "positive")).lower() != "negative"
    if options.get("annotations") is not None:
        pairs = load_annotation_pairs(options["annotations"], len(predictions))
        return (
            label_matrix([h for h, _ in pairs], uncertain_positive),
            label_matrix([r for _, r in pairs], uncertain_positive),
        )

    def item(value: Any) -> Any:
        if _is_labels(value):
            return value
        value = first_reference(value)
        return "" if value is None else str(value)

    items = [item(x) for x in (*predictions, *references)]
    texts = list(dict.fromkeys(x for x in items if isinstance(x, str)))
    labelled = dict(zip(texts, label_reports(texts, options), strict=True)) if texts else {}
    matrix = label_matrix([labelled[x] if isinstance(x, str) else x for x in items], uncertain_positive)
    n = len(predictions)
    return matrix[:n], matrix[n:]


def _corpus_stats(
    n_labels: int, predictions: list[Any], references: list[Any], ctx: MetricContext
) -> tuple[np.ndarray, float | None]:
    hyp, ref = label_pairs(predictions, references, dict(ctx.options))
    if n_labels == 5:
        hyp, ref = subset_5(hyp), subset_5(ref)
    return chexbert_counts(hyp, ref).reshape(len(hyp), 3 * n_labels), None


def _reduce(average: str, matrix: np.ndarray) -> float:
    if len(matrix) == 0:
        return 0.0
    return f1_from_counts(matrix, average)


def _make_metric(average: str, n_labels: int) -> Metric:
    names = CHEXPERT_LABELS if n_labels == 14 else CHEXBERT_5_LABELS
    return Metric(
        name=f"chexbert_{average}_f1_{n_labels}",
        description=(
            f"{average.capitalize()} F1 of the CheXbert labels (positive or uncertain = 1) of the "
            f"report against the reference's, over {n_labels} CheXpert observations"
        ),
        stats=None,
        reduce=partial(_reduce, average),
        averaging=average,
        citation=("Smit et al., CheXbert, EMNLP 2020; Delbrouck et al., Findings of EMNLP 2022 (f1chexbert)"),
        model=f"CheXbert ({HF_REPO}/{CHECKPOINT}, f1chexbert package)",
        corpus_stats=partial(_corpus_stats, n_labels),
        extra={"labels": list(names), "columns": "TP per label, FP per label, FN per label"},
    )


CHEXBERT_MICRO_F1_14 = _make_metric("micro", 14)
CHEXBERT_MACRO_F1_14 = _make_metric("macro", 14)
CHEXBERT_MICRO_F1_5 = _make_metric("micro", 5)
CHEXBERT_MACRO_F1_5 = _make_metric("macro", 5)
CHEXBERT_METRICS: dict[str, Metric] = {
    m.name: m for m in (CHEXBERT_MICRO_F1_14, CHEXBERT_MACRO_F1_14, CHEXBERT_MICRO_F1_5, CHEXBERT_MACRO_F1_5)
}

__all__ = [
    "CHEXBERT_5_LABELS",
    "CHEXBERT_METRICS",
    "CHEXPERT_LABELS",
    "MetricUnavailable",
    "chexbert_counts",
    "chexbert_f1",
    "f1_from_counts",
    "label_matrix",
    "label_reports",
    "label_vector",
    "resolve_chexbert_checkpoint",
    "subset_5",
]
