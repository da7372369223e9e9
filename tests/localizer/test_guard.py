"""The localizer's domain guard (issue 21): the distance of the localizing forward pass, the
guard's record validated on load, bundles without one, and the refusal of foreign images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from auditor.errors import BundleError, UsageError
from auditor.localizer import Localizer, load_localizer
from auditor.localizer.bundle import CARD_FILE, load_localizer_bundle
from auditor.localizer.guard import (
    DEFAULT_PARTS,
    OUT_OF_DISTRIBUTION_REASON,
    fit_localizer_guard,
    image_distances,
    write_localizer_guard,
)
from auditor.localizer.guard_fit import fit_guard_on_localizer
from auditor.model.guard import GUARD_FILE
from auditor.resources import resource_path
from tests.helpers import negatives
from tests.helpers.dicom_files import make_dicom

BUNDLED = resource_path("models", "localizer-v2")


def _views(n: int, seed: int) -> list[npt.NDArray[np.float32]]:
    """Stand-in lateral views (the tests' toy world; enough for statistics, not boxes)."""
    from tests.helpers.toy_localizer import toy_image

    rng = np.random.default_rng(seed)
    return [toy_image(rng).pixels for _ in range(n)]


@pytest.fixture(scope="module")
def plain() -> Localizer:
    """The bundled network without a guard."""
    bundle = load_localizer_bundle(None)
    return Localizer(bundle.net, bundle.card, bundle.path)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the bundled localizer, guard included."""
    return Path(shutil.copytree(BUNDLED, tmp_path / "localizer"))


@pytest.mark.numerics
def test_the_distance_is_the_float64_mahalanobis_of_the_stage_statistics(
    plain: Localizer,
) -> None:
    # fit on one set of views, then the localizing pass (hooks) against a hand computation in
    # float64 from statistics taken in a separate pass: within 1e-4 relative (float32 storage
    # and arithmetic; measured 2e-6)
    stages = tuple(p.stage for p in DEFAULT_PARTS)
    fit = plain.stage_statistics(_views(24, 0), stages)
    held = plain.stage_statistics(_views(12, 1), stages)
    guard = fit_localizer_guard(fit, held)
    images = _views(6, 2)
    guarded = Localizer(plain.net, plain.card, guard=guard)
    measured = np.array([r.distance for r in guarded.locate_batch(images)], dtype=np.float64)

    x = plain.stage_statistics(images, stages)[DEFAULT_PARTS[0].stage].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    part = guard.parts[0]
    residual = x - part.centres.astype(np.float64)[0]
    inverse = np.linalg.inv(part.covariance.astype(np.float64))
    expected = np.sqrt(np.einsum("nd,de,ne->n", residual, inverse, residual)) / part.scale
    np.testing.assert_allclose(measured, expected, rtol=1e-4)
    # one image alone gives the distance it gets in a batch
    alone = guarded.locate(images[3]).distance
    assert alone == pytest.approx(measured[3], rel=1e-4)


def test_the_image_check_alone_gives_the_localizing_pass_s_distances() -> None:
    # with a box file only the guard's stages run (auditor.model.taps.outputs_until); the
    # distances must be the ones locate_batch gives (float32 on either path: 1e-5 relative)
    localizer = load_localizer()
    assert localizer.guard is not None
    images = [*_views(3, 5), negatives.noise(1)]
    located = [r.distance for r in localizer.locate_batch(images)]
    canvases = localizer._canvases(images)[0]
    alone = image_distances(localizer.net, canvases, localizer.guard)
    np.testing.assert_allclose(alone, np.array(located, dtype=np.float64), rtol=1e-5)
    assert bool(alone[-1] > localizer.guard.threshold)  # the noise is refused here too


def test_the_threshold_is_the_quantile_of_the_held_out_images(plain: Localizer) -> None:
    stages = tuple(p.stage for p in DEFAULT_PARTS)
    fit = plain.stage_statistics(_views(24, 0), stages)
    held = plain.stage_statistics(_views(40, 1), stages)
    guard = fit_localizer_guard(fit, held, quantile=0.9)
    distances = guard.distances(held)
    assert guard.threshold == pytest.approx(float(np.quantile(distances, 0.9)), rel=1e-5)
    assert "0.9 quantile of 40 held-out training-world images" in guard.describe()


def test_the_bundled_localizer_has_a_guard_that_refuses_noise_and_keeps_views() -> None:
    localizer = load_localizer()
    assert localizer.guard is not None
    assert localizer.guard.stages == ("u3",)
    for seed in range(3):
        result = localizer.locate(negatives.noise(seed))
        assert result.out_of_distribution and result.boxes == ()
        assert result.reason == OUT_OF_DISTRIBUTION_REASON
        assert result.distance is not None and result.distance > localizer.guard.threshold


def test_a_bundle_without_a_guard_still_loads_and_localizes(copy: Path) -> None:
    card = json.loads((copy / CARD_FILE).read_text())
    del card["guard"]
    (copy / CARD_FILE).write_text(json.dumps(card))
    (copy / GUARD_FILE).unlink()
    localizer = load_localizer(copy)
    assert localizer.guard is None
    result = localizer.locate(negatives.noise(0))
    assert result.distance is None and not result.out_of_distribution


def _edit(record: dict[str, Any], path: str, value: Any) -> None:
    *keys, last = path.split(".")
    target: Any = record
    for key in keys:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("method", "mahalanobis", "method 'mahalanobis'"),
        ("file", "../weights.safetensors", "expected 'guard.safetensors'"),
        ("sha256", "0" * 64, "SHA-256"),
        ("parts", [], "parts must be a list"),
        ("parts", "u3", "parts must be a list"),
        ("parts.0.stage", "layer3", "reads stage 'layer3'"),
        ("parts.0.statistics", "mean", "measures 96 numbers of u3; its mean has 48"),
        ("parts.0.statistics", "median", "statistics 'median'"),
        ("parts.0.features", 95, "records 1 x 95 centres"),
        ("parts.0.scale", -1.0, "scale -1.0"),
        ("parts.0.scale", True, "malformed stage or scale"),
        ("parts.0.normalised", "yes", "normalised 'yes'"),
        ("parts.0.extra", 1, "keys"),
        ("threshold", float("nan"), "threshold nan"),
        ("threshold", True, "threshold True"),
        ("threshold", _DELETE, "malformed"),
        ("quantiles", {"0.5": 2.0, "0.9": 1.0}, "decrease"),
        ("archive_share", 0.0, "archive_share"),
        ("fitted_on", [], "fitted_on must be a JSON object"),
    ],
)
def test_malformed_guard_records_are_refused(copy: Path, path: str, value: Any, match: str) -> None:
    card = json.loads((copy / CARD_FILE).read_text())
    _edit(card["guard"], path, value)
    (copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError, match=match):
        load_localizer_bundle(copy)


def test_a_guard_record_that_is_not_an_object_or_lost_its_file_is_refused(copy: Path) -> None:
    card = json.loads((copy / CARD_FILE).read_text())
    (copy / CARD_FILE).write_text(json.dumps({**card, "guard": [1, 2]}))
    with pytest.raises(BundleError, match="must be a JSON object"):
        load_localizer_bundle(copy)
    (copy / CARD_FILE).write_text(json.dumps(card))
    (copy / GUARD_FILE).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_localizer_bundle(copy)


def test_a_guard_for_another_width_is_refused(copy: Path, plain: Localizer) -> None:
    # a guard fitted on a width-12 network, stored with a card that says width 16
    card = json.loads((copy / CARD_FILE).read_text())
    card["width"] = 16
    (copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError):
        load_localizer_bundle(copy)


def test_write_then_read_round_trips_and_none_removes(copy: Path, plain: Localizer) -> None:
    stages = tuple(p.stage for p in DEFAULT_PARTS)
    guard = fit_localizer_guard(
        plain.stage_statistics(_views(24, 0), stages),
        plain.stage_statistics(_views(12, 1), stages),
        source="toy views",
    )
    weights = (copy / "weights.safetensors").read_bytes()
    write_localizer_guard(copy, copy / CARD_FILE, guard)
    loaded = load_localizer_bundle(copy).guard
    assert loaded is not None
    assert loaded.threshold == guard.threshold and loaded.fitted_on["source"] == "toy views"
    np.testing.assert_array_equal(loaded.parts[0].covariance, guard.parts[0].covariance)
    write_localizer_guard(copy, copy / CARD_FILE, None)
    assert load_localizer_bundle(copy).guard is None and not (copy / GUARD_FILE).exists()
    assert (copy / "weights.safetensors").read_bytes() == weights


def _archive(root: Path, n: int) -> Path:
    """Lateral TL DICOMs of the toy world, one patient each."""
    for i, view in enumerate(_views(n, 5)):
        pixels = (view * 4000).astype(np.uint16)
        make_dicom(root / f"p{i}.dcm", pixels=pixels, extra={"PatientID": f"P{i:03d}"})
    return root


def test_fit_on_an_archive_stores_the_guard_and_leaves_the_weights(
    copy: Path, tmp_path: Path
) -> None:
    archive = _archive(tmp_path / "archive", 8)
    weights = (copy / "weights.safetensors").read_bytes()
    with pytest.raises(UsageError, match="already has a domain guard"):
        fit_guard_on_localizer(copy, archive)
    fitted = fit_guard_on_localizer(copy, archive, force=True, seed=3)
    assert (fitted.n_fit, fitted.n_heldout, fitted.n_patients) == (4, 4, 8)
    assert (copy / "weights.safetensors").read_bytes() == weights
    loaded = load_localizer(copy)
    assert loaded.guard is not None and loaded.guard.sha256 == fitted.guard.sha256


def test_fit_needs_two_patients(copy: Path, tmp_path: Path) -> None:
    archive = _archive(tmp_path / "archive", 1)
    with pytest.raises(UsageError, match="at least 2 patients"):
        fit_guard_on_localizer(copy, archive, force=True)


def test_the_guard_command_fits_a_localizer_and_refuses_annotations(
    copy: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from auditor.cli.app import app

    archive = _archive(tmp_path / "archive", 6)
    runner = CliRunner()
    # main() maps a UsageError to exit code 2; in-process the error itself comes back
    refused = runner.invoke(app, ["guard", "--task", "localizer", str(copy), str(archive)])
    assert isinstance(refused.exception, UsageError) and "--force" in str(refused.exception)
    args = ["guard", "--task", "localizer", str(copy), str(archive), "--force", "--seed", "1"]
    done = runner.invoke(app, [*args, "--source", "toy archive"])
    assert done.exit_code == 0, done.output
    output = " ".join(done.output.split())  # rich wraps lines at the terminal's width
    assert "fitted on 3 images" in output and "3 held-out images (6 patients)" in output
    guard = load_localizer_bundle(copy).guard
    assert guard is not None and guard.fitted_on["source"] == "toy archive"
    assert (guard.fitted_on["n_fit"], guard.fitted_on["n_heldout"]) == (3, 3)
    box_file = tmp_path / "boxes.csv"
    box_file.write_text("image,level,x_min,y_min,x_max,y_max\n")
    mixed = runner.invoke(app, [*args, "--annotations", str(box_file)])
    assert isinstance(mixed.exception, UsageError)
    assert "takes no --annotations" in str(mixed.exception)
