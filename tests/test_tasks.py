"""Task plugins: YAML loading, hooks, discovery from include paths and entry points."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cxbench import tasks as task_module
from cxbench.schema import Sample
from cxbench.tasks import Task, TaskError, discover, get_task

BUILTIN = {
    "vqa_closed": ("accuracy", "closed"),
    "vqa_open": ("token_f1", "text"),
    "report_generation": ("bleu4", "text"),
    "temporal_comparison": ("accuracy", "change"),
    "localization": ("mean_iou", "box"),
    "diagnosis_recall1": ("mean_recall_at_1", "ranked_labels"),
}


def test_builtin_tasks_load_with_their_primary_metric_and_parser():
    found = discover()
    for name, (primary, parser) in BUILTIN.items():
        assert found[name].primary_metric == primary
        assert found[name].parser == parser
        assert found[name].dataset["name"] == "phantom"


def test_prompt_renders_question_and_options_and_request_orders_images():
    task = get_task("temporal_comparison")
    sample = Sample(
        id="x", images=["prior.png", "current.png"], question="Has the edema changed?", target="stable"
    )
    request = task.build_request(sample)
    content = request.messages[-1]["content"]
    assert [part.get("path") for part in content[:2]] == ["prior.png", "current.png"]
    assert content[2]["text"].startswith("Has the edema changed?\nAnswer with one word")
    mc = get_task("vqa_closed").build_request(
        Sample(id="y", images=["a.png"], question="Which?", target="B", choices=["mass", "nodule"])
    )
    assert "A) mass\nB) nodule" in mc.prompt


def test_hooks_override_prompt_and_parser(tmp_path):
    (tmp_path / "shout_hooks.py").write_text(
        "def build_prompt(sample, task):\n    return sample.question.upper()\n\n"
        "def parse(text, sample, task):\n    return 'yes' if 'OUI' in text else None\n"
    )
    (tmp_path / "shout.yaml").write_text(
        "name: shout\nfamily: vqa_closed\ndataset: {name: phantom}\nprompt: unused\n"
        "parser: closed\nmetrics: [accuracy]\nhooks: shout_hooks.py\n"
    )
    task = Task.from_yaml(tmp_path / "shout.yaml")
    sample = Sample(id="s", images=[], question="is it?", target="yes")
    assert task.build_request(sample).prompt == "IS IT?"
    assert task.parse("OUI", sample) == "yes" and task.parse("yes", sample) is None
    before = task.task_hash
    (tmp_path / "shout_hooks.py").write_text("def parse(text, sample, task):\n    return None\n")
    assert Task.from_yaml(tmp_path / "shout.yaml").task_hash != before  # hook source is hashed


def test_prompt_with_unknown_field_names_the_file(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "name: t\nfamily: vqa_open\ndataset: {name: phantom}\nprompt: '{nonsense}'\nparser: text\n"
        "metrics: [exact_match]\n"
    )
    task = Task.from_yaml(tmp_path / "t.yaml")
    with pytest.raises(TaskError, match=r"t\.yaml: prompt uses \{nonsense\}"):
        task.render_prompt(Sample(id="s", images=[], question="q", target="a"))


@pytest.mark.parametrize(
    "body, message",
    [
        ("name: t\n", "missing field"),
        ("[1, 2]\n", "must be a YAML mapping"),
        ("name: t\nfamily: x\ndataset: {}\nprompt: p\nparser: text\nmetrics: []\n", "family 'x'"),
        (
            "name: t\nfamily: vqa_open\ndataset: {}\nprompt: p\nparser: text\nmetrics: [f9]\n",
            "unknown metric 'f9'",
        ),
        ("name: t\nfamily: vqa_open\n  bad: [\n", "not valid YAML"),
    ],
)
def test_invalid_task_files_are_rejected_with_the_file_name(tmp_path, body, message):
    (tmp_path / "t.yaml").write_text(body)
    with pytest.raises(TaskError, match=message):
        Task.from_yaml(tmp_path / "t.yaml")


def test_entry_point_folders_are_discovered(tmp_path, monkeypatch):
    (tmp_path / "plugin.yaml").write_text(
        "name: plugin_task\nfamily: vqa_open\ndataset: {name: phantom}\nprompt: '{question}'\n"
        "parser: text\nmetrics: [token_f1]\n"
    )
    entry = SimpleNamespace(load=lambda: lambda: str(tmp_path))
    monkeypatch.setattr(task_module.importlib_metadata, "entry_points", lambda group: [entry])
    assert "plugin_task" in discover()


def test_unquoted_yes_no_labels_stay_words(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "name: t\nfamily: vqa_closed\ndataset: {name: phantom}\nprompt: p\nparser: closed\n"
        "labels: [yes, no]\nmetrics: [macro_f1]\n"
    )
    assert Task.from_yaml(tmp_path / "t.yaml").labels == ("yes", "no")
