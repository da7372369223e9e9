"""DICOM reading: header fields without pixels, and the pixel rules that make a display image.

This module is the only code that knows DICOM pixel rules. The pipeline follows the grayscale
image pipeline of PS3.4 Annex N and PS3.3 C.11:

1. Decode the stored values. pydicom honours (0028,0101) *Bits Stored*: unused high bits are
   masked and signed values sign-extended, so the array holds only meaningful bits.
2. Modality LUT (PS3.3 C.11.1): (0028,1052/1053) *Rescale Intercept/Slope* or the
   (0028,3000) *Modality LUT Sequence* (the sequence via
   :func:`pydicom.pixels.apply_modality_lut`, the rescale in float32 here).
3. VOI LUT (PS3.3 C.11.2): the (0028,3010) *VOI LUT Sequence* or the first
   (0028,1050/1051) *Window Center/Width* pair with its (0028,1056) *VOI LUT Function* (the
   LUT through :func:`pydicom.pixels.apply_voi_lut`, the window formulas in float32 here);
   the output is scaled to [0, 1] by the range of the LUT or window output. When neither is
   present (or the values are unusable) the fallback is percentile windowing: the 0.5th and
   99.5th percentiles of the modality values map to 0 and 1.
4. MONOCHROME1 (minimum value is white) is inverted so that bone is bright. A (2050,0020)
   *Presentation LUT Shape* of ``INVERSE`` on a MONOCHROME1 image is what the DX IOD requires
   for that photometric interpretation and does not invert a second time; on a MONOCHROME2
   image it asks for an inverted display (PS3.3 C.11.6) and is honoured.

Files without a preamble or file meta information (PS3.10 7.1) are read with ``force=True``;
pydicom guesses the encoding from the first element, and the transfer syntax is set from that
guess (implicit VR little endian in practice) so that the pixel data can be decoded.
"""

from __future__ import annotations

import contextlib
import logging
import re
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from auditor.errors import ReadError, UnsupportedImageError
from auditor.io.limits import too_large
from auditor.records import Radiograph, RadiographMeta
from auditor.vocab import GREYSCALE_PHOTOMETRIC

logger = logging.getLogger(__name__)

#: A Python object's default repr inside a decoder's message; it names a memory address, so the
#: same broken file would give a different reason on every run.
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")

PERCENTILE_WINDOW = (0.5, 99.5)
"""Percentiles of the modality values mapped to 0 and 1 when the file has no usable VOI."""

MAX_CLIPPED_FRACTION = 0.99
"""A VOI that maps more than this fraction of pixels to 0 (or to 1) does not fit the stored
values (seen in real files whose window was written for another encoding); percentile
windowing is used instead."""

_IDENTIFYING_KEYWORDS = ("SOPClassUID", "StudyInstanceUID", "Modality", "Rows")
_PIXEL_DATA_TAG = (0x7FE0, 0x0010)
_ITEM_TAG = (0xFFFE, 0xE000)
_SEQUENCE_DELIMITER_TAG = (0xFFFE, 0xE0DD)
# Explicit VRs whose length field is 4 bytes after 2 reserved bytes (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's complaints while reading one file.

    pydicom reports non-conformant values through both a warning and its logger, and logs each
    failed decoder plugin with a traceback before raising. Old archives are full of the former,
    and the latter is raised anyway and becomes the file's row; neither is something a QA
    reviewer can act on in a log. Real failures still raise.
    """
    pydicom_logger = logging.getLogger("pydicom")
    level = pydicom_logger.level
    pydicom_logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom_logger.setLevel(level)


def looks_like_dicom(head: bytes) -> bool:
    """Whether the first bytes of a file look like DICOM, with or without a preamble.

    Parameters
    ----------
    head
        At least the first 132 bytes of the file (fewer for a very short file).

    Returns
    -------
    bool
        True for a PS3.10 file (``DICM`` at offset 128), or for a bare dataset starting with a
        group 0x0002 or 0x0008 element in either byte order (files written without file meta).
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    group_le = struct.unpack("<H", head[:2])[0]
    group_be = struct.unpack(">H", head[:2])[0]
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


_DAMAGED = re.compile("[\x00-\x1a\x1c-\x1f\x7f]")


