"""``tlaudit train``: the source study's recipe, grouped by patient, producing a model bundle.

Pipeline (:func:`train_bundle`, its options in :class:`~auditor.training.config.TrainConfig`):

1. cut every labelled vertebra once (:func:`auditor.training.data.load_crop_set`);
2. hold out a patient-grouped test split (``test_fraction``; 0 when a separate held-out set is
   used), and estimate the run's duration from a few timed batches
   (:mod:`auditor.training.estimate`);
3. choose learning rate and batch size by patient-grouped k-fold cross-validation on the training
   part (skipped when the grid has a single combination;
   :func:`auditor.training.loop.cross_validate`);
4. final fit with the chosen values on the training part, less a patient-grouped validation split
   that picks the best epoch, drives ReduceLROnPlateau and sets the operating points
   (:func:`auditor.training.loop.fit`, epoch by epoch with :mod:`auditor.training.engine`);
5. score validation and test crops with the half-precision weights that are saved, measure the
   test split with intervals (:func:`auditor.training.metrics.binary_metrics`), record the card's
   validation status with a warning when the test AUC's interval includes 0.5 or its value is
   under :data:`USEFUL_AUC`, and write the bundle with its card, the run log, the per-epoch
   history and the cross-validation table (:mod:`auditor.training.writer`).

The study's own recipe differs in two places, both recorded in the card: its split ignored patients,
and its final fit used the whole training set for a fixed 200 epochs.

Beyond the study, ``zone_loss`` (off by default) adds a term that pulls each fracture's evidence
into its annotated fracture zone (:func:`auditor.training.engine.zone_attention_loss`); the
study's heatmaps were unsupervised, so a model trained with it no longer measures what the study's
81 % measured.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from auditor.errors import UsageError
from auditor.model.bundle import ModelBundle, ModelCard, OperatingPoint
from auditor.model.infer import select_device
from auditor.model.network import build_network
from auditor.model.stage_guard import DomainGuard
from auditor.records import positives
from auditor.training.config import TrainConfig
from auditor.training.cv import check_disjoint, grouped_split
from auditor.training.data import CropSet, load_crop_set
from auditor.training.engine import class_weights, predict_scores, training_precision
from auditor.training.estimate import DurationEstimate, estimate_duration, plan_fits
from auditor.training.guard import guard_from_crops
from auditor.training.intervals import Estimate
from auditor.training.loop import cross_validate, fit
from auditor.training.metrics import (
    BinaryMetrics,
    Confusion,
    auc,
    binary_metrics,
    choose_operating_points,
)
from auditor.training.pretrained import resolve_pretrained
from auditor.training.progress import EpochRow, RunLog, SilentListener, TrainListener
from auditor.training.writer import as_stored, build_card, run_recipe, write_bundle

#: Below this test-split AUC a trained model is warned about (so is one whose AUC interval
#: includes 0.5).
USEFUL_AUC = 0.7


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_bundle` produced."""

    bundle_dir: Path
    card: ModelCard
    cv_table: list[dict[str, Any]]
    history: list[EpochRow]
    seconds: float
    estimate: DurationEstimate | None = None
    """The duration estimated before the run (None when the warm-up was skipped)."""
    test: dict[str, BinaryMetrics] | None = None
    """The test split's figures with intervals at each operating point (None without one)."""

    @property
    def warning(self) -> str:
        """The card's warning about the held-out figures ("" when there is none)."""
        return str(self.card.validation.get("warning", ""))


@dataclass(frozen=True)
class Splits:
    """Crop indices of the patient-grouped splits (``development`` = ``fit`` + ``validation``)."""

    development: npt.NDArray[np.int64]
    fit: npt.NDArray[np.int64]
    validation: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]


