"""Vertebral geometry from published norms, sagittal curvature, and the field of view.

Norms (adult means; every patient is scaled by a size factor and each level jittered):

- Vertebral body posterior height and sagittal depth, T10-L5: Panjabi et al., Spine 1991
  (thoracic) and 1992 (lumbar); Zhou et al., Eur Spine J 2000. Heights rise from about 22 mm (T10)
  to 27 mm (L3-L4), depths from about 29 mm (T10) to 43 mm (L5).
- Disc heights: thoracic about 4-6 mm, lumbar 8-12 mm (Pooni et al., 1986; Roussouly 2005).
- Sagittal alignment: sacral slope 30-50 degrees, lumbar lordosis L1-S1 40-65 degrees, most of it at
  L4-S1; a near-neutral thoracolumbar junction; thoracic kyphosis about 3-5 degrees per segment
  below T9 (Roussouly et al., Spine 2005; Vialle et al., JBJS 2005).
- Physiologic anterior wedging of T10-L1 (anterior/posterior height 0.82-0.96) and the reverse
  wedge of L5 (1.00-1.15), after Diacinti et al., 1995 and Ruyssen-Witrand et al., 2007.

Coordinates are millimetres in the patient's mid-sagittal plane: ``x`` anterior, ``y`` cranial.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from auditor.synth.shape import BodyShape

#: Levels drawn in an image, cranial to caudal. Only T10..S1 get boxes (the project's vocabulary);
#: T7..T9 are drawn when a field of view reaches them, as in a real image.
DRAWN_LEVELS: tuple[str, ...] = (
    "T7",
    "T8",
    "T9",
    "T10",
    "T11",
    "T12",
    "L1",
    "L2",
    "L3",
    "L4",
    "L5",
    "S1",
)
BOXED_LEVELS: tuple[str, ...] = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")

#: Posterior body height, depth, lateral width, disc height below (all mm, adult means).
NORMS: dict[str, tuple[float, float, float, float]] = {
    "T7": (19.5, 26.0, 31.0, 4.2),
    "T8": (20.2, 27.0, 33.0, 4.4),
    "T9": (21.0, 28.0, 35.0, 4.7),
    "T10": (22.0, 29.0, 37.0, 5.0),
    "T11": (23.0, 31.0, 39.0, 5.6),
    "T12": (24.5, 33.0, 42.0, 6.5),
    "L1": (25.5, 35.0, 44.0, 8.5),
    "L2": (26.5, 37.0, 46.0, 9.5),
    "L3": (27.0, 39.0, 48.0, 10.5),
    "L4": (27.0, 41.0, 50.0, 11.0),
    "L5": (26.0, 43.0, 51.0, 10.5),
    "S1": (27.0, 44.0, 50.0, 0.0),
}

#: Anterior/posterior height ratio ranges of intact bodies (physiologic wedging).
WEDGE_RATIO: dict[str, tuple[float, float]] = {
    "T7": (0.86, 0.96),
    "T8": (0.86, 0.96),
    "T9": (0.86, 0.96),
    "T10": (0.84, 0.96),
    "T11": (0.82, 0.95),
    "T12": (0.82, 0.95),
    "L1": (0.83, 0.96),
    "L2": (0.90, 1.01),
    "L3": (0.95, 1.03),
    "L4": (0.97, 1.06),
    "L5": (1.00, 1.15),
    "S1": (0.98, 1.04),
}

#: Share of the disc-borne lumbar lordosis at each disc (named by the level above it).
LORDOSIS_SHARE: dict[str, float] = {"L1": 0.05, "L2": 0.10, "L3": 0.17, "L4": 0.27, "L5": 0.41}

#: Fields of view: name, the level at the centre (drawn from these), the number of boxed bodies.
FIELDS: dict[str, tuple[tuple[str, ...], tuple[int, int]]] = {
    "thoracolumbar": (("T12", "L1", "T12", "L1", "L2"), (5, 8)),
    "lumbar": (("L2", "L3", "L3", "L4"), (5, 7)),
    "lower_thoracic": (("T11", "T12"), (4, 6)),
    "long": (("L1", "L2"), (8, 9)),
}
FIELD_WEIGHTS: dict[str, float] = {
    "thoracolumbar": 0.42,
    "lumbar": 0.33,
    "lower_thoracic": 0.13,
    "long": 0.12,
}


@dataclass(frozen=True)
class Patient:
    """Body habitus and bone of one synthetic patient."""

    age: float
    sex: str  # "F" / "M"
    size: float  # vertebral size factor (about 0.88-1.12)
    body_width: float  # lateral width of the trunk along the beam, mm
    anterior_tissue: float  # anterior body wall to anterior skin, mm
    posterior_tissue: float  # posterior body wall to back skin, mm
    bone_density: float  # cancellous density factor (osteopenia < 1)
    sacral_slope: float  # degrees
    lordosis: float  # L1-S1, degrees
    kyphosis_step: float  # degrees per thoracic segment


def sample_patient(rng: np.random.Generator) -> Patient:
    """Draw a patient (ranges are listed in the module and package docs)."""
    sex = "F" if rng.random() < 0.45 else "M"
    age = float(rng.uniform(17, 88))
    size = float(rng.normal(0.95 if sex == "F" else 1.04, 0.04))
    bmi = float(rng.uniform(0.0, 1.0))
    width = float(rng.uniform(270, 340) + 90 * bmi)
    density = float(np.clip(rng.normal(1.05 - 0.006 * max(age - 45, 0), 0.08), 0.6, 1.25))
    slope = float(rng.uniform(30, 50))
    return Patient(
        age=age,
        sex=sex,
        size=float(np.clip(size, 0.86, 1.14)),
        body_width=width,
        anterior_tissue=float(rng.uniform(110, 170) + 120 * bmi),
        posterior_tissue=float(rng.uniform(72, 95) + 50 * bmi),
        bone_density=density,
        sacral_slope=slope,
        lordosis=float(slope + rng.uniform(5, 18)),
        kyphosis_step=float(rng.uniform(2.5, 5.0)),
    )


def normal_body(level: str, patient: Patient, rng: np.random.Generator) -> BodyShape:
    """An intact vertebral body at ``level`` with physiologic wedging and endplate concavity."""
    hp0, d0, w0, _ = NORMS[level]
    jitter = rng.normal(1.0, 0.03, size=3)
    hp = hp0 * patient.size * jitter[0]
    d = d0 * patient.size * jitter[1]
    w = w0 * patient.size * jitter[2]
    lo, hi = WEDGE_RATIO[level]
    ha = hp * rng.uniform(lo, hi)
    # Middle height: concave endplates, 0.2-1.5 mm each, kept so that middle/posterior >= 0.84
    # (an intact body stays Genant grade 0).
    concave_top = rng.uniform(0.2, 1.5)
    concave_bottom = rng.uniform(0.2, 1.5)
    mid_half = 0.25 * (ha + hp)
    excess = (2 * mid_half - concave_top - concave_bottom) - 0.84 * hp
    if excess < 0:
        shrink = max(0.0, 1.0 + excess / (concave_top + concave_bottom))
        concave_top *= shrink
        concave_bottom *= shrink
    top = (0.5 * hp, mid_half - concave_top, 0.5 * ha)
    bottom = (-0.5 * hp, -mid_half + concave_bottom, -0.5 * ha)
    return BodyShape(
        level=level,
        depth=float(d),
        width=float(w),
        top_pts=(float(top[0]), float(top[1]), float(top[2])),
        bottom_pts=(float(bottom[0]), float(bottom[1]), float(bottom[2])),
        waist_anterior=float(rng.uniform(0.6, 1.8)),
        waist_posterior=float(rng.uniform(0.3, 1.2)),
        fused_below=level == "S1",
    )


@dataclass(frozen=True)
class Disc:
    """The disc below a level: mid height, wedge angle (degrees, + lordotic), degeneration."""

    height: float
    angle: float
    degenerated: bool
    vacuum: bool


@dataclass(frozen=True)
class PlacedBody:
    """A body placed in the patient plane: centre (x, y) mm and axis tilt (radians, + = leaning
    anterior going cranially). ``obliquity`` is how far the beam misses the endplates' plane
    (divergence away from the central ray, patient tilt): the endplate shows as a double contour."""

    shape: BodyShape
    cx: float
    cy: float
    tilt: float
    obliquity: float = 0.0  # mm: endplates seen off-axis project as ellipses this tall

    def to_patient(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local (u, v) to patient (x, y)."""
        c, s = np.cos(self.tilt), np.sin(self.tilt)
        return self.cx + u * c + v * s, self.cy - u * s + v * c

    def projected_shape(self) -> BodyShape:
        """The outline as projected: endplates widened by half the obliquity each way."""
        h = 0.5 * self.obliquity
        t, b = self.shape.top_pts, self.shape.bottom_pts
        return replace(
            self.shape,
            top_pts=(t[0] + h, t[1] + h, t[2] + h),
            bottom_pts=(b[0] - h, b[1] - h, b[2] - h),
        )


