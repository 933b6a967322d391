"""cxbench.images: the real pydicom-data chest radiograph and synthetic DICOMs built here."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cxbench.images import ImageError, image_size, load_image

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def _real(name: str) -> Path:
    data_store = pytest.importorskip("data_store", reason="pydicom-data is not installed")
    path = Path(data_store.__file__).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"{path} is not in this pydicom-data")
    return path


def _boxes(gray: np.ndarray) -> dict[str, float]:
    """Mean intensity of both lung fields and of the mediastinal strip (RG1 is a PA view).

    Fractions of width/height chosen from the image: the lungs span about 13-38 % and
    57-88 % of the width over the upper half; the spine and heart border lie at 45-55 %.
    """
    height, width = gray.shape

    def mean(x1: float, y1: float, x2: float, y2: float) -> float:
        return float(gray[int(y1 * height) : int(y2 * height), int(x1 * width) : int(x2 * width)].mean())

    return {
        "right_lung": mean(0.15, 0.15, 0.35, 0.45),  # the patient's right: the image's left
        "left_lung": mean(0.62, 0.15, 0.82, 0.45),
        "mediastinum": mean(0.45, 0.15, 0.55, 0.85),
    }


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_J2KR.dcm"])
def test_real_chest_radiograph_shows_dark_lungs_and_a_bright_mediastinum(name):
    image = load_image(_real(name))
    assert image.mode == "L" and image.size == (1841, 1955)
    regions = _boxes(np.asarray(image, dtype=np.float64))
    assert regions["right_lung"] < regions["mediastinum"] - 40
    assert regions["left_lung"] < regions["mediastinum"] - 40
    # the stored values are MONOCHROME1 (air bright): without the inversion the test would fail
    stored = _boxes(pydicom.dcmread(_real(name)).pixel_array.astype(np.float64))
    assert stored["right_lung"] > stored["mediastinum"] and stored["left_lung"] > stored["mediastinum"]


def test_jpeg2000_and_uncompressed_copies_load_to_the_same_pixels():
    plain = np.asarray(load_image(_real("RG1_UNCR.dcm")), dtype=np.int16)
    j2k = np.asarray(load_image(_real("RG1_J2KR.dcm")), dtype=np.int16)
    assert plain.shape == j2k.shape
    assert np.abs(plain - j2k).max() <= 1  # lossless: identical in practice


def test_real_radiograph_uses_its_window_and_header_only_size():
    path = _real("RG1_UNCR.dcm")
    assert image_size(path) == (1841, 1955)
    ds = pydicom.dcmread(path)
    assert float(ds.WindowCenter) == 15000 and float(ds.WindowWidth) == 30000
    stored = ds.pixel_array.astype(np.float64)
    # window 0..30000 over a 15-bit range, then MONOCHROME1 inverted
    expected = 255 - np.clip(np.rint(((stored - 14999.5) / 29999 + 0.5) * 255), 0, 255)
    got = np.asarray(load_image(path), dtype=np.float64)
    assert np.abs(got - expected).max() <= 1


def test_loading_the_real_radiograph_is_fast():
    path = _real("RG1_UNCR.dcm")
    load_image(path)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        load_image(path)
        times.append(time.perf_counter() - started)
    assert sorted(times)[2] < 2.0  # ~0.07 s here on one core


# --------------------------------------------------------------------- synthetic DICOM


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    syntax: str = ExplicitVRLittleEndian,
    **elements,
) -> Path:
    """A minimal Secondary Capture DICOM file holding ``pixels`` (uncompressed)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return path


def _ramp(low: int, high: int, dtype: str, shape: tuple[int, int] = (16, 64)) -> np.ndarray:
    row = np.linspace(low, high, shape[1]).round().astype(dtype)
    return np.tile(row, (shape[0], 1))


def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path):
    data = _ramp(0, 4095, "uint16")
    m2 = np.asarray(load_image(write_dicom(tmp_path / "m2.dcm", data, "MONOCHROME2", 12)), dtype=int)
    m1 = np.asarray(load_image(write_dicom(tmp_path / "m1.dcm", data, "MONOCHROME1", 12)), dtype=int)
    assert m2[0, 0] == 0 and m2[0, -1] == 255 and np.all(np.diff(m2[0]) >= 0)
    assert np.array_equal(m1, 255 - m2)


