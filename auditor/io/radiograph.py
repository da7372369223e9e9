"""The radiograph record every later stage works with.

:func:`read_header` and :func:`read_radiograph` are the one entry point that turns a file (DICOM,
PNG, JPEG or TIFF) into these records; they are the only code that knows DICOM pixel rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class RadiographMeta:
    """Header fields tlaudit needs, read without decoding pixels.

    Strings are exactly as found in the header ("" when absent); they are untrusted user data and
    must be escaped wherever they are shown.
    """

    path: Path
    file_format: str  # "dicom", "png", "jpeg" or "tiff"
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    accession_number: str = ""
    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    modality: str = ""
    body_part: str = ""
    view_position: str = ""
    laterality: str = ""
    series_description: str = ""
    study_description: str = ""
    protocol_name: str = ""
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) spacing
    rows: int = 0
    columns: int = 0
    frames: int = 1
    samples_per_pixel: int = 1
    photometric: str = ""
    bits_stored: int = 0
    transfer_syntax: str = ""
    has_pixels: bool = True


@dataclass(frozen=True)
class Radiograph:
    """A decoded radiograph in display orientation.

    ``pixels`` is float32, shape (rows, columns), scaled to [0, 1] after the Modality LUT,
    VOI LUT / windowing and MONOCHROME1 inversion, so that bone is bright.
    """

    pixels: npt.NDArray[np.float32]
    meta: RadiographMeta
    windowing: str  # how display values were obtained, e.g. "VOI LUT", "window 2048/4096", "percentile 0.5-99.5"
