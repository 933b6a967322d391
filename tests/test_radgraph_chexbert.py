"""RadGraph F1 and CheXbert F1: set/label arithmetic on hand-made cases, the metric path on
pre-computed annotations, fast clear failures without weights, and (in a subprocess) the real
model path on tiny randomly initialised stand-in models built here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cxbench import metrics
from cxbench.metrics import chexbert as cb
from cxbench.metrics import radgraph as rg
from cxbench.metrics.base import MetricContext

OP = "Observation::definitely present"
OA = "Observation::definitely absent"
AP = "Anatomy::definitely present"


def annotation(*entities: tuple) -> dict:
    """RadGraph output for one report: entities (tokens, label[, [[relation, target id], ...]])."""
    out = {}
    for i, entity in enumerate(entities, start=1):
        tokens, label = entity[0], entity[1]
        relations = [list(r) for r in (entity[2] if len(entity) > 2 else [])]
        out[str(i)] = {
            "tokens": tokens,
            "label": label,
            "start_ix": i,
            "end_ix": i + tokens.count(" "),
            "relations": relations,
        }
    return {"text": " ".join(e[0] for e in entities), "entities": out, "data_source": None}


REF_RELATIONS = annotation(
    ("effusion", OP, [("located_at", "2")]),
    ("pleural", AP),
    ("edema", OP, [("located_at", "4")]),
    ("lung", AP),
)
# (hyp, ref, (simple, partial, complete)) worked out by hand in the comments
CASES = {
    # identical
    "identical": (REF_RELATIONS, REF_RELATIONS, (1.0, 1.0, 1.0)),
    # nothing in common
    "disjoint": (annotation(("cardiomegaly", OP)), annotation(("pneumothorax", OP)), (0.0, 0.0, 0.0)),
    # hyp {effusion OP, edema OP, opacity OP} vs ref {effusion OP, edema OA}: 1 common, P 1/3, R 1/2
    "overlap": (
        annotation(("effusion", OP), ("edema", OP), ("opacity", OP)),
        annotation(("effusion", OP), ("edema", OA)),
        (0.4, 0.4, 0.4),
    ),
    # same entities; effusion's relation has another type, edema lost its relation.
    # simple: 4/4. partial: (effusion, OP, True) still matches, (edema, OP) vs (edema, OP, True)
    # does not: 3/4 -> 0.75. complete: only pleural and lung match: 2/4 -> 0.5
    "relations": (
        annotation(("effusion", OP, [("modify", "2")]), ("pleural", AP), ("edema", OP), ("lung", AP)),
        REF_RELATIONS,
        (1.0, 0.75, 0.5),
    ),
    # case: entities without relations compare case-sensitively, relation items lower-cased.
    # simple/partial: only (pleural, AP) is common, 1/3 each side -> 1/3.
    # complete: ref {effusion-located_at-pleural, effusion-located_at-left, pleural, left},
    # hyp {effusion-located_at-pleural, Pleural, pleural}: 2 common, P 2/3, R 1/2 -> 4/7
    "case": (
        annotation(("effusion", OP, [("located_at", "2")]), ("Pleural", AP), ("pleural", AP)),
        annotation(
            ("Effusion", OP, [("located_at", "2"), ("located_at", "3")]), ("pleural", AP), ("left", AP)
        ),
        (1 / 3, 1 / 3, 4 / 7),
    ),
    # the same (tokens, label) twice is one set item
    "duplicates": (annotation(("edema", OP), ("edema", OP)), annotation(("edema", OP)), (1.0, 1.0, 1.0)),
    # an annotation without entities scores 0
    "empty": (annotation(), annotation(), (0.0, 0.0, 0.0)),
}


# ------------------------------------------------------------------------ RadGraph arithmetic


@pytest.mark.parametrize("case", sorted(CASES))
def test_radgraph_f1_hand_computed(case):
    hyp, ref, expected = CASES[case]
    for variant, value in zip(rg.VARIANTS, expected, strict=True):
        assert rg.radgraph_f1(hyp, ref, variant) == pytest.approx(value), variant
    assert rg.radgraph_f1_all(hyp, ref) == pytest.approx(expected)


def test_radgraph_entity_sets():
    assert rg.radgraph_entity_sets(REF_RELATIONS, "simple") == {
        ("effusion", OP),
        ("pleural", AP),
        ("edema", OP),
        ("lung", AP),
    }
    assert rg.radgraph_entity_sets(REF_RELATIONS, "partial") == {
        ("effusion", OP, True),
        ("pleural", AP),
        ("edema", OP, True),
        ("lung", AP),
    }
    assert rg.radgraph_entity_sets(REF_RELATIONS, "complete") == {
        ("effusion", OP, "located_at", "pleural"),
        ("pleural", AP),
        ("edema", OP, "located_at", "lung"),
        ("lung", AP),
    }
    with pytest.raises(ValueError, match="unknown RadGraph variant"):
        rg.radgraph_f1(REF_RELATIONS, REF_RELATIONS, "strict")


def test_radgraph_arithmetic_matches_package_rewards():
    pytest.importorskip("radgraph")
    from radgraph.rewards import compute_reward

    for hyp, ref, _ in CASES.values():
        for a, b in ((hyp, ref), (ref, hyp)):
            assert rg.radgraph_f1_all(a, b) == pytest.approx(tuple(compute_reward(a, b, "all")))


def _no_model(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model must not be needed")

    monkeypatch.setattr(rg, "resolve_radgraph_model", fail)
    monkeypatch.setattr(cb, "resolve_chexbert_checkpoint", fail)


def test_radgraph_metrics_on_annotation_file(tmp_path, monkeypatch):
    _no_model(monkeypatch)
    names = sorted(CASES)
    path = tmp_path / "annotations.jsonl"
    rows = [{"index": i, "hyp": CASES[n][0], "ref": CASES[n][1]} for i, n in enumerate(names)]
    path.write_text("".join(json.dumps(row) + "\n" for row in reversed(rows)))  # order from "index"
    ctx = MetricContext(options={"annotations": str(path)})
    texts = ["ignored"] * len(names)
    for k, name in enumerate(["radgraph_f1_simple", "radgraph_f1_partial", "radgraph_f1_complete"]):
        metric = rg.RADGRAPH_METRICS[name]
        matrix, value = metrics.corpus_matrix(metric, texts, texts, ctx)
        expected = [CASES[n][2][k] for n in names]
        assert matrix.shape == (len(names), 3)
        assert matrix[:, k] == pytest.approx(expected)
        assert value == pytest.approx(np.mean(expected))
        assert metric.sample_value(matrix[3]) == pytest.approx(expected[3])
        assert metric.reduce(matrix[:2]) == pytest.approx(np.mean(expected[:2]))
    # the same rows in memory, placed by integer "id"
    rows = [{"id": i, "hyp": CASES[n][0], "ref": CASES[n][1]} for i, n in enumerate(names)]
    matrix, _ = metrics.corpus_matrix(
        rg.RADGRAPH_F1_COMPLETE, texts, texts, MetricContext(options={"annotations": rows})
    )
    assert matrix[:, 2] == pytest.approx([CASES[n][2][2] for n in names])
    with pytest.raises(ValueError, match="rows for"):
        metrics.corpus_matrix(rg.RADGRAPH_F1_SIMPLE, ["a"], ["b"], ctx)


def test_radgraph_metrics_on_annotation_dicts(monkeypatch):
    _no_model(monkeypatch)
    names = sorted(CASES)
    hyps = [CASES[n][0] for n in names] + [""]
    refs = [[CASES[n][1]] for n in names] + ["pleural effusion"]  # a list: first reference scored
    matrix, value = metrics.corpus_matrix(rg.RADGRAPH_F1_PARTIAL, hyps, refs, MetricContext())
    expected = [CASES[n][2][1] for n in names] + [0.0]  # an empty report scores 0, unannotated
    assert matrix[:, 1] == pytest.approx(expected)
    assert value == pytest.approx(np.mean(expected))


# ------------------------------------------------------------------------ CheXbert arithmetic

HYP_LABELS = [
    {"Cardiomegaly": 1},
    {"Pleural Effusion": 1, "Edema": 1, "Support Devices": -1},  # uncertain counts as positive
    {"No Finding": 1, "Atelectasis": 0, "Fracture": None},
]
REF_LABELS = [
    {"Cardiomegaly": 1, "Edema": 1},
    {"pleural effusion": 1, "Support Devices": 1},
    {"No Finding": 1},
]


def test_label_vectors():
    assert cb.CHEXPERT_LABELS[0] == "No Finding" and len(cb.CHEXPERT_LABELS) == 14
    assert [cb.CHEXPERT_LABELS[i] for i in cb.INDEX_5] == list(cb.CHEXBERT_5_LABELS)
    vector = cb.label_vector({"Edema": 1, "Pneumonia": -1, "Fracture": 0, "Lung Lesion": float("nan")})
    assert vector.tolist() == [0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]
    assert cb.label_vector([1, None, "", -1] + [0] * 10, uncertain_positive=False).tolist() == [1] + [0] * 13
    with pytest.raises(ValueError, match="14 values"):
        cb.label_vector([1, 0, 1])
    with pytest.raises(ValueError, match="unknown CheXpert observation"):
        cb.label_vector({"Nodule": 1})


def test_chexbert_f1_hand_computed():
    hyp, ref = cb.label_matrix(HYP_LABELS), cb.label_matrix(REF_LABELS)
    # positive labels: Cardiomegaly tp; Edema fn (sample 0) + fp (sample 1); Pleural Effusion tp;
    # Support Devices tp (uncertain = 1); No Finding tp. TP 4, FP 1, FN 1.
    assert cb.chexbert_f1(hyp, ref, "micro") == pytest.approx(8 / 10)
    # per-label F1: 1 for 4 labels, 0 for Edema and the 9 never-positive labels
    assert cb.chexbert_f1(hyp, ref, "macro") == pytest.approx(4 / 14)
    # 5 labels: Cardiomegaly tp, Edema fp+fn, Pleural Effusion tp: micro 4/6, macro (1+1)/5
    assert cb.chexbert_f1(cb.subset_5(hyp), cb.subset_5(ref), "micro") == pytest.approx(4 / 6)
    assert cb.chexbert_f1(cb.subset_5(hyp), cb.subset_5(ref), "macro") == pytest.approx(2 / 5)
    # uncertain as negative: Support Devices becomes a miss (TP 3, FP 1, FN 2)
    hyp_neg = cb.label_matrix(HYP_LABELS, uncertain_positive=False)
    assert cb.chexbert_f1(hyp_neg, ref, "micro") == pytest.approx(6 / 9)
    assert cb.chexbert_f1(hyp_neg, ref, "macro") == pytest.approx(3 / 14)
    # nothing positive anywhere
    zeros = np.zeros((2, 14))
    assert cb.chexbert_f1(zeros, zeros, "micro") == 0.0 and cb.chexbert_f1(zeros, zeros, "macro") == 0.0


def test_chexbert_f1_matches_sklearn_classification_report():
    from sklearn.metrics import classification_report

    rng = np.random.default_rng(0)
    for _ in range(5):
        ref = (rng.random((40, 14)) < 0.2).astype(int)
        hyp = (rng.random((40, 14)) < 0.2).astype(int)
        ref[:, 3] = hyp[:, 3] = 0  # a label never positive counts as F1 0 in the macro mean
        report = classification_report(ref, hyp, output_dict=True, zero_division=0)
        assert cb.chexbert_f1(hyp, ref, "micro") == pytest.approx(report["micro avg"]["f1-score"])
        assert cb.chexbert_f1(hyp, ref, "macro") == pytest.approx(report["macro avg"]["f1-score"])


def test_chexbert_metrics_on_label_inputs(tmp_path, monkeypatch):
    _no_model(monkeypatch)
    expected = {
        "chexbert_micro_f1_14": 8 / 10,
        "chexbert_macro_f1_14": 4 / 14,
        "chexbert_micro_f1_5": 4 / 6,
        "chexbert_macro_f1_5": 2 / 5,
    }
    vectors = [cb.label_vector(x).tolist() for x in HYP_LABELS]  # lists in CHEXPERT_LABELS order
    path = tmp_path / "labels.jsonl"
    pairs = zip(vectors, REF_LABELS, strict=True)
    path.write_text("".join(json.dumps({"hyp": h, "ref": r}) + "\n" for h, r in pairs))
    for name, value in expected.items():
        metric = cb.CHEXBERT_METRICS[name]
        matrix, direct = metrics.corpus_matrix(metric, HYP_LABELS, REF_LABELS, MetricContext())
        assert direct == pytest.approx(value)
        assert matrix.shape == (3, 3 * (14 if name.endswith("14") else 5))
        _, from_file = metrics.corpus_matrix(
            metric, ["x"] * 3, ["y"] * 3, MetricContext(options={"annotations": str(path)})
        )
        assert from_file == pytest.approx(value)
        # a bootstrap replicate is reduce() over resampled rows
        rows = [0, 0, 2]
        sub_hyp, sub_ref = cb.label_matrix(HYP_LABELS)[rows], cb.label_matrix(REF_LABELS)[rows]
        if name.endswith("5"):
            sub_hyp, sub_ref = cb.subset_5(sub_hyp), cb.subset_5(sub_ref)
        assert metric.reduce(matrix[rows]) == pytest.approx(
            cb.chexbert_f1(sub_hyp, sub_ref, metric.averaging)
        )
    _, value = metrics.corpus_matrix(
        cb.CHEXBERT_MICRO_F1_14, HYP_LABELS, REF_LABELS, MetricContext(options={"uncertain": "negative"})
    )
    assert value == pytest.approx(6 / 9)


# --------------------------------------------------------------------- without model weights

MODEL_METRICS = sorted(rg.RADGRAPH_METRICS) + sorted(cb.CHEXBERT_METRICS)


def _metric(name):
    return rg.RADGRAPH_METRICS.get(name) or cb.CHEXBERT_METRICS[name]


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No weights anywhere: fresh Hugging Face, radgraph/chexbert and cxbench caches."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CXBENCH_CACHE", str(tmp_path / "cxbench"))
    monkeypatch.delenv(rg.PATH_ENV, raising=False)
    monkeypatch.delenv(cb.PATH_ENV, raising=False)
    return tmp_path


def _expected_parts(name: str, tmp_path) -> list[str]:
    if name.startswith("radgraph"):
        return [
            "StanfordAIMI/RRG_scorers",
            "radgraph-xl.tar.gz",
            "model_path",
            "CXBENCH_RADGRAPH_PATH",
            str(tmp_path / "xdg" / "radgraph"),
            str(tmp_path / "hf" / "hub"),
        ]
    return [
        "StanfordAIMI/RRG_scorers",
        "chexbert.pth",
        "model_path",
        "CXBENCH_CHEXBERT_PATH",
        str(tmp_path / "xdg" / "chexbert" / "chexbert.pth"),
        "bert-base-uncased",
        str(tmp_path / "hf" / "hub"),
    ]


@pytest.mark.parametrize("offline", ["1", None], ids=["HF_HUB_OFFLINE=1", "HF_HUB_OFFLINE-unset"])
@pytest.mark.parametrize("name", MODEL_METRICS)
def test_unavailable_without_weights_is_fast_and_clear(name, offline, empty_caches, monkeypatch):
    if offline is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    package = "radgraph" if name.startswith("radgraph") else "f1chexbert"
    start = time.monotonic()
    with pytest.raises(rg.MetricUnavailable) as info:
        metrics.corpus_matrix(
            _metric(name), ["No acute cardiopulmonary process."], ["Small left effusion."], MetricContext()
        )
    assert time.monotonic() - start < 10
    message = str(info.value)
    if not rg.package_available(package):
        assert 'pip install "cxbench[clinical]"' in message and package in message
    else:
        for part in _expected_parts(name, empty_caches):
            assert part in message, (part, message)


@pytest.mark.parametrize("name", ["radgraph_f1_simple", "chexbert_micro_f1_14"])
def test_unavailable_names_the_missing_package(name, monkeypatch):
    monkeypatch.setattr(rg, "package_available", lambda module: False)
    with pytest.raises(rg.MetricUnavailable, match=r'pip install "cxbench\[clinical\]"') as info:
        metrics.corpus_matrix(_metric(name), ["a"], ["b"], MetricContext())
    assert ("radgraph" if name.startswith("radgraph") else "f1chexbert") in str(info.value)


@pytest.mark.parametrize("name", ["radgraph_f1_simple", "chexbert_micro_f1_14"])
def test_unavailable_with_a_bad_model_path(name, empty_caches, monkeypatch):
    package = "radgraph" if name.startswith("radgraph") else "f1chexbert"
    if not rg.package_available(package):
        pytest.skip(f"{package} not installed")
    missing = empty_caches / "nowhere"
    with pytest.raises(rg.MetricUnavailable, match="model_path") as info:
        metrics.corpus_matrix(
            _metric(name), ["a"], ["b"], MetricContext(options={"model_path": str(missing)})
        )
    assert str(missing) in str(info.value)
    env = rg.PATH_ENV if package == "radgraph" else cb.PATH_ENV
    monkeypatch.setenv(env, str(missing))
    with pytest.raises(rg.MetricUnavailable, match=env):
        metrics.corpus_matrix(_metric(name), ["a"], ["b"], MetricContext())


def test_importing_the_modules_loads_no_model_library():
    code = (
        "import sys, cxbench.metrics.radgraph, cxbench.metrics.chexbert;"
        "print([m for m in ('torch', 'transformers', 'radgraph', 'f1chexbert') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------- the real model path, on tiny random stand-in models

_TINY_BERT = """
import json, os, sys
from pathlib import Path