def test_8_bit_data_without_a_window_keeps_its_values(tmp_path):
    data = _ramp(0, 255, "uint8", (8, 256))
    image = load_image(write_dicom(tmp_path / "eight.dcm", data))
    assert image.mode == "L" and np.array_equal(np.asarray(image), data)


def test_16_bit_data_without_a_window_is_scaled_over_its_range_not_clipped(tmp_path):
    data = _ramp(1000, 3000, "uint16")
    got = np.asarray(load_image(write_dicom(tmp_path / "sixteen.dcm", data, bits_stored=12)), dtype=int)
    expected = np.rint((data.astype(float) - 1000) * 255 / 2000)
    assert np.array_equal(got, expected)


def _linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR) onto 0..255."""
    fraction = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    return np.rint(fraction * 255)


def test_window_center_and_width_are_applied(tmp_path):
    data = _ramp(0, 4095, "uint16", (4, 512))
    path = write_dicom(tmp_path / "w.dcm", data, bits_stored=12, WindowCenter=2048, WindowWidth=1024)
    got = np.asarray(load_image(path), dtype=float)[0]
    values = data[0].astype(float)
    assert np.all(got[values <= 1535] == 0) and np.all(got[values > 2560] == 255)
    assert np.abs(got - _linear_window(values, 2048, 1024)).max() <= 1


def test_rescale_slope_and_intercept_come_before_the_window(tmp_path):
    data = _ramp(0, 2000, "uint16", (4, 512))  # stored 0..2000 -> -1000..3000 after rescale
    path = write_dicom(
        tmp_path / "ct_like.dcm",
        data,
        bits_stored=12,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=0,  # in rescaled units: stored value 500
        WindowWidth=1000,
    )
    got = np.asarray(load_image(path), dtype=float)[0]
    rescaled = data[0].astype(float) * 2 - 1000
    assert np.abs(got - _linear_window(rescaled, 0, 1000)).max() <= 1
    # the window applied to the stored values instead (-500..500) would leave no pixel black
    assert (got == 0).sum() > 50


def test_a_voi_lut_sequence_is_used_before_the_window(tmp_path):
    data = _ramp(0, 99, "uint16", (4, 100))
    lut = Dataset()
    lut.LUTDescriptor = [100, 0, 12]  # 100 entries from stored value 0, 12-bit output
    lut.add_new("LUTData", "US", [0 if v < 50 else 4095 for v in range(100)])  # a threshold at 50
    path = write_dicom(
        tmp_path / "lut.dcm",
        data,
        bits_stored=12,
        VOILUTSequence=[lut],
        WindowCenter=10,  # would make nearly everything white
        WindowWidth=4,
    )
    got = np.asarray(load_image(path))[0]
    assert np.all(got[:50] == 0) and np.all(got[50:] == 255)


def test_signed_data_and_rgb_dicom(tmp_path):
    signed = _ramp(-1000, 1000, "int16")
    got = np.asarray(load_image(write_dicom(tmp_path / "signed.dcm", signed)), dtype=int)[0]
    assert got[0] == 0 and got[-1] == 255 and np.all(np.diff(got) >= 0)
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 30
    image = load_image(write_dicom(tmp_path / "rgb.dcm", rgb, "RGB"))
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), rgb)


def test_a_multi_frame_dicom_gives_its_first_frame(tmp_path):
    frames = np.stack([np.full((8, 8), v, dtype=np.uint8) for v in (10, 200, 90)])
    frames[0, 0, 0] = 0
    frames[0, 0, 1] = 255
    image = load_image(write_dicom(tmp_path / "frames.dcm", frames, NumberOfFrames=3))
    got = np.asarray(image)
    assert got.shape == (8, 8) and got[0, 0] == 0 and got[0, 1] == 255 and got[4, 4] == 10


def test_a_dicom_without_the_dcm_suffix_is_recognised_by_its_preamble(tmp_path):
    path = write_dicom(tmp_path / "no_suffix.img", _ramp(0, 255, "uint8", (4, 4)))
    assert load_image(path).mode == "L" and image_size(path) == (4, 4)


def test_missing_jpeg2000_plugin_is_a_clear_error_naming_the_file(monkeypatch):
    """Simulates an install without pylibjpeg-openjpeg (and without Pillow's JPEG 2000)."""
    from pydicom.pixels import get_decoder

    path = _real("RG1_J2KR.dcm")
    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setitem(decoder._unavailable, "pylibjpeg", ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0"))
    with pytest.raises(ImageError) as caught:
        load_image(path)
    message = str(caught.value)
    assert str(path) in message and "JPEG 2000" in message
    assert 'pip install "cxbench[dicom]"' in message and "pylibjpeg-openjpeg" in message


def test_a_syntax_no_installed_plugin_decodes_names_the_plugins(tmp_path):
    """JPEG Lossless (common for CR/DX) needs pylibjpeg-libjpeg or GDCM, not in cxbench[dicom]."""
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    path = write_dicom(tmp_path / "lossless.dcm", _ramp(0, 255, "uint8", (4, 4)))
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8 not really a JPEG \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageError) as caught:
        load_image(path)
    message = str(caught.value)
    assert str(path) in message and "JPEG Lossless" in message and "pylibjpeg-libjpeg" in message


def test_without_pydicom_a_dicom_names_the_extra(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "x.dcm", _ramp(0, 255, "uint8", (4, 4)))
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImageError, match=r'needs pydicom: pip install "cxbench\[dicom\]"') as caught:
        load_image(path)
    assert str(path) in str(caught.value)


