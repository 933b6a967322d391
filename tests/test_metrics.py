"""Each metric on small hand-computed cases."""

import math

import numpy as np
import pytest

from cxbench import metrics
from cxbench.metrics.grounding import box_iou
from cxbench.metrics.nlg import bleu_stats, corpus_bleu, rouge_l
from cxbench.stats import bootstrap_ci


def test_accuracy_counts_unparsed_as_wrong():
    assert metrics.compute("accuracy", ["yes", "NO", None, "A"], ["yes", "no", "no", "B"]) == 0.5


def test_macro_f1_hand_computed():
    # gold: yes yes no no ; pred: yes no no None
    # yes: tp1 fp0 fn1 -> 2/3 ; no: tp1 fp1 fn1 -> 1/2 ; macro = 7/12
    value = metrics.compute(
        "macro_f1", ["yes", "no", "no", None], ["yes", "yes", "no", "no"], labels=["yes", "no"]
    )
    assert value == pytest.approx(7 / 12)


def test_macro_f1_rejects_target_outside_labels():
    with pytest.raises(ValueError, match="not one of the task's labels"):
        metrics.compute("macro_f1", ["yes"], ["maybe"], labels=["yes", "no"])


def test_mean_recall_at_1_averages_over_diseases_not_samples():
    # nodule: 2 samples, 1 hit -> 0.5 ; mass: 1 sample, hit -> 1.0 ; mean = 0.75 (sample mean would be 2/3)
    preds = [["nodule", "mass"], ["mass", "nodule"], ["mass"]]
    golds = ["nodule", "nodule", "mass"]
    assert metrics.compute("mean_recall_at_1", preds, golds, labels=["nodule", "mass"]) == pytest.approx(0.75)
    assert metrics.compute("mean_recall_at_1", [None, [], ["mass"]], golds, labels=["nodule", "mass"]) == 0.5


def test_exact_match_and_token_f1():
    assert (
        metrics.compute("exact_match", ["The Left lower lung.", "left"], ["left lower lung", "right"]) == 0.5
    )
    # pred "left lung" vs ref "left lower lung": common 2, p=1, r=2/3 -> f1 = 0.8
    assert metrics.compute("token_f1", ["left lung"], ["left lower lung"]) == pytest.approx(0.8)
    assert metrics.compute("token_f1", [None], ["left"]) == 0.0


def test_box_iou_hand_computed():
    assert box_iou([0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]) == pytest.approx(
        0.0625 / (0.25 + 0.25 - 0.0625)
    )
    assert box_iou([0, 0, 0.1, 0.1], [0.5, 0.5, 0.6, 0.6]) == 0.0
    # best match over several target boxes; unparsed box scores 0
    assert (
        metrics.compute(
            "mean_iou", [[0, 0, 0.5, 0.5], None], [[[0.5, 0.5, 1, 1], [0, 0, 0.5, 0.5]], [[0, 0, 1, 1]]]
        )
        == 0.5
    )
    assert (
        metrics.compute(
            "acc_iou50", [[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.4]], [[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]]
        )
        == 1.0
    )


def test_bleu_hand_computed():
    # hyp "a b c d" vs ref "a b c e": p1=3/4 p2=2/3 p3=1/2 p4=0/1, equal lengths -> BP 1
    stats = bleu_stats("a b c d", "a b c e")
    assert stats == [3, 2, 1, 0, 4, 3, 2, 1, 4, 4]
    m = np.array([stats], dtype=float)
    assert corpus_bleu(m, 1) == pytest.approx(0.75)
    assert corpus_bleu(m, 2) == pytest.approx(math.sqrt(0.75 * 2 / 3))
    assert corpus_bleu(m, 4) < 1e-3  # zero 4-gram matches: only the tiny smoothing constant remains
    # brevity penalty: hyp 2 tokens vs ref 4 -> exp(1 - 4/2)
    assert metrics.compute("bleu1", ["a b"], ["a b c d"]) == pytest.approx(math.exp(-1), rel=1e-6)


def test_rouge_l_hand_computed():
    # LCS("a b c d", "a c d e") = 3 ; p = r = 3/4 -> F = 0.75 for any beta
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    assert rouge_l("", "a") == 0.0


def test_registry_lists_and_rejects():
    assert {"accuracy", "bleu4", "mean_iou", "mean_recall_at_1"} <= set(metrics.names())
    with pytest.raises(KeyError, match="unknown metric"):
        metrics.get("nope")


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    m = np.array([[v] for v in [0, 1] * 50], dtype=float)
    low, high = bootstrap_ci(m, metrics.get("accuracy").reduce, n_boot=500, seed=3)
    assert (low, high) == bootstrap_ci(m, metrics.get("accuracy").reduce, n_boot=500, seed=3)
    assert low < 0.5 < high and high - low < 0.3
    # corpus metrics resample rows of statistics
    rows = np.array([bleu_stats("a b c", "a b c"), bleu_stats("x y z", "a b c")] * 20, dtype=float)
    low, high = bootstrap_ci(rows, metrics.get("bleu1").reduce, n_boot=200, seed=0)
    assert 0.2 < low <= 0.5 <= high < 0.8


def test_importing_cxbench_and_its_metric_modules_loads_no_model_and_starts_no_java():
    import subprocess
    import sys

    code = (
        "import sys, cxbench, cxbench.cli, cxbench.metrics as m\n"
        "import cxbench.metrics.nlg, cxbench.metrics.bertscore, cxbench.metrics.radgraph\n"
        "import cxbench.metrics.chexbert, cxbench.metrics.clinical, cxbench.metrics.chexpert_labeler\n"
        "[m.get(n) for n in m.names() if n != 'spice']\n"
        "names = ('torch', 'transformers', 'bert_score', 'radgraph', 'f1chexbert')\n"
        "heavy = [k for k in names if k in sys.modules]\n"
        "import os\n"
        "def ppid(p):\n"
        "    try:\n"
        "        return open(f'/proc/{p}/stat').read().rsplit(') ', 1)[1].split()[1]\n"
        "    except OSError:\n"
        "        return None\n"
        "kids = [p for p in os.listdir('/proc') if p.isdigit() and ppid(p) == str(os.getpid())]\n"
        "print(heavy, kids)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"