def sample_discs(
    patient: Patient, shapes: dict[str, BodyShape], rng: np.random.Generator
) -> dict[str, Disc]:
    """Discs below each drawn level (S1 has none); lumbar disc wedges sum to the lordosis left
    after the vertebral wedges."""
    age_f = float(np.clip((patient.age - 30.0) / 50.0, 0.0, 1.0))
    body_lordosis = 0.0
    for level in ("L1", "L2", "L3", "L4", "L5"):
        ha, _, hp = shapes[level].heights()
        body_lordosis += np.degrees(np.arctan((ha - hp) / (0.8 * shapes[level].depth)))
    disc_lordosis = patient.lordosis - body_lordosis
    discs: dict[str, Disc] = {}
    for level in DRAWN_LEVELS[:-1]:
        h = NORMS[level][3] * patient.size * rng.normal(1.0, 0.06)
        degenerated = bool(
            rng.random() < (0.04 + 0.35 * age_f) * (1.6 if level in ("L4", "L5") else 1.0)
        )
        vacuum = degenerated and rng.random() < 0.3
        if degenerated:
            h *= rng.uniform(0.4, 0.7)
        if level in LORDOSIS_SHARE:
            angle = disc_lordosis * LORDOSIS_SHARE[level]
        elif level == "T12":
            angle = rng.uniform(-2.0, 2.0)
        else:
            # Thoracic segments (disc + body below) turn kyphotic by ``kyphosis_step`` degrees.
            ha, _, hp = shapes[level].heights()
            body_kyphosis = np.degrees(np.arctan((hp - ha) / (0.8 * shapes[level].depth)))
            angle = body_kyphosis - patient.kyphosis_step * rng.uniform(0.8, 1.2)
        discs[level] = Disc(float(h), float(angle), degenerated, bool(vacuum))
    return discs


