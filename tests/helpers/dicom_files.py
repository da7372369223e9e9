"""Small synthetic DICOM files for reader, triage and inventory tests (written with pydicom)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)


def phantom(rows: int = 64, cols: int = 48, bits: int = 12) -> npt.NDArray[np.uint16]:
    """A soft-tissue background with a bright 'vertebral column' strip in the middle
    (MONOCHROME2 stored values: bone has the highest values)."""
    top = 2**bits - 1
    image = np.full((rows, cols), int(top * 0.3), dtype=np.uint16)
    image[:, cols // 3 : 2 * cols // 3] = int(top * 0.8)
    image[: rows // 8, :] = int(top * 0.05)  # air above the body
    return image


def make_dicom(
    path: Path,
    *,
    modality: str = "DX",
    body_part: str | None = "LSPINE",
    view: str | None = "LL",
    photometric: str = "MONOCHROME2",
    pixels: npt.NDArray[Any] | None = None,
    bits_stored: int = 12,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    series_description: str | None = None,
    study_description: str | None = None,
    protocol: str | None = None,
    laterality: str | None = None,
    frames: int = 1,
    samples: int = 1,
    with_pixels: bool = True,
    file_meta: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a small DICOM radiograph to ``path`` and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    sop_class = (
        ComputedRadiographyImageStorage
        if modality == "CR"
        else DigitalXRayImageStorageForPresentation
    )
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientID = "TEST-001"
    ds.PatientName = "Test^Patient"
    ds.AccessionNumber = "ACC001"
    for keyword, value in (
        ("BodyPartExamined", body_part),
        ("ViewPosition", view),
        ("SeriesDescription", series_description),
        ("StudyDescription", study_description),
        ("ProtocolName", protocol),
        ("ImageLaterality", laterality),
    ):
        if value is not None:
            setattr(ds, keyword, value)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    if with_pixels:
        arr = phantom(bits=bits_stored) if pixels is None else np.asarray(pixels)
        ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
        ds.SamplesPerPixel = samples
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 8 if arr.dtype == np.uint8 else 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 1 if np.issubdtype(arr.dtype, np.signedinteger) else 0
        ds.PixelSpacing = [0.15, 0.15]
        if samples > 1:
            ds.PlanarConfiguration = 0
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    if file_meta:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    else:
        # A bare implicit-VR dataset: no preamble, no 'DICM', no group 0002 (old archives).
        ds.save_as(path, implicit_vr=True, little_endian=True)
    return path
