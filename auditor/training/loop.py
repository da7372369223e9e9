"""The training loop: one network fitted epoch by epoch, and the cross-validation that picks its
learning rate and batch size.

:func:`fit` builds the network, the loader, Adam and ReduceLROnPlateau, then alternates
:func:`~auditor.training.engine.train_one_epoch` and :func:`~auditor.training.engine.evaluate`,
keeping the epoch best on the validation crops. :func:`cross_validate` runs :func:`fit` on
patient-grouped folds for every combination of the grid.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader

from auditor.model.bundle import IMAGENET_MEAN, IMAGENET_STD
from auditor.model.network import build_network, load_backbone_weights, set_trainable
from auditor.training.config import TrainConfig
from auditor.training.cv import check_disjoint, grouped_kfold
from auditor.training.data import CropDataset, CropSet
from auditor.training.engine import (
    balanced_sampler,
    class_weights,
    evaluate,
    monitor_key,
    train_one_epoch,
    training_precision,
)
from auditor.training.progress import EpochRow, RunLog


@dataclass(frozen=True)
class FitResult:
    """Outcome of one training run: the kept weights and what the validation data said."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    epochs_run: int
    val_scores: npt.NDArray[np.float64]
    val_metrics: dict[str, float]
    seconds: float


def fit(
    data: CropSet,
    train_idx: npt.NDArray[np.int64],
    val_idx: npt.NDArray[np.int64],
    lr: float,
    batch_size: int,
    epochs: int,
    config: TrainConfig,
    pretrained: dict[str, torch.Tensor] | None,
    device: torch.device,
    log: RunLog,
    title: str,
    seed: int,
) -> FitResult:
    """Train one network on ``train_idx``; keep the epoch best on ``val_idx`` (last if empty).

    Adam, log-softmax + NLL loss (class-weighted when configured), plus
    ``config.zone_loss`` x :func:`~auditor.training.engine.zone_attention_loss` for fractures with
    a zone polygon when that weight is above 0, ReduceLROnPlateau on the monitored validation
    metric, optional early stop after ``config.early_stop`` epochs without improvement.
    """
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    net = build_network(config.architecture, feature_stride=config.feature_stride)
    if pretrained is not None:
        load_backbone_weights(net, pretrained)
    frozen = set_trainable(net, config.architecture, config.effective_trainable)
    net = net.to(device).to(memory_format=torch.channels_last)
    labels = data.labels
    weights = class_weights(labels[train_idx], config.class_weighting).to(device)
    train_ds = CropDataset(
        data.crops[train_idx],
        labels[train_idx],
        IMAGENET_MEAN,
        IMAGENET_STD,
        config.augment,
        config.crop_normalisation,
        variants=None if data.variants is None else data.variants[train_idx],
        zones=_training_zones(data, train_idx) if config.zone_loss > 0 else None,
    )
    gen = torch.Generator().manual_seed(seed)
    sampler = (
        balanced_sampler(labels[train_idx], gen) if config.class_weighting == "sampler" else None
    )
    loader = DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(train_ds) > batch_size,  # a batch of one breaks batch norm
        generator=gen,
        num_workers=config.workers,
        persistent_workers=config.workers > 0,
    )
    params = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser,
        mode="min" if config.monitor == "loss" else "max",
        factor=config.plateau_factor,
        patience=config.plateau_patience,
    )
    precision = training_precision(device)
    has_val = len(val_idx) > 0
    best_key: tuple[float, float] = (-math.inf, -math.inf)
    best_state: dict[str, torch.Tensor] = {}
    best_epoch, since_best, epochs_run = 0, 0, 0
    best_scores = np.zeros(0)
    best_metrics: dict[str, float] = {}
    start = time.perf_counter()
    log.listener.start_fit(title, epochs, len(loader))
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            train_loss, zone_loss = train_one_epoch(
                net,
                loader,
                optimiser,
                weights,
                device,
                precision,
                frozen,
                zone_weight=config.zone_loss,
                on_batch=log.listener.batch_done,
            )
            epochs_run = epoch
            lr_now = float(optimiser.param_groups[0]["lr"])
            if has_val:
                scores, metrics = evaluate(
                    net,
                    data.crops[val_idx],
                    labels[val_idx],
                    weights,
                    device,
                    precision,
                    crop_normalisation=config.crop_normalisation,
                )
                key = monitor_key(metrics, config.monitor)
                improved = key > best_key
                scheduler.step(metrics[config.monitor])
            else:
                scores, metrics, improved = np.zeros(0), {}, True
            if improved:
                best_key, best_epoch, since_best = (
                    (key if has_val else best_key),
                    epoch,
                    0,
                )
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
                best_scores, best_metrics = scores, metrics
            else:
                since_best += 1
            nan = float("nan")
            log.epoch(
                EpochRow(
                    fit=title,
                    epoch=epoch,
                    lr=lr_now,
                    train_loss=train_loss,
                    val_loss=metrics.get("loss", nan),
                    val_accuracy=metrics.get("accuracy", nan),
                    val_balanced_accuracy=metrics.get("balanced_accuracy", nan),
                    val_auc=metrics.get("auc", nan),
                    seconds=time.perf_counter() - t0,
                    best=improved,
                    train_zone_loss=zone_loss,
                )
            )
            if has_val and config.early_stop and since_best >= config.early_stop:
                log.stage(f"{title}: early stop after {epoch} epochs (best epoch {best_epoch})")
                break
            minutes = (time.perf_counter() - start) / 60
            if config.max_minutes is not None and minutes > config.max_minutes and epoch < epochs:
                log.stage(
                    f"{title}: time limit of {config.max_minutes:g} min reached after {epoch} "
                    f"epochs ({minutes:.1f} min; best epoch {best_epoch})"
                )
                break
    finally:
        log.listener.end_fit()
    return FitResult(
        state=best_state,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        val_scores=best_scores,
        val_metrics=best_metrics,
        seconds=time.perf_counter() - start,
    )


