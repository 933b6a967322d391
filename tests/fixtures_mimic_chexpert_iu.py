"""Builders of small data sets in the official layouts of CheXpert, CheXpert Plus, MIMIC-CXR-JPG
and IU X-ray, written into temporary folders by the tests (nothing is stored in the repository).

Real data where the environment has it, read in place from torchxrayvision's package folder:

- CheXpert: real rows of ``chexpert_train.csv.gz`` (paths and labels). ``valid.csv`` is made of
  other real train rows whose paths are moved to ``valid/`` (the package has no valid.csv).
- MIMIC-CXR-JPG: the label vectors are those of real consecutive CheXpert studies (the same
  labeler, columns in MIMIC's order); ids, dates and the CSV rows are written for the test.
  Report texts are real IU X-ray findings / impressions laid out as MIMIC-CXR report files.
- CheXpert Plus: real CheXpert paths, real IU X-ray report sections in the CSV's columns.
- IU X-ray: real report XMLs from ``NLMCXR_reports.tgz`` with their real ``parentImage`` ids.

Images are small generated JPG/PNG files (a gradient), never real pixels.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import tarfile
from pathlib import Path

from PIL import Image

from cxbench.data.chexpert import LabelPolicy, label_value, single_disease
from cxbench.data.iu_xray import parse_report, split_of
from cxbench.data.iu_xray_images import view_of
from cxbench.data.nih import packaged_data_dir
from cxbench.labels import CHEXPERT_14

DATA_DIR = packaged_data_dir()
assert DATA_DIR is not None, "torchxrayvision's data folder is needed"
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_14]
MIMIC_LABELS = sorted(CHEXPERT_14)  # the MIMIC-CXR-JPG label files list the observations alphabetically


def image(path: Path, seed: int = 0, size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.new("L", (size, size))
    picture.putdata([(x * 7 + y * 3 + seed * 11) % 256 for y in range(size) for x in range(size)])
    picture.save(path)


def chexpert_rows(limit: int = 4000) -> list[dict[str, str]]:
    with gzip.open(DATA_DIR / "chexpert_train.csv.gz", "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return [row for _, row in zip(range(limit), reader, strict=False)]


def labels_of(row: dict[str, str]) -> dict[str, int | None]:
    return {k: label_value(row[k]) for k in CHEXPERT_14}


def write_csv(path: Path, header: list[str], rows: list[list[str]], gz: bool = False) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if gz:
        path.write_bytes(gzip.compress(buffer.getvalue().encode()))
    else:
        path.write_text(buffer.getvalue())


def iu_reports() -> dict[str, dict]:
    """Real IU X-ray reports (with findings and impression) from the packaged archive, by id."""
    found = {}
    with tarfile.open(DATA_DIR / "NLMCXR_reports.tgz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".xml") and len(found) < 400:
                content = tar.extractfile(member).read()  # type: ignore[union-attr]
                record = parse_report(content, member.name, member.name)
                record["xml"] = content
                found[record["id"]] = record
    return found


# ---------------------------------------------------------------------------------------------
# CheXpert


def build_chexpert(parent: Path) -> dict:
    """``parent/CheXpert-v1.0-small`` with train.csv, valid.csv and images; one image missing and
    one malformed row in train.csv."""
    root = parent / "CheXpert-v1.0-small"
    root.mkdir(parents=True)
    rows = chexpert_rows()
    patients: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        patients.setdefault(row["Path"].split("/")[2], []).append(row)
    names = list(patients)
    train = [r for p in names[:12] for r in patients[p]]
    # valid: single-positive studies of several diseases and some others, moved to valid/
    valid: list[dict[str, str]] = []
    diseases: dict[str, int] = {}
    for p in names[12:]:
        for row in patients[p]:
            if row["Frontal/Lateral"] != "Frontal":
                continue
            disease = single_disease(labels_of(row), LabelPolicy())
            if disease and diseases.get(disease, 0) < 2:
                diseases[disease] = diseases.get(disease, 0) + 1
                valid.append(row)
            elif disease is None and len(valid) < 6:
                valid.append(row)
        if len(valid) >= 20:
            break
    # a lateral view beside one valid study
    lateral = next(
        r for p in names[12:] for r in patients[p] if r["Frontal/Lateral"] == "Lateral" and r not in valid
    )
    lateral = {**lateral, "Path": valid[0]["Path"].replace("view1_frontal", "view2_lateral")}
    valid = [{**r, "Path": r["Path"].replace("/train/", "/valid/")} for r in [*valid, lateral]]
    for n, row in enumerate(train + valid):
        image(parent / row["Path"], n)
    missing = next(r for r in valid if r["Frontal/Lateral"] == "Frontal")
    (parent / missing["Path"]).unlink()
    bad = {**train[1], "Cardiomegaly": "2.0"}
    write_csv(root / "train.csv", CHEXPERT_HEADER, [[r[c] for c in CHEXPERT_HEADER] for r in [*train, bad]])
    write_csv(root / "valid.csv", CHEXPERT_HEADER, [[r[c] for c in CHEXPERT_HEADER] for r in valid])
    return {
        "root": root,
        "train": train,
        "valid": valid,
        "missing": missing["Path"],
        "bad_row": len(train) + 1,
        "diseases": diseases,
    }


# ---------------------------------------------------------------------------------------------
# CheXpert Plus

PLUS_HEADER = [
    "path_to_image",
    "path_to_dcm",
    "frontal_lateral",
    "ap_pa",
    "deid_patient_id",
    "patient_report_date_order",
    "report",
    "section_narrative",
    "section_clinical_history",
    "section_history",
    "section_comparison",
    "section_technique",
    "section_procedure_comments",
    "section_findings",
    "section_impression",
    "section_end_of_impression",
    "section_summary",
    "section_accession_number",
    "age",
    "sex",
    "race",
    "ethnicity",
    "interpreter_needed",
    "insurance_type",
    "recent_bmi",
    "deceased",
    "split",
]


def build_chexpert_plus(root: Path, reports: dict[str, dict]) -> dict:
    """ROOT with df_chexpert_plus_240401.csv and PNGs under PNG/PNG/{train,valid}/ (the CSV's
    ``.jpg`` paths stored as ``.png``); one valid study without findings, one lateral."""
    root.mkdir(parents=True)
    rows = chexpert_rows(600)
    texts = [r for r in reports.values() if r["FINDINGS"] and r["IMPRESSION"]]
    out, expected = [], {}
    for n, row in enumerate(rows[:40]):
        split = "valid" if n >= 28 else "train"
        relative = row["Path"].split("/", 1)[1].replace("train/", f"{split}/", 1)
        report = texts[n]
        findings = report["FINDINGS"] if n != 30 else ""
        side = row["Frontal/Lateral"]
        body = f"FINDINGS:\n{findings}\n\nIMPRESSION:\n{report['IMPRESSION']}"
        values = dict.fromkeys(PLUS_HEADER, "")
        values.update(
            path_to_image=relative,
            path_to_dcm=relative.replace(".jpg", ".dcm"),
            frontal_lateral=side,
            ap_pa=row["AP/PA"],
            deid_patient_id=f"pid{relative.split('/')[1][7:]}",
            patient_report_date_order="1",
            report=body,
            section_findings=findings,
            section_impression=report["IMPRESSION"],
            age=row["Age"],
            sex=row["Sex"],
            split=split,
        )
        out.append([values[c] for c in PLUS_HEADER])
        image(root / "PNG" / "PNG" / relative.replace(".jpg", ".png"), n)
        study = "/".join(relative.split("/")[1:3])
        if side == "Frontal" and findings:
            expected.setdefault(split, {}).setdefault(study, " ".join(findings.split()))
    write_csv(root / "df_chexpert_plus_240401.csv", PLUS_HEADER, out)
    return {"root": root, "expected": expected, "no_findings_row": 31}


# ---------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG

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


def dicom_id(*parts: object) -> str:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def mimic_report(record: dict, findings: bool = True) -> str:
    lines = [
        "                                 FINAL REPORT",
        " EXAMINATION:  CHEST (PA AND LAT)",
        " ",
        f" INDICATION:  {record['INDICATION'] or '___'}",
        " ",
        " COMPARISON:  None.",
        " ",
    ]
    if findings:
        words = record["FINDINGS"].split()
        lines += [" FINDINGS: ", " "] + [" " + " ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
        lines.append(" ")
    lines += [" IMPRESSION: ", " ", " " + record["IMPRESSION"], ""]
    return "\n".join(lines)


CHANGES = {(0, 1): "worsened", (1, 0): "improved", (1, 1): "stable"}


def _by_study(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The first four studies of a patient, in study order."""
    return sorted(rows, key=lambda r: int(r["Path"].split("/")[3][5:]))[:4]


