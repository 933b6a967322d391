"""Broken data files (CSV/JSONL/manifests, not image bytes): each gives a clear error naming file and
row, or is read correctly; never a deep traceback. The policy per case is in docs/reliability.md."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import HELPERS
from PIL import Image

from cxbench.cli import main
from cxbench.data.adapters import DataError, JsonlAdapter
from cxbench.data.local_csv import LocalCSVAdapter
from cxbench.data.nih import NIHChestXray14Adapter
from cxbench.tasks import Task, TaskError


def _row(**fields) -> str:
    return json.dumps(
        {"id": "s1", "images": ["a.png"], "question": "Is there a nodule?", "target": "yes", **fields}
    )


def _jsonl(tmp_path: Path, data: bytes, family: str = "vqa_closed") -> list:
    Image.new("L", (16, 16)).save(tmp_path / "a.png")
    (tmp_path / "data.jsonl").write_bytes(data)
    return list(JsonlAdapter().samples(family, "test", {"path": str(tmp_path / "data.jsonl")}))


BOX = [[0.1, 0.2, 0.5, 0.6]]
#: name -> (file bytes, family, expected error regex; None: read correctly)
JSONL_CASES = {
    "empty_file": (b"", "vqa_closed", r"data\.jsonl: empty data set"),
    "blank_lines_only": (b"\n\n  \n", "vqa_closed", r"data\.jsonl: empty data set"),
    "bom": (("\ufeff" + _row() + "\n").encode(), "vqa_closed", None),
    "crlf": ((_row() + "\r\n" + _row(id="s2") + "\r\n").encode(), "vqa_closed", None),
    "non_utf8": (
        (_row() + "\n").encode() + b'{"id": "s2", "images": [], "question": "\xff", "target": "no"}\n',
        "vqa_closed",
        r"data\.jsonl:2: not UTF-8 text \(byte 0xff",
    ),
    "truncated_last_line": (
        (_row() + "\n" + _row(id="s2")[:30]).encode(),
        "vqa_closed",
        r"data\.jsonl:2: not valid JSON",
    ),
    "duplicate_ids": (
        (_row() + "\n" + _row() + "\n").encode(),
        "vqa_closed",
        r"data\.jsonl:2: sample id 's1' appears twice \(first on line 1\)",
    ),
    "row_not_object": (b"[1, 2]\n", "vqa_closed", r"data\.jsonl:1: a row must be a JSON object, got list"),
    "row_is_number": (b"5\n", "vqa_closed", r"data\.jsonl:1: a row must be a JSON object, got int"),
    "images_not_list": (
        (_row(images="a.png") + "\n").encode(),
        "vqa_closed",
        r"data\.jsonl:1: 'images' must be a list",
    ),
    "id_is_object": ((_row(id={"x": 1}) + "\n").encode(), "vqa_closed", r"data\.jsonl:1: 'id' must be"),
    "null_target": ((_row(target=None) + "\n").encode(), "vqa_closed", r"data\.jsonl:1: 'target' is null"),
    "choices_not_list": (
        (_row(choices="AB") + "\n").encode(),
        "vqa_closed",
        r"data\.jsonl:1: 'choices' must be a list",
    ),
    "path_leaves_folder": (
        (_row(images=["../../etc/passwd"]) + "\n").encode(),
        "vqa_closed",
        r"data\.jsonl:1: image path '\.\./\.\./etc/passwd' leaves",
    ),
    "absolute_path_outside": (
        (_row(images=["/etc/hostname"]) + "\n").encode(),
        "vqa_closed",
        r"data\.jsonl:1: image path '/etc/hostname' leaves",
    ),
    "nan_box": (
        (_row(target=[[float("nan"), 0.1, 0.5, 0.6]]) + "\n").encode(),
        "localization",
        r"data\.jsonl:1: box .* NaN or infinite",
    ),
    "infinite_box": (
        (b'{"id": "s1", "images": ["a.png"], "question": "q", "target": [[0.1, 0.1, Infinity, 0.5]]}\n'),
        "localization",
        r"NaN or infinite",
    ),
    "box_outside_image": (
        (_row(target=[[0.5, 0.1, 1.7, 0.3]]) + "\n").encode(),
        "localization",
        r"data\.jsonl:1: box .* lies outside the image",
    ),
    "empty_box": (
        (_row(target=[[0.5, 0.5, 0.5, 0.9]]) + "\n").encode(),
        "localization",
        r"data\.jsonl:1: box .* is empty",
    ),
    "box_not_numbers": (
        (_row(target=[["0.1", 0.1, 0.5, 0.5]]) + "\n").encode(),
        "localization",
        r"data\.jsonl:1: box .* is not four numbers",
    ),
    "single_box_accepted": ((_row(target=[0.1, 0.2, 0.5, 0.6]) + "\n").encode(), "localization", None),
    "huge_field": ((_row(question="x" * 5_000_000) + "\n").encode(), "vqa_closed", None),
}


@pytest.mark.parametrize("name", sorted(JSONL_CASES))
def test_jsonl_adapter_cases(name, tmp_path):
    data, family, error = JSONL_CASES[name]
    if error is None:
        samples = _jsonl(tmp_path, data, family)
        assert (
            samples and samples[0].id == "s1" and samples[0].images == [str((tmp_path / "a.png").resolve())]
        )
        if family == "localization":
            assert samples[0].target == [pytest.approx([0.1, 0.2, 0.5, 0.6])]
        return
    with pytest.raises(DataError, match=error):
        _jsonl(tmp_path, data, family)


def test_jsonl_symlink_out_of_the_folder_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "secret.png")
    (data / "inside.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(DataError, match=r"data\.jsonl:1: image path 'inside\.png' leaves"):
        _jsonl(data, (_row(images=["inside.png"]) + "\n").encode())


def test_a_bad_row_stops_the_run_with_one_line_and_a_rerun_redoes_nothing(tmp_path, capsys):
    """Fail-fast for a user's JSONL file: rows before the bad one are cached, none is lost."""
    Image.new("L", (16, 16)).save(tmp_path / "a.png")
    rows = [_row(id=f"s{i}") for i in range(10)]
    rows[7] = _row(id="s7", images="a.png")
    (tmp_path / "data.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "t.yaml").write_text(
        "name: t\nfamily: vqa_closed\n"
        f"dataset: {{name: jsonl, path: {tmp_path / 'data.jsonl'}, split: test}}\n"
        "prompt: '{question}'\nparser: closed\nlabels: [yes, no]\nmetrics: [accuracy]\n"
    )
    # a model that reads no train split: the bad row is met in the middle of the run
    model = f"python:{HELPERS}:echo_yes"
    argv = ["run", "--include-path", str(tmp_path), "--tasks", "t", "--model", model, "--batch-size", "2"]
    argv += ["--cache", str(tmp_path / "c.sqlite"), "--output", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'data.jsonl'}:8: 'images' must be a list" in err and "Traceback" not in err
    rows[7] = _row(id="s7")
    (tmp_path / "data.jsonl").write_text("\n".join(rows) + "\n")
    assert main(argv) == 0
    assert "6 cached" in capsys.readouterr().err  # three batches of two were answered before the stop


