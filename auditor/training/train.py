"""``tlaudit train``: the source study's recipe, grouped by patient, producing a model bundle.

Pipeline (:func:`train_bundle`):

1. cut every labelled vertebra once (:func:`auditor.training.data.load_crop_set`);
2. hold out a patient-grouped test split (``test_fraction``; 0 when a separate held-out set is
   used);
3. choose learning rate and batch size by patient-grouped k-fold cross-validation on the training
   part (skipped when the grid has a single combination);
4. final fit with the chosen values on the training part, less a patient-grouped validation split
   that picks the best epoch, drives ReduceLROnPlateau and sets the operating points;
5. score validation and test crops with the half-precision weights that are saved, and write the
   bundle with its card, the run log, the per-epoch history and the cross-validation table.

The study's own recipe differs in two places, both recorded in the card: its split ignored patients,
and its final fit used the whole training set for a fixed 200 epochs.

Beyond the study, ``zone_loss`` (off by default) adds a term that pulls each fracture's evidence
into its annotated fracture zone (:func:`zone_attention_loss`); the study's heatmaps were
unsupervised, so a model trained with it no longer measures what the study's 81 % measured.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from torchvision import models

from auditor.crops import CROP_NORMALISATIONS
from auditor.errors import UsageError
from auditor.model.bundle import (
    CLASS_NAMES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelCard,
    OperatingPoint,
    save_bundle,
    software_versions,
    utc_now,
)
from auditor.model.cam import FRACTURE_CLASS, resnet_features
from auditor.model.infer import resolve_precision, select_device
from auditor.model.nets import (
    ARCHITECTURES,
    FEATURE_STRIDES,
    build_network,
    freeze_batchnorm,
    load_backbone_weights,
    set_trainable,
)
from auditor.records import positives
from auditor.training.cv import check_disjoint, grouped_kfold, grouped_split
from auditor.training.data import AugmentConfig, CropDataset, CropSet, load_crop_set
from auditor.training.metrics import Confusion, auc, choose_operating_points
from auditor.training.pretrained import resolve_pretrained

logger = logging.getLogger(__name__)

MONITORS = ("balanced_accuracy", "accuracy", "auc", "loss")
#: How class imbalance is handled: inverse-frequency loss weights, a class-balanced sample of the
#: majority class drawn afresh every epoch (cheaper epochs), or nothing.
CLASS_BALANCING = ("balanced", "sampler", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Every choice of a training run; the defaults are the source study's recipe."""

    architecture: str = "resnet18"
    pretrained: str = "imagenet"
    allow_download: bool = False
    trainable: str = "last2"
    input_size: int = 512
    feature_stride: int = 32
    crop_margin: float = 0.15
    box_jitter: float = 0.0
    jitter_copies: int = 2
    crop_normalisation: str = "none"
    epochs: int = 200
    lr_grid: tuple[float, ...] = (0.00005, 0.00016, 0.0005)
    batch_grid: tuple[int, ...] = (16, 32)
    cv_folds: int = 10
    cv_epochs: int | None = None
    test_fraction: float = 0.1
    val_fraction: float = 0.15
    plateau_patience: int = 10
    plateau_factor: float = 0.1
    early_stop: int = 0
    max_minutes: float | None = None
    monitor: str = "balanced_accuracy"
    class_weighting: str = "balanced"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    weight_decay: float = 0.0
    zone_loss: float = 0.0
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    threads: int | None = None
    name: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise UsageError(
                f"unknown architecture {self.architecture!r}; expected {', '.join(ARCHITECTURES)}"
            )
        if self.trainable not in ("last2", "all"):
            raise UsageError(f"--trainable must be 'last2' or 'all', got {self.trainable!r}")
        if self.monitor not in MONITORS:
            raise UsageError(f"--monitor must be one of {', '.join(MONITORS)}")
        if self.class_weighting not in CLASS_BALANCING:
            raise UsageError(f"--class-weighting must be one of {', '.join(CLASS_BALANCING)}")
        if self.crop_normalisation not in CROP_NORMALISATIONS:
            raise UsageError(
                f"--crop-normalisation must be one of {', '.join(CROP_NORMALISATIONS)}"
            )
        if self.feature_stride not in FEATURE_STRIDES:
            raise UsageError(
                f"--feature-stride must be one of {', '.join(map(str, FEATURE_STRIDES))}"
            )
        if self.feature_stride != 32 and self.architecture != "resnet18":
            raise UsageError("--feature-stride other than 32 is implemented for resnet18 only")
        if not 0 <= self.box_jitter <= 0.5 or self.jitter_copies < 0:
            raise UsageError("--box-jitter must be between 0 and 0.5 and --jitter-copies >= 0")
        if self.zone_loss < 0 or not math.isfinite(self.zone_loss):
            raise UsageError(f"--zone-loss must be >= 0, got {self.zone_loss}")
        if self.zone_loss > 0 and self.architecture != "resnet18":
            raise UsageError("--zone-loss is implemented for resnet18 only")
        if self.input_size < 32:
            raise UsageError(f"--input-size {self.input_size} is too small (minimum 32)")
        if self.max_minutes is not None and not (
            self.max_minutes >= 0 and math.isfinite(self.max_minutes)
        ):
            raise UsageError(f"--max-minutes must be >= 0, got {self.max_minutes}")
        if self.epochs < 1 or (self.cv_epochs is not None and self.cv_epochs < 1):
            raise UsageError("epochs must be at least 1")
        if not self.lr_grid or any(lr <= 0 for lr in self.lr_grid):
            raise UsageError("--lr-grid needs positive learning rates")
        if not self.batch_grid or any(b < 1 for b in self.batch_grid):
            raise UsageError("--batch-grid needs positive batch sizes")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise UsageError("--cv-folds must be 0 (no cross-validation) or at least 2")
        for name in ("test_fraction", "val_fraction"):
            value = getattr(self, name)
            if not 0 <= value <= 0.5:
                raise UsageError(f"--{name.replace('_', '-')} must be between 0 and 0.5")

    @property
    def effective_trainable(self) -> str:
        """From scratch every layer must learn, whatever ``trainable`` says."""
        return "all" if self.pretrained == "none" else self.trainable

    @property
    def grid(self) -> list[tuple[float, int]]:
        return list(itertools.product(self.lr_grid, self.batch_grid))


