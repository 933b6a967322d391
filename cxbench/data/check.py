"""``cxbench data check NAME ROOT``: what a data set on disk holds and what is wrong with it.

Counts samples per split and task family, the label distribution, the image files that
are missing and the rows that cannot be read (file and row). No image is decoded: files
are only looked up with ``os.stat``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cxbench.data.adapters import DataError, get_adapter
from cxbench.schema import Sample

#: families and splits tried for adapters without a dedicated check
_ALL_FAMILIES = (
    "vqa_closed",
    "vqa_open",
    "report_generation",
    "temporal_comparison",
    "localization",
    "diagnosis_recall1",
    "text",
)
_ALL_SPLITS = ("train", "val", "test")


@dataclass
class CheckReport:
    dataset: str
    root: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> family -> samples
    labels: dict[str, dict[str, int]] = field(default_factory=dict)  # "split/family" -> label -> n
    images: int = 0  # distinct image files referenced by samples
    missing_images: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)  # "file, row N: reason"
    errors: list[str] = field(default_factory=list)  # the data set could not be read at all
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(n for families in self.counts.values() for n in families.values())

    @property
    def ok(self) -> bool:
        return not (self.missing_images or self.malformed or self.errors) and self.total > 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total, "ok": self.ok}

    def to_text(self, limit: int = 20) -> str:
        lines = [f"dataset {self.dataset} at {self.root}"]
        lines += [f"  note: {note}" for note in self.notes]
        if self.counts:
            lines.append("samples (split / family):")
            for split, families in self.counts.items():
                for family, n in families.items():
                    lines.append(f"  {split:<6} {family:<20} {n}")
        for key, counter in self.labels.items():
            if counter:
                shown = ", ".join(f"{label} {n}" for label, n in counter.items())
                lines.append(f"labels {key}: {shown}")
        lines.append(f"image files referenced: {self.images}, missing: {len(self.missing_images)}")
        for title, items in (
            ("missing image files", self.missing_images),
            ("malformed rows", self.malformed),
            ("errors", self.errors),
        ):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines += [f"  {item}" for item in items[:limit]]
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")
        if self.total == 0 and not self.errors:
            lines.append("no samples found")
        lines.append("OK" if self.ok else "PROBLEMS FOUND")
        return "\n".join(lines)


def _label_of(sample: Sample, family: str) -> str | None:
    if family == "localization":
        return sample.query.get("finding")
    if isinstance(sample.target, str) and family in (
        "diagnosis_recall1",
        "vqa_closed",
        "temporal_comparison",
    ):
        return sample.target
    return None


def _tally(report: CheckReport, split: str, family: str, samples: Iterable[Sample], seen: set[str]) -> None:
    n = 0
    labels: Counter = Counter()
    for sample in samples:
        n += 1
        label = _label_of(sample, family)
        if label is not None:
            labels[label] += 1
        for image in sample.images:
            if image in seen:
                continue
            seen.add(image)
            try:
                os.stat(image)
            except OSError:
                report.missing_images.append(image)
    report.images = len(seen)
    if n:
        report.counts.setdefault(split, {})[family] = n
        if labels:
            report.labels[f"{split}/{family}"] = dict(labels.most_common())


#: public name for adapters' own ``check`` methods: count one (split, family) sample stream
tally = _tally


def _check_nih(report: CheckReport, root: str) -> None:
    from cxbench.data import nih

    data = nih.load(root)
    report.malformed.extend(data.problems)
    report.notes.append(
        f"metadata: {data.entry_file}" + (f", boxes: {data.bbox_file}" if data.bbox_file else "")
    )
    report.notes.append(f"{len(data.images)} image files indexed under {data.root}/images*")
    seen: set[str] = set()
    for split in data.splits:
        for family in nih.FAMILIES:
            _tally(report, split, family, nih.build_samples(data, family, split), seen)
    unlisted = [name for name in data.entries if data.split_of(name) is None]
    if unlisted:
        report.notes.append(f"{len(unlisted)} image(s) of the metadata are in neither split list")


def _check_local(report: CheckReport, root: str) -> None:
    from cxbench.data import local_csv

    path, rows, problems = local_csv.scan(root)
    report.malformed.extend(problems)
    seen: set[str] = set()
    for split in dict.fromkeys(r.split for r in rows):
        labelled = [r for r in rows if r.label is not None]
        for family in local_csv.FAMILIES:
            source = labelled if family == "diagnosis_recall1" else rows
            _tally(report, split, family, local_csv.build_samples(path, source, family, split), seen)
    unlabelled = sum(r.label is None for r in rows)
    if unlabelled:
        report.notes.append(f"{unlabelled} row(s) without a label (left out of diagnosis_recall1)")


def _check_generic(report: CheckReport, name: str, root: str) -> None:
    adapter = get_adapter(name)
    params = {"root": root} if root else {}
    seen: set[str] = set()
    for split in _ALL_SPLITS:
        for family in _ALL_FAMILIES:
            try:
                _tally(report, split, family, adapter.samples(family, split, params), seen)
            except DataError as exc:
                if "famil" not in str(exc) and "split" not in str(exc):
                    raise
            except ValueError:  # adapters that reject a family with a plain ValueError
                continue


def check_dataset(name: str, root: str | os.PathLike[str]) -> CheckReport:
    """Inspect data set ``name`` at ``root``; problems go into the report, never raised."""
    root = str(root)
    report = CheckReport(dataset=name, root=root)
    try:
        if name == "nih_chestxray14":
            _check_nih(report, root)
        elif name == "local_csv":
            _check_local(report, root)
        elif hasattr(get_adapter(name), "check"):
            # adapters may inspect their own layout: ``check(report, root)`` fills the report
            get_adapter(name).check(report, root)
        else:
            _check_generic(report, name, root)
    except (DataError, OSError) as exc:
        report.errors.append(str(exc))
    report.missing_images.sort()
    return report


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="data set name, e.g. nih_chestxray14 or local_csv")
    parser.add_argument("root", help="its root: a folder (nih_chestxray14) or a file (local_csv, jsonl)")
    parser.add_argument("--limit", type=int, default=20, help="list at most this many problems of each kind")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def cli_check(args: argparse.Namespace) -> int:
    """Print the report; 0 if the data set is fine, 1 if problems were found, 2 for bad input."""
    from cxbench.data.adapters import _ADAPTERS, _LAZY_ADAPTERS

    known = sorted({*_ADAPTERS, *_LAZY_ADAPTERS})
    if args.name not in known:
        print(f"cxbench: error: unknown dataset {args.name!r}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    if not Path(args.root).expanduser().exists():
        print(f"cxbench: error: {args.root} does not exist", file=sys.stderr)
        return 2
    report = check_dataset(args.name, Path(args.root).expanduser())
    if getattr(args, "json", False):
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.to_text(limit=getattr(args, "limit", 20)))
    return 0 if report.ok else 1