# ------------------------------------------------------------------------------ local CSV


def _csv(tmp_path: Path, data: bytes, family: str = "diagnosis_recall1", name: str = "set.csv") -> list:
    Image.new("L", (16, 16)).save(tmp_path / "a.png")
    (tmp_path / name).write_bytes(data)
    return list(LocalCSVAdapter().samples(family, "test", {"root": str(tmp_path / name)}))


CSV_CASES = {
    "empty_file": (b"", r"set\.csv: empty file"),
    "header_only": (b"image,label\n", r"set\.csv: no rows"),
    "wrong_columns": (b"picture,finding\na.png,mass\n", r"set\.csv: no 'image' column"),
    "non_utf8": (
        b"image,label\na.png,mass\n\xff.png,mass\n",
        r"set\.csv, line 3: not UTF-8 text \(byte 0xff",
    ),
    "too_many_values": (
        b"image,label\na.png,mass,extra,more\n",
        r"set\.csv, row 1: more values than columns",
    ),
    "unknown_label": (
        b"image,label\na.png,mass\na.png,broken bone\n",
        r"set\.csv, row 2: unknown label 'broken bone'",
    ),
    "nul_byte": (b"image,label\na.png,ma\x00ss\n", r"set\.csv, row 1: unknown label 'ma\\x00ss'"),
    "field_over_16_mb": (
        b'image,label,report\na.png,mass,"' + b"y" * (16 * 2**20 + 10) + b'"\n',
        r"set\.csv, row 1: unreadable CSV \(field larger",
    ),
    "unclosed_quote": (b'image,label\n"a.png,mass\n', r"set\.csv, row 1: no 'label'"),
    "bom_and_crlf": (b"\xef\xbb\xbfimage,label\r\na.png,mass\r\n", None),
    "report_over_128_kb": (b"image,label,report\na.png,mass," + b"y" * 200_000 + b"\n", None),
    "duplicate_image_rows": (b"image,label\na.png,mass\na.png,nodule\n", None),
}