@dataclass(frozen=True)
class EpochRow:
    """One line of the per-epoch table."""

    fit: str
    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_balanced_accuracy: float
    val_auc: float
    seconds: float
    best: bool
    train_zone_loss: float = float("nan")
    """Mean zone-attention term per crop that had a zone (``--zone-loss``), else NaN."""


class TrainListener(Protocol):
    """Receives progress; the command line draws it with rich, tests ignore it."""

    def stage(self, text: str) -> None: ...

    def start_fit(self, title: str, epochs: int, batches_per_epoch: int) -> None: ...

    def batch_done(self) -> None: ...

    def epoch_done(self, row: EpochRow) -> None: ...

    def end_fit(self) -> None: ...


class SilentListener:
    """A listener that ignores everything."""

    def stage(self, text: str) -> None:
        pass

    def start_fit(self, title: str, epochs: int, batches_per_epoch: int) -> None:
        pass

    def batch_done(self) -> None:
        pass

    def epoch_done(self, row: EpochRow) -> None:
        pass

    def end_fit(self) -> None:
        pass


class _RunLog:
    """Forwards to the listener and keeps a plain-text log written beside the bundle."""

    def __init__(self, listener: TrainListener) -> None:
        self.listener = listener
        self.lines: list[str] = []
        self.history: list[EpochRow] = []

    def stage(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.lines.append(f"[{stamp}] {text}")
        logger.info(text)
        self.listener.stage(text)

    def epoch(self, row: EpochRow) -> None:
        self.history.append(row)
        self.lines.append(
            f"  {row.fit} epoch {row.epoch:3d} lr {row.lr:.2e} train_loss {row.train_loss:.4f} "
            f"val_loss {row.val_loss:.4f} val_acc {row.val_accuracy:.4f} "
            f"val_bal_acc {row.val_balanced_accuracy:.4f} val_auc {row.val_auc:.4f} "
            f"{row.seconds:.1f}s{' *' if row.best else ''}"
            + (
                f" zone_loss {row.train_zone_loss:.4f}"
                if math.isfinite(row.train_zone_loss)
                else ""
            )
        )
        self.listener.epoch_done(row)


@dataclass(frozen=True)
class FitResult:
    """Outcome of one training run: the kept weights and what the validation data said."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    epochs_run: int
    val_scores: npt.NDArray[np.float64]
    val_metrics: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_bundle` produced."""

    bundle_dir: Path
    card: ModelCard
    cv_table: list[dict[str, Any]]
    history: list[EpochRow]
    seconds: float


def training_precision(device: torch.device) -> str:
    """bf16 autocast where the hardware runs it natively, otherwise fp32 (no fp16 training)."""
    prec = resolve_precision(device, "auto")
    return "bf16" if prec == "bf16" else "fp32"


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )


