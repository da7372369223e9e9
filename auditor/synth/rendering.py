"""Renderer settings: how strongly the image formation of :mod:`auditor.synth.imaging` departs
from the world the bundled models were trained on.

A :class:`RenderSetting` scales what :func:`auditor.synth.scene.sample_scene` draws for each
acquisition (the draws themselves are unchanged, so a seed gives the same patients, fractures,
boxes and reads under every setting; only the pixels differ) and adds a display gamma.
``tlaudit synth --render PRESET`` picks one of :data:`RENDER_SETTINGS`; the default leaves every
draw as it is and writes the same bytes as before settings existed.

The presets are meant to be foreign to a model trained on the default world (the domain guards'
measure, ``tlaudit guard-rates --renderer``), not to imitate a particular console.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from auditor.errors import UsageError
from auditor.vocab import RenderPreset


@dataclass(frozen=True)
class RenderSetting:
    """Factors on an acquisition's drawn values, and a display gamma.

    Parameters
    ----------
    edge_gain
        Factor on the unsharp-mask gain (drawn 0.3-1.1; 0 turns edge enhancement off).
    drc_gain
        Factor on the dynamic-range compression (drawn 0.6-0.85; 0 turns it off).
    bone_contrast
        Factor on the display difference between the vertebral bodies and the soft tissue beside
        them (drawn 0.2-0.32).
    blur
        Factor on the detector blur (drawn 0.5-1.4 stored pixels).
    scatter
        Factor on the scatter-to-primary ratio (drawn 0.25-1.3).
    counts
        Factor on the quanta per pixel (drawn 250-1400 per 0.13 mm pixel): below 1, noisier.
    gamma
        Exponent applied to the processed display values in [0, 1] (bone bright) after the tone
        curve: above 1 darkens the mid-tones, below 1 lightens them.
    """

    edge_gain: float = 1.0
    drc_gain: float = 1.0
    bone_contrast: float = 1.0
    blur: float = 1.0
    scatter: float = 1.0
    counts: float = 1.0
    gamma: float = 1.0

    def __post_init__(self) -> None:
        for name in ("edge_gain", "drc_gain", "bone_contrast", "blur", "scatter"):
            if getattr(self, name) < 0:
                raise UsageError(f"render setting {name} must be >= 0; got {getattr(self, name)}")
        for name in ("counts", "gamma"):
            if getattr(self, name) <= 0:
                raise UsageError(f"render setting {name} must be > 0; got {getattr(self, name)}")

    @property
    def is_default(self) -> bool:
        """Whether the setting leaves every draw as it is."""
        return self == RenderSetting()


#: The named settings of ``tlaudit synth --render``.
RENDER_SETTINGS: MappingProxyType[RenderPreset, RenderSetting] = MappingProxyType(
    {
        RenderPreset.DEFAULT: RenderSetting(),
        # An unprocessed, soft image: no edge enhancement and no dynamic-range compression, 40 %
        # of the bone contrast, 2.5 times the detector blur and twice the scatter.
        RenderPreset.FLAT: RenderSetting(
            edge_gain=0.0, drc_gain=0.0, bone_contrast=0.4, blur=2.5, scatter=2.0
        ),
        # An over-processed, underexposed image: four times the edge enhancement, 1.25 times the
        # dynamic-range compression, 1.8 times the bone contrast, a tenth of the quanta (25-140
        # per 0.13 mm pixel, visibly noisy), half the detector blur, mid-tones lightened
        # (gamma 0.6).
        RenderPreset.HARSH: RenderSetting(
            edge_gain=4.0,
            drc_gain=1.25,
            bone_contrast=1.8,
            blur=0.5,
            counts=0.1,
            gamma=0.6,
        ),
    }
)


def render_preset(value: RenderPreset | str) -> RenderPreset:
    """``value`` as a :class:`~auditor.vocab.RenderPreset` (a name is accepted).

    Raises
    ------
    UsageError
        When ``value`` names none of the presets.
    """
    try:
        return RenderPreset(value)
    except ValueError as err:
        names = ", ".join(p.value for p in RenderPreset)
        raise UsageError(f"unknown render preset {value!r}; expected one of {names}") from err


def render_setting(preset: RenderPreset | str) -> RenderSetting:
    """The setting of a named preset (:func:`render_preset` coerces and checks the name)."""
    return RENDER_SETTINGS[render_preset(preset)]
