"""MIMIC-CXR-JPG, CheXpert, CheXpert Plus and IU X-ray adapters on fixtures in their official layouts.

The fixtures (``fixtures_mimic_chexpert_iu.py``) are built in temporary folders from real rows of
torchxrayvision's packaged CheXpert labels and IU X-ray reports, with small generated images.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import zipfile
from pathlib import Path

import fixtures_mimic_chexpert_iu as fx
import pytest
import yaml

from cxbench.data import mimic_cxr
from cxbench.data.adapters import DataError, get_adapter
from cxbench.data.check import add_check_arguments, check_dataset, cli_check
from cxbench.data.chexpert import LabelPolicy, PathGuard, _chexpert_relative, single_disease
from cxbench.data.iu_xray import load_reports
from cxbench.data.iu_xray_images import view_of
from cxbench.labels import CHEXPERT_14


@pytest.fixture(scope="module")
def reports() -> dict:
    return fx.iu_reports()


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory) -> dict:
    return fx.build_chexpert(tmp_path_factory.mktemp("cx"))


@pytest.fixture(scope="module")
def plus(tmp_path_factory, reports) -> dict:
    return fx.build_chexpert_plus(tmp_path_factory.mktemp("plus") / "chexpert_plus", reports)


@pytest.fixture(scope="module")
def mimic(tmp_path_factory, reports) -> dict:
    return fx.build_mimic(tmp_path_factory.mktemp("mimic") / "mimic-cxr-jpg", reports)


@pytest.fixture(scope="module")
def iu(tmp_path_factory, reports) -> dict:
    return fx.build_iu(tmp_path_factory.mktemp("iu") / "openi", reports)


def samples(name: str, family: str, split: str, root, **params) -> list:
    return list(get_adapter(name).samples(family, split, {"root": str(root), **params}))


def check_cli(name: str, root) -> int:
    parser = argparse.ArgumentParser()
    add_check_arguments(parser)
    return cli_check(parser.parse_args([name, str(root)]))


def run_cli(tasks: list[str], root, out: Path, include: Path | None = None) -> list[dict]:
    """``cxbench run --tasks ... --data-root ROOT --model random --model prior``; the log rows."""
    from cxbench.cli import main

    argv = ["run", "--tasks", ",".join(tasks), "--data-root", str(root)]
    argv += ["--model", "random", "--model", "prior", "--no-progress", "--no-cache"]
    argv += ["--output", str(out), "--bootstrap", "10"]
    if include is not None:
        argv += ["--include-path", str(include)]
    assert main(argv) == 0
    for model in ("random", "prior"):
        for task in tasks:
            result = json.loads((out / model / f"{task}.json").read_text())
            assert result["n"] > 0
    return [json.loads(line) for p in out.rglob("*.samples.jsonl") for line in p.open()]


def light_copy(tmp_path: Path, task: str) -> Path:
    """The built-in report task with only the fast metrics (METEOR and BERTScore take ~30 s)."""
    from cxbench.tasks import builtin_task_dir

    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    config = yaml.safe_load((builtin_task_dir() / f"{task}.yaml").read_text())
    config.update(
        name=f"light_{task}", metrics=["bleu4", "rouge_l", "chexpert_micro_f1_14"], primary_metric="bleu4"
    )
    (folder / f"light_{task}.yaml").write_text(yaml.safe_dump(config))
    return folder


# ---------------------------------------------------------------------------------------------
# CheXpert


def test_chexpert_paths_views_and_yes_no_questions(chexpert):
    root = chexpert["root"]
    assert (
        _chexpert_relative("CheXpert-v1.0-small/train/patient1/study1/v.jpg", root)
        == "train/patient1/study1/v.jpg"
    )
    assert _chexpert_relative("CheXpert-v1.0/valid/p/s/v.jpg", root) == "valid/p/s/v.jpg"
    assert _chexpert_relative("valid/p/s/v.jpg", root) == "valid/p/s/v.jpg"
    vqa = samples("chexpert", "vqa_closed", "val", root)
    frontal = [r for r in chexpert["valid"] if r["Frontal/Lateral"] == "Frontal"]
    by_path = {str((root.parent / r["Path"]).resolve()): fx.labels_of(r) for r in frontal}
    assert {s.images[0] for s in vqa} <= set(by_path)  # paths relative to ROOT's parent, frontal only
    assert all("lateral" not in s.images[0] for s in vqa)
    for sample in vqa:
        value = by_path[sample.images[0]][sample.metadata["observation"]]
        assert value in (0, 1) and sample.target == ("yes" if value == 1 else "no")
        assert sample.question.startswith("Is there ") and sample.query["kind"] == "yes_no"
    assert "No Finding" not in {s.metadata["observation"] for s in vqa}
    assert len({s.id for s in vqa}) == len(vqa)
    # uncertain as positive asks more; blank as negative asks all 13 observations of every study
    assert len(samples("chexpert", "vqa_closed", "val", root, uncertain="positive")) > len(vqa)
    everything = samples("chexpert", "vqa_closed", "val", root, blank="negative", uncertain="negative")
    assert len(everything) == 13 * len({s.images[0] for s in everything}) == 13 * len(frontal)
    # ROOT may also be the folder holding CheXpert-v1.0-small
    assert [s.id for s in samples("chexpert", "vqa_closed", "val", root.parent)] == [s.id for s in vqa]
    assert samples("chexpert", "vqa_closed", "train", root)
    with pytest.raises(DataError, match="splits train, val"):
        samples("chexpert", "vqa_closed", "test", root)
    with pytest.raises(DataError, match="families"):
        samples("chexpert", "report_generation", "val", root)
    with pytest.raises(DataError, match="uncertain"):
        samples("chexpert", "vqa_closed", "val", root, uncertain="maybe")


def test_chexpert_diagnosis_single_positive_rule(chexpert):
    dx = samples("chexpert", "diagnosis_recall1", "val", chexpert["root"])
    counts: dict[str, int] = {}
    for sample in dx:
        counts[sample.target] = counts.get(sample.target, 0) + 1
    assert counts == chexpert["diseases"] and len(counts) == 7
    blank = dict.fromkeys(CHEXPERT_14)
    policy = LabelPolicy()
    assert single_disease({**blank, "Edema": 1, "Lung Opacity": 1, "Support Devices": 1}, policy) == "edema"
    assert (
        single_disease({**blank, "Cardiomegaly": 1, "Enlarged Cardiomediastinum": -1}, policy)
        == "cardiomegaly"
    )
    assert single_disease({**blank, "Edema": 1, "Pneumonia": -1}, policy) is None
    assert (
        single_disease({**blank, "Edema": 1, "Pneumonia": -1}, LabelPolicy(uncertain="negative")) == "edema"
    )
    assert single_disease({**blank, "Edema": 1, "Fracture": 1}, policy) is None
    assert single_disease({**blank, "Lung Lesion": 1}, policy) is None  # not one of the 14 diseases
    assert single_disease({**blank, "No Finding": 1}, policy) is None


def test_chexpert_check_lists_missing_image_and_malformed_row(chexpert, capsys):
    report = check_dataset("chexpert", chexpert["root"])
    assert not report.ok
    assert report.missing_images == [str((chexpert["root"].parent / chexpert["missing"]).resolve())]
    assert report.malformed == [
        f"{chexpert['root'] / 'train.csv'}, row {chexpert['bad_row']}: label 'Cardiomegaly' is '2.0', "
        "expected 1.0, 0.0, -1.0 or blank"
    ]
    assert report.counts["val"]["diagnosis_recall1"] == 14 and report.counts["train"]["vqa_closed"] > 0
    assert report.labels["val/diagnosis_recall1"]["edema"] == 2
    assert check_cli("chexpert", chexpert["root"]) == 1
    out = capsys.readouterr().out
    assert f"train.csv, row {chexpert['bad_row']}" in out and chexpert["missing"].split("/", 1)[1] in out
    # the run skips the malformed row; strict refuses it
    with pytest.raises(DataError, match=rf"train\.csv, row {chexpert['bad_row']}"):
        samples("chexpert", "vqa_closed", "train", chexpert["root"], strict=True)


def test_chexpert_refuses_paths_leaving_root(tmp_path, chexpert):
    outside = tmp_path / "outside.jpg"
    fx.image(outside)
    header = ",".join(fx.CHEXPERT_HEADER)
    good = ",".join(chexpert["valid"][0][c] for c in fx.CHEXPERT_HEADER)
    root = tmp_path / "CheXpert-v1.0-small"
    (root / "valid").mkdir(parents=True)
    (root / "valid" / "link").symlink_to(tmp_path)
    for path in (
        "CheXpert-v1.0-small/../outside.jpg",
        str(outside),
        "CheXpert-v1.0-small/valid/link/outside.jpg",
    ):
        bad = ",".join([path, *good.split(",")[1:]])
        (root / "valid.csv").write_text(f"{header}\n{good}\n{bad}\n")
        with pytest.raises(DataError, match=r"valid\.csv, row 2: .*refused"):
            samples("chexpert", "vqa_closed", "val", root)
        report = check_dataset("chexpert", root)
        assert not report.ok and "valid.csv, row 2" in report.malformed[0]
    (root / "valid.csv").write_text(f"{header}\n{good}\nCheXpert-v1.0-small/valid/x.jpg,Male,50\n")
    report = check_dataset("chexpert", root)
    assert report.malformed == [f"{root / 'valid.csv'}, row 2: 3 values for 19 columns"]


def test_cli_run_chexpert_tasks(chexpert, tmp_path):
    rows = run_cli(["chexpert_vqa_closed", "chexpert_diagnosis_recall1"], chexpert["root"], tmp_path)
    assert any(
        chexpert["missing"].split("/", 1)[1] in json.dumps(r) and "missing_image" in json.dumps(r)
        for r in rows
    )


# ---------------------------------------------------------------------------------------------
# CheXpert Plus


def test_chexpert_plus_report_samples(plus):
    root = plus["root"]
    val = samples("chexpert_plus", "report_generation", "val", root)
    assert {s.metadata["study_id"]: s.target for s in val} == plus["expected"]["valid"]
    assert all(
        s.images[0].startswith(str(root / "PNG" / "PNG" / "valid")) and s.images[0].endswith(".png")
        for s in val
    )
    assert all(os.path.exists(s.images[0]) for s in val)
    assert all(s.question.startswith("Write the findings section") for s in val)
    train = samples("chexpert_plus", "report_generation", "train", root)
    assert len(train) == len(plus["expected"]["train"])
    impressions = samples("chexpert_plus", "report_generation", "val", root, section="impression")
    assert len(impressions) == len(val) + 1  # the study without findings has an impression
    report = check_dataset("chexpert_plus", root)
    assert report.ok and report.counts["val"]["report_generation"] == len(val)
    assert any("no findings section" in note for note in report.notes)


def test_cli_run_chexpert_plus(plus, tmp_path):
    include = light_copy(tmp_path, "chexpert_plus_report_generation")
    run_cli(["light_chexpert_plus_report_generation"], plus["root"], tmp_path / "out", include)


# ---------------------------------------------------------------------------------------------
# MIMIC-CXR


def test_mimic_report_sections():
    text = (
        "  FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n INDICATION: ___ with cough\n"
        " FINDINGS: \n \n Heart size is normal.\n No effusion.\n \n IMPRESSION: \n No acute process.\n"
    )
    assert mimic_cxr.findings_and_impression(text) == (
        "Heart size is normal. No effusion.",
        "No acute process.",
    )
    assert mimic_cxr.findings_and_impression(" IMPRESSION: Stable lines.\n") == ("", "Stable lines.")
    combined = " FINDINGS AND IMPRESSION: \n Clear lungs.\n NOTIFICATION: called.\n"
    assert mimic_cxr.findings_and_impression(combined) == ("Clear lungs.", "Clear lungs.")


def test_mimic_samples_views_reports_and_labels(mimic):
    root, studies = mimic["root"], mimic["studies"]
    reports = samples("mimic_cxr", "report_generation", "test", root)
    # test studies with a frontal image and a report with findings (one of them has no image file)
    expected = {
        str(k): " ".join(studies[k]["report"]["FINDINGS"].split()) for k in [*mimic["history"], 50000030]
    }
    assert {s.metadata["study_id"]: s.target for s in reports} == expected
    sample = next(s for s in reports if s.metadata["study_id"] == "51000001")
    assert sample.metadata["impression"] == studies[51000001]["report"]["IMPRESSION"]
    assert Path(sample.images[0]).relative_to(root) == Path(
        f"files/p10/p10000032/s51000001/{fx.dicom_id('10000032', 51000001, 0)}.jpg"
    )
    impressions = samples("mimic_cxr", "report_generation", "test", root, section="impression")
    assert "57000011" in {s.metadata["study_id"] for s in impressions}  # impression-only report
    vqa = samples("mimic_cxr", "vqa_closed", "test", root)
    views = {s.metadata["study_id"]: s.metadata["view"] for s in vqa}
    assert views["50000020"] == "PA"  # PA preferred over AP
    assert "57000010" not in views  # lateral-only study
    for sample in vqa:
        value = studies[int(sample.metadata["study_id"])]["labels"][sample.metadata["observation"]]
        assert sample.target == {1: "yes", 0: "no"}[value]
    dx = samples("mimic_cxr", "diagnosis_recall1", "train", root)
    assert [s.metadata["study_id"] for s in dx] == ["52000050"]
    assert samples("mimic_cxr", "vqa_closed", "val", root, labeler="chexpert")
    with pytest.raises(DataError, match="label file"):
        samples("mimic_cxr", "vqa_closed", "test", root, labeler="negbio")


def test_mimic_temporal_pairs_are_label_derived_and_date_ordered(mimic):
    root = mimic["root"]
    temporal = samples("mimic_cxr", "temporal_comparison", "test", root)
    order = mimic["history"]  # study ids in date order
    got = {
        (s.metadata["prior_study_id"], s.metadata["study_id"], s.metadata["observation"]): s.target
        for s in temporal
    }
    want = {(str(order[k]), str(order[k + 1]), obs): change for k, obs, change in mimic["transitions"]}
    assert got == want and len(set(want.values())) == 3
    for sample in temporal:
        prior, current = (Path(p).parent.name for p in sample.images)
        assert (prior, current) == (
            f"s{sample.metadata['prior_study_id']}",
            f"s{sample.metadata['study_id']}",
        )
        assert sample.metadata["change_source"] == "labels"
        assert (
            sample.metadata["raw_change"]
            == {"worsened": "new", "improved": "resolved", "stable": "persistent"}[sample.target]
        )
        assert sample.query == {
            "kind": "change",
            "finding": sample.question.split("has the ")[1].split(" improved")[0],
        }
    assert samples("mimic_cxr", "temporal_comparison", "train", root)


def test_mimic_reports_in_other_places(tmp_path, reports):
    data = fx.build_mimic(tmp_path / "mimic", reports)
    root = data["root"]
    baseline = [s.to_dict() for s in samples("mimic_cxr", "report_generation", "test", root)]
    texts = sorted((root / "files").rglob("*.txt"))
    # unpacked into ROOT/mimic-cxr-reports/files
    for path in texts:
        target = root / "mimic-cxr-reports" / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    assert [s.to_dict() for s in samples("mimic_cxr", "report_generation", "test", root)] == baseline
    # the zip, read in place
    with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as archive:
        for path in sorted((root / "mimic-cxr-reports").rglob("*.txt")):
            archive.write(path, str(path.relative_to(root / "mimic-cxr-reports")))
    shutil.move(root / "mimic-cxr-reports", tmp_path / "elsewhere")
    assert [s.to_dict() for s in samples("mimic_cxr", "report_generation", "test", root)] == baseline
    # a separate reports root
    (root / "mimic-cxr-reports.zip").unlink()
    with pytest.raises(DataError, match="reports_root"):
        samples("mimic_cxr", "report_generation", "test", root)
    moved = samples("mimic_cxr", "report_generation", "test", root, reports_root=str(tmp_path / "elsewhere"))
    assert [s.to_dict() for s in moved] == baseline
    assert samples("mimic_cxr", "vqa_closed", "test", root)  # the label families need no report
    report = check_dataset("mimic_cxr", root)  # no report anywhere: a note, not a row problem
    assert any("test/report_generation" in note and "none of the" in note for note in report.notes)
    assert not any("report file" in problem for problem in report.malformed)


def test_mimic_refuses_paths_leaving_root(tmp_path, reports):
    data = fx.build_mimic(tmp_path / "mimic", reports)
    root = data["root"]
    outside = tmp_path / "outside" / "s50000030"
    outside.mkdir(parents=True)
    # a patient folder that is a symbolic link out of ROOT
    shutil.rmtree(root / "files/p10/p10000935")
    (root / "files/p10/p10000935").symlink_to(tmp_path / "outside")
    with pytest.raises(DataError, match=r"split\.csv\.gz, row \d+: image path .* symbolic link \(refused\)"):
        samples("mimic_cxr", "vqa_closed", "test", root)
    (root / "files/p10/p10000935").unlink()
    # a dicom_id that would climb out
    split = root / "mimic-cxr-2.0.0-split.csv.gz"
    fx.write_csv(
        split,
        ["dicom_id", "study_id", "subject_id", "split"],
        [["../../../../etc/passwd", "50000099", "10000099", "test"]],
        gz=True,
    )
    with pytest.raises(DataError, match=r"split\.csv\.gz, row 1: 'dicom_id' '\.\./.*refused"):
        samples("mimic_cxr", "vqa_closed", "test", root)
    assert check_cli("mimic_cxr", root) == 1


def test_mimic_check_lists_missing_image_and_malformed_row(mimic, capsys):
    report = check_dataset("mimic_cxr", mimic["root"])
    assert report.missing_images == [mimic["missing"]]
    label_file = mimic["root"] / "mimic-cxr-2.0.0-chexpert.csv.gz"
    assert f"{label_file}, row {mimic['bad_label_row']}: label 'Atelectasis' is 'yes'" in report.malformed[0]
    assert any("s50000020" in m and "report file" in m for m in report.malformed)
    assert report.counts["test"]["temporal_comparison"] == len(mimic["transitions"])
    assert report.counts["test"]["report_generation"] == 5
    assert check_cli("mimic_cxr", mimic["root"]) == 1
    out = capsys.readouterr().out
    assert mimic["missing"] in out and f"chexpert.csv.gz, row {mimic['bad_label_row']}" in out


def test_cli_run_mimic_tasks(mimic, tmp_path):
    tasks = [
        "mimic_vqa_closed",
        "mimic_temporal_comparison",
        "mimic_diagnosis_recall1",
        "light_mimic_report_generation",
    ]
    rows = run_cli(tasks, mimic["root"], tmp_path / "out", light_copy(tmp_path, "mimic_report_generation"))
    assert any(mimic["missing"] in json.dumps(r) and "missing_image" in json.dumps(r) for r in rows)


# ---------------------------------------------------------------------------------------------
# IU X-ray


def test_iu_samples_from_png_folder_and_xmls(iu):
    root = iu["root"]
    test = samples("iu_xray", "report_generation", "test", root)
    chosen = {r["id"]: r for r in iu["reports"] if r["split"] == "test" and r["FINDINGS"]}
    assert {s.metadata["report_id"]: s.target for s in test} == {k: r["FINDINGS"] for k, r in chosen.items()}
    for sample in test:
        image_id = Path(sample.images[0]).stem
        assert image_id in chosen[sample.metadata["report_id"]]["images"]
        assert view_of(image_id) in ("PA", "AP") and sample.metadata["view"] == view_of(image_id)
        assert Path(sample.images[0]).parent == (root / "NLMCXR_png").resolve()
    assert {
        s.metadata["split"]
        for split in ("train", "val")
        for s in samples("iu_xray", "report_generation", split, root)
    } == {"train", "val"}
    kept = samples("iu_xray", "report_generation", "test", root, skip_missing_images=True)
    assert len(kept) == len(test) - 1 and iu["missing"] not in json.dumps([s.images for s in kept])
    with pytest.raises(DataError, match="report_generation only"):
        samples("iu_xray", "vqa_closed", "test", root)
    # the text-only adapter keeps working, and now knows each report's images
    assert load_reports()[0]["images"] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]


def test_iu_reports_from_tgz_or_the_packaged_copy(tmp_path, iu, reports):
    folder_ids = [s.id for s in samples("iu_xray", "report_generation", "test", iu["root"])]
    tgz = fx.build_iu(tmp_path / "tgz", reports, xml="tgz")
    assert [s.id for s in samples("iu_xray", "report_generation", "test", tgz["root"])] == folder_ids
    bare = fx.build_iu(tmp_path / "bare", reports, xml="none")
    packaged = samples("iu_xray", "report_generation", "test", bare["root"])
    assert len(packaged) > 500  # every packaged test report with findings and a frontal image
    present = samples("iu_xray", "report_generation", "test", bare["root"], skip_missing_images=True)
    assert sorted(s.id for s in present) == sorted(
        i for i in folder_ids if i != f"iu_xray:{iu['missing_report']}:report"
    )


def test_iu_check_and_refused_paths(tmp_path, iu, reports, capsys):
    report = check_dataset("iu_xray", iu["root"])
    assert [Path(p).name for p in report.missing_images] == [f"{iu['missing']}.png"]
    assert report.malformed == [
        f"{iu['root'] / 'ecgen-radiology' / '99999.xml'}: not valid XML (no element found: line 1, column 27)"
    ]
    assert check_cli("iu_xray", iu["root"]) == 1
    assert "99999.xml" in capsys.readouterr().out
    data = fx.build_iu(tmp_path / "esc", reports)
    xml = data["root"] / "ecgen-radiology" / f"{data['reports'][0]['id'][3:]}.xml"
    original = xml.read_text()
    xml.write_text(original.replace(data["reports"][0]["images"][0], "../../outside", 1))
    with pytest.raises(DataError, match=rf"{xml.name}, parentImage 1: id '\.\./\.\./outside'.*refused"):
        samples("iu_xray", "report_generation", "train", data["root"])
    xml.write_text(original)
    frontal = next(i for i in data["reports"][0]["images"] if view_of(i) in ("PA", "AP"))
    png = data["root"] / "NLMCXR_png" / f"{frontal}.png"
    png.unlink()
    fx.image(tmp_path / "outside.png")
    png.symlink_to(tmp_path / "outside.png")
    with pytest.raises(DataError, match=r"symbolic link \(refused\)"):
        samples("iu_xray", "report_generation", "train", data["root"])


def test_cli_run_iu_xray(iu, tmp_path):
    rows = run_cli(
        ["light_iu_xray_report_generation"],
        iu["root"],
        tmp_path / "out",
        light_copy(tmp_path, "iu_xray_report_generation"),
    )
    assert any(iu["missing"] in json.dumps(r) and "missing_image" in json.dumps(r) for r in rows)


def test_path_guard(tmp_path):
    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "root" / "b").symlink_to(tmp_path / "root" / "a")
    guard = PathGuard(tmp_path / "root")
    assert guard.resolve("b/x.png", "f, row 1") == str((tmp_path / "root" / "a" / "x.png").resolve())
    for bad in ("", "/etc/passwd", "a/../../x", "C:\\x.png"):
        with pytest.raises(DataError, match="f, row 1"):
            guard.resolve(bad, "f, row 1")