def build_column(
    shapes: dict[str, BodyShape],
    discs: dict[str, Disc],
    patient: Patient,
    kyphosis_above: dict[str, float],
    translation_above: dict[str, float],
) -> dict[str, PlacedBody]:
    """Stack bodies and discs from S1 upwards into a curved column.

    The S1 superior endplate centre is at the origin, its normal leaning anterior by the sacral
    slope. Each disc and body rotates the axis by its wedge; ``kyphosis_above`` adds a kyphotic
    angle (degrees) at the disc above a level (type B), ``translation_above`` shifts the column
    above a level forwards (mm, type C).
    """
    placed: dict[str, PlacedBody] = {}
    s1 = shapes["S1"]
    lean = np.radians(patient.sacral_slope)
    top_s1 = 0.5 * (s1.top_pts[0] + s1.top_pts[2])
    n = np.array([np.sin(lean), np.cos(lean)])
    centre = -n * top_s1
    placed["S1"] = PlacedBody(s1, float(centre[0]), float(centre[1]), float(lean))
    point = np.zeros(2)
    for level in reversed(DRAWN_LEVELS[:-1]):
        disc = discs[level]
        shape = shapes[level]
        d = shape.depth
        angle = np.radians(disc.angle) - np.radians(kyphosis_above.get(_next_below(level), 0.0))
        # A lordotic disc turns the axis posteriorly going cranially.
        lean_mid = lean - 0.5 * angle
        n = np.array([np.sin(lean_mid), np.cos(lean_mid)])
        point = point + n * disc.height
        lean -= angle
        shift = translation_above.get(_next_below(level), 0.0)
        if shift:
            point = point + np.array([np.cos(lean), -np.sin(lean)]) * shift
        ha, _, hp = shape.heights()
        wedge = np.arctan((ha - hp) / (2 * 0.4 * d))
        # Bottom endplate mid-point sits on the disc; the centre is half a (rim) height up.
        lean_body = lean - 0.5 * wedge
        n = np.array([np.sin(lean_body), np.cos(lean_body)])
        bottom_mid = 0.5 * (shape.bottom_pts[0] + shape.bottom_pts[2])
        centre = point - n * bottom_mid
        placed[level] = PlacedBody(shape, float(centre[0]), float(centre[1]), float(lean_body))
        top_mid = 0.5 * (shape.top_pts[0] + shape.top_pts[2])
        point = centre + n * top_mid
        lean -= wedge
    return placed