def tiny_bert(folder, words):
    import torch
    from transformers import BertConfig, BertModel
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (folder / "vocab.txt").write_text("\\n".join(vocab) + "\\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64)
    config.to_json_file(folder / "config.json")
    torch.manual_seed(0)
    return config

WORDS = "no acute cardiopulmonary process small left pleural effusion mild edema . ,".split()
WORDS += "heart size normal".split()
WORDS += ["1", "2"]
TEXTS = ["No acute cardiopulmonary process.", "Small left pleural effusion.", "",
         "Mild edema, heart size normal.", "edema " * 600]
"""

_CHEXBERT_RUN = (
    _TINY_BERT
    + """
root = Path(sys.argv[1])
hub = Path(os.environ["HF_HUB_CACHE"]) / "models--bert-base-uncased"
snapshot = hub / "snapshots" / ("0" * 40)
tiny_bert(snapshot, WORDS)
(hub / "refs").mkdir()
(hub / "refs" / "main").write_text("0" * 40)
import torch
from f1chexbert.f1chexbert import bert_labeler
labeler = bert_labeler(inference=True)
for p in labeler.parameters():
    torch.nn.init.normal_(p, std=0.5)
state = {"module." + k: v for k, v in labeler.state_dict().items()}
torch.save({"model_state_dict": state}, root / "chexbert.pth")

from cxbench import metrics
from cxbench.metrics import chexbert as cb
hyps, refs = TEXTS, TEXTS[::-1]
options = {"model_path": str(root / "chexbert.pth"), "batch_size": 2, "device": "cpu"}
values = {}
ctx = metrics.MetricContext(options=options)
for name, metric in cb.CHEXBERT_METRICS.items():
    values[name] = metrics.corpus_matrix(metric, hyps, refs, ctx)[1]
one_by_one = [cb.label_reports([t], {**options, "batch_size": 1})[0].tolist() for t in TEXTS]
batched = cb.label_reports(TEXTS, options).tolist()
labels_h, labels_r = cb.label_reports(hyps, options), cb.label_reports(refs, options)
os.environ[cb.PATH_ENV] = str(root)  # a folder holding chexbert.pth, through the environment
via_env = metrics.corpus_matrix(cb.CHEXBERT_MACRO_F1_5, hyps, refs, metrics.MetricContext())[1]
print(json.dumps({"values": values, "one_by_one": one_by_one, "batched": batched,
                  "micro": cb.chexbert_f1(labels_h, labels_r, "micro"),
                  "macro5": cb.chexbert_f1(cb.subset_5(labels_h), cb.subset_5(labels_r), "macro"),
                  "via_env": via_env}))
"""
)

_RADGRAPH_RUN = (
    _TINY_BERT
    + """
root = Path(sys.argv[1])
bert = root / "bert"
config = tiny_bert(bert, WORDS)
from transformers import BertModel
BertModel(config).save_pretrained(bert)
model_dir = root / "models" / "radgraph-xl"
(model_dir / "vocabulary").mkdir(parents=True)
(model_dir / "vocabulary" / "non_padded_namespaces.txt").write_text("*tags\\n*labels\\n")
(model_dir / "vocabulary" / "radgraph-xl__ner_labels.txt").write_text(
    "\\nObservation::definitely present\\nAnatomy::definitely present\\nObservation::definitely absent\\n")
(model_dir / "vocabulary" / "radgraph-xl__relation_labels.txt").write_text(
    "\\nlocated_at\\nmodify\\nsuggestive_of\\n")
embedder = {"type": "pretrained_transformer_mismatched", "model_name": str(bert), "max_length": 512}
config = {
    "dataset_reader": {"type": "dygie", "max_span_width": 3, "token_indexers": {"bert": embedder}},
    "model": {
        "type": "dygie", "embedder": {"token_embedders": {"bert": embedder}}, "initializer": {},
        "module_initializer": {}, "feature_size": 8, "max_span_width": 3, "target_task": "relation",
        "feedforward_params": {"num_layers": 1, "hidden_dims": 16, "dropout": 0.0},
        "loss_weights": {"ner": 1.0, "relation": 1.0, "coref": 0.0, "events": 0.0},
        "modules": {
            "ner": {}, "coref": {"spans_per_word": 0.3, "max_antecedents": 10, "coref_prop": 0},
            "relation": {"spans_per_word": 0.5},
            "events": {"trigger_spans_per_word": 0.3, "argument_spans_per_word": 0.8,
                       "loss_weights": {"trigger": 1.0, "arguments": 1.0}},
        },
    },
}
(model_dir / "config.json").write_text(json.dumps(config))
import torch
from radgraph.allennlp.data import Vocabulary
from radgraph.allennlp.modules import text_field_embedders, token_embedders
from radgraph.dygie.models import dygie
vocab = Vocabulary.from_files(str(model_dir / "vocabulary"), None, None)
modules = {k: v for k, v in config["model"].items()
           if k not in ("type", "embedder", "initializer", "module_initializer")}
bert_embedder = token_embedders.PretrainedTransformerMismatchedEmbedder(model_name=str(bert), max_length=512)
embedder = text_field_embedders.BasicTextFieldEmbedder({"bert": bert_embedder})
model = dygie.DyGIE(vocab=vocab, embedder=embedder, **modules)
torch.save(model.state_dict(), model_dir / "weights.th")

from radgraph import F1RadGraph
from cxbench import metrics
from cxbench.metrics import radgraph as rg
hyps = TEXTS[:4] * 2
refs = TEXTS[1:4] + ["No acute cardiopulmonary process."] + TEXTS[:4]
ctx = metrics.MetricContext(options={"model_path": str(model_dir), "batch_size": 3, "device": "cpu"})
ours = [metrics.corpus_matrix(m, hyps, refs, ctx)[1] for m in rg.RADGRAPH_METRICS.values()]
scorer = F1RadGraph(
    reward_level="all", model_type="radgraph-xl", model_cache_dir=str(root / "models"), cuda=-1
)
package = [float(v) for v in scorer(refs=refs, hyps=hyps)[0]]
print(json.dumps({"ours": ours, "package": package}))
"""
)


def _run(script: str, tmp_path) -> dict:
    env = dict(os.environ)
    env.update(
        HF_HUB_CACHE=str(tmp_path / "hub"),
        HF_HOME=str(tmp_path / "hf"),
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
        CXBENCH_CACHE=str(tmp_path / "cxbench"),
    )
    env.pop("HF_HUB_OFFLINE", None)  # the metric code must go offline by itself
    env.pop(rg.PATH_ENV, None)
    env.pop(cb.PATH_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_chexbert_model_path_on_a_tiny_random_labeler(tmp_path):
    pytest.importorskip("f1chexbert")
    result = _run(_CHEXBERT_RUN, tmp_path)
    assert result["batched"] == result["one_by_one"]  # padding in batches changes no label
    values = result["values"]
    assert values["chexbert_micro_f1_14"] == pytest.approx(result["micro"])
    assert values["chexbert_macro_f1_5"] == pytest.approx(result["macro5"])
    assert result["via_env"] == pytest.approx(result["macro5"])
    assert all(0.0 <= v <= 1.0 for v in values.values())


def test_radgraph_model_path_matches_the_package_scorer(tmp_path):
    pytest.importorskip("radgraph")
    problem = rg.transformers_problem()
    if problem:
        pytest.skip(problem)
    result = _run(_RADGRAPH_RUN, tmp_path)
    assert result["ours"] == pytest.approx(result["package"])
