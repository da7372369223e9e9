"""The one entry point that reads a radiograph.

:func:`read_header` and :func:`read_radiograph` turn a file (DICOM, PNG, JPEG or TIFF) into the
:class:`~auditor.records.RadiographMeta` and :class:`~auditor.records.Radiograph` records every
later stage works with; with :mod:`auditor.io.dicom` and :mod:`auditor.io.raster` below them, they
are the only code that knows DICOM pixel rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from auditor.records import Radiograph, RadiographMeta

FileFormat = Literal["dicom", "png", "jpeg", "tiff"]

_SNIFF_BYTES = 132


def sniff_format(path: Path | str) -> FileFormat | None:
    """Recognise a radiograph file by its first bytes (never by its name).

    Parameters
    ----------
    path
        A regular file.

    Returns
    -------
    str or None
        ``"dicom"`` (with or without preamble/file meta), ``"png"``, ``"jpeg"``, ``"tiff"``
        (classic or BigTIFF), or None for anything else.

    Raises
    ------
    ReadError
        When the file cannot be opened.
    """
    from auditor.errors import ReadError
    from auditor.io.dicom import looks_like_dicom

    try:
        with Path(path).open("rb") as fp:
            head = fp.read(_SNIFF_BYTES)
    except OSError as err:
        raise ReadError(path, f"cannot open file: {err.strerror or err}") from err
    # DICOM first: a PS3.10 preamble may itself hold a TIFF header (dual-personality files).
    if len(head) >= _SNIFF_BYTES and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if looks_like_dicom(head):
        return "dicom"
    return None


def read_header(path: Path | str) -> RadiographMeta:
    """Read the header of a radiograph file without decoding its pixels.

    Parameters
    ----------
    path
        A DICOM, PNG, JPEG or TIFF file. DICOM is read with ``stop_before_pixels`` and
        ``force`` (files without preamble or file meta are accepted).

    Returns
    -------
    RadiographMeta
        Header fields; for PNG/JPEG/TIFF only the pixel format fields are filled.

    Raises
    ------
    UnsupportedImageError
        When the file is none of the formats above.
    ReadError
        When the file is one of them but its header cannot be parsed.
    """
    # Imported here: the format modules import the records defined above.
    from auditor.errors import UnsupportedImageError
    from auditor.io.dicom import read_dicom_header
    from auditor.io.raster import read_raster_header

    path = Path(path)
    file_format = sniff_format(path)
    if file_format is None:
        raise UnsupportedImageError(path, "not an image: not a DICOM, PNG, JPEG or TIFF file")
    if file_format == "dicom":
        return read_dicom_header(path)
    return read_raster_header(path, file_format)


def read_radiograph(path: Path | str) -> Radiograph:
    """Read a radiograph: the one entry point that turns a file into display pixels.

    DICOM pixels go through the Modality LUT, the VOI LUT or window (percentile windowing when
    absent) and MONOCHROME1 inversion (see :mod:`auditor.io.dicom`); PNG/JPEG/TIFF follow the
    rules in :mod:`auditor.io.raster`.

    Parameters
    ----------
    path
        A single-frame greyscale DICOM, PNG, JPEG or TIFF file.

    Returns
    -------
    Radiograph
        float32 pixels in [0, 1], shape (rows, columns), bone bright.

    Raises
    ------
    UnsupportedImageError
        Not an image, or colour, multi-frame or pixel-less; the message says what was found.
    ReadError
        Broken or undecodable file; the underlying error is chained.
    """
    from auditor.errors import UnsupportedImageError
    from auditor.io.dicom import read_dicom
    from auditor.io.raster import read_raster

    path = Path(path)
    file_format = sniff_format(path)
    if file_format is None:
        raise UnsupportedImageError(path, "not an image: not a DICOM, PNG, JPEG or TIFF file")
    if file_format == "dicom":
        return read_dicom(path)
    return read_raster(path, file_format)