def transitions(history: list[dict[str, str]]) -> list[tuple[int, str, str]]:
    """(pair index, observation, change) of consecutive studies, explicit 0/1 labels only."""
    out = []
    for k, (before, after) in enumerate(zip(history, history[1:], strict=False)):
        for observation in CHEXPERT_14:
            if observation in ("No Finding", "Support Devices"):
                continue
            pair = (label_value(before[observation]), label_value(after[observation]))
            if pair in CHANGES:
                out.append((k, observation, CHANGES[pair]))
    return out


def build_mimic(root: Path, reports: dict[str, dict]) -> dict:
    """A MIMIC-CXR-JPG folder with the reports unpacked into ``files/``.

    Test patient 10000032 has four frontal studies whose labels are those of four real
    consecutive CheXpert studies; study ids are not in date order on purpose. Also: a
    lateral-only study, a study whose report has no FINDINGS, a study without a report file,
    a missing image, a PA + AP study, a malformed label row.
    """
    root.mkdir(parents=True)
    rows = [r for r in chexpert_rows(1500) if r["Frontal/Lateral"] == "Frontal"]
    by_patient: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_patient.setdefault(row["Path"].split("/")[2], []).append(row)
    history = next(
        h
        for h in map(_by_study, by_patient.values())
        if len(h) == 4 and len({c for *_, c in transitions(h)}) == 3
    )
    train_history = next(
        h[:2]
        for h in map(_by_study, by_patient.values())
        if h != history and len(h) >= 2 and any(k == 0 for k, *_ in transitions(h[:2]))
    )
    used = {r["Path"] for r in history + train_history}
    others = [r for r in rows if r["Path"] not in used]
    single = next(r for r in others if single_disease(labels_of(r), LabelPolicy()))
    others.remove(single)
    texts = iter(r for r in reports.values() if r["FINDINGS"] and r["IMPRESSION"])
    studies = []  # (subject, study, split, date, views, label row, report mode)
    ids = [58000004, 51000001, 56000003, 53000002]  # not in date order
    for k, (row, study) in enumerate(zip(history, ids, strict=True)):
        studies.append(("10000032", study, "test", f"2180050{k + 1}", ("PA", "LATERAL"), row, "full"))
    studies += [
        ("10000764", 57000010, "test", "21320101", ("LATERAL",), others[0], "full"),
        ("10000764", 57000011, "test", "21320301", ("AP",), others[1], "impression_only"),
        ("10000898", 50000020, "test", "21500101", ("AP", "PA"), others[2], "none"),
        ("10000935", 50000030, "test", "21600101", ("PA",), others[3], "full"),
        ("10001217", 52000040, "train", "21700101", ("PA", "LATERAL"), train_history[0], "full"),
        ("10001217", 52000041, "train", "21700601", ("AP",), train_history[1], "full"),
        ("10002013", 52000050, "train", "21100101", ("PA",), single, "full"),
        ("10003019", 59000060, "validate", "21200101", ("PA",), others[7], "full"),
    ]
    split_rows, meta_rows, label_rows, expected = [], [], [], {}
    for n, (subject, study, split, date, views, row, mode) in enumerate(studies):
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        for v, view in enumerate(views):
            dicom = dicom_id(subject, study, v)
            split_rows.append([dicom, str(study), subject, split])
            meta_rows.append(
                [dicom, subject, str(study), "CHEST (PA AND LAT)", view, "3056", "2544", date]
                + [f"{101500 + v}.{n:03d}", "CHEST (PA AND LAT)", "postero-anterior", "Erect"]
            )
            image(folder / f"s{study}" / f"{dicom}.jpg", n * 3 + v)
        labels = labels_of(row)
        label_rows.append([subject, str(study)] + [row[c] for c in MIMIC_LABELS])
        record = next(texts)
        if mode != "none":
            (folder / f"s{study}.txt").write_text(mimic_report(record, findings=mode == "full"))
        expected[study] = {"labels": labels, "report": record, "mode": mode, "views": views}
    label_rows.append(["10009999", "59999999", "yes", *([""] * (len(MIMIC_LABELS) - 1))])
    write_csv(
        root / "mimic-cxr-2.0.0-split.csv.gz",
        ["dicom_id", "study_id", "subject_id", "split"],
        split_rows,
        True,
    )
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv", META_HEADER, meta_rows)
    write_csv(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *MIMIC_LABELS], label_rows, True
    )
    missing = root / "files/p10/p10000935/s50000030" / f"{dicom_id('10000935', 50000030, 0)}.jpg"
    missing.unlink()
    return {
        "root": root,
        "studies": expected,
        "history": ids,
        "transitions": transitions(history),
        "missing": str(missing),
        "bad_label_row": len(label_rows),
    }


