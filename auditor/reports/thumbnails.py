"""Small images the reports show: a vertebra crop under its heatmap, and a radiograph with boxes.

Both are written as JPEG files under the run's ``thumbnails/`` folder (small, and what both openpyxl
and browsers take). Names derive from the image path and level through a hash, so that they are
the same in a resumed run and never carry header text into a file name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from auditor.files import atomic_path

HEATMAP_DIR = "thumbnails/heatmaps"
RADIOGRAPH_DIR = "thumbnails/radiographs"
JPEG_QUALITY = 85


@lru_cache(maxsize=4)
def colour_lut(name: str = "jet") -> npt.NDArray[np.uint8]:
    """A (256, 3) uint8 lookup table for a matplotlib colour map."""
    from matplotlib import colormaps  # imported on first use: matplotlib is slow to import

    table = colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.asarray(np.round(table * 255.0), dtype=np.uint8)


def heatmap_overlay(
    crop: npt.NDArray[np.uint8], heatmap: npt.NDArray[np.float32], alpha: float = 0.4
) -> Image.Image:
    """Blend a colour heatmap over a greyscale crop.

    Parameters
    ----------
    crop
        (T, T) uint8 greyscale crop, bone bright.
    heatmap
        (S, S) float map in [0, 1] (resized to the crop's size when S differs).
    alpha
        Weight of the colour map in the blend.

    Returns
    -------
    PIL.Image.Image
        RGB image of the crop's size.
    """
    size = crop.shape[1], crop.shape[0]
    hm = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if hm.shape != crop.shape:
        hm = np.asarray(Image.fromarray(hm, mode="F").resize(size, Image.Resampling.BILINEAR))
    colour = colour_lut()[np.clip(np.round(hm * 255.0), 0, 255).astype(np.uint8)]
    grey = np.repeat(crop[..., None], 3, axis=2).astype(np.float32)
    blended = (1.0 - alpha) * grey + alpha * colour.astype(np.float32)
    return Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8), mode="RGB")


@dataclass(frozen=True)
class DrawnBox:
    """A box to draw on a radiograph thumbnail."""

    xyxy: tuple[float, float, float, float]
    label: str
    positive: bool


def downscale_radiograph(
    pixels: npt.NDArray[np.float32], max_side: int = 640
) -> npt.NDArray[np.uint8]:
    """A greyscale uint8 copy of a radiograph whose longest side is at most ``max_side``.

    Parameters
    ----------
    pixels
        Float32 (rows, columns) in [0, 1], bone bright.
    max_side
        Longest side of the result in pixels (never enlarged).
    """
    rows, cols = pixels.shape
    scale = min(1.0, max_side / max(rows, cols))
    size = max(1, round(cols * scale)), max(1, round(rows * scale))
    # Subsample by an integer step that keeps at least 1.5 times the output resolution (cheap:
    # no pass over the full image), then resize with a proper filter and quantise the small copy.
    step = max(1, int(max(rows, cols) / (1.5 * max_side)))
    source = np.ascontiguousarray(pixels[::step, ::step], dtype=np.float32)
    small = Image.fromarray(source, mode="F")
    if small.size != size:
        small = small.resize(size, Image.Resampling.BILINEAR)
    grey = np.clip(np.round(np.asarray(small) * 255.0), 0, 255)
    return grey.astype(np.uint8)


def draw_boxes(
    preview: npt.NDArray[np.uint8], boxes: Sequence[DrawnBox], scale: float
) -> Image.Image:
    """Draw vertebra boxes (positive red, negative green) on a downscaled radiograph.

    Parameters
    ----------
    preview
        (h, w) uint8 from :func:`downscale_radiograph`.
    boxes
        Boxes in stored-pixel coordinates with their labels (e.g. ``"L1 0.93"``).
    scale
        Preview pixels per stored pixel.
    """
    image = Image.fromarray(preview, mode="L").convert("RGB")
    draw = ImageDraw.Draw(image)
    for box in boxes:
        x0, y0, x1, y1 = (v * scale for v in box.xyxy)
        colour = (230, 40, 40) if box.positive else (60, 200, 90)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=2 if box.positive else 1)
        # Label to the right of the box (inside it near the right edge), on a dark plate.
        _, _, right, bottom = draw.textbbox((0, 0), box.label)
        tx = x1 + 3 if x1 + 3 + right < image.width else max(x0 + 2, 0)
        ty = max(y0, 0)
        draw.rectangle((tx - 1, ty - 1, tx + right + 1, ty + bottom + 1), fill=(0, 0, 0))
        draw.text((tx, ty), box.label, fill=colour)
    return image


def radiograph_thumbnail(
    pixels: npt.NDArray[np.float32], boxes: Sequence[DrawnBox], max_side: int = 640
) -> Image.Image:
    """Downscale a radiograph and draw its vertebra boxes (see :func:`draw_boxes`)."""
    preview = downscale_radiograph(pixels, max_side)
    return draw_boxes(preview, boxes, preview.shape[1] / pixels.shape[1])


def thumbnail_name(image: str, suffix: str = "") -> str:
    """A stable file name for a thumbnail of archive image ``image``, e.g. ``ab12..-L1.jpg``."""
    digest = hashlib.sha256(image.encode("utf-8")).hexdigest()[:20]
    return f"{digest}{'-' + suffix if suffix else ''}.jpg"


def save_jpeg(image: Image.Image, target: Path) -> None:
    """Write ``image`` as a JPEG atomically (a killed run never leaves half a thumbnail)."""
    with atomic_path(target) as tmp:
        image.save(tmp, format="JPEG", quality=JPEG_QUALITY)


#: The largest value of a heatmap's values file: 16-bit grey levels for heatmap values 0 to 1.
HEATMAP_VALUE_LEVELS = 65535


def heatmap_values_path(thumbnail: Path) -> Path:
    """Where the scan keeps the values of a heatmap thumbnail: beside it, ``NAME.values.png``."""
    return thumbnail.with_name(f"{thumbnail.stem}.values.png")


def save_heatmap_values(values: npt.NDArray[np.floating], target: Path) -> None:
    """Write a heatmap's values (in [0, 1]) as a 16-bit greyscale PNG, atomically: the map the
    thumbnail's colours came from, kept so that later outputs (the DICOM Secondary Capture) use
    the values rather than recovering them from the JPEG's colours."""
    scaled = np.round(np.clip(np.nan_to_num(values), 0.0, 1.0) * HEATMAP_VALUE_LEVELS)
    with atomic_path(target) as tmp:
        Image.fromarray(scaled.astype(np.uint16)).save(tmp, format="PNG")


def read_heatmap_values(path: Path) -> npt.NDArray[np.float32]:
    """The values :func:`save_heatmap_values` wrote, as float32 in [0, 1].

    Raises
    ------
    OSError
        When the file is missing or not a PNG.
    ValueError
        When it is not a 2-D 16-bit image.
    """
    with Image.open(path) as opened:
        if opened.format != "PNG":
            raise OSError(f"{path} is not a PNG file")
        levels = np.asarray(opened)
    if levels.ndim != 2 or levels.dtype not in (np.uint16, np.int32):
        raise ValueError(f"{path}: expected a 16-bit greyscale image, got {levels.dtype}")
    return (levels.astype(np.float32) / HEATMAP_VALUE_LEVELS).clip(0.0, 1.0)
