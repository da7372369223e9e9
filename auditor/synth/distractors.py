"""Objects an ER archive holds besides lateral thoracolumbar views, for triage to skip.

Each builder returns a ready :class:`pydicom.dataset.Dataset` (the broken kinds are written by
:mod:`auditor.synth.archive`).
The images are simple but recognisable renderings (frontal spine, chest, knee, an axial CT slice of
a lumbar vertebra, a sagittal T2 MR slice); what matters for triage is that their headers say what
they are, as real ones do, and that a forced scan meets real-looking pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from scipy import ndimage

from auditor.synth import dicom

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class DistractorFile:
    """One DICOM distractor object: its kind, dataset, and what a triage should conclude."""

    kind: str
    dataset: Dataset
    expected: str  # "skipped" or "unreadable"


def _ellipse(
    shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float, angle: float = 0.0
) -> F32:
    """Path-length profile of an ellipsoid (0 outside, 1 at the centre)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    a = (dx * c + dy * s) / rx
    b = (-dx * s + dy * c) / ry
    return np.sqrt(np.clip(1.0 - a * a - b * b, 0.0, None)).astype(np.float32)


def _to_stored(
    att: F32, rng: np.random.Generator, bits: int, out_shape: tuple[int, int]
) -> npt.NDArray[np.uint16]:
    """Noise, blur, upsample and window an attenuation map into stored values (bone bright)."""
    att = ndimage.gaussian_filter(att, 1.0)
    att = ndimage.zoom(att, (out_shape[0] / att.shape[0], out_shape[1] / att.shape[1]), order=1)
    att = att[: out_shape[0], : out_shape[1]]
    att = att + rng.normal(0.0, 0.02, att.shape).astype(np.float32) * (
        0.5 + att / (att.max() + 1e-6)
    )
    lo, hi = np.percentile(att, [1.0, 99.5])
    y = np.clip((att - lo) / (hi - lo + 1e-6), 0.0, 1.0)
    maxval = (1 << bits) - 1
    return np.rint(y * maxval).astype(np.uint16)


def ap_spine_pixels(rng: np.random.Generator, shape: tuple[int, int]) -> npt.NDArray[np.uint16]:
    """A frontal (AP) lumbar spine: bodies, pedicle ovals, spinous and transverse processes, iliac
    wings, psoas margins."""
    h, w = 400, 320
    att = np.zeros((h, w), np.float32)
    trunk = _ellipse((h, w), h / 2, w / 2, h * 2.0, w * 0.46)
    att += 2.0 * trunk
    cx = w / 2 + rng.uniform(-10, 10)
    y = rng.uniform(10, 30)
    for i in range(7):
        bh, bw = 34 + 2 * i, 48 + 2 * i
        body = _ellipse((h, w), y + bh / 2, cx, bh / 2 + 2, bw / 2 + 2) ** 0.25
        att += 0.7 * body
        for side in (-1, 1):
            att += 0.5 * _ellipse((h, w), y + bh * 0.3, cx + side * bw * 0.33, 7, 5)
            att += 0.35 * _ellipse((h, w), y + bh * 0.45, cx + side * bw * 0.75, 4, 18)
        att += 0.4 * _ellipse((h, w), y + bh * 0.75, cx, 9, 4)
        y += bh + 10
    for side in (-1, 1):
        att += 0.5 * _ellipse((h, w), h * 0.95, cx + side * w * 0.33, 70, 55)
    return _to_stored(att, rng, 12, shape)