def _text(ds: Dataset, keyword: str) -> str:
    """A header value as text ("" when absent or unparseable); multi-values joined by ``\\``."""
    try:
        value = ds.get(keyword, None)
    except Exception:  # pydicom raises various errors on malformed values; the field is optional
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    # No header string tlaudit reads may hold a control character (PS3.5 6.2: only ESC, for
    # character sets, and only LT/ST/UT allow CR, LF, FF and TAB). One there means a damaged
    # length swallowed the elements after it (a patient's name and ID among them): the value
    # ends where the damage starts.
    return _DAMAGED.split(text, maxsplit=1)[0].strip()


def _int(ds: Dataset, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword, None)
        return default if value in (None, "") else int(value)
    except (TypeError, ValueError, OverflowError):
        return default
    except Exception:  # malformed IS/US values raise from pydicom's converters
        return default


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from Pixel Spacing, else Imager Pixel Spacing; None if absent
    or not positive."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(keyword, None)
            if value is None or len(value) != 2:
                continue
            row, col = float(value[0]), float(value[1])
        except Exception:  # malformed DS values
            continue
        if row > 0 and col > 0 and np.isfinite(row) and np.isfinite(col):
            return (row, col)
    return None


def _transfer_syntax(ds: Dataset) -> str:
    file_meta = getattr(ds, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID", None) if file_meta is not None else None
    return str(uid) if uid else ""


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a dataset read without file meta a transfer syntax matching how it was parsed."""
    if _transfer_syntax(ds):
        return
    is_implicit, is_little = getattr(ds, "original_encoding", (True, True))
    if is_little is False:
        uid = ExplicitVRBigEndian
    elif is_implicit is False:
        uid = ExplicitVRLittleEndian
    else:
        uid = ImplicitVRLittleEndian
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid


def _probe_pixel_data(
    fp: BinaryIO, file_size: int, is_implicit: bool, is_little: bool
) -> tuple[bool, str]:
    """Inspect the Pixel Data element at ``fp``'s position without decoding it.

    Reads only the element header and, for encapsulated data, the 8-byte item headers
    (PS3.5 A.4), seeking over the fragments.

    Returns
    -------
    (present, problem)
        ``present`` is False when the dataset ends without Pixel Data; ``problem`` describes a
        structurally broken element ("" when it looks whole).
    """
    endian = "<" if is_little else ">"
    start = fp.tell()
    head = fp.read(8)
    if len(head) < 8:
        return False, ""
    tag = struct.unpack(f"{endian}HH", head[:4])
    if tag != _PIXEL_DATA_TAG:
        return False, ""
    if is_implicit:
        length = struct.unpack(f"{endian}I", head[4:8])[0]
    elif head[4:6] in _LONG_VRS:
        rest = fp.read(4)
        if len(rest) < 4:
            return True, "pixel data truncated: the file ends inside the Pixel Data header"
        length = struct.unpack(f"{endian}I", rest)[0]
    else:
        length = struct.unpack(f"{endian}H", head[6:8])[0]
    if length != 0xFFFFFFFF:
        end = fp.tell() + length
        if end > file_size:
            return True, (
                f"pixel data truncated: the element declares {length} bytes but the file ends "
                f"{end - file_size} bytes short"
            )
        return True, ""
    # Encapsulated: a sequence of items ending in a sequence delimiter.
    while True:
        item = fp.read(8)
        if len(item) < 8:
            return True, (
                "pixel data truncated: the file ends before the end of the encapsulated "
                f"pixel data (started at byte {start})"
            )
        group, element, item_length = struct.unpack(f"{endian}HHI", item)
        if (group, element) == _SEQUENCE_DELIMITER_TAG:
            return True, ""
        if (group, element) != _ITEM_TAG:
            return True, (
                f"pixel data malformed: expected an item tag (FFFE,E000), found "
                f"({group:04X},{element:04X}) at byte {fp.tell() - 8}"
            )
        if fp.tell() + item_length > file_size:
            return True, "pixel data truncated: a compressed fragment runs past the end of the file"
        fp.seek(item_length, 1)


def meta_from_dataset(
    path: Path, ds: Dataset, has_pixels: bool, pixel_data_error: str = ""
) -> RadiographMeta:
    """The header tlaudit reads from a parsed dataset: a file's (:func:`read_dicom_header`) or
    one a PACS answered in DICOM JSON (:mod:`auditor.pacs.metadata`), read the same way."""
    samples = _int(ds, "SamplesPerPixel", 1 if has_pixels else 0)
    return RadiographMeta(
        path=path,
        file_format="dicom",
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        sop_uid=_text(ds, "SOPInstanceUID"),
        accession_number=_text(ds, "AccessionNumber"),
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        study_date=_text(ds, "StudyDate"),
        modality=_text(ds, "Modality").upper(),
        body_part=_text(ds, "BodyPartExamined"),
        view_position=_text(ds, "ViewPosition"),
        laterality=_text(ds, "ImageLaterality") or _text(ds, "Laterality"),
        series_description=_text(ds, "SeriesDescription"),
        study_description=_text(ds, "StudyDescription"),
        protocol_name=_text(ds, "ProtocolName"),
        pixel_spacing_mm=_spacing(ds),
        rows=_int(ds, "Rows", 0),
        columns=_int(ds, "Columns", 0),
        frames=max(1, _int(ds, "NumberOfFrames", 1)),
        samples_per_pixel=samples,
        photometric=_text(ds, "PhotometricInterpretation").upper(),
        bits_stored=_int(ds, "BitsStored", 0),
        transfer_syntax=_transfer_syntax(ds),
        has_pixels=has_pixels,
        sop_class_uid=_text(ds, "SOPClassUID"),
        pixel_data_error=pixel_data_error,
    )


@contextlib.contextmanager
def _open_header(path: Path) -> Iterator[tuple[Dataset, RadiographMeta, BinaryIO]]:
    """Parse the header of ``path`` (see :func:`read_dicom_header`) and hold the file open at the
    first element after it (the Pixel Data, if any): the parsed dataset, its record, the file."""
    try:
        file_size = path.stat().st_size
        fp = path.open("rb")
    except OSError as err:
        raise ReadError(path, f"cannot read DICOM header: {err}") from err
    with fp:
        try:
            with _quiet_pydicom():
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
                is_implicit, is_little = getattr(ds, "original_encoding", (True, True))
                after_header = fp.tell()
                has_pixels, problem = _probe_pixel_data(
                    fp, file_size, is_implicit is not False, is_little is not False
                )
                fp.seek(after_header)
        except (InvalidDicomError, OSError, EOFError, struct.error) as err:
            raise ReadError(path, f"cannot read DICOM header: {err}") from err
        except Exception as err:  # pydicom raises many kinds of error on corrupt headers
            raise ReadError(path, f"cannot read DICOM header: {type(err).__name__}: {err}") from err
        if len(ds) == 0:
            raise ReadError(path, "cannot read DICOM header: no data elements found")
        if not _transfer_syntax(ds) and not any(k in ds for k in _IDENTIFYING_KEYWORDS):
            # A forced parse of bytes that merely start like a bare dataset yields junk elements.
            raise ReadError(
                path,
                "cannot read DICOM header: no file meta and none of SOP Class UID, Study "
                "Instance UID, Modality or Rows; not a recognisable DICOM dataset",
            )
        with _quiet_pydicom():  # values are converted (and validated) on access
            meta = meta_from_dataset(path, ds, has_pixels, problem)
        yield ds, meta, fp


def read_dicom_header(path: Path) -> RadiographMeta:
    """Read the header of a DICOM file without decoding (or loading) its pixel data.

    Parameters
    ----------
    path
        A DICOM file, with or without preamble and file meta information.

    Returns
    -------
    RadiographMeta
        ``has_pixels`` tells whether a Pixel Data element follows the header;
        ``pixel_data_error`` is set when that element is visibly truncated or malformed.

    Raises
    ------
    ReadError
        When the file cannot be opened or parsed as DICOM.
    """
    with _open_header(Path(path)) as (_, meta, _):
        return meta


def _with_pixel_data(header: Dataset, fp: BinaryIO) -> Dataset | None:
    """``header`` completed with the elements from ``fp``'s position to the end of the file: the
    dataset :func:`pydicom.dcmread` gives, without parsing the header a second time. None where
    pydicom cannot read them so or they hold no Pixel Data (the caller then reads the whole
    file, as it did before, for pydicom's own dataset or error)."""
    is_implicit, is_little = getattr(header, "original_encoding", (True, True))
    try:
        with _quiet_pydicom():
            rest = read_dataset(fp, is_implicit is not False, is_little is not False)
    except Exception:  # pydicom's error comes from the whole file's read
        return None
    if "PixelData" not in rest:
        return None
    header.update(rest)
    return header


def check_supported(meta: RadiographMeta) -> None:
    """Raise unless ``meta`` describes a single-frame greyscale image with pixel data.

    Raises
    ------
    UnsupportedImageError
        For objects without pixel data, colour images, multi-frame images and images larger
        than the pixel limit (:mod:`auditor.io.limits`); the message says what was found.
    ReadError
        When the pixel data element is visibly truncated or malformed.
    """
    if not meta.has_pixels:
        what = f"modality {meta.modality}" if meta.modality else "no modality"
        raise UnsupportedImageError(meta.path, f"no pixel data ({what}); expected an image")
    if meta.pixel_data_error:
        raise ReadError(meta.path, meta.pixel_data_error)
    if meta.frames > 1:
        raise UnsupportedImageError(
            meta.path, f"multi-frame image ({meta.frames} frames); expected a single frame"
        )
    if reason := too_large(meta.columns, meta.rows, meta.frames):
        raise UnsupportedImageError(meta.path, reason)
    if meta.samples_per_pixel != 1 or meta.photometric not in GREYSCALE_PHOTOMETRIC:
        raise UnsupportedImageError(
            meta.path,
            f"colour image ({meta.photometric or 'no photometric interpretation'}, "
            f"{meta.samples_per_pixel} samples per pixel); expected MONOCHROME1 or MONOCHROME2",
        )


#: Lossless JPEG (PS3.5 A.4.3: 1.2.840.10008.1.2.4.57 and .70) and JPEG-LS (A.4.4: .80 and .81)
#: are decoded with imagecodecs (libjpeg-turbo, then its lossless JPEG codec; CharLS) before
#: pydicom's plugins (pylibjpeg), which give the same pixels several times slower.
_IMAGECODECS_DECODERS = {
    "1.2.840.10008.1.2.4.57": ("jpeg8_decode", "ljpeg_decode"),
    "1.2.840.10008.1.2.4.70": ("jpeg8_decode", "ljpeg_decode"),
    "1.2.840.10008.1.2.4.80": ("jpegls_decode",),
    "1.2.840.10008.1.2.4.81": ("jpegls_decode",),
}


def _decode_with_imagecodecs(ds: Dataset) -> npt.NDArray[Any] | None:
    """The stored values of a single-frame unsigned greyscale lossless JPEG or JPEG-LS image,
    as pydicom's ``pixel_array`` gives them, or None to leave the image to pydicom.

    pydicom's rules for these syntaxes are kept: the array has the dtype of (0028,0100) *Bits
    Allocated*, and for lossless JPEG the bits above (0028,0101) *Bits Stored* are cleared (for
    JPEG-LS pydicom leaves them, and so does this). Signed images (*Pixel Representation* 1),
    whose values pydicom sign-corrects, are left to pydicom, as is any frame imagecodecs
    refuses or decodes to another shape.
    """
    decoders = _IMAGECODECS_DECODERS.get(_transfer_syntax(ds))
    if decoders is None or _int(ds, "PixelRepresentation", 0) != 0:
        return None
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    allocated, stored = _int(ds, "BitsAllocated", 0), _int(ds, "BitsStored", 0)
    if allocated not in (8, 16) or not 0 < stored <= allocated:
        return None
    try:
        import imagecodecs
        from pydicom.encaps import get_frame

        frame = get_frame(ds.PixelData, 0, number_of_frames=1)
    except Exception as err:  # no imagecodecs, or fragments pydicom cannot split into a frame
        logger.debug("imagecodecs path not taken (%s); decoding with pydicom", err)
        return None
    for name in decoders:
        try:
            decoded = getattr(imagecodecs, name)(frame)
        except Exception as err:  # a codec's own error type; pydicom's decoders may still cope
            logger.debug("imagecodecs.%s failed (%s)", name, err)
            continue
        if decoded.shape != (rows, columns) or decoded.dtype.itemsize > allocated // 8:
            continue
        arr = decoded.astype(np.uint8 if allocated == 8 else np.uint16, copy=False)
        if stored < allocated and name != "jpegls_decode":
            arr &= (1 << stored) - 1
        return arr
    return None


def _decode(path: Path, ds: Dataset) -> npt.NDArray[Any]:
    fast = _decode_with_imagecodecs(ds)
    if fast is not None:
        return fast
    try:
        with _quiet_pydicom():
            arr = ds.pixel_array
    except Exception as err:  # decoder plugins raise RuntimeError, ValueError, ... on bad data
        detail = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        detail = _OBJECT_REPR.sub("the pixel data", detail)  # "<_io.BytesIO object at 0x7f...>"
        raise ReadError(
            path, f"pixel data cannot be decoded ({type(err).__name__}: {detail})"
        ) from err
    if arr.ndim != 2:
        raise UnsupportedImageError(
            path, f"decoded pixel array has shape {arr.shape}; expected (rows, columns)"
        )
    return arr


def _first(value: Any) -> float:
    """First value of a possibly multi-valued DS element (PS3.3 C.11.2.1.2: pairs by index)."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return float(value[0])
    return float(value)


def _apply_voi_lut_sequence(
    values: npt.NDArray[np.floating[Any]], ds: Dataset
) -> tuple[npt.NDArray[np.floating[Any]], float, float, str]:
    """Apply the first VOI LUT; its own output range (over every input it maps) scales it."""
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    entries = int(descriptor[0]) or 2**16
    first = int(descriptor[1])
    lut_out = np.asarray(
        apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds), dtype=np.float64
    )
    out = np.asarray(apply_voi_lut(np.rint(values).astype(np.int64), ds), dtype=np.float64)
    return out, float(lut_out.min()), float(lut_out.max()), "VOI LUT"


def _apply_window(
    values: npt.NDArray[np.floating[Any]], ds: Dataset
) -> tuple[npt.NDArray[np.floating[Any]], float, float, str]:
    """Apply the first window (PS3.3 C.11.2.1.2) to ``values`` in place, scaled to [0, 1].

    The three VOI LUT functions are computed here in the input's precision (float32 in practice)
    rather than through pydicom's float64 path, and in place: on a 4-megapixel image each fresh
    array would cost more (in page faults) than the arithmetic. Raises ValueError, before
    touching ``values``, for a width the standard does not allow.
    """
    center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    how = f"window {center:g}/{width:g} ({function})"
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"Window Width {width:g} must be above 0 for SIGMOID")
        values -= center
        values *= -4.0 / width
        with np.errstate(over="ignore"):  # exp overflows to inf far below the window: y = 0
            np.exp(values, out=values)
        values += 1.0
        np.reciprocal(values, out=values)
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"Window Width {width:g} must be above 0 for LINEAR_EXACT")
        values -= center - width / 2
        values /= width
    elif function == "LINEAR":
        if width < 1:
            raise ValueError(f"Window Width {width:g} must be at least 1 for LINEAR")
        if width == 1:  # a threshold: below c - 0.5 is black, the rest white
            np.greater_equal(values, center - 0.5, out=values)
        else:
            values -= center - 0.5
            values /= width - 1
            values += 0.5
    else:
        raise ValueError(f"unknown VOI LUT Function {function!r}")
    np.clip(values, 0.0, 1.0, out=values)
    return values, 0.0, 1.0, how


def _percentiles(
    values: npt.NDArray[np.floating[Any]],
    stored: npt.NDArray[Any],
    rescale: tuple[float, float] | None,
) -> tuple[float, float]:
    """``np.percentile(values, PERCENTILE_WINDOW)``, the same two floats, found in ``stored``.

    When ``values`` are integer stored values under a rescale (``rescale`` not None), the float32
    rescale keeps their order (reverses it for a negative slope), so the order statistics that
    numpy's default ("linear") method interpolates between are the rescaled order statistics
    of ``stored``: partitioning those integers, half or less the size, takes about half the
    time of partitioning a float32 copy. The interpolation is numpy's, step for step.
    """
    if rescale is None or stored.dtype.kind not in "iu":
        low, high = np.percentile(values, PERCENTILE_WINDOW)
        return float(low), float(high)
    n = stored.size
    quantiles = np.true_divide(PERCENTILE_WINDOW, 100)
    virtual = (n - 1) * quantiles  # where numpy's linear method looks in the sorted values
    previous = np.floor(virtual)
    gamma = virtual - previous
    ranks = np.clip(np.concatenate([previous, previous + 1]).astype(np.intp), 0, n - 1)
    if rescale[0] < 0:
        ranks = n - 1 - ranks
    ordered = np.partition(stored.ravel(), np.unique(ranks))[ranks]
    lower, upper = np.split(_rescaled(ordered, rescale), 2)
    diff = upper - lower
    result = lower + diff * gamma
    np.subtract(upper, diff * (1 - gamma), out=result, where=gamma >= 0.5)
    return float(result[0]), float(result[1])


def _percentile_to_unit(
    values: npt.NDArray[np.floating[Any]],
    stored: npt.NDArray[Any],
    rescale: tuple[float, float] | None,
) -> tuple[npt.NDArray[np.floating[Any]], str]:
    """Percentile windowing, in place on ``values``."""
    low_pct, high_pct = PERCENTILE_WINDOW
    low, high = _percentiles(values, stored, rescale)
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=values.dtype), "constant image"
    values -= low
    values /= high - low
    np.clip(values, 0.0, 1.0, out=values)
    return values, f"percentile {low_pct:g}-{high_pct:g}"


def _clipped_fraction(scaled: npt.NDArray[np.floating[Any]]) -> float:
    """The larger of the fractions of ``scaled`` (values in [0, 1]) at 0 and at 1: exact where it
    is above :data:`MAX_CLIPPED_FRACTION`, and not above it where that is all it can be."""
    size = scaled.size
    # counted, not averaged: np.mean would first turn each mask into float64
    low = np.count_nonzero(scaled <= 0.0)
    if (size - low) / size <= MAX_CLIPPED_FRACTION:  # too few pixels left to count those at 1
        return low / size
    return max(low, np.count_nonzero(scaled >= 1.0)) / size


def _voi_to_unit(
    values: npt.NDArray[np.floating[Any]],
    stored: npt.NDArray[Any],
    rescale: tuple[float, float] | None,
    ds: Dataset,
) -> tuple[npt.NDArray[np.floating[Any]], str]:
    """Apply the VOI LUT or window of ``ds`` and scale the result to [0, 1].

    Returns the scaled values and a description of what was applied; falls back to percentile
    windowing when the file carries no usable VOI (absent, invalid, or not fitting the data).
    ``values`` (the modality values of ``stored`` under ``rescale``, see
    :func:`_modality_values`) may be overwritten: a fallback after a window computes them again.
    """
    voi_seq = ds.get("VOILUTSequence", None)
    has_lut = bool(voi_seq) and (
        voi_seq[0].get("LUTDescriptor", None) is not None and "LUTData" in voi_seq[0]
    )
    has_window = all(ds.get(k, None) is not None for k in ("WindowCenter", "WindowWidth"))
    if not (has_lut or has_window):
        return _percentile_to_unit(values, stored, rescale)
    try:
        with _quiet_pydicom():
            apply = _apply_voi_lut_sequence if has_lut else _apply_window
            out, low, high, how = apply(values, ds)
    except Exception as err:  # pydicom raises ValueError/NotImplementedError on bad VOI values
        scaled, fallback = _percentile_to_unit(values, stored, rescale)
        return scaled, f"VOI unusable ({err}); {fallback}"
    if not (high > low and np.isfinite(low) and np.isfinite(high)):
        scaled, fallback = _percentile_to_unit(values, stored, rescale)
        return scaled, f"{how} has an empty output range; {fallback}"
    if (low, high) != (0.0, 1.0):  # the LUT's output, an array of its own
        out -= low
        out /= high - low
        np.clip(out, 0.0, 1.0, out=out)
    clipped = _clipped_fraction(out)
    if clipped > MAX_CLIPPED_FRACTION:
        values = _modality_values(stored, ds, rescale)  # the window overwrote them
        scaled, fallback = _percentile_to_unit(values, stored, rescale)
        return scaled, f"{how} clips {clipped:.0%} of pixels to one end, ignored; {fallback}"
    return out, how


def _rescale(ds: Dataset) -> tuple[float, float] | None:
    """(0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept* (1 and 0 when absent or
    zero), or None when a (0028,3000) *Modality LUT Sequence* takes their place."""
    if "ModalityLUTSequence" in ds:
        return None
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return slope, intercept


def _rescaled(stored: npt.NDArray[Any], rescale: tuple[float, float]) -> npt.NDArray[np.float32]:
    """``stored * slope + intercept`` in float32, which represents every stored value of up to
    16 bits exactly and halves memory traffic against pydicom's float64 result."""
    slope, intercept = rescale
    values = stored.astype(np.float32)
    if slope != 1.0:
        values *= slope
    if intercept != 0.0:
        values += intercept
    return values


def _modality_values(
    stored: npt.NDArray[Any], ds: Dataset, rescale: tuple[float, float] | None
) -> npt.NDArray[np.floating[Any]]:
    """Modality LUT (PS3.3 C.11.1): the Modality LUT Sequence through pydicom (``rescale``
    None), else the rescale (:func:`_rescaled`). Always a new array."""
    if rescale is None:  # a copy even where pydicom would hand back ``stored`` itself
        return np.array(apply_modality_lut(stored, ds), dtype=np.float64)
    return _rescaled(stored, rescale)


def _finite_by_construction(stored: npt.NDArray[Any], rescale: tuple[float, float] | None) -> bool:
    """Whether the rescale of ``stored`` is finite without looking: integers of at most 64 bits
    times a finite slope plus a finite intercept, well inside float32's range (rounding
    included). A Modality LUT Sequence or float pixel data must be checked."""
    if rescale is None or stored.dtype.kind not in "iu":
        return False
    slope, intercept = rescale
    largest = float(2 ** (8 * stored.dtype.itemsize))
    return abs(slope) * largest + abs(intercept) < 1e38  # False for a NaN or infinite value


def read_dicom(path: Path) -> Radiograph:
    """Decode a DICOM radiograph into display values in [0, 1], bone bright.

    Parameters
    ----------
    path
        A single-frame greyscale DICOM image.

    Returns
    -------
    Radiograph
        float32 pixels of shape (Rows, Columns); ``windowing`` says which VOI step was used
        and whether MONOCHROME1 was inverted.

    Raises
    ------
    UnsupportedImageError
        For objects without pixel data, colour or multi-frame images.
    ReadError
        When the file cannot be parsed or its pixel data cannot be decoded; the decoder's
        error is chained.
    """
    path = Path(path)
    with _open_header(path) as (header, meta, fp):
        check_supported(meta)
        read = _with_pixel_data(header, fp)
    if read is not None:
        ds = read
    else:
        try:
            with _quiet_pydicom():
                ds = pydicom.dcmread(path, force=True)
        except Exception as err:  # see read_dicom_header
            raise ReadError(path, f"cannot read DICOM file: {type(err).__name__}: {err}") from err
        if "PixelData" not in ds:
            raise ReadError(path, "pixel data missing or truncated after the header")
    _ensure_transfer_syntax(ds)
    stored = _decode(path, ds)
    try:
        rescale = _rescale(ds)
        modality_values = _modality_values(stored, ds, rescale)
    except Exception as err:  # malformed Modality LUT Sequence or rescale values
        raise ReadError(path, f"Modality LUT cannot be applied: {err}") from err
    if not _finite_by_construction(stored, rescale) and not np.all(np.isfinite(modality_values)):
        raise ReadError(path, "Modality LUT produced non-finite values")
    display, how = _voi_to_unit(modality_values, stored, rescale, ds)
    # display is an array of this reader's own (often ``modality_values``, windowed in place),
    # so it is turned over in place: one pass fewer over the image than ``1.0 - display``.
    if meta.photometric == "MONOCHROME1":
        np.subtract(1.0, display, out=display)
        how += "; MONOCHROME1 inverted"
        logger.debug("%s: MONOCHROME1, inverted so that bone is bright", path.name)
    elif str(ds.get("PresentationLUTShape", "") or "").upper() == "INVERSE":
        np.subtract(1.0, display, out=display)
        how += "; Presentation LUT Shape INVERSE"
        logger.debug("%s: MONOCHROME2 with Presentation LUT Shape INVERSE, inverted", path.name)
    return Radiograph(pixels=display.astype(np.float32, copy=False), meta=meta, windowing=how)
