"""``tlaudit train`` end to end on a tiny generated set (CPU, 32 px crops, a couple of epochs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torchvision import models
from typer.testing import CliRunner

from auditor.checksums import file_sha256
from auditor.cli import app as cli_app
from auditor.errors import UsageError
from auditor.model.bundle import create_untrained_bundle, load_bundle
from auditor.model.infer import Classifier
from auditor.model.network import build_network
from auditor.training.config import TrainConfig
from auditor.training.data import load_crop_set
from auditor.training.engine import balanced_sampler
from auditor.training.pretrained import imagenet_weights_location, resolve_pretrained
from auditor.training.train import train_bundle
from tests.helpers.train_world import make_world

# compares numbers between code paths: CI reruns it on AVX2 kernels and with bf16 for auto
pytestmark = pytest.mark.numerics

runner = CliRunner()


def _tiny(**changes: object) -> TrainConfig:
    """A one-epoch, one-thread run on 32 px crops without CV or test split; ``changes`` override."""
    base: dict[str, object] = {
        "pretrained": "none",
        "input_size": 32,
        "epochs": 1,
        "lr_grid": (0.001,),
        "batch_grid": (8,),
        "cv_folds": 0,
        "test_fraction": 0.0,
        "val_fraction": 0.3,
        "threads": 1,
    }
    return TrainConfig(**(base | changes))  # type: ignore[arg-type]


@pytest.mark.slow
def test_train_command_writes_a_bundle_that_loads_and_scores(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path / "world", n_studies=20)
    out = tmp_path / "bundle"
    args = [
        "train",
        str(archive),
        "--annotations",
        str(annotations),
        "--out",
        str(out),
        "--pretrained",
        "none",
        "--input-size",
        "32",
        "--epochs",
        "2",
        "--lr-grid",
        "0.001,0.0003",
        "--batch-grid",
        "16",
        "--cv-folds",
        "2",
        "--cv-epochs",
        "1",
        "--test-fraction",
        "0.2",
        "--val-fraction",
        "0.25",
        "--seed",
        "3",
        "--threads",
        "1",
    ]
    result = runner.invoke(cli_app.app, args)
    assert result.exit_code == 0, result.output
    assert "bundle written" in result.output and "final" in result.output

    bundle = load_bundle(out)
    card = bundle.card
    assert card.architecture == "resnet18" and card.input_size == 32
    assert set(card.operating_points) == {"balanced", "sensitive", "specific"}
    assert card.recipe["chosen_lr"] in (0.001, 0.0003)
    assert card.recipe["trainable_effective"] == "all"  # from scratch, every layer learns
    assert card.training["n_crops"] == 80 and card.training["by_class"]
    assert card.training["n_test"] > 0 and "test" in card.metrics
    assert card.versions["torch"] == torch.__version__

    with (out / "cv_results.csv").open() as fh:
        cv_rows = list(csv.DictReader(fh))
    assert len(cv_rows) == 2 * (2 + 1)  # two learning rates x (two folds + mean row)
    assert {r["fold"] for r in cv_rows} == {"1", "2", "mean"}
    history = list(csv.DictReader((out / "history.csv").open()))
    assert [r["epoch"] for r in history if r["fit"] == "final"] == ["1", "2"]
    log = (out / "train_log.txt").read_text()
    assert "cross-validation chose" in log and "split by patient" in log

    clf = Classifier(bundle, torch.device("cpu"), "fp32")
    data = load_crop_set(archive, annotations, card.input_size, card.crop_margin)
    pred = clf.predict(clf.preprocess(data.crops[:8]))
    assert pred.probs.shape == (8,) and np.all((pred.probs >= 0) & (pred.probs <= 1))
    assert pred.cams is not None and pred.cams.shape == (8, 32, 32)


def test_same_seed_same_split_and_weights(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path / "world", n_studies=8)
    cfg = _tiny(val_fraction=0.25, seed=5)
    a = train_bundle(archive, annotations, tmp_path / "a", cfg)
    b = train_bundle(archive, annotations, tmp_path / "b", cfg)
    assert a.card.training == b.card.training
    assert load_bundle(tmp_path / "a").sha256 == load_bundle(tmp_path / "b").sha256


def test_transfer_learning_freezes_all_but_the_last_two_blocks(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path / "world", n_studies=8)
    torch.manual_seed(0)
    start = build_network("resnet18").state_dict()
    weights = tmp_path / "start.pth"
    torch.save(start, weights)
    cfg = _tiny(pretrained=str(weights), lr_grid=(0.01,), val_fraction=0.25)
    train_bundle(archive, annotations, tmp_path / "b", cfg)
    trained = load_bundle(tmp_path / "b").build_model().state_dict()
    # frozen: stem and the first three stages, batch-norm statistics included
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer3.1.bn2.running_var"):
        torch.testing.assert_close(trained[key], start[key].half().float())
    # retrained: the last two residual blocks (layer4) and the new head
    for key in ("layer4.1.conv2.weight", "fc.weight"):
        assert not torch.allclose(trained[key], start[key].half().float())


def test_imagenet_without_cache_names_the_file_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    url, cached = imagenet_weights_location("resnet18")
    assert cached.parent == tmp_path / "hub" / "checkpoints"
    with pytest.raises(UsageError) as info:
        resolve_pretrained("imagenet", "resnet18", allow_download=False)
    message = str(info.value)
    assert cached.name in message and str(cached.parent) in message and url in message
    # a cached file is used without any network
    cached.parent.mkdir(parents=True)
    torch.save(build_network("resnet18").state_dict(), cached)
    state, desc = resolve_pretrained("imagenet", "resnet18")
    assert state is not None and "fc.weight" in state and cached.name in desc


def test_a_weights_file_is_named_by_its_hash(tmp_path: Path) -> None:
    # fine-tuning from a bundle: every bundle's file is called weights.safetensors, so the card
    # must say which one by its content
    path = tmp_path / "weights.safetensors"
    save_file(build_network("resnet18").state_dict(), str(path))
    state, desc = resolve_pretrained(str(path), "resnet18")
    assert state is not None and "fc.weight" in state
    assert desc == f"file weights.safetensors (SHA-256 {file_sha256(path)})"


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="architecture"):
        TrainConfig(architecture="alexnet")
    with pytest.raises(UsageError, match="cv-folds"):
        TrainConfig(cv_folds=1)
    with pytest.raises(UsageError, match="expected 'auto', 'imagenet', 'bundled', 'none'"):
        resolve_pretrained(str(tmp_path / "missing.pth"), "resnet18")
    archive, annotations = make_world(tmp_path / "world", n_studies=4)
    result = runner.invoke(
        cli_app.app,
        [
            "train",
            str(archive),
            "--annotations",
            str(annotations),
            "--out",
            str(tmp_path / "o"),
            "--lr-grid",
            "fast",
        ],
    )
    assert result.exit_code == 2 and "comma-separated" in result.output


def test_card_json_records_the_recipe(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path / "world", n_studies=6)
    cfg = _tiny()
    train_bundle(archive, annotations, tmp_path / "b", cfg)
    data = json.loads((tmp_path / "b" / "card.json").read_text())
    for key in ("epochs", "lr_grid", "plateau_patience", "plateau_factor", "augment", "seed"):
        assert key in data["recipe"]
    assert data["recipe"]["loss"].startswith("log-softmax + NLL")
    assert data["feature_stride"] == 32


def test_finer_stride_continues_from_a_stride_32_bundle(tmp_path: Path) -> None:
    """Weights keep their shapes across strides, so a stride-8 fit starts from a stride-32 one
    (here with box jitter too)."""
    archive, annotations = make_world(tmp_path / "world", n_studies=6)
    start = create_untrained_bundle(tmp_path / "start", input_size=32)
    cfg = _tiny(
        pretrained=str(start / "weights.safetensors"),
        trainable="all",
        feature_stride=8,
        box_jitter=0.1,
    )
    train_bundle(archive, annotations, tmp_path / "b", cfg)
    bundle = load_bundle(tmp_path / "b")
    assert bundle.card.feature_stride == 8 and bundle.card.recipe["feature_stride"] == 8
    assert bundle.card.recipe["box_jitter"] == 0.1
    assert (
        "box jitter: 2 extra crops per vertebra" in (tmp_path / "b" / "train_log.txt").read_text()
    )
    net = bundle.build_model()
    assert isinstance(net, models.ResNet)
    assert net.layer3[0].conv1.stride == (1, 1)
    with pytest.raises(UsageError, match="feature-stride"):
        TrainConfig(feature_stride=4)


def test_balanced_sampler_draws_both_classes_equally_often() -> None:
    labels = np.array([1] * 10 + [0] * 90)
    sampler = balanced_sampler(labels, torch.Generator().manual_seed(0))
    drawn = np.array(list(sampler))
    assert len(drawn) == 20 and len(set(drawn.tolist())) == 20  # no repeats within an epoch
    assert 5 <= labels[drawn].sum() <= 15


def test_zone_loss_is_minus_log_of_the_attention_inside_the_zone() -> None:
    from auditor.training.engine import zone_attention_loss

    features = torch.zeros((2, 2, 2, 2))
    features[:, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    features[:, 1] = 10.0  # a channel with negative fracture weight: left out by the relu
    weight = torch.tensor([1.0, -1.0])
    masks = torch.zeros((2, 1, 4, 4))
    masks[0, 0, 0:2, 2:4] = 1.0  # the whole top-right cell
    masks[0, 0, 2:4, 3] = 1.0  # half of the bottom-right cell; crop 1 has no zone
    loss, count = zone_attention_loss(features, weight, masks)
    p = np.exp([1.0, 2.0, 3.0, 4.0]) / np.exp([1.0, 2.0, 3.0, 4.0]).sum()
    assert count == 1
    assert float(loss) == pytest.approx(-np.log(p[1] + 0.5 * p[3]), rel=1e-5)
    none, zero = zone_attention_loss(features, weight, torch.zeros((2, 1, 4, 4)))
    assert zero == 0 and float(none) == 0.0


def test_zone_loss_training_logs_its_term_and_needs_zones(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path / "world", n_studies=6)
    cfg = _tiny(feature_stride=8, box_jitter=0.1, epochs=2, zone_loss=0.5)
    train_bundle(archive, annotations, tmp_path / "b", cfg)
    log = (tmp_path / "b" / "train_log.txt").read_text()
    n_frac = sum(1 for row in csv.DictReader(annotations.open()) if row["label"] == "fracture")
    assert f"zone loss x0.5: {n_frac} of {n_frac} fracture crops" in log
    rows = list(csv.DictReader((tmp_path / "b" / "history.csv").open()))
    assert len(rows) == 2 and all(0 < float(r["train_zone_loss"]) < 20 for r in rows)
    assert load_bundle(tmp_path / "b").card.recipe["zone_loss"] == 0.5

    # annotations without zone polygons cannot drive the loss
    plain = tmp_path / "plain.csv"
    table = list(csv.DictReader(annotations.open()))
    with plain.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows({**row, "fracture_zone": ""} for row in table)
    with pytest.raises(UsageError, match="zone-loss needs fracture-zone polygons"):
        train_bundle(archive, plain, tmp_path / "c", cfg)
    with pytest.raises(UsageError, match="resnet18 only"):
        TrainConfig(architecture="vgg16", zone_loss=1.0)
    with pytest.raises(UsageError, match="zone-loss must be"):
        TrainConfig(zone_loss=-1.0)


def test_the_zone_term_is_what_moves_the_weights(tmp_path: Path) -> None:
    """Same seed, same draws: a negligible zone weight trains the same network as none, a large
    one trains a different network (so the term reaches the optimiser)."""
    archive, annotations = make_world(tmp_path / "world", n_studies=6)

    def fc_weight(zone_loss: float, out: str) -> torch.Tensor:
        cfg = _tiny(feature_stride=8, box_jitter=0.1, seed=3, zone_loss=zone_loss)
        train_bundle(archive, annotations, tmp_path / out, cfg)
        net = load_bundle(tmp_path / out).build_model()
        assert isinstance(net, models.ResNet)
        return net.fc.weight.detach()

    none, tiny, large = fc_weight(0.0, "a"), fc_weight(1e-9, "b"), fc_weight(5.0, "c")
    # bundles store half-precision weights: one step of float16 rounding apart at most
    torch.testing.assert_close(tiny, none, atol=1e-4, rtol=0)
    assert (large - none).abs().max() > 1e-3  # ten times that


def test_a_time_limit_ends_the_fit_after_the_epoch_that_passes_it(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path / "world", n_studies=6)
    result = train_bundle(archive, annotations, tmp_path / "b", _tiny(epochs=3, max_minutes=0))
    rows = list(csv.DictReader((tmp_path / "b" / "history.csv").open()))
    assert len(rows) == 1 and result.card.recipe["max_minutes"] == 0
    log = (tmp_path / "b" / "train_log.txt").read_text()
    assert "time limit of 0 min reached after 1 epochs" in log
    assert "decoded and cut in" in log
    # a limit the run stays inside changes nothing
    train_bundle(archive, annotations, tmp_path / "c", _tiny(epochs=2, max_minutes=60))
    assert len(list(csv.DictReader((tmp_path / "c" / "history.csv").open()))) == 2
    with pytest.raises(UsageError, match="max-minutes"):
        TrainConfig(max_minutes=-1.0)


def test_a_preset_fills_every_option_not_given_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auditor.training.config import PRESETS

    seen: list[TrainConfig] = []

    def estimate(archive: Path, annotations: Path, config: TrainConfig, listener: object) -> None:
        seen.append(config)

    monkeypatch.setattr("auditor.training.train.estimate_training", estimate)
    archive, annotations = make_world(tmp_path / "world", n_studies=4)
    args = ["train", str(archive), "--annotations", str(annotations), "--out", str(tmp_path / "o")]
    result = runner.invoke(
        cli_app.app, [*args, "--preset", "quick", "--epochs", "3", "--estimate-only"]
    )
    assert result.exit_code == 0, result.output
    (config,) = seen
    quick = PRESETS["quick"]
    assert config.epochs == 3  # given here: it wins
    for key, value in quick.items():
        if key != "epochs":
            assert getattr(config, key) == value, key
