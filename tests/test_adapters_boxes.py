"""VinDr-CXR, RSNA Pneumonia and MS-CXR adapters on fixtures in their official layouts.

VinDr-CXR and RSNA fixtures use real annotation rows read in place from torchxrayvision's
packaged copies (``vinbigdata-train.csv.gz``, ``kaggle_stage_2_train_labels.csv.zip``) with
generated DICOMs of a size that holds the boxes (RLE-compressed, so they stay small); MS-CXR
has no packaged copy, so its CSV rows are generated in the released column layout with small
JPEGs. Malformed rows and a missing image are added on purpose.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import importlib.util
import io
import json
import math
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxbench.data.adapters import DataError
from cxbench.data.check import add_check_arguments, check_dataset, cli_check
from cxbench.data.ms_cxr import MSCXRAdapter
from cxbench.data.rsna import RSNAPneumoniaAdapter
from cxbench.data.vindr import VinDrCXRAdapter, consensus

DATA_DIR = Path(list(importlib.util.find_spec("torchxrayvision").submodule_search_locations)[0]) / "data"
VINDR_HEADER = "image_id,rad_id,class_name,x_min,y_min,x_max,y_max"
COORDS = ("x_min", "y_min", "x_max", "y_max")


def write_dicom(path: Path, width: int, height: int, value: int = 60) -> None:
    """A small valid MONOCHROME2 8-bit DICOM of the given size (RLE Lossless pixel data)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", path.stem[:16]
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.compress(RLELossless, np.full((height, width), value, dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _check_cli(name: str, root: Path, capsys) -> str:
    parser = argparse.ArgumentParser()
    add_check_arguments(parser)
    code = cli_check(parser.parse_args([name, str(root)]))
    out = capsys.readouterr().out
    assert code == 1, out
    return out


def _run(tasks: str, root: Path, out: Path, model: str = "random") -> list[dict]:
    from cxbench.cli import main

    argv = ["run", "--tasks", tasks, "--data-root", str(root), "--model", model, "--no-progress"]
    argv += ["--no-cache", "--output", str(out), "--bootstrap", "20"]
    assert main(argv) == 0
    results = [json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))]
    assert len(results) == len(tasks.split(","))
    return results


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


# ---------------------------------------------------------------------------------------------
# VinDr-CXR


