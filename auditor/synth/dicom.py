"""Writing synthetic radiographs as DICOM Part 10 files with realistic, obviously fake headers.

Storage classes: CR Image Storage (1.2.840.10008.5.1.4.1.1.1), Digital X-Ray Image Storage - For
Presentation (1.2.840.10008.5.1.4.1.1.1.1), CT and MR Image Storage for distractors, Basic Text SR
(1.2.840.10008.5.1.4.1.1.88.11) for the report distractor.

Transfer syntaxes (PS3.5 Section 10 and Annex A.4):

- Explicit VR Little Endian (1.2.840.10008.1.2.1) and Implicit VR Little Endian (1.2.840.10008.1.2);
- JPEG Lossless, Non-Hierarchical, First-Order Prediction (1.2.840.10008.1.2.4.70), encoded with
  ``imagecodecs.jpeg8_encode(lossless=True, predictor=1)`` (libjpeg-turbo 3), because pydicom 3
  has no encoder for it;
- JPEG-LS Lossless (1.2.840.10008.1.2.4.80) via ``imagecodecs.jpegls_encode`` (CharLS);
- JPEG 2000 Lossless (1.2.840.10008.1.2.4.90) via pydicom's ``Dataset.compress`` and
  pylibjpeg-openjpeg.

RLE Lossless is left out: pydicom's pure-Python encoder takes seconds per image.

Nothing in a file depends on the clock: dates, times and UIDs all come from the world's seed.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
)

from auditor.errors import TlauditError

CR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
DX_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")
CT_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")
#: Fixed implementation identity (a 2.25 UID derived from the project name), so files do not
#: change with the pydicom version.
IMPLEMENTATION_UID = UID("2.25.173016848125290145713046411306512946105")
IMPLEMENTATION_NAME = "TLAUDIT_SYNTH"


def base_dataset(
    sop_class: str,
    sop_uid: str,
    study_uid: str,
    series_uid: str,
    ident: dict[str, str],
    syntax: str = ExplicitVRLittleEndian,
) -> Dataset:
    """A dataset with file meta, patient, study and series modules filled from ``ident``.

    ``ident`` keys: patient_name, patient_id, birth_date, sex, study_date, study_time,
    accession_number, study_description, series_description, modality, series_number,
    instance_number, body_part, view_position, protocol_name.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_NAME
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = UID(sop_uid)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ident["study_date"]
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ident["study_time"]
    ds.AccessionNumber = ident["accession_number"]
    ds.Modality = ident["modality"]
    ds.Manufacturer = "TLAUDIT SYNTHETIC"
    ds.ManufacturerModelName = "Synthetic DR 1"
    ds.InstitutionName = "Synthetic General Hospital (not a real site)"
    ds.StationName = "SYNTH-ER-01"
    ds.ReferringPhysicianName = "SYNTHETIC^REFERRER"
    ds.StudyDescription = ident.get("study_description", "")
    ds.SeriesDescription = ident.get("series_description", "")
    ds.PatientName = ident["patient_name"]
    ds.PatientID = ident["patient_id"]
    ds.PatientBirthDate = ident["birth_date"]
    ds.PatientSex = ident["sex"]
    if ident.get("body_part"):
        ds.BodyPartExamined = ident["body_part"]
    else:
        ds.BodyPartExamined = ""
    if "protocol_name" in ident:
        ds.ProtocolName = ident["protocol_name"]
    ds.StudyInstanceUID = UID(study_uid)
    ds.SeriesInstanceUID = UID(series_uid)
    ds.StudyID = ident["accession_number"][-6:]
    ds.SeriesNumber = int(ident.get("series_number", "1"))
    ds.InstanceNumber = int(ident.get("instance_number", "1"))
    return ds


def set_image(
    ds: Dataset,
    stored: npt.NDArray[np.uint16] | npt.NDArray[np.int16],
    bits_stored: int,
    photometric: str,
    syntax: str,
    signed: bool = False,
) -> str:
    """Attach pixel data (Image Pixel module) and encode it in ``syntax``.

    Returns the transfer syntax used: ``syntax``, except that an image CharLS cannot fit in its
    buffer (incompressible noise) falls back from JPEG-LS to JPEG Lossless.

    Raises
    ------
    TlauditError
        When an encoder is missing or fails (the caller names the file).
    """
    rows, cols = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    arr = np.ascontiguousarray(stored)
    syntax = UID(syntax)
    try:
        if syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            ds.PixelData = arr.astype("<i2" if signed else "<u2").tobytes()
            ds["PixelData"].VR = "OW"
            ds.file_meta.TransferSyntaxUID = syntax
        elif syntax == JPEGLosslessSV1:
            import imagecodecs

            frame = imagecodecs.jpeg8_encode(
                arr, lossless=True, predictor=1, bitspersample=bits_stored
            )
            _encapsulated(ds, bytes(frame), syntax)
        elif syntax == JPEGLSLossless:
            import imagecodecs

            try:
                frame = imagecodecs.jpegls_encode(arr, level=0)
            except RuntimeError:
                return set_image(ds, stored, bits_stored, photometric, JPEGLosslessSV1, signed)
            _encapsulated(ds, bytes(frame), syntax)
        elif syntax == JPEG2000Lossless:
            ds.PixelData = arr.astype("<i2" if signed else "<u2").tobytes()
            ds["PixelData"].VR = "OW"
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.compress(syntax, arr, generate_instance_uid=False)
        else:
            raise TlauditError(f"no encoder for transfer syntax {syntax}")
    except (ImportError, RuntimeError, ValueError) as err:
        raise TlauditError(f"could not encode pixels as {syntax.name}: {err}") from err
    return str(syntax)


def _encapsulated(ds: Dataset, frame: bytes, syntax: UID) -> None:
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    ds.LossyImageCompression = "00"


def radiograph_module(
    ds: Dataset,
    *,
    modality: str,
    view_position: str,
    pixel_spacing: float,
    window: tuple[float, float] | None,
    kvp: float,
    mas: float,
    photometric: str,
    orientation: tuple[str, str],
) -> None:
    """CR/DX acquisition and presentation attributes (PS3.3 C.8.1, C.8.11)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ViewPosition = view_position
    ds.PatientOrientation = list(orientation)
    spacing = [f"{pixel_spacing:.6f}", f"{pixel_spacing:.6f}"]
    ds.PixelSpacing = spacing
    ds.ImagerPixelSpacing = spacing
    ds.KVP = f"{kvp:.0f}"
    ds.Exposure = f"{mas:.0f}"
    ds.DistanceSourceToDetector = "1150"
    ds.BurnedInAnnotation = "YES"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.DetectorType = "SCINTILLATOR"
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    else:
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter = f"{window[0]:.1f}"
        ds.WindowWidth = f"{window[1]:.1f}"


def text_report(ds: Dataset, text: str, title: str) -> None:
    """Basic Text SR content: one TEXT item under a CONTAINER (PS3.3 A.35.1)."""

    def code(value: str, scheme: str, meaning: str) -> Dataset:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = scheme
        item.CodeMeaning = meaning
        return item

    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([code("18748-4", "LN", title)])
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([code("121071", "DCM", "Finding")])
    item.TextValue = text
    ds.ContentSequence = Sequence([item])


def to_bytes(ds: Dataset) -> bytes:
    """``ds`` encoded as a Part 10 file (preamble, file meta, data set)."""
    buf = io.BytesIO()
    implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    ds.save_as(buf, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    return buf.getvalue()


def write(ds: Dataset, path: Path) -> int:
    """Write ``ds`` as a Part 10 file; returns the size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_bytes(ds)
    path.write_bytes(data)
    return len(data)