def train_bundle(
    archive: Path,
    annotations: Path,
    out: Path,
    config: TrainConfig,
    listener: TrainListener | None = None,
) -> TrainResult:
    """Run the whole training pipeline and write a bundle to ``out`` (see module docstring).

    Raises
    ------
    InputFileError
        When the annotations give no usable labelled crop.
    UsageError
        For impossible settings (too few patients for the folds, missing pretrained weights, a
        class absent from the training data).
    """
    previous_threads = torch.get_num_threads()
    if config.threads:
        # Process-wide, so it is restored on the way out; on a shared or small CPU fewer threads
        # than cores is often faster.
        torch.set_num_threads(config.threads)
    try:
        return _train_bundle(archive, annotations, out, config, listener)
    finally:
        torch.set_num_threads(previous_threads)


def _train_bundle(
    archive: Path,
    annotations: Path,
    out: Path,
    config: TrainConfig,
    listener: TrainListener | None,
) -> TrainResult:
    log = RunLog(listener or SilentListener())
    t_start = time.perf_counter()
    config, device, pretrained, pretrained_desc, data, split = _prepare(
        archive, annotations, config, log
    )
    estimate = _estimate(data, split, config, pretrained, device, log)
    cv_table, lr, batch = _choose_hyperparameters(
        data, split.development, config, pretrained, device, log
    )
    result = fit(
        data,
        split.fit,
        split.validation,
        lr,
        batch,
        config.epochs,
        config,
        pretrained,
        device,
        log,
        title="final",
        seed=config.seed,
    )
    log.stage(
        f"final fit: {result.epochs_run} epochs in {result.seconds:.0f}s, kept epoch "
        f"{result.best_epoch}"
    )

    # Score with the half-precision weights the bundle stores.
    net = build_network(config.architecture, feature_stride=config.feature_stride)
    net.load_state_dict(as_stored(result.state))
    net = net.to(device).to(memory_format=torch.channels_last)
    points, metrics, test = _score(net, data, split.validation, split.test, config, device, log)
    validation = _validation_status(data, split.test, config, test)
    if validation.get("warning"):
        log.stage(f"WARNING: {validation['warning']}")
    if cv_table:
        metrics["cross_validation"] = [r for r in cv_table if r["fold"] == "mean"]

    total_seconds = time.perf_counter() - t_start
    recipe = run_recipe(config, lr, batch, result, pretrained_desc, device, total_seconds)
    training = data.summary() | {
        "source": config.source or f"{Path(annotations).name} on {Path(archive).name}",
        "n_train": len(split.fit),
        "n_validation": len(split.validation),
        "n_test": len(split.test),
    }
    name = config.name or Path(out).name
    card = build_card(config, name, training, recipe, metrics, points)
    card = replace(card, training_data=config.training_data, validation=validation)
    card = replace(card, guard=_fit_guard(card, net, data, split, config, device, log))
    out = Path(out)
    write_bundle(out, card, net, cv_table, data.skipped, log, total_seconds)
    return TrainResult(
        bundle_dir=out,
        card=card,
        cv_table=cv_table,
        history=log.history,
        seconds=total_seconds,
        estimate=estimate,
        test=test,
    )


def _fit_guard(
    card: ModelCard,
    net: nn.Module,
    data: CropSet,
    split: Splits,
    config: TrainConfig,
    device: torch.device,
    log: RunLog,
) -> DomainGuard | None:
    """The bundle's domain guard (:mod:`auditor.model.guard`): fitted on the training crops, its
    threshold set on the validation and test crops, whose patients the weights never saw (None,
    with a warning, when there are none)."""
    heldout = np.concatenate([split.validation, split.test])
    if len(split.fit) < 2 or not len(heldout):
        log.stage(
            "WARNING: no held-out crops to set the domain guard's threshold on: the bundle has "
            "no guard (fit one with tlaudit guard)"
        )
        return None
    t_guard = time.perf_counter()
    # the network already holds the weights as stored (float16 values)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    stored = ModelBundle(card=card, path=Path(), sha256="", state_dict=state)
    guard = guard_from_crops(
        stored,
        data.crops,
        data.labels,
        split.fit,
        heldout,
        device,
        seed=config.seed,
        source="training crops (fit) and validation + test crops (threshold)",
    )
    log.stage(
        f"domain guard: {guard.describe()}; fitted on {guard.fitted_on['n_fit']} crops in "
        f"{time.perf_counter() - t_guard:.0f} s"
    )
    return guard


