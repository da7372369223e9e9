"""Model bundles: round trip, headline, refusal of foreign or tampered bundles."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision import models

from auditor.errors import BundleError
from auditor.model.bundle import (
    CARD_FILE,
    WEIGHTS_FILE,
    ModelCard,
    OperatingPoint,
    create_untrained_bundle,
    load_bundle,
    save_bundle,
)
from auditor.model.network import build_network


def test_round_trip_keeps_card_and_weights(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = build_network("resnet18")
    card = ModelCard(
        name="unit",
        architecture="resnet18",
        input_size=32,
        crop_margin=0.2,
        operating_points={
            "balanced": OperatingPoint("balanced", 0.41, 0.93, 0.95),
            "sensitive": OperatingPoint("sensitive", 0.2, 0.97, 0.8),
        },
        training={"source": "unit test", "n_crops": 12},
        metrics={"test": {"auc": 0.9}},
    )
    path = save_bundle(tmp_path / "b", card, net)
    bundle = load_bundle(path)
    assert bundle.card == card
    assert len(bundle.sha256) == 64
    loaded = bundle.build_model()
    assert not loaded.training
    for key, value in net.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(loaded.state_dict()[key], value.half().float())
    line = card.headline()
    assert "unit" in line and "resnet18" in line and "balanced" in line and "0.410" in line
    # the card.json path works as well as the folder
    assert load_bundle(path / CARD_FILE).sha256 == bundle.sha256


def test_card_is_strict_json_with_marker_and_hash(tmp_path: Path) -> None:
    path = create_untrained_bundle(tmp_path / "u", input_size=32)
    data = json.loads((path / CARD_FILE).read_text())  # NaN would not be strict JSON
    assert data["format"] == "tlaudit-model-bundle"
    assert data["operating_points"]["balanced"]["sensitivity"] is None
    assert len(data["sha256"]) == 64


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    path = create_untrained_bundle(tmp_path / "u", input_size=32)
    weights = path / WEIGHTS_FILE
    raw = bytearray(weights.read_bytes())
    raw[-10] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="SHA-256"):
        load_bundle(path)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("format"), "format marker"),
        (lambda d: d.update(architecture="alexnet"), "architecture"),
        (lambda d: d.pop("input_size"), "malformed"),
        (lambda d: d.update(format_version=99), "newer"),
    ],
)
def test_foreign_cards_are_refused(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], object], match: str
) -> None:
    path = create_untrained_bundle(tmp_path / "u", input_size=32)
    card = path / CARD_FILE
    data = json.loads(card.read_text())
    mutate(data)
    card.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=match):
        load_bundle(path)


def test_missing_or_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="not a tlaudit model bundle"):
        load_bundle(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / CARD_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="cannot read"):
        load_bundle(tmp_path / "junk")


@pytest.mark.parametrize(("stride", "side"), [(32, 2), (16, 4), (8, 8)])
def test_feature_stride_sets_the_heatmap_grid(stride: int, side: int) -> None:
    from auditor.model.cam import resnet_features

    net = build_network("resnet18", feature_stride=stride).eval()
    with torch.no_grad():
        assert resnet_features(net, torch.zeros(1, 3, 64, 64)).shape == (1, 512, side, side)
    card = ModelCard(
        name="grid", architecture="resnet18", input_size=64, crop_margin=0.15, feature_stride=stride
    )
    assert card.heatmap_grid == side
    # same tensors and shapes at every stride, so weights move between strides
    plain = build_network("resnet18")
    assert {k: v.shape for k, v in net.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }


def test_feature_stride_round_trips_and_old_cards_default_to_32(tmp_path: Path) -> None:
    path = create_untrained_bundle(tmp_path / "s8", input_size=64, feature_stride=8)
    bundle = load_bundle(path)
    assert bundle.card.feature_stride == 8
    assert "8x8 heatmap grid" in bundle.card.headline()
    net = bundle.build_model()
    assert isinstance(net, models.ResNet)
    assert net.layer3[0].conv1.stride == (1, 1) and net.layer4[0].conv1.stride == (1, 1)

    data = json.loads((path / CARD_FILE).read_text())
    data.pop("feature_stride")
    assert ModelCard.from_json(data).feature_stride == 32
    data["feature_stride"] = 4
    with pytest.raises(BundleError, match="feature_stride"):
        ModelCard.from_json(data)
    with pytest.raises(ValueError, match="resnet18 only"):
        build_network("vgg16", feature_stride=16)


def test_training_data_is_optional_validated_and_written_only_when_stated(tmp_path: Path) -> None:
    path = create_untrained_bundle(tmp_path / "u", input_size=32)
    data = json.loads((path / CARD_FILE).read_text())
    assert "training_data" not in data  # a card that does not state it is written as before
    card = ModelCard.from_json(data)
    assert card.training_data == "" and "training_data" not in card.to_json()
    for kind in ("synthetic", "clinical"):
        stated = ModelCard.from_json({**data, "training_data": kind})
        assert stated.training_data == kind and stated.to_json()["training_data"] == kind
    for bad in ("patients", "Synthetic", 1, None):
        with pytest.raises(BundleError, match="training_data"):
            ModelCard.from_json({**data, "training_data": bad})


def test_bundled_model_says_it_was_trained_on_synthetic_data() -> None:
    assert load_bundle(None).card.training_data == "synthetic"
