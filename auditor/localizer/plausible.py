"""Is what the localizer found a thoracolumbar spine? A check on the named boxes of one image.

The localizer answers on any image: on a chest film, a hip, a hand or a cervical spine it may
still find a few bright, roughly square blobs and name them T10..L5. A lateral view of the TL
spine shows something specific: a run of vertebral bodies, each found with confidence, of
similar size from one level to the next, spaced about one body height (plus a disc) per level,
along a line that runs roughly top to bottom. :func:`check_run` measures those properties on
the named boxes; :class:`~auditor.localizer.infer.Localizer` drops every box of an image that
fails it, with the reason ("no thoracolumbar vertebrae found: ...").

The limits (:class:`RunRules`) were set on held-out synthetic worlds, the real DICOM corpus and
two lateral DRRs of real CTs; the figures are in ``docs/models.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from auditor.records import VertebraBox
from auditor.vocab import LEVEL_ORDER, Level

#: The reason's prefix when an image holds no plausible TL run.
NOT_TL = "no thoracolumbar vertebrae found"


@dataclass(frozen=True)
class RunRules:
    """Limits of a plausible run of T10..S1 bodies (whole bodies: S1 is left out of the counts
    and the confidence, which come from the body detector)."""

    min_bodies: int = 3
    """Fewest named whole bodies (T10..L5)."""
    min_mean_confidence: float = 0.55
    """Lowest mean detection score of the named bodies."""
    max_missing: int = 2
    """Most levels missing inside the run (between the first and the last named body)."""
    max_height_ratio: float = 1.6
    """Largest ratio of the heights (and of the widths) of two bodies named at adjacent found
    positions."""
    step_range: tuple[float, float] = (0.45, 2.0)
    """Centre-to-centre distance per level, in median body heights."""
    max_tilt_degrees: float = 40.0
    """Largest angle between the line through the centres and the image's vertical."""


DEFAULT_RULES = RunRules()


@dataclass(frozen=True)
class RunCheck:
    """The measurements of :func:`check_run` and the first rule they break ("" when none)."""

    bodies: int
    mean_confidence: float
    missing: int
    height_ratio: float
    step_low: float
    step_high: float
    tilt_degrees: float
    failure: str

    @property
    def plausible(self) -> bool:
        return not self.failure


def check_run(boxes: Sequence[VertebraBox], rules: RunRules = DEFAULT_RULES) -> RunCheck:
    """Measure whether named ``boxes`` (any order) form a plausible run of T10..L5 bodies."""
    bodies = sorted(
        (b for b in boxes if b.level is not None and b.level != Level.S1),
        key=lambda b: LEVEL_ORDER.index(Level(b.level)),
    )
    n = len(bodies)
    confidences = [b.confidence for b in bodies if b.confidence is not None]
    mean_conf = float(np.mean(confidences)) if confidences else 0.0
    index = np.array([LEVEL_ORDER.index(Level(b.level)) for b in bodies], dtype=np.int64)
    missing = int(index[-1] - index[0] + 1 - n) if n else 0
    heights = np.array([b.y_max - b.y_min for b in bodies], dtype=np.float64)
    widths = np.array([b.x_max - b.x_min for b in bodies], dtype=np.float64)
    centres = np.array(
        [((b.x_min + b.x_max) / 2, (b.y_min + b.y_max) / 2) for b in bodies], dtype=np.float64
    ).reshape(-1, 2)
    ratio, step_low, step_high, tilt = 1.0, math.nan, math.nan, 0.0
    if n >= 2:
        ratio = max(_max_ratio(heights), _max_ratio(widths))
        per_level = np.linalg.norm(np.diff(centres, axis=0), axis=1) / np.diff(index)
        steps = per_level / max(float(np.median(heights)), 1e-6)
        step_low, step_high = float(steps.min()), float(steps.max())
        dx, dy = centres[-1] - centres[0]
        tilt = math.degrees(math.atan2(abs(dx), abs(dy)))
    failure = ""
    if n < rules.min_bodies:
        failure = f"{n} named bodies, fewer than {rules.min_bodies}"
    elif mean_conf < rules.min_mean_confidence:
        failure = f"mean body score {mean_conf:.2f}, under {rules.min_mean_confidence:.2f}"
    elif missing > rules.max_missing:
        failure = f"{missing} levels missing inside the run, more than {rules.max_missing}"
    elif ratio > rules.max_height_ratio:
        failure = f"neighbouring bodies differ in size by x{ratio:.1f}"
    elif not rules.step_range[0] <= step_low <= step_high <= rules.step_range[1]:
        failure = (
            f"bodies spaced {step_low:.2f}-{step_high:.2f} body heights per level, outside "
            f"{rules.step_range[0]:g}-{rules.step_range[1]:g}"
        )
    elif tilt > rules.max_tilt_degrees:
        failure = f"the run lies {tilt:.0f} degrees off the vertical"
    return RunCheck(n, mean_conf, missing, ratio, step_low, step_high, tilt, failure)


def _max_ratio(values: np.ndarray) -> float:
    """Largest ratio between neighbours of ``values`` (all > 0), >= 1."""
    v = np.maximum(values, 1e-6)
    r = v[1:] / v[:-1]
    return float(np.maximum(r, 1 / r).max())
