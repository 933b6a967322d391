"""MS-CXR-T, Medical-Diff-VQA, SLAKE, VQA-RAD and ReXVQA adapters on fixtures in their official layouts.

Each fixture is generated in a temporary folder: the real file and field names, a few rows
or records, small generated JPG/PNG images, and on purpose one missing image and one
malformed row or record (so ``cxbench data check`` must report both, with file and row).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from cxbench.data.adapters import DataError, get_adapter
from cxbench.data.check import add_check_arguments, check_dataset, cli_check
from cxbench.parsing import parse_change


def _dicom(seed: str) -> str:
    """A MIMIC-CXR-style dicom id (five dash-separated groups of 8 hex digits)."""
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def _image(path: Path, value: int = 80) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (24, 24), color=value).save(path)


def _mimic(root: Path, subject: str, study: str, dicom: str) -> Path:
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _samples(name: str, family: str, split: str, root: Path, **params) -> list:
    return list(get_adapter(name).samples(family, split, {"root": str(root), **params}))


def _check(name: str, root: Path, capsys) -> str:
    parser = argparse.ArgumentParser()
    add_check_arguments(parser)
    assert cli_check(parser.parse_args([name, str(root)])) == 1
    return capsys.readouterr().out


def _run(tasks: str, root: Path, out: Path, model: str = "random") -> list[dict]:
    from cxbench.cli import main

    argv = ["run", "--tasks", tasks, "--data-root", str(root), "--model", model]
    argv += ["--no-progress", "--no-cache", "--output", str(out), "--bootstrap", "20"]
    assert main(argv) == 0
    rows = []
    for name in tasks.split(","):
        logs = list(out.rglob(f"{name}.samples.jsonl"))
        assert logs, f"no log for {name}"
        result = json.loads(next(out.rglob(f"{name}.json")).read_text())
        assert result["n"] > 0
        rows += [json.loads(line) for line in logs[0].open() if '"header"' not in line[:12]]
    return rows


# ---------------------------------------------------------------------------------------------
# MS-CXR-T

MS_HEADER = [
    "dicom_id",
    "previous_dicom_id",
    "study_id",
    "previous_study_id",
    "subject_id",
    *(
        f"{f}_{kind}"
        for f in ("consolidation", "edema", "pleural_effusion", "pneumonia", "pneumothorax")
        for kind in ("progression", "label_quality")
    ),
]


@pytest.fixture(scope="module")
def ms_root(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ms_cxr_t")
    rows = []
    pairs = [
        ("10000032", "50000001", "50000002", {"edema": "improving", "pleural_effusion": "stable"}),
        ("10000764", "50000011", "50000012", {"consolidation": "worsening", "pneumonia": "Worsening"}),
        ("11000001", "50000021", "50000022", {"pneumothorax": "stable"}),
    ]
    for subject, prior_study, study, labels in pairs:
        prior, current = _dicom(prior_study), _dicom(study)
        _image(_mimic(root, subject, prior_study, prior), 40)
        _image(_mimic(root, subject, study, current), 120)
        row = {
            "dicom_id": f"p{subject[:2]}/p{subject}/s{study}/{current}",
            "previous_dicom_id": f"p{subject[:2]}/p{subject}/s{prior_study}/{prior}",
            "study_id": study,
            "previous_study_id": prior_study,
            "subject_id": subject,
        }
        for finding, value in labels.items():
            row[f"{finding}_progression"] = value
            row[f"{finding}_label_quality"] = "multiple_experts"
        rows.append([row.get(h, "") for h in MS_HEADER])
    # a bare dicom id (the folder comes from subject_id / study_ids) whose current image is missing
    rows.append(
        ["d" * 8, _dicom("50000031"), "50000032", "50000031", "12000001", "", "", "stable", "one_expert"]
    )
    rows[-1] += [""] * (len(MS_HEADER) - len(rows[-1]))
    _image(_mimic(root, "12000001", "50000031", _dicom("50000031")))
    missing = _mimic(root, "12000001", "50000032", "d" * 8)
    # malformed: an unknown class (row 5) and a path leaving the root (row 6)
    bad = [r for r in rows[0]]
    bad[MS_HEADER.index("edema_progression")] = "better"
    rows.append(bad)
    escape = [r for r in rows[1]]
    escape[0] = "../../../etc/passwd"
    rows.append(escape)
    _write_csv(root / "MS_CXR_T_temporal_image_classification_v1.0.0.csv", MS_HEADER, rows)
    return {"root": root, "missing": str(missing)}


def test_ms_cxr_t_pairs_labels_and_prior_first(ms_root):
    root = ms_root["root"]
    samples = _samples("ms_cxr_t", "temporal_comparison", "test", root)
    by_finding = {(s.metadata["subject_id"], s.query["finding"]): s for s in samples}
    assert len(samples) == 6
    assert by_finding[("10000032", "edema")].target == "improved"
    assert by_finding[("10000032", "pleural effusion")].target == "stable"
    assert by_finding[("10000764", "pneumonia")].target == "worsened"
    assert by_finding[("10000764", "pneumonia")].metadata["label"] == "worsening"
    for sample in samples:
        prior, current = sample.images
        assert f"/s{sample.metadata['previous_study_id']}/" in prior
        assert f"/s{sample.metadata['study_id']}/" in current
        assert "improving, stable or worsening" in sample.question
    assert by_finding[("12000001", "edema")].images[1] == ms_root["missing"]
    # the CSV itself is accepted as ROOT; findings can be selected
    csv_path = root / "MS_CXR_T_temporal_image_classification_v1.0.0.csv"
    edema = _samples("ms_cxr_t", "temporal_comparison", "test", csv_path, findings=["edema"])
    assert {s.query["finding"] for s in edema} == {"edema"} and len(edema) == 2
    with pytest.raises(DataError, match="no train split"):
        _samples("ms_cxr_t", "temporal_comparison", "train", root)
    with pytest.raises(DataError, match="row 5: edema_progression is 'better'"):
        _samples("ms_cxr_t", "temporal_comparison", "test", root, strict=True)


def test_ms_cxr_t_words_parse_to_change_labels():
    cases = {
        "Improving.": "improved",
        "The effusion has improved.": "improved",
        "better": "improved",
        "worsening": "worsened",
        "It is worse.": "worsened",
        "Progressing": "worsened",
        "stable": "stable",
        "No change.": "stable",
        "Unchanged": "stable",
    }
    assert {text: parse_change(text) for text in cases} == cases


def test_ms_cxr_t_check_reports_missing_image_and_bad_rows(ms_root, capsys):
    report = check_dataset("ms_cxr_t", ms_root["root"])
    assert report.counts == {"test": {"temporal_comparison": 6}}
    assert report.labels["test/temporal_comparison"] == {"stable": 3, "worsened": 2, "improved": 1}
    assert report.missing_images == [ms_root["missing"]]
    text = _check("ms_cxr_t", ms_root["root"], capsys)
    assert "v1.0.0.csv, row 5: edema_progression is 'better'" in text
    assert "v1.0.0.csv, row 6: dicom_id '../../../etc/passwd'" in text and "(refused)" in text
    assert ms_root["missing"] in text and "PROBLEMS FOUND" in text


def test_ms_cxr_t_run_end_to_end(ms_root, tmp_path, capsys):
    from cxbench.cli import main

    # MS-CXR-T has no train split; the random baseline draws change words without one
    argv = ["run", "--tasks", "ms_cxr_t_temporal", "--data-root", str(ms_root["root"])]
    argv += ["--model", "random", "--no-progress", "--no-cache", "--output", str(tmp_path / "r")]
    assert main(argv) == 0, capsys.readouterr().err
    assert list((tmp_path / "r").rglob("*.json"))
    answer = tmp_path / "answer_stable.py"
    answer.write_text("def answer(request):\n    return 'The finding is unchanged (stable).'\n")
    rows = _run("ms_cxr_t_temporal", ms_root["root"], tmp_path / "p", model=f"python:{answer}:answer")
    assert len(rows) == 6
    assert any(r["error"] and "missing_image" in json.dumps(r) for r in rows)
    scored = [r for r in rows if not r["error"]]
    assert {r["parsed"] for r in scored} == {"stable"}
    assert all(len(r["sample"]["images"]) == 2 for r in rows)


# ---------------------------------------------------------------------------------------------
# Medical-Diff-VQA

META_HEADER = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
QUESTION_HEADER = ["study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split"]


def _diff_fixture(root: Path, with_mimic_all: bool = False) -> dict:
    # subject -> [(study, date, views)]: the reference (earlier) study first
    studies = {
        "10000032": [
            ("50414267", "21800506", ("PA", "LATERAL")),
            ("53189527", "21800626", ("LATERAL", "PA")),
        ],
        "10000764": [("57375967", "21321015", ("AP",)), ("54205396", "21330113", ("AP", "LL"))],
        "10000898": [("50771383", "21880312", ("LATERAL",))],  # no frontal image
    }
    meta_rows, frontal = [], {}
    for subject, visits in studies.items():
        for study, date, views in visits:
            for i, view in enumerate(views):
                dicom = _dicom(f"{study}-{i}")
                meta_rows.append(
                    [
                        dicom,
                        subject,
                        study,
                        "CHEST (PA AND LAT)",
                        view,
                        "3056",
                        "2544",
                        date,
                        "213014.531",
                        "Chest",
                        "postero-anterior",
                        "Erect",
                    ]
                )
                path = _mimic(root, subject, study, dicom)
                if view in ("PA", "AP"):
                    frontal[study] = str(path)
                if study != "53189527" or view != "PA":
                    _image(path, 60 + 10 * i)
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv", META_HEADER, meta_rows)
    questions = [
        [
            "53189527",
            "10000032",
            "50414267",
            "abnormality",
            "what abnormalities are seen in this image?",
            "pleural effusion, atelectasis",
            "test",
        ],
        ["53189527", "10000032", "50414267", "presence", "is there edema?", "no", "test"],
        [
            "53189527",
            "10000032",
            "50414267",
            "location",
            "where is the pleural effusion?",
            "left lower lung",
            "test",
        ],
        [
            "53189527",
            "10000032",
            "50414267",
            "difference",
            "what has changed compared to the reference image?",
            "the main image has an additional finding of pleural effusion than the reference image.",
            "test",
        ],
        [
            "54205396",
            "10000764",
            "57375967",
            "difference",
            "what has changed compared to the reference image?",
            "nothing has changed.",
            "test",
        ],
        ["54205396", "10000764", "57375967", "presence", "is there pneumothorax?", "yes", "train"],
        ["54205396", "10000764", "57375967", "view", "which view is this image taken?", "AP view", "train"],
        ["54205396", "10000764", "57375967", "level", "what level is the edema?", "mild", "train"],
        ["57375967", "10000764", "54205396", "type", "what type is the opacity?", "patchy", "val"],
        ["50771383", "10000898", "54205396", "abnormality", "what abnormalities are seen?", "edema", "test"],
        [
            "53189527",
            "10000032",
            "",
            "difference",
            "what has changed compared to the reference image?",
            "nothing has changed.",
            "test",
        ],  # malformed: no reference study (row 11)
        ["53189527", "10000032", "50414267", "colour", "what colour?", "grey", "test"],  # malformed (row 12)
        [
            "54205396",
            "10000764",
            "57375967",
            "difference",
            "what has changed compared to the reference image?",
            "the main image is missing the finding of edema than the reference image.",
            "train",
        ],
        ["54205396", "10000764", "57375967", "abnormality", "what abnormalities are seen?", "edema", "train"],
    ]
    _write_csv(root / "mimic_pair_questions.csv", QUESTION_HEADER, questions)
    if with_mimic_all:
        _write_csv(
            root / "mimic_all.csv",
            ["subject_id", "study_id", "dicom_id", "view", "split", "study_date", "study_order"],
            [
                ["10000032", "50414267", _dicom("50414267-0"), "postero-anterior", "train", "21800506", "1"],
                ["10000032", "53189527", _dicom("53189527-1"), "postero-anterior", "train", "21800626", "2"],
                ["10000764", "57375967", _dicom("57375967-0"), "antero-posterior", "train", "21321015", "1"],
                ["10000764", "54205396", _dicom("54205396-0"), "antero-posterior", "train", "21330113", "2"],
            ],
        )
    return {"root": root, "frontal": frontal, "missing": frontal["53189527"]}


@pytest.fixture(scope="module")
def diff_root(tmp_path_factory) -> dict:
    return _diff_fixture(tmp_path_factory.mktemp("diff_vqa"))


def test_diff_vqa_difference_questions_have_prior_first(diff_root):
    root, frontal = diff_root["root"], diff_root["frontal"]
    open_test = _samples("medical_diff_vqa", "vqa_open", "test", root)
    difference = [s for s in open_test if s.query["kind"] == "difference"]
    assert len(difference) == 2
    for sample in difference:
        assert len(sample.images) == 2, "a difference question must show the reference image too"
        assert sample.images[0] == frontal[sample.metadata["ref_id"]]  # reference (prior) first
        assert sample.images[1] == frontal[sample.metadata["study_id"]]
        assert sample.metadata["reference_is_earlier"] is True
        assert sample.question.startswith("The first image is the reference image (the prior study)")
    others = [s for s in open_test if s.query["kind"] != "difference"]
    assert {s.query["kind"] for s in others} == {"abnormality", "location"}
    assert all(s.images == [frontal[s.metadata["study_id"]]] for s in others)
    # PA is preferred over the lateral image, AP is used when there is no PA
    assert frontal["53189527"].endswith(f"{_dicom('53189527-1')}.jpg")
    # closed = yes/no answers
    closed = _samples("medical_diff_vqa", "vqa_closed", "test", root)
    assert [(s.question, s.target) for s in closed] == [("is there edema?", "no")]
    assert [s.target for s in _samples("medical_diff_vqa", "vqa_closed", "train", root)] == ["yes"]
    assert [s.target for s in _samples("medical_diff_vqa", "vqa_open", "val", root)] == ["patchy"]
    only = _samples("medical_diff_vqa", "vqa_open", "test", root, question_types=["difference"])
    assert [s.id for s in only] == [s.id for s in difference]
    with pytest.raises(DataError, match="question_types"):
        _samples("medical_diff_vqa", "vqa_open", "test", root, question_types=["colour"])


def test_diff_vqa_uses_mimic_all_when_present(tmp_path):
    fixture = _diff_fixture(tmp_path, with_mimic_all=True)
    difference = _samples("medical_diff_vqa", "vqa_open", "test", tmp_path, question_types=["difference"])
    assert difference[0].images[0].endswith(f"{_dicom('50414267-0')}.jpg")
    assert difference[0].images[1] == fixture["frontal"]["53189527"]
    report = check_dataset("medical_diff_vqa", tmp_path)
    assert any("study 50771383 is not in mimic_all.csv" in m for m in report.malformed)


def test_diff_vqa_check(diff_root, capsys):
    report = check_dataset("medical_diff_vqa", diff_root["root"])
    assert report.counts["test"] == {"vqa_closed": 1, "vqa_open": 4}
    assert report.missing_images == [diff_root["missing"]]
    assert any("no frontal image" in n for n in report.notes)
    assert report.labels["test/question_type"]["difference (vqa_open)"] == 2
    text = _check("medical_diff_vqa", diff_root["root"], capsys)
    assert "mimic_pair_questions.csv, row 11: a difference question needs ref_id" in text
    assert "mimic_pair_questions.csv, row 12: question_type 'colour'" in text
    assert diff_root["missing"] in text


def test_diff_vqa_run_end_to_end(diff_root, tmp_path):
    rows = _run("diff_vqa_difference,diff_vqa_open,diff_vqa_closed", diff_root["root"], tmp_path)
    difference = [r for r in rows if r["sample_id"] in {"diff_vqa:4", "diff_vqa:5"}]
    assert len(difference) == 2 and all(len(r["sample"]["images"]) == 2 for r in difference)


# ---------------------------------------------------------------------------------------------
# SLAKE


def _slake_record(qid: int, img: int, question: str, answer, answer_type: str, **extra) -> dict:
    record = {
        "img_id": img,
        "img_name": f"xmlab{img}/source.jpg",
        "question": question,
        "answer": answer,
        "q_lang": "en",
        "location": "Lung",
        "modality": "X-Ray",
        "answer_type": answer_type,
        "base_type": "vqa",
        "content_type": "Abnormality",
        "triple": ["vhead", "_", "_"],
        "qid": qid,
    }
    record.update(extra)
    return record


@pytest.fixture(scope="module")
def slake_root(tmp_path_factory) -> dict:
    parent = tmp_path_factory.mktemp("slake")
    root = parent / "Slake1.0"
    for img in (102, 103, 104, 200):
        _image(root / "imgs" / f"xmlab{img}" / "source.jpg")
    test = [
        _slake_record(1, 102, "Is the lung healthy?", "No", "CLOSED"),
        _slake_record(2, 102, "What diseases are included in the picture?", "Pneumonia", "OPEN"),
        _slake_record(
            3, 102, "Which is bigger in this image, lung or heart?", "Lung", "CLOSED", content_type="Size"
        ),  # closed, not yes/no: in neither family
        _slake_record(4, 103, "Does the picture contain heart?", "Yes", "CLOSED", location="Chest_heart"),
        _slake_record(5, 103, "肺部健康吗?", "否", "CLOSED", q_lang="zh"),
        _slake_record(6, 200, "Is this a CT?", "Yes", "CLOSED", modality="CT", location="Abdomen"),
        _slake_record(
            7, 105, "Where is the abnormality?", "Left Lung", "OPEN", content_type="Position"
        ),  # image missing
        _slake_record(8, 104, "Is this an X-ray?", "Yes", "CLOSED", img_name="../../outside.jpg"),
        {"img_name": "xmlab104/source.jpg", "question": "No answer?", "answer_type": "OPEN"},
    ]
    train = [
        _slake_record(10 + i, 104, "Is the lung healthy?", answer, "CLOSED")
        for i, answer in enumerate(["Yes", "No", "Yes"])
    ] + [_slake_record(20, 104, "What is the main organ?", "Lung", "OPEN")]
    (root / "test.json").write_text(json.dumps(test, ensure_ascii=False))
    (root / "train.json").write_text(json.dumps(train))
    (root / "validate.json").write_text(
        json.dumps([_slake_record(30, 104, "Is it normal?", "yes", "CLOSED")])
    )
    return {"root": parent, "missing": str(root / "imgs" / "xmlab105" / "source.jpg")}


def test_slake_chest_xray_english_subset(slake_root):
    closed = _samples("slake", "vqa_closed", "test", slake_root["root"])
    assert [(s.id, s.target) for s in closed] == [("slake:1", "no"), ("slake:4", "yes")]
    opened = _samples("slake", "vqa_open", "test", slake_root["root"])
    assert [(s.id, s.target) for s in opened] == [("slake:2", "Pneumonia"), ("slake:7", "Left Lung")]
    assert opened[1].images == [slake_root["missing"]]
    assert opened[0].query == {"kind": "abnormality"} and opened[1].query == {"kind": "position"}
    assert [s.target for s in _samples("slake", "vqa_closed", "val", slake_root["root"])] == ["yes"]
    # the Slake1.0 folder itself is accepted as ROOT
    assert len(_samples("slake", "vqa_closed", "train", slake_root["root"] / "Slake1.0")) == 3


def test_slake_check(slake_root, capsys):
    report = check_dataset("slake", slake_root["root"])
    assert report.counts["test"] == {"vqa_closed": 2, "vqa_open": 2}
    assert report.missing_images == [slake_root["missing"]]
    notes = " ".join(report.notes)
    assert "1 question(s) left out: not English" in notes and "not a chest X-ray" in notes
    assert report.labels["test/left_out"] == {"closed, answer not yes/no": 1}
    text = _check("slake", slake_root["root"], capsys)
    assert "test.json, record 7: image path '../../outside.jpg' leaves the data folder" in text
    assert "test.json, record 8: missing or empty field(s) ['answer']" in text


# ---------------------------------------------------------------------------------------------
# VQA-RAD


def _rad(qid, image, question, answer, answer_type, phrase, organ="CHEST") -> dict:
    return {
        "qid": qid,
        "image_name": image,
        "image_case_url": "https://medpix.nlm.nih.gov/case?id=x",
        "image_organ": organ,
        "answer": answer,
        "answer_type": answer_type,
        "question_type": "PRES",
        "question": question,
        "phrase_type": phrase,
        "question_rephrase": "NULL",
        "question_relation": "NULL",
        "question_frame": "NULL",
        "evaluation": "not evaluated",
        "qid_linked_id": f"link-{qid}",
    }


@pytest.fixture(scope="module")
def rad_root(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("vqa_rad")
    for name in ("synpic100.jpg", "synpic101.jpg", "synpic300.jpg"):
        _image(root / "VQA_RAD Image Folder" / name)
    records = [
        _rad(1, "synpic100.jpg", "Is there a pneumothorax?", "No", "CLOSED", "test_freeform"),
        _rad(2, "synpic100.jpg", "What is abnormal?", "right pleural effusion", "OPEN", "test_para"),
        _rad(3, "synpic101.jpg", "Is the heart enlarged?", "yes", "CLOSED ", "freeform"),
        _rad(4, "synpic101.jpg", "Where is the mass?", "left upper lobe", "OPEN", "para"),
        _rad(5, "synpic300.jpg", "Is there a bleed?", "Yes", "CLOSED", "test_freeform", organ="HEAD"),
        _rad(6, "synpic102.jpg", "Is this a PA film?", "Yes", "CLOSED", "test_para"),  # image missing
        _rad(7, "/etc/passwd", "Is the image normal?", "No", "CLOSED", "test_freeform"),
        _rad(8, "synpic100.jpg", "Is this normal?", "No", "CLOSED", "holdout"),
        _rad(9, "synpic101.jpg", "Which side is the effusion on?", "Left", "CLOSED", "freeform"),
    ]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(records))
    return {"root": root, "missing": str(root / "VQA_RAD Image Folder" / "synpic102.jpg")}


def test_vqa_rad_chest_subset_and_splits(rad_root):
    closed = _samples("vqa_rad", "vqa_closed", "test", rad_root["root"])
    assert [(s.id, s.target) for s in closed] == [("vqa_rad:1", "no"), ("vqa_rad:6", "yes")]
    assert closed[1].images == [rad_root["missing"]]
    assert [s.target for s in _samples("vqa_rad", "vqa_open", "test", rad_root["root"])] == [
        "right pleural effusion"
    ]
    assert [s.target for s in _samples("vqa_rad", "vqa_closed", "train", rad_root["root"])] == ["yes"]
    assert [s.target for s in _samples("vqa_rad", "vqa_open", "train", rad_root["root"])] == [
        "left upper lobe"
    ]
    with pytest.raises(DataError, match="splits train, test, not 'val'"):
        _samples("vqa_rad", "vqa_open", "val", rad_root["root"])


def test_vqa_rad_check(rad_root, capsys):
    report = check_dataset("vqa_rad", rad_root["root"])
    assert report.counts == {
        "train": {"vqa_closed": 1, "vqa_open": 1},
        "test": {"vqa_closed": 2, "vqa_open": 1},
    }
    assert report.missing_images == [rad_root["missing"]]
    assert any("other organs left out (HEAD 1)" in n for n in report.notes)
    text = _check("vqa_rad", rad_root["root"], capsys)
    assert "VQA_RAD Dataset Public.json, record 6: image path '/etc/passwd' is absolute" in text
    assert "VQA_RAD Dataset Public.json, record 7: phrase_type 'holdout'" in text


# ---------------------------------------------------------------------------------------------
# ReXVQA (assumed layout)


def _rex(question: str, options, answer: str, images, task: str = "presence_assessment") -> dict:
    return {
        "question": question,
        "options": options,
        "correct_answer": answer,
        "correct_answer_explanation": "Seen on the frontal view.",
        "task_name": task,
        "category": "Lungs",
        "class": "detail",
        "subcategory": "Opacity",
        "study_id": "GRDN0001",
        "ImagePath": images,
    }


@pytest.fixture(scope="module")
def rex_root(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("rexvqa")
    frontal, lateral = "../deid_png/GRDN0001/study1/frontal.png", "../deid_png/GRDN0001/study1/lateral.png"
    _image(root / "deid_png/GRDN0001/study1/frontal.png")
    _image(root / "deid_png/GRDN0001/study1/lateral.png")
    options = ["A. Left lower lobe", "B. Right upper lobe", "C. Both lungs", "D. No opacity"]
    test = {
        "q1": _rex("Where is the opacity?", options, "B", [frontal, lateral], "location_analysis"),
        "q2": _rex(
            "Is there an effusion?",
            {"A": "Yes", "B": "No", "C": "Cannot tell", "D": "Bilateral"},
            "A. Yes",
            frontal,
        ),
        "q3": _rex("Any device?", options, "D. No opacity", ["../deid_png/GRDN0001/study1/missing.png"]),
        "q4": _rex("Escaping?", options, "A", ["../../../../etc/passwd"]),
        "q5": _rex("Bad answer?", options, "E", [frontal]),
    }
    train = [{"id": f"t{i}", **_rex("Where?", options, letter, [frontal])} for i, letter in enumerate("ABCA")]
    (root / "metadata").mkdir()
    (root / "metadata" / "test_vqa_data.json").write_text(json.dumps(test))
    (root / "metadata" / "train_vqa_data.json").write_text(json.dumps(train))
    (root / "metadata" / "valid_vqa_data.json").write_text('{"v1": {"question": ')  # truncated file
    return {"root": root, "missing": str(root / "deid_png/GRDN0001/study1/missing.png")}


def test_rexvqa_multiple_choice(rex_root):
    root = rex_root["root"]
    samples = _samples("rexvqa", "vqa_closed", "test", root)
    assert [(s.id, s.target) for s in samples] == [("rexvqa:q1", "B"), ("rexvqa:q2", "A"), ("rexvqa:q3", "D")]
    first = samples[0]
    assert first.choices == ["Left lower lobe", "Right upper lobe", "Both lungs", "No opacity"]
    assert first.images == [
        str(root / "deid_png/GRDN0001/study1/frontal.png"),
        str(root / "deid_png/GRDN0001/study1/lateral.png"),
    ]
    assert samples[1].choices == ["Yes", "No", "Cannot tell", "Bilateral"]
    assert samples[2].images == [rex_root["missing"]]
    assert [s.id for s in _samples("rexvqa", "vqa_closed", "train", root)] == [
        f"rexvqa:t{i}" for i in range(4)
    ]
    # only the requested split's file is read: the truncated valid file does not affect test/train
    assert _samples("rexvqa", "vqa_closed", "val", root) == []


def test_rexvqa_check(rex_root, capsys):
    report = check_dataset("rexvqa", rex_root["root"])
    assert report.counts == {"train": {"vqa_closed": 4}, "test": {"vqa_closed": 3}}
    assert report.missing_images == [rex_root["missing"]]
    assert any("not verified" in n for n in report.notes)
    text = _check("rexvqa", rex_root["root"], capsys)
    assert "test_vqa_data.json, record 3 (key 'q4'): image path '../../../../etc/passwd' leaves" in text
    assert "test_vqa_data.json, record 4 (key 'q5'): correct_answer 'E'" in text
    assert "valid_vqa_data.json: not valid JSON (line 1" in text


def test_vqa_sets_run_end_to_end(slake_root, rad_root, rex_root, tmp_path):
    for tasks, root in (
        ("slake_vqa_closed,slake_vqa_open", slake_root),
        ("vqa_rad_vqa_closed,vqa_rad_vqa_open", rad_root),
        ("rexvqa_vqa_closed", rex_root),
    ):
        rows = _run(tasks, root["root"], tmp_path / tasks.split(",")[0])
        assert any(r["error"] and "missing_image" in json.dumps(r) for r in rows)
        assert any(r["error"] is None and r["parsed"] is not None for r in rows)


def test_missing_root_and_files_are_clear_errors(tmp_path):
    for name, needle in (
        ("ms_cxr_t", "MS_CXR_T_temporal_image_classification_v1.0.0.csv not found"),
        ("medical_diff_vqa", "mimic_pair_questions.csv not found"),
        ("slake", "none of train.json, validate.json, test.json"),
        ("vqa_rad", "'VQA_RAD Dataset Public.json' not found"),
        ("rexvqa", "_vqa_data.json"),
    ):
        with pytest.raises(DataError, match=needle):
            _samples(name, get_adapter(name).families[0], "test", tmp_path)
        with pytest.raises(DataError, match="data folder not found"):
            _samples(name, get_adapter(name).families[0], "test", tmp_path / "nope")
