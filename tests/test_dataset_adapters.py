"""NIH ChestX-ray14 and local CSV adapters, and ``cxbench data check``.

The NIH fixture is built in the official layout from ~20 real metadata rows read in place
from torchxrayvision's packaged CSVs, with small generated PNGs (one left missing) and
malformed rows added on purpose.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from cxbench.data.adapters import DataError, register_adapter
from cxbench.data.check import add_check_arguments, check_dataset, cli_check
from cxbench.data.local_csv import LocalCSVAdapter, canonical_label
from cxbench.data.nih import NIHChestXray14Adapter, disease_of

register_adapter(NIHChestXray14Adapter())
register_adapter(LocalCSVAdapter())

DATA_DIR = Path(list(importlib.util.find_spec("torchxrayvision").submodule_search_locations)[0]) / "data"
BOX_LABELS = ("Atelectasis", "Effusion", "Infiltrate", "Cardiomegaly", "Mass", "Nodule")
DX_LABELS = ("Atelectasis", "Effusion", "Pneumothorax", "Pleural_Thickening", "Emphysema", "Hernia")


def _lines(name: str) -> list[str]:
    with gzip.open(DATA_DIR / name, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


@pytest.fixture(scope="module")
def nih_root(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("nih")
    bbox_lines = _lines("BBox_List_2017.csv.gz")
    boxes: dict[str, str] = {}  # label -> line; one image per label
    for line in bbox_lines[1:]:
        image, label = line.split(",")[:2]
        if (
            label in BOX_LABELS
            and label not in boxes
            and image not in {b.split(",")[0] for b in boxes.values()}
        ):
            boxes[label] = line
    box_images = [boxes[label].split(",")[0] for label in BOX_LABELS]

    entry_lines = _lines("Data_Entry_2017_v2020.csv.gz")
    by_image = {line.split(",", 1)[0]: line for line in entry_lines[1:]}
    singles: dict[str, list[str]] = {}  # label -> two single-label images (train, test)
    extra: list[str] = []  # a "No Finding" and a multi-label image
    for line in entry_lines[1:]:
        image, labels = line.split(",")[:2]
        if image in box_images:
            continue
        if labels in DX_LABELS and len(singles.setdefault(labels, [])) < 2:
            singles[labels].append(image)
        elif (
            labels in ("No Finding", "Cardiomegaly|Emphysema") and len(extra) < 2 and labels not in str(extra)
        ):
            extra.append(f"{image}:{labels}")
        if all(len(singles.get(lab, [])) == 2 for lab in DX_LABELS) and len(extra) == 2:
            break
    train = [box_images[0], box_images[1]] + [v[0] for v in singles.values()]
    test = box_images[2:] + [v[1] for v in singles.values()] + [e.split(":")[0] for e in extra]
    images = train + test

    bad_entry = "99999999_000.png,Bogus_Disease,0,99999,40,M,PA,2048,2048,0.14,0.14"
    (root / "Data_Entry_2017_v2020.csv").write_text(
        "\n".join([entry_lines[0], *(by_image[i] for i in images), bad_entry]) + "\n"
    )
    bad_box = f"{box_images[2]},Mass,abc,10,20,30,,,"
    (root / "BBox_List_2017.csv").write_text("\n".join([bbox_lines[0], *boxes.values(), bad_box]) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    missing = singles["Pneumothorax"][1]  # a test diagnosis image left out
    for n, image in enumerate(images):
        if image == missing:
            continue
        folder = root / f"images_{1 + n % 2:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("L", (64, 64), color=n * 10 % 256).save(folder / image)
    return {
        "root": root,
        "boxes": {label: boxes[label].split(",") for label in BOX_LABELS},
        "singles": singles,
        "train": train,
        "test": test,
        "missing": missing,
        "bad_box_row": len(boxes) + 1,
        "bad_entry_row": len(images) + 1,
    }


def _samples(family: str, split: str, root) -> list:
    return list(NIHChestXray14Adapter().samples(family, split, {"root": str(root)}))


def test_nih_label_names_map_to_diseases_14():
    assert disease_of("Effusion") == "pleural effusion"
    assert disease_of("Pleural_Thickening") == "pleural thickening"
    assert disease_of("Infiltrate") == "infiltration"
    assert disease_of("No Finding") == "no finding"
    assert disease_of("Bogus") is None


def test_nih_diagnosis_samples_single_label_images_per_split(nih_root):
    test = _samples("diagnosis_recall1", "test", nih_root["root"])
    expected = {v[1]: disease_of(label) for label, v in nih_root["singles"].items()}
    got = {s.metadata["image_index"]: s.target for s in test}
    # single-label box images of the test list also count; No Finding / multi-label never
    assert {k: got[k] for k in expected} == expected
    assert all(len(s.metadata["labels"]) == 1 for s in test)
    assert not {e for e in got if e not in nih_root["test"]}
    train = _samples("diagnosis_recall1", "train", nih_root["root"])
    assert {s.metadata["image_index"] for s in train} <= set(nih_root["train"])
    assert {v[0] for v in nih_root["singles"].values()} <= {s.metadata["image_index"] for s in train}
    sample = test[0]
    assert sample.question == "What is the most likely diagnosis for this chest X-ray?"
    assert Path(sample.images[0]).parent.name == "images"  # found in images_00x/images/
    missing = next(s for s in test if s.metadata["image_index"] == nih_root["missing"])
    assert not os.path.exists(missing.images[0])  # still yielded: the runner records it


def test_nih_localization_one_sample_per_box_normalised(nih_root):
    test = _samples("localization", "test", nih_root["root"])
    train = _samples("localization", "train", nih_root["root"])
    assert len(train) == 2 and len(test) == len(BOX_LABELS) - 2
    for sample in train + test:
        row = nih_root["boxes"][next(k for k in BOX_LABELS if disease_of(k) == sample.query["finding"])]
        x, y, w, h = (float(v) for v in row[2:6])
        assert sample.metadata["image_index"] == row[0]
        assert sample.target == [pytest.approx([x / 1024, y / 1024, (x + w) / 1024, (y + h) / 1024])]
        assert all(0 <= v <= 1 for v in sample.target[0])
        assert sample.metadata["image_size"] == [1024, 1024]
        assert sample.question == f"Where is the {sample.query['finding']} in this chest X-ray?"
    assert "infiltration" in {s.query["finding"] for s in train + test}


def test_nih_unsupported_family_and_split(nih_root):
    with pytest.raises(DataError, match="families"):
        _samples("vqa_open", "test", nih_root["root"])
    with pytest.raises(DataError, match="splits"):
        _samples("localization", "val", nih_root["root"])
    with pytest.raises(DataError, match="not found"):
        _samples("localization", "test", nih_root["root"] / "nowhere")
    strict = NIHChestXray14Adapter().samples(
        "localization", "test", {"root": str(nih_root["root"]), "strict": 1}
    )
    with pytest.raises(DataError, match="row"):
        list(strict)


def test_nih_falls_back_to_packaged_metadata(tmp_path, nih_root):
    image = nih_root["singles"]["Hernia"][1]
    (tmp_path / "test_list.txt").write_text(image + "\n")
    (tmp_path / "train_val_list.txt").write_text("")
    (tmp_path / "images").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "images" / image)
    samples = _samples("diagnosis_recall1", "test", tmp_path)
    assert [(s.metadata["image_index"], s.target, s.images[0]) for s in samples] == [
        (image, "hernia", str(tmp_path.resolve() / "images" / image))
    ]
    identity = NIHChestXray14Adapter().identity({"root": str(tmp_path)})
    assert identity.startswith("nih_chestxray14-")


def test_check_reports_missing_image_and_malformed_rows(nih_root, capsys):
    report = check_dataset("nih_chestxray14", nih_root["root"])
    assert not report.ok
    assert [Path(p).name for p in report.missing_images] == [nih_root["missing"]]
    assert report.counts["test"]["localization"] == len(BOX_LABELS) - 2
    assert report.counts["train"]["diagnosis_recall1"] >= len(DX_LABELS)
    assert report.labels["test/diagnosis_recall1"]["pneumothorax"] == 1
    referenced = {
        i
        for split in ("train", "test")
        for f in ("diagnosis_recall1", "localization")
        for s in _samples(f, split, nih_root["root"])
        for i in s.images
    }
    assert report.images == len(referenced) and "missing: 1" in report.to_text()
    text = report.to_text()
    assert f"BBox_List_2017.csv, row {nih_root['bad_box_row']}" in text
    assert f"Data_Entry_2017_v2020.csv, row {nih_root['bad_entry_row']}" in text
    assert nih_root["missing"] in text and "PROBLEMS FOUND" in text

    parser = argparse.ArgumentParser()
    add_check_arguments(parser)
    assert cli_check(parser.parse_args(["nih_chestxray14", str(nih_root["root"])])) == 1
    assert nih_root["missing"] in capsys.readouterr().out
    assert cli_check(parser.parse_args(["nih_chestxray14", str(nih_root["root"] / "nope")])) == 2
    assert cli_check(parser.parse_args(["no_such_dataset", str(nih_root["root"])])) == 2
    assert cli_check(parser.parse_args(["nih_chestxray14", str(nih_root["root"]), "--json"])) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def _run_ok(argv: list[str], out: Path, missing: str) -> None:
    from cxbench.cli import main

    argv = [
        *argv,
        "--model",
        "random",
        "--no-progress",
        "--no-cache",
        "--output",
        str(out),
        "--bootstrap",
        "20",
    ]
    assert main(argv) == 0
    assert sorted(out.rglob("*.json")), "no result files written"
    logs = [json.loads(line) for p in out.rglob("*diagnosis_recall1*.jsonl") for line in p.open()]
    assert any(missing in json.dumps(row) and "missing_image" in json.dumps(row) for row in logs)


def test_cli_run_nih_tasks_end_to_end(nih_root, tmp_path, capsys):
    import yaml

    from cxbench.tasks import builtin_task_dir

    # the task YAMLs with dataset.root set: the whole path through the runner and the baseline
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name in ("nih_localization", "nih_diagnosis_recall1"):
        config = yaml.safe_load((builtin_task_dir() / f"{name}.yaml").read_text())
        config["name"] = f"fixture_{name}"
        config["dataset"]["root"] = str(nih_root["root"])
        (tasks / f"fixture_{name}.yaml").write_text(yaml.safe_dump(config))
    names = "fixture_nih_localization,fixture_nih_diagnosis_recall1"
    _run_ok(["run", "--include-path", str(tasks), "--tasks", names], tmp_path / "a", nih_root["missing"])


def test_cli_run_nih_tasks_with_data_root(nih_root, tmp_path, capsys):
    from cxbench.cli import main

    argv = ["run", "--tasks", "nih_localization,nih_diagnosis_recall1", "--data-root", str(nih_root["root"])]
    base = [
        "--model",
        "random",
        "--no-progress",
        "--no-cache",
        "--output",
        str(tmp_path),
        "--bootstrap",
        "20",
    ]
    assert main([*argv, *base]) == 0, capsys.readouterr().err
    _run_ok(argv, tmp_path / "b", nih_root["missing"])


# ---------------------------------------------------------------------------------------------
# local CSV / JSONL


def _local(tmp_path: Path, rows: list[str], header: str = "image,label,report,split") -> Path:
    (tmp_path / "imgs").mkdir(exist_ok=True)
    for name in ("a.png", "b.png", "c.png"):
        Image.new("L", (16, 16)).save(tmp_path / "imgs" / name)
    path = tmp_path / "set.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _local_samples(path: Path, family: str = "diagnosis_recall1", split: str = "test") -> list:
    return list(LocalCSVAdapter().samples(family, split, {"root": str(path)}))


def test_local_csv_synonyms_splits_and_reports(tmp_path):
    path = _local(
        tmp_path,
        [
            "imgs/a.png,Effusion,Small left effusion.,test",
            "imgs/b.png,PLEURAL_THICKENING,,",
            "imgs/c.png,enlarged heart,Enlarged heart.,train",
            "imgs/missing.png,oedema,,test",
        ],
    )
    samples = _local_samples(path)
    assert [s.target for s in samples] == ["pleural effusion", "pleural thickening", "edema"]
    assert samples[0].images == [str((tmp_path / "imgs" / "a.png").resolve())]
    assert [s.target for s in _local_samples(path, split="train")] == ["cardiomegaly"]
    reports = _local_samples(path, "report_generation")
    assert [s.target for s in reports] == ["Small left effusion."]
    assert canonical_label("Hiatal Hernia") == "hernia" and canonical_label("no finding") is None
    report = check_dataset("local_csv", path)
    assert [Path(p).name for p in report.missing_images] == ["missing.png"] and not report.ok
    assert report.counts["test"]["diagnosis_recall1"] == 3


def test_local_csv_refuses_paths_leaving_its_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "outside.png")
    for row, bad in (
        ("../outside.png,mass", "../outside.png"),
        (f"{tmp_path / 'outside.png'},mass", "outside"),
    ):
        path = _local(data, ["imgs/a.png,mass", row], header="image,label")
        with pytest.raises(DataError, match=rf"set\.csv, row 2: image path .*{bad}.* leaves"):
            _local_samples(path)
    (data / "imgs" / "link.png").symlink_to(tmp_path / "outside.png")
    path = _local(data, ["imgs/link.png,mass"], header="image,label")
    with pytest.raises(DataError, match=r"set\.csv, row 1: .*leaves"):
        _local_samples(path)
    report = check_dataset("local_csv", path)
    assert not report.ok and "row 1" in report.malformed[0]


def test_local_csv_errors_name_file_and_row(tmp_path):
    path = _local(tmp_path, ["imgs/a.png,mass", "imgs/b.png,broken bone"], header="image,label")
    with pytest.raises(DataError, match=r"set\.csv, row 2: unknown label 'broken bone'"):
        _local_samples(path)
    with pytest.raises(DataError, match="report"):
        _local_samples(_local(tmp_path, ["imgs/a.png,mass"], header="image,label"), "report_generation")
    with pytest.raises(DataError, match="no 'image' column"):
        _local_samples(_local(tmp_path, ["imgs/a.png,mass"], header="picture,label"))
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text('{"image": "imgs/a.png", "label": "Nodules", "split": "val"}\n{broken\n')
    with pytest.raises(DataError, match=r"set\.jsonl, row 2: not valid JSON"):
        list(LocalCSVAdapter().samples("diagnosis_recall1", "val", {"root": str(jsonl)}))
    jsonl.write_text('{"image": "imgs/a.png", "label": "Nodules", "split": "val"}\n')
    samples = list(LocalCSVAdapter().samples("diagnosis_recall1", "val", {"root": str(jsonl)}))
    assert [s.target for s in samples] == ["nodule"]
    parser = argparse.ArgumentParser()
    add_check_arguments(parser)
    assert cli_check(parser.parse_args(["local_csv", str(jsonl)])) == 0


# ---------------------------------------------------------------------------------------------
# NIH temporal pairs (label-derived change; task nih_temporal_label_change)

TEMPORAL_PATIENTS = {"1": "test", "20": "train", "148": None}  # 148: split across the two lists


@pytest.fixture(scope="module")
def nih_temporal_root(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("nih_temporal")
    lines = _lines("Data_Entry_2017_v2020.csv.gz")
    rows = [line for line in lines[1:] if line.split(",")[3] in TEMPORAL_PATIENTS]
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    split = {"train": [], "test": []}
    for line in rows:
        image, patient = line.split(",")[0], line.split(",")[3]
        follow_up = int(line.split(",")[2])
        which = TEMPORAL_PATIENTS[patient] or ("train" if follow_up == 1 else "test")
        split[which].append(image)
    (root / "train_val_list.txt").write_text("\n".join(split["train"]) + "\n")
    (root / "test_list.txt").write_text("\n".join(split["test"]) + "\n")
    missing = "00000001_002.png"
    (root / "images").mkdir()
    for line in rows:
        if line.split(",")[0] != missing:
            Image.new("L", (32, 32), 40).save(root / "images" / line.split(",")[0])
    return {"root": root, "rows": rows, "missing": missing}


def test_nih_temporal_pairs_derive_change_from_label_sets(nih_temporal_root):
    labels = {line.split(",")[0]: line.split(",")[1] for line in nih_temporal_root["rows"]}
    # patient 1 (real rows): Cardiomegaly -> Cardiomegaly|Emphysema -> Cardiomegaly|Effusion
    assert [labels[f"00000001_00{i}.png"] for i in range(3)] == [
        "Cardiomegaly",
        "Cardiomegaly|Emphysema",
        "Cardiomegaly|Effusion",
    ]
    test = _samples("temporal_comparison", "test", nih_temporal_root["root"])
    got = [(Path(s.images[0]).name, Path(s.images[1]).name, s.query["finding"], s.target) for s in test]
    patient_1 = [g for g in got if g[0].startswith("00000001_")]
    assert patient_1 == [
        ("00000001_000.png", "00000001_001.png", "cardiomegaly", "stable"),
        ("00000001_000.png", "00000001_001.png", "emphysema", "worsened"),
        ("00000001_001.png", "00000001_002.png", "cardiomegaly", "stable"),
        ("00000001_001.png", "00000001_002.png", "pleural effusion", "worsened"),
        ("00000001_001.png", "00000001_002.png", "emphysema", "improved"),
    ]
    kinds = {(s.query["finding"], s.metadata["image_index"]): s.metadata["label_change"] for s in test}
    assert kinds[("emphysema", "00000001_002.png")] == "resolved"
    assert kinds[("emphysema", "00000001_001.png")] == "new"
    sample = test[0]
    assert sample.metadata["prior_image_index"] == "00000001_000.png"
    assert "label-derived" in sample.metadata["change_source"]
    assert sample.question.startswith("The first image is the prior study and the second image is the")
    # patient 148: pairs with follow-up 1 (in the train list) cross the split lists and are left out
    assert all(
        "00000148_001.png" not in (Path(s.images[0]).name, Path(s.images[1]).name)
        for split in ("train", "test")
        for s in _samples("temporal_comparison", split, nih_temporal_root["root"])
    )
    assert any(g[0] == "00000148_002.png" for g in got)  # follow-ups 2 -> 3 are both in test
    train = _samples("temporal_comparison", "train", nih_temporal_root["root"])
    assert {Path(s.images[1]).name[:8] for s in train} == {"00000020"}
    # without persistent findings: only new / resolved
    no_stable = list(
        NIHChestXray14Adapter().samples(
            "temporal_comparison",
            "test",
            {"root": str(nih_temporal_root["root"]), "temporal_persistent": "false"},
        )
    )
    assert no_stable and {s.target for s in no_stable} == {"improved", "worsened"}


def test_nih_temporal_check_and_cli_run(nih_temporal_root, tmp_path, capsys):
    from cxbench.cli import main

    report = check_dataset("nih_chestxray14", nih_temporal_root["root"])
    assert report.counts["test"]["temporal_comparison"] >= 5
    assert set(report.labels["test/temporal_comparison"]) <= {"improved", "stable", "worsened"}
    assert [Path(p).name for p in report.missing_images] == [nih_temporal_root["missing"]]
    argv = ["run", "--tasks", "nih_temporal_label_change", "--data-root", str(nih_temporal_root["root"])]
    for model in ("random", "prior"):
        out = tmp_path / model
        base = ["--model", model, "--no-progress", "--no-cache", "--output", str(out), "--bootstrap", "20"]
        assert main([*argv, *base]) == 0, capsys.readouterr().err
        result = json.loads((out / model / "nih_temporal_label_change.json").read_text())
        assert result["n"] == report.counts["test"]["temporal_comparison"]
        rows = [json.loads(x) for x in (out / model / "nih_temporal_label_change.samples.jsonl").open()]
        assert any(r.get("error") == "missing_image" for r in rows)


def test_nih_refuses_image_names_that_leave_the_folder(tmp_path):
    lines = _lines("Data_Entry_2017_v2020.csv.gz")
    bad = "../outside.png," + lines[1].split(",", 1)[1]
    (tmp_path / "Data_Entry_2017_v2020.csv").write_text("\n".join([lines[0], lines[1], bad]) + "\n")
    (tmp_path / "train_val_list.txt").write_text("")
    (tmp_path / "test_list.txt").write_text(lines[1].split(",")[0] + "\n../outside.png\n")
    report = check_dataset("nih_chestxray14", tmp_path)
    assert any("row 2: 'Image Index' '../outside.png' is not a plain" in m for m in report.malformed)


def test_data_set_warnings_are_shown_once_per_process(caplog):
    """A run loads a data set once per task and split; its "skipped N rows" warning shows once."""
    import logging

    from cxbench.data.adapters import get_adapter
    from cxbench.data.validate import warn_skipped

    get_adapter("mimic_cxr")  # an adapter load installs the filter on the data loggers
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            warn_skipped("mimic_cxr", 2, "x.csv, row 3: bad", "/x/once-test")
        warn_skipped("mimic_cxr", 2, "x.csv, row 3: bad", "/y/once-test")
        logger = logging.getLogger("cxbench.data.validate")
        logger.error("an error is never swallowed")
        logger.error("an error is never swallowed")
    messages = [r.getMessage() for r in caplog.records]
    messages = [m for m in messages if "once-test" in m or "swallowed" in m]
    assert len(messages) == 4
    assert "/x/once-test" in messages[0] and "skipped 2 malformed row(s), first: x.csv, row 3" in messages[0]
    assert "/y/once-test" in messages[1]
    assert messages[2:] == ["an error is never swallowed"] * 2