def estimate_training(
    archive: Path,
    annotations: Path,
    config: TrainConfig,
    listener: TrainListener | None = None,
) -> DurationEstimate:
    """Cut the crops, split them and time the warm-up as :func:`train_bundle` would, without
    training (``tlaudit train --estimate-only``).

    Raises
    ------
    InputFileError, UsageError
        As :func:`train_bundle`.
    """
    log = RunLog(listener or SilentListener())
    config = replace(config, warmup_batches=max(config.warmup_batches, 1))
    config, device, pretrained, _, data, split = _prepare(archive, annotations, config, log)
    estimate = _estimate(data, split, config, pretrained, device, log)
    assert estimate is not None
    return estimate


def _prepare(
    archive: Path, annotations: Path, config: TrainConfig, log: RunLog
) -> tuple[TrainConfig, torch.device, dict[str, torch.Tensor] | None, str, CropSet, Splits]:
    """Device, starting weights, crops and splits (steps 1 and 2 of the module docstring).

    Where ``auto`` found no starting weights (VGG16 without ImageNet's in the cache), every layer
    trains, as with ``none``; the returned config says so.
    """
    device = select_device(config.device)
    torch.manual_seed(config.seed)
    pretrained, pretrained_desc = resolve_pretrained(
        config.pretrained, config.architecture, config.allow_download
    )
    if pretrained is None and config.trainable != "all":
        config = replace(config, trainable="all")
    log.stage(
        f"device {device} ({training_precision(device)}), {config.architecture}, "
        f"{config.input_size}px, pretrained: {pretrained_desc}, "
        "trainable: "
        + ("all layers" if config.effective_trainable == "all" else "last two blocks + head")
    )
    data = _load_data(archive, annotations, config, log)
    split = _split(data, config, log)
    return config, device, pretrained, pretrained_desc, data, split


def _estimate(
    data: CropSet,
    split: Splits,
    config: TrainConfig,
    pretrained: dict[str, torch.Tensor] | None,
    device: torch.device,
    log: RunLog,
) -> DurationEstimate | None:
    """Time the warm-up, log the estimate and tell the listener the run's size."""
    plans = plan_fits(data, split.development, split.fit, split.validation, config)
    if not config.warmup_batches:
        log.listener.plan(sum(p.epochs * p.batches_per_epoch for p in plans))
        return None
    estimate = estimate_duration(data, plans, split.fit, config, pretrained, device)
    log.stage(estimate.text())
    log.listener.plan(estimate.total_batches)
    return estimate


def _load_data(archive: Path, annotations: Path, config: TrainConfig, log: RunLog) -> CropSet:
    """Cut every labelled vertebra once; refuse one class alone, or a zone loss without zones."""
    log.stage(f"reading annotations {annotations} and cutting crops from {archive}")
    t_cut = time.perf_counter()
    data = load_crop_set(
        archive,
        annotations,
        config.input_size,
        config.crop_margin,
        box_jitter=config.box_jitter,
        jitter_copies=config.jitter_copies,
        seed=config.seed,
        workers=config.workers,
    )
    log.stage(
        f"images decoded and cut in {time.perf_counter() - t_cut:.0f} s "
        f"({config.workers} worker processes)"
    )
    summary = data.summary()
    if data.variants is not None:
        log.stage(
            f"box jitter: {data.variants.shape[1]} extra crops per vertebra from boxes whose "
            f"edges move by up to {config.box_jitter:.0%} (training split only)"
        )
    log.stage(
        f"{summary['n_crops']} crops from {summary['n_images']} images of {summary['n_groups']} "
        f"patients/studies; classes {summary['by_class']}; {summary['n_skipped_rows']} rows skipped"
    )
    for err in data.skipped[:20]:
        log.stage(f"  skipped {err}")
    labels = data.labels
    if len(np.unique(labels)) < 2:
        raise UsageError("the annotations hold only one class; training needs both")
    if config.zone_loss > 0:
        n_zones = sum(1 for r in data.records if r.label == 1 and r.fracture_zone is not None)
        if n_zones == 0:
            raise UsageError(
                "--zone-loss needs fracture-zone polygons for fractured vertebrae (a "
                "fracture_zone column in CSV annotations, segmentation in COCO); none found in "
                f"{annotations}"
            )
        log.stage(
            f"zone loss x{config.zone_loss:g}: {n_zones} of {int(labels.sum())} fracture crops "
            "have a fracture-zone polygon"
        )
    return data


