"""The reasoning tasks and leaderboard: a model that plants a finding in its reasoning ranks lower."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import HELPERS

from cxbench.models import load_model
from cxbench.report.leaderboard import Leaderboard, build
from cxbench.runner import RunConfig, run_task
from cxbench.tasks import builtin_task_dir, get_task

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("vqa_closed_reasoning", "diagnosis_recall1_reasoning")
REASONING = ("format_valid", "verdict_accuracy", "self_consistency", "hallucination_rate", "omission_rate")
CLEAN, PLANTED = "python-cx_mind_clean", "python-cx_mind_planted"


def test_reasoning_tasks_extend_their_base_tasks():
    for name in TASKS:
        task, base = get_task(name), get_task(name.removesuffix("_reasoning"))
        assert task.family == base.family and task.dataset == base.dataset and task.parser == base.parser
        assert task.metrics == [*base.metrics, *REASONING]
        assert task.primary_metric == base.primary_metric
        assert "<think>" in task.prompt and "<answer>" in task.prompt and "✅" in task.prompt


def test_reasoning_leaderboard_groups_columns():
    board = Leaderboard.from_yaml(ROOT / "leaderboards" / "reasoning.yaml")
    raw = yaml.safe_load((ROOT / "leaderboards" / "reasoning.yaml").read_text())
    assert {task for task, _ in board.columns} == set(TASKS)
    for column in raw["columns"]:
        outcome = column["metric"] in ("accuracy", "mean_recall_at_1")
        assert column["group"] == ("outcome" if outcome else "reasoning")
        assert outcome or column["metric"] in REASONING


@pytest.fixture(scope="module")
def board_output(tmp_path_factory) -> Path:
    """cx_mind_clean and cx_mind_planted on small copies of the two tasks, and a board over them."""
    tmp = tmp_path_factory.mktemp("reasoning_board")
    tasks = tmp / "tasks"
    tasks.mkdir()
    for name in TASKS:
        config = yaml.safe_load((builtin_task_dir() / f"{name}.yaml").read_text(encoding="utf-8"))
        config["name"] = f"small_{name}"
        config["dataset"] = {"name": "phantom", "split": "test", "n_cases": 80, "seed": 0, "size": 128}
        (tasks / f"small_{name}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    results = tmp / "results"
    config = RunConfig(output_dir=results, cache_path="", progress=False, n_bootstrap=20, limit=20)
    for helper in ("cx_mind_clean", "cx_mind_planted"):
        model = load_model(f"python:{HELPERS}:{helper}")
        for name in TASKS:
            run_task(get_task(f"small_{name}", [tasks]), model, config)
    board = yaml.safe_load((ROOT / "leaderboards" / "reasoning.yaml").read_text())
    board.update(name="small_reasoning", results=str(results))
    for column in board["columns"]:
        column["task"] = f"small_{column['task']}"
    (tmp / "small_reasoning.yaml").write_text(yaml.safe_dump(board))
    return build(str(tmp / "small_reasoning.yaml"), output=str(tmp / "board"), folder=tmp)


def test_planted_findings_rank_below_clean_reasoning(board_output):
    ranking = json.loads((board_output / "ranking.json").read_text())
    scores = {row["model"]: row["score"] for row in ranking}
    assert [row["model"] for row in ranking] == [CLEAN, PLANTED]
    assert scores[CLEAN] > scores[PLANTED]
    with (board_output / "leaderboard.csv").open() as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}

    def hallucination(model: str, task: str) -> float:
        return float(rows[model][f"small_{task}/hallucination_rate"])

    assert hallucination(CLEAN, TASKS[0]) == 0.0 and hallucination(PLANTED, TASKS[0]) > 0.5
    # on diagnosis both helpers answer "no": that verdict takes the think's finding as its subject and
    # replaces the planted assertion, so nothing is asserted and the column ties at 0
    assert hallucination(PLANTED, TASKS[1]) >= hallucination(CLEAN, TASKS[1])
    # every other column ties: the planted finding is the only difference
    for key in rows[CLEAN]:
        if key != "model" and "hallucination_rate" not in key:
            assert rows[CLEAN][key] == rows[PLANTED][key], key
    assert (board_output / "index.html").is_file()
