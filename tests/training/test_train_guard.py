"""``tlaudit train`` fits the domain guard of the bundle it writes (issue 21)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.errors import UsageError
from auditor.model.bundle import create_untrained_bundle, load_bundle
from auditor.model.guard import GUARD_FILE, FeatureGuard
from auditor.model.infer import Classifier
from auditor.model.stage_guard import StageGuard
from auditor.training.config import TrainConfig
from auditor.training.data import load_crop_set
from auditor.training.guard import guard_from_crops
from auditor.training.train import train_bundle
from tests.helpers.train_world import make_world


def _tiny(**changes: object) -> TrainConfig:
    """One epoch on 32 px crops, no CV, no test split (as tests/training/test_train.py)."""
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
        "warmup_batches": 0,
    }
    return TrainConfig(**(base | changes))  # type: ignore[arg-type]


@pytest.mark.slow
def test_train_writes_a_guard_that_loads_and_scores_every_crop(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path / "world", n_studies=16)
    result = train_bundle(archive, annotations, tmp_path / "bundle", _tiny())

    assert (tmp_path / "bundle" / GUARD_FILE).is_file()
    bundle = load_bundle(tmp_path / "bundle")
    guard = bundle.card.guard
    assert guard is not None
    assert result.card.guard is not None
    assert guard.threshold == pytest.approx(result.card.guard.threshold)
    # fitted on the training split, its threshold on the validation split: together every crop
    n_crops = result.card.training["n_crops"]
    assert guard.fitted_on["n_fit"] == result.card.training["n_train"]
    assert guard.fitted_on["n_heldout"] == result.card.training["n_validation"]
    assert guard.fitted_on["n_fit"] + guard.fitted_on["n_heldout"] == n_crops
    # the default guard of a ResNet18: layer3's channel means and sds, one centre per class
    assert isinstance(guard, StageGuard) and guard.stages == ("layer3",)
    assert guard.parts[0].centres.shape == (2, 2 * 256)
    assert guard.quantiles["0.99"] == pytest.approx(guard.threshold)

    # the scan's forward pass gives each crop a distance; the threshold is the held-out 0.99
    # quantile and 70 % of the crops are the fit crops themselves, so most crops lie inside
    data = load_crop_set(archive, annotations, 32, bundle.card.crop_margin)
    classifier = Classifier(bundle, torch.device("cpu"), precision="fp32")
    prediction = classifier.predict(classifier.preprocess(data.crops), cam=False)
    assert prediction.distances is not None
    assert prediction.distances.shape == (len(data.crops),)
    assert np.isfinite(prediction.distances).all()
    assert guard.is_out(prediction.distances).mean() < 0.5


@pytest.mark.parametrize(
    ("method", "kind"),
    [(None, StageGuard), ("mahalanobis-stages", StageGuard), ("mahalanobis+l2", FeatureGuard)],
)
def test_guard_from_crops_fits_the_method_asked_for(
    tmp_path: Path, method: str | None, kind: type
) -> None:
    bundle = load_bundle(create_untrained_bundle(tmp_path / "b", input_size=32))
    rng = np.random.default_rng(0)
    crops = rng.random((40, 32, 32), dtype=np.float32)
    labels = np.arange(40, dtype=np.int64) % 2
    fit_idx, heldout_idx = np.arange(30), np.arange(30, 40)
    guard = guard_from_crops(
        bundle, crops, labels, fit_idx, heldout_idx, torch.device("cpu"), method=method
    )
    assert isinstance(guard, kind)
    assert guard.fitted_on["n_fit"] == 30 and guard.fitted_on["n_heldout"] == 10


def test_guard_from_crops_refuses_an_unknown_method(tmp_path: Path) -> None:
    bundle = load_bundle(create_untrained_bundle(tmp_path / "b", input_size=32))
    crops = np.zeros((4, 32, 32), np.float32)
    with pytest.raises(UsageError, match="unknown guard method 'energy'; expected one of"):
        guard_from_crops(
            bundle,
            crops,
            np.zeros(4, np.int64),
            np.arange(3),
            np.arange(3, 4),
            torch.device("cpu"),
            method="energy",
        )