def chest_pixels(rng: np.random.Generator, shape: tuple[int, int]) -> npt.NDArray[np.uint16]:
    """A PA chest: lungs, mediastinum, ribs, diaphragm, clavicles."""
    h, w = 400, 400
    att = 2.0 * _ellipse((h, w), h * 0.55, w / 2, h * 0.6, w * 0.48)
    for side in (-1, 1):
        att -= 1.1 * _ellipse((h, w), h * 0.45, w / 2 + side * w * 0.2, h * 0.33, w * 0.15)
        for k in range(9):
            ry = 40 + 3 * k
            yy = 70 + 26 * k
            ring = _ellipse((h, w), yy, w / 2 + side * 60, ry, 95) - _ellipse(
                (h, w), yy, w / 2 + side * 60, ry - 6, 89
            )
            att += 0.25 * np.clip(ring, 0, None)
        att += 0.35 * _ellipse((h, w), 60, w / 2 + side * 70, 6, 70, side * 0.25)
    att += 0.8 * _ellipse((h, w), h * 0.55, w * 0.52, h * 0.2, w * 0.11)
    att = np.clip(att, 0, None)
    return _to_stored(att, rng, 12, shape)


def knee_pixels(rng: np.random.Generator, shape: tuple[int, int]) -> npt.NDArray[np.uint16]:
    """A frontal knee: femur and tibia with condyles, patella, soft tissue."""
    h, w = 400, 300
    att = 1.0 * _ellipse((h, w), h / 2, w / 2, h, w * 0.4)
    att += 0.9 * _ellipse((h, w), h * 0.2, w / 2, h * 0.35, 30)
    att += 0.8 * _ellipse((h, w), h * 0.43, w / 2 - 28, 26, 30) + 0.8 * _ellipse(
        (h, w), h * 0.43, w / 2 + 28, 26, 30
    )
    att += 0.9 * _ellipse((h, w), h * 0.8, w / 2, h * 0.3, 34)
    att += 0.4 * _ellipse((h, w), h * 0.38, w / 2, 22, 18)
    return _to_stored(att, rng, 12, shape)


