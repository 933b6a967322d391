"""The one place where cxbench opens data-set images.

:func:`load_image` returns a fully decoded PIL image; it is called only when pixels are
needed (the runner's image check, a model backend, an image variant, the HTML browser).
:func:`image_size` reads only the header. Both raise :class:`ImageError` (a ``ValueError``)
naming the file and the reason for anything they cannot read, never a library traceback.

Formats
    Whatever Pillow reads (PNG, JPEG, TIFF, BMP, WebP, ...), and DICOM (recognised by the
    ``DICM`` preamble or a ``.dcm`` / ``.dicom`` / ``.dic`` name), read with pydicom
    (``pip install "cxbench[dicom]"``, which also installs the pylibjpeg JPEG 2000 decoder).

Output mode (what models receive)
    - 8-bit grayscale sources stay ``L`` and 8-bit colour stays ``RGB``, pixel for pixel:
      ordinary PNG/JPEG inputs give exactly the pixels they gave before this module existed.
    - 16-bit / 32-bit integer and float grayscale (``I;16*``, ``I``, ``F``) become ``L``,
      min-max scaled to 0..255 (not clipped: a 12-bit image stored in a 16-bit PNG keeps its
      contrast); a constant image becomes black.
    - Alpha is composited over black (the background of a radiograph): ``LA`` -> ``L``,
      ``RGBA`` / palette with transparency -> ``RGB``. Palette, ``1``, ``CMYK`` and other
      modes convert to ``RGB`` (``1`` to ``L``).
    - DICOM grayscale (MONOCHROME1/2) becomes ``L``: stored values -> Modality LUT / rescale
      (``apply_modality_lut``) -> VOI LUT Sequence, else the first Window Center/Width
      (``apply_voi_lut``), else the data's own min..max -> scaled to 0..255 over the output
      range of that VOI transform -> inverted for MONOCHROME1, so that air is black and bone
      is white as in MONOCHROME2. Colour DICOM (RGB, YBR, PALETTE COLOR) becomes ``RGB``.
      Multi-frame objects: the first frame.

    ``native=True`` (used by image variants, which write perturbed copies) returns a Pillow
    image in its decoded mode (e.g. 16-bit ``I;16``) instead; DICOM is rendered as above.

Decompression bombs
    An image whose header declares more than :func:`pixel_limit` pixels (default 100 M, e.g.
    10,000 x 10,000; ``$CXBENCH_MAX_IMAGE_PIXELS`` or ``pixel_limit=`` change it) is refused
    before any pixel is decoded. Pillow keeps its own guard too (2 x
    ``PIL.Image.MAX_IMAGE_PIXELS``, about 179 M pixels), which a higher cxbench limit does not lift.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_PIXEL_LIMIT = 100_000_000
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_DICOM_HINT = 'pip install "cxbench[dicom]"'
#: magic numbers, only to word error messages (Pillow identifies the formats)
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


class ImageError(ValueError):
    """An image cannot be read; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes (ray workers)
        return (type(self), (self.path, self.reason))


