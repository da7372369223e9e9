"""A whole lateral thoracolumbar scene: patient, column with fractures and variants, soft tissues,
and the acquisition that images it.

:func:`sample_scene` draws everything random about one study from its generator; rendering
(:mod:`auditor.synth.render`, :mod:`auditor.synth.imaging`) is then a pure function of the scene.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from auditor.synth import anatomy
from auditor.synth.anatomy import DRAWN_LEVELS, Disc, FieldOfView, Patient, PlacedBody
from auditor.synth.config import SynthConfig
from auditor.synth.fractures import (
    WEDGE_VARIANT_LEVELS,
    FractureSpec,
    apply_fracture,
    apply_variants,
    apply_wedge_variant,
    choose_fracture,
)
from auditor.synth.grid import Grid
from auditor.synth.rendering import RenderSetting, render_setting
from auditor.synth.shape import BodyShape, height_loss

#: Relative frequency of fracture levels (source study: T12-L2 about half of all fractures).
LEVEL_WEIGHTS: dict[str, float] = {
    "T10": 0.07,
    "T11": 0.10,
    "T12": 0.16,
    "L1": 0.19,
    "L2": 0.13,
    "L3": 0.12,
    "L4": 0.12,
    "L5": 0.11,
}


@dataclass(frozen=True)
class Rib:
    """A rib projected on the lateral view: a quadratic Bezier tube (patient mm)."""

    p0: tuple[float, float]
    p1: tuple[float, float]
    p2: tuple[float, float]
    radius: float


@dataclass(frozen=True)
class GasPocket:
    """Bowel gas: an ellipsoid of air (patient mm); ``mottled`` for stool-filled colon."""

    centre: tuple[float, float]
    axes: tuple[float, float]
    angle: float
    thickness: float
    mottled: bool


@dataclass(frozen=True)
class SoftTissue:
    """Trunk outline, lungs and diaphragm, gas and iliac crests."""

    body_width: float
    posterior_tissue: float
    anterior_tissue: float
    lung_air: float  # total air path through both lungs well above the diaphragm, mm
    diaphragm: tuple[
        tuple[float, float, float], ...
    ]  # (apex x, apex y, curvature) per hemidiaphragm
    gas: tuple[GasPocket, ...]
    ribs: tuple[Rib, ...]
    iliac: tuple[
        tuple[float, float, float, float, float], ...
    ]  # (apex x, apex y, curv, x_lo, x_hi)
    iliac_plate: float  # cortical-equivalent mm of the two wings seen en face


@dataclass(frozen=True)
class Acquisition:
    """How the detector and the processing image the scene."""

    modality: str  # "DX" or "CR"
    pixel_spacing: float  # detector mm per pixel
    magnification: float
    bits_stored: int
    photometric: str  # MONOCHROME1 / MONOCHROME2
    counts: float  # mean quanta per 0.13 mm pixel behind the vertebral bodies
    scatter_ratio: float
    heel: float  # relative intensity change top to bottom
    blur_px: float  # detector blur sigma, stored pixels
    edge_gain: float
    drc_gain: float
    soft_level: float  # display level of the soft tissue next to the spine
    bone_contrast: float  # display difference between vertebral bodies and that soft tissue
    collimation: tuple[float, float, float, float]  # fractions cut at left, right, top, bottom
    shutter_white: bool  # collimated area shown white (unprocessed) or black (masked)
    kvp: float
    mas: float
    texture_gain: float  # trabecular texture contrast
    marker: str  # "L" or "R" lead marker
    annotation: str  # burned-in text
    gamma: float = 1.0  # exponent on the processed display values (a render setting's)


@dataclass(frozen=True)
class VertebraPlan:
    """A drawn body with what was done to it."""

    level: str
    body: PlacedBody
    fracture: FractureSpec | None
    variants: tuple[str, ...]


@dataclass(frozen=True)
class Scene:
    """Everything random about one lateral image."""

    patient: Patient
    vertebrae: tuple[VertebraPlan, ...]  # DRAWN_LEVELS order, cranial to caudal
    sacrum: tuple[PlacedBody, ...]
    discs: dict[str, Disc]
    field: FieldOfView
    soft: SoftTissue
    acquisition: Acquisition
    grid: Grid


def _fracture_levels(
    centre: str, n_bodies: int, rng: np.random.Generator, config: SynthConfig
) -> tuple[str, str, list[str]]:
    """Choose fractured levels and a centre level that keeps them inside the field."""
    boxed = list(LEVEL_WEIGHTS)
    w = np.asarray([LEVEL_WEIGHTS[lv] for lv in boxed])
    primary = str(rng.choice(boxed, p=w / w.sum()))
    half = max(1, (n_bodies - 1) // 2 - 1)
    i = DRAWN_LEVELS.index(primary) + int(rng.integers(-half, half + 1))
    # Keep the field within T7..S1 and the primary off its edge.
    i = int(np.clip(i, DRAWN_LEVELS.index("T10"), DRAWN_LEVELS.index("L4")))
    centre = DRAWN_LEVELS[i]
    levels = [primary]
    if rng.random() < config.multi_fracture_rate:
        n_extra = 1 if rng.random() < 0.75 else 2
        lo, hi = _field_levels(centre, n_bodies)
        inner = [lv for lv in DRAWN_LEVELS[lo + 1 : hi] if lv in LEVEL_WEIGHTS and lv != primary]
        for _ in range(n_extra):
            if not inner:
                break
            near = [
                lv for lv in inner if abs(DRAWN_LEVELS.index(lv) - DRAWN_LEVELS.index(primary)) == 1
            ]
            pick = str(rng.choice(near)) if near and rng.random() < 0.55 else str(rng.choice(inner))
            levels.append(pick)
            inner.remove(pick)
    return primary, centre, levels


def _field_kind(centre: str, n_bodies: int) -> str:
    """Name of the field a centre level and body count make (for fields moved onto a fracture)."""
    if n_bodies >= 8:
        return "long"
    if centre in ("T10", "T11"):
        return "lower_thoracic"
    if centre in ("T12", "L1"):
        return "thoracolumbar"
    return "lumbar"


def _field_levels(centre: str, n_bodies: int) -> tuple[int, int]:
    """Index range of bodies a field centred on ``centre`` frames (as place_field computes it)."""
    i = DRAWN_LEVELS.index(centre)
    lo = max(0, i - n_bodies // 2)
    hi = min(len(DRAWN_LEVELS) - 1, lo + n_bodies - 1)
    lo = max(0, hi - n_bodies + 1)
    return lo, hi


def _draws_wedge_variant(level: str, config: SynthConfig, rng: np.random.Generator) -> bool:
    """Whether an intact body at ``level`` gets a wedge that mimics grade 1 (no draw at share 0,
    so default worlds keep their bytes)."""
    share = config.wedge_variant_share
    return share > 0 and level in WEDGE_VARIANT_LEVELS and bool(rng.random() < share)


def sample_scene(rng: np.random.Generator, config: SynthConfig, fractured: bool) -> Scene:
    """Draw one lateral scene; ``fractured`` says whether it holds at least one fracture."""
    patient = anatomy.sample_patient(rng)
    kind, centre, n_bodies = anatomy.choose_field(rng)
    fracture_levels: list[str] = []
    if fractured:
        _, centre, fracture_levels = _fracture_levels(centre, n_bodies, rng, config)
        kind = _field_kind(centre, n_bodies)
        lo, hi = _field_levels(centre, n_bodies)
        # Fractured bodies must sit fully inside the field.
        fracture_levels = [lv for lv in fracture_levels if lo < DRAWN_LEVELS.index(lv) < hi]

    shapes: dict[str, BodyShape] = {}
    normal_shapes: dict[str, BodyShape] = {}
    specs: dict[str, FractureSpec] = {}
    variants: dict[str, tuple[str, ...]] = {}
    for level in DRAWN_LEVELS:
        shape = anatomy.normal_body(level, patient, rng)
        normal_shapes[level] = shape
        if level in fracture_levels:
            spec = choose_fracture(level, rng, config.subtle_share, config.subtle_bare)
            shape = apply_fracture(shape, spec, rng)
            specs[level] = spec
            loss = height_loss(shape)
            shape, names = apply_variants(
                shape, patient.age, rng, max_loss=loss + 1e-3, min_loss=loss - 1e-3
            )
        elif level == "S1":
            names = ()
        elif _draws_wedge_variant(level, config, rng):
            # Like a fracture's wedge, it adds focal kyphosis (normal_shapes keeps the plain body).
            shape = apply_wedge_variant(shape, rng)
            loss = height_loss(shape)
            shape, names = apply_variants(
                shape, patient.age, rng, max_loss=loss + 1e-3, min_loss=loss - 1e-3
            )
            names = ("physiologic_wedge", *names)
        else:
            shape, names = apply_variants(shape, patient.age, rng)
        shapes[level] = shape
        variants[level] = names

    # Disc wedges complete the patient's lordosis over intact bodies; a fracture's wedge then adds
    # focal kyphosis on top, as it does in a patient.
    discs = anatomy.sample_discs(patient, normal_shapes, rng)
    for level, disc in discs.items():
        if not disc.degenerated:
            continue
        below = DRAWN_LEVELS[DRAWN_LEVELS.index(level) + 1]
        for lv in (level, below):
            shapes[lv] = replace(
                shapes[lv], endplate_rim=shapes[lv].endplate_rim * float(rng.uniform(1.2, 1.7))
            )
            if "degenerated_disc" not in variants[lv]:
                variants[lv] = (*variants[lv], "degenerated_disc")

    kyph = {lv: s.kyphosis_deg for lv, s in specs.items() if s.kyphosis_deg}
    trans = {lv: s.translation_mm for lv, s in specs.items() if s.translation_mm}
    placed = anatomy.build_column(shapes, discs, patient, kyph, trans)
    sacrum = tuple(anatomy.sacral_segments(placed["S1"], rng))
    field = anatomy.place_field(kind, centre, n_bodies, placed, rng)
    acquisition = _sample_acquisition(rng, patient)
    grid = _make_grid(field, acquisition, config, rng)
    acquisition = replace(acquisition, pixel_spacing=grid.pitch * acquisition.magnification)
    acquisition = _rendered(acquisition, render_setting(config.render))
    soft = _sample_soft(patient, placed, field, rng)
    soft = replace(soft, gas=soft.gas + _vacuum_discs(placed, discs, rng))
    # Endplates are seen edge-on only near the central ray: beam divergence (about 1 rad per metre
    # of distance from the centre) and the patient's lateral tilt make them double contours.
    patient_tilt = float(rng.normal(0.0, np.radians(2.5)))
    for lv in DRAWN_LEVELS:
        body = placed[lv]
        angle = patient_tilt + float(rng.normal(0.0, np.radians(0.8)))
        angle += (body.cy - field.centre[1]) / 1000.0
        obliquity = float(min(8.0, body.shape.width * abs(np.tan(angle))))
        placed[lv] = replace(body, obliquity=obliquity)
    vertebrae = tuple(
        VertebraPlan(lv, placed[lv], specs.get(lv), variants[lv]) for lv in DRAWN_LEVELS
    )
    return Scene(patient, vertebrae, sacrum, discs, field, soft, acquisition, grid)


def _make_grid(
    field: FieldOfView, acq: Acquisition, config: SynthConfig, rng: np.random.Generator
) -> Grid:
    long_px = rng.uniform(0.72, 1.0) * config.max_side
    pitch = field.height / long_px
    spacing = pitch * acq.magnification
    if spacing < 0.1:
        pitch = 0.1 / acq.magnification
    factor = max(1, round(0.30 / pitch))
    rows = max(factor, round(field.height / pitch / factor) * factor)
    cols = max(factor, round(field.width / pitch / factor) * factor)
    return Grid(rows, cols, float(pitch), factor, field.centre, field.rotation, field.facing_right)


def _sample_acquisition(rng: np.random.Generator, patient: Patient) -> Acquisition:
    modality = "DX" if rng.random() < 0.65 else "CR"
    size_f = (patient.body_width - 270.0) / 150.0
    collim = (
        float(rng.uniform(0.0, 0.09)),
        float(rng.uniform(0.0, 0.09)),
        float(rng.uniform(0.0, 0.03)),
        float(rng.uniform(0.0, 0.03)),
    )
    if rng.random() < 0.3:
        collim = (0.0, 0.0, 0.0, 0.0)
    annotations = ("LAT", "LATERAL", "STANDING", "SUPINE", "X-TABLE LAT", "TRAUMA", "")
    return Acquisition(
        modality=modality,
        pixel_spacing=0.15,
        magnification=float(rng.uniform(1.08, 1.25)),
        bits_stored=int(rng.choice([10, 12, 12, 14, 15, 16])),
        photometric="MONOCHROME1"
        if rng.random() < (0.45 if modality == "CR" else 0.25)
        else "MONOCHROME2",
        counts=float(rng.uniform(250.0, 1400.0) * (1.0 - 0.35 * size_f)),
        scatter_ratio=float(rng.uniform(0.25, 0.7) + 0.6 * size_f),
        heel=float(rng.uniform(-0.18, 0.18)),
        blur_px=float(rng.uniform(0.5, 0.9) if modality == "DX" else rng.uniform(0.8, 1.4)),
        edge_gain=float(rng.uniform(0.3, 1.1)),
        drc_gain=float(rng.uniform(0.6, 0.85)),
        soft_level=float(rng.uniform(0.36, 0.5)),
        bone_contrast=float(rng.uniform(0.2, 0.32)),
        collimation=collim,
        shutter_white=bool(rng.random() < 0.5),
        kvp=float(rng.choice([80, 85, 90, 95, 100, 102, 110])),
        mas=float(np.round(rng.uniform(12, 80), 1)),
        texture_gain=float(rng.uniform(0.07, 0.15)),
        marker=str(rng.choice(["L", "R"])),
        annotation=str(rng.choice(annotations)),
    )


def _rendered(acq: Acquisition, setting: RenderSetting) -> Acquisition:
    """The acquisition as a render setting changes it; it draws nothing, so the scene's other
    draws do not depend on the setting."""
    if setting.is_default:
        return acq
    return replace(
        acq,
        edge_gain=acq.edge_gain * setting.edge_gain,
        drc_gain=acq.drc_gain * setting.drc_gain,
        bone_contrast=acq.bone_contrast * setting.bone_contrast,
        blur_px=acq.blur_px * setting.blur,
        scatter_ratio=acq.scatter_ratio * setting.scatter,
        counts=acq.counts * setting.counts,
        gamma=setting.gamma,
    )


def _vacuum_discs(
    placed: dict[str, PlacedBody], discs: dict[str, Disc], rng: np.random.Generator
) -> tuple[GasPocket, ...]:
    """Vacuum phenomenon: a sliver of gas in a degenerated disc."""
    out = []
    for level, disc in discs.items():
        if not disc.vacuum:
            continue
        upper = placed[level]
        lower = placed[DRAWN_LEVELS[DRAWN_LEVELS.index(level) + 1]]
        ux, uy = upper.to_patient(
            np.array([0.1 * upper.shape.depth]), np.array([upper.shape.bottom_pts[1]])
        )
        lx, ly = lower.to_patient(
            np.array([0.1 * lower.shape.depth]), np.array([lower.shape.top_pts[1]])
        )
        centre = (float(0.5 * (ux[0] + lx[0])), float(0.5 * (uy[0] + ly[0])))
        tilt = 0.5 * (upper.tilt + lower.tilt)
        out.append(
            GasPocket(
                centre,
                (float(rng.uniform(0.2, 0.35) * upper.shape.depth), float(rng.uniform(0.7, 1.3))),
                float(-tilt),
                float(rng.uniform(8.0, 18.0)),
                False,
            )
        )
    return tuple(out)


def _spine_line(placed: dict[str, PlacedBody]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, x of posterior wall, x of anterior wall) of the column, cranial to caudal."""
    ys, xp, xa = [], [], []
    for lv in DRAWN_LEVELS:
        b = placed[lv]
        ys.append(b.cy)
        xp.append(b.to_patient(np.array([-0.5 * b.shape.depth]), np.array([0.0]))[0][0])
        xa.append(b.to_patient(np.array([0.5 * b.shape.depth]), np.array([0.0]))[0][0])
    order = np.argsort(ys)
    return np.asarray(ys)[order], np.asarray(xp)[order], np.asarray(xa)[order]


