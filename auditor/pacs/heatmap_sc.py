"""The heatmaps as DICOM: per source image, a Secondary Capture (highdicom
:class:`~highdicom.sc.SCImage`, RGB) of the radiograph with its vertebrae's heatmaps blended in
and the boxes drawn with their level and probability.

What the scan keeps of a heatmap is its thumbnail (``RUN_DIR/thumbnails/heatmaps/*.jpg``): the
vertebra's crop with the colour map blended over it
(:func:`~auditor.reports.thumbnails.heatmap_overlay`), 128 x 128 pixels (JPEG) for the square
crop window around the box (:func:`~auditor.crops.crop_window`, the model card's margin), and
beside it the map's values (``NAME.values.png``, 16-bit grey,
:func:`~auditor.reports.thumbnails.save_heatmap_values`), which the capture uses. For a run made
before scans kept the values, they are recovered from the thumbnail per pixel
(:func:`heatmap_from_thumbnail`: the colour of the map that, blended over some grey, comes
closest). Either way each vertebra's heatmap has 128 x 128 values across its crop window (the
network's own map is coarser: its grid, upsampled). They are
resized onto the radiograph and blended with the same colour map and weight as the thumbnails;
where windows overlap the higher value wins. The radiograph is shown at its stored resolution up
to :data:`MAX_SIDE` pixels on its longer side, downscaled beyond (the Pixel Spacing then says
so). Only images with at least one heatmap get a capture: the scan draws heatmaps for positive
vertebrae by default, for every vertebra with ``scan --heatmaps all``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from auditor import __version__
from auditor.crops import crop_window
from auditor.records import Radiograph
from auditor.reports.thumbnails import (
    colour_lut,
    downscale_radiograph,
    heatmap_overlay,
    heatmap_values_path,
    read_heatmap_values,
)

logger = logging.getLogger(__name__)

#: Longest side of a capture in pixels; larger radiographs are downscaled to it.
MAX_SIDE = 2048
#: The weight of the colour map in the thumbnails' blend: heatmap_overlay's own default.
ALPHA: float = inspect.signature(heatmap_overlay).parameters["alpha"].default

_POSITIVE = (230, 40, 40)
_NEGATIVE = (60, 200, 90)


def heatmap_from_thumbnail(thumbnail: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """The heatmap values in [0, 1] of a heatmap thumbnail, per pixel.

    A thumbnail pixel is ``(1 - a) * grey + a * colour(h)``; its grey part is the same on the
    three channels, so with the channels' mean taken out only ``a * colour(h)`` remains, less its
    own mean. The value is the ``h`` of the colour map (256 steps) whose centred colour is
    nearest in the least-squares sense.

    Parameters
    ----------
    thumbnail
        (T, T, 3) uint8 RGB, as the scan wrote it.
    """
    pixels = np.asarray(thumbnail, dtype=np.float32).reshape(-1, 3)
    lut = ALPHA * colour_lut().astype(np.float32)
    centred = pixels - pixels.mean(axis=1, keepdims=True)
    colours = lut - lut.mean(axis=1, keepdims=True)
    # |d - c|^2 = |d|^2 - 2 d.c + |c|^2; the first term is the same for every c
    distance = (colours**2).sum(axis=1)[None, :] - 2.0 * centred @ colours.T
    index = np.argmin(distance, axis=1)
    return (index.astype(np.float32) / 255.0).reshape(thumbnail.shape[:2])


def _heatmap_values(thumbnail: Path) -> npt.NDArray[np.float32]:
    """A heatmap's values: from the values file the scan keeps beside its thumbnail, or, for a
    run made before scans kept one (or whose file is unreadable), recovered from the
    thumbnail's colours (:func:`heatmap_from_thumbnail`)."""
    try:
        return read_heatmap_values(heatmap_values_path(thumbnail))
    except (OSError, ValueError) as err:
        logger.debug("heatmap values of %s recovered from its colours (%s)", thumbnail.name, err)
    with Image.open(thumbnail) as opened:
        return heatmap_from_thumbnail(np.asarray(opened.convert("RGB")))


