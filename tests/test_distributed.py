"""Ray data-parallel evaluation on a local Ray instance: identical to a single-process run."""

from __future__ import annotations

import json

import pytest

from cxbench.cli import main

pytest.importorskip("ray")


def test_ray_actors_give_the_single_process_result(small_tasks, tmp_path, capsys):
    base = ["run", "--include-path", str(small_tasks), "--tasks", "small_localization", "--model", "random"]
    base += ["--no-progress", "--limit", "24", "--bootstrap", "200", "--cache", str(tmp_path / "c.sqlite")]
    assert main([*base, "--output", str(tmp_path / "single"), "--no-cache"]) == 0
    single = json.loads((tmp_path / "single" / "random" / "small_localization.json").read_text())
    n = single["n"]
    assert main([*base, "--output", str(tmp_path / "ray"), "--ray", "2"]) == 0
    assert f"{n} samples over 2 Ray actors, {n} model calls" in capsys.readouterr().err
    merged = json.loads((tmp_path / "ray" / "random" / "small_localization.json").read_text())
    assert merged["metrics"] == single["metrics"] and merged["n"] == n > 10
    # the actors wrote into the shared cache: a second Ray run makes no model calls
    assert main([*base, "--output", str(tmp_path / "ray"), "--ray", "2"]) == 0
    assert f"{n} samples over 2 Ray actors, 0 model calls" in capsys.readouterr().err
