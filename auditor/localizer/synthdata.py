"""Training and evaluation images from the synthetic world (:mod:`auditor.synth`), without files.

Each generated lateral study gives its display pixels and the truth boxes of T10..S1. The
synthetic world also draws T7..T9 on views that reach them, without boxes (they are outside the
project's vocabulary); they are boxed here with the same rule the world uses (outline clipped to
the exposed field) and labelled as "cranial to T10", so the network learns to find them and the
level logic to leave them unnamed, instead of learning to ignore bodies that look like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np

from auditor.localizer.data import TrainingImage
from auditor.synth.config import SynthConfig
from auditor.synth.geometry import clip_polygon, polygon_area
from auditor.synth.render import exposed_rect
from auditor.synth.study import MIN_VISIBLE, PARTIAL_BELOW, SynthStudy, generate_study

logger = logging.getLogger(__name__)

_ABOVE_T10 = ("T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9")


def study_to_training_image(study: SynthStudy) -> TrainingImage:
    """Truth boxes of a synthetic study (plus unboxed bodies above T10) as a TrainingImage."""
    boxes = [t.box for t in study.vertebrae]
    levels = [t.level for t in study.vertebrae]
    partial = [t.partial for t in study.vertebrae]
    fractured = [bool(t.label) for t in study.vertebrae]
    scene = study.scene
    grid = scene.grid
    rect = exposed_rect(grid, scene.acquisition.collimation)
    rect = (max(rect[0], 0.0), max(rect[1], 0.0), min(rect[2], grid.cols), min(rect[3], grid.rows))
    for plan in scene.vertebrae:
        if plan.level not in _ABOVE_T10:
            continue
        outline = plan.body.shape.outline(32)
        px, py = grid.patient_to_pixel(*plan.body.to_patient(outline[:, 0], outline[:, 1]))
        poly = np.stack([px, py], axis=1)
        full = polygon_area(poly)
        seen = clip_polygon(poly, rect)
        frac = polygon_area(seen) / full if full > 0 else 0.0
        if frac < MIN_VISIBLE or len(seen) < 3:
            continue
        boxes.append(
            (
                float(seen[:, 0].min()),
                float(seen[:, 1].min()),
                float(seen[:, 0].max()),
                float(seen[:, 1].max()),
            )
        )
        levels.append(plan.level)
        partial.append(frac < PARTIAL_BELOW)
        fractured.append(False)
    return TrainingImage(
        pixels=np.asarray(study.pixels, dtype=np.float32),
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        levels=tuple(levels),
        partial=np.array(partial, bool),
        fractured=np.array(fractured, bool),
        name=f"synth-{study.seed}-{study.index}",
    )


def synth_training_images(
    n: int,
    seed: int,
    max_side: int = 480,
    field_cap: float | None = 0.3,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[TrainingImage]:
    """Yield ``n`` training images from the synthetic world ``seed``.

    Parameters
    ----------
    n
        Number of images.
    seed
        World seed (use a different one for held-out evaluation).
    max_side
        Long side of generated images; the localizer works at a few hundred pixels, so generating
        small is several times faster and loses nothing it uses.
    field_cap
        Keep a study only while its field-of-view kind (thoracolumbar, lumbar, lower thoracic,
        long) holds less than this share of ``n``: the common kinds (42% and 33% in the world's
        own mix) are capped, so training sees the rarer views more often. None keeps the world's
        mix (used for held-out evaluation, so its mix differs from training's).
    progress
        Called as ``progress(done, n)``.
    """
    config = SynthConfig(max_side=max_side)
    quota: dict[str, int] = {}
    per_kind = n if field_cap is None else int(np.ceil(n * field_cap))
    done = 0
    index = 0
    while done < n:
        study = generate_study(seed, index, config)
        index += 1
        kind = study.scene.field.kind
        if quota.get(kind, 0) >= per_kind:
            continue
        quota[kind] = quota.get(kind, 0) + 1
        done += 1
        if progress is not None:
            progress(done, n)
        yield study_to_training_image(study)
    logger.info("generated %d synthetic studies (%d drawn) for seed %d: %s", n, index, seed, quota)
