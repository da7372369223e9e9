"""Synthetic images that hold no thoracolumbar spine, for the localizer's plausibility check:
a hand (five rays of phalanges), a chest film (two lung fields, ribs, a thin spine shadow) and
plain noise. Float32 (rows, cols) in [0, 1], bone bright, as ``read_radiograph`` returns."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.ndimage import gaussian_filter, rotate


def hand(seed: int = 0, size: int = 600) -> npt.NDArray[np.float32]:
    """A PA hand: a palm and five fingers of three or two bright phalanges each, spread in a fan."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 0.08, np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    palm = ((xx - size / 2) / (size * 0.22)) ** 2 + ((yy - size * 0.75) / (size * 0.2)) ** 2 < 1
    img[palm] = 0.35
    for finger, angle in enumerate((-40, -18, 0, 15, 30)):
        ray = np.zeros_like(img)
        x0, y = size // 2 - 8, int(size * 0.55)
        bones = 2 if finger == 0 else 3
        for k in range(bones):
            length = int(size * (0.11 - 0.02 * k) * rng.uniform(0.9, 1.1))
            width = int(size * 0.035)
            ray[y - length : y, x0 : x0 + width] = 0.8
            y -= length + int(size * 0.012)
        img = np.maximum(img, rotate(ray, angle, reshape=False, order=1, mode="constant"))
    img = gaussian_filter(img, 2) + rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def chest(seed: int = 0, size: int = 700) -> npt.NDArray[np.float32]:
    """A PA chest film: bright soft tissue, two dark lung fields crossed by rib arcs, and the
    thin shadow of the spine between them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.full((size, size), 0.6, np.float32)
    for cx in (0.3, 0.7):
        lung = ((xx - size * cx) / (size * 0.17)) ** 2 + ((yy - size * 0.5) / (size * 0.32)) ** 2
        img[lung < 1] = 0.2
    for k in range(9):
        y0 = size * (0.22 + 0.07 * k)
        arc = np.abs(yy - (y0 + 0.0006 * (xx - size / 2) ** 2 / (size / 700))) < size * 0.008
        img[arc] += 0.25
    img[:, int(size * 0.48) : int(size * 0.52)] += 0.15
    img = gaussian_filter(img, 3) + rng.normal(0, 0.03, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def noise(seed: int = 0, size: int = 512) -> npt.NDArray[np.float32]:
    """Smoothed Gaussian noise."""
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.normal(0.5, 0.2, (size, size)), 4)
    return np.clip((img - img.min()) / np.ptp(img), 0, 1).astype(np.float32)
