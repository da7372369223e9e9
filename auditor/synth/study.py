"""One synthetic lateral study: image, per-vertebra truth, the original read and the header plan.

:func:`generate_study` is the on-the-fly API (no files); :mod:`auditor.synth.archive` writes what
it returns. Everything is a pure function of ``(seed, index, config)``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from auditor.synth.anatomy import BOXED_LEVELS
from auditor.synth.config import SynthConfig
from auditor.synth.fractures import FractureSpec
from auditor.synth.geometry import clip_polygon, polygon_area
from auditor.synth.imaging import form_image
from auditor.synth.render import exposed_rect, render_maps
from auditor.synth.reports import write_report
from auditor.synth.scene import Scene, VertebraPlan, sample_scene
from auditor.synth.shape import genant_grade, height_loss

logger = logging.getLogger(__name__)

MIN_VISIBLE = 0.35  # a body less visible than this gets no box
PARTIAL_BELOW = 0.97  # a boxed body less visible than this is marked partial


@dataclass(frozen=True)
class VertebraTruth:
    """Ground truth of one boxed vertebral body (stored-pixel coordinates)."""

    level: str
    box: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max
    label: int  # 1 fracture, 0 no fracture
    ao_type: str  # "A1".."A4", "B", "C"; "" when intact
    genant_grade: int
    height_ratio_anterior: float
    height_ratio_middle: float
    height_loss: float
    zone: tuple[tuple[float, float], ...]  # fracture-zone polygon, () when intact
    partial: bool
    visible_fraction: float
    variants: tuple[str, ...]


@dataclass(frozen=True)
class ReadPlan:
    """The original radiology read of a study as the archive's reads file will hold it."""

    present: bool
    fracture_reported: bool
    reported_levels: tuple[str, ...]
    impression: str
    planted_miss_levels: tuple[str, ...]
    overcalled_levels: tuple[str, ...]
    # the free-text report in one of five languages (auditor.synth.reports), its language and
    # the truth of what it says per level: (level or "*", mention kind) pairs
    report: str = ""
    report_language: str = ""
    report_truth: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HeaderPlan:
    """DICOM identifiers and descriptive fields of a study's lateral image (all fake)."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    body_part: str
    view_position: str
    series_description: str
    study_description: str
    protocol_name: str
    transfer_syntax: str
    series_number: int
    instance_number: int


@dataclass(frozen=True)
class SynthStudy:
    """A generated lateral study.

    ``stored`` holds the stored pixel values (MONOCHROME1 inverted where the header says so);
    ``pixels`` the display image in [0, 1] with bone bright, as the project's reader returns it.
    """

    seed: int
    index: int
    stored: npt.NDArray[np.uint16]
    pixels: npt.NDArray[np.float32]
    window: tuple[float, float]
    vertebrae: tuple[VertebraTruth, ...]
    header: HeaderPlan
    read: ReadPlan
    scene: Scene = field(repr=False)

    @property
    def fractured_levels(self) -> tuple[str, ...]:
        """Levels with a fracture, cranial to caudal."""
        return tuple(v.level for v in self.vertebrae if v.label)


@dataclass(frozen=True)
class VertebraCrop:
    """A crop around one box, for training without files."""

    pixels: npt.NDArray[np.float32]  # display values [0, 1], bone bright
    truth: VertebraTruth
    study_uid: str
    offset: tuple[int, int]  # (x, y) of the crop's top-left corner in the image


def stream_rng(seed: int, index: int, *stream: int) -> np.random.Generator:
    """The generator of one random stream of study ``index`` in the world ``seed``.

    Every draw site has its own ``stream`` path (numpy ``SeedSequence([seed, index, *stream])``),
    so a new draw in one place leaves every other draw unchanged.
    """
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, index, *stream]))


def uid(seed: int, *parts: object) -> str:
    """A deterministic ``2.25`` UID (PS3.5 B.2: a UUID as a decimal integer) from the seed and a
    path of names; a 122-bit hash, so distinct paths do not collide in practice."""
    text = "\x1f".join(["tlaudit-synth", str(seed), *map(str, parts)])
    value = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:16], "big") >> 6
    return f"2.25.{value}"


def generate_study(seed: int, index: int = 0, config: SynthConfig | None = None) -> SynthStudy:
    """Generate lateral study ``index`` of the world ``seed``.

    Parameters
    ----------
    seed
        World seed; the same ``(seed, index, config)`` always gives the same study.
    index
        Study number within the world.
    config
        World configuration (defaults to :class:`SynthConfig()`).

    Returns
    -------
    SynthStudy
        Pixels, per-vertebra truth (boxes ordered cranial to caudal), read and header plan.
    """
    config = config or SynthConfig()
    top = stream_rng(seed, index, 0)
    fractured = bool(top.random() < config.fracture_study_rate)
    scene: Scene | None = None
    truths: tuple[VertebraTruth, ...] = ()
    for attempt in range(12):
        scene = sample_scene(stream_rng(seed, index, 1, attempt), config, fractured)
        truths = _truth(scene)
        if _acceptable(scene, truths):
            break
    assert scene is not None
    maps = render_maps(scene, stream_rng(seed, index, 2))
    formed = form_image(scene, maps, stream_rng(seed, index, 3), [t.box for t in truths])
    header = _header(seed, index, scene, stream_rng(seed, index, 4), config)
    read = _read(truths, scene, stream_rng(seed, index, 5), config)
    if read.present:
        # the report text draws from a stream of its own: adding it changed no other draw
        report = write_report(
            tuple(t.level for t in truths),
            read.reported_levels,
            read.overcalled_levels,
            stream_rng(seed, index, 7),
        )
        read = replace(
            read, report=report.text, report_language=report.language, report_truth=report.truth
        )
    return SynthStudy(
        seed, index, formed.stored, formed.display, formed.window, truths, header, read, scene
    )


def _acceptable(scene: Scene, truths: tuple[VertebraTruth, ...]) -> bool:
    if not 4 <= len(truths) <= 9:
        return False
    boxed = {t.level: t for t in truths}
    for plan in scene.vertebrae:
        if plan.fracture is not None:
            t = boxed.get(plan.level)
            if t is None or t.partial:
                return False
    return True


def _truth(scene: Scene) -> tuple[VertebraTruth, ...]:
    grid = scene.grid
    rect = exposed_rect(grid, scene.acquisition.collimation)
    rect = (max(rect[0], 0.0), max(rect[1], 0.0), min(rect[2], grid.cols), min(rect[3], grid.rows))
    out = []
    for plan in scene.vertebrae:
        if plan.level not in BOXED_LEVELS:
            continue
        body = plan.body
        outline = body.projected_shape().outline(32)
        px, py = grid.patient_to_pixel(*body.to_patient(outline[:, 0], outline[:, 1]))
        poly = np.stack([px, py], axis=1)
        full = polygon_area(poly)
        seen = clip_polygon(poly, rect)
        frac = polygon_area(seen) / full if full > 0 else 0.0
        if frac < MIN_VISIBLE or len(seen) < 3:
            continue
        box = (
            float(seen[:, 0].min()),
            float(seen[:, 1].min()),
            float(seen[:, 0].max()),
            float(seen[:, 1].max()),
        )
        if box[3] - box[1] < 6 or box[2] - box[0] < 6:
            continue
        out.append(_vertebra_truth(plan, grid, box, frac))
    return tuple(out)


def _vertebra_truth(
    plan: VertebraPlan, grid: object, box: tuple[float, float, float, float], frac: float
) -> VertebraTruth:
    from auditor.synth.grid import Grid

    assert isinstance(grid, Grid)
    shape = plan.body.shape
    ra, rm = shape.height_ratios()
    loss = height_loss(shape)
    spec: FractureSpec | None = plan.fracture
    zone: tuple[tuple[float, float], ...] = ()
    if spec is not None and shape.zone:
        z = np.asarray(shape.zone, float)
        zx, zy = grid.patient_to_pixel(*plan.body.to_patient(z[:, 0], z[:, 1]))
        clipped = clip_polygon(np.stack([zx, zy], axis=1), box)
        zone = tuple((round(float(a), 2), round(float(b), 2)) for a, b in clipped)
    return VertebraTruth(
        level=plan.level,
        box=tuple(round(v, 2) for v in box),  # type: ignore[arg-type]
        label=int(spec is not None),
        ao_type=spec.ao_type if spec else "",
        genant_grade=genant_grade(loss) if spec else 0,
        height_ratio_anterior=round(ra, 4),
        height_ratio_middle=round(rm, 4),
        height_loss=round(loss, 4),
        zone=zone,
        partial=frac < PARTIAL_BELOW,
        visible_fraction=round(frac, 4),
        variants=plan.variants,
    )


# -- header ---------------------------------------------------------------------------------
_DESCRIPTIONS = {
    "lumbar": (
        "L-SPINE LAT",
        "LUMBAR SPINE LATERAL",
        "LSPINE LAT",
        "Lumbar spine lat.",
        "XR L SPINE LAT",
    ),
    "thoracolumbar": (
        "T-L SPINE LAT",
        "THORACOLUMBAR LAT",
        "TL JUNCTION LATERAL",
        "Spine thoracolumbar lateral",
        "TLS LAT",
    ),
    "lower_thoracic": (
        "T-SPINE LAT",
        "THORACIC SPINE LATERAL",
        "DORSAL SPINE LAT",
        "Thoracic spine lat",
    ),
    "long": (
        "T-L SPINE LAT",
        "SPINE THORACOLUMBAR LATERAL",
        "WHOLE SPINE LAT SEGMENT",
        "LSPINE LAT",
    ),
}
_STUDY_DESCRIPTIONS = (
    "XR SPINE LUMBAR 2-3 VIEWS",
    "DX L-SPINE",
    "ER TRAUMA SPINE",
    "XR THORACOLUMBAR SPINE",
    "XR T-SPINE 2 VIEWS",
    "Spine^Trauma",
    "",
)
_PROTOCOLS = ("LSPINE_LAT", "L-Spine lat", "Trauma TL lat", "TSPINE LAT", "Spine Lateral", "")
_BODY_PARTS = {
    "lumbar": ("LSPINE", "LSPINE", "SPINE"),
    "thoracolumbar": ("SPINE", "LSPINE", "TSPINE"),
    "lower_thoracic": ("TSPINE", "TSPINE", "SPINE"),
    "long": ("SPINE", "LSPINE"),
}
TRANSFER_SYNTAXES_COMPRESSED = (
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
)
TRANSFER_SYNTAXES_PLAIN = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


def fake_date(rng: np.random.Generator) -> str:
    """A study date in 2018-2024 (YYYYMMDD)."""
    day = np.datetime64("2018-01-01") + np.timedelta64(int(rng.integers(0, 7 * 365)), "D")
    return str(day).replace("-", "")


def _header(
    seed: int, index: int, scene: Scene, rng: np.random.Generator, config: SynthConfig
) -> HeaderPlan:
    kind = scene.field.kind
    acq = scene.acquisition
    body_part = str(rng.choice(_BODY_PARTS[kind])) if rng.random() > 0.15 else ""
    view = str(rng.choice(["LL", "LL", "RL", "LAT", "LAT", ""]))
    description = str(rng.choice(_DESCRIPTIONS[kind]))
    if rng.random() < 0.08 and body_part and view:
        description = str(
            rng.choice(["LWS seitlich", "RACHIS LOMBAIRE PROFIL", "COLUMNA LUMBAR LAT"])
        )
    study_date = fake_date(rng)
    age = int(scene.patient.age)
    birth_year = int(study_date[:4]) - age
    compressed = rng.random() < config.compressed_share
    syntax = str(
        rng.choice(TRANSFER_SYNTAXES_COMPRESSED if compressed else TRANSFER_SYNTAXES_PLAIN)
    )
    if config.uncompressed:
        syntax = TRANSFER_SYNTAXES_PLAIN[0]  # Explicit VR Little Endian
    return HeaderPlan(
        patient_name=f"SYNTHETIC^PATIENT{index:05d}",
        patient_id=f"SYN{seed % 10000:04d}-{index:05d}",
        birth_date=f"{birth_year:04d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        sex=scene.patient.sex,
        study_date=study_date,
        study_time="".join(f"{int(rng.integers(0, n)):02d}" for n in (24, 60, 60)),
        accession_number=f"SA{seed % 10000:04d}{index:06d}",
        study_uid=uid(seed, index, "study"),
        series_uid=uid(seed, index, "series", 1),
        sop_uid=uid(seed, index, "instance", 1),
        modality=acq.modality,
        body_part=body_part,
        view_position=view,
        series_description=description,
        study_description=str(rng.choice(_STUDY_DESCRIPTIONS)),
        protocol_name=str(rng.choice(_PROTOCOLS)) if rng.random() < 0.8 else description,
        transfer_syntax=syntax,
        series_number=int(rng.integers(1, 4)),
        instance_number=1,
    )


# -- the original read -----------------------------------------------------------------------
_NEGATIVE = (
    "No acute fracture or malalignment of the thoracolumbar spine.",
    "No acute osseous abnormality.",
    "Vertebral body heights are maintained. No fracture.",
    "Negative lateral spine radiograph.",
    "Alignment normal. No definite acute fracture.",
    "Limited by body habitus and overlying bowel gas. No definite fracture.",
)


def _describe(truth: VertebraTruth) -> str:
    loss = int(round(100 * truth.height_loss / 5.0) * 5)
    if truth.ao_type in ("A3", "A4"):
        return f"Burst fracture of {truth.level} with about {loss}% height loss; CT recommended."
    if truth.ao_type == "A2":
        return f"Split fracture of the {truth.level} vertebral body."
    if truth.ao_type == "B":
        return f"Fracture of {truth.level} with posterior distraction; flexion-distraction injury?"
    if truth.ao_type == "C":
        return f"Fracture-dislocation at {truth.level} with translation."
    if truth.genant_grade == 1:
        return f"Mild anterior wedge deformity of {truth.level}, likely acute compression fracture."
    return f"Compression fracture of {truth.level} with approximately {loss}% anterior height loss."


def _read(
    truths: tuple[VertebraTruth, ...], scene: Scene, rng: np.random.Generator, config: SynthConfig
) -> ReadPlan:
    present = not rng.random() < config.no_read_rate
    fractured = [t for t in truths if t.label]
    degenerated = any("degenerated_disc" in t.variants for t in truths)
    tail = " Degenerative disc disease." if degenerated and rng.random() < 0.6 else ""
    if not fractured:
        if rng.random() < config.overcall_rate:
            normal = [t for t in truths if not t.partial]
            pick = normal[int(rng.integers(0, len(normal)))] if normal else truths[0]
            text = f"Possible compression deformity of {pick.level}; correlate with CT."
            return ReadPlan(present, True, (pick.level,), text, (), (pick.level,))
        return ReadPlan(present, False, (), str(rng.choice(_NEGATIVE)) + tail, (), ())
    if rng.random() < config.miss_rate:
        if len(fractured) > 1 and rng.random() < 0.5:
            # Miss the subtlest level, report the rest.
            missed = min(fractured, key=lambda t: (t.height_loss, t.level))
            reported = [t for t in fractured if t is not missed]
            text = " ".join(_describe(t) for t in reported) + tail
            return ReadPlan(
                present, True, tuple(t.level for t in reported), text, (missed.level,), ()
            )
        return ReadPlan(
            present,
            False,
            (),
            str(rng.choice(_NEGATIVE)) + tail,
            tuple(t.level for t in fractured),
            (),
        )
    text = " ".join(_describe(t) for t in fractured) + tail
    return ReadPlan(present, True, tuple(t.level for t in fractured), text, (), ())


# -- crops for training -----------------------------------------------------------------------
def crop_box(
    pixels: npt.NDArray[np.float32], box: tuple[float, float, float, float], margin: float
) -> tuple[npt.NDArray[np.float32], tuple[int, int]]:
    """Crop ``box`` plus a fractional ``margin`` from an image (clipped to the image)."""
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    rows, cols = pixels.shape
    c0, r0 = max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my)))
    c1, r1 = min(cols, int(np.ceil(x1 + mx))), min(rows, int(np.ceil(y1 + my)))
    return pixels[r0:r1, c0:c1].copy(), (c0, r0)


def iter_vertebra_crops(
    seed: int,
    studies: range | int,
    config: SynthConfig | None = None,
    include_partial: bool = False,
) -> Iterator[VertebraCrop]:
    """Yield a crop per boxed vertebra of studies ``studies`` of world ``seed``, without files.

    Parameters
    ----------
    seed
        World seed.
    studies
        Study indices (a ``range``) or a count starting at 0.
    config
        World configuration; ``config.crop_margin`` sets the margin around each box.
    include_partial
        Also yield bodies cut by the image edge.
    """
    config = config or SynthConfig()
    indices = range(studies) if isinstance(studies, int) else studies
    for index in indices:
        study = generate_study(seed, index, config)
        for truth in study.vertebrae:
            if truth.partial and not include_partial:
                continue
            crop, offset = crop_box(study.pixels, truth.box, config.crop_margin)
            yield VertebraCrop(crop, truth, study.header.study_uid, offset)
