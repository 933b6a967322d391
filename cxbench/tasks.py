"""Task plugins: a YAML file names a dataset, a prompt template, a parser and metrics.

Tasks are discovered from the built-in folder, from ``--include-path`` folders and from
Python entry points in the ``cxbench.tasks`` group (each entry point gives a folder, or a
callable returning one). A YAML may name a ``hooks`` file beside it: a small Python module
that may define ``build_prompt(sample, task)``, ``parse(text, sample, task)`` and/or
``samples(task, split)`` to override the defaults.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from cxbench import parsing
from cxbench.labels import CHANGE_LABELS, DISEASE_SYNONYMS
from cxbench.schema import Request, Sample

FAMILIES = (
    "vqa_closed",
    "vqa_open",
    "report_generation",
    "temporal_comparison",
    "localization",
    "diagnosis_recall1",
    "text",
)
_REQUIRED = ("name", "family", "dataset", "prompt", "parser", "metrics")
_LETTERS = "ABCDEFGHIJ"


class TaskError(ValueError):
    """A task definition is invalid; the message names the YAML file and field."""


def _parse_closed(text: str, sample: Sample, args: dict[str, Any]) -> Any:
    if sample.choices:
        return parsing.parse_choice(text, sample.choices)
    return parsing.parse_yes_no(text)


def _parse_text(text: str, sample: Sample, args: dict[str, Any]) -> Any:
    return parsing.final_answer(text) or None


def _parse_box(text: str, sample: Sample, args: dict[str, Any]) -> Any:
    size = sample.metadata.get("image_size")
    if not size:
        from cxbench.images import image_size

        size = image_size(sample.images[-1])  # header only (PNG/JPEG/DICOM)
    return parsing.parse_box(text, (int(size[0]), int(size[1])), scale=args.get("box_scale", "auto"))


def _parse_ranked(text: str, sample: Sample, args: dict[str, Any]) -> Any:
    return parsing.parse_ranked_labels(text, DISEASE_SYNONYMS) or None


def _parse_label(text: str, sample: Sample, args: dict[str, Any]) -> Any:
    return parsing.parse_label(text, DISEASE_SYNONYMS)


def _parse_change(text: str, sample: Sample, args: dict[str, Any]) -> Any:
    return parsing.parse_change(text)


#: parser name in a task YAML -> function(text, sample, parser_args) -> answer or None
PARSERS: dict[str, Callable[[str, Sample, dict[str, Any]], Any]] = {
    "closed": _parse_closed,
    "text": _parse_text,
    "box": _parse_box,
    "ranked_labels": _parse_ranked,
    "label": _parse_label,
    "change": _parse_change,
}

#: label sets a YAML may name instead of listing labels
LABEL_SETS: dict[str, tuple[str, ...]] = {
    "diseases_14": tuple(DISEASE_SYNONYMS),
    "change": CHANGE_LABELS,
    "closed": ("yes", "no", "A", "B", "C", "D"),
}


def format_options(choices: list[str] | None) -> str:
    """``A) first\\nB) second`` for multiple-choice prompts; empty for none."""
    if not choices:
        return ""
    return "\n".join(f"{_LETTERS[i]}) {choice}" for i, choice in enumerate(choices))


class _PromptFields(dict):
    def __init__(self, task: Task, sample: Sample) -> None:
        super().__init__(sample.query)
        self.update(question=sample.question, options=format_options(sample.choices))
        self._task = task

    def __missing__(self, key: str) -> str:
        raise TaskError(f"{self._task.source}: prompt uses {{{key}}}, which the sample does not provide")


@dataclass
class Task:
    """A loaded task definition."""

    name: str
    family: str
    dataset: dict[str, Any]
    prompt: str
    parser: str
    metrics: list[str]
    source: Path
    description: str = ""
    primary_metric: str = ""
    labels: tuple[str, ...] = ()
    parser_args: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    hooks: ModuleType | None = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> Task:
        path = Path(path)
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise TaskError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(config, dict):
            raise TaskError(f"{path}: a task file must be a YAML mapping")
        missing = [key for key in _REQUIRED if key not in config]
        if missing:
            raise TaskError(f"{path}: missing field(s) {missing}")
        if config["family"] not in FAMILIES:
            raise TaskError(f"{path}: family {config['family']!r} is not one of {FAMILIES}")
        if config["parser"] not in PARSERS:
            raise TaskError(f"{path}: parser {config['parser']!r} is not one of {sorted(PARSERS)}")
        from cxbench import metrics as metric_registry

        for name in config["metrics"]:
            if name not in metric_registry.names():
                raise TaskError(f"{path}: unknown metric {name!r}; see `cxbench metrics`")
        labels = config.get("labels", ())
        if isinstance(labels, str):
            if labels not in LABEL_SETS:
                raise TaskError(f"{path}: labels {labels!r} is not one of {sorted(LABEL_SETS)}")
            labels = LABEL_SETS[labels]
        hooks = None
        if config.get("hooks"):
            hooks = _load_hooks(path.parent / config["hooks"], path)
        return cls(
            name=config["name"],
            family=config["family"],
            dataset=dict(config["dataset"]),
            prompt=config["prompt"],
            parser=config["parser"],
            metrics=list(config["metrics"]),
            source=path,
            description=config.get("description", "").strip(),
            primary_metric=config.get("primary_metric", config["metrics"][0]),
            labels=tuple(_label_text(label) for label in labels),
            parser_args=dict(config.get("parser_args", {})),
            generation={"max_new_tokens": 256, "temperature": 0.0, **config.get("generation", {})},
            system=config.get("system"),
            config=config,
            hooks=hooks,
        )

    @property
    def task_hash(self) -> str:
        """Hash of the task definition (YAML content and hook source) for honest comparisons."""
        digest = hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode())
        if self.hooks is not None and self.hooks.__file__:
            digest.update(Path(self.hooks.__file__).read_bytes())
        return digest.hexdigest()[:16]

    def split(self, override: str | None = None) -> str:
        return override or self.dataset.get("split", "test")

    def dataset_params(self, data_root: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in self.dataset.items() if k not in ("name", "split")}
        if data_root:
            params["root"] = data_root
        return params

    def samples(self, split: str | None = None, data_root: str | None = None) -> Iterator[Sample]:
        """The task's samples for ``split`` (default: the YAML's split), in a fixed order."""
        split = self.split(split)
        if self.hooks is not None and hasattr(self.hooks, "samples"):
            return iter(self.hooks.samples(self, split))
        from cxbench.data.adapters import get_adapter

        adapter = get_adapter(self.dataset["name"])
        return adapter.samples(self.family, split, self.dataset_params(data_root))

    def data_identity(self, data_root: str | None = None) -> str:
        from cxbench.data.adapters import get_adapter

        return get_adapter(self.dataset["name"]).identity(self.dataset_params(data_root))

    def render_prompt(self, sample: Sample) -> str:
        if self.hooks is not None and hasattr(self.hooks, "build_prompt"):
            return self.hooks.build_prompt(sample, self)
        return self.prompt.format_map(_PromptFields(self, sample)).strip()

    def build_request(self, sample: Sample) -> Request:
        content: list[dict[str, Any]] = [{"type": "image", "path": p} for p in sample.images]
        content.append({"type": "text", "text": self.render_prompt(sample)})
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": content})
        return Request(
            sample_id=sample.id,
            task=self.name,
            family=self.family,
            messages=messages,
            images=list(sample.images),
            generation=dict(self.generation),
            choices=sample.choices,
            query=dict(sample.query),
        )

    def parse(self, text: str, sample: Sample) -> Any:
        """The parsed answer, or None when the output cannot be parsed."""
        if self.hooks is not None and hasattr(self.hooks, "parse"):
            return self.hooks.parse(text, sample, self)
        return PARSERS[self.parser](text, sample, self.parser_args)


def _label_text(label: Any) -> str:
    """YAML 1.1 reads unquoted yes/no as booleans; a label list means the words."""
    if isinstance(label, bool):
        return "yes" if label else "no"
    return str(label)


def _load_hooks(hook_path: Path, task_path: Path) -> ModuleType:
    if not hook_path.is_file():
        raise TaskError(f"{task_path}: hooks file not found: {hook_path}")
    spec = importlib.util.spec_from_file_location(f"cxbench_task_hooks_{hook_path.stem}", hook_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def builtin_task_dir() -> Path:
    """The built-in tasks: packaged in the wheel, or the repository's ``tasks/`` folder."""
    packaged = Path(__file__).parent / "_builtin_tasks"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "tasks"


