"""Changes that make a radiograph or a crop foreign to the models, for measuring a domain guard.

The classifier's guard is measured on crops (:mod:`auditor.training.guard_rates`) and the
localizer's on whole images (:mod:`auditor.localizer.guard_rates`); both change their sets with
these functions, so the two measure the same inversion and the same noise. Each takes greyscale
pixels in [0, 1] of any shape and returns a new float32 array; the caller's array is untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

#: Standard deviation of :func:`noisy`'s heavy noise, on the [0, 1] grey scale.
HEAVY_NOISE = 0.25


def inverted(pixels: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """``pixels`` with the grey scale turned over (bone dark), as a MONOCHROME1 image read as
    MONOCHROME2 would be."""
    return (1.0 - np.asarray(pixels, dtype=np.float32)).astype(np.float32)


def noisy(
    pixels: npt.ArrayLike, sigma: float = HEAVY_NOISE, seed: int | Sequence[int] = 0
) -> npt.NDArray[np.float32]:
    """``pixels`` with Gaussian noise of standard deviation ``sigma`` added (drawn from
    ``seed``), clipped to [0, 1]."""
    x = np.asarray(pixels, dtype=np.float32)
    rng = np.random.default_rng(seed if isinstance(seed, int) else list(seed))
    return np.clip(x + rng.normal(0.0, sigma, x.shape), 0.0, 1.0).astype(np.float32)
