"""reference_training: the rewards on hand-written outputs, the conditional gate, the data builders,
and the stage configs (YAML -> TRL config objects, clear failures without GPU / vLLM / DeepSpeed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import SMALL_PHANTOM

from reference_training import rewards as R
from reference_training.config import (
    CONFIG_DIR,
    ConfigError,
    EnvironmentProblem,
    check_environment,
    load_curriculum,
    load_stage_config,
    trl_config,
)
from reference_training.data import FAMILIES, build_stage, grounded_think

CHOICES = ["pneumothorax", "mass", "no finding", "edema"]
REFERENCE = (
    "Option A, pneumothorax. Signs of pneumothorax: No pneumothorax.\n"
    "Option B, mass. Signs of mass: There is a large mass in the right upper lung zone.\n"
    "Option C, no finding. An abnormal finding is present.\n"
    "Option D, edema. Signs of edema: No pulmonary edema.\n"
    "Only option B is supported by the image."
)
CLOSED = R.RewardTarget("closed", choices=CHOICES, letter="B", reference=REFERENCE)
OPEN = R.RewardTarget(
    "open",
    labels=["pleural effusion", "mass"],
    reference="Signs of pleural effusion: There is a small left pleural effusion.",
    findings=[
        {"label": "pleural effusion", "box": [0.5, 0.5, 0.9, 0.9]},
        {"label": "mass", "box": [0.1, 0.1, 0.3, 0.3]},
    ],
    image_size=(200, 100),
)
NORMAL = R.RewardTarget("open", labels=[], reference="No abnormality is seen.")


def pair(think: str, answer: str) -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def closed_output(marks=("❌", "✅", "❌", "❌"), final="B) ✅", thinks=None) -> str:
    thinks = thinks or REFERENCE.split("\n")
    steps = [pair(thinks[i], f"{'ABCD'[i]}) {mark}") for i, mark in enumerate(marks)]
    return "".join(steps) + pair(thinks[-1], final)


GOOD_CLOSED = closed_output()
GOOD_OPEN = (
    pair("Review.", "Possible diagnoses: pleural effusion, mass, edema")
    + pair("There is a small left pleural effusion.", "Pleural effusion ✅")
    + pair("A mass projects over the right upper lung.", "Mass ✅")
    + pair("No pulmonary edema.", "Edema ❌")
    + pair("Confirmed: pleural effusion, mass.", "pleural effusion, mass")
)


# ----------------------------------------------------------------------------------------
# Rewards on hand-written outputs
# ----------------------------------------------------------------------------------------


def test_well_formed_closed_output_scores_every_reward():
    scores = R.score(GOOD_CLOSED, CLOSED)
    assert scores["format"] == 1.0
    assert scores["outcome"] == 1.0
    assert scores["consistency"] == 1.0
    assert scores["think"] == pytest.approx(1.0)  # the think texts are the reference
    assert scores["base"] == pytest.approx(1.0)
    assert scores["total"] == pytest.approx(1.0 + 0.2 + 0.2)


def test_well_formed_open_output():
    scores = R.score(GOOD_OPEN, OPEN)
    assert (scores["format"], scores["outcome"], scores["consistency"]) == (1.0, 1.0, 1.0)
    assert 0.0 < scores["think"] < 1.0
    assert R.format_reward(" \n" + GOOD_OPEN.replace("</think><answer>", "</think>\n<answer>") + "\n") == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "<think>a</think><answer>B) ✅",  # unclosed answer
        "<think>a<answer>B) ✅</answer>",  # unclosed think
        "<think>a</think>",  # no answer
        "<answer>B) ✅</answer>",  # no think
        "<think>a</think><think>b</think><answer>B) ✅</answer>",  # repeated think
        "<think>a <think>b</think></think><answer>B) ✅</answer>",  # nested
        "<answer>B) ✅</answer><think>a</think>",  # wrong order
        "<think>a</think><answer>B) ✅</answer><think>late</think>",  # trailing think, no answer
    ],
)
def test_malformed_outputs_score_format_zero(text):
    assert R.format_reward(text) == 0.0
    # the outcome is scored on the final answer whatever the format: B is still chosen where present
    assert R.closed_outcome_reward(text, CHOICES, "B") == float("B)" in text and "<answer>B" in text)


@pytest.mark.parametrize(
    "text",
    [
        "Sure, here is my reasoning. " + GOOD_CLOSED,
        GOOD_CLOSED + " Hope this helps!",
        GOOD_CLOSED.replace("</answer><think>", "</answer> so <think>", 1),
        GOOD_CLOSED.replace("</think><answer>", "</think>then<answer>", 1),
    ],
)
def test_text_outside_the_tags_fails_format_only(text):
    assert R.format_reward(text) == 0.0
    assert R.closed_outcome_reward(text, CHOICES, "B") == 1.0
    assert R.consistency_reward(text, CLOSED) == 1.0


def test_correct_final_answer_with_inconsistent_verdicts():
    text = closed_output(marks=("✅", "✅", "❌", "❌"))  # A marked present although B is the answer
    scores = R.score(text, CLOSED)
    assert scores["format"] == 1.0 and scores["outcome"] == 1.0
    assert scores["consistency"] == 0.0
    assert scores["base"] == pytest.approx(1.0)
    # an option left without a verdict is not a contradiction, a wrong one is
    assert R.consistency_reward(closed_output(marks=("❌", "✅", "❌", "✅")), CLOSED) == 0.0
    # open: a candidate marked present that the study does not have
    wrong = GOOD_OPEN.replace("Edema ❌", "Edema ✅")
    assert R.consistency_reward(wrong, OPEN) == 0.0
    assert R.open_outcome_reward(wrong, OPEN.labels) == 1.0


def test_wrong_final_answer():
    text = closed_output(marks=("✅", "❌", "❌", "❌"), final="A) ✅")
    scores = R.score(text, CLOSED)
    assert scores["outcome"] == 0.0 and scores["consistency"] == 0.0
    assert scores["think"] == 0.0  # closed stage: the think reward needs a correct answer
    assert R.think_reward(text, CLOSED, require_correct=False) == pytest.approx(1.0)
    assert scores["base"] == pytest.approx(0.1)


def test_unicode_marks_versus_ascii_look_alikes():
    # other Unicode check/cross marks are verdicts too
    assert R.consistency_reward(closed_output(marks=("✗", "✔", "✘", "✖")), CLOSED) == 1.0
    # ASCII look-alikes are not verdicts: no verdict at all -> no consistency reward
    for marks in (("x", "v", "x", "x"), ("[ ]", "[x]", "[ ]", "[ ]"), ("X", "V", "X", "X")):
        text = closed_output(marks=marks, final="B")
        assert R.consistency_reward(text, CLOSED) == 0.0
        assert R.format_reward(text) == 1.0
    # look-alike brackets are not tags
    fullwidth = GOOD_CLOSED.replace("<", "＜").replace(">", "＞")
    assert R.format_reward(fullwidth) == 0.0
    angle = GOOD_CLOSED.replace("<think>", "‹think›")
    assert R.format_reward(angle) == 0.0
    # a heavy check mark on the final option still picks it; an ASCII "v" alone picks nothing
    assert R.closed_outcome_reward(pair("t", "B) ✔"), CHOICES, "B") == 1.0
    assert R.closed_outcome_reward(pair("t", "A) v B) v"), CHOICES, "B") == 0.0


def test_empty_output_scores_zero_everywhere():
    for target in (CLOSED, OPEN, NORMAL):
        scores = R.score("", target, R.RewardWeights(grounding=0.2))
        assert all(value == 0.0 for value in scores.values()), scores
    assert R.open_outcome_reward("<think>nothing to say</think>", []) == 0.0  # no answer at all


def test_open_outcome_is_micro_f1_of_disease_sets():
    assert R.open_outcome_reward(pair("t", "pleural effusion, edema"), ["pleural effusion", "mass"]) == 0.5
    assert R.open_outcome_reward(pair("t", "effusion and a mass"), ["pleural effusion", "mass"]) == 1.0
    assert R.open_outcome_reward(pair("t", "pleural effusion, no pneumothorax"), ["pleural effusion"]) == 1.0
    assert R.open_outcome_reward(pair("t", "no finding"), []) == 1.0
    assert R.open_outcome_reward(pair("t", "edema"), []) == 0.0
    assert R.micro_f1({"a", "b", "c"}, {"a"}) == pytest.approx(0.5)
    assert R.micro_f1(set(), set()) == 1.0


def test_think_similarity_is_bleu1_and_rouge_l_mix():
    from cxbench.metrics.nlg import rouge_l

    think, reference = "a small left pleural effusion", "there is a small left pleural effusion"
    # BLEU-1: all 5 hypothesis words match (precision 1), brevity penalty exp(1 - 7/5)
    bleu1 = math.exp(1 - 7 / 5)
    expected = 0.3 * bleu1 + 0.7 * rouge_l(think, reference)
    assert R.think_similarity(think, reference) == pytest.approx(expected, rel=1e-6)
    assert R.think_similarity(reference, reference) == pytest.approx(1.0)
    assert R.think_similarity("", reference) == 0.0


def test_grounding_reward_scores_iou_not_just_inside_the_image():
    # image 200 x 100 pixels; pleural effusion truth [0.5, 0.5, 0.9, 0.9] = [100, 50, 180, 90] px
    exact = pair("There is a pleural effusion [100, 50, 180, 90].", "pleural effusion")
    assert R.grounding_reward(exact, OPEN) == pytest.approx(1.0)
    half = pair("There is a pleural effusion [100, 50, 140, 90].", "pleural effusion")
    assert R.grounding_reward(half, OPEN) == pytest.approx(0.5)
    # inside the image but on the wrong place: DeepMedix-R1's check would pass, IoU gives 0
    elsewhere = pair("There is a pleural effusion [0, 0, 40, 20].", "pleural effusion")
    assert R.grounding_reward(elsewhere, OPEN) == 0.0
    # a box on a finding the study does not have
    absent = pair("There is edema [100, 50, 180, 90].", "edema")
    assert R.grounding_reward(absent, OPEN) == 0.0
    # two boxes: the mean IoU; no box at all: 0
    both = pair("Pleural effusion [100, 50, 180, 90]. Mass [20, 10, 60, 30].", "pleural effusion, mass")
    assert R.grounding_reward(both, OPEN) == pytest.approx(1.0)
    assert R.grounding_reward(GOOD_OPEN, OPEN) == 0.0


# ----------------------------------------------------------------------------------------
# Conditional gating
# ----------------------------------------------------------------------------------------


def test_gate_over_a_sequence_of_batches():
    gate = R.OutcomeGate(alpha=0.2)
    means = [0.5, 0.6, 0.4, 0.45, 0.7, 0.7]
    opened = [gate.update(m) for m in means]
    # EMA: 0.5, 0.52, 0.496, 0.4868, 0.52944, 0.563552
    assert opened == [True, True, False, False, True, True]
    assert gate.ema == pytest.approx(0.563552)
    assert [h[1] for h in gate.history] == pytest.approx([0.5, 0.52, 0.496, 0.4868, 0.52944, 0.563552])


def test_gate_decides_once_per_batch_and_gates_process_rewards():
    gate = R.OutcomeGate(alpha=0.2)
    functions, weights = R.reward_functions("grpo_closed", gate=gate)
    names = [f.__name__ for f in functions]
    assert names == ["format_reward", "closed_outcome_reward", "consistency_reward", "think_reward"]
    assert len(set(names)) == len(names)
    assert weights == [0.1, 0.9, 0.2, 0.2]

    class State:
        global_step = 0

    good = [[{"role": "assistant", "content": GOOD_CLOSED}]]
    wrong = [[{"role": "assistant", "content": closed_output(marks=("✅", "❌", "❌", "❌"), final="A) ✅")}]]
    target = [CLOSED.to_json()]
    batch1 = {"completions": good * 2, "target": target * 2, "trainer_state": State()}
    values = [f(**batch1) for f in functions]
    assert values[2] == [1.0, 1.0] and values[3] == pytest.approx([1.0, 1.0])
    assert len(gate.history) == 1  # two gated functions, one decision
    State.global_step = 1  # a worse batch (mean outcome 0.5 < EMA): process rewards withheld
    batch2 = {"completions": good + wrong, "target": target * 2, "trainer_state": State()}
    assert [f(**batch2) for f in functions][2:] == [[0.0, 0.0], [0.0, 0.0]]
    assert [h[2] for h in gate.history] == [True, False]
    State.global_step = 2  # back up: open again
    assert functions[2](**{**batch1, "trainer_state": State()}) == [1.0, 1.0]
    open_functions, open_weights = R.reward_functions("grpo_open", R.RewardWeights(grounding=0.3))
    assert [f.__name__ for f in open_functions][1] == "open_outcome_reward"
    assert open_functions[-1].__name__ == "grounding_reward" and open_weights[-1] == 0.3
    with pytest.raises(ValueError, match="grpo_closed and grpo_open"):
        R.reward_functions("sft")


def test_reward_target_round_trips_and_validates():
    assert R.RewardTarget.from_json(OPEN.to_json()) == OPEN
    with pytest.raises(ValueError, match="gold letter"):
        R.RewardTarget("closed", choices=CHOICES, letter="E")
    with pytest.raises(ValueError, match="unknown reward weight"):
        R.RewardWeights.from_mapping({"fromat": 1.0})


# ----------------------------------------------------------------------------------------
# Data builders
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stages():
    return {stage: build_stage(stage, "phantom", "train", dict(SMALL_PHANTOM)) for stage in
            ("text_warmup", "sft", "cold_start", "grpo_closed", "grpo_open")}  # fmt: skip


def test_builders_produce_text_the_format_reward_scores_one(stages):
    interleaved = [e for e in stages["cold_start"].examples if e.kind == "interleaved"]
    assert interleaved and {e.family for e in interleaved} == {"vqa_closed", "diagnosis"}
    for example in interleaved + stages["grpo_closed"].examples + stages["grpo_open"].examples:
        assert R.format_reward(example.completion) == 1.0, example.completion
    for example in stages["grpo_closed"].examples + stages["grpo_open"].examples:
        scores = R.score(example.completion, example.target)
        assert scores["outcome"] == 1.0 and scores["consistency"] == 1.0
        assert scores["think"] == pytest.approx(1.0)


def test_instruction_samples_for_every_family(stages):
    sft = stages["sft"].examples
    assert {e.family for e in sft} == set(FAMILIES)
    assert all(e.kind == "instruction" and e.images and e.completion for e in sft)
    boxes = [e for e in sft if e.family == "localization"]
    assert all(e.completion.startswith("[") and len(json.loads(e.completion)) == 4 for e in boxes)
    temporal = [e for e in sft if e.family == "temporal_comparison"]
    assert all(len(e.images) == 2 for e in temporal)
    assert {e.completion for e in temporal} <= {"improved", "stable", "worsened"}
    cold = stages["cold_start"].examples
    kinds = [e.kind for e in cold]
    assert kinds.count("interleaved") == kinds.count("instruction")  # half and half by default
    texts = stages["text_warmup"].examples
    assert texts and all(not e.images and e.completion for e in texts)


def test_rl_targets_are_verifiable(stages):
    closed = stages["grpo_closed"].examples
    assert closed and all(e.target.kind == "closed" and e.target.letter in "ABCD" for e in closed)
    assert all(len(e.target.choices) == 4 for e in closed)
    opened = stages["grpo_open"].examples
    assert opened and all(e.target.kind == "open" for e in opened)
    assert any(not e.target.labels for e in opened) and any(len(e.target.labels) > 1 for e in opened)
    assert all(set(e.target.labels) == {f["label"] for f in e.target.findings} for e in opened)
    again = build_stage("grpo_open", "phantom", "train", dict(SMALL_PHANTOM))
    assert [e.completion for e in again.examples] == [e.completion for e in opened]  # deterministic


def test_think_text_is_grounded_in_the_report():
    report = (
        "There is a small pleural effusion on the left. The heart size is normal. "
        "No pneumothorax. Previously noted smooth pleural thickening has resolved."
    )
    assert grounded_think("pleural effusion", True, report).endswith(
        "There is a small pleural effusion on the left."
    )
    assert grounded_think("pneumothorax", False, report).endswith("No pneumothorax.")
    # the report says nothing usable: a short template (a resolved finding is not a negation)
    assert (
        grounded_think("pleural thickening", False, report)
        == "Signs of pleural thickening: No pleural thickening is seen."
    )
    assert grounded_think("edema", False, None) == "Signs of edema: No edema is seen."


# ----------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------


def test_gpu_configs_parse_into_trl_configs(monkeypatch):
    import transformers.training_args as training_args
    from trl import GRPOConfig, SFTConfig

    # build the GPU configs as a GPU machine would (bf16 needs a GPU at construction time)
    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "8")
    curriculum = load_curriculum(CONFIG_DIR / "gpu" / "curriculum.yaml")
    stages = curriculum.resolved()
    assert [s.stage for s in stages] == ["text_warmup", "sft", "cold_start", "grpo_closed", "grpo_open"]
    assert stages[0].model == "Qwen/Qwen2.5-VL-7B-Instruct"
    for before, after in zip(stages, stages[1:], strict=False):
        assert after.model == before.output_dir  # each stage starts from the previous checkpoint
    for stage in stages:
        kwargs = dict(stage.trainer)
        if stage.is_grpo:
            from reference_training.config import accumulation_steps

            kwargs["gradient_accumulation_steps"] = accumulation_steps(stage, kwargs, 8)
        config = trl_config(stage, kwargs)
        assert config.bf16 and config.gradient_checkpointing
        if not stage.is_grpo:
            assert isinstance(config, SFTConfig)
            assert config.completion_only_loss is (stage.stage != "text_warmup" or None)
            continue
        assert isinstance(config, GRPOConfig)
        assert config.num_generations == 10
        assert config.learning_rate == 1e-6
        assert config.beta == 0.01
        assert (config.temperature, config.top_p) == (1.0, 0.99)
        assert config.max_completion_length == 4096
        assert config.reward_weights == [0.1, 0.9, 0.2, 0.2]
        assert config.gradient_accumulation_steps == 10
        # 8 GPUs x 8 completions x 10 micro-steps = 640 completions = 64 prompts x 10 per step
        assert config.per_device_train_batch_size * 8 * config.steps_per_generation == 64 * 10
        assert config.remove_unused_columns is False
        assert stage.freeze_vision_tower is False and stage.use_vllm == "auto"


def test_missing_gpu_vllm_deepspeed_fail_with_actionable_messages(monkeypatch, tmp_path, capsys):
    import importlib.util

    grpo = load_stage_config(CONFIG_DIR / "gpu" / "grpo_closed.yaml", {"model": "m"})
    with pytest.raises(EnvironmentProblem, match="no CUDA device.*reference_training.toy"):
        check_environment(grpo)
    cpu = load_stage_config(
        CONFIG_DIR / "gpu" / "grpo_closed.yaml",
        {"model": "m", "requires_gpu": False, "trainer.bf16": False, "use_vllm": True},
    )
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(EnvironmentProblem, match="pip install vllm"):
            check_environment(cpu)
    auto = load_stage_config(
        CONFIG_DIR / "gpu" / "grpo_closed.yaml", {"model": "m", "requires_gpu": False, "trainer.bf16": False}
    )
    kwargs = check_environment(auto)
    assert kwargs["use_vllm"] is False and not any(k.startswith("vllm_") for k in kwargs)
    if importlib.util.find_spec("deepspeed") is None:
        monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
        with pytest.raises(EnvironmentProblem, match="pip install deepspeed"):
            check_environment(auto)
        monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    from reference_training.run import main

    assert main(["--stage", "sft", "--config", str(CONFIG_DIR / "gpu" / "sft.yaml"), "--model", "m"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert (
        main(["--stage", "grpo_open", "--config", str(CONFIG_DIR / "gpu" / "sft.yaml"), "--model", "m"]) == 2
    )
    assert "describes stage 'sft'" in capsys.readouterr().err
    assert main(["--stage", "sft", "--config", str(CONFIG_DIR / "gpu" / "sft.yaml")]) == 2
    assert "--model" in capsys.readouterr().err


def test_bad_configs_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: sft\nmodel: m\noutput_dir: o\nrewards: {format: 1}\n")
    with pytest.raises(ConfigError, match="bad.yaml: rewards is only used by the GRPO stages"):
        load_stage_config(bad)
    bad.write_text("stage: grpo_open\nmodel: m\noutput_dir: o\nrewards: {fromat: 1}\n")
    with pytest.raises(ConfigError, match="unknown reward weight"):
        load_stage_config(bad)
    bad.write_text("stage: grpo_open\nmodel: m\noutput_dir: o\ntrainer: {num_generationz: 4}\n")
    with pytest.raises(ConfigError, match="num_generationz"):
        trl_config(load_stage_config(bad), {"num_generationz": 4, "use_cpu": True})
    bad.write_text(
        "stage: grpo_open\nmodel: m\noutput_dir: o\nprompts_per_step: 3\ntrainer: {num_generations: 4}\n"
    )
    from reference_training.config import accumulation_steps

    with pytest.raises(ConfigError, match="not a multiple"):
        accumulation_steps(
            load_stage_config(bad), {"num_generations": 4, "per_device_train_batch_size": 8}, 1
        )
    order = tmp_path / "curriculum.yaml"
    (tmp_path / "a.yaml").write_text("stage: grpo_open\nmodel: previous\noutput_dir: a\n")
    (tmp_path / "b.yaml").write_text("stage: sft\nmodel: previous\noutput_dir: b\n")
    order.write_text("base_model: m\noutput_root: out\nstages: [a.yaml, b.yaml]\n")
    with pytest.raises(ConfigError, match="curriculum order"):
        load_curriculum(order)


def test_accelerate_and_deepspeed_configs_parse():
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    path = CONFIG_DIR / "accelerate" / "zero3.yaml"
    config = load_config_from_file(str(path))
    assert config.distributed_type == "DEEPSPEED" and config.num_processes == 8
    raw = yaml.safe_load(path.read_text())
    ds_path = CONFIG_DIR.parent.parent / raw["deepspeed_config"]["deepspeed_config_file"]
    ds = json.loads(ds_path.read_text())
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert ds["bf16"]["enabled"] == "auto"


def test_builders_read_a_real_data_set_layout(tmp_path):
    """On a data-set adapter other than phantom (MIMIC-CXR layout fixture): families the adapter
    does not serve are left out, samples whose image is missing are skipped and counted, the
    yes/no and diagnosis samples still give interleaved and RL examples, and a stage without
    usable data stops with a message saying what it needs."""
    from fixtures_mimic_chexpert_iu import build_mimic, iu_reports

    from reference_training.config import DataConfig, StageConfig
    from reference_training.train import stage_examples

    fixture = build_mimic(tmp_path / "mimic", iu_reports())
    params = {"root": str(fixture["root"])}
    sft = build_stage("sft", "mimic_cxr", "test", params)
    assert {e.family for e in sft.examples} >= {"vqa_closed", "report_generation"}
    assert sft.skipped.get("vqa_closed: image file missing", 0) >= 1
    assert all(Path(p).exists() for e in sft.examples for p in e.images)
    cold = build_stage("cold_start", "mimic_cxr", "test", params)
    interleaved = [e for e in cold.examples if "<think>" in e.completion]
    assert interleaved and all(R.format_reward(e.completion) == 1.0 for e in interleaved)
    config = StageConfig(
        stage="grpo_closed",
        model="unused",
        output_dir=str(tmp_path / "out"),
        data=DataConfig(dataset="mimic_cxr", split="test", params=params),
    )
    with pytest.raises(ValueError, match=r"grpo_closed: data set 'mimic_cxr'.*multiple-choice"):
        stage_examples(config)


@pytest.mark.parametrize("dataset", ["phantom", "mimic_cxr"])
def test_yes_no_questions_as_closed_rl_prompts(dataset, stages, tmp_path):
    """``closed_yes_no``: yes/no questions become closed RL prompts (options yes / no); the
    builders' answers get every reward, a flipped verdict loses consistency, a flipped final
    answer loses the outcome. Off by default, so the multiple-choice stage is unchanged."""
    if dataset == "phantom":
        params, split = dict(SMALL_PHANTOM), "train"
    else:
        from fixtures_mimic_chexpert_iu import build_mimic, iu_reports

        params, split = {"root": str(build_mimic(tmp_path / "mimic", iu_reports())["root"])}, "test"
    built = build_stage("grpo_closed", dataset, split, params, closed_yes_no=True)
    yes_no = [e for e in built.examples if e.target.asked]
    assert yes_no and {e.target.letter for e in yes_no} == {"A", "B"}
    for example in yes_no:
        assert example.target.choices == ["yes", "no"]
        assert R.RewardTarget.from_json(example.target.to_json()) == example.target
        scores = R.score(example.completion, example.target)
        assert (scores["format"], scores["outcome"], scores["consistency"]) == (1.0, 1.0, 1.0)
        flipped = example.completion.replace("✅", "\0").replace("❌", "✅").replace("\0", "❌")
        assert R.consistency_reward(flipped, example.target) == 0.0
        gold, other = ("yes", "no") if example.target.letter == "A" else ("no", "yes")
        wrong = example.completion.replace(f"<answer>{gold}</answer>", f"<answer>{other}</answer>")
        assert R.outcome_reward(wrong, example.target) == 0.0
    if dataset == "phantom":
        default = stages["grpo_closed"].examples
        assert default and not any(e.target.asked for e in default)
        assert len(built.examples) > len(default)
