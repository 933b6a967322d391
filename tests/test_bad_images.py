"""A corpus of broken and unusual images, generated here: each gives a clear ImageError naming
the file (or loads correctly), and a run over all of them scores the good samples and records
each bad one as a ``corrupt_image`` error naming its file."""

from __future__ import annotations

import io
import json
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxbench.images import ImageError, image_size, load_image
from cxbench.models import load_model
from cxbench.runner import RunConfig, run_task
from cxbench.tasks import Task

pydicom = pytest.importorskip("pydicom")


# ------------------------------------------------------------------------- builders


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width x height`` 8-bit gray but whose IDAT holds 8 bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 8))
        + _chunk(b"IEND", b"")
    )


def jpeg_header_only(width: int, height: int) -> bytes:
    """A real 8x8 baseline JPEG with its SOF0 size patched and its entropy-coded data dropped."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 50).save(buffer, format="JPEG")
    data = buffer.getvalue()
    sof = data.index(b"\xff\xc0")
    sos = data.index(b"\xff\xda")
    sos_end = sos + 2 + struct.unpack(">H", data[sos + 2 : sos + 4])[0]
    patched = bytearray(data[:sos_end])
    patched[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(patched) + b"\xff\xd9"


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", **elements) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    if pixels.size:
        ds.set_pixel_data(pixels, photometric, pixels.dtype.itemsize * 8)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _png(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _gradient(size: int = 64) -> np.ndarray:
    return np.tile(np.linspace(0, 255, size).astype(np.uint8), (size, 1))


def _rgba() -> Image.Image:
    pixels = np.full((32, 32, 4), 200, dtype=np.uint8)
    pixels[:, :16, 3] = 0  # left half fully transparent (its colour channels are 200)
    return Image.fromarray(pixels, "RGBA")


def _palette(transparent: bool) -> Image.Image:
    image = Image.fromarray(np.tile(np.arange(4, dtype=np.uint8), (8, 2)), "P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 90, 90, 90] + [0] * (256 * 3 - 12))
    if transparent:
        image.info["transparency"] = 3
    return image


def _check_gray16(image: Image.Image) -> None:
    values = np.asarray(image)
    assert image.mode == "L" and values.min() == 0 and values.max() == 255  # scaled, not clipped
    assert np.all(np.diff(values[0].astype(int)) >= 0) and len(np.unique(values)) > 200


def _check_rgba(image: Image.Image) -> None:
    values = np.asarray(image)
    assert image.mode == "RGB" and np.all(values[:, :16] == 0) and np.all(values[:, 16:] == 200)


def _check_palette(transparent: bool) -> Callable[[Image.Image], None]:
    def check(image: Image.Image) -> None:
        values = np.asarray(image)
        assert (
            image.mode == "RGB" and tuple(values[0, 1]) == (255, 0, 0) and tuple(values[0, 2]) == (0, 255, 0)
        )
        assert tuple(values[0, 3]) == ((0, 0, 0) if transparent else (90, 90, 90))

    return check


def _mode(mode: str) -> Callable[[Image.Image], None]:
    def check(image: Image.Image) -> None:
        assert image.mode == mode

    return check


TOO_LARGE = "exceeds the limit of 100,000,000 pixels (refused before decoding"

# name -> (bytes, or None for a directory; the expected error text, or a check of the image)
Case = tuple[bytes | None, str | Callable[[Image.Image], None]]


def corpus() -> dict[str, Case]:
    good_png = _png(Image.fromarray(_gradient()))
    good_jpg = _jpeg(Image.fromarray(_gradient()).convert("RGB"))
    noisy = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    noisy_jpg = _jpeg(Image.fromarray(noisy))  # mostly entropy-coded data: a cut lands inside it
    good_dcm = dicom_bytes(np.tile(np.linspace(0, 4000, 64).astype(np.uint16), (64, 1)), BitsStored=12)
    gray16 = np.tile(np.linspace(0, 4095, 512).astype(np.uint16), (8, 1))  # 12-bit data in a 16-bit PNG
    return {
        # valid, if unusual: each loads
        "good.png": (good_png, _mode("L")),
        "good.jpg": (good_jpg, _mode("RGB")),
        "good.dcm": (good_dcm, _mode("L")),
        "gray16.png": (_png(Image.fromarray(gray16)), _check_gray16),
        "rgba.png": (_png(_rgba()), _check_rgba),
        "gray_alpha.png": (_png(Image.fromarray(_gradient()).convert("LA")), _mode("L")),
        "palette.png": (_png(_palette(False)), _check_palette(False)),
        "palette_transparent.png": (_png(_palette(True)), _check_palette(True)),
        "bilevel.png": (_png(Image.fromarray(_gradient() > 127)), _mode("L")),
        "cmyk.jpg": (_jpeg(Image.new("CMYK", (16, 16), (0, 50, 100, 0))), _mode("RGB")),
        # broken: each is a clear error
        "truncated.png": (good_png[: len(good_png) // 2], "truncated or corrupt PNG data"),
        "truncated.jpg": (noisy_jpg[: len(noisy_jpg) // 2], "truncated or corrupt JPEG data"),
        "truncated_header.jpg": (good_jpg[:200], "truncated or damaged JPEG header"),
        "truncated.dcm": (good_dcm[: len(good_dcm) - 3000], "cannot decode the DICOM pixel data"),
        "truncated_header.dcm": (good_dcm[:300], "not a DICOM image"),
        "signature_only.png": (good_png[:8], "truncated or damaged PNG header"),
        "corrupt_data.png": (
            good_png[:-30] + bytes([good_png[-30] ^ 0xFF]) + good_png[-29:],
            "corrupt PNG data",
        ),
        "empty.png": (b"", "empty file (0 bytes)"),
        "empty.jpg": (b"", "empty file (0 bytes)"),
        "empty.dcm": (b"", "empty file (0 bytes)"),
        "huge_20000.png": (png_header_only(20_000, 20_000), "400,000,000 pixels " + TOO_LARGE),
        "huge_12000.png": (
            png_header_only(12_000, 12_000),
            "12000 x 12000 = 144,000,000 pixels " + TOO_LARGE,
        ),
        "huge_20000.jpg": (jpeg_header_only(20_000, 20_000), "400,000,000 pixels " + TOO_LARGE),
        "huge_20000.dcm": (
            dicom_bytes(np.zeros((2, 2), dtype=np.uint16), Rows=20_000, Columns=20_000),
            "20000 x 20000 = 400,000,000 pixels (DICOM Rows x Columns) " + TOO_LARGE,
        ),
        "text.png": (b"this is not an image\n" * 4, "not a recognised image format"),
        "text.jpg": (b"<html>an error page saved as a picture</html>", "not a recognised image format"),
        "text.dcm": (b"patient notes, not DICOM\n" * 8, "not a DICOM image"),
        "no_pixels.dcm": (
            dicom_bytes(np.zeros(0, dtype=np.uint8), Rows=8, Columns=8),
            "DICOM file without pixel data",
        ),
        "folder.png": (None, "is a directory, not an image file"),
    }


def write_corpus(folder: Path) -> dict[str, Case]:
    cases = corpus()
    for name, (data, _) in cases.items():
        if data is None:
            (folder / name).mkdir()
        else:
            (folder / name).write_bytes(data)
    return cases


# ---------------------------------------------------------------------------- tests


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # 12,000 x 12,000
@pytest.mark.parametrize("name", list(corpus()))
def test_each_case_loads_or_fails_clearly(tmp_path, name):
    cases = write_corpus(tmp_path)
    path = tmp_path / name
    data, expected = cases[name]
    started = time.perf_counter()
    if callable(expected):
        image = load_image(path)
        expected(image)
        assert image_size(path) == image.size
        return
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert time.perf_counter() - started < 2.0
    message = str(caught.value)
    assert message.startswith(f"cannot read image {path}: ")
    assert expected in message, message
    assert "Traceback" not in message and "\n" not in message
    assert caught.value.path == str(path)
    if name.startswith("huge"):
        assert data is not None and len(data) < 2_000  # a tiny file declaring a huge image


def test_the_crafted_headers_declare_what_they_claim(tmp_path):
    (tmp_path / "h.png").write_bytes(png_header_only(20_000, 20_000))
    (tmp_path / "h.jpg").write_bytes(jpeg_header_only(20_000, 20_000))
    for name in ("h.png", "h.jpg"):
        with pytest.raises(Image.DecompressionBombError):
            Image.open(tmp_path / name)
    (tmp_path / "m.png").write_bytes(png_header_only(300, 200))
    (tmp_path / "m.jpg").write_bytes(jpeg_header_only(300, 200))
    for name in ("m.png", "m.jpg"):
        with Image.open(tmp_path / name) as image:
            assert image.size == (300, 200)
    ds = pydicom.dcmread(io.BytesIO(corpus()["huge_20000.dcm"][0]))
    assert (ds.Rows, ds.Columns) == (20_000, 20_000)


MODEL = '''
from cxbench.models.hf import load_image


def answer(request):
    """Loads every image the way the hf/vllm backends do, then answers yes."""
    for path in request.images:
        image = load_image(path, max_pixels=4096)
        assert image.mode == "RGB" and image.width * image.height <= 4096
    return "yes"
'''


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_run_over_the_corpus_scores_the_good_images_and_records_each_bad_one(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    cases = write_corpus(images)
    rows = [
        {"id": f"s{i:02d}", "images": [f"images/{name}"], "question": "Is there a finding?", "target": "yes"}
        for i, name in enumerate(cases)
    ]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "bad_images.yaml").write_text(
        "name: bad_images\nfamily: vqa_closed\n"
        f"dataset: {{name: jsonl, path: {tmp_path / 'data.jsonl'}, split: test}}\n"
        "prompt: '{question}'\nparser: closed\nmetrics: [accuracy]\n"
    )
    (tmp_path / "loader_model.py").write_text(MODEL)
    task = Task.from_yaml(tmp_path / "bad_images.yaml")
    model = load_model(f"python:{tmp_path / 'loader_model.py'}:answer")
    config = RunConfig(output_dir=tmp_path / "out", cache_path="", progress=False, batch_size=4)
    result, stats = run_task(task, model, config)

    bad = {name for name, (_, expected) in cases.items() if isinstance(expected, str)}
    good = set(cases) - bad
    assert len(bad) == 19 and len(good) == 10
    assert result["n"] == len(cases)
    assert result["errors"]["corrupt_image"] == len(bad)
    assert sum(result["errors"].values()) == len(bad)  # the good ones: no model error, all parsed
    assert stats.model_calls == len(good)
    assert result["metrics"]["accuracy"]["value"] == pytest.approx(len(good) / len(cases), abs=1e-6)
    log = tmp_path / "out" / model.name / "bad_images.samples.jsonl"
    by_name = {Path(r["sample"]["images"][0]).name: r for r in map(json.loads, log.open()) if "sample" in r}
    assert set(by_name) == set(cases)
    for name in good:
        assert by_name[name]["error"] is None and by_name[name]["parsed"] == "yes"
    for name in bad:
        row = by_name[name]
        assert row["error"] == "corrupt_image" and row["parsed"] is None
        assert str(images / name) in row["error_message"] and cases[name][1] in row["error_message"]
