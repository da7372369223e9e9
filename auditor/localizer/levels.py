"""Ordering detected bodies along the spine and naming their levels.

A reader names levels by counting: up from the sacrum when it is in view, else from the last
rib-bearing vertebra (T12). This module does the same with the detections:

1. Order the bodies along the spine: project their centres on the principal axis of the centres
   (the spine on a lateral view runs roughly top to bottom; rotation up to ~15 degrees and the
   kyphosis/lordosis do not reorder bodies along that axis).
2. Find gaps: a step between neighbours much longer than the typical step means a body was not
   detected; it keeps its place in the count so that one miss does not shift every level above.
3. Anchor:
   - ``sacrum``: an S1 detection below the lowest body: count up from it (S1, L5, L4, ...).
   - ``rib``: no sacrum; the level head (which sees the whole field: ribs, diaphragm, shape)
     gives each body a probability per level class, and the consecutive assignment with the
     highest joint probability is taken. When that assignment spans the T12/L1 transition, the
     last rib-bearing body is in view and the anchor is ``rib``.
   - ``none``: neither; the same joint assignment, reported with a lower confidence.
   Bodies counted cranial to T10 (T9 and above on a thoracic view) get no level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.localizer.decode import Detection
from auditor.vocab import LEVEL_ORDER, Level

#: A step longer than this many typical steps is a gap of one or more missing bodies.
GAP_FACTOR = 1.6
#: Level-head classes: 0 = cranial to T10, then T10..S1 (class = LEVEL_ORDER index + 1).
ABOVE_T10 = 0
_T12, _L1, _L5, _S1 = (
    LEVEL_ORDER.index(lv) + 1 for lv in (Level.T12, Level.L1, Level.L5, Level.S1)
)


def level_class(level: str) -> int:
    """Level-head class of a level name: T10..S1 -> 1..9, anything cranial (T1..T9) -> 0.

    Raises
    ------
    ValueError
        For a name that is neither a T10..S1 level nor a thoracic level above T10.
    """
    text = level.strip().upper()
    try:
        return LEVEL_ORDER.index(Level.parse(text)) + 1
    except ValueError:
        if text.startswith("T") and text[1:].isdigit() and 1 <= int(text[1:]) < 10:
            return ABOVE_T10
        raise


@dataclass(frozen=True)
class LevelAssignment:
    """Levels for bodies given in spine order (cranial first), the anchor and a confidence.

    ``levels[i]`` is None for a body counted cranial to T10.
    """

    order: tuple[int, ...]  # indices into the body list, cranial to caudal
    levels: tuple[Level | None, ...]
    anchor: str
    confidence: float


def spine_order(centers: np.ndarray) -> np.ndarray:
    """Indices that sort ``(N, 2)`` (x, y) centres cranial to caudal along the spine axis."""
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    if len(centers) < 3:
        return np.argsort(centers[:, 1], kind="stable")
    centred = centers - centers.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axis = vt[0]
    if axis[1] < 0:  # point caudally (down the image)
        axis = -axis
    return np.argsort(centred @ axis, kind="stable")


def chain_positions(ordered_centers: np.ndarray) -> np.ndarray:
    """Integer positions along the spine for ordered centres, leaving room for missed bodies."""
    pts = np.asarray(ordered_centers, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 2:
        return np.zeros(len(pts), dtype=np.int64)
    steps = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    # The plain median of a short chain can itself straddle a gap: use the lower half's median.
    typical = max(float(np.median(np.sort(steps)[: len(steps) // 2 + 1])), 1e-6)
    increments = np.where(steps > GAP_FACTOR * typical, np.maximum(1, np.round(steps / typical)), 1)
    return np.concatenate([[0], np.cumsum(increments)]).astype(np.int64)


def assign_levels(
    bodies: list[Detection], sacrum: Detection | None, sacrum_threshold: float = 0.5
) -> LevelAssignment:
    """Name the levels of ``bodies`` (whole-body detections, any order) by anatomy.

    Parameters
    ----------
    bodies
        Whole-body detections; their ``level_probs`` are the level head's class probabilities.
    sacrum
        The best S1 detection, or None.
    sacrum_threshold
        Minimum S1 score to count up from the sacrum.
    """
    if not bodies:
        return LevelAssignment((), (), "none", 0.0)
    centers = np.array([d.center for d in bodies])
    order = spine_order(centers)
    ordered = [bodies[i] for i in order]
    use_sacrum = (
        sacrum is not None and sacrum.score >= sacrum_threshold and _below(sacrum, centers[order])
    )
    chain = ordered + ([sacrum] if use_sacrum and sacrum is not None else [])
    pos = chain_positions(np.array([d.center for d in chain]))
    body_pos = pos[: len(ordered)]
    logp = np.log(np.clip(np.array([d.level_probs for d in ordered]), 1e-6, 1.0))
    # Offset k puts the body at chain position p at class k + p (clipped to "cranial to T10");
    # the lowest body is at most L5.
    offsets = np.arange(_L5 - int(body_pos[-1]) - 12, _L5 - int(body_pos[-1]) + 1)
    rows = np.arange(len(ordered))
    scores = np.array([logp[rows, np.maximum(k + body_pos, ABOVE_T10)].sum() for k in offsets])
    post = np.exp(scores - scores.max())
    post /= post.sum()
    if use_sacrum and sacrum is not None:
        k = _S1 - int(pos[-1])
        agreement = float(post[offsets == k].sum())
        anchor = "sacrum"
        confidence = min(sacrum.score, 0.6 + 0.4 * agreement)
    else:
        j = int(np.argmax(scores))
        k = int(offsets[j])
        span = k + body_pos
        anchor = "rib" if (span.min() <= _T12 and span.max() >= _L1) else "none"
        confidence = float(post[j]) * (0.8 if anchor == "rib" else 0.5)
    levels = tuple(LEVEL_ORDER[int(k + p) - 1] if k + p > ABOVE_T10 else None for p in body_pos)
    return LevelAssignment(tuple(int(i) for i in order), levels, anchor, float(confidence))


def _below(sacrum: Detection, ordered_centers: np.ndarray) -> bool:
    """Whether the S1 detection lies caudal to every body along the spine axis."""
    pts = np.vstack([ordered_centers, [sacrum.center]])
    return bool(spine_order(pts)[-1] == len(pts) - 1)