def predict_scores(
    net: nn.Module,
    crops: npt.NDArray[np.float32],
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 64,
    crop_normalisation: str = "none",
) -> npt.NDArray[np.float64]:
    """P(fracture) for crops (N, S, S) with ImageNet normalisation, in eval mode."""
    net.eval()
    ds = CropDataset(
        crops,
        np.zeros(len(crops), np.int64),
        IMAGENET_MEAN,
        IMAGENET_STD,
        crop_normalisation=crop_normalisation,
    )
    out = []
    with torch.inference_mode():
        for x, _ in DataLoader(ds, batch_size=batch_size, shuffle=False):
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            with _autocast(device, precision):
                logits = net(x)
            out.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def _val_metrics(
    labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float64], weights: torch.Tensor
) -> dict[str, float]:
    conf = Confusion.from_predictions(labels, scores >= 0.5)
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    log_probs = torch.tensor(np.stack([np.log1p(-p), np.log(p)], axis=1))
    loss = float(F.nll_loss(log_probs, torch.from_numpy(labels), weight=weights.double().cpu()))
    return {
        "accuracy": conf.accuracy,
        "balanced_accuracy": conf.balanced_accuracy,
        "auc": auc(labels, scores),
        "loss": loss,
    }


def _score(metrics: dict[str, float], monitor: str) -> tuple[float, float]:
    """Sort key (higher is better): the monitored metric, then lower loss."""
    value = metrics[monitor]
    primary = -value if monitor == "loss" else value
    if not math.isfinite(primary):
        primary = -math.inf
    return primary, -metrics["loss"]


def class_weights(labels: npt.NDArray[np.int64], mode: str) -> torch.Tensor:
    """Loss weights per class: inverse frequency (``balanced``) or ones (``none``, ``sampler``)."""
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    if mode != "balanced" or np.any(counts == 0):
        return torch.ones(2)
    return torch.tensor(len(labels) / (2.0 * counts), dtype=torch.float32)


def balanced_sampler(
    labels: npt.NDArray[np.int64], generator: torch.Generator
) -> WeightedRandomSampler:
    """Each epoch: 2 x (minority count) crops without replacement, about half of each class."""
    counts = np.bincount(labels, minlength=2)
    per_sample = 1.0 / counts[labels].astype(np.float64)
    n = int(2 * counts.min()) if counts.min() > 0 else len(labels)
    return WeightedRandomSampler(
        per_sample.tolist(), num_samples=n, replacement=False, generator=generator
    )


