"""Shared fixtures: an isolated cache folder and a small phantom data set with task YAMLs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Isolate every test run from the user's cache before cxbench is imported anywhere.
os.environ.setdefault("CXBENCH_CACHE", tempfile.mkdtemp(prefix="cxbench-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL_PHANTOM = {"n_cases": 80, "seed": 0, "size": 128}
TASK_NAMES = (
    "vqa_closed",
    "vqa_open",
    "report_generation",
    "temporal_comparison",
    "localization",
    "diagnosis_recall1",
)


@pytest.fixture(scope="session")
def small_tasks(tmp_path_factory) -> Path:
    """A folder of ``small_<task>`` YAMLs: the built-in tasks on an 80-case 128 px phantom set."""
    import yaml

    from cxbench.tasks import builtin_task_dir

    folder = tmp_path_factory.mktemp("small_tasks")
    for name in TASK_NAMES:
        config = yaml.safe_load((builtin_task_dir() / f"{name}.yaml").read_text())
        config["name"] = f"small_{name}"
        config["dataset"].update(SMALL_PHANTOM)
        (folder / f"small_{name}.yaml").write_text(yaml.safe_dump(config))
    return folder


HELPERS = Path(__file__).parent / "model_helpers.py"


def chromium_flags(profile: Path) -> list[str]:
    """Headless Chromium flags for this closed network (no background connections)."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ]