@pytest.mark.parametrize("name", sorted(CSV_CASES))
def test_local_csv_cases(name, tmp_path):
    data, error = CSV_CASES[name]
    if error is None:
        samples = _csv(tmp_path, data)
        assert samples and len({s.id for s in samples}) == len(samples)  # ids by row: always unique
        return
    with pytest.raises(DataError, match=error):
        _csv(tmp_path, data)


# ------------------------------------------------------------------------------ NIH ChestX-ray14

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
)
NIH_ENTRIES = "".join(f"0000000{i}_000.png,Mass,0,{i},50,M,PA,2048,2048,0.14,0.14\n" for i in range(4))
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"


def _nih(
    tmp_path: Path, entries: bytes, bbox: bytes | None = None, gz: bool = False, family="diagnosis_recall1"
):
    (tmp_path / "images").mkdir(exist_ok=True)
    for i in range(4):
        Image.new("L", (8, 8)).save(tmp_path / "images" / f"0000000{i}_000.png")
    (tmp_path / ("Data_Entry_2017.csv.gz" if gz else "Data_Entry_2017.csv")).write_bytes(entries)
    good_box = b"00000000_000.png,Mass,10,10,100,100,,,\n"
    (tmp_path / "BBox_List_2017.csv").write_bytes(
        bbox if bbox is not None else BBOX_HEADER.encode() + good_box
    )
    (tmp_path / "train_val_list.txt").write_text("")
    (tmp_path / "test_list.txt").write_text("".join(f"0000000{i}_000.png\n" for i in range(4)))
    return list(NIHChestXray14Adapter().samples(family, "test", {"root": str(tmp_path)}))


def test_nih_non_utf8_metadata_names_the_line(tmp_path):
    bad = (NIH_HEADER + NIH_ENTRIES).encode() + b"\xff\xfe.png,Mass,0,9,50,M,PA,2048,2048,0.14,0.14\n"
    with pytest.raises(DataError, match=r"Data_Entry_2017\.csv, line 6: not UTF-8"):
        _nih(tmp_path, bad)


