"""Path-length maps of a lateral scene on the reduced render grid.

The X-ray beam runs left-right through the patient, perpendicular to the image. For each render
pixel we integrate along the beam: how many millimetres of soft tissue, of air (lungs, bowel gas)
and of bone (in cortical-bone-equivalent millimetres) the ray crosses. :mod:`auditor.synth.imaging`
turns these into Beer-Lambert attenuation.

Bone:

- vertebral bodies: cancellous bone whose beam path follows the body's lateral width, with
  trabecular texture (vertically oriented noise, one field for every body); the lateral cortices;
  endplates and anterior/posterior walls seen edge-on as bright rims; fracture lines, condensation
  bands and cortical breaks from the body's shape (:mod:`auditor.synth.shape`);
- posterior elements: pedicles (with the transverse processes end-on), articular processes, laminae
  and spinous processes as ellipsoids;
- ribs as hollow tubes along Bezier curves; the iliac wings as a plate under a bright crest; the
  sacral segments as fused bodies.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from auditor.synth.anatomy import PlacedBody
from auditor.synth.grid import Grid, clip_window, resize
from auditor.synth.scene import Scene
from auditor.synth.shape import BodyShape

FloatArray = npt.NDArray[np.floating[Any]]
F32 = npt.NDArray[np.float32]

CANCELLOUS = 0.19  # cortical-equivalent density of cancellous bone (fraction)
CORTEX_MM = 0.7  # lateral cortex thickness each side
RIM_END = 0.13  # endplate rim, fraction of body width (edge-on plate path)
RIM_WALL = 0.065
RIM_DECAY = 0.55  # mm


@dataclass(frozen=True)
class Maps:
    """Path lengths on the render grid (mm) and per-level visibility."""

    soft: F32
    air: F32
    bone: F32
    exposed: npt.NDArray[np.bool_]  # render-grid mask of the collimated field


def exposed_rect(
    grid: Grid, collimation: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """Collimated field in stored-pixel coordinates ``(x0, y0, x1, y1)``."""
    left, right, top, bottom = collimation
    return (
        left * grid.cols,
        top * grid.rows,
        (1.0 - right) * grid.cols,
        (1.0 - bottom) * grid.rows,
    )


def render_maps(scene: Scene, rng: np.random.Generator) -> Maps:
    """Integrate the scene along the beam on the render grid."""
    grid = scene.grid
    shape = grid.render_shape
    soft = np.zeros(shape, np.float32)
    air = np.zeros(shape, np.float32)
    bone = np.zeros(shape, np.float32)
    texture = _trabecular_texture(shape, grid.render_pitch, rng)

    x0, y0, x1, y1 = exposed_rect(grid, scene.acquisition.collimation)
    f = grid.factor
    rr = (np.arange(shape[0]) + 0.5) * f
    cc = (np.arange(shape[1]) + 0.5) * f
    exposed = ((rr >= y0) & (rr < y1))[:, None] & ((cc >= x0) & (cc < x1))[None, :]

    # Smooth structures (trunk, lungs, gas, ribs, iliac wings) on a grid twice as coarse when the
    # render grid is fine: they have no detail below about 0.6 mm.
    coarse = replace(grid, factor=grid.factor * 2) if grid.render_pitch < 0.45 else grid
    c_shape = coarse.render_shape
    c_soft = np.zeros(c_shape, np.float32)
    c_air = np.zeros(c_shape, np.float32)
    c_bone = np.zeros(c_shape, np.float32)
    _soft_tissue(scene, coarse, c_soft, c_air, rng)
    for rib in scene.soft.ribs:
        _draw_rib(rib.p0, rib.p1, rib.p2, rib.radius, coarse, c_bone)
    _draw_iliac(scene, coarse, c_bone)
    if coarse is not grid:
        soft += resize(c_soft, *shape)
        air += resize(c_air, *shape)
        bone += resize(c_bone, *shape)
    else:
        soft += c_soft
        air += c_air
        bone += c_bone

    density = scene.patient.bone_density
    tex_gain = scene.acquisition.texture_gain
    for plan in scene.vertebrae:
        _draw_body(plan.body, grid, bone, texture, density, tex_gain)
        _draw_posterior_elements(plan.body, grid, bone, density)
    for seg in scene.sacrum:
        _draw_body(seg, grid, bone, texture, density * 0.85, tex_gain)
    return Maps(soft, air, bone, exposed)


# -- textures and soft tissue -------------------------------------------------------------------
def _trabecular_texture(shape: tuple[int, int], pitch: float, rng: np.random.Generator) -> F32:
    """Zero-mean, unit-variance trabecular texture: fine vertical struts plus coarser marrow."""
    white = rng.standard_normal(shape, dtype=np.float32)
    fine = ndimage.gaussian_filter(white, (0.9 / pitch, 0.2 / pitch))
    coarse = ndimage.gaussian_filter(white, 0.8 / pitch)
    tex = fine / (fine.std() + 1e-6) + 0.5 * coarse / (coarse.std() + 1e-6)
    tex /= tex.std() + 1e-6
    return tex.astype(np.float32)


def _soft_tissue(scene: Scene, grid: Grid, soft: F32, air: F32, rng: np.random.Generator) -> None:
    st = scene.soft
    shape = grid.render_shape
    x, y = grid.window_patient(0, shape[0], 0, shape[1])
    bodies = [p.body for p in scene.vertebrae]
    ys = np.array([b.cy for b in bodies])
    order = np.argsort(ys)
    post = np.array(
        [b.to_patient(np.array([-0.5 * b.shape.depth]), np.array([0.0]))[0][0] for b in bodies]
    )
    ant = np.array(
        [b.to_patient(np.array([0.5 * b.shape.depth]), np.array([0.0]))[0][0] for b in bodies]
    )
    x_post = np.interp(y, ys[order], post[order]) - st.posterior_tissue
    x_ant = np.interp(y, ys[order], ant[order]) + st.anterior_tissue
    xc = 0.5 * (x_post + x_ant)
    half = 0.5 * (x_ant - x_post)
    # Trunk cross-section as a superellipse: the back and the flanks are broad, so the path
    # stays long until close to the skin.
    s = np.clip(1.0 - np.abs((x - xc) / half) ** 4, 0.0, None)
    soft += (st.body_width * s**0.25).astype(np.float32)
    # Skin fold and subcutaneous fat lines are left out; the trunk edge itself is kept.

    # Lungs above each hemidiaphragm, tapering towards the trunk edges.
    inside = np.clip((x - x_post - 15.0) / 25.0, 0, 1) * np.clip((x_ant - x - 20.0) / 40.0, 0, 1)
    for ax, ay, k in st.diaphragm:
        yd = ay - k * (x - ax) ** 2
        above = np.clip((y - yd) / 6.0 + 0.5, 0.0, 1.0)
        fill = np.clip((y - yd) / 110.0, 0.2, 1.0)
        air += (0.5 * st.lung_air * above * fill * inside).astype(np.float32)

    for pocket in st.gas:
        w = grid.render_window(
            np.array([pocket.centre[0]]), np.array([pocket.centre[1]]), max(pocket.axes) + 2
        )
        sl = clip_window(w, shape)
        if sl is None:
            continue
        gx, gy = grid.window_patient(*w)
        c, s_ = np.cos(pocket.angle), np.sin(pocket.angle)
        du = ((gx - pocket.centre[0]) * c + (gy - pocket.centre[1]) * s_) / pocket.axes[0]
        dv = (-(gx - pocket.centre[0]) * s_ + (gy - pocket.centre[1]) * c) / pocket.axes[1]
        # Lobulated outline (bowel loops are not ellipses).
        theta = np.arctan2(dv, du)
        lobes = (
            1.0
            + 0.22 * np.sin(3 * theta + 7 * pocket.angle)
            + 0.12 * np.sin(5 * theta + pocket.angle)
        )
        rho2 = (du * du + dv * dv) / (lobes * lobes)
        prof = np.sqrt(np.clip(1.0 - rho2, 0.0, None))
        if pocket.mottled:
            # Stool in the colon: gas bubbles a few millimetres across, soft-edged.
            bubbles = ndimage.gaussian_filter(
                rng.standard_normal(prof.shape), 1.8 / grid.render_pitch
            )
            prof = prof * np.clip(0.45 + 1.2 * bubbles / (bubbles.std() + 1e-6), 0.0, 1.0)
            prof = ndimage.gaussian_filter(prof, 0.6 / grid.render_pitch)
        air[sl[0]] += (pocket.thickness * prof[sl[1]]).astype(np.float32)
    np.minimum(air, soft * 0.85, out=air)


# -- vertebral bodies -------------------------------------------------------------------------
def _local(body: PlacedBody, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    c, s = np.cos(body.tilt), np.sin(body.tilt)
    ex, ey = x - body.cx, y - body.cy
    return ex * c - ey * s, ex * s + ey * c


def _segment_distance(
    u: FloatArray, v: FloatArray, a: tuple[float, float], b: tuple[float, float]
) -> FloatArray:
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy + 1e-9
    t = np.clip(((u - ax) * dx + (v - ay) * dy) / length2, 0.0, 1.0)
    px, py = ax + t * dx - u, ay + t * dy - v
    return np.sqrt(px * px + py * py)


def _polyline_distance(u: FloatArray, v: FloatArray, pts: list[tuple[float, float]]) -> FloatArray:
    out = _segment_distance(u, v, pts[0], pts[1])
    for a, b in itertools.pairwise(pts[1:]):
        out = np.minimum(out, _segment_distance(u, v, a, b))
    return out


def _draw_body(
    body: PlacedBody,
    grid: Grid,
    bone: F32,
    texture: F32,
    density: float,
    tex_gain: float,
) -> None:
    """Add one body (its cortex, cancellous bone, fracture signs and spurs) to ``bone``."""
    sh: BodyShape = body.shape
    obl = body.obliquity
    outline = body.projected_shape().outline(16)
    ox, oy = body.to_patient(outline[:, 0], outline[:, 1])
    margin = (
        4.0
        + sh.bulge_anterior
        + sh.bulge_posterior
        + max((sp.length for sp in sh.spurs), default=0.0)
    )
    win = grid.render_window(ox, oy, margin)
    x, y = grid.window_patient(*win)
    u, v = _local(body, x, y)
    pitch = grid.render_pitch

    top = sh.top(u)
    bottom = sh.bottom(u)
    ant = sh.anterior(v)
    post = sh.posterior(v)
    d_top = top - v
    d_bot = v - bottom
    d_ant = ant - u
    d_post = u - post
    # Distances from the projected (outer) endplate contours, half the obliquity beyond the plate.
    d_end = np.minimum(d_top, d_bot) + 0.5 * obl
    d_wall = np.minimum(d_ant, d_post)
    tau = 0.7
    d = -tau * np.logaddexp(-d_end / tau, -d_wall / tau)  # soft minimum rounds the corners
    inside = np.clip(d / pitch + 0.5, 0.0, 1.0)
    sl = clip_window(win, grid.render_shape)
    if sl is None:
        return

    depth = sh.depth
    s_u = np.clip(
        2.0 * u / (depth + 2 * sh.bulge_posterior + 2 * sh.bulge_anterior + 1e-6), -1.0, 1.0
    )
    path = sh.width * (0.55 + 0.45 * np.sqrt(1.0 - s_u * s_u))
    tex = texture[sl[0]]
    tex_full = np.zeros_like(u)
    tex_full[sl[1]] = tex
    cancellous = CANCELLOUS * density * path * (1.0 + tex_gain * tex_full)
    if obl > 0.05:  # the beam crosses only part of the body next to an oblique endplate
        cancellous = cancellous * np.clip(0.35 + 0.65 * d_end / obl, 0.35, 1.0)

    # Condensation bands: compressed trabeculae parallel to an endplate.
    for band in sh.bands:
        dist = d_top if band.endplate == "top" else d_bot
        along = np.clip((u - band.u_from) / 2.0, 0, 1) * np.clip((band.u_to - u) / 2.0, 0, 1)
        cancellous = cancellous * (
            1.0
            + band.strength
            * along
            * np.exp(-0.5 * ((dist - band.offset) / (0.5 * band.width)) ** 2)
        )

    rim_scale = RIM_END * sh.width * sh.endplate_rim
    if obl > 0.05:  # near and far rim of the tilted plate: two thinner lines
        rim_end = rim_scale * (
            0.5 * np.exp(-np.clip(d_end, 0, None) / RIM_DECAY)
            + 0.5 * np.exp(-np.abs(d_end - obl) / RIM_DECAY)
            + 0.12 * ((d_end > 0) & (d_end < obl))
        )
    else:
        rim_end = rim_scale * np.exp(-np.clip(d_end, 0, None) / RIM_DECAY)
    if sh.fused_below:
        rim_end = np.where(d_bot < d_top, rim_end * 0.25, rim_end)
    rim_wall = RIM_WALL * sh.width * sh.wall_rim * np.exp(-np.clip(d_wall, 0, None) / RIM_DECAY)
    for gap in sh.gaps:
        if gap.rim in ("anterior", "posterior"):
            near = (u > 0) if gap.rim == "anterior" else (u < 0)
            hole = np.exp(-(((v - gap.center) / gap.half_length) ** 4)) * near
            rim_wall = rim_wall * (1.0 - 0.9 * hole)
        else:
            near = (v > 0) if gap.rim == "top" else (v < 0)
            hole = np.exp(-(((u - gap.center) / gap.half_length) ** 4)) * near
            rim_end = rim_end * (1.0 - 0.9 * hole)

    total: FloatArray = cancellous + 2.0 * CORTEX_MM + rim_end + rim_wall
    for line in sh.lines:
        line_dist = _polyline_distance(u, v, line.points())
        prof = np.exp(-0.5 * (line_dist / (0.5 * line.width)) ** 2)
        total = total * np.clip(1.0 + line.strength * prof, 0.05, None)
    total = total * inside

    for spur in sh.spurs:
        total = total + _spur(sh, spur, u, v)
    bone[sl[0]] += total[sl[1]].astype(np.float32)


def _spur(sh: BodyShape, spur: object, u: FloatArray, v: FloatArray) -> FloatArray:
    from auditor.synth.shape import Spur

    assert isinstance(spur, Spur)
    corner_u = sh.depth * 0.5 - 1.0
    corner_v = (
        sh.top(np.array([corner_u]))[0]
        if spur.corner == "top"
        else sh.bottom(np.array([corner_u]))[0]
    )
    tilt = 1.1  # radians from the anterior direction: spurs grow towards the next vertebra
    direction = np.array([np.cos(tilt), np.sin(tilt) if spur.corner == "top" else -np.sin(tilt)])
    tip = (corner_u + direction[0] * spur.length, corner_v + direction[1] * spur.length)
    dist = _segment_distance(
        u, v, (corner_u - 1.0, float(corner_v)), (float(tip[0]), float(tip[1]))
    )
    # Tapered beak: thicker at the base.
    t = np.clip(((u - corner_u) * direction[0] + (v - corner_v) * direction[1]) / spur.length, 0, 1)
    radius = spur.thickness * (1.0 - 0.75 * t)
    prof = np.sqrt(np.clip(1.0 - (dist / radius) ** 2, 0.0, None))
    return 0.12 * sh.width * prof


def _ellipsoid(
    u: FloatArray,
    v: FloatArray,
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
    peak: float,
    power: float = 2.0,
) -> FloatArray:
    """Path length through a rounded bone element (superellipse outline of exponent ``power``)
    with a denser cortical shell."""
    c, s = np.cos(angle), np.sin(angle)
    du, dv = u - centre[0], v - centre[1]
    a = np.abs((du * c + dv * s) / axes[0])
    b = np.abs((-du * s + dv * c) / axes[1])
    rho = (a**power + b**power) ** (1.0 / power)
    inside = np.clip(1.0 - rho, 0.0, None)
    return peak * (np.minimum(inside / 0.25, 1.0) ** 0.5 * (0.7 + 0.5 * np.exp(-inside / 0.07)))


def _draw_posterior_elements(body: PlacedBody, grid: Grid, bone: F32, density: float) -> None:
    sh = body.shape
    if sh.level.startswith("S"):
        return
    d = sh.depth
    h = sh.heights()[2]
    lumbar = sh.level.startswith("L")
    base = float(sh.posterior(np.array([0.0]))[0]) - 0.5  # posterior wall
    parts: list[tuple[tuple[float, float], tuple[float, float], float, float, float]] = [
        # (centre (u, v), semi-axes, angle, peak cortical-equivalent mm, outline exponent)
        (
            (base - 0.22 * d, 0.22 * h),
            (0.28 * d, 0.19 * h),
            0.04,
            13.0,
            2.6,
        ),  # pedicles (+ transverse)
        ((base - 0.48 * d, 0.05 * h), (0.11 * d, 0.78 * h), -0.28, 11.0, 2.4),  # articular pillar
        ((base - 0.60 * d, -0.05 * h), (0.12 * d, 0.45 * h), -0.15, 8.0, 3.0),  # lamina / pars
    ]
    if lumbar:
        parts.append(((base - 0.66 * d - 13.0, -0.12 * h), (16.0, 0.26 * h), 0.10, 8.0, 3.5))
    else:
        parts.append(((base - 0.6 * d - 12.0, -0.5 * h), (17.0, 4.0), 0.8, 7.0, 2.5))
    chance = [ln for ln in sh.lines if min(ln.u0, ln.u1) < -0.7 * d]
    for centre, axes, angle, peak, power in parts:
        cu, cv = centre
        px, py = body.to_patient(np.array([cu]), np.array([cv]))
        win = grid.render_window(px, py, max(axes) + 1.0)
        sl = clip_window(win, grid.render_shape)
        if sl is None:
            continue
        x, y = grid.window_patient(*win)
        u, v = _local(body, x, y)
        total = _ellipsoid(u, v, centre, axes, angle, peak * density**0.5, power)
        for line in chance:  # a Chance line runs on into the posterior elements
            dist = _polyline_distance(u, v, line.points())
            total *= np.clip(
                1.0 + line.strength * np.exp(-0.5 * (dist / (0.5 * line.width)) ** 2), 0.05, None
            )
        bone[sl[0]] += total[sl[1]].astype(np.float32)


def _draw_rib(
    p0: tuple[float, float],
    p1: tuple[float, float],
    p2: tuple[float, float],
    radius: float,
    grid: Grid,
    bone: F32,
) -> None:
    t = np.linspace(0.0, 1.0, 24)[:, None]
    pts = (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t * t * np.array(p2)
    win = grid.render_window(pts[:, 0], pts[:, 1], radius + 1.0)
    sl = clip_window(win, grid.render_shape)
    if sl is None:
        return
    r0, _, c0, _ = win
    x, y = grid.window_patient(*win)
    d2 = np.full(x.shape, np.inf)
    for a, b in itertools.pairwise(pts):
        sw = grid.render_window(np.array([a[0], b[0]]), np.array([a[1], b[1]]), radius + 1.0)
        rs = slice(max(sw[0] - r0, 0), max(sw[1] - r0, 0))
        cs = slice(max(sw[2] - c0, 0), max(sw[3] - c0, 0))
        xs, ys = x[rs, cs], y[rs, cs]
        if xs.size == 0:
            continue
        dist = _segment_distance(xs, ys, (float(a[0]), float(a[1])), (float(b[0]), float(b[1])))
        np.minimum(d2[rs, cs], dist * dist, out=d2[rs, cs])
    inner = 0.6 * radius
    outer_path = 2.0 * np.sqrt(np.clip(radius * radius - d2, 0.0, None))
    inner_path = 2.0 * np.sqrt(np.clip(inner * inner - d2, 0.0, None))
    total = 0.45 * (outer_path - inner_path) + 0.15 * inner_path
    bone[sl[0]] += total[sl[1]].astype(np.float32)


def _draw_iliac(scene: Scene, grid: Grid, bone: F32) -> None:
    shape = grid.render_shape
    for ax, ay, k, x_lo, x_hi in scene.soft.iliac:
        xs = np.array([x_lo, x_hi, x_lo, x_hi])
        ys = np.array([ay + 5.0, ay + 5.0, ay - 160.0, ay - 160.0])
        win = grid.render_window(xs, ys, 5.0)
        sl = clip_window(win, shape)
        if sl is None:
            continue
        x, y = grid.window_patient(*win)
        yc = ay - k * (x - ax) ** 2
        below = yc - y
        within = np.clip((x - x_lo) / 12.0, 0, 1) * np.clip((x_hi - x) / 12.0, 0, 1)
        plate = (
            scene.soft.iliac_plate
            * np.clip(below / 1.5, 0, 1)
            * np.exp(-np.clip(below, 0, None) / 140.0)
        )
        crest = 6.0 * np.exp(-np.clip(below, 0, None) / 2.5) * (below > -0.7)
        total = (plate + crest) * within
        bone[sl[0]] += total[sl[1]].astype(np.float32)