def _font(height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    size = max(10, round(height / 60))
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_capture(
    radiograph: Radiograph,
    calls: Sequence[tuple[tuple[float, float, float, float], str, bool, Path | None]],
    margin: float,
    max_side: int = MAX_SIDE,
) -> tuple[npt.NDArray[np.uint8], tuple[float, float]]:
    """The capture's RGB pixels and its (row, column) scale: capture pixels per source pixel.

    Parameters
    ----------
    radiograph
        The decoded source image.
    calls
        Per vertebra: the box (source pixels), its label, whether it is positive, and its
        heatmap thumbnail (None when the scan drew none).
    margin
        The model card's crop margin (where each thumbnail lies on the image).
    max_side
        Longest side of the capture.
    """
    rows, columns = radiograph.pixels.shape
    grey = downscale_radiograph(radiograph.pixels, max_side)
    height, width = grey.shape
    scale_y, scale_x = height / rows, width / columns
    heat = np.zeros((height, width), dtype=np.float32)
    covered = np.zeros((height, width), dtype=bool)
    for box, _, _, thumbnail in calls:
        if thumbnail is None:
            continue
        values = _heatmap_values(thumbnail)
        window = crop_window(box, margin, values.shape[0])
        x0, y0 = round(window.x0 * scale_x), round(window.y0 * scale_y)
        w = max(1, round(window.side * scale_x))
        h = max(1, round(window.side * scale_y))
        resized = np.asarray(
            Image.fromarray(values, mode="F").resize((w, h), Image.Resampling.BILINEAR)
        )
        # the part of the window inside the image (crops are padded where they leave it)
        left, top = max(x0, 0), max(y0, 0)
        right, bottom = min(x0 + w, width), min(y0 + h, height)
        if right <= left or bottom <= top:
            continue
        part = resized[top - y0 : bottom - y0, left - x0 : right - x0]
        heat[top:bottom, left:right] = np.maximum(heat[top:bottom, left:right], part)
        covered[top:bottom, left:right] = True
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    colour = colour_lut()[np.clip(np.round(heat * 255.0), 0, 255).astype(np.uint8)]
    blended = (1.0 - ALPHA) * rgb + ALPHA * colour.astype(np.float32)
    rgb = np.where(covered[..., None], blended, rgb)
    image = Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    font = _font(height)
    line = max(1, round(max(height, width) / 500))
    for (bx0, by0, bx1, by1), label, positive, _ in calls:
        colour_ = _POSITIVE if positive else _NEGATIVE
        box = (bx0 * scale_x, by0 * scale_y, bx1 * scale_x, by1 * scale_y)
        draw.rectangle(box, outline=colour_, width=line * (2 if positive else 1))
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tx = box[2] + 3 if box[2] + 3 + right < width else max(box[0] + 2, 0)
        ty = max(box[1], 0)
        draw.rectangle((tx - 1, ty - 1, tx + right + 1, ty + bottom + 1), fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=colour_, font=font)
    return np.asarray(image, dtype=np.uint8), (scale_y, scale_x)


def secondary_capture(
    source: Dataset,
    pixels: npt.NDArray[np.uint8],
    spacing: tuple[float, float] | None,
    model: str,
    *,
    series_uid: str,
    sop_uid: str,
) -> hd.sc.SCImage:
    """The Secondary Capture of ``pixels`` in the study of ``source`` (its patient and study
    attributes copied), referencing it as its source image.

    Parameters
    ----------
    source
        The source image's header.
    pixels
        (rows, columns, 3) uint8 RGB from :func:`render_capture`.
    spacing
        The capture's (row, column) pixel spacing in mm, None when the source states none.
    model
        The model's name, for the series description.
    series_uid, sop_uid
        The new series (one for the study's captures) and instance UIDs.
    """
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_uid,
        series_number=9904,
        sop_instance_uid=sop_uid,
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer="tlaudit",
        pixel_spacing=spacing,  # type: ignore[arg-type]  # highdicom's hint says int
        patient_orientation=("A", "F"),  # replaced below by the source's own
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    # The pixels keep the source's orientation, so its Patient Orientation is theirs, copied as
    # is (highdicom takes only single letters; Type 2, so empty where the source has none).
    capture.PatientOrientation = source.get("PatientOrientation", "")
    # Laterality (General Series, 2C) is required for a paired body part: naming the part (the
    # spine, unpaired) lets a validator see that it is not; a source's laterality is kept.
    for keyword in ("BodyPartExamined", "Laterality"):
        if str(source.get(keyword, "")).strip():
            setattr(capture, keyword, source.get(keyword))
    capture.SeriesDescription = f"tlaudit heatmaps (AI, not reviewed): {model}"[:64]
    capture.ImageType = ["DERIVED", "SECONDARY"]
    capture.DerivationDescription = (
        f"tlaudit {__version__}: fracture heatmaps of {model} blended over the radiograph, "
        "vertebra boxes with level and probability drawn"
    )[:1024]
    capture.BurnedInAnnotation = "NO"  # levels and probabilities only: nothing identifying
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = source.SOPClassUID
    referenced.ReferencedSOPInstanceUID = source.SOPInstanceUID
    purpose = hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    referenced.PurposeOfReferenceCodeSequence = [purpose]
    capture.SourceImageSequence = [referenced]
    return capture