def _sample_soft(
    patient: Patient, placed: dict[str, PlacedBody], field: FieldOfView, rng: np.random.Generator
) -> SoftTissue:
    ys, xp, xa = _spine_line(placed)
    t10 = placed["T10"]
    # Diaphragm: apex anterior to the spine near T10-T11, posterior sulcus near T12-L1.
    domes = []
    apex_y = t10.cy + rng.uniform(-30.0, 15.0)
    for i in range(2):
        ax = float(np.interp(apex_y, ys, xa) + rng.uniform(40.0, 90.0))
        ay = float(apex_y - i * rng.uniform(8.0, 25.0))
        sulcus_x = float(np.interp(ay, ys, xp) - 35.0)
        drop = rng.uniform(60.0, 100.0)
        domes.append((ax, ay, float(drop / (ax - sulcus_x) ** 2)))

    ribs: list[Rib] = []
    for lv in ("T7", "T8", "T9", "T10", "T11", "T12"):
        b = placed[lv]
        hx, hy = b.to_patient(
            np.array([-0.5 * b.shape.depth - 3.0]), np.array([0.45 * b.shape.heights()[2]])
        )
        head = (float(hx[0]), float(hy[0]))
        for side in range(2):
            mag = 1.0 + 0.07 * side + rng.uniform(-0.02, 0.02)
            drop = rng.uniform(2.0, 9.0) * side
            if lv == "T12":
                p1 = (head[0] - 35.0 * mag, head[1] - 15.0 * mag - drop)
                p2 = (head[0] - 55.0 * mag, head[1] - 75.0 * mag - drop)
            elif lv == "T11":
                p1 = (head[0] - 55.0 * mag, head[1] - 10.0 * mag - drop)
                p2 = (head[0] + 40.0 * mag, head[1] - 110.0 * mag - drop)
            else:
                p1 = (head[0] - 75.0 * mag, head[1] - 2.0 * mag - drop)
                p2 = (
                    head[0] + rng.uniform(150.0, 210.0) * mag,
                    head[1] - rng.uniform(90.0, 130.0) * mag - drop,
                )
            ribs.append(Rib((head[0], head[1] - drop), p1, p2, float(rng.uniform(4.0, 6.0))))

    gas = []
    lowest_dome = min(d[1] for d in domes)
    y_lo = field.centre[1] - 0.6 * field.height
    for _ in range(int(rng.integers(2, 12))):
        y = rng.uniform(y_lo, lowest_dome - 25.0)
        x = float(np.interp(y, ys, xp) + rng.uniform(-5.0, 0.6 * patient.anterior_tissue + 45.0))
        mottled = bool(rng.random() < 0.5)
        gas.append(
            GasPocket(
                (x, float(y)),
                (float(rng.uniform(8.0, 30.0)), float(rng.uniform(4.0, 12.0))),
                float(rng.uniform(0, np.pi)),
                float(rng.uniform(5.0, 22.0) * (0.7 if mottled else 1.0)),
                mottled,
            )
        )

    l4 = placed["L4"]
    l5 = placed["L5"]
    crest_y = 0.5 * (l4.cy + l5.cy) + rng.uniform(-12.0, 12.0)
    iliac = []
    for i in range(2):
        cx = float(np.interp(crest_y, ys, xa) + rng.uniform(-10.0, 25.0) + 6.0 * i)
        cy = float(crest_y - i * rng.uniform(3.0, 12.0))
        x_lo = float(np.interp(crest_y, ys, xp) - rng.uniform(25.0, 50.0))
        x_hi = float(cx + rng.uniform(60.0, 100.0))
        iliac.append((cx, cy, float(rng.uniform(0.004, 0.009)), x_lo, x_hi))

    return SoftTissue(
        body_width=patient.body_width,
        posterior_tissue=patient.posterior_tissue,
        anterior_tissue=patient.anterior_tissue,
        lung_air=float(rng.uniform(0.12, 0.25) * patient.body_width),
        diaphragm=tuple(domes),
        gas=tuple(gas),
        ribs=tuple(ribs),
        iliac=tuple(iliac),
        iliac_plate=float(rng.uniform(3.0, 6.0)),
    )