# ------------------------------------------------------------------ ordinary images


def test_ordinary_8_bit_images_are_returned_pixel_for_pixel(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    colour = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(colour).save(tmp_path / "c.png")
    Image.fromarray(colour).save(tmp_path / "c.jpg", quality=90)
    assert np.array_equal(np.asarray(load_image(tmp_path / "g.png")), gray)
    assert np.array_equal(np.asarray(load_image(tmp_path / "c.png")), colour)
    with Image.open(tmp_path / "c.jpg") as reference:
        assert np.array_equal(np.asarray(load_image(tmp_path / "c.jpg")), np.asarray(reference))


def test_hf_loader_reads_dicom_and_keeps_its_previous_16_bit_scaling(tmp_path):
    from PIL import Image

    from cxbench.models.hf import load_image as hf_load_image

    rgb = hf_load_image(str(_real("RG1_UNCR.dcm")), max_pixels=200_000)
    assert rgb.mode == "RGB" and rgb.width * rgb.height <= 200_000
    data = _ramp(100, 40000, "uint16")
    Image.fromarray(data).save(tmp_path / "sixteen.png")
    got = np.asarray(hf_load_image(str(tmp_path / "sixteen.png")))
    expected = np.rint((data.astype(np.float64) - 100) * (255.0 / 39900)).astype(np.uint8)
    assert np.array_equal(got[..., 0], expected) and np.array_equal(got[..., 1], expected)


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    from PIL import Image

    Image.new("L", (100, 100)).save(tmp_path / "small.png")
    assert load_image(tmp_path / "small.png", pixel_limit=10_000).size == (100, 100)
    with pytest.raises(ImageError, match="100 x 100 = 10,000 pixels exceeds the limit of 9,999"):
        load_image(tmp_path / "small.png", pixel_limit=9_999)
    monkeypatch.setenv("CXBENCH_MAX_IMAGE_PIXELS", "5000")
    with pytest.raises(ImageError, match="exceeds the limit of 5,000 pixels"):
        load_image(tmp_path / "small.png")
    with pytest.raises(ImageError, match="exceeds the limit of 5,000 pixels"):
        image_size(tmp_path / "small.png")


def test_openai_backend_sends_a_dicom_as_the_rendered_png(tmp_path):
    import base64
    import io

    from PIL import Image

    from cxbench.models.openai_compat import image_data_url

    path = write_dicom(tmp_path / "x.dcm", _ramp(0, 4095, "uint16"), "MONOCHROME1", 12)
    url = image_data_url(path)
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as sent:
        assert np.array_equal(np.asarray(sent), np.asarray(load_image(path)))
