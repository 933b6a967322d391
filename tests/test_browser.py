"""The sample browser: one self-contained page per task log, with model text escaped."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import HELPERS, chromium_flags

from cxbench.cli import main
from cxbench.models import load_model
from cxbench.runner import RunConfig, run_task
from cxbench.tasks import get_task


@pytest.fixture(scope="module")
def hostile_run(small_tasks, tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile")
    config = RunConfig(output_dir=out, cache_path="", progress=False, limit=6, n_bootstrap=50)
    for name in ("small_vqa_closed", "small_temporal_comparison", "small_localization"):
        spec = f"python:{HELPERS}:hostile" if name == "small_vqa_closed" else "prior"
        run_task(get_task(name, [small_tasks]), load_model(spec), config)
    return out


def test_model_markup_is_escaped(hostile_run, tmp_path):
    assert main(["browse", str(hostile_run / "python-hostile"), "--output", str(tmp_path)]) == 0
    page = (tmp_path / "small_vqa_closed.html").read_text()
    assert "<script>document.title" not in page and "<img src=x" not in page
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    assert 'class="think"' in page and 'class="answer"' in page  # steps are separated
    assert page.count('class="card') == 6


def test_prior_and_current_images_and_boxes(hostile_run, tmp_path):
    assert main(["browse", str(hostile_run / "prior"), "--output", str(tmp_path)]) == 0
    temporal = (tmp_path / "small_temporal_comparison.html").read_text()
    assert "<small>prior</small>" in temporal and "<small>current</small>" in temporal
    boxes = (tmp_path / "small_localization.html").read_text()
    assert 'stroke="#2ca02c"' in boxes and 'stroke="#d62728"' in boxes  # target and prediction


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_hostile_page_executes_nothing_in_a_real_browser(hostile_run, tmp_path):
    main(
        [
            "browse",
            str(hostile_run / "python-hostile" / "small_vqa_closed.samples.jsonl"),
            "--output",
            str(tmp_path / "page.html"),
        ]
    )
    dom = subprocess.run(
        [
            "chromium",
            *chromium_flags(tmp_path / "p"),
            "--dump-dom",
            (tmp_path / "page.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "<title>python-hostile / small_vqa_closed</title>" in dom  # no script renamed the page
    assert "&lt;script&gt;" in dom