def test_nih_truncated_and_invalid_gzip(tmp_path):
    whole = gzip.compress(((NIH_HEADER + NIH_ENTRIES) * 40).encode())
    with pytest.raises(DataError, match=r"Data_Entry_2017\.csv\.gz, row \d+: cannot read .*EOFError"):
        _nih(tmp_path, whole[: len(whole) // 2], gz=True)
    with pytest.raises(DataError, match=r"Data_Entry_2017\.csv\.gz, row 1: cannot read .*gzip"):
        _nih(tmp_path, b"not gzip at all", gz=True)


def test_nih_bad_boxes_are_skipped_and_the_rest_is_evaluated(tmp_path, caplog):
    """NIH policy: a bad row of the official files is skipped with a warning; the run goes on."""
    rows = [
        "00000000_000.png,Mass,10,10,100,100,,,",  # good
        "00000001_000.png,Mass,nan,10,100,100,,,",  # NaN
        "00000002_000.png,Mass,inf,10,100,100,,,",  # infinite
        "00000003_000.png,Mass,1000,1000,500,500,,,",  # outside the 1024 px image
        "00000003_000.png,Mass,-5,10,100,100,,,",  # negative
    ]
    bbox = (BBOX_HEADER + "\n".join(rows) + "\n").encode()
    samples = _nih(tmp_path, (NIH_HEADER + NIH_ENTRIES).encode(), bbox, family="localization")
    assert [s.metadata["image_index"] for s in samples] == ["00000000_000.png"]
    assert "skipped 4 malformed row(s)" in caplog.text and "BBox_List_2017.csv, row 2" in caplog.text


def test_nih_crlf_and_bom_are_read(tmp_path):
    entries = ("\ufeff" + NIH_HEADER + NIH_ENTRIES).replace("\n", "\r\n").encode()
    assert len(_nih(tmp_path, entries)) == 4


def test_nih_duplicate_and_unknown_rows_are_skipped(tmp_path, caplog):
    entries = NIH_HEADER + NIH_ENTRIES + "00000001_000.png,Mass,0,1,50,M,PA,2048,2048,0.14,0.14\n"
    entries += "00000009_000.png,Broken_Bone,0,9,50,M,PA,2048,2048,0.14,0.14\n"
    assert len(_nih(tmp_path, entries.encode())) == 4
    assert "skipped 2 malformed row(s)" in caplog.text and "duplicate image" in caplog.text


# ------------------------------------------------------------------------------ manifests and outputs


def test_task_yaml_syntax_error_and_python_tags_are_refused(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: broken\nfamily: [vqa_closed\n")
    with pytest.raises(TaskError, match=r"broken\.yaml"):
        Task.from_yaml(tmp_path / "broken.yaml")
    marker = tmp_path / "pwned"
    (tmp_path / "evil.yaml").write_text(
        f"name: !!python/object/apply:os.system ['touch {marker}']\nfamily: vqa_closed\n"
    )
    with pytest.raises(TaskError, match=r"evil\.yaml"):
        Task.from_yaml(tmp_path / "evil.yaml")
    assert not marker.exists()


def test_truncated_result_file_gives_a_clear_table_error(tmp_path, capsys):
    folder = tmp_path / "results" / "m"
    folder.mkdir(parents=True)
    (folder / "t.json").write_text('{"schema_version": "1.0", "task": {"name": "t"')
    assert main(["table", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "t.json" in err and "Traceback" not in err


def test_truncated_log_gives_a_clear_score_error(small_tasks, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "--include-path", str(small_tasks), "--tasks", "small_vqa_closed", "--model", "prior"]
    assert main([*argv, "--no-cache", "--output", str(out), "--no-progress", "--bootstrap", "10"]) == 0
    log = out / "prior" / "small_vqa_closed.samples.jsonl"
    text = log.read_text()
    log.write_text(text[: len(text) - 40])  # what a crash in the middle of a write would leave
    capsys.readouterr()
    assert main(["score", "--include-path", str(small_tasks), str(log)]) == 2
    err = capsys.readouterr().err
    assert "small_vqa_closed.samples.jsonl" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "content, error",
    [
        (b'{"id": "x", "output": "yes"}\n{"id": "x", "output": "no"}\n', "second prediction"),
        (b'{"id": "ph00000:yn", "output": "yes"}\n{"id": \n', "preds.jsonl:2"),
        (b'{"id": "ph00000:yn", "output": "\xff"}\n', "UTF-8"),
    ],
    ids=["duplicate_ids", "bad_json", "non_utf8"],
)
def test_broken_predictions_files(content, error, small_tasks, tmp_path, capsys):
    (tmp_path / "preds.jsonl").write_bytes(content)
    argv = ["run", "--include-path", str(small_tasks), "--tasks", "small_vqa_closed"]
    argv += [
        "--model",
        f"predictions:{tmp_path / 'preds.jsonl'}",
        "--no-cache",
        "--output",
        str(tmp_path / "o"),
    ]
    assert main([*argv, "--no-progress", "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err
    assert "preds.jsonl" in err and error in err and "Traceback" not in err
