"""PNG, JPEG and TIFF radiographs (QA exports that are not DICOM).

Headers are read without decoding: Pillow opens PNG and JPEG lazily, tifffile reads TIFF tags.
Pixel rules, since these files carry no VOI information:

- 8-bit images are taken as display values (they are exports of a rendered image): value / 255.
- 16-bit (and 32-bit integer) images are windowed like a DICOM without VOI: the 0.5th and 99.5th
  percentiles map to 0 and 1 (:data:`auditor.io.dicom.PERCENTILE_WINDOW`); floating-point TIFFs
  likewise.
- Greyscale stored as RGB(A) or as a palette is accepted when its channels agree (mean absolute
  difference of at most 2 grey levels, which leaves room for JPEG chroma noise); true colour is
  rejected. Triage asks the same question of a reduced decode (:func:`grey_channel_spread`),
  since the header of such an export says only "RGB" or "P".
- A TIFF with PhotometricInterpretation WhiteIsZero is inverted so that bone is bright; PNG and
  JPEG are taken as positive (bone bright).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tifffile
from PIL import Image

from auditor.errors import ReadError, UnsupportedImageError
from auditor.io.dicom import PERCENTILE_WINDOW
from auditor.io.limits import too_large
from auditor.records import Radiograph, RadiographMeta

GREY_CHANNEL_TOLERANCE = 2.0
"""Largest mean absolute difference (grey levels) between R, G and B for a grey RGB image."""

_PIL_GREY_MODES = {"1": 1, "L": 8, "LA": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


def _pil_meta(path: Path, file_format: str, img: Image.Image) -> RadiographMeta:
    mode = img.mode
    frames = int(getattr(img, "n_frames", 1) or 1)
    if mode in _PIL_GREY_MODES:
        photometric, samples, bits = "MONOCHROME2", 1, _PIL_GREY_MODES[mode]
    else:
        photometric = "RGB" if mode in ("RGB", "RGBA") else mode
        samples, bits = len(img.getbands()), 8
    return RadiographMeta(
        path=path,
        file_format=file_format,
        rows=img.height,
        columns=img.width,
        frames=frames,
        samples_per_pixel=samples,
        photometric=photometric,
        bits_stored=bits,
    )


def _tiff_meta(path: Path, tif: tifffile.TiffFile) -> RadiographMeta:
    page = tif.pages.first
    samples = int(page.samplesperpixel)
    photometric_tag = page.photometric
    if photometric_tag == tifffile.PHOTOMETRIC.MINISWHITE:
        photometric = "MONOCHROME1"
    elif photometric_tag == tifffile.PHOTOMETRIC.MINISBLACK and samples == 1:
        photometric = "MONOCHROME2"
    else:
        photometric = getattr(photometric_tag, "name", str(photometric_tag))
    return RadiographMeta(
        path=path,
        file_format="tiff",
        rows=int(page.imagelength),
        columns=int(page.imagewidth),
        frames=len(tif.pages),
        samples_per_pixel=samples,
        photometric=photometric,
        bits_stored=int(page.bitspersample),
    )


def read_raster_header(path: Path, file_format: str) -> RadiographMeta:
    """Read dimensions and pixel format of a PNG, JPEG or TIFF without decoding pixels.

    Parameters
    ----------
    path
        The image file.
    file_format
        ``"png"``, ``"jpeg"`` or ``"tiff"`` (from :func:`auditor.io.radiograph.sniff_format`).

    Raises
    ------
    ReadError
        When the file cannot be parsed.
    """
    path = Path(path)
    try:
        if file_format == "tiff":
            with tifffile.TiffFile(path) as tif:
                return _tiff_meta(path, tif)
        with Image.open(path) as img:
            return _pil_meta(path, file_format, img)
    except Exception as err:  # Pillow and tifffile raise assorted errors on corrupt headers
        raise ReadError(
            path, f"cannot read {file_format.upper()} header: {type(err).__name__}: {err}"
        ) from err


def _check_supported(meta: RadiographMeta) -> None:
    if meta.frames > 1:
        raise UnsupportedImageError(
            meta.path,
            f"multi-page {meta.file_format.upper()} ({meta.frames} pages); expected one image",
        )
    if reason := too_large(meta.columns, meta.rows):
        raise UnsupportedImageError(meta.path, reason)


#: Longest side of the reduced decode on which triage checks a colour export for grey.
GREY_CHECK_SIDE = 512
# PNG/JPEG modes (Pillow) and TIFF photometric names whose pixels may be grey in colour's clothing
_MAYBE_GREY_MODES = frozenset({"RGB", "P", "PA"})


def _channel_spread(rgb: npt.NDArray[Any]) -> float:
    """Mean absolute difference between R and G, or G and B, whichever is larger."""
    values = rgb[..., :3].astype(np.float64)
    return max(
        float(np.abs(values[..., 0] - values[..., 1]).mean()),
        float(np.abs(values[..., 1] - values[..., 2]).mean()),
    )


def colour_stored(meta: RadiographMeta) -> bool:
    """True for a PNG, JPEG or TIFF whose header says colour (RGB, RGBA or a palette) while its
    pixels may be grey: what web and PACS exports of a radiograph often are. Only its pixels
    tell (:func:`grey_channel_spread`)."""
    if meta.file_format == "tiff":
        return meta.photometric == "RGB" and meta.samples_per_pixel in (3, 4)
    return meta.file_format in ("png", "jpeg") and meta.photometric in _MAYBE_GREY_MODES


def grey_channel_spread(meta: RadiographMeta) -> float:
    """How far a colour-stored export is from grey: :func:`_channel_spread` of a decode reduced
    to at most :data:`GREY_CHECK_SIDE` pixels a side (JPEG decodes at that scale directly).

    At most :data:`GREY_CHANNEL_TOLERANCE` means grey, as :func:`read_raster` decides it.

    Raises
    ------
    UnsupportedImageError
        For an image too large to decode.
    ReadError
        When the pixels cannot be decoded.
    """
    _check_supported(meta)
    path = meta.path
    try:
        if meta.file_format == "tiff":
            arr = np.asarray(tifffile.imread(path, key=0))
            step = max(1, -(-max(arr.shape[:2]) // GREY_CHECK_SIDE))
            rgb = arr[::step, ::step]
        else:
            with Image.open(path) as img:
                if img.format == "JPEG":
                    img.draft("RGB", (GREY_CHECK_SIDE, GREY_CHECK_SIDE))
                small = img.convert("RGB")
                small.thumbnail((GREY_CHECK_SIDE, GREY_CHECK_SIDE))
                rgb = np.asarray(small)
    except Exception as err:  # decoders raise assorted errors on corrupt data
        raise ReadError(
            path,
            f"{meta.file_format.upper()} pixels cannot be decoded: {type(err).__name__}: {err}",
        ) from err
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ReadError(path, f"pixel array of shape {rgb.shape}; expected colour channels")
    return _channel_spread(rgb)


def _to_grey(path: Path, arr: npt.NDArray[Any], photometric: str) -> npt.NDArray[Any]:
    """Reduce an (H, W, C) array to (H, W) when it is grey stored as colour; reject colour."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] in (2, 4) and photometric != "RGB":
        return arr[..., 0]  # grey + alpha
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3].astype(np.float64)
        spread = _channel_spread(rgb)
        if spread <= GREY_CHANNEL_TOLERANCE:
            return np.rint(rgb.mean(axis=2)).astype(arr.dtype)
        raise UnsupportedImageError(
            path,
            f"colour image (channels differ by {spread:.1f} grey levels on average); "
            "expected a greyscale radiograph",
        )
    raise UnsupportedImageError(path, f"pixel array of shape {arr.shape}; expected (rows, columns)")


