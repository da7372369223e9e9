"""A tiny archive for scan tests: DICOM lateral spine views with boxes, reads and broken inputs.

Each study is one small MONOCHROME2 DICOM (160 x 96 pixels) with four bright 'vertebral bodies'
(T12 to L3). The box file has one good row per body plus named bad rows; the reads file mixes
negative reads, positive reads with levels, one study without a read, and bad rows. Study 0 carries
hostile header strings (script tags, formula prefixes, non-ASCII) to prove report escaping.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

from auditor.scan.config import ScanConfig

LEVELS = ("T12", "L1", "L2", "L3")
ROWS, COLS = 160, 96
HOSTILE = {
    "PatientName": "<script>alert('x')</script>^Ünïcødé",
    "PatientID": '=HYPERLINK("http://evil.example","click")',
    "AccessionNumber": "+cmd|' /C calc'!A0",
    "StudyDescription": '@SUM(A1) <b>脊椎</b> & "quotes"',
}
BAD_BOX_ROWS = 5  # rows appended to boxes.csv that must be rejected
BAD_READ_ROWS = 3  # rows appended to reads.csv that must be rejected


@dataclass(frozen=True)
class ScanWorld:
    archive: Path
    boxes: Path
    reads: Path
    study_uids: tuple[str, ...]
    n_studies: int


def _write_dicom(path: Path, index: int, headers: dict[str, str], rng: np.random.Generator) -> str:
    image = rng.normal(900, 60, (ROWS, COLS)).clip(0, 4095)
    for k in range(len(LEVELS)):
        y0 = 12 + 36 * k
        image[y0 : y0 + 28, 30:70] = 3000 + rng.normal(0, 80, (28, 40))
    ds = Dataset()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.{index}.3"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.99.{index}.1"
    ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.99.{index}.2"
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, for the non-ASCII hostile names
    ds.Modality = "DX"
    ds.BodyPartExamined = "LSPINE"
    ds.ViewPosition = "LL"
    ds.SeriesDescription = "L-SPINE LAT"
    ds.StudyDescription = "LUMBAR SPINE"
    ds.PatientID = f"FAKE-{index:03d}"
    ds.PatientName = f"Fake^Patient{index}"
    ds.AccessionNumber = f"ACC{index:04d}"
    ds.StudyDate = "20200101"
    for keyword, value in headers.items():
        setattr(ds, keyword, value)
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.15, 0.15]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = image.astype("<u2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.StudyInstanceUID)


def make_scan_world(root: Path, n_studies: int = 6, seed: int = 0) -> ScanWorld:
    """Write ``root/archive``, ``root/boxes.csv`` and ``root/reads.csv``.

    Reads: study 0 (hostile headers) is read negative, study 1 positive at L1, study 2 positive
    without levels, the last study has no read, the others are read negative.
    """
    rng = np.random.default_rng(seed)
    archive = root / "archive"
    uids = []
    box_rows = []
    for index in range(n_studies):
        rel = f"FAKE-{index:03d}/study/img{index:02d}.dcm"  # folders named by patient ID
        headers = HOSTILE if index == 0 else {}
        uids.append(_write_dicom(archive / rel, index, headers, rng))
        for k, level in enumerate(LEVELS):
            y0 = 12 + 36 * k
            box_rows.append([rel, level, 30, y0, 70, y0 + 28])
    (archive / "notes.txt").write_text("not an image\n", encoding="utf-8")
    (archive / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    box_rows += [
        ["FAKE-001/study/img01.dcm", "X9", 30, 10, 70, 40],  # unknown level
        ["../outside.dcm", "L4", 30, 10, 70, 40],  # escapes the archive
        ["nowhere/missing.dcm", "L4", 30, 10, 70, 40],  # unknown image
        ["FAKE-001/study/img01.dcm", "L4", 30, 150, 70, 400],  # outside the image
        ["FAKE-001/study/img01.dcm", "L5", 30, 10, 30, 40],  # degenerate
    ]
    boxes = root / "boxes.csv"
    with boxes.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "level", "x_min", "y_min", "x_max", "y_max"])
        writer.writerows(box_rows)
    reads = root / "reads.csv"
    with reads.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "accession_number",
                "study_uid",
                "image",
                "fracture_reported",
                "reported_levels",
                "impression",
            ]
        )
        for index in range(n_studies - 1):
            reported, levels = "no", ""
            if index == 1:
                reported, levels = "yes", "L1"
            elif index == 2:
                reported, levels = "yes", ""
            impression = "=cmd() <img src=x onerror=alert(1)>" if index == 0 else "Unremarkable."
            if index == 1:  # identifiers in free text, in another case than the headers'
                impression = f"L1 wedge. Told PATIENT{index} (fake-{index:03d}) by phone."
            writer.writerow(["", uids[index], "", reported, levels, impression])
        writer.writerow(["ACC9999", "", "", "maybe", "", ""])  # bad yes/no
        writer.writerow(["ACC9998", "", "", "yes", "T99", ""])  # unknown level
        writer.writerow(["", "", "", "no", "", "no key"])  # no key
    return ScanWorld(archive, boxes, reads, tuple(uids), n_studies)


def scan_config(world: ScanWorld, bundle: Path, out: Path, **kw: object) -> ScanConfig:
    """A scan of ``world`` with ``bundle`` (an untrained model: threshold 0 calls every vertebra
    positive) on the CPU, in batches of 8, in this process unless ``kw`` says otherwise; without
    the image check (the world's blobs are rightly unlike the localizer's training images, and
    the tests of the check ask for it)."""
    options: dict[str, object] = {
        "archive": world.archive,
        "out": out,
        "boxes": world.boxes,
        "reads": world.reads,
        "model": bundle,
        "threshold": 0.0,
        "device": "cpu",
        "batch_size": 8,
        "workers": 0,
        "image_check": False,
    }
    options.update(kw)
    return ScanConfig(**options)  # type: ignore[arg-type]
