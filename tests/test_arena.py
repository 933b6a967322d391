"""Report Arena: metric and model judges, order swapping, Bradley–Terry ratings, the CLI."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from cxbench.arena import (
    ArenaError,
    Battle,
    MetricJudge,
    ModelJudge,
    add_arena_arguments,
    bradley_terry,
    cli_arena,
    parse_verdict,
    run_arena,
)
from cxbench.models import load_model

FINDINGS = [
    "The heart is enlarged.",
    "There is a right pleural effusion.",
    "There is a left pneumothorax.",
    "Consolidation in the right lower lobe.",
    "Pulmonary edema is present.",
    "Bibasilar atelectasis.",
    "A rib fracture is seen.",
]
N = 40


# ---------------------------------------------------------------- python-callable judges (python: spec)


def first_always(request) -> str:
    """A maximally position-biased judge: always prefers the report shown first."""
    return "1"


def scripted(request) -> str:
    """Answers whatever the reference text asks for (``say: ...``), to exercise the parser."""
    text = request.prompt
    start = text.index("say:") + len("say:")
    return text[start:].split("\n", 1)[0].strip()


def longer_wins(request) -> str:
    """A fair (order-independent) judge: the longer report wins, equal lengths tie."""
    text = request.prompt
    one = text.split("Report 1:\n", 1)[1].split("\n\nReport 2:", 1)[0]
    two = text.split("Report 2:\n", 1)[1].split("\n\nWhich report", 1)[0]
    return "1" if len(one) > len(two) else "2" if len(two) > len(one) else "tie"


# ---------------------------------------------------------------- synthetic logs


def _reference(i: int) -> str:
    return f"{FINDINGS[i % 7]} {FINDINGS[(i + 1) % 7]}"


def _report(quality: str, i: int) -> str:
    right, second, wrong = FINDINGS[i % 7], FINDINGS[(i + 1) % 7], FINDINGS[(i + 3) % 7]
    other = FINDINGS[(i + 4) % 7]
    if quality == "good":  # exact, except a miss now and then
        return f"{wrong} {other}" if i % 10 == 9 else f"{right} {second}"
    if quality == "mid":  # one finding right, one invented
        return f"{right} {wrong}"
    return f"{right} {second}" if i % 13 == 5 else f"{wrong} {other}"  # bad: mostly wrong


def write_log(path: Path, model: str, reports: dict[str, str], task: str = "report_generation") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps({"header": {"task": task, "model": model, "task_hash": "x"}})]
    for i, (sample_id, report) in enumerate(reports.items()):
        sample = {
            "id": sample_id,
            "images": [],
            "question": "Write the findings.",
            "target": _reference(i),
            "choices": None,
            "query": {},
            "metadata": {},
        }
        rows.append(
            json.dumps({"sample_id": sample_id, "sample": sample, "raw_output": report, "parsed": report})
        )
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def three_runs(tmp_path) -> dict[str, Path]:
    logs = {}
    for quality in ("good", "mid", "bad"):
        reports = {f"s{i:03d}": _report(quality, i) for i in range(N)}
        logs[quality] = write_log(tmp_path / quality / "report_generation.samples.jsonl", quality, reports)
    return logs


# ---------------------------------------------------------------- Bradley–Terry


def test_bt_two_models_three_to_one():
    battles = [("a", "b", 1.0)] * 3 + [("a", "b", 0.0)]
    ratings = bradley_terry(battles, n_boot=0)
    gap = ratings["a"]["rating"] - ratings["b"]["rating"]
    assert gap == pytest.approx(400 * math.log10(3), abs=1e-6)  # strength ratio 3
    assert (ratings["a"]["rating"] + ratings["b"]["rating"]) / 2 == pytest.approx(1000)  # mean log-strength 0
    assert (ratings["a"]["wins"], ratings["a"]["losses"], ratings["a"]["ties"]) == (3, 1, 0)
    assert not ratings["a"]["regularised"]
    assert math.isnan(ratings["a"]["ci95"][0])


def test_bt_ties_are_half_wins_and_three_models():
    # 2 wins + 2 ties for a vs b = 3 "wins" vs 1: ratio 3 again
    ties = bradley_terry([("a", "b", 1.0)] * 2 + [("a", "b", 0.5)] * 2, n_boot=0)
    assert ties["a"]["rating"] - ties["b"]["rating"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert ties["a"]["ties"] == 2
    # a 2:1 over b, b 2:1 over c, a 4:1 over c: consistent strengths 4:2:1, the exact MLE
    battles = (
        [("a", "b", 1.0)] * 2
        + [("b", "a", 1.0)]
        + [("b", "c", 1.0)] * 2
        + [("c", "b", 1.0)]
        + [("a", "c", 1.0)] * 4
        + [("a", "c", 0.0)]
    )
    r = bradley_terry(battles, n_boot=0)
    step = 400 * math.log10(2)
    assert r["a"]["rating"] - r["b"]["rating"] == pytest.approx(step, abs=1e-6)
    assert r["b"]["rating"] - r["c"]["rating"] == pytest.approx(step, abs=1e-6)
    assert r["b"]["rating"] == pytest.approx(1000, abs=1e-6)


def test_bt_model_that_never_wins_is_regularised():
    r = bradley_terry([("a", "b", 1.0)] * 5, n_boot=50, seed=1)
    assert r["a"]["regularised"] and r["b"]["regularised"]
    # 5.1 vs 0.1 virtual-win-adjusted: ratio 51
    assert r["a"]["rating"] - r["b"]["rating"] == pytest.approx(400 * math.log10(51), abs=1e-6)
    assert all(math.isfinite(x) for x in r["a"]["ci95"] + r["b"]["ci95"])
    with pytest.raises(ArenaError, match="MLE does not exist"):
        bradley_terry([("a", "b", 1.0)] * 5, n_boot=0, pseudo_count=0)


def test_bt_accepts_battle_records_and_bootstrap_is_seeded():
    battles = [Battle(f"s{i}", "x", "y", 1.0, 1.0 if i % 3 else 0.0) for i in range(30)]
    one = bradley_terry(battles, n_boot=200, seed=3)
    two = bradley_terry([b.__dict__ for b in battles], n_boot=200, seed=3)
    assert one == two
    low, high = one["x"]["ci95"]
    assert low <= one["x"]["rating"] <= high
    assert one["x"]["wins"] == 20 and one["x"]["ties"] == 10


# ---------------------------------------------------------------- the arena


def test_metric_judge_ranks_three_models(three_runs):
    result = run_arena(three_runs, MetricJudge("chexpert_micro_f1_14"), n_boot=300, seed=0)
    assert result.ranking() == ["good", "mid", "bad"]
    r = result.ratings
    assert r["good"]["ci95"][0] > r["mid"]["ci95"][1]  # non-overlapping CIs
    assert r["mid"]["ci95"][0] > r["bad"]["ci95"][1]
    assert r["good"]["rating"] - r["bad"]["rating"] > 200
    assert len(result.battles) == 3 * N and result.pairs == {
        "good vs mid": N,
        "good vs bad": N,
        "mid vs bad": N,
    }
    assert result.position_bias_rate == 0.0  # a metric does not care about the order
    table = result.to_markdown()
    assert "| 1 | good |" in table and "W / L / T" in table
    data = json.loads(json.dumps(result.to_dict()))
    assert data["ranking"] == ["good", "mid", "bad"] and len(data["battles"]) == 3 * N
    assert data["win_rates"]["good"]["bad"] > 0.8


def test_metric_judge_values_and_ties():
    judge = MetricJudge()
    ref = _reference(0)
    assert judge.judge(ref, ref, f"{FINDINGS[0]} {FINDINGS[3]}") == 1.0
    assert judge.judge(ref, FINDINGS[4], ref) == 0.0
    assert judge.judge(ref, ref, ref.lower()) == 0.5
    assert MetricJudge(tie_margin=0.6).judge(ref, ref, f"{FINDINGS[0]} {FINDINGS[3]}") == 0.5
    with pytest.raises(ArenaError, match="unknown metric"):
        MetricJudge("no_such_metric")


def test_first_position_biased_judge_gives_ties(three_runs):
    judge = ModelJudge(load_model(f"python:{__file__}:first_always"))
    result = run_arena(three_runs, judge, n_boot=20, max_samples=5)
    assert all(b.outcome_ab == 1.0 and b.outcome_ba == 0.0 and b.outcome == 0.5 for b in result.battles)
    assert result.position_bias_rate == 1.0
    assert len(result.battles) == 15 and judge.calls == 30
    assert {r["ties"] for r in result.ratings.values()} == {10}
    assert all(r["rating"] == pytest.approx(1000) for r in result.ratings.values())


def test_fair_model_judge_agrees_in_both_orders(tmp_path):
    short = write_log(tmp_path / "short.jsonl", "short", {f"s{i}": "Clear." for i in range(6)})
    long = write_log(tmp_path / "long.jsonl", "long", {f"s{i}": "The lungs are clear." for i in range(8)})
    judge = ModelJudge(load_model(f"python:{__file__}:longer_wins"))
    result = run_arena({"short": short, "long": long}, judge, n_boot=0)
    assert len(result.battles) == 6  # only the shared ids
    assert result.position_bias_rate == 0.0
    assert all(b.outcome == 0.0 for b in result.battles)  # model_a is "short": it always loses
    assert result.ranking() == ["long", "short"]


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("1", 1.0),
        ("2", 0.0),
        ("tie", 0.5),
        ("Tie.", 0.5),
        ("**Report 2**", 0.0),
        ("<think>Report 1 misses the effusion.</think>\nAnswer: 2", 0.0),
        ("The better report is Report 1.", 1.0),
        ("Report 2 is clearly better than Report 1.", 0.0),
        ("Both are equally good, so it is a tie.", 0.5),
        ("I like pizza", None),
        ("", None),
    ],
)
def test_parse_verdict(answer, verdict):
    assert parse_verdict(answer) == verdict


def test_model_judge_parses_answers_and_counts_junk():
    judge = ModelJudge(load_model(f"python:{__file__}:scripted"))
    answers = {"1": 1.0, "2": 0.0, "tie": 0.5, "no idea, sorry": 0.5}
    items = [(f"say: {text}", "report one", "report two", None) for text in answers]
    assert judge.judge_many(items) == list(answers.values())
    assert (judge.calls, judge.unparsed, judge.errors) == (4, 1, 0)
    assert judge.unparsed_examples == ["no idea, sorry"]


def test_model_judge_request_layout(tmp_path):
    image = tmp_path / "study.png"
    image.write_bytes(b"\x89PNG")
    sample = {"id": "s1", "images": [str(image), str(tmp_path / "missing.png")], "target": "ref"}
    request = ModelJudge(load_model(f"python:{__file__}:first_always")).build_request("REF", "A", "B", sample)
    assert request.images == [] and [p["type"] for p in request.messages[-1]["content"]] == ["text"]
    assert "Report 1:\nA" in request.prompt and "Report 2:\nB" in request.prompt and "REF" in request.prompt
    vision = ModelJudge(load_model(f"python:{__file__}:first_always"), images=True)
    request = vision.build_request("REF", "A", "B", sample)
    assert request.images == [str(image)]
    assert [p["type"] for p in request.messages[-1]["content"]] == ["image", "text"]
    with pytest.raises(ArenaError, match="report_2"):
        ModelJudge(load_model(f"python:{__file__}:first_always"), prompt_template="{reference} {report_1}")


def test_run_arena_bad_input(tmp_path, three_runs):
    other = write_log(tmp_path / "vqa.jsonl", "vqa", {"s000": "yes"}, task="vqa_open")
    with pytest.raises(ArenaError, match="different tasks"):
        run_arena({"good": three_runs["good"], "vqa": other}, MetricJudge())
    disjoint = write_log(tmp_path / "d.jsonl", "d", {"zzz": "x"})
    with pytest.raises(ArenaError, match="share no sample id"):
        run_arena({"good": three_runs["good"], "d": disjoint}, MetricJudge())
    broken = tmp_path / "broken.jsonl"
    broken.write_text("not json\n")
    with pytest.raises(ArenaError, match="broken.jsonl"):
        run_arena({"good": three_runs["good"], "broken": broken}, MetricJudge())
    with pytest.raises(ArenaError, match="at least two"):
        run_arena({"good": three_runs["good"]}, MetricJudge())


# ---------------------------------------------------------------- command line


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arena_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_arena_run_folders_and_json(tmp_path, three_runs, capsys):
    out = tmp_path / "arena.json"
    folders = [str(p.parent) for p in three_runs.values()]
    code = cli_arena(_args(*folders, "--bootstrap", "50", "--max-samples", "20", "--output", str(out)))
    assert code == 0
    printed = capsys.readouterr().out
    assert "Report Arena: report_generation" in printed and "| 1 | good |" in printed
    data = json.loads(out.read_text())
    assert data["ranking"] == ["good", "mid", "bad"] and data["n_battles"] == 60
    # the results/ folder holding the run folders works too
    assert cli_arena(_args(str(tmp_path), "--bootstrap", "0")) == 0


def test_cli_arena_model_judge(three_runs, capsys):
    logs = [str(p) for p in three_runs.values()]
    code = cli_arena(_args(*logs, "--judge", f"model:python:{__file__}:first_always", "--bootstrap", "0"))
    assert code == 0
    assert "position-bias rate 1.000" in capsys.readouterr().out


def test_cli_arena_errors(tmp_path, three_runs, capsys):
    good = str(three_runs["good"].parent)
    assert cli_arena(_args(good, str(tmp_path / "nope"))) == 2
    assert "nope: no such file or folder" in capsys.readouterr().err
    assert cli_arena(_args(good, str(three_runs["mid"]), "--task", "vqa_open")) == 2
    assert "no vqa_open.samples.jsonl" in capsys.readouterr().err
    assert cli_arena(_args(str(three_runs["good"]), str(three_runs["mid"]), "--task", "vqa_open")) == 2
    assert "not 'vqa_open'" in capsys.readouterr().err
    assert cli_arena(_args(good, str(three_runs["mid"]), "--judge", "oracle:x")) == 2
    assert "unknown judge" in capsys.readouterr().err
    assert cli_arena(_args(good)) == 2
    assert "at least two" in capsys.readouterr().err
