"""The outline of one vertebral body in its own frame, and the features drawn on it.

A body lives in a local frame in millimetres: ``u`` runs posterior (negative) to anterior
(positive) across the body depth, ``v`` runs caudal (negative) to cranial (positive) along the
body axis, the origin at the body centre. The superior and inferior endplates are functions
``v = top(u)`` and ``v = bottom(u)``, the posterior and anterior walls functions
``u = posterior(v)`` and ``u = anterior(v)``. Normal bodies and fractured ones are the same kind
of object with different parameters: what makes a fracture is geometry (height loss, depressed
endplates, bulging walls) and the anatomy-like signs drawn on it (cortical breaks, condensation
bands, fracture lines),
never a label-only intensity change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]

#: Heights are measured this far from the body centre, as a fraction of the depth (anterior,
#: middle, posterior heights as in quantitative morphometry, a little inside the rounded corners).
MEASURE_AT = 0.40


@dataclass(frozen=True)
class Dent:
    """A rounded depression of one endplate (Schmorl node, focal burst depression)."""

    endplate: str  # "top" or "bottom"
    u0: float  # centre, mm in the local frame
    radius: float  # half-width, mm
    depth: float  # mm, towards the body centre


@dataclass(frozen=True)
class Line:
    """A fracture line or sclerotic line segment in the local frame (mm)."""

    u0: float
    v0: float
    u1: float
    v1: float
    width: float  # mm
    strength: float  # < 0 lucent (gap), > 0 sclerotic; fraction of local cancellous density
    bends: tuple[float, ...] = ()  # sideways offsets (mm) at evenly spaced interior points

    def points(self) -> list[tuple[float, float]]:
        """The line as a polyline: end points plus the bent interior points."""
        n = len(self.bends) + 1
        du, dv = self.u1 - self.u0, self.v1 - self.v0
        length = max(float(np.hypot(du, dv)), 1e-6)
        nu, nv = -dv / length, du / length
        pts = [(self.u0, self.v0)]
        for i, off in enumerate(self.bends, start=1):
            t = i / n
            pts.append((self.u0 + t * du + off * nu, self.v0 + t * dv + off * nv))
        pts.append((self.u1, self.v1))
        return pts


@dataclass(frozen=True)
class Band:
    """A condensation band: compressed trabeculae parallel to an endplate."""

    endplate: str  # "top" or "bottom"
    offset: float  # mm inside the endplate to the band centre
    width: float  # mm
    strength: float  # fraction of cancellous density added
    u_from: float  # extent along u, mm
    u_to: float


@dataclass(frozen=True)
class Gap:
    """A break in a cortical rim: the rim is interrupted over a short stretch."""

    rim: str  # "anterior", "posterior", "top", "bottom"
    center: float  # v for walls, u for endplates (mm)
    half_length: float  # mm
    step: float  # mm the fragment beyond the break is displaced outwards


@dataclass(frozen=True)
class Spur:
    """An osteophyte at an anterior corner of the body."""

    corner: str  # "top" or "bottom" (anterior-superior or anterior-inferior)
    length: float  # mm
    thickness: float  # mm


@dataclass(frozen=True)
class BodyShape:
    """Geometry and features of one vertebral body (all lengths in mm).

    ``top_pts`` and ``bottom_pts`` give the endplate ``v`` at ``u = -m*D, 0, +m*D``
    (posterior, middle, anterior; ``m = MEASURE_AT``); the endplates are the quadratics through
    them, plus dents.
    """

    level: str
    depth: float
    width: float
    top_pts: tuple[float, float, float]
    bottom_pts: tuple[float, float, float]
    waist_anterior: float = 1.2
    waist_posterior: float = 0.8
    bulge_anterior: float = 0.0  # mm anterior displacement of the anterior wall at bulge_v
    bulge_anterior_v: float = 0.0
    bulge_posterior: float = 0.0  # mm posterior displacement (retropulsion)
    bulge_posterior_v: float = 0.0
    bulge_width: float = 6.0
    dents: tuple[Dent, ...] = ()
    lines: tuple[Line, ...] = ()
    bands: tuple[Band, ...] = ()
    gaps: tuple[Gap, ...] = ()
    spurs: tuple[Spur, ...] = ()
    endplate_rim: float = 1.0  # multiplier of the endplate rim (sclerosis > 1)
    wall_rim: float = 1.0
    fused_below: bool = False  # sacral segments: no inferior rim
    rough_top: float = 0.0  # mm amplitude of endplate irregularity (fractured endplates)
    rough_bottom: float = 0.0
    rough_phase: float = 0.0
    zone: tuple[tuple[float, float], ...] = field(default=())  # fracture zone polygon (u, v)

    # -- outline functions -------------------------------------------------------------------
    def _quad(self, pts: tuple[float, float, float], u: FloatArray) -> FloatArray:
        m = MEASURE_AT * self.depth
        p, c, a = pts
        # Quadratic through (-m, p), (0, c), (m, a).
        b1 = (a - p) / (2 * m)
        b2 = (a + p - 2 * c) / (2 * m * m)
        return c + b1 * u + b2 * u * u

    def _dents(self, which: str, u: FloatArray) -> FloatArray:
        out = np.zeros_like(u)
        for dent in self.dents:
            if dent.endplate != which:
                continue
            out += dent.depth * bell((u - dent.u0) / dent.radius)
        return out

    def _rough(self, amp: float, u: FloatArray) -> FloatArray:
        if not amp:
            return np.zeros_like(u)
        # Zero at the three morphometry points, so the measured heights stay exact.
        weight = np.sin(np.pi * u / (MEASURE_AT * self.depth)) ** 2
        phase = self.rough_phase
        pattern = 0.6 * np.sin(2 * np.pi * u / 4.3 + phase) + 0.4 * np.sin(
            2 * np.pi * u / 2.1 + 2.7 * phase
        )
        return amp * weight * pattern

    def top(self, u: FloatArray) -> FloatArray:
        """Superior endplate ``v`` at ``u`` (mm)."""
        return self._quad(self.top_pts, u) - self._dents("top", u) + self._rough(self.rough_top, u)

    def bottom(self, u: FloatArray) -> FloatArray:
        """Inferior endplate ``v`` at ``u`` (mm)."""
        return (
            self._quad(self.bottom_pts, u)
            + self._dents("bottom", u)
            - self._rough(self.rough_bottom, u)
        )

    @property
    def half_height(self) -> float:
        """Half the largest height, for normalising wall profiles."""
        return 0.5 * max(t - b for t, b in zip(self.top_pts, self.bottom_pts, strict=True))

    def _bump(self, v: FloatArray, center: float) -> FloatArray:
        return np.exp(-0.5 * ((v - center) / self.bulge_width) ** 2)

    def anterior(self, v: FloatArray) -> FloatArray:
        """Anterior wall ``u`` at ``v`` (mm)."""
        h = self.half_height
        waist = self.waist_anterior * np.clip(1.0 - (v / h) ** 2, 0.0, 1.0)
        out = 0.5 * self.depth - waist + self.bulge_anterior * self._bump(v, self.bulge_anterior_v)
        for gap in self.gaps:
            if gap.rim == "anterior" and gap.step:
                out = out + gap.step * _smooth_step((v - gap.center) / max(gap.half_length, 0.3))
        return out

    def posterior(self, v: FloatArray) -> FloatArray:
        """Posterior wall ``u`` at ``v`` (mm)."""
        h = self.half_height
        waist = self.waist_posterior * np.clip(1.0 - (v / h) ** 2, 0.0, 1.0)
        return (
            -0.5 * self.depth + waist - self.bulge_posterior * self._bump(v, self.bulge_posterior_v)
        )

    # -- measurements ------------------------------------------------------------------------
    def heights(self) -> tuple[float, float, float]:
        """Anterior, middle and posterior heights (mm) at the morphometry points."""
        m = MEASURE_AT * self.depth
        u = np.array([m, 0.0, -m])
        h = self.top(u) - self.bottom(u)
        return float(h[0]), float(h[1]), float(h[2])

    def height_ratios(self) -> tuple[float, float]:
        """(anterior / posterior, middle / posterior) height ratios."""
        ha, hm, hp = self.heights()
        return ha / hp, hm / hp

    def outline(self, n: int = 24) -> FloatArray:
        """Closed outline polygon, shape (k, 2) of (u, v), from the posterior-inferior corner."""
        u = np.linspace(-0.5 * self.depth, 0.5 * self.depth, n)
        bottom = np.stack([u, self.bottom(u)], axis=1)
        top = np.stack([u[::-1], self.top(u[::-1])], axis=1)
        # Walls between the endplate ends, sampled so a bulge shows in the outline.
        v_ant = np.linspace(bottom[-1, 1], top[0, 1], n // 2)[1:-1]
        v_post = np.linspace(top[-1, 1], bottom[0, 1], n // 2)[1:-1]
        anterior = np.stack([self.anterior(v_ant), v_ant], axis=1)
        posterior = np.stack([self.posterior(v_post), v_post], axis=1)
        pts = np.concatenate([bottom, anterior, top, posterior])
        # Walls may bulge beyond the endplate ends: clamp endplate ends inside the walls' reach.
        return pts


def bell(x: FloatArray) -> FloatArray:
    """Raised-cosine bump: 1 at 0, 0 beyond +-1 (the profile of a dent)."""
    return np.where(np.abs(x) < 1.0, 0.5 + 0.5 * np.cos(np.pi * np.clip(x, -1.0, 1.0)), 0.0)


def _smooth_step(x: FloatArray) -> FloatArray:
    return 0.5 * (1.0 + np.tanh(2.0 * x))


def genant_grade(height_loss: float) -> int:
    """Genant semi-quantitative grade from the fractional height loss.

    Grade 1: 20-25 %, grade 2: 25-40 %, grade 3: over 40 % (Genant et al., J Bone Miner Res 1993).
    Losses under 20 % are grade 0.
    """
    if height_loss >= 0.40:
        return 3
    if height_loss >= 0.25:
        return 2
    if height_loss >= 0.20:
        return 1
    return 0


def height_loss(shape: BodyShape) -> float:
    """Fractional height loss: 1 - min(anterior, middle) / posterior height."""
    ra, rm = shape.height_ratios()
    return 1.0 - min(ra, rm)
