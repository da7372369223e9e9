"""The localizer bundle: save/load round trip, foreign or tampered bundles refused, recorded
figures; and locate() on any image shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.errors import BundleError
from auditor.localizer import LocalizerCard, load_localizer, save_localizer
from auditor.localizer.bundle import CARD_FILE, WEIGHTS_FILE
from auditor.localizer.network import LocalizerNet

# compares numbers between code paths: CI reruns it on AVX2 kernels and with bf16 for auto
pytestmark = pytest.mark.numerics


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = LocalizerNet(width=4)
    return save_localizer(net, LocalizerCard(name="tiny", width=4, working_size=64), tmp_path / "b")


def test_round_trip_gives_the_same_outputs(bundle: Path) -> None:
    loc = load_localizer(bundle)
    again = load_localizer(bundle)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        a, b = loc.net(x), again.net(x)
    for key in a:
        assert torch.equal(a[key], b[key])
    assert loc.card.name == "tiny" and loc.card.working_size == 64


def test_locate_accepts_any_shape_and_does_not_mutate(bundle: Path) -> None:
    loc = load_localizer(bundle)
    pixels = np.random.default_rng(0).random((300, 90)).astype(np.float32)
    before = pixels.copy()
    results = loc.locate_batch([pixels, pixels[:50]])
    assert len(results) == 2
    np.testing.assert_array_equal(pixels, before)
    for result in results:
        assert result.anchor in ("sacrum", "rib", "none")
        if not result.boxes:
            assert result.reason
    with pytest.raises(ValueError, match="2-D"):
        loc.locate(np.zeros((3, 4, 5), np.float32))


def _edit_card(bundle: Path, **changes: object) -> None:
    card = json.loads((bundle / CARD_FILE).read_text())
    card.update(changes)
    (bundle / CARD_FILE).write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format": "someone-else"}, "not a tlaudit localizer bundle"),
        ({"format_version": 99}, "format version"),
        ({"architecture": "yolo"}, "unknown localizer architecture"),
        ({"weights_sha256": "0" * 64}, "do not match the SHA-256"),
        ({"width": 8}, "do not fit"),
    ],
)
def test_foreign_or_tampered_bundles_are_refused(bundle: Path, change: dict, match: str) -> None:
    _edit_card(bundle, **change)
    with pytest.raises(BundleError, match=match):
        load_localizer(bundle)


def test_missing_files_are_refused(bundle: Path, tmp_path: Path) -> None:
    (bundle / WEIGHTS_FILE).unlink()
    with pytest.raises(BundleError, match="needs"):
        load_localizer(bundle)
    with pytest.raises(BundleError, match="does not exist"):
        load_localizer(tmp_path / "nowhere")


def test_recorded_figures_keep_the_weights_loadable(bundle: Path) -> None:
    from auditor.localizer.bundle import record_figures

    record_figures(bundle, {"recall": 0.5}, "a test set")
    card = load_localizer(bundle).card
    assert card.figures == {"dataset": "a test set", "recall": 0.5}
