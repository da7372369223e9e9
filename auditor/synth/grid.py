"""The mapping between stored pixels, the reduced render grid and the patient plane.

Stored pixels are ``(col, row)`` with the origin at the top-left corner of the top-left pixel.
The render grid is the stored grid reduced by an integer ``factor`` (smooth anatomy is rendered
there, noise and detector blur at full resolution). The patient plane is millimetres with ``x``
anterior and ``y`` cranial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

FloatArray = npt.NDArray[np.floating[Any]]


@dataclass(frozen=True)
class Grid:
    """Stored image geometry and its placement on the patient.

    Parameters
    ----------
    rows, cols
        Stored image size (multiples of ``factor``).
    pitch
        Patient-plane millimetres per stored pixel (detector pixel spacing / magnification).
    factor
        Render-grid reduction.
    centre
        Patient point at the image centre.
    rotation
        Radians; positioning rotation of the patient in the image.
    facing_right
        Anterior points to the right of the image.
    """

    rows: int
    cols: int
    pitch: float
    factor: int
    centre: tuple[float, float]
    rotation: float
    facing_right: bool

    @property
    def render_shape(self) -> tuple[int, int]:
        """Shape of the reduced render grid."""
        return self.rows // self.factor, self.cols // self.factor

    @property
    def render_pitch(self) -> float:
        """Patient millimetres per render-grid pixel."""
        return self.pitch * self.factor

    def pixel_to_patient(self, col: FloatArray, row: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Stored-pixel coordinates (continuous, pixel centres at +0.5) to patient millimetres."""
        dx = (col - 0.5 * self.cols) * self.pitch
        dy = (0.5 * self.rows - row) * self.pitch
        if not self.facing_right:
            dx = -dx
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        return self.centre[0] + c * dx - s * dy, self.centre[1] + s * dx + c * dy

    def patient_to_pixel(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Patient millimetres to stored-pixel coordinates (inverse of :meth:`pixel_to_patient`)."""
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        ex, ey = x - self.centre[0], y - self.centre[1]
        dx = c * ex + s * ey
        dy = -s * ex + c * ey
        if not self.facing_right:
            dx = -dx
        return dx / self.pitch + 0.5 * self.cols, 0.5 * self.rows - dy / self.pitch

    def render_window(
        self, x: FloatArray, y: FloatArray, margin_mm: float
    ) -> tuple[int, int, int, int]:
        """Render-grid window ``(r0, r1, c0, c1)`` (unclipped) covering patient points + margin."""
        col, row = self.patient_to_pixel(np.asarray(x, float), np.asarray(y, float))
        f = self.factor
        m = margin_mm / self.pitch
        c0 = int(np.floor((col.min() - m) / f))
        c1 = int(np.ceil((col.max() + m) / f)) + 1
        r0 = int(np.floor((row.min() - m) / f))
        r1 = int(np.ceil((row.max() + m) / f)) + 1
        return r0, r1, c0, c1

    def window_patient(self, r0: int, r1: int, c0: int, c1: int) -> tuple[FloatArray, FloatArray]:
        """Patient coordinates of render-grid pixel centres in a window (may extend off-grid)."""
        f = self.factor
        rows = (np.arange(r0, r1, dtype=np.float32) + 0.5) * f
        cols = (np.arange(c0, c1, dtype=np.float32) + 0.5) * f
        # Separable: the map is affine, so build it from a row and a column vector.
        x_r, y_r = self.pixel_to_patient(np.zeros_like(rows), rows)
        x_c, y_c = self.pixel_to_patient(cols, np.zeros_like(cols))
        x0, y0 = self.pixel_to_patient(np.zeros(1, np.float32), np.zeros(1, np.float32))
        x = x_r[:, None] + (x_c - x0)[None, :]
        y = y_r[:, None] + (y_c - y0)[None, :]
        return x, y


def clip_window(
    window: tuple[int, int, int, int], shape: tuple[int, int]
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Slices into the grid and into the window array for the on-grid part (None if off-grid)."""
    r0, r1, c0, c1 = window
    rr0, rr1 = max(r0, 0), min(r1, shape[0])
    cc0, cc1 = max(c0, 0), min(c1, shape[1])
    if rr0 >= rr1 or cc0 >= cc1:
        return None
    grid_sl = (slice(rr0, rr1), slice(cc0, cc1))
    win_sl = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
    return grid_sl, win_sl


def resize(a: npt.NDArray[np.float32], rows: int, cols: int) -> npt.NDArray[np.float32]:
    """Bilinear resize to exactly ``(rows, cols)``, pixel-centre aligned (Pillow's resampler on a
    float32 image: fast, deterministic, separable linear interpolation when enlarging)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.shape == (rows, cols):
        return a.copy()
    img = Image.frombuffer("F", (a.shape[1], a.shape[0]), a, "raw", "F", 0, 1)
    return np.array(img.resize((cols, rows), Image.Resampling.BILINEAR), dtype=np.float32)