def zone_attention_loss(
    features: torch.Tensor, weight: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """How far the fracture evidence of each crop lies from its fracture zone.

    ``features`` (N, C, h, w) are the last block's activations, ``weight`` (C,) the head's
    fracture-class row, ``masks`` (N, 1, S, S) the zones (all zero where a crop has none). For
    each crop with a zone, the map sum_c relu(w_c) A_c (the ``layercam4`` heatmap, which is also
    the layer4 term of ``layercam``) is turned into a distribution over the h x w cells by a
    softmax, and the loss is -log of the share of it that falls in the zone (each cell counted by
    the fraction of its pixels in the zone). Returns the mean over those crops and their number
    (0 and a zero loss when none has a zone).
    """
    has_zone = masks.flatten(1).sum(dim=1) > 0
    count = int(has_zone.sum())
    if count == 0:
        return features.new_zeros((), dtype=torch.float32), 0
    cam = torch.einsum("nchw,c->nhw", features[has_zone].float(), torch.relu(weight.float()))
    share = F.adaptive_avg_pool2d(masks[has_zone].float(), (cam.shape[1], cam.shape[2]))[:, 0]
    attention = torch.softmax(cam.flatten(1), dim=1)
    inside = (attention * share.flatten(1)).sum(dim=1)
    return -torch.log(inside.clamp_min(1e-6)).mean(), count


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
    log: _RunLog,
    title: str,
    seed: int,
) -> FitResult:
    """Train one network on ``train_idx``; keep the epoch best on ``val_idx`` (last if empty).

    Adam, log-softmax + NLL loss (class-weighted when configured), plus
    ``config.zone_loss`` x :func:`zone_attention_loss` for fractures with a zone polygon when
    that weight is above 0, ReduceLROnPlateau on the monitored validation metric, optional early
    stop after ``config.early_stop`` epochs without improvement.
    """
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    net = build_network(config.architecture, feature_stride=config.feature_stride)
    if pretrained is not None:
        load_backbone_weights(net, pretrained)
    frozen = set_trainable(net, config.architecture, config.effective_trainable)
    net = net.to(device).to(memory_format=torch.channels_last)
    # the zone loss reads the last block's activations (TrainConfig allows it for ResNet18 only)
    resnet = net if config.zone_loss > 0 and isinstance(net, models.ResNet) else None
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
            net.train()
            freeze_batchnorm(frozen)
            total, count = 0.0, 0
            zone_total, zone_count = 0.0, 0
            for batch in loader:
                x = batch[0].to(device).contiguous(memory_format=torch.channels_last)
                y = batch[1].to(device)
                masks = batch[2].to(device) if len(batch) > 2 else None
                with _autocast(device, precision):
                    if resnet is not None and masks is not None:
                        features = resnet_features(resnet, x)
                        logits = resnet.fc(torch.flatten(resnet.avgpool(features), 1))
                    else:
                        logits = net(x)
                loss = F.nll_loss(F.log_softmax(logits.float(), dim=1), y, weight=weights)
                if resnet is not None and masks is not None:
                    zone_term, n_zone = zone_attention_loss(
                        features, resnet.fc.weight[FRACTURE_CLASS], masks
                    )
                    if n_zone:
                        loss = loss + config.zone_loss * zone_term
                        zone_total += float(zone_term.detach()) * n_zone
                        zone_count += n_zone
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(y)
                count += len(y)
                log.listener.batch_done()
            epochs_run = epoch
            lr_now = float(optimiser.param_groups[0]["lr"])
            if has_val:
                scores = predict_scores(
                    net,
                    data.crops[val_idx],
                    device,
                    precision,
                    crop_normalisation=config.crop_normalisation,
                )
                metrics = _val_metrics(labels[val_idx], scores, weights)
                key = _score(metrics, config.monitor)
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
                    train_loss=total / max(count, 1),
                    val_loss=metrics.get("loss", nan),
                    val_accuracy=metrics.get("accuracy", nan),
                    val_balanced_accuracy=metrics.get("balanced_accuracy", nan),
                    val_auc=metrics.get("auc", nan),
                    seconds=time.perf_counter() - t0,
                    best=improved,
                    train_zone_loss=zone_total / zone_count if zone_count else nan,
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
    log: _RunLog,
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
        key = _score(means, config.monitor)
        log.stage(
            f"cv lr={lr:g} batch={batch}: mean val {config.monitor} "
            f"{mean['val_' + config.monitor]:.4f} (sd {mean['val_' + config.monitor + '_sd']:.4f})"
        )
        if best is None or key > best[0]:
            best = (key, (lr, batch))
    assert best is not None
    return table, best[1]


