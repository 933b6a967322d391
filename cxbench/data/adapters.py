"""Dataset adapters: each turns a data set on disk into Samples for the task families it supports.

An adapter is looked up by the ``dataset.name`` of a task YAML. Built in:

- ``phantom``: the synthetic CXR data set, generated on first use (see ``phantom.py``);
- ``iu_xray_reports``: IU X-ray (OpenI) reports from torchxrayvision's packaged data (text only);
- ``jsonl``: a JSONL file of Sample records (``id, images, question, target, ...``), image
  paths relative to the file; the way to bring a small local data set.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from cxbench.schema import Sample


class DataError(ValueError):
    """A data set is missing or malformed; the message names the file and row."""


class DatasetAdapter(Protocol):
    name: str

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]: ...

    def identity(self, params: dict[str, Any]) -> str: ...


class PhantomAdapter:
    """The deterministic synthetic data set; ``params`` may set root, n_cases, seed, size."""

    name = "phantom"
    _GEN_KEYS = ("n_cases", "seed", "size", "prior_fraction")

    def root(self, params: dict[str, Any]) -> Path:
        """The data set folder, generated first if it does not exist yet."""
        from cxbench.data import phantom

        kwargs = {k: params[k] for k in self._GEN_KEYS if k in params}
        root = params.get("root")
        return phantom.ensure_phantom(root, **kwargs) if root else phantom.ensure_phantom(**kwargs)

    def cases(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        from cxbench.data import phantom

        return phantom.load_cases(self.root(params))

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        from cxbench.data.phantom_samples import build_samples

        return build_samples(self.cases(params), family, split)

    def identity(self, params: dict[str, Any]) -> str:
        meta = json.loads((self.root(params) / "meta.json").read_text())
        return "phantom-v{version}-n{n_cases}-s{seed}-{size}-p{prior_fraction}".format(**meta)


_JSONL_FIELDS = {"id", "images", "question", "target", "choices", "query", "metadata"}


def _first_line_with_id(path: Path, sample_id: str, before: int) -> int | None:
    """The first line before line ``before`` whose row has id ``sample_id`` (None: a hash collision)."""
    from cxbench.data.validate import decoded_lines

    for line_no, line in enumerate(decoded_lines(path), 1):
        if line_no >= before:
            return None
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and str(row.get("id")) == sample_id:
            return line_no
    return None


class JsonlAdapter:
    """Samples read from ``params['path']``; rows may carry a ``split`` (default: every split)."""

    name = "jsonl"

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        path = Path(params.get("path") or params.get("root") or "")
        if not path.is_file():
            raise DataError(f"jsonl data set: file not found: {path} (set dataset.path or --data-root)")
        from cxbench.data.validate import check_row, decoded_lines

        folder = path.absolute().parent.resolve()
        # ids must be unique (logs and caches key on them); 8-byte hashes keep this check small at
        # 100,000s of rows, and a hash seen before is confirmed against the file (collisions pass)
        seen: set[int] = set()
        rows = 0
        for line_no, line in enumerate(decoded_lines(path), 1):
            if not line.strip():
                continue
            rows += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            where = f"{path}:{line_no}"
            sample_id, images = check_row(row, where, folder, family)
            if hash(sample_id) in seen:
                first = _first_line_with_id(path, sample_id, line_no)
                if first is not None:
                    raise DataError(f"{where}: sample id {sample_id!r} appears twice (first on line {first})")
            seen.add(hash(sample_id))
            if row.get("split", split) != split:
                continue
            sample = Sample(**{k: v for k, v in row.items() if k in _JSONL_FIELDS})
            sample.id, sample.images = sample_id, images
            sample.metadata = {"dataset": path.stem, "split": split, **(sample.metadata or {})}
            yield sample
        if rows == 0:
            raise DataError(f"{path}: empty data set (no rows)")

    def identity(self, params: dict[str, Any]) -> str:
        import hashlib

        path = Path(params.get("path") or params.get("root") or "")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"
        return f"jsonl-{path.name}-{digest}"


_ADAPTERS: dict[str, DatasetAdapter] = {"phantom": PhantomAdapter(), "jsonl": JsonlAdapter()}
# adapters whose modules load on first use: name -> "module:class"
_LAZY_ADAPTERS = {
    "iu_xray_reports": "cxbench.data.iu_xray:IUXrayReportsAdapter",
    "nih_chestxray14": "cxbench.data.nih:NIHChestXray14Adapter",
    "local_csv": "cxbench.data.local_csv:LocalCSVAdapter",
    "mimic_cxr": "cxbench.data.mimic_cxr:MimicCXRAdapter",
    "chexpert": "cxbench.data.chexpert:CheXpertAdapter",
    "chexpert_plus": "cxbench.data.chexpert:CheXpertPlusAdapter",
    "iu_xray": "cxbench.data.iu_xray_images:IUXrayAdapter",
    "vindr_cxr": "cxbench.data.vindr:VinDrCXRAdapter",
    "rsna_pneumonia": "cxbench.data.rsna:RSNAPneumoniaAdapter",
    "ms_cxr": "cxbench.data.ms_cxr:MSCXRAdapter",
    "ms_cxr_t": "cxbench.data.ms_cxr_t:MSCXRTAdapter",
    "medical_diff_vqa": "cxbench.data.diff_vqa:MedicalDiffVQAAdapter",
    "slake": "cxbench.data.vqa_sets:SlakeAdapter",
    "vqa_rad": "cxbench.data.vqa_sets:VQARadAdapter",
    "rexvqa": "cxbench.data.vqa_sets:ReXVQAAdapter",
}


class _OncePerProcess(logging.Filter):
    """Lets each distinct data-set warning through once: a run loads a data set once per task
    and split, and "skipped 3 malformed rows" should not be repeated for each of them."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.levelno >= logging.ERROR:
            return True
        key = (record.name, record.getMessage())
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


_ONCE = _OncePerProcess()


def _quiet_repeats() -> None:
    for logger_name in list(logging.root.manager.loggerDict):
        if logger_name.startswith("cxbench.data."):
            logger = logging.getLogger(logger_name)
            if _ONCE not in logger.filters:
                logger.addFilter(_ONCE)


def get_adapter(name: str) -> DatasetAdapter:
    if name not in _ADAPTERS and name in _LAZY_ADAPTERS:
        import importlib

        module, cls = _LAZY_ADAPTERS[name].split(":")
        _ADAPTERS[name] = getattr(importlib.import_module(module), cls)()
        _quiet_repeats()
    if name not in _ADAPTERS:
        raise DataError(
            f"unknown dataset {name!r}; known: {', '.join(sorted({*_ADAPTERS, *_LAZY_ADAPTERS}))}"
        )
    return _ADAPTERS[name]


def register_adapter(adapter: DatasetAdapter) -> None:
    _ADAPTERS[adapter.name] = adapter
