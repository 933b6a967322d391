"""Clinical-efficacy (CheXpert-label F1) metrics on small hand-computed report pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxbench.metrics import corpus_matrix
from cxbench.metrics.base import MetricContext
from cxbench.metrics.chexpert_labeler import OBSERVATIONS
from cxbench.metrics.clinical import (
    CLINICAL_METRICS,
    chexpert_counts,
    per_observation_f1,
    report_text,
)
from cxbench.stats import bootstrap_ci

NAMES = [
    "chexpert_micro_f1_14",
    "chexpert_macro_f1_14",
    "chexpert_micro_f1_5",
    "chexpert_macro_f1_5",
    "chexpert_micro_f1_14_upos",
    "chexpert_macro_f1_14_upos",
    "chexpert_micro_f1_5_upos",
    "chexpert_macro_f1_5_upos",
    "chexpert_micro_precision_14",
    "chexpert_micro_recall_14",
]

# Labels (positive-only / uncertain-as-positive):
# 1. pred: Cardiomegaly 1, Pleural Effusion 1 (Pneumothorax 0)
#    ref:  Cardiomegaly 1, Atelectasis 1 (Pleural Effusion 0)
# 2. pred: Pneumonia -1            ref: Pneumonia 1
# 3. pred: No Finding 1            ref: No Finding 1
# 4. pred: None (empty report)     ref: Support Devices 1, Pleural Effusion -1
PREDICTIONS = [
    "Mild cardiomegaly. Small left pleural effusion. No pneumothorax.",
    "Possible right lower lobe pneumonia.",
    "The lungs are clear. No acute cardiopulmonary process.",
    None,
]
REFERENCES = [
    "Cardiomegaly. No pleural effusion. Left basilar atelectasis.",
    "Right lower lobe pneumonia.",
    "No acute cardiopulmonary abnormality.",
    "Endotracheal tube in place. Possible small left effusion.",
]
# Positive-only counts: Cardiomegaly tp1; Pleural Effusion fp1; Atelectasis fn1; Pneumonia fn1;
# No Finding tp1; Support Devices fn1 -> TP 2, FP 1, FN 3.
#   micro-14 = 4 / (4 + 1 + 3) = 0.5; macro-14 = mean(1, 0, 0, 0, 1, 0) = 1/3
#   5 common: Cardiomegaly tp1, Pleural Effusion fp1, Atelectasis fn1 -> micro-5 = 2/4, macro-5 = 1/3
#   precision = 2/3, recall = 2/5
# Uncertain-as-positive: Pneumonia becomes tp1; Pleural Effusion fp1 + fn1 (report 4)
#   -> TP 3, FP 1, FN 3: micro-14 = 6/10; macro-14 = mean(1, 0, 0, 1, 1, 0) = 1/2
#   5 common: Cardiomegaly tp1, Pleural Effusion fp1 fn1, Atelectasis fn1 -> micro-5 = 2/5, macro-5 = 1/3
EXPECTED = {
    "chexpert_micro_f1_14": 0.5,
    "chexpert_macro_f1_14": 1 / 3,
    "chexpert_micro_f1_5": 0.5,
    "chexpert_macro_f1_5": 1 / 3,
    "chexpert_micro_f1_14_upos": 0.6,
    "chexpert_macro_f1_14_upos": 0.5,
    "chexpert_micro_f1_5_upos": 0.4,
    "chexpert_macro_f1_5_upos": 1 / 3,
    "chexpert_micro_precision_14": 2 / 3,
    "chexpert_micro_recall_14": 0.4,
}


def score(name: str, predictions, references) -> float:
    return corpus_matrix(CLINICAL_METRICS[name], predictions, references, MetricContext())[1]


def test_all_metrics_exported_with_metadata() -> None:
    assert sorted(CLINICAL_METRICS) == sorted(NAMES)
    for name, metric in CLINICAL_METRICS.items():
        assert metric.name == name
        assert "Irvin" in metric.citation
        assert metric.model == "rule-based CheXpert-14 labeler (cxbench)"
        assert metric.range == (0.0, 1.0) and metric.direction == "higher"
        assert metric.description
        assert metric.averaging == ("macro" if "macro" in name else "micro")


@pytest.mark.parametrize("name", NAMES)
def test_hand_computed(name: str) -> None:
    assert score(name, PREDICTIONS, REFERENCES) == pytest.approx(EXPECTED[name])


@pytest.mark.parametrize("name", NAMES)
def test_perfect_prediction_scores_one(name: str) -> None:
    assert score(name, REFERENCES, REFERENCES) == pytest.approx(1.0)


def test_none_predictions_score_zero() -> None:
    nones = [None] * len(REFERENCES)
    for name in NAMES:
        assert score(name, nones, REFERENCES) == 0.0, name
    # a None prediction is the empty report: no positive, hence no false positive either
    row = chexpert_counts(None, "Large right pleural effusion.")
    effusion = OBSERVATIONS.index("Pleural Effusion")
    assert len(row) == 42
    assert row[3 * effusion : 3 * effusion + 3] == [0.0, 0.0, 1.0]
    assert sum(row) == 1.0


def test_stats_rows_and_sample_values() -> None:
    metric = CLINICAL_METRICS["chexpert_micro_f1_14"]
    matrix, _ = corpus_matrix(metric, PREDICTIONS, REFERENCES, MetricContext())
    assert matrix.shape == (4, 42)
    # report 1: Cardiomegaly tp, Pleural Effusion fp, Atelectasis fn -> F1 = 2 / 4
    assert metric.sample_value(matrix[0]) == pytest.approx(0.5)
    assert metric.sample_value(matrix[2]) == pytest.approx(1.0)
    assert metric.sample_value(np.zeros(42)) is None
    assert metric.reduce(np.zeros((0, 42))) == 0.0


def test_macro_leaves_out_observations_without_positives() -> None:
    # only Pneumothorax has positives (tp 1): macro over the 14 is 1.0, not 1/14
    preds = ["Small right pneumothorax. No effusion."]
    refs = ["Right pneumothorax. No effusion."]
    assert score("chexpert_macro_f1_14", preds, refs) == 1.0
    # no positive in any of the 5 common observations: macro-5 and micro-5 are 0 by definition
    assert score("chexpert_macro_f1_5", preds, refs) == 0.0
    assert score("chexpert_micro_f1_5", preds, refs) == 0.0


def test_per_observation_f1() -> None:
    matrix, _ = corpus_matrix(
        CLINICAL_METRICS["chexpert_micro_f1_14"], PREDICTIONS, REFERENCES, MetricContext()
    )
    f1 = per_observation_f1(matrix)
    assert list(f1) == list(OBSERVATIONS)
    assert f1["Cardiomegaly"] == 1.0 and f1["No Finding"] == 1.0
    assert f1["Pleural Effusion"] == 0.0 and f1["Support Devices"] == 0.0
    assert math.isnan(f1["Edema"])


def test_bootstrap_ci_brackets_the_score() -> None:
    metric = CLINICAL_METRICS["chexpert_micro_f1_14_upos"]
    matrix, value = corpus_matrix(metric, PREDICTIONS * 5, REFERENCES * 5, MetricContext())
    low, high = bootstrap_ci(matrix, metric.reduce, n_boot=200, seed=0)
    assert 0.0 <= low <= value <= high <= 1.0


def test_report_text_accepts_dicts_and_lists() -> None:
    report = {"findings": "Mild cardiomegaly.", "impression": "Small effusion."}
    assert "cardiomegaly" in report_text(report) and "effusion" in report_text(report)
    assert report_text(["Mild cardiomegaly.", "other"]) == "Mild cardiomegaly."
    assert report_text(None) == "" and report_text([]) == ""
    assert score("chexpert_micro_f1_14", [report], ["Cardiomegaly. Small left pleural effusion."]) == 1.0
