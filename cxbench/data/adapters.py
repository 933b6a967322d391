"""Dataset adapters: each turns a data set on disk into Samples for the task families it supports.

An adapter is looked up by the ``dataset.name`` of a task YAML. Built in:

- ``phantom``: the synthetic CXR data set, generated on first use (see ``phantom.py``);
- ``iu_xray_reports``: IU X-ray (OpenI) reports from torchxrayvision's packaged data (text only);
- ``jsonl``: a JSONL file of Sample records (``id, images, question, target, ...``), image
  paths relative to the file; the way to bring a small local data set.
"""

from __future__ import annotations

import json
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


class JsonlAdapter:
    """Samples read from ``params['path']``; rows may carry a ``split`` (default: every split)."""

    name = "jsonl"

    def samples(self, family: str, split: str, params: dict[str, Any]) -> Iterator[Sample]:
        path = Path(params.get("path") or params.get("root") or "")
        if not path.is_file():
            raise DataError(f"jsonl data set: file not found: {path} (set dataset.path or --data-root)")
        fields = {"id", "images", "question", "target", "choices", "query", "metadata"}
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
                missing = {"id", "images", "question", "target"} - set(row)
                if missing:
                    raise DataError(f"{path}:{line_no}: missing field(s) {sorted(missing)}")
                if row.get("split", split) != split:
                    continue
                sample = Sample(**{k: v for k, v in row.items() if k in fields})
                sample.images = [str((path.parent / p).resolve()) for p in sample.images]
                sample.metadata = {"dataset": path.stem, "split": split, **(sample.metadata or {})}
                yield sample

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
}


def get_adapter(name: str) -> DatasetAdapter:
    if name not in _ADAPTERS and name in _LAZY_ADAPTERS:
        import importlib

        module, cls = _LAZY_ADAPTERS[name].split(":")
        _ADAPTERS[name] = getattr(importlib.import_module(module), cls)()
    if name not in _ADAPTERS:
        raise DataError(
            f"unknown dataset {name!r}; known: {', '.join(sorted({*_ADAPTERS, *_LAZY_ADAPTERS}))}"
        )
    return _ADAPTERS[name]


def register_adapter(adapter: DatasetAdapter) -> None:
    _ADAPTERS[adapter.name] = adapter
