"""Fractures (AO Spine A1-A4, B, C; Genant grades) and the normal variants that are not fractures.

Each fracture type changes a normal :class:`~auditor.synth.shape.BodyShape` the way the injury
changes a vertebral body on a lateral radiograph:

- **A1** wedge compression: one endplate (the superior in 4 of 5) tilts down anteriorly, the
  anterior cortex buckles, often a condensation band under the endplate.
- **A2** split (pincer): a coronal fracture gap across the body, endplate step and central
  depression, the anterior fragment displaced forwards.
- **A3** incomplete burst: central depression of one endplate, posterior wall retropulsion, fracture
  lines into the body.
- **A4** complete burst: both endplates depressed, depth increased (both walls bulge), comminution
  lines, condensation bands.
- **B** distraction: an A-type body compression plus a horizontal (Chance) line through the
  posterior body and focal kyphosis at the disc above.
- **C** translation: an A-type body compression plus displacement of the column above.

The Genant grade is measured, not assumed: the fractional height loss
``1 - min(anterior, middle) / posterior`` is drawn in the grade's band (20-25 %, 25-40 %, > 40 %)
and the shape built so that the measurement hits it.

Normal variants (physiologic wedging of T11-L1: :mod:`auditor.synth.anatomy`; optionally a wedge
deep enough to mimic grade 1, :func:`apply_wedge_variant`): Schmorl nodes, osteophytes, Hahn's
clefts, bone islands and endplate sclerosis next to degenerated discs. They are drawn
independently of the fracture label, on fractured and intact bodies alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from auditor.synth.shape import (
    MEASURE_AT,
    Band,
    BodyShape,
    Dent,
    Gap,
    Line,
    Spur,
    bell,
    height_loss,
)

#: AO Spine type frequencies among fractures (the source study: A4, A3, A1 the most frequent).
AO_TYPES: tuple[str, ...] = ("A1", "A2", "A3", "A4", "B", "C")
AO_WEIGHTS: tuple[float, ...] = (0.27, 0.07, 0.25, 0.31, 0.06, 0.04)

#: Genant grade probabilities by AO type (grades 1, 2, 3).
GRADE_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "A1": (0.55, 0.35, 0.10),
    "A2": (0.65, 0.30, 0.05),
    "A3": (0.38, 0.44, 0.18),
    "A4": (0.28, 0.44, 0.28),
    "B": (0.15, 0.45, 0.40),
    "C": (0.12, 0.43, 0.45),
}

#: Height-loss band drawn for each grade (kept a little inside the grade's limits).
GRADE_BANDS: dict[int, tuple[float, float]] = {1: (0.205, 0.245), 2: (0.26, 0.39), 3: (0.41, 0.58)}

#: Levels where intact bodies may carry a physiologic wedge that mimics grade 1
#: (:func:`apply_wedge_variant`): the mid-thoracic spine and the thoracolumbar junction.
WEDGE_VARIANT_LEVELS: tuple[str, ...] = ("T7", "T8", "T9", "T10", "T11", "T12", "L1")

#: Height loss of that physiologic wedge: from intact bodies' deepest wedging (18 %) through the
#: grade-1 band of fractures.
WEDGE_VARIANT_LOSS: tuple[float, float] = (0.18, 0.245)


@dataclass(frozen=True)
class FractureSpec:
    """A fracture planned for one level."""

    level: str
    ao_type: str
    grade: int
    height_loss: float
    kyphosis_deg: float = 0.0  # extra kyphotic angle at the disc above (type B)
    translation_mm: float = 0.0  # anterior shift of the column above (type C; negative = posterior)
    bare: bool = False  # height loss alone: no gap, band, bulge or endplate roughness


def choose_fracture(
    level: str, rng: np.random.Generator, subtle_share: float = 0.0, bare: bool = False
) -> FractureSpec:
    """Draw the AO type, grade and height loss of a fracture at ``level``.

    With ``subtle_share`` > 0, that share of fractures is an A1 wedge of Genant grade 1 (the
    subtlest kind) and the rest follow the usual mix; at 0 no extra number is drawn, so default
    worlds stay byte-identical. With ``bare``, those subtle wedges also lose every secondary sign
    (:attr:`FractureSpec.bare`).
    """
    subtle = subtle_share > 0 and rng.random() < subtle_share
    if subtle:
        ao, grade = "A1", 1
    else:
        ao = str(rng.choice(AO_TYPES, p=np.asarray(AO_WEIGHTS) / sum(AO_WEIGHTS)))
        weights = np.asarray(GRADE_WEIGHTS[ao])
        grade = int(rng.choice([1, 2, 3], p=weights / weights.sum()))
    lo, hi = GRADE_BANDS[grade]
    loss = float(rng.uniform(lo, hi))
    kyph = float(rng.uniform(4.0, 12.0)) if ao == "B" else 0.0
    trans = float(rng.uniform(3.0, 9.0) * rng.choice([1.0, -1.0])) if ao == "C" else 0.0
    return FractureSpec(level, ao, grade, loss, kyph, trans, bare=subtle and bare)


def _set_heights(
    shape: BodyShape, ha: float, hm: float, hp: float, top_share: tuple[float, float, float]
) -> BodyShape:
    """Rebuild the endplate control points for new anterior/middle/posterior heights.

    ``top_share`` says, per point (posterior, middle, anterior), which share of the height loss the
    superior endplate takes (the rest lifts the inferior endplate).
    """
    old_a, old_m, old_p = _control_heights(shape)
    new = (hp, hm, ha)
    old = (old_p, old_m, old_a)
    top = list(shape.top_pts)
    bottom = list(shape.bottom_pts)
    for i in range(3):
        loss = old[i] - new[i]
        top[i] -= loss * top_share[i]
        bottom[i] += loss * (1.0 - top_share[i])
    return replace(
        shape, top_pts=(top[0], top[1], top[2]), bottom_pts=(bottom[0], bottom[1], bottom[2])
    )


def _control_heights(shape: BodyShape) -> tuple[float, float, float]:
    t, b = shape.top_pts, shape.bottom_pts
    return t[2] - b[2], t[1] - b[1], t[0] - b[0]


def _wedge(shape: BodyShape, q: float, superior: bool, rng: np.random.Generator) -> BodyShape:
    """Wedge ``shape`` to height loss ``q``: one endplate (the superior when ``superior``) tilts
    down anteriorly, the middle height drops by 35-55 % of the anterior loss.

    The geometry of an A1 compression, shared with the physiologic wedge that mimics it
    (:func:`apply_wedge_variant`).
    """
    _, _, hp0 = _control_heights(shape)
    share = 1.0 if superior else 0.0
    hp = hp0 * (1.0 - rng.uniform(0.0, 0.03))
    ha = hp * (1.0 - q)
    hm = hp * (1.0 - q * rng.uniform(0.35, 0.55))
    return _set_heights(shape, ha, hm, hp, (share, share, share))


def apply_wedge_variant(shape: BodyShape, rng: np.random.Generator) -> BodyShape:
    """Deepen an intact body's physiologic wedging into the grade-1 band: not a fracture.

    Morphometry alone calls such a body a grade-1 deformity, and normal wedging of the mid-thoracic
    spine and the thoracolumbar junction is the best-known source of false grade-1 readings
    (Genant et al., 1993; Diacinti et al., 1995). The body gets exactly the geometry an A1 wedge
    of :data:`WEDGE_VARIANT_LOSS` would (:func:`_wedge`: same tilt, same endplate shares, same
    middle height) but none of a fracture's signs: no cortical gap, condensation band, anterior
    bulge or endplate roughness, and no fracture zone. Only those signs tell the two apart.
    """
    q = float(rng.uniform(*WEDGE_VARIANT_LOSS))
    return _wedge(shape, q, bool(rng.random() < 0.8), rng)


def _zone_under(
    shape: BodyShape, endplate: str, u_from: float, u_to: float, depth: float, n: int = 10
) -> tuple[tuple[float, float], ...]:
    """Polygon of the band of ``depth`` mm inside one endplate between ``u_from`` and ``u_to``."""
    u = np.linspace(u_from, u_to, n)
    if endplate == "top":
        edge = shape.top(u)
        inner = edge - depth
    else:
        edge = shape.bottom(u)
        inner = edge + depth
    pts = [(float(a), float(b)) for a, b in zip(u, edge, strict=True)]
    pts += [(float(a), float(b)) for a, b in zip(u[::-1], inner[::-1], strict=True)]
    return tuple(pts)


def apply_fracture(shape: BodyShape, spec: FractureSpec, rng: np.random.Generator) -> BodyShape:
    """Deform a normal body into the fracture ``spec`` describes.

    The returned shape's measured height loss equals ``spec.height_loss`` (to rounding) and its
    ``zone`` holds the fracture-zone polygon in the local frame.
    """
    d = shape.depth
    _, _, hp0 = _control_heights(shape)
    q = spec.height_loss
    base = spec.ao_type
    if base in ("B", "C"):
        base = "A1" if rng.random() < 0.5 else "A3"
    superior = rng.random() < 0.8
    ep = "top" if superior else "bottom"
    share_one = 1.0 if superior else 0.0
    h = hp0
    # Signs beyond the height loss grow with the grade: a grade-1 fracture is often no more than
    # a slightly wedged, slightly irregular endplate.
    grade_scale = {1: 0.4, 2: 0.75, 3: 1.0}[spec.grade]
    if spec.bare:  # this body's draws as for a usual wedge, every secondary sign at zero
        grade_scale = 0.0

    if base == "A1":
        out = _wedge(shape, q, superior, rng)
        corner_v = out.top_pts[2] - 2.5 if superior else out.bottom_pts[2] + 2.5
        gaps: list[Gap] = []
        if rng.random() < 0.1 + 0.25 * spec.grade:
            gap = Gap(
                "anterior",
                float(corner_v),
                float(rng.uniform(0.6, 1.4)),
                float(rng.uniform(0.3, 1.2)),
            )
            if not spec.bare:
                gaps.append(gap)
        bands: list[Band] = []
        if rng.random() < 0.1 + 0.2 * spec.grade:
            band = Band(
                ep,
                float(rng.uniform(1.5, 3.0)),
                float(rng.uniform(1.2, 2.8)),
                float(rng.uniform(0.25, 0.6) * grade_scale),
                -0.1 * d,
                0.5 * d,
            )
            if not spec.bare:
                bands.append(band)
        zone = _zone_under(out, ep, -0.15 * d, 0.5 * d, 0.38 * h)
        out = replace(
            out,
            gaps=out.gaps + tuple(gaps),
            bands=out.bands + tuple(bands),
            zone=zone,
            bulge_anterior=float(rng.uniform(0.4, 1.6) * grade_scale),
            bulge_anterior_v=float(corner_v),
            bulge_width=3.5,
        )
    elif base == "A2":
        us = float(rng.uniform(-0.08, 0.15) * d)
        radius = float(min(0.28 * d, MEASURE_AT * d - abs(us) - 0.5))
        hp = hp0 * (1.0 - rng.uniform(0.0, 0.03))
        ha = hp * (1.0 - q * rng.uniform(0.2, 0.5))
        out = _set_heights(shape, ha, hp * 0.985, hp, (0.5, 0.5, 0.5))
        _ha_now, hm_now, _ = out.heights()
        need = hm_now - hp * (1.0 - q)
        w0 = max(float(bell(np.array([us / radius]))[0]), 0.05)
        dents = (
            Dent("top", us, radius, 0.6 * need / w0),
            Dent("bottom", us, radius, 0.4 * need / w0),
        )
        tilt = float(rng.uniform(-0.15, 0.15))
        half = 0.5 * hp + 1.0
        gap_w = float(rng.uniform(0.8, 2.0) * grade_scale)
        split = Line(
            us - tilt * half, -half, us + tilt * half, half, gap_w, -0.6, _bends(rng, 4, 0.7)
        )
        out = replace(
            out,
            dents=out.dents + dents,
            lines=(*out.lines, split),
            bulge_anterior=float(rng.uniform(0.8, 2.5) * grade_scale),
            bulge_anterior_v=0.0,
            bulge_width=0.6 * hp,
            gaps=(*out.gaps, Gap("top", us, 0.8, 0.0), Gap("bottom", us, 0.8, 0.0)),
        )
        zone = (
            (us - 4.0 - tilt * half, -half),
            (us + 4.0 - tilt * half, -half),
            (us + 4.0 + tilt * half, half),
            (us - 4.0 + tilt * half, half),
        )
        out = replace(out, zone=zone)
    elif base == "A3":
        hp = hp0 * (1.0 - rng.uniform(0.0, 0.06))
        hm = hp * (1.0 - q)
        ha = hp * (1.0 - q * rng.uniform(0.35, 0.7))
        out = _set_heights(shape, ha, hm, hp, (share_one, share_one, share_one))
        v_corner = out.top_pts[0] - 0.22 * hp if superior else out.bottom_pts[0] + 0.22 * hp
        retro = float(rng.uniform(1.2, 4.0) * grade_scale)
        n_lines = int(rng.integers(1, 3))
        lines_a3 = tuple(
            _random_line(out, ep, rng, -0.35 * d, 0.3 * d, 0.25 * hp) for _ in range(n_lines)
        )
        bands_a3: tuple[Band, ...] = ()
        if rng.random() < 0.5:
            bands_a3 = (
                Band(
                    ep,
                    float(rng.uniform(1.5, 3.0)),
                    float(rng.uniform(1.5, 3.0)),
                    float(rng.uniform(0.25, 0.55) * grade_scale),
                    -0.45 * d,
                    0.35 * d,
                ),
            )
        zone = _zone_under(out, ep, -0.5 * d - retro, 0.35 * d, 0.45 * hp)
        out = replace(
            out,
            bulge_posterior=retro,
            bulge_posterior_v=float(v_corner),
            bulge_width=0.18 * hp + 1.5,
            lines=out.lines + lines_a3,
            bands=out.bands + bands_a3,
            gaps=(*out.gaps, Gap("posterior", float(v_corner), 1.0, 0.0)),
            zone=zone,
        )
    else:  # A4
        hp = hp0 * (1.0 - rng.uniform(0.03, 0.12))
        hm = hp * (1.0 - q)
        ha = hp * (1.0 - q * rng.uniform(0.5, 0.85))
        top_share = float(rng.uniform(0.5, 0.7))
        out = _set_heights(shape, ha, hm, hp, (0.5, top_share, top_share))
        n_lines = int(rng.integers(2, 5))
        lines_a4 = tuple(
            _random_line(out, "top" if i % 2 == 0 else "bottom", rng, -0.4 * d, 0.4 * d, 0.35 * hp)
            for i in range(n_lines)
        )
        bands_a4: list[Band] = []
        for which in ("top", "bottom"):
            if rng.random() < 0.5:
                bands_a4.append(
                    Band(
                        which,
                        float(rng.uniform(1.5, 3.0)),
                        float(rng.uniform(1.5, 3.0)),
                        float(rng.uniform(0.2, 0.5) * grade_scale),
                        -0.45 * d,
                        0.45 * d,
                    )
                )
        buckle = Gap(
            "anterior",
            float(rng.uniform(-0.2, 0.3) * hp),
            float(rng.uniform(0.6, 1.4)),
            float(rng.uniform(0.3, 1.5)),
        )
        shrink = 0.92
        zone = tuple((float(u) * shrink, float(v) * shrink) for u, v in out.outline(16))
        out = replace(
            out,
            bulge_anterior=float(rng.uniform(1.0, 3.0) * grade_scale),
            bulge_anterior_v=0.0,
            bulge_posterior=float(rng.uniform(1.5, 4.5) * grade_scale),
            bulge_posterior_v=0.1 * hp,
            bulge_width=0.3 * hp,
            lines=out.lines + lines_a4,
            bands=out.bands + tuple(bands_a4),
            gaps=(*out.gaps, buckle),
            zone=zone,
        )

    # Fractured endplates are irregular (zero at the morphometry points: heights stay exact).
    amp = float(rng.uniform(0.2, 0.7) * grade_scale)
    phase = float(rng.uniform(0.0, 2.0 * np.pi))
    if base == "A4":
        out = replace(out, rough_top=amp, rough_bottom=0.7 * amp, rough_phase=phase)
    elif ep == "top":
        out = replace(out, rough_top=amp, rough_phase=phase)
    else:
        out = replace(out, rough_bottom=amp, rough_phase=phase)

    if spec.ao_type == "B":
        v_line = float(rng.uniform(-0.1, 0.2) * hp0)
        # Through the spinous process, lamina and pedicle into the posterior body.
        chance = Line(
            -1.8 * d,
            v_line + float(rng.uniform(-2.0, 2.0)),
            float(rng.uniform(-0.15, 0.15) * d),
            v_line + rng.uniform(-1.5, 1.5),
            float(rng.uniform(0.9, 1.6)),
            -0.55,
            _bends(rng, 5, 0.8),
        )
        zone_b = (
            (-0.5 * d, v_line - 3.0),
            (0.0, v_line - 3.0),
            (0.0, v_line + 3.0),
            (-0.5 * d, v_line + 3.0),
        )
        out = replace(out, lines=(*out.lines, chance), zone=out.zone if out.zone else zone_b)
    return out


def _random_line(
    shape: BodyShape,
    endplate: str,
    rng: np.random.Generator,
    u_lo: float,
    u_hi: float,
    reach: float,
) -> Line:
    """A fracture line starting at an endplate and running into the body."""
    u0 = float(rng.uniform(u_lo, u_hi))
    v0 = float(
        shape.top(np.array([u0]))[0] if endplate == "top" else shape.bottom(np.array([u0]))[0]
    )
    sign = -1.0 if endplate == "top" else 1.0
    length = float(rng.uniform(0.5, 1.0) * reach)
    angle = float(rng.uniform(-0.7, 0.7))
    u1 = u0 + np.sin(angle) * length
    v1 = v0 + sign * np.cos(angle) * length
    strength = float(rng.choice([-0.45, -0.35, 0.35]))
    width = float(rng.uniform(0.7, 1.4))
    return Line(u0, v0, float(u1), float(v1), width, strength, _bends(rng, 3, 0.5))


def _bends(rng: np.random.Generator, n: int, scale: float) -> tuple[float, ...]:
    """Sideways offsets that make a line irregular, as fracture lines are."""
    return tuple(float(x) for x in rng.normal(0.0, scale, size=n))


def apply_variants(
    shape: BodyShape,
    age: float,
    rng: np.random.Generator,
    max_loss: float = 0.16,
    min_loss: float = -1.0,
) -> tuple[BodyShape, tuple[str, ...]]:
    """Add normal variants that are not fractures; returns the shape and the variant names.

    A Schmorl node is kept shallow enough that the body's measured height loss stays within
    ``[min_loss, max_loss]`` (grade 0 for an intact body; the fracture's own loss for a fractured
    one), or is left out.
    """
    d = shape.depth
    names: list[str] = []
    age_f = float(np.clip((age - 25.0) / 50.0, 0.0, 1.0))
    if rng.random() < 0.06 + 0.08 * age_f:
        which = "top" if rng.random() < 0.6 else "bottom"
        u0 = float(rng.uniform(-0.25, 0.25) * d)
        radius = float(rng.uniform(3.0, 6.0))
        depth = float(rng.uniform(1.2, 3.0))
        trial = replace(shape, dents=(*shape.dents, Dent(which, u0, radius, depth)))
        while not min_loss <= height_loss(trial) <= max_loss and depth > 0.5:
            depth *= 0.8
            trial = replace(shape, dents=(*shape.dents, Dent(which, u0, radius, depth)))
        if min_loss <= height_loss(trial) <= max_loss:
            shape = trial
            names.append("schmorl_node")
    if rng.random() < 0.05 + 0.5 * age_f:
        spurs = []
        for corner in ("top", "bottom"):
            if rng.random() < 0.6:
                spurs.append(
                    Spur(
                        corner,
                        float(rng.uniform(1.5, 3.0 + 5.0 * age_f)),
                        float(rng.uniform(1.5, 3.0)),
                    )
                )
        if spurs:
            shape = replace(shape, spurs=tuple(spurs))
            names.append("osteophyte")
    if rng.random() < 0.12 and not (shape.rough_top or shape.rough_bottom):
        # Mildly irregular endplates without height loss (Scheuermann-type, degenerative).
        amp = float(rng.uniform(0.1, 0.35))
        side = float(rng.random())
        shape = replace(
            shape,
            rough_top=amp if side < 0.7 else 0.0,
            rough_bottom=amp if side >= 0.4 else 0.0,
            rough_phase=float(rng.uniform(0.0, 2.0 * np.pi)),
        )
        names.append("irregular_endplate")
    if rng.random() < 0.10:
        v = float(rng.uniform(-0.1, 0.1) * shape.half_height)
        cleft = Line(
            -0.5 * d,
            v,
            -0.5 * d + rng.uniform(0.2, 0.4) * d,
            v + rng.uniform(-0.6, 0.6),
            float(rng.uniform(0.6, 1.1)),
            -0.4,
            _bends(rng, 3, 0.3),
        )
        shape = replace(shape, lines=(*shape.lines, cleft))
        names.append("hahn_cleft")
    if rng.random() < 0.04:
        u = float(rng.uniform(-0.3, 0.3) * d)
        v = float(rng.uniform(-0.4, 0.4) * shape.half_height)
        r = float(rng.uniform(1.0, 2.5))
        island = Line(u - r, v, u + r, v + rng.uniform(-0.5, 0.5), 2.0 * r, 0.6)
        shape = replace(shape, lines=(*shape.lines, island))
        names.append("bone_island")
    return shape, tuple(names)