# ---------------------------------------------------------------------------------------------
# IU X-ray


def build_iu(root: Path, reports: dict[str, dict], xml: str = "folder") -> dict:
    """ROOT/NLMCXR_png with the PNGs of ~20 real reports (all their images, one frontal PNG
    missing) and the reports as ``ecgen-radiology/*.xml`` (``xml="folder"``), as
    ``NLMCXR_reports.tgz`` (``"tgz"``) or not at all (``"none"``: the packaged copy is used)."""
    png = root / "NLMCXR_png"
    png.mkdir(parents=True)
    chosen: list[dict] = []
    per_split: dict[str, int] = {}
    for record in reports.values():
        views = [view_of(i) for i in record["images"]]
        frontal = sum(v in ("AP", "PA") for v in views)
        one_frontal = len(views) == 2 and frontal == 1 and sum(v in ("LATERAL", "LL") for v in views) == 1
        if record["FINDINGS"] and one_frontal and per_split.get(record["split"], 0) < 6:
            per_split[record["split"]] = per_split.get(record["split"], 0) + 1
            chosen.append(record)
    no_findings = next(r for r in reports.values() if not r["FINDINGS"] and r["images"])
    chosen.append(no_findings)
    for n, record in enumerate(chosen):
        for k, image_id in enumerate(record["images"]):
            image(png / f"{image_id}.png", n * 2 + k)
    missing_report = next(r for r in chosen if r["split"] == "test")
    missing = next(i for i in missing_report["images"] if view_of(i) in ("PA", "AP"))
    (png / f"{missing}.png").unlink()
    if xml == "folder":
        folder = root / "ecgen-radiology"
        folder.mkdir()
        for record in chosen:
            (folder / f"{record['id'][3:]}.xml").write_bytes(record["xml"])
        (folder / "99999.xml").write_text("<eCitation><Abstract>broken")
    elif xml == "tgz":
        with tarfile.open(root / "NLMCXR_reports.tgz", "w:gz") as tar:
            for record in chosen:
                info = tarfile.TarInfo(f"ecgen-radiology/{record['id'][3:]}.xml")
                info.size = len(record["xml"])
                tar.addfile(info, io.BytesIO(record["xml"]))
    return {"root": root, "reports": chosen, "missing": missing, "missing_report": missing_report["id"]}


__all__ = [
    "build_chexpert",
    "build_chexpert_plus",
    "build_iu",
    "build_mimic",
    "iu_reports",
    "split_of",
]
