"""Cut one vertebra out of a radiograph as a square, fixed-size crop for the classifier.

The crop is centred on the vertebra's box, square (side = the box's longer side plus ``margin`` of
it on each side) so that the vertebra's shape is not distorted, padded with 0 (black) where the
square leaves the image, and resized with an antialiasing filter to the model's input size.
``scan``, ``train`` and ``evaluate`` all cut crops here, so that a model sees the same geometry in
training and in use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class CropWindow:
    """Where a crop sits in the source image, in stored-pixel coordinates.

    ``x0, y0`` is the crop's top-left corner (may be negative near an edge), ``side`` its side
    length in source pixels; ``size`` is the side of the resized crop in output pixels.
    """

    x0: int
    y0: int
    side: int
    size: int

    @property
    def scale(self) -> float:
        """Output pixels per source pixel."""
        return self.size / self.side

    def to_crop(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map (K, 2) source ``[x, y]`` points into crop pixel coordinates (continuous)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return (pts - np.array([self.x0, self.y0], dtype=np.float64)) * self.scale


def crop_window(box: Box, margin: float, size: int) -> CropWindow:
    """Compute the square source window :func:`crop_vertebra` cuts for ``box``.

    Parameters
    ----------
    box
        ``(x_min, y_min, x_max, y_max)`` in stored-pixel coordinates (x = column, y = row).
    margin
        Extra context on each side, as a fraction of the box's longer side (0.15 adds 15 %).
    size
        Output side length in pixels.

    Raises
    ------
    ValueError
        For a degenerate box (zero or negative width or height), a negative margin or size < 1.
    """
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    width, height = x_max - x_min, y_max - y_min
    if not (width > 0 and height > 0) or not all(map(math.isfinite, (x_min, y_min, x_max, y_max))):
        raise ValueError(f"degenerate box {box!r}: need x_max > x_min and y_max > y_min")
    if margin < 0:
        raise ValueError(f"crop margin must be >= 0, got {margin}")
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    side = max(1, round(max(width, height) * (1.0 + 2.0 * margin)))
    cx, cy = (x_min + x_max) / 2.0, (y_min + y_max) / 2.0
    x0 = math.floor(cx - side / 2.0 + 0.5)
    y0 = math.floor(cy - side / 2.0 + 0.5)
    return CropWindow(x0=x0, y0=y0, side=side, size=size)


def crop_vertebra(
    pixels: npt.NDArray[np.float32], box: Box, margin: float, size: int
) -> npt.NDArray[np.float32]:
    """Cut a square crop around a vertebra box and resize it to ``size`` x ``size``.

    Parameters
    ----------
    pixels
        Radiograph, float32 (rows, columns) in [0, 1], bone bright. Not modified.
    box
        ``(x_min, y_min, x_max, y_max)`` in stored-pixel coordinates.
    margin
        Context added on each side as a fraction of the box's longer side.
    size
        Side of the returned crop.

    Returns
    -------
    numpy.ndarray
        float32 (size, size); area outside the image is 0.

    Raises
    ------
    ValueError
        For a degenerate box, a box that does not overlap the image, or a non-2-D image.
    """
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale image, got shape {pixels.shape}")
    win = crop_window(box, margin, size)
    rows, cols = pixels.shape
    sx0, sy0 = max(win.x0, 0), max(win.y0, 0)
    sx1, sy1 = min(win.x0 + win.side, cols), min(win.y0 + win.side, rows)
    if sx1 <= sx0 or sy1 <= sy0:
        raise ValueError(f"box {box!r} lies outside the {cols}x{rows} image")
    window = np.zeros((win.side, win.side), dtype=np.float32)
    window[sy0 - win.y0 : sy1 - win.y0, sx0 - win.x0 : sx1 - win.x0] = pixels[sy0:sy1, sx0:sx1]
    if win.side == size:
        return window
    # PIL's resampling widens the filter support when shrinking, i.e. it antialiases.
    resized = Image.fromarray(window, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    out = np.asarray(resized, dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


#: Per-crop intensity normalisations a model card may ask for.
CROP_NORMALISATIONS = ("none", "percentile")


def stretch_contrast(
    crops: npt.NDArray[np.float32], low: float = 1.0, high: float = 99.0
) -> npt.NDArray[np.float32]:
    """Map each crop's ``low``-``high`` percentile range to [0, 1] (clipped); returns a new array.

    Radiographs of one archive differ widely in exposure and windowing; stretching every crop
    on its own removes that nuisance before the network sees it. A flat crop becomes all zeros.
    """
    arr = np.asarray(crops, dtype=np.float32)
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim == 3 else arr.reshape(1, -1)
    lo = np.percentile(flat, low, axis=1).astype(np.float32)
    hi = np.percentile(flat, high, axis=1).astype(np.float32)
    span = np.where(hi - lo > 1e-6, hi - lo, np.float32(1.0))
    shape = (-1,) + (1,) * (arr.ndim - 1) if arr.ndim == 3 else ()
    out = (arr - lo.reshape(shape)) / span.reshape(shape)
    out = np.where((hi - lo > 1e-6).reshape(shape), out, np.float32(0.0))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def normalise_crops(crops: npt.NDArray[np.float32], method: str) -> npt.NDArray[np.float32]:
    """Apply a card's per-crop normalisation (``none`` returns the input unchanged).

    Raises
    ------
    ValueError
        For an unknown method.
    """
    if method == "none":
        return crops
    if method == "percentile":
        return stretch_contrast(crops)
    raise ValueError(
        f"unknown crop normalisation {method!r}; expected one of {CROP_NORMALISATIONS}"
    )
