"""Crafted model and localizer cards are refused at load, with the field named; none runs code,
takes gigabytes, or gives silent nonsense (blank probabilities, no boxes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auditor.errors import BundleError
from auditor.localizer import LocalizerCard, load_localizer, save_localizer
from auditor.localizer.bundle import CARD_FILE as LOCALIZER_CARD
from auditor.localizer.network import LocalizerNet
from auditor.model.bundle import CARD_FILE, create_untrained_bundle, load_bundle

Edit = Callable[[dict[str, Any]], None]


def _set(key: str, value: object) -> Edit:
    def edit(card: dict[str, Any]) -> None:
        card[key] = value

    return edit


def _threshold(value: object) -> Edit:
    def edit(card: dict[str, Any]) -> None:
        for point in card["operating_points"].values():
            point["threshold"] = value

    return edit


@pytest.fixture(scope="module")
def model_card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_untrained_bundle(tmp_path_factory.mktemp("model") / "b", input_size=32)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_set("format_version", "abc"), "format_version 'abc'"),
        (_set("format_version", 1.5), "format_version 1.5"),
        (_set("input_size", 60000), "input_size 60000"),
        (_set("input_size", 8), "input_size 8"),
        (_set("crop_margin", float("nan")), "crop_margin nan"),
        (_set("crop_margin", 50.0), "crop_margin 50.0"),
        (_set("std", [float("nan"), 0.2, 0.2]), "three finite positive standard deviations"),
        (_set("mean", [float("inf"), 0.2, 0.2]), "three finite means"),
        (_set("std", [0.0, 0.2, 0.2]), "positive standard deviations"),
        (_threshold(float("nan")), "threshold nan"),
        (_threshold(2.0), "threshold 2.0"),
        (_threshold(-1.0), "threshold -1.0"),
    ],
)
def test_a_crafted_model_card_is_refused_naming_the_field(
    model_card: Path, tmp_path: Path, edit: Edit, match: str
) -> None:
    folder = tmp_path / "crafted"
    folder.mkdir()
    for item in model_card.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    card = json.loads((folder / CARD_FILE).read_text())
    edit(card)
    # json.dumps writes NaN and Infinity, as a crafted file may hold them
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError, match=match):
        load_bundle(folder)


@pytest.mark.parametrize("kind", ["model", "localizer"])
def test_a_deeply_nested_card_is_a_clean_error(
    model_card: Path, localizer: Path, tmp_path: Path, kind: str
) -> None:
    folder = tmp_path / kind
    folder.mkdir()
    for item in (model_card if kind == "model" else localizer).iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    name = CARD_FILE if kind == "model" else LOCALIZER_CARD
    (folder / name).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nested too deeply"):
        load_bundle(folder) if kind == "model" else load_localizer(folder)


@pytest.fixture(scope="module")
def localizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("localizer") / "loc"
    return save_localizer(LocalizerNet(width=4), LocalizerCard(name="tiny", width=4), folder)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("width", 4096),
        ("working_size", 0),
        ("working_size", "192"),
        ("score_threshold", float("nan")),
        ("score_threshold", 1.5),
        ("sacrum_threshold", -0.1),
        ("levels", ["C1", "C2"]),
    ],
)
def test_a_crafted_localizer_card_is_refused_naming_the_field(
    localizer: Path, tmp_path: Path, key: str, value: object
) -> None:
    folder = tmp_path / "crafted"
    folder.mkdir()
    for item in localizer.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    card = json.loads((folder / LOCALIZER_CARD).read_text())
    card[key] = value
    (folder / LOCALIZER_CARD).write_text(json.dumps(card))
    with pytest.raises(BundleError, match=f"localizer card {key}"):
        load_localizer(folder)
