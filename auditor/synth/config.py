"""Configuration of the synthetic world: every knob a caller may turn, with its documented default.

A :class:`SynthConfig` is passed explicitly to every stage (there is no global settings object). The
defaults give the world described in ``auditor/synth/__init__.py``; tests shrink ``max_side`` to
keep images small and fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from auditor.errors import UsageError
from auditor.synth.rendering import render_preset
from auditor.vocab import RenderPreset

#: Distractor kinds, in the order they are first dealt out (each appears once before any repeats).
DISTRACTOR_KINDS: tuple[str, ...] = (
    "ap_spine",
    "chest",
    "extremity",
    "ct_slice",
    "sr_report",
    "truncated",
    "non_dicom",
    "mr_slice",
)


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic world.

    Parameters
    ----------
    max_side
        Largest image side in pixels; the long side of each image is drawn from
        [0.72, 1.0] x ``max_side``. At the default (3000) pixel spacing stays within the
        0.1-0.2 mm that lateral spine detectors use; smaller values (tests, the bundled sample,
        fast training crops) keep the same field of view at a coarser spacing.
    fracture_study_rate
        Share of lateral studies with at least one fractured vertebra.
    multi_fracture_rate
        Share of fractured studies with more than one fractured vertebra.
    miss_rate
        Share of fractured studies whose original read misses a fracture (reads negative, or misses
        one of several levels): the planted missed fractures.
    no_read_rate
        Share of lateral studies with no row in ``reads.csv``.
    overcall_rate
        Share of non-fractured studies whose read reports a fracture that is not there.
    distractor_rate
        Number of distractor objects per lateral study (rounded); kinds are dealt out so that each
        of :data:`DISTRACTOR_KINDS` appears once before any repeats.
    compressed_share
        Share of lateral images written with a compressed transfer syntax.
    uncompressed
        Write every image in Explicit VR Little Endian whatever syntax was drawn for it: the same
        pixels and the same world otherwise (the draw still happens); no JPEG encoder needed.
    subtle_share
        Share of fractures drawn as A1 wedges of Genant grade 1, the subtlest kind (0: the usual
        mix only, and the same bytes as before the option existed).
    subtle_bare
        Those subtle wedges carry no secondary sign (cortical gap, condensation band, anterior
        bulge, endplate roughness): height loss alone, 20.5-24.5 % against physiologic wedging of
        up to 18 %. Later draws depend on the bodies' shapes, so the same seed gives another
        world than without it (deterministic all the same).
    wedge_variant_share
        Share of intact T7-L1 bodies whose physiologic wedging is deepened to 18-24.5 % height
        loss: the geometry of a grade-1 A1 wedge without any of a fracture's signs, labelled
        ``no_fracture`` with variant ``physiologic_wedge`` (0: none, and the same bytes as
        before the option existed). With it, height loss no longer separates grade-1 fractures
        from intact bodies; only the fracture's signs do.
    crop_margin
        Fractional margin added around a box by :func:`auditor.synth.iter_vertebra_crops`.
    render
        Renderer setting (:data:`auditor.synth.rendering.RENDER_SETTINGS`): ``default`` is the
        world the bundled models were trained on, and writes the same bytes as before the option
        existed; the others render the same draws (patients, fractures, boxes, reads) with a
        strongly different image formation.
    """

    max_side: int = 3000
    fracture_study_rate: float = 0.6
    multi_fracture_rate: float = 0.3
    miss_rate: float = 0.3
    no_read_rate: float = 0.06
    overcall_rate: float = 0.03
    distractor_rate: float = 0.15
    compressed_share: float = 0.6
    subtle_share: float = 0.0
    subtle_bare: bool = False
    wedge_variant_share: float = 0.0
    uncompressed: bool = False
    crop_margin: float = 0.15
    render: RenderPreset = RenderPreset.DEFAULT
    distractor_kinds: tuple[str, ...] = field(default=DISTRACTOR_KINDS)

    def __post_init__(self) -> None:
        # coerced at the boundary: a caller may pass the preset's name
        object.__setattr__(self, "render", render_preset(self.render))
        rates = {
            "fracture_study_rate": self.fracture_study_rate,
            "multi_fracture_rate": self.multi_fracture_rate,
            "miss_rate": self.miss_rate,
            "no_read_rate": self.no_read_rate,
            "overcall_rate": self.overcall_rate,
            "compressed_share": self.compressed_share,
            "subtle_share": self.subtle_share,
            "wedge_variant_share": self.wedge_variant_share,
        }
        for name, value in rates.items():
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"{name} must lie in [0, 1]; got {value}")
        if self.distractor_rate < 0:
            raise UsageError(f"distractor_rate must be >= 0; got {self.distractor_rate}")
        if self.max_side < 192:
            raise UsageError(f"max_side must be at least 192 pixels; got {self.max_side}")
        unknown = set(self.distractor_kinds) - set(DISTRACTOR_KINDS)
        if unknown:
            raise UsageError(
                f"unknown distractor kinds {sorted(unknown)}; expected some of {DISTRACTOR_KINDS}"
            )