def _scale(arr: npt.NDArray[Any]) -> tuple[npt.NDArray[np.float64], str]:
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0, "8-bit display values"
    if arr.dtype == np.bool_:
        return arr.astype(np.float64), "1-bit display values"
    values = arr.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("non-finite pixel values")
    low_pct, high_pct = PERCENTILE_WINDOW
    low, high = (float(v) for v in np.percentile(values, [low_pct, high_pct]))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape), "constant image"
    return np.clip((values - low) / (high - low), 0.0, 1.0), f"percentile {low_pct:g}-{high_pct:g}"


def read_raster(path: Path, file_format: str) -> Radiograph:
    """Decode a PNG, JPEG or TIFF radiograph into display values in [0, 1], bone bright.

    Raises
    ------
    UnsupportedImageError
        For colour or multi-page images.
    ReadError
        When the file cannot be decoded (the library's error is chained).
    """
    path = Path(path)
    meta = read_raster_header(path, file_format)
    _check_supported(meta)
    try:
        if file_format == "tiff":
            arr = np.asarray(tifffile.imread(path, key=0))
        else:
            with Image.open(path) as img:
                img.load()
                arr = np.asarray(img.convert("RGB") if img.mode in ("P", "PA") else img)
    except Exception as err:  # decoders raise assorted errors on corrupt data
        raise ReadError(
            path, f"{file_format.upper()} pixels cannot be decoded: {type(err).__name__}: {err}"
        ) from err
    grey = _to_grey(path, arr, meta.photometric)
    try:
        display, how = _scale(grey)
    except ValueError as err:
        raise ReadError(path, str(err)) from err
    if meta.photometric == "MONOCHROME1":
        display = 1.0 - display
        how += "; WhiteIsZero inverted"
    return Radiograph(pixels=display.astype(np.float32), meta=meta, windowing=how)