def _entry_point_dirs() -> list[Path]:
    dirs = []
    for entry in importlib_metadata.entry_points(group="cxbench.tasks"):
        value = entry.load()
        dirs.append(Path(value() if callable(value) else value))
    return dirs


def task_dirs(include_paths: Iterable[str | Path] = ()) -> list[Path]:
    return [builtin_task_dir(), *(Path(p) for p in include_paths), *_entry_point_dirs()]


def discover(include_paths: Iterable[str | Path] = ()) -> dict[str, Task]:
    """All tasks by name; later folders override earlier ones with the same task name."""
    tasks: dict[str, Task] = {}
    for folder in task_dirs(include_paths):
        if not folder.is_dir():
            raise TaskError(f"task folder not found: {folder}")
        for path in sorted(folder.rglob("*.yaml")):
            task = Task.from_yaml(path)
            tasks[task.name] = task
    return tasks


def get_task(name: str, include_paths: Iterable[str | Path] = ()) -> Task:
    if "@" in name:  # a robustness variant: TASK@VARIANT[:SEED]...
        from cxbench.variants import apply_variants, parse_task_name

        base, variants = parse_task_name(name)
        return apply_variants(get_task(base, include_paths), variants)
    tasks = discover(include_paths)
    if name not in tasks:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(tasks))}")
    return tasks[name]