def _split(data: CropSet, config: TrainConfig, log: RunLog) -> Splits:
    """Patient-grouped splits: development (fit + validation) and test, then fit and validation."""
    labels, groups = data.labels, data.groups
    try:
        dev_idx, test_idx = grouped_split(labels, groups, config.test_fraction, config.seed)
        fit_part, val_part = grouped_split(
            labels[dev_idx], groups[dev_idx], config.val_fraction, config.seed + 1
        )
    except ValueError as err:
        raise UsageError(f"cannot split the data by patient: {err}") from err
    fit_idx, val_idx = dev_idx[fit_part], dev_idx[val_part]
    check_disjoint(groups, dev_idx, test_idx)
    check_disjoint(groups, fit_idx, val_idx)
    n_pos = int(labels.sum())
    log.stage(
        f"split by patient: {len(fit_idx)} train, {len(val_idx)} validation, {len(test_idx)} test "
        f"crops; fracture share {n_pos / len(labels):.1%}; class weights "
        f"{class_weights(labels[fit_idx], config.class_weighting).numpy().round(3).tolist()}"
    )
    return Splits(development=dev_idx, fit=fit_idx, validation=val_idx, test=test_idx)


def _choose_hyperparameters(
    data: CropSet,
    dev_idx: npt.NDArray[np.int64],
    config: TrainConfig,
    pretrained: dict[str, torch.Tensor] | None,
    device: torch.device,
    log: RunLog,
) -> tuple[list[dict[str, Any]], float, int]:
    """Cross-validate the grid on the development crops, or take its only combination.

    Returns the cross-validation table (empty without one) and the chosen learning rate and batch
    size.
    """
    cv_table: list[dict[str, Any]] = []
    lr, batch = config.lr_grid[0], config.batch_grid[0]
    if config.cv_folds >= 2 and len(config.grid) > 1:
        log.stage(
            f"{config.cv_folds}-fold patient-grouped cross-validation over {len(config.grid)} "
            f"learning-rate x batch-size combinations"
        )
        try:
            cv_table, (lr, batch) = cross_validate(data, dev_idx, config, pretrained, device, log)
        except ValueError as err:
            raise UsageError(str(err)) from err
        log.stage(f"cross-validation chose lr={lr:g}, batch size={batch}")
    else:
        log.stage(
            f"single hyperparameter combination lr={lr:g}, batch={batch}: no cross-validation"
        )
    return cv_table, lr, batch