def _next_below(level: str) -> str:
    i = DRAWN_LEVELS.index(level)
    return DRAWN_LEVELS[i + 1]


def sacral_segments(s1: PlacedBody, rng: np.random.Generator) -> list[PlacedBody]:
    """S2-S5 below S1, shrinking and curving posteriorly (sacral kyphosis)."""
    out = []
    lean = s1.tilt
    shape = s1.shape
    point = np.array(s1.to_patient(np.array([0.0]), np.array([shape.bottom_pts[1]])))[:, 0]
    depth = shape.depth
    height = shape.heights()[2]
    for i in range(4):
        depth *= 0.8
        height *= 0.82
        lean += np.radians(rng.uniform(8, 14))
        n = np.array([np.sin(lean), np.cos(lean)])
        point = point - n * 1.2
        centre = point - n * 0.5 * height
        seg = BodyShape(
            level=f"S{i + 2}",
            depth=float(depth),
            width=float(shape.width * (0.85 - 0.15 * i)),
            top_pts=(0.5 * height, 0.5 * height - 0.3, 0.5 * height),
            bottom_pts=(-0.5 * height, -0.5 * height + 0.3, -0.5 * height),
            waist_anterior=1.5,
            waist_posterior=0.5,
            endplate_rim=0.5,
            fused_below=True,
        )
        out.append(PlacedBody(seg, float(centre[0]), float(centre[1]), float(lean)))
        point = centre - n * 0.5 * height
    return out


@dataclass(frozen=True)
class FieldOfView:
    """The patient-plane rectangle the detector sees (mm), before rotation.

    ``centre`` is in patient coordinates; ``height`` and ``width`` in mm at the patient;
    ``rotation`` in radians (patient positioning); ``facing_right`` when anterior is to the right of
    the image.
    """

    kind: str
    centre: tuple[float, float]
    height: float
    width: float
    rotation: float
    facing_right: bool


def choose_field(rng: np.random.Generator) -> tuple[str, str, int]:
    """Field kind, its centre level and the number of boxed bodies wanted."""
    kinds = list(FIELD_WEIGHTS)
    p = np.asarray([FIELD_WEIGHTS[k] for k in kinds])
    kind = str(rng.choice(kinds, p=p / p.sum()))
    centres, (lo, hi) = FIELDS[kind]
    return kind, str(rng.choice(centres)), int(rng.integers(lo, hi + 1))


def place_field(
    kind: str,
    centre_level: str,
    n_bodies: int,
    placed: dict[str, PlacedBody],
    rng: np.random.Generator,
) -> FieldOfView:
    """Frame ``n_bodies`` bodies around ``centre_level`` (the edge ones may be cut)."""
    levels = list(DRAWN_LEVELS)
    i = levels.index(centre_level)
    lo = max(0, i - n_bodies // 2)
    hi = min(len(levels) - 1, lo + n_bodies - 1)
    lo = max(0, hi - n_bodies + 1)
    top_body = placed[levels[lo]]
    bottom_body = placed[levels[hi]]
    # Vertical extent: from the top of the top body to the bottom of the bottom body, with a
    # random share of each edge body cut off or a margin added.
    y_top = top_body.cy + 0.5 * top_body.shape.heights()[2] + rng.uniform(-6.0, 14.0)
    y_bottom = bottom_body.cy - 0.5 * bottom_body.shape.heights()[2] - rng.uniform(-6.0, 14.0)
    if levels[hi] == "S1":
        y_bottom -= rng.uniform(10.0, 45.0)  # lumbar views show the sacrum
    height = float(y_top - y_bottom)
    if height < 175.0:  # coned views still show a detector's worth of field
        extra = 175.0 - height + rng.uniform(0.0, 25.0)
        share = rng.uniform(0.2, 0.8)
        y_top += extra * share
        y_bottom -= extra * (1.0 - share)
        height = float(y_top - y_bottom)
    width = float(max(height * rng.uniform(0.7, 0.92), rng.uniform(165.0, 200.0)))
    xs = [placed[lv].cx for lv in levels[lo : hi + 1]]
    x_mid = float(np.mean(xs)) - rng.uniform(5.0, 30.0)  # posterior elements share the field
    return FieldOfView(
        kind=kind,
        centre=(x_mid, float(0.5 * (y_top + y_bottom))),
        height=height,
        width=width,
        rotation=float(np.radians(rng.normal(0.0, 3.0))),
        facing_right=bool(rng.random() < 0.35),
    )