def ct_pixels(rng: np.random.Generator) -> npt.NDArray[np.int16]:
    """An axial CT slice through a lumbar vertebra, in Hounsfield units."""
    n = 512
    hu = np.full((n, n), -1000.0, np.float32)
    body = _ellipse((n, n), 260, 256, 150, 210) > 0
    hu[body] = -90.0
    inner = _ellipse((n, n), 260, 256, 130, 190) > 0
    hu[inner] = 40.0
    vert = _ellipse((n, n), 330, 256, 38, 44) > 0
    hu[vert] = 250.0
    hu[(_ellipse((n, n), 330, 256, 38, 44) > 0) & ~(_ellipse((n, n), 330, 256, 33, 39) > 0)] = 900.0
    hu[_ellipse((n, n), 392, 256, 14, 18) > 0] = 10.0  # canal
    for side in (-1, 1):
        hu[_ellipse((n, n), 250, 256 + side * 80, 35, 22) > 0] = 35.0  # kidneys
        hu[_ellipse((n, n), 400, 256 + side * 30, 10, 8) > 0] = 700.0  # pedicles / laminae
    hu += rng.normal(0, 12, hu.shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def mr_pixels(rng: np.random.Generator) -> npt.NDArray[np.uint16]:
    """A sagittal T2-weighted lumbar MR slice: dark bodies, bright discs and CSF."""
    n = 320
    img = np.full((n, n), 60.0, np.float32)
    img += 300.0 * _ellipse((n, n), n / 2, n * 0.55, n, n * 0.4) ** 0.3
    for i in range(7):
        y = 20 + i * 42
        img -= 150.0 * (_ellipse((n, n), y + 16, n * 0.45, 16, 24) > 0)
        img += 250.0 * (_ellipse((n, n), y + 37, n * 0.45, 4, 22) > 0)
    img[:, int(n * 0.58) : int(n * 0.62)] += 500.0
    img += rng.normal(0, 15, img.shape).astype(np.float32)
    return np.clip(img, 0, 4095).astype(np.uint16)


NON_DICOM_TEXT = (
    "PACS EXPORT LOG (synthetic)\n"
    "This file is not a DICOM object. It was left in the export folder by the archive tool.\n"
    "job=SYNTH-EXPORT status=partial items=unknown\n"
)


def radiograph_distractor(
    kind: str,
    rng: np.random.Generator,
    ident: dict[str, str],
    uids: tuple[str, str, str],
    uncompressed: bool = False,
) -> DistractorFile:
    """AP spine, chest or extremity radiograph as a DX/CR DICOM dataset (uncompressed on request;
    the syntax is drawn either way, so the rest of the world does not change)."""
    study_uid, series_uid, sop_uid = uids
    syntax = str(
        rng.choice([dicom.ExplicitVRLittleEndian, dicom.JPEGLosslessSV1, dicom.JPEG2000Lossless])
    )
    if uncompressed:
        syntax = str(dicom.ExplicitVRLittleEndian)
    modality = ident["modality"]
    storage = dicom.DX_STORAGE if modality == "DX" else dicom.CR_STORAGE
    ds = dicom.base_dataset(storage, sop_uid, study_uid, series_uid, ident)
    if kind == "ap_spine":
        pixels = ap_spine_pixels(rng, (1000, 800))
    elif kind == "chest":
        pixels = chest_pixels(rng, (1000, 1000))
    else:
        pixels = knee_pixels(rng, (1000, 750))
    photometric = "MONOCHROME2"
    if rng.random() < 0.3:
        photometric = "MONOCHROME1"
        pixels = ((1 << 12) - 1 - pixels).astype(np.uint16)
    dicom.radiograph_module(
        ds,
        modality=modality,
        view_position=ident["view_position"],
        pixel_spacing=0.3,
        window=(2048.0, 4096.0),
        kvp=80.0,
        mas=10.0,
        photometric=photometric,
        orientation=("R", "F"),
    )
    dicom.set_image(ds, pixels, 12, photometric, syntax)
    return DistractorFile(kind, ds, "skipped")


def ct_distractor(
    rng: np.random.Generator, ident: dict[str, str], uids: tuple[str, str, str]
) -> DistractorFile:
    """One axial CT slice of the lumbar spine (body part LSPINE: triage must go by modality)."""
    study_uid, series_uid, sop_uid = uids
    ds = dicom.base_dataset(dicom.CT_STORAGE, sop_uid, study_uid, series_uid, ident)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SliceThickness = "1.0"
    ds.PixelSpacing = ["0.75", "0.75"]
    ds.ImagePositionPatient = ["-192", "-192", f"{rng.uniform(-300, -100):.1f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.WindowCenter = "400"
    ds.WindowWidth = "1800"
    hu = ct_pixels(rng)
    stored = (hu.astype(np.int32) + 1024).astype(np.uint16)
    dicom.set_image(ds, stored, 12, "MONOCHROME2", dicom.ExplicitVRLittleEndian)
    return DistractorFile("ct_slice", ds, "skipped")


def mr_distractor(
    rng: np.random.Generator, ident: dict[str, str], uids: tuple[str, str, str]
) -> DistractorFile:
    """One sagittal T2 MR slice of the lumbar spine."""
    study_uid, series_uid, sop_uid = uids
    ds = dicom.base_dataset(dicom.MR_STORAGE, sop_uid, study_uid, series_uid, ident)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK"
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = "4.0"
    ds.PixelSpacing = ["0.9", "0.9"]
    ds.RepetitionTime = "3000"
    ds.EchoTime = "100"
    dicom.set_image(ds, mr_pixels(rng), 12, "MONOCHROME2", dicom.ExplicitVRLittleEndian)
    return DistractorFile("mr_slice", ds, "skipped")


def sr_distractor(text: str, ident: dict[str, str], uids: tuple[str, str, str]) -> DistractorFile:
    """The study's report as a Basic Text SR: no pixel data."""
    study_uid, series_uid, sop_uid = uids
    ds = dicom.base_dataset(dicom.BASIC_TEXT_SR, sop_uid, study_uid, series_uid, ident)
    dicom.text_report(ds, text or "No report text.", "Radiology Report")
    return DistractorFile("sr_report", ds, "skipped")