def _training_zones(
    data: CropSet, index: npt.NDArray[np.int64]
) -> list[tuple[npt.NDArray[np.float64], ...]]:
    """Per training crop: the fracture zone of the crop and of its variants (fractures only)."""
    zones: list[tuple[npt.NDArray[np.float64], ...]] = []
    for i in index:
        record = data.records[int(i)]
        if record.label == 1 and record.fracture_zone is not None:
            zones.append((record.fracture_zone, *record.variant_zones))
        else:
            zones.append(())
    return zones


def cross_validate(
    data: CropSet,
    train_idx: npt.NDArray[np.int64],
    config: TrainConfig,
    pretrained: dict[str, torch.Tensor] | None,
    device: torch.device,
    log: RunLog,
) -> tuple[list[dict[str, Any]], tuple[float, int]]:
    """Patient-grouped k-fold CV over the learning-rate x batch-size grid.

    Returns the per-fold table (plus one ``mean`` row per combination) and the chosen
    ``(lr, batch_size)``: the best mean of the monitored metric.
    """
    folds = grouped_kfold(
        data.labels[train_idx], data.groups[train_idx], config.cv_folds, config.seed
    )
    epochs = config.cv_epochs or config.epochs
    table: list[dict[str, Any]] = []
    best: tuple[tuple[float, float], tuple[float, int]] | None = None
    for lr, batch in config.grid:
        fold_rows = []
        for k, (tr, va) in enumerate(folds, start=1):
            tr_idx, va_idx = train_idx[tr], train_idx[va]
            check_disjoint(data.groups, tr_idx, va_idx)
            result = fit(
                data,
                tr_idx,
                va_idx,
                lr,
                batch,
                epochs,
                config,
                pretrained,
                device,
                log,
                title=f"cv lr={lr:g} bs={batch} fold {k}/{len(folds)}",
                seed=config.seed + 1000 * k,
            )
            row = {"lr": lr, "batch_size": batch, "fold": k, "best_epoch": result.best_epoch}
            row.update({f"val_{m}": v for m, v in result.val_metrics.items()})
            fold_rows.append(row)
        mean: dict[str, Any] = {"lr": lr, "batch_size": batch, "fold": "mean", "best_epoch": ""}
        for m in ("accuracy", "balanced_accuracy", "auc", "loss"):
            values = [
                r[f"val_{m}"] for r in fold_rows if math.isfinite(r.get(f"val_{m}", math.nan))
            ]
            mean[f"val_{m}"] = float(np.mean(values)) if values else math.nan
            mean[f"val_{m}_sd"] = float(np.std(values)) if values else math.nan
        table.extend(fold_rows)
        table.append(mean)
        means = {k.removeprefix("val_"): float(v) for k, v in mean.items() if k.startswith("val_")}
        key = monitor_key(means, config.monitor)
        log.stage(
            f"cv lr={lr:g} batch={batch}: mean val {config.monitor} "
            f"{mean['val_' + config.monitor]:.4f} (sd {mean['val_' + config.monitor + '_sd']:.4f})"
        )
        if best is None or key > best[0]:
            best = (key, (lr, batch))
    assert best is not None
    return table, best[1]