def _score(
    net: nn.Module,
    data: CropSet,
    val_idx: npt.NDArray[np.int64],
    test_idx: npt.NDArray[np.int64],
    config: TrainConfig,
    device: torch.device,
    log: RunLog,
) -> tuple[dict[str, OperatingPoint], dict[str, Any], dict[str, BinaryMetrics] | None]:
    """Operating points chosen on the validation crops, and the figures at them.

    Without a validation split holding both classes the only point is ``balanced`` at 0.5.
    Returns the points, the ``validation`` and ``test`` metrics (each when its split exists; the
    test's with 95 % intervals by patient under ``intervals``) and the test split's figures with
    intervals at each point (None without a test split).
    """
    labels = data.labels
    metrics: dict[str, Any] = {}
    if len(val_idx) and len(np.unique(labels[val_idx])) == 2:
        val_scores = predict_scores(
            net, data.crops[val_idx], device, crop_normalisation=config.crop_normalisation
        )
        points = choose_operating_points(labels[val_idx], val_scores)
        metrics["validation"] = _metrics_at(labels[val_idx], val_scores, points)
    else:
        nan = float("nan")
        points = {"balanced": OperatingPoint("balanced", 0.5, nan, nan)}
        log.stage("no validation split with both classes: operating point fixed at 0.5")
    test: dict[str, BinaryMetrics] | None = None
    if len(test_idx):
        test_scores = predict_scores(
            net, data.crops[test_idx], device, crop_normalisation=config.crop_normalisation
        )
        metrics["test"] = _metrics_at(labels[test_idx], test_scores, points)
        groups = data.groups[test_idx]
        test = {
            name: binary_metrics(labels[test_idx], test_scores, op.threshold, groups)
            for name, op in points.items()
        }
        metrics["test"]["intervals"] = {name: m.as_dict() for name, m in test.items()}
        b = test["balanced"]
        log.stage(
            f"test split ({len(test_idx)} crops): AUC {b.auc.decimal()}, balanced point "
            f"sens {b.sensitivity.percent()} spec {b.specificity.percent()}"
        )
    return points, metrics, test


def _validation_status(
    data: CropSet,
    test_idx: npt.NDArray[np.int64],
    config: TrainConfig,
    test: dict[str, BinaryMetrics] | None,
) -> dict[str, Any]:
    """The card's ``validation``: the test split's kind and size, and a warning when its AUC's
    interval includes 0.5 or its value is under :data:`USEFUL_AUC`."""
    if test is None or not len(test_idx):
        return {
            "status": "none",
            "warning": "no held-out test split: nothing says how this model does on unseen "
            "patients; measure it with tlaudit evaluate on a separate labelled set",
        }
    labels = data.labels[test_idx]
    out: dict[str, Any] = {
        "status": "synthetic" if config.training_data == "synthetic" else "local",
        "set": "held-out test split of the training data",
        "n_vertebrae": len(test_idx),
        "n_fractures": int(labels.sum()),
        "n_patients": len(set(data.groups[test_idx].tolist())),
    }
    warning = useless_model_warning(test["balanced"].auc)
    if warning:
        out["warning"] = warning
    return out


def useless_model_warning(auc_estimate: Estimate) -> str:
    """Why a held-out AUC says the model may be useless ("" when it does not).

    Warned: an AUC that could not be measured, an interval that includes 0.5 (no better than
    chance, as far as the set can tell) and a value under :data:`USEFUL_AUC`.
    """
    a = auc_estimate
    if not math.isfinite(a.value):
        return "the test split lacks a class, so its AUC is unknown; do not use this model"
    reasons = []
    if a.low <= 0.5 <= a.high:
        reasons.append("its 95% interval includes 0.5 (chance)")
    if a.value < USEFUL_AUC:
        reasons.append(f"it is under {USEFUL_AUC}")
    if not reasons:
        return ""
    return (
        f"test-split AUC {a.decimal()}: {' and '.join(reasons)}; this model may be no better "
        "than chance: do not use it for QA (train on more data, or longer)"
    )


def _metrics_at(
    labels: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    points: dict[str, OperatingPoint],
) -> dict[str, Any]:
    """AUC, and accuracy, sensitivity, specificity and the confusion counts at each point."""
    out: dict[str, Any] = {"n": len(labels), "auc": auc(labels, scores)}
    for name, op in points.items():
        c = Confusion.from_predictions(labels, positives(scores, op.threshold))
        out[name] = {
            "threshold": op.threshold,
            "accuracy": c.accuracy,
            "sensitivity": c.sensitivity,
            "specificity": c.specificity,
            "confusion": {"tn": c.tn, "fp": c.fp, "fn": c.fn, "tp": c.tp},
        }
    return out
