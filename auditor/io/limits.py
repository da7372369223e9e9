"""The largest image tlaudit decodes, checked from the header before any pixel is decoded.

A file may declare any size: a 25 MB RLE DICOM that declares 40,000 x 40,000 pixels would need
about 10 GB to decode. The limit is 400 megapixels by default (20,000 x 20,000: a 43 x 43 cm
detector at 0.02 mm, well beyond any radiograph), the same for DICOM and PNG/TIFF/JPEG. A site
with larger images raises it with the environment variable ``TLAUDIT_MAX_PIXELS`` (worker
processes inherit it); a larger image is skipped as an unreadable row with the reason.
"""

from __future__ import annotations

import os

#: Default largest pixel count (rows x columns x frames) tlaudit decodes.
DEFAULT_MAX_PIXELS = 20000 * 20000
#: Environment variable that overrides :data:`DEFAULT_MAX_PIXELS` (a positive integer).
MAX_PIXELS_ENV = "TLAUDIT_MAX_PIXELS"


def max_pixels() -> int:
    """The pixel-count limit in force: ``TLAUDIT_MAX_PIXELS`` when it is a positive integer,
    else :data:`DEFAULT_MAX_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return DEFAULT_MAX_PIXELS


def too_large(columns: int, rows: int, frames: int = 1) -> str:
    """Why an image of this size is not decoded ("" when it is within the limit)."""
    limit = max_pixels()
    if columns * rows * max(frames, 1) <= limit:
        return ""
    return (
        f"image of {columns} x {rows} pixels{f' x {frames} frames' if frames > 1 else ''} "
        f"exceeds the {limit / 1e6:.0f}-megapixel limit (raise it with {MAX_PIXELS_ENV})"
    )
