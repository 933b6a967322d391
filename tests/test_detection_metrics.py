"""``map50``: hand-computed cases and a cross-check against an independent reference.

The reference below is written separately from ``cxbench.metrics.detection``: per class it
pools every detection of every image, sorts them by score (the random cases use distinct
scores, so tie handling plays no part), matches each one to the best still-free ground-truth
box of its own image through an IoU matrix, and integrates the precision-recall curve with
PASCAL VOC 2010+ *all-point interpolation* (the ``mrec``/``mpre`` sentinel formulation).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxbench import metrics
from cxbench.metrics.base import MetricContext, Output
from cxbench.metrics.detection import (
    MAP50,
    average_precision,
    detections_of,
    map_reduce,
    parse_detections,
    sample_rows,
)
from cxbench.schema import Sample

A = [0.1, 0.1, 0.3, 0.3]
B = [0.6, 0.6, 0.9, 0.8]
FAR = [0.85, 0.0, 0.95, 0.05]


def _out(parsed, finding="x"):
    return Output("", parsed, Sample(id="s", images=[], question="", target=None, query={"finding": finding}))


def _map(predictions, targets, findings=None, **options):
    findings = findings or ["x"] * len(targets)
    outputs = [_out(p, f) for p, f in zip(predictions, findings, strict=True)]
    return metrics.corpus_matrix(MAP50, outputs, targets, MetricContext(options=options))[1]


# ---------------------------------------------------------------------------------------------
# hand-computed cases


def test_perfect_detections_score_one():
    assert _map([[A, B], [B]], [[A, B], [B]]) == 1.0
    assert _map([A], [[A]]) == 1.0  # a single parsed box (the localization parser's answer)


def test_false_positive_ranked_first_halves_ap():
    # scores by answer order: FAR 1.0 (FP), A 0.5 (TP) -> points (R 0, P 0), (R 1, P 0.5) -> AP 0.5
    assert _map([[FAR, A]], [[A]]) == pytest.approx(0.5)
    # the FP ranked after the TP costs nothing: (1, 1), (1, 0.5) -> AP 1
    assert _map([[A, FAR]], [[A]]) == pytest.approx(1.0)


def test_false_negative_caps_recall():
    # one of two target boxes found: recall 0.5 at precision 1 -> AP 0.5
    assert _map([[A]], [[A, B]]) == pytest.approx(0.5)


def test_duplicates_are_false_positives():
    # the duplicate of a matched box is an FP; after the TP in rank order it costs nothing
    assert _map([[A, A]], [[A]]) == pytest.approx(1.0)
    # with equal explicit scores the two are one operating point: R 1, P 0.5 -> AP 0.5
    assert _map([[[*A, 0.9], [*A, 0.9]]], [[A]]) == pytest.approx(0.5)


def test_ties_across_images_are_one_operating_point():
    # two images, bare boxes: both first boxes score 1.0; one hit, one miss, 2 targets
    # -> a single point R 0.5, P 0.5 -> AP 0.25 whatever the order of the samples
    assert _map([[A], [FAR]], [[A], [B]]) == pytest.approx(0.25)
    assert _map([[FAR], [A]], [[B], [A]]) == pytest.approx(0.25)


def test_multiple_classes_are_averaged():
    # class p: AP 1; class q: FP then TP -> 0.5; mean 0.75
    value = _map([[A], [FAR, B]], [[A], [B]], findings=["p", "q"])
    assert value == pytest.approx(0.75)
    matrix = sample_rows([_out([A], "p"), _out([FAR, B], "q")], [[A], [B]], labels=("q", "p"))
    assert MAP50.breakdown(matrix) == {"0": pytest.approx(0.5), "1": pytest.approx(1.0)}


def test_empty_predictions_score_zero_and_classes_without_targets_are_ignored():
    assert _map([None, []], [[A], [B]]) == 0.0
    # class "q" has no target box anywhere: its FP does not enter the mean
    assert _map([[A], [B]], [[A], []], findings=["p", "q"]) == pytest.approx(1.0)
    assert math.isnan(_map([[A]], [[]]))


def test_scores_order_detections_and_max_detections_cut():
    # explicit scores override answer order: the TP has the higher score -> AP 1
    assert _map([[[*FAR, 0.2], [*A, 0.7]]], [[A]]) == pytest.approx(1.0)
    # only the best-scored box counts with max_detections 1: FAR (0.9) -> AP 0
    assert _map([[[*FAR, 0.9], [*A, 0.1]]], [[A]], max_detections=1) == 0.0


def test_iou_threshold_is_inclusive_at_half():
    target = [0.0, 0.0, 1.0, 0.5]
    half = [0.0, 0.0, 1.0, 0.25]  # IoU exactly 0.5
    assert _map([[half]], [[target]]) == 1.0
    assert _map([[[0.0, 0.0, 1.0, 0.24]]], [[target]]) == 0.0


def test_detections_of_accepts_the_parsed_forms():
    assert detections_of(None) == []
    assert detections_of(A) == [(A, 1.0)]
    assert detections_of([A, B]) == [(A, 1.0), (B, 0.5)]
    assert detections_of([{"box": A, "score": 0.3}, [*B, 0.8]]) == [(A, 0.3), (B, 0.8)]
    assert detections_of([[0.5, 0.5, 0.4, 0.6], ["a"], [math.nan, 0, 1, 1]]) == []


def test_compute_by_name_with_labelled_references():
    refs = [{"label": "p", "boxes": [A]}, {"label": "q", "boxes": [B]}]
    assert metrics.compute("map50", [[A], [FAR]], refs) == pytest.approx(0.5)
    assert MAP50.info()["direction"] == "higher" and "map50" in metrics.names()


def test_reduce_on_a_subset_equals_the_subset_corpus():
    rng = np.random.default_rng(1)
    preds, refs, findings = _random_corpus(rng, 30)
    outputs = [_out(p, f) for p, f in zip(preds, findings, strict=True)]
    matrix = sample_rows(outputs, refs)
    pick = rng.integers(0, 30, size=30)
    subset = sample_rows([outputs[i] for i in pick], [refs[i] for i in pick])
    assert map_reduce(matrix[pick]) == pytest.approx(map_reduce(subset))


# ---------------------------------------------------------------------------------------------
# independent reference


def _iou_matrix(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    x1 = np.maximum(dets[:, None, 0], gts[None, :, 0])
    y1 = np.maximum(dets[:, None, 1], gts[None, :, 1])
    x2 = np.minimum(dets[:, None, 2], gts[None, :, 2])
    y2 = np.minimum(dets[:, None, 3], gts[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_d = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    area_g = (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1])
    return inter / (area_d[:, None] + area_g[None, :] - inter)


def _voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def _reference_map(preds, refs, findings, thr=0.5) -> float:
    aps = []
    for cls in sorted(set(findings)):
        images = [i for i, f in enumerate(findings) if f == cls]
        n_gt = sum(len(refs[i]) for i in images)
        if n_gt == 0:
            continue
        pooled = [(box[4], i, np.array(box[:4])) for i in images for box in preds[i]]
        pooled.sort(key=lambda d: -d[0])
        taken = {i: np.zeros(len(refs[i]), bool) for i in images}
        tp = np.zeros(len(pooled))
        for n, (_, i, box) in enumerate(pooled):
            if not refs[i]:
                continue
            ious = _iou_matrix(box[None, :], np.array(refs[i]))[0]
            ious[taken[i]] = -1.0
            j = int(np.argmax(ious))
            if ious[j] >= thr:
                taken[i][j] = True
                tp[n] = 1
        if not pooled:
            aps.append(0.0)
            continue
        ctp = np.cumsum(tp)
        rec = ctp / n_gt
        prec = ctp / np.arange(1, len(pooled) + 1)
        aps.append(_voc_ap(rec, prec))
    return float(np.mean(aps))


def _jitter(rng, box, scale):
    x1, y1, x2, y2 = (np.array(box) + rng.normal(0, scale, 4)).tolist()
    return [min(x1, x2 - 0.01), min(y1, y2 - 0.01), max(x2, x1 + 0.01), max(y2, y1 + 0.01)]


def _random_corpus(rng, n):
    preds, refs, findings = [], [], []
    for _ in range(n):
        gts = []
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, 0.7, 2)
            w, h = rng.uniform(0.05, 0.3, 2)
            gts.append([x, y, x + w, y + h])
        boxes = [_jitter(rng, g, 0.03) for g in gts if rng.random() < 0.8]
        boxes += [_jitter(rng, g, 0.01) for g in gts if rng.random() < 0.2]  # duplicates
        for _ in range(int(rng.integers(0, 3))):  # false positives elsewhere
            x, y = rng.uniform(0, 0.8, 2)
            boxes.append([x, y, x + 0.1, y + 0.1])
        preds.append([[*b, float(rng.random())] for b in boxes])  # distinct random scores
        refs.append(gts)
        findings.append(str(rng.choice(["p", "q", "r"])))
    return preds, refs, findings


@pytest.mark.parametrize("seed", range(25))
def test_map50_matches_independent_voc_reference(seed):
    rng = np.random.default_rng(seed)
    preds, refs, findings = _random_corpus(rng, int(rng.integers(5, 40)))
    expected = _reference_map(preds, refs, findings)
    assert _map(preds, refs, findings, max_detections=50) == pytest.approx(expected, abs=1e-12)


def test_average_precision_matches_reference_on_distinct_scores():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    hits = np.array([1, 0, 1, 0, 1])
    ctp = np.cumsum(hits)
    expected = _voc_ap(ctp / 4, ctp / np.arange(1, 6))  # 4 targets, one never found
    assert average_precision(scores, hits, 4) == pytest.approx(expected)
    assert average_precision(scores, hits, 4) == pytest.approx(0.25 * 1 + 0.25 * 2 / 3 + 0.25 * 0.6)


# ---------------------------------------------------------------------------------------------
# answers with several boxes


def test_parse_detections_reads_every_box_and_optional_scores():
    size = (200, 100)
    assert parse_detections("[20, 10, 60, 50] and [100, 50, 180, 90]", size) == [
        [0.1, 0.1, 0.3, 0.5],
        [0.5, 0.5, 0.9, 0.9],
    ]
    text = '[{"bbox_2d": [20, 10, 60, 50], "score": 0.4}, {"bbox_2d": [0.5, 0.5, 0.9, 0.9], "score": 0.9}]'
    assert parse_detections(text, size) == [[0.1, 0.1, 0.3, 0.5, 0.4], [0.5, 0.5, 0.9, 0.9, 0.9]]
    # an object without a score: all boxes unscored, ranked by answer order
    text = '{"bbox_2d": [20, 10, 60, 50], "score": 0.4} {"bbox_2d": [100, 50, 180, 90]}'
    assert parse_detections(text, size) == [[0.1, 0.1, 0.3, 0.5], [0.5, 0.5, 0.9, 0.9]]
    assert parse_detections("no opacity is visible", size) is None
