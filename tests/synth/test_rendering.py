"""Renderer settings (``tlaudit synth --render``): the default world is unchanged, the presets
change the pixels and nothing else (issue 21)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from auditor.errors import UsageError
from auditor.synth import SynthConfig, generate_study
from auditor.synth.rendering import RENDER_SETTINGS, RenderSetting, render_setting
from auditor.vocab import RenderPreset

TINY = SynthConfig(max_side=300, distractor_rate=0)

#: sha256 of ``generate_study(3, i, TINY).stored``, recorded with the code before render settings
#: existed: the default setting must keep writing these bytes.
BEFORE_SETTINGS = {
    0: "747de4af615158b19fe6400993c27a3d8900e38f13ac41a9f099c6886ef9eebc",
    1: "a3c354b533dcfba14ad8d74d63022ce5d519929017d3ded22463e011779e0758",
}


@pytest.mark.parametrize("index", sorted(BEFORE_SETTINGS))
def test_the_default_setting_writes_the_bytes_it_wrote_before(index: int) -> None:
    stored = generate_study(3, index, TINY).stored
    assert hashlib.sha256(stored.tobytes()).hexdigest() == BEFORE_SETTINGS[index]
    named = generate_study(
        3, index, SynthConfig(max_side=300, distractor_rate=0, render=RenderPreset.DEFAULT)
    )
    assert np.array_equal(named.stored, stored)


@pytest.mark.parametrize("preset", [p for p in RenderPreset if p is not RenderPreset.DEFAULT])
def test_a_preset_changes_the_pixels_and_nothing_else(preset: RenderPreset) -> None:
    config = SynthConfig(max_side=300, distractor_rate=0, render=preset)
    for index in range(2):
        usual, other = generate_study(3, index, TINY), generate_study(3, index, config)
        assert other.vertebrae == usual.vertebrae  # boxes, labels, grades
        assert other.read == usual.read and other.header == usual.header
        assert other.stored.shape == usual.stored.shape
        # the display grey levels move by a tenth of the scale or more on average
        assert float(np.mean(np.abs(other.pixels - usual.pixels))) > 0.1
        setting = RENDER_SETTINGS[preset]
        acq, base = other.scene.acquisition, usual.scene.acquisition
        assert acq.gamma == setting.gamma
        assert acq.edge_gain == pytest.approx(base.edge_gain * setting.edge_gain)
        assert acq.counts == pytest.approx(base.counts * setting.counts)


def test_presets_are_coerced_and_checked() -> None:
    # strings from a command line or a script are coerced at the boundary
    assert SynthConfig(render="flat").render is RenderPreset.FLAT  # type: ignore[arg-type]
    assert render_setting("default").is_default
    assert not any(RENDER_SETTINGS[p].is_default for p in RenderPreset if p.value != "default")
    with pytest.raises(UsageError, match="unknown render preset 'film'; expected one of default"):
        SynthConfig(render="film")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="gamma must be > 0; got 0"):
        RenderSetting(gamma=0)
