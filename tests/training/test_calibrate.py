"""``tlaudit calibrate``: new operating points from a labelled set, weights untouched."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from auditor.cli import app as cli_app
from auditor.errors import UsageError
from auditor.model.bundle import create_untrained_bundle, load_bundle
from auditor.training.calibrate import calibrate_bundle
from auditor.training.metrics import choose_operating_points
from tests.helpers.train_world import make_world

# compares numbers between code paths: CI reruns it on AVX2 kernels and with bf16 for auto
pytestmark = pytest.mark.numerics

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("calib")
    archive, annotations = make_world(root / "world", n_studies=8, seed=4)
    bundle = create_untrained_bundle(root / "bundle", "resnet18", input_size=32, seed=2)
    return archive, annotations, bundle


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_calibrate_rechooses_points_and_keeps_the_weights(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    archive, annotations, bundle = world
    before = load_bundle(bundle)
    card_bytes = (bundle / "card.json").read_bytes()
    out = tmp_path / "calibrated"
    # 32 vertebrae are far below the minimum counts: forced, and the card says so
    result = calibrate_bundle(
        bundle, archive, annotations, out, device="cpu", precision="fp32", force=True
    )

    assert _sha(out / "weights.safetensors") == _sha(bundle / "weights.safetensors")
    after = load_bundle(out)
    assert after.sha256 == before.sha256
    # the points are exactly what the training rules give on these probabilities
    expected = choose_operating_points(result.labels, result.probs)
    assert after.card.operating_points == expected
    assert len(result.labels) == 32 and 0 < result.labels.sum() < 32
    calib = after.card.metrics["calibration"]
    assert calib["annotations_sha256"] == _sha(annotations)
    assert calib["n_crops"] == 32 and calib["n_groups"] == 4
    assert calib["forced"] is True and result.forced
    for name, check in result.checks.items():
        interval = calib["threshold_intervals"][name]
        assert interval["ci_low"] <= check.threshold <= interval["ci_high"]
        assert check.sensitivity.total == int(result.labels.sum())
        assert check.sensitivity.too_few == (check.sensitivity.total < 10)
    assert calib["previous_operating_points"]["balanced"]["threshold"] == pytest.approx(
        before.card.operating_points["balanced"].threshold
    )
    assert "calibration sens" in after.card.headline()
    assert "validation sens" in before.card.headline()
    # nothing else of the card changed
    assert after.card.input_size == before.card.input_size
    assert after.card.name == before.card.name
    # the input bundle is untouched
    assert (bundle / "card.json").read_bytes() == card_bytes


def test_calibrate_in_place_replaces_only_the_card(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    archive, annotations, bundle = world
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("weights.safetensors", "card.json"):
        (copy / name).write_bytes((bundle / name).read_bytes())
    weights_before = _sha(copy / "weights.safetensors")
    calibrate_bundle(copy, archive, annotations, copy, device="cpu", precision="fp32", force=True)
    assert _sha(copy / "weights.safetensors") == weights_before
    assert "calibration" in json.loads((copy / "card.json").read_text())["metrics"]


def test_calibrate_needs_both_classes(world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    archive, annotations, bundle = world
    with annotations.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] == "no_fracture"]
    only_negatives = tmp_path / "negatives.csv"
    with only_negatives.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(UsageError, match="fractured and unfractured"):
        calibrate_bundle(bundle, archive, only_negatives, tmp_path / "x", device="cpu", force=True)
    assert not (tmp_path / "x" / "card.json").exists()


def test_calibrate_command(world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    archive, annotations, bundle = world
    out = tmp_path / "cal"
    result = runner.invoke(
        cli_app.app,
        [
            "calibrate",
            str(bundle),
            str(archive),
            "--annotations",
            str(annotations),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--target",
            "0.9",
            "--force",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "below the minimum (--force)" in " ".join(result.output.split())
    assert "balanced" in result.output and "new threshold" in result.output
    card = load_bundle(out).card
    assert card.metrics["calibration"]["target"] == 0.9
    points = card.operating_points
    assert points["sensitive"].sensitivity >= 0.9 and points["specific"].specificity >= 0.9
    assert np.isfinite(points["balanced"].threshold)


def test_calibrate_refuses_a_small_set_without_force(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    archive, annotations, bundle = world
    out = tmp_path / "refused"
    args = ["calibrate", str(bundle), str(archive), "--annotations", str(annotations)]
    result = runner.invoke(cli_app.app, [*args, "--out", str(out), "--device", "cpu"])
    # a UsageError, which the console script's main turns into exit code 2
    assert isinstance(result.exception, UsageError), result.output
    n_fractures = sum(
        row["label"] == "fracture" for row in csv.DictReader(annotations.open(newline=""))
    )
    message = str(result.exception)
    assert f"{n_fractures} fractured and {32 - n_fractures} intact" in message
    assert "--force" in message
    assert not (out / "card.json").exists()  # nothing written
    with pytest.raises(UsageError, match=r"at least 30 and 100"):
        calibrate_bundle(bundle, archive, annotations, tmp_path / "lib", device="cpu")


def test_a_threshold_moved_beyond_its_interval_is_warned_about() -> None:
    from auditor.training.calibrate import PointCheck
    from auditor.training.intervals import proportion

    est = proportion([True] * 40)
    check = PointCheck("balanced", 0.98, 0.9, 0.99, est, est, previous=0.321)
    assert check.moved_beyond_interval
    inside = PointCheck("balanced", 0.35, 0.3, 0.4, est, est, previous=0.321)
    assert not inside.moved_beyond_interval
    assert not PointCheck("balanced", 0.35, 0.3, 0.4, est, est, previous=None).moved_beyond_interval
