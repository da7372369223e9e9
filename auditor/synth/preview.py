"""Contact sheets: generated images with their boxes and labels drawn, for a human to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from auditor.synth.study import SynthStudy

FRACTURE_COLOUR = (255, 60, 40)
INTACT_COLOUR = (60, 220, 90)
ZONE_COLOUR = (255, 170, 0)


def study_tile(study: SynthStudy, size: int = 320) -> npt.NDArray[np.uint8]:
    """The study's display image, long side ``size`` px, with boxes, levels, labels, zones."""
    pixels = study.pixels
    scale = size / max(pixels.shape)
    w, h = max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale))
    img = Image.fromarray(np.rint(pixels * 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BILINEAR
    )
    img = img.convert("RGB")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(9, size // 32))
    for v in study.vertebrae:
        x0, y0, x1, y1 = (c * scale for c in v.box)
        colour = FRACTURE_COLOUR if v.label else INTACT_COLOUR
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=1)
        text = v.level + (f" {v.ao_type} g{v.genant_grade}" if v.label else "")
        if v.partial:
            text += " (cut)"
        draw.text((x1 + 2, y0), text, fill=colour, font=font)
        if v.zone:
            draw.polygon([(x * scale, y * scale) for x, y in v.zone], outline=ZONE_COLOUR)
    missed = study.read.planted_miss_levels
    caption = f"#{study.index} {study.scene.field.kind}"
    if missed:
        caption += " missed:" + ",".join(missed)
    draw.text((3, h - size // 20 - 2), caption, fill=(255, 255, 0), font=font)
    return np.asarray(img)


def contact_sheet(
    tiles: list[npt.NDArray[np.uint8]], columns: int = 4, size: int = 320
) -> Image.Image:
    """Tiles on a black sheet, ``columns`` across, each in a ``size`` square cell."""
    rows = max(1, -(-len(tiles) // columns))
    sheet = Image.new("RGB", (columns * size, rows * size), (0, 0, 0))
    for k, tile in enumerate(tiles):
        img = Image.fromarray(tile)
        x = (k % columns) * size + (size - img.width) // 2
        y = (k // columns) * size + (size - img.height) // 2
        sheet.paste(img, (x, y))
    return sheet


def save_sheet(sheet: Image.Image, path: Path) -> None:
    """Write a contact sheet as a small palette PNG (no timestamps in the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    small = sheet.quantize(colors=96, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, format="PNG", optimize=True)