def _half_round_trip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights as the bundle will store them (float16), so recorded figures match a reload."""
    return {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}


def _op_dict(points: dict[str, OperatingPoint]) -> dict[str, dict[str, float]]:
    return {
        k: {"threshold": p.threshold, "sensitivity": p.sensitivity, "specificity": p.specificity}
        for k, p in points.items()
    }


def _metrics_at(
    labels: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    points: dict[str, OperatingPoint],
) -> dict[str, Any]:
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


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


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
    log = _RunLog(listener or SilentListener())
    t_start = time.perf_counter()
    device = select_device(config.device)
    torch.manual_seed(config.seed)
    pretrained, pretrained_desc = resolve_pretrained(
        config.pretrained, config.architecture, config.allow_download
    )
    log.stage(
        f"device {device} ({training_precision(device)}), {config.architecture}, "
        f"{config.input_size}px, pretrained: {pretrained_desc}, "
        "trainable: "
        + ("all layers" if config.effective_trainable == "all" else "last two blocks + head")
    )
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
    labels, groups = data.labels, data.groups
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

    result = fit(
        data,
        fit_idx,
        val_idx,
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
    net.load_state_dict(_half_round_trip(result.state))
    net = net.to(device).to(memory_format=torch.channels_last)
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
    if len(test_idx):
        test_scores = predict_scores(
            net, data.crops[test_idx], device, crop_normalisation=config.crop_normalisation
        )
        metrics["test"] = _metrics_at(labels[test_idx], test_scores, points)
        t = metrics["test"]
        log.stage(
            f"test split ({len(test_idx)} crops): AUC {t['auc']:.3f}, balanced point "
            f"sens {t['balanced']['sensitivity']:.3f} spec {t['balanced']['specificity']:.3f}"
        )
    if cv_table:
        metrics["cross_validation"] = [r for r in cv_table if r["fold"] == "mean"]

    total_seconds = time.perf_counter() - t_start
    recipe = asdict(config)
    recipe.update(
        chosen_lr=lr,
        chosen_batch_size=batch,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        trainable_effective=config.effective_trainable,
        pretrained_weights=pretrained_desc,
        loss="log-softmax + NLL"
        + {
            "balanced": " (inverse-frequency class weights)",
            "sampler": " (class-balanced sampling each epoch)",
            "none": "",
        }[config.class_weighting]
        + (
            f" + {config.zone_loss:g} x zone attention loss (fracture-zone polygons)"
            if config.zone_loss > 0
            else ""
        ),
        optimiser="Adam",
        scheduler=(
            f"ReduceLROnPlateau(x{config.plateau_factor}, patience {config.plateau_patience}, "
            f"on val {config.monitor})"
        ),
        split="patient-grouped (study UID when no patient ID), class-stratified",
        training_precision=training_precision(device),
        device=str(device),
        training_seconds=round(total_seconds, 1),
    )
    training = summary | {
        "source": config.source or f"{Path(annotations).name} on {Path(archive).name}",
        "n_train": len(fit_idx),
        "n_validation": len(val_idx),
        "n_test": len(test_idx),
    }
    name = config.name or Path(out).name
    card = ModelCard(
        name=name,
        architecture=config.architecture,
        input_size=config.input_size,
        feature_stride=config.feature_stride,
        crop_margin=config.crop_margin,
        crop_normalisation=config.crop_normalisation,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=CLASS_NAMES,
        operating_points=points,
        default_operating_point="balanced",
        description=(
            f"{config.architecture} fracture / no-fracture classifier for single-vertebra crops of "
            "lateral thoracolumbar radiographs, trained with tlaudit train."
        ),
        training=training,
        recipe=recipe,
        metrics=metrics,
        versions=software_versions(),
        created=utc_now(),
    )
    out = Path(out)
    save_bundle(out, card, net.cpu().to(memory_format=torch.contiguous_format))
    _write_csv(out / "cv_results.csv", cv_table)
    _write_csv(out / "history.csv", [asdict(r) for r in log.history])
    _write_csv(
        out / "skipped_rows.csv",
        [
            {"row": e.row, "image": e.image, "level": e.level, "reason": e.reason}
            for e in data.skipped
        ],
    )
    log.stage(f"wrote bundle {out} in {total_seconds:.0f}s total")
    (out / "train_log.txt").write_text("\n".join(log.lines) + "\n", encoding="utf-8")
    (out / "operating_points.json").write_text(json.dumps(_op_dict(points), indent=2) + "\n")
    return TrainResult(
        bundle_dir=out, card=card, cv_table=cv_table, history=log.history, seconds=total_seconds
    )