def _vindr_rows() -> list[dict[str, str]]:
    with gzip.open(DATA_DIR / "vinbigdata-train.csv.gz", "rt", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _agreeing(marks: list[dict]) -> bool:
    """Three radiologists whose boxes of one class overlap pairwise at IoU >= 0.5."""
    boxes = [[float(m[c]) for c in COORDS] for m in marks]
    return (
        len({m["rad_id"] for m in marks}) == 3
        and len(marks) == 3
        and all(_iou(a, b) >= 0.5 for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    )


@pytest.fixture(scope="module")
def vindr(tmp_path_factory) -> dict:
    rows = _vindr_rows()
    by_image: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_image[row["image_id"]].append(row)
    picked: dict[str, str] = {}  # role -> image id
    for image, marks in by_image.items():
        classes: dict[str, list[dict]] = defaultdict(list)
        for m in marks:
            classes[m["class_name"]].append(m)
        singles = [c for c, ms in classes.items() if len(ms) == 1 and c != "No finding"]
        if "No finding" in classes:
            if len(marks) == 3 and "nofinding" not in picked:
                picked["nofinding"] = image
            continue
        if len(marks) > 8:
            continue
        if any(_agreeing(ms) for ms in classes.values()) and singles:
            role = next((r for r in ("train_a", "train_b", "test_a", "test_b") if r not in picked), None)
            if role is None:
                continue
            picked[role] = image
        if len(picked) == 5:
            break
    root = tmp_path_factory.mktemp("vindr")
    (root / "annotations").mkdir()
    line = lambda r: ",".join(r[c] for c in ("image_id", "rad_id", "class_name", *COORDS))  # noqa: E731
    train = [r for role in ("train_a", "train_b", "nofinding") for r in by_image[picked[role]]]
    a = picked["train_a"]
    bad_rows = [
        f"{a},R99,Nodule/Mass,,,,",  # NaN box
        f"{a},R99,Calcification,10,10,999999,20",  # outside the image
        "../escape,R1,Nodule/Mass,1,1,5,5",  # an id that is not a file name
    ]
    (root / "annotations" / "annotations_train.csv").write_text(
        "\n".join([VINDR_HEADER, *map(line, train), *bad_rows]) + "\n"
    )
    test = []  # "consensus": one radiologist's boxes per image and class (real rows)
    for role in ("test_a", "test_b"):
        first = {}
        for r in by_image[picked[role]]:
            first.setdefault(r["class_name"], r["rad_id"])
        test += [r for r in by_image[picked[role]] if r["rad_id"] == first[r["class_name"]]]
    (root / "annotations" / "annotations_test.csv").write_text(
        "\n".join([VINDR_HEADER, *map(line, test)]) + "\n"
    )
    (root / "annotations" / "image_labels_train.csv").write_text("image_id,rad_ID,No finding\n")
    sizes = {}
    for role, image in picked.items():
        boxes = [[float(r[c]) for c in COORDS] for r in by_image[image] if r["x_min"]]
        width = int(max((b[2] for b in boxes), default=1000)) + 64
        height = int(max((b[3] for b in boxes), default=1000)) + 32
        sizes[image] = (width, height)
        if role == "test_b":
            continue  # left missing
        split = "test" if role.startswith("test") else "train"
        write_dicom(root / split / f"{image}.dicom", width, height)
    return {
        "root": root,
        "picked": picked,
        "by_image": by_image,
        "sizes": sizes,
        "train_rows": len(train),
        "test_rows": test,
    }


def _vindr_samples(root, split="train", **params):
    return list(VinDrCXRAdapter().samples("localization", split, {"root": str(root), **params}))


def test_consensus_policy_on_plain_boxes():
    marks = [
        ("R1", [10, 10, 50, 50]),
        ("R2", [12, 10, 52, 48]),
        ("R3", [200, 200, 220, 220]),  # alone
        ("R1", [11, 12, 49, 50]),  # R1 twice: never counts twice in one cluster
    ]
    kept = consensus(marks, k=2, iou_threshold=0.4)
    assert kept == [([11.0, 10.0, 51.0, 49.0], ["R1", "R2"])]
    assert len(consensus(marks, k=1)) == 3  # the alone box, and R1's second box on its own
    assert consensus(marks, k=2, merge="median")[0][0] == [11.0, 10.0, 51.0, 49.0]
    assert consensus(marks, k=3) == []
    with pytest.raises(DataError, match="consensus_merge"):
        consensus(marks, merge="max")


def test_vindr_train_samples_follow_the_consensus(vindr):
    image = vindr["picked"]["train_a"]
    width, height = vindr["sizes"][image]
    samples = {
        s.metadata["class_name"]: s for s in _vindr_samples(vindr["root"]) if s.metadata["image_id"] == image
    }
    classes = defaultdict(list)
    for r in vindr["by_image"][image]:
        classes[r["class_name"]].append(r)
    agreed = [c for c, ms in classes.items() if _agreeing(ms)]
    singles = [c for c, ms in classes.items() if len(ms) == 1]
    assert agreed and singles
    for name in agreed:  # three radiologists agree: one box, the coordinate-wise mean
        mean = [sum(float(m[c]) for m in classes[name]) / 3 for c in COORDS]
        sample = samples[name]
        expected = [mean[0] / width, mean[1] / height, mean[2] / width, mean[3] / height]
        assert len(sample.target) == 1 and np.allclose(sample.target[0], expected, atol=1e-5)
        assert sample.metadata["image_size"] == [width, height]
        assert sample.metadata["readers"] == [sorted(m["rad_id"] for m in classes[name])]
        assert sample.query["finding"] == name.lower() or name.isupper()
        assert sample.question == f"Where is the {sample.query['finding']} in this chest X-ray?"
        assert sample.images[0].endswith(f"train/{image}.dicom")
    for name in singles:  # a box of one radiologist only: no sample with k = 2 ...
        assert name not in samples
    k1 = {s.metadata["class_name"] for s in _vindr_samples(vindr["root"], consensus_k=1)}
    assert set(singles) <= k1  # ... but kept with k = 1
    nofinding = vindr["picked"]["nofinding"]
    assert not [s for s in _vindr_samples(vindr["root"]) if s.metadata["image_id"] == nofinding]


def test_vindr_test_split_uses_the_given_consensus_and_skips_missing_images(vindr, caplog):
    image = vindr["picked"]["test_a"]
    width, height = vindr["sizes"][image]
    samples = _vindr_samples(vindr["root"], "test")
    assert {s.metadata["image_id"] for s in samples} == {image}  # test_b has no DICOM
    expected = defaultdict(list)
    for r in vindr["test_rows"]:
        if r["image_id"] == image:
            x1, y1, x2, y2 = (float(r[c]) for c in COORDS)
            expected[r["class_name"]].append([x1 / width, y1 / height, x2 / width, y2 / height])
    got = {s.metadata["class_name"]: s.target for s in samples}
    assert sorted(got) == sorted(expected)
    for name, boxes in expected.items():
        assert np.allclose(got[name], boxes)
    assert "left out the samples of 1 image(s)" in caplog.text


def test_vindr_errors_and_strict_mode(vindr, tmp_path):
    with pytest.raises(DataError, match="not found"):
        _vindr_samples(tmp_path / "nowhere")
    with pytest.raises(DataError, match="families"):
        list(VinDrCXRAdapter().samples("vqa_open", "test", {"root": str(vindr["root"])}))
    with pytest.raises(DataError, match=r"annotations_train\.csv, row \d+"):
        _vindr_samples(vindr["root"], strict=True)
    with pytest.raises(DataError, match="consensus"):
        _vindr_samples(vindr["root"], consensus_k=0)


def test_vindr_kaggle_layout_and_packaged_csv(vindr, tmp_path):
    image = vindr["picked"]["train_a"]
    with gzip.open(DATA_DIR / "vinbigdata-train.csv.gz", "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    kaggle = tmp_path / "kaggle"
    (kaggle / "train").mkdir(parents=True)
    (kaggle / "train.csv").write_text(
        "\n".join([lines[0], *(x for x in lines if x.startswith(image))]) + "\n"
    )
    (kaggle / "train" / f"{image}.dicom").symlink_to(vindr["root"] / "train" / f"{image}.dicom")
    official = [s for s in _vindr_samples(vindr["root"]) if s.metadata["image_id"] == image]
    got = _vindr_samples(kaggle)
    assert [(s.id, s.target) for s in got] == [(s.id, s.target) for s in official]
    with pytest.raises(DataError, match="no 'test' split"):
        _vindr_samples(kaggle, "test")
    # no CSV at all: torchxrayvision's packaged copy gives the train boxes
    (kaggle / "train.csv").unlink()
    assert [(s.id, s.target) for s in _vindr_samples(kaggle)] == [(s.id, s.target) for s in official]


def test_vindr_check_reports_missing_image_and_malformed_rows(vindr, capsys):
    report = check_dataset("vindr_cxr", vindr["root"])
    assert not report.ok
    missing = vindr["picked"]["test_b"]
    assert [Path(p).name for p in report.missing_images] == [f"{missing}.dicom"]
    text = report.to_text()
    n = vindr["train_rows"]
    assert f"annotations_train.csv, row {n + 1}: box coordinates missing, NaN" in text
    assert f"annotations_train.csv, row {n + 2}: box [10.0, 10.0, 999999.0, 20.0] is outside" in text
    assert f"annotations_train.csv, row {n + 3}: image_id '../escape' is not a plain file name" in text
    assert report.counts["train"]["localization"] >= 2 and report.counts["test"]["localization"] >= 1
    assert report.labels["train/localization"]
    out = _check_cli("vindr_cxr", vindr["root"], capsys)
    assert missing in out and "PROBLEMS FOUND" in out


def test_cli_run_vindr_tasks_end_to_end(vindr, tmp_path):
    results = _run("vindr_localization,vindr_detection", vindr["root"], tmp_path)
    by_task = {r["task"]["name"] if isinstance(r["task"], dict) else r["task"]: r for r in results}
    detection = by_task["vindr_detection"]["metrics"]["map50"]
    assert 0.0 <= detection["value"] <= 1.0 and detection["ci95"] is not None
    assert by_task["vindr_localization"]["metrics"]["mean_iou"]["value"] is not None
    logs = [json.loads(x) for x in (tmp_path / "random" / "vindr_detection.samples.jsonl").open()]
    rows = [r for r in logs if "header" not in r]
    assert rows and all(r["error"] is None for r in rows)  # DICOM images pass the runner's check
    assert all(len(r["stats"]["map50"]) == 42 for r in rows)  # 2 + 2 x 20 detections
    # the prior baseline learns its boxes from the train split's consensus
    _run("vindr_localization", vindr["root"], tmp_path / "prior", model="prior")


# ---------------------------------------------------------------------------------------------
# RSNA Pneumonia


def _rsna_split(patient: str) -> str:
    return "test" if int(hashlib.sha256(patient.encode()).hexdigest()[:8], 16) < 0.2 * 16**8 else "train"


@pytest.fixture(scope="module")
def rsna(tmp_path_factory) -> dict:
    with zipfile.ZipFile(DATA_DIR / "kaggle_stage_2_train_labels.csv.zip") as archive:
        lines = (
            io.TextIOWrapper(archive.open("stage_2_train_labels.csv"), encoding="utf-8").read().splitlines()
        )
    header, body = lines[0], lines[1:]
    by_patient: dict[str, list[str]] = defaultdict(list)
    for line in body:
        by_patient[line.split(",")[0]].append(line)
    positives = {"train": [], "test": []}
    negatives = []
    for patient, rows in by_patient.items():
        target = rows[0].rsplit(",", 1)[1]
        split = _rsna_split(patient)
        if target == "1" and len(positives[split]) < 2 and (len(rows) == 2 or positives[split]):
            positives[split].append(patient)
        elif target == "0" and len(negatives) < 2:
            negatives.append(patient)
        if all(len(v) == 2 for v in positives.values()) and len(negatives) == 2:
            break
    patients = [*positives["train"], *positives["test"], *negatives]
    root = tmp_path_factory.mktemp("rsna")
    bad = [f"{positives['train'][0]},nan,,,,1", f"{positives['train'][1]},1000.0,10.0,100.0,50.0,1"]
    (root / "stage_2_train_labels.csv").write_text(
        "\n".join([header, *(x for p in patients for x in by_patient[p]), *bad]) + "\n"
    )
    classes = [f"{p},{'Lung Opacity' if p not in negatives else 'Normal'}" for p in patients]
    (root / "stage_2_detailed_class_info.csv").write_text("\n".join(["patientId,class", *classes]) + "\n")
    missing = positives["test"][1]
    for patient in patients:
        if patient != missing:
            write_dicom(root / "stage_2_train_images" / f"{patient}.dcm", 1024, 1024)
    return {
        "root": root,
        "positives": positives,
        "negatives": negatives,
        "rows": by_patient,
        "missing": missing,
        "n_rows": sum(len(by_patient[p]) for p in patients),
    }


def _rsna_samples(root, split, **params):
    return list(RSNAPneumoniaAdapter().samples("localization", split, {"root": str(root), **params}))


def test_rsna_one_sample_per_positive_image_with_all_boxes(rsna):
    for split in ("train", "test"):
        samples = _rsna_samples(rsna["root"], split)
        assert [s.metadata["patient_id"] for s in samples] == rsna["positives"][split]
        for sample in samples:
            rows = [r.split(",") for r in rsna["rows"][sample.metadata["patient_id"]]]
            expected = [
                [float(x) / 1024, float(y) / 1024, (float(x) + float(w)) / 1024, (float(y) + float(h)) / 1024]
                for _, x, y, w, h, _ in rows
            ]
            assert np.allclose(sample.target, expected)
            assert sample.metadata["image_size"] == [1024, 1024]
            assert sample.query == {"kind": "box", "finding": "pneumonia"}
            assert sample.metadata["detailed_class"] == "Lung Opacity"
    first = _rsna_samples(rsna["root"], "train")[0]
    assert len(first.target) == 2
    missing = next(
        s for s in _rsna_samples(rsna["root"], "test") if s.metadata["patient_id"] == rsna["missing"]
    )
    assert not Path(missing.images[0]).exists()  # still produced: the runner records it
    with pytest.raises(DataError, match=r"stage_2_train_labels\.csv, row \d+"):
        _rsna_samples(rsna["root"], "train", strict=True)
    with pytest.raises(DataError, match="splits"):
        _rsna_samples(rsna["root"], "val")


def test_rsna_packaged_labels_fallback(rsna, tmp_path):
    patient = rsna["positives"]["test"][0]
    (tmp_path / "stage_2_train_images").mkdir()
    (tmp_path / "stage_2_train_images" / f"{patient}.dcm").symlink_to(
        rsna["root"] / "stage_2_train_images" / f"{patient}.dcm"
    )
    samples = _rsna_samples(tmp_path, "test")
    assert len(samples) > 1000  # every positive test patient of the packaged labels
    assert np.allclose(
        next(s for s in samples if s.metadata["patient_id"] == patient).target,
        _rsna_samples(rsna["root"], "test")[0].target,
    )


def test_rsna_check_reports_missing_image_and_malformed_rows(rsna, capsys):
    report = check_dataset("rsna_pneumonia", rsna["root"])
    assert [Path(p).name for p in report.missing_images] == [f"{rsna['missing']}.dcm"]
    text = report.to_text()
    n = rsna["n_rows"]
    assert f"stage_2_train_labels.csv, row {n + 1}: box [x, y, width, height]" in text and "NaN" in text
    assert f"stage_2_train_labels.csv, row {n + 2}: box [x, y, width, height] = [1000.0" in text
    assert "outside the 1024 x 1024 image" in text
    assert report.counts["train"]["localization"] == 2 and report.counts["test"]["localization"] == 2
    assert report.labels["all/detailed_class"] == {"Lung Opacity": 4, "Normal": 2}
    out = _check_cli("rsna_pneumonia", rsna["root"], capsys)
    assert rsna["missing"] in out


def test_cli_run_rsna_tasks_end_to_end(rsna, tmp_path):
    results = _run("rsna_localization,rsna_detection", rsna["root"], tmp_path)
    assert all(r["n"] == 2 for r in results)
    rows = [json.loads(x) for x in (tmp_path / "random" / "rsna_localization.samples.jsonl").open()]
    assert any(r.get("error") == "missing_image" and rsna["missing"] in json.dumps(r) for r in rows)


# ---------------------------------------------------------------------------------------------
# MS-CXR

MS_HEADER = "dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height"


def _ms_path(subject: int, study: int, dicom: str) -> str:
    return f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.jpg"


@pytest.fixture(scope="module")
def ms_cxr(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ms_cxr")
    images = {
        "d1": (_ms_path(10000032, 50414267, "d1"), 80, 100),
        "d2": (_ms_path(10000764, 57375967, "d2"), 64, 64),
        "d3": (_ms_path(11000011, 51029426, "d3"), 90, 70),
        "d4": (_ms_path(12000012, 52000012, "d4"), 64, 64),  # missing file
    }
    for dicom, (path, w, h) in images.items():
        if dicom != "d4":
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (w, h), 90).save(root / path)

    def row(dicom, category, text, box, split):
        path, w, h = images[dicom]
        return f'{dicom},{category},"{text}",{path},{box},{w},{h},{split}'

    rows = [
        row("d1", "Pneumonia", "patchy opacity, right lower lobe", "10,20,30,40", "test"),
        row("d1", "Pneumonia", "patchy opacity, right lower lobe", "40,50,20,20", "test"),
        row("d1", "Pleural effusion", "small left effusion", "5,60,30,30", "test"),
        row("d2", "Cardiomegaly", "enlarged heart", "10,10,40,30", "train"),
        row("d3", "Pneumothorax", "apical pneumothorax", "50,5,20,15", "val"),
        row("d4", "Edema", "mild edema", "10,10,20,20", "test"),
        row("d2", "Cardiomegaly", "heart size", ",,,", "train"),  # NaN box
        row("d2", "Atelectasis", "basal atelectasis", "50,50,30,30", "train"),  # outside 64 x 64
        'd9,Edema,"edema",../../outside.jpg,1,1,5,5,64,64,test',  # leaves the root
    ]
    (root / "MS_CXR_Local_Alignment_v1.1.0.csv").write_text("\n".join([f"{MS_HEADER},split", *rows]) + "\n")
    return {"root": root, "images": images}


def _ms_samples(root, split):
    return list(MSCXRAdapter().samples("localization", split, {"root": str(root)}))


def test_ms_cxr_phrase_samples_group_boxes_and_follow_the_split_column(ms_cxr):
    test = _ms_samples(ms_cxr["root"], "test")
    assert [s.query["phrase"] for s in test] == [
        "patchy opacity, right lower lobe",
        "small left effusion",
        "mild edema",
    ]
    first = test[0]
    assert np.allclose(
        first.target, [[10 / 80, 20 / 100, 40 / 80, 60 / 100], [40 / 80, 50 / 100, 60 / 80, 0.7]]
    )
    assert first.query["finding"] == "Pneumonia" and first.metadata["image_size"] == [80, 100]
    assert '"patchy opacity, right lower lobe"' in first.question
    assert first.images == [str(ms_cxr["root"].resolve() / ms_cxr["images"]["d1"][0])]
    assert [s.metadata["dicom_id"] for s in _ms_samples(ms_cxr["root"], "train")] == ["d2"]
    assert [s.metadata["dicom_id"] for s in _ms_samples(ms_cxr["root"], "val")] == ["d3"]
    with pytest.raises(DataError, match=r"v1\.1\.0\.csv, row 7: box \[x, y, w, h\]"):
        list(MSCXRAdapter().samples("localization", "test", {"root": str(ms_cxr["root"]), "strict": True}))


def test_ms_cxr_without_split_column_assigns_patients(ms_cxr, tmp_path):
    source = (ms_cxr["root"] / "MS_CXR_Local_Alignment_v1.1.0.csv").read_text().splitlines()
    rows = [line.rsplit(",", 1)[0] for line in source[1:6]]
    (tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv").write_text("\n".join([MS_HEADER, *rows]) + "\n")
    got = {}
    for split in ("train", "val", "test"):
        for s in _ms_samples(tmp_path, split):
            got.setdefault(s.metadata["dicom_id"], set()).add(split)
    subject = {"d1": "p10000032", "d2": "p10000764", "d3": "p11000011"}
    for dicom, splits in got.items():
        value = int(hashlib.sha256(subject[dicom].encode()).hexdigest()[:8], 16) / 16**8
        assert splits == {"train" if value < 0.7 else "val" if value < 0.8 else "test"}


def test_ms_cxr_check_reports_missing_image_and_malformed_rows(ms_cxr, capsys):
    report = check_dataset("ms_cxr", ms_cxr["root"])
    assert [Path(p).name for p in report.missing_images] == ["d4.jpg"]
    text = report.to_text()
    assert "v1.1.0.csv, row 7: box [x, y, w, h]" in text and "NaN" in text
    assert "v1.1.0.csv, row 8: box [x, y, w, h] = [50.0, 50.0, 30.0, 30.0] is empty or outside" in text
    assert "v1.1.0.csv, row 9: image path '../../outside.jpg' leaves the image root" in text
    assert report.counts == {
        "train": {"localization": 1},
        "val": {"localization": 1},
        "test": {"localization": 3},
    }
    assert "d4.jpg" in _check_cli("ms_cxr", ms_cxr["root"], capsys)


def test_cli_run_ms_cxr_grounding_end_to_end(ms_cxr, tmp_path):
    (result,) = _run("ms_cxr_grounding", ms_cxr["root"], tmp_path)
    assert result["n"] == 3 and not math.isnan(result["metrics"]["mean_iou"]["value"])
    rows = [json.loads(x) for x in (tmp_path / "random" / "ms_cxr_grounding.samples.jsonl").open()]
    assert any(r.get("error") == "missing_image" for r in rows)
    assert any('"patchy opacity, right lower lobe"' in r.get("prompt", "") for r in rows)