def pixel_limit() -> int:
    """The largest image (width x height) cxbench decodes: ``$CXBENCH_MAX_IMAGE_PIXELS`` or 100 M."""
    raw = os.environ.get("CXBENCH_MAX_IMAGE_PIXELS", "").strip().replace("_", "")
    if not raw:
        return DEFAULT_PIXEL_LIMIT
    try:
        value = int(float(raw))
    except ValueError:
        raise ValueError(f"CXBENCH_MAX_IMAGE_PIXELS must be a number of pixels, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"CXBENCH_MAX_IMAGE_PIXELS must be positive, got {value}")
    return value


def is_dicom(path: str | os.PathLike, head: bytes | None = None) -> bool:
    """True for a file with the ``DICM`` preamble or a DICOM file name."""
    if head is None:
        try:
            with open(path, "rb") as handle:
                head = handle.read(132)
        except OSError:
            head = b""
    return head[128:132] == b"DICM" or os.fspath(path).lower().endswith(DICOM_SUFFIXES)


def load_image(
    path: str | os.PathLike, *, pixel_limit: int | None = None, native: bool = False
) -> Image.Image:
    """The decoded image at ``path`` (see the module docstring for modes); raises ImageError."""
    path = os.fspath(path)
    head = _head(path)
    limit = _limit(pixel_limit)
    if is_dicom(path, head):
        return _load_dicom(path, limit)
    with open(path, "rb") as handle:  # our handle: Image.close() would free the pixels
        image = _open_raster(path, handle, head, limit)
        try:
            image.load()
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
            raise ImageError(path, f"truncated or corrupt {image.format} data ({_describe(exc)})") from None
    return image if native else _display_mode(image)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the header only; raises ImageError."""
    path = os.fspath(path)
    head = _head(path)
    if is_dicom(path, head):
        width, height = _dicom_size(path, _read_dicom(path, stop_before_pixels=True))
        if width * height > pixel_limit():
            raise _too_large(path, f"{width} x {height} = {width * height:,} pixels", pixel_limit())
        return width, height
    with open(path, "rb") as handle:
        return _open_raster(path, handle, head, pixel_limit()).size


# ----------------------------------------------------------------------------- helpers


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _limit(value: int | None) -> int:
    if value is None:
        return pixel_limit()
    if value <= 0:
        raise ValueError(f"pixel_limit must be positive, got {value}")
    return int(value)


def _head(path: str) -> bytes:
    """The first 132 bytes; ImageError for a missing file, a folder or an empty file."""
    if os.path.isdir(path):
        raise ImageError(path, "is a directory, not an image file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"cannot open the file ({_describe(exc)})") from None
    if not head:
        raise ImageError(path, "empty file (0 bytes)")
    return head


def _too_large(path: str, size: str, limit: int) -> ImageError:
    return ImageError(
        path,
        f"{size} exceeds the limit of {limit:,} pixels (refused before decoding, a possible "
        "decompression bomb; set CXBENCH_MAX_IMAGE_PIXELS to allow larger images)",
    )


def _open_raster(path: str, handle: Any, head: bytes, limit: int | None) -> Image.Image:
    """Pillow's lazy open (header only) with cxbench's pixel limit."""
    from PIL import Image, UnidentifiedImageError

    kind = next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)
    try:
        image = Image.open(handle)
    except UnidentifiedImageError:
        if kind:  # the right magic number, but Pillow cannot parse what follows
            raise ImageError(path, f"truncated or damaged {kind} header") from None
        raise ImageError(
            path, "not a recognised image format (expected PNG, JPEG, TIFF, BMP, WebP or DICOM)"
        ) from None
    except Image.DecompressionBombError as exc:  # over Pillow's own guard, checked in open()
        found = re.search(r"\((\d+) pixels\)", str(exc))
        if found and limit is not None and int(found.group(1)) > limit:
            raise _too_large(path, f"{int(found.group(1)):,} pixels", limit) from None
        raise ImageError(
            path, f"refused before decoding by Pillow's size guard ({exc}; see PIL.Image.MAX_IMAGE_PIXELS)"
        ) from None
    except Exception as exc:  # a damaged header
        raise ImageError(path, f"truncated or damaged {kind or 'image'} header ({_describe(exc)})") from None
    width, height = image.size
    if limit is not None and width * height > limit:
        raise _too_large(path, f"{width} x {height} = {width * height:,} pixels", limit)
    return image


def _display_mode(image: Image.Image) -> Image.Image:
    """8-bit ``L`` or ``RGB`` as the module docstring describes (L and RGB unchanged)."""
    from PIL import Image

    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode in ("I", "F") or mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.float64)
        return Image.fromarray(_to_uint8(array, float(array.min()), float(array.max())), "L")
    if mode == "1":
        return image.convert("L")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("LA", "La", "RGBA", "RGBa"):
        colour = "L" if image.mode in ("LA", "La") else "RGB"
        if image.mode in ("La", "RGBa"):
            image = image.convert(colour + "A")  # undo premultiplication first
        black = Image.new(colour + "A", image.size, 0)
        return Image.alpha_composite(black, image).convert(colour)
    return image.convert("RGB")


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` mapped linearly from [low, high] to 0..255 (all zeros when the range is empty)."""
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------- DICOM


def _pydicom(path: str) -> Any:
    try:
        import pydicom
    except ImportError:
        raise ImageError(path, f"a DICOM file; reading DICOM needs pydicom: {_DICOM_HINT}") from None
    return pydicom


def _read_dicom(path: str, stop_before_pixels: bool = False) -> Any:
    pydicom = _pydicom(path)
    from pydicom.errors import InvalidDicomError

    try:
        # values over 4 MB (the pixel data) are read only when used: the size check comes first
        ds = pydicom.dcmread(path, defer_size="4 MB", stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:  # no preamble: older files named .dcm
        try:
            ds = pydicom.dcmread(path, defer_size="4 MB", stop_before_pixels=stop_before_pixels, force=True)
        except Exception as exc:
            raise ImageError(path, f"not a readable DICOM file ({_describe(exc)})") from None
    except Exception as exc:
        raise ImageError(path, f"damaged DICOM header ({_describe(exc)})") from None
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageError(path, "not a DICOM image (no Rows/Columns: truncated, or not an image object)")
    if not stop_before_pixels and not any(
        tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    ):
        raise ImageError(path, "DICOM file without pixel data (truncated before the Pixel Data element?)")
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" not in meta and not stop_before_pixels:
        from pydicom import uid

        implicit, little = ds.original_encoding
        if little is not False:
            meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian if implicit else uid.ExplicitVRLittleEndian
    return ds


def _dicom_size(path: str, ds: Any) -> tuple[int, int]:
    try:
        return int(ds.Columns), int(ds.Rows)
    except Exception as exc:
        raise ImageError(path, f"unreadable DICOM Rows/Columns ({_describe(exc)})") from None


def _check_decoder(path: str, ds: Any) -> None:
    """ImageError naming the missing plugin when no installed decoder handles the syntax."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None or not syntax.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise ImageError(path, f"pydicom has no decoder for the transfer syntax {syntax.name}") from None
    if decoder.is_available:
        return
    missing = "; ".join(decoder.missing_dependencies) or "no plugin known"
    if any("openjpeg" in dep for dep in decoder.missing_dependencies):
        action = _DICOM_HINT
    else:
        action = f"install one of the plugins pydicom lists ({_DICOM_HINT} covers JPEG 2000 only)"
    raise ImageError(
        path,
        f"no installed decoder for its {syntax.name} ({syntax}) pixel data: {action}. pydicom's "
        f"decoder plugins and what they need: {missing}",
    )


def _load_dicom(path: str, limit: int) -> Image.Image:
    from PIL import Image

    ds = _read_dicom(path)
    width, height = _dicom_size(path, ds)
    if width * height > limit:
        raise _too_large(
            path, f"{width} x {height} = {width * height:,} pixels (DICOM Rows x Columns)", limit
        )
    if width == 0 or height == 0:
        raise ImageError(path, f"DICOM image of {width} x {height} pixels")
    _check_decoder(path, ds)
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    try:
        if frames > 1:
            ds.pixel_array_options(index=0)
        pixels = ds.pixel_array
    except Exception as exc:
        raise ImageError(path, f"cannot decode the DICOM pixel data ({_describe(exc)})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            if pixels.ndim != 2:
                raise ValueError(f"expected one grayscale frame, got an array of shape {pixels.shape}")
            gray = _render_monochrome(pixels, ds)
            return Image.fromarray(255 - gray if photometric == "MONOCHROME1" else gray, "L")
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            pixels = apply_color_lut(pixels, ds)
        if pixels.ndim != 3 or pixels.shape[-1] != 3:
            raise ValueError(f"expected an RGB frame, got an array of shape {pixels.shape}")
        if pixels.dtype != np.uint8:
            bits = 16 if photometric == "PALETTE COLOR" else int(ds.get("BitsStored") or 16)
            pixels = _to_uint8(pixels.astype(np.float64), 0.0, float(2**bits - 1))
        return Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(path, f"cannot render the {photometric} DICOM pixels ({_describe(exc)})") from None


def _render_monochrome(pixels: np.ndarray, ds: Any) -> np.ndarray:
    """Modality LUT, VOI LUT or window, then 0..255 over the VOI output range (uint8)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, ds)
    lut_items = ds.get("VOILUTSequence") or []
    has_lut = bool(lut_items) and "LUTDescriptor" in lut_items[0] and "LUTData" in lut_items[0]
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if has_lut:
        if not np.issubdtype(values.dtype, np.integer):
            values = np.rint(values).astype(np.int64)  # the LUT is indexed by integers
        out = apply_voi_lut(values, ds)
        entries, first = int(lut_items[0].LUTDescriptor[0]) or 65536, int(lut_items[0].LUTDescriptor[1])
        table = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds)
        return _to_uint8(out.astype(np.float64), float(table.min()), float(table.max()))
    if has_window:
        try:
            out = apply_voi_lut(values, ds)
            # the window's output range as pydicom defines it: map values far outside it
            with np.errstate(all="ignore"):
                ends = apply_voi_lut(np.array([-1e15, 1e15]), ds)
            return _to_uint8(out, float(ends.min()), float(ends.max()))
        except ValueError:  # e.g. a zero window width: fall back to the data range
            pass
    values = np.asarray(values, dtype=np.float64)
    return _to_uint8(values, float(values.min()), float(values.max()))
