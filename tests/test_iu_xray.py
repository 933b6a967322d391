"""IU X-ray reports read from torchxrayvision's packaged archive (real data, never copied)."""

import pytest

from cxbench.data.adapters import DataError, get_adapter
from cxbench.data.iu_xray import load_reports, reports_archive


@pytest.fixture(scope="module")
def reports():
    try:
        reports_archive()
    except DataError as exc:
        pytest.skip(str(exc))
    return load_reports()


def test_every_report_is_read_with_its_sections(reports):
    assert len(reports) == 3955
    paired = [r for r in reports if r["FINDINGS"] and r["IMPRESSION"]]
    assert len(paired) == 3419
    first = reports[0]
    assert first["id"] == "iu-1" and first["INDICATION"] == "Positive TB test"
    assert first["FINDINGS"].startswith(
        "The cardiac silhouette and mediastinum size are within normal limits."
    )


def test_summarization_samples_use_a_fixed_patient_free_split(reports):
    adapter = get_adapter("iu_xray_reports")
    counts = {split: len(list(adapter.samples("text", split, {}))) for split in ("train", "val", "test")}
    assert sum(counts.values()) == 3419
    assert counts == {"train": 2403, "val": 326, "test": 690}
    sample = next(adapter.samples("text", "test", {}))
    assert sample.images == [] and sample.target and sample.query["findings"] == sample.question
    with pytest.raises(DataError, match="'text' family only"):
        next(adapter.samples("vqa_closed", "test", {}))
