"""A tiny stand-in world for tests: bright rounded blocks stacked along a curve, with truth.

Not a radiograph simulator (that is ``auditor.synth``): just enough structure (bodies separated by
discs, the S1 block at the bottom when in view, rib-like arcs over the thoracic levels, a wedged
"fractured" body now and then, bodies cut by the edge) to exercise training, decoding and level
naming quickly and deterministically.
"""

from __future__ import annotations

import numpy as np

from auditor.localizer.data import TrainingImage

_NAMES = ("T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")


def toy_image(rng: np.random.Generator, rows: int = 160, cols: int = 128) -> TrainingImage:
    """One stand-in lateral view with 5-7 bodies; the lowest levels shown vary per image."""
    n = int(rng.integers(5, 8))
    last = int(rng.integers(n - 1, len(_NAMES)))  # index of the lowest drawn level
    names = _NAMES[last - n + 1 : last + 1]
    step = rows / (n + 0.6)
    height = step * rng.uniform(0.62, 0.72)
    depth = height * rng.uniform(1.2, 1.5)
    y0 = rng.uniform(0.2, 0.6) * step
    bend = rng.uniform(-0.15, 0.15) * cols
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    img = 0.15 + 0.05 * rng.standard_normal((rows, cols)).astype(np.float32)
    boxes, levels, partial, fractured = [], [], [], []
    for i, name in enumerate(names):
        cy = y0 + (i + 0.5) * step
        t = cy / rows - 0.5
        cx = cols * 0.5 + bend * 4 * t * t
        w = depth * (1.15 if name == "S1" else 1.0)
        h = height
        frac = name != "S1" and rng.random() < 0.15
        if frac:
            h *= rng.uniform(0.55, 0.75)  # crushed body
        inside = (np.abs(xx - cx) <= w / 2) & (np.abs(yy - cy) <= h / 2)
        if frac:  # anterior wedge: trim the top front corner
            inside &= (yy - (cy - h / 2)) >= (xx - cx) / w * h * 0.6
        img[inside] += 0.55 if name != "S1" else 0.4
        if name in ("T8", "T9", "T10", "T11", "T12"):  # rib arcs across thoracic bodies
            arc = np.abs((yy - cy) - 0.002 * (xx - cx) ** 2) < 1.2
            img[arc] += 0.2
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)
        clipped = np.clip(box, 0, [cols, rows, cols, rows])
        full_area = (box[2] - box[0]) * (box[3] - box[1])
        area = max(0.0, clipped[2] - clipped[0]) * max(0.0, clipped[3] - clipped[1])
        if area < 0.2 * full_area:
            continue
        boxes.append(clipped)
        levels.append(name)
        partial.append(area < 0.6 * full_area)
        fractured.append(frac)
    img = np.clip(img, 0, 1).astype(np.float32)
    return TrainingImage(
        pixels=img,
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        levels=tuple(levels),
        partial=np.array(partial, bool),
        fractured=np.array(fractured, bool),
    )


def toy_images(n: int, seed: int, rows: int = 160, cols: int = 128) -> list[TrainingImage]:
    """``n`` stand-in images from ``seed`` (deterministic)."""
    rng = np.random.default_rng(seed)
    return [toy_image(rng, rows, cols) for _ in range(n)]
