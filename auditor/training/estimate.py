"""How long a training run will take, measured before it starts.

:func:`plan_fits` lists the fits a run will make (every cross-validation fold of every grid
combination, then the final fit) with their sizes; :func:`estimate_duration` times a few training
batches of a throw-away network built exactly as :func:`auditor.training.loop.fit` builds it (the
same start, trainable layers, loss, precision and loader), and the validation scoring of one batch,
then adds up ``epochs x (batches x seconds per batch + validation crops x seconds per crop)`` over
the fits. A time limit (``max_minutes``) caps each fit at the first epoch past it. Early stopping
can only make the run shorter, so the figure is an upper bound where it is on.

The warm-up runs before any fit and re-seeds nothing: every fit seeds its own generators, so the
trained weights do not depend on it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch

from auditor.model.network import build_network
from auditor.training.config import TrainConfig
from auditor.training.cv import grouped_kfold
from auditor.training.data import CropSet
from auditor.training.engine import predict_scores
from auditor.training.loop import fit
from auditor.training.progress import EpochRow, RunLog

#: Runs estimated longer than this get a hint at the quicker preset.
LONG_RUN_S = 2 * 3600


@dataclass(frozen=True)
class FitPlan:
    """One fit of the run: its title, epochs, and crops to train on and to validate on."""

    title: str
    epochs: int
    n_train: int
    n_val: int
    batch_size: int

    @property
    def batches_per_epoch(self) -> int:
        """As the loader draws them: a last short batch is dropped unless it is the only one."""
        return self.n_train // self.batch_size if self.n_train > self.batch_size else 1


@dataclass(frozen=True)
class DurationEstimate:
    """The run's fits and how long they should take."""

    fits: tuple[FitPlan, ...]
    seconds_per_batch: dict[int, float]
    """Median seconds of one training batch, by batch size."""
    seconds_per_val_crop: float
    seconds: float
    """The whole run, capped per fit by the time limit."""
    upper_bound: bool
    """True when early stopping may end fits sooner."""

    @property
    def total_batches(self) -> int:
        """Training batches of every fit run to its last epoch (what the progress bar counts)."""
        return sum(f.epochs * f.batches_per_epoch for f in self.fits)

    def text(self) -> str:
        """One line for the terminal and the run log."""
        n_cv = sum(f.title != "final" for f in self.fits)
        what = (
            f"{n_cv} cross-validation fits and a final fit"
            if n_cv
            else "one fit (no cross-validation)"
        )
        per_batch = ", ".join(
            f"{s:.2f} s per batch of {b}" for b, s in sorted(self.seconds_per_batch.items())
        )
        text = (
            f"estimated training time: {'at most ' if self.upper_bound else 'about '}"
            f"{format_duration(self.seconds)} for {what} ({per_batch}, "
            f"{1000 * self.seconds_per_val_crop:.1f} ms per validation crop; measured now)"
        )
        if self.seconds > LONG_RUN_S:
            text += (
                "; a long run: --preset quick trains a smaller fixed recipe, and --max-minutes "
                "caps each fit"
            )
        return text


def format_duration(seconds: float) -> str:
    """``42 s``, ``17 min``, ``3 h 05 min``, ``2 d 19 h``."""
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{minutes:.0f} min"
    hours, minutes = divmod(round(minutes), 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def plan_fits(
    data: CropSet,
    development: npt.NDArray[np.int64],
    fit_idx: npt.NDArray[np.int64],
    val_idx: npt.NDArray[np.int64],
    config: TrainConfig,
) -> list[FitPlan]:
    """The fits of a run, in order: cross-validation (when the grid has several combinations and
    folds are asked for), then the final fit, at the grid's largest batch size (its batch is
    chosen by the cross-validation)."""
    plans: list[FitPlan] = []
    if config.cv_folds >= 2 and len(config.grid) > 1:
        folds = grouped_kfold(
            data.labels[development], data.groups[development], config.cv_folds, config.seed
        )
        epochs = config.cv_epochs or config.epochs
        for lr, batch in config.grid:
            for k, (tr, va) in enumerate(folds, start=1):
                plans.append(
                    FitPlan(
                        f"cv lr={lr:g} bs={batch} fold {k}/{len(folds)}",
                        epochs,
                        _n_train(data, development[tr], config),
                        len(va),
                        batch,
                    )
                )
    plans.append(
        FitPlan(
            "final",
            config.epochs,
            _n_train(data, fit_idx, config),
            len(val_idx),
            max(config.batch_grid),
        )
    )
    return plans


def _n_train(data: CropSet, index: npt.NDArray[np.int64], config: TrainConfig) -> int:
    """Crops an epoch draws: all of them, or twice the minority class with the balanced sampler."""
    if config.class_weighting != "sampler":
        return len(index)
    counts = np.bincount(data.labels[index], minlength=2)
    return int(2 * counts.min()) if counts.min() > 0 else len(index)


class _BatchClock:
    """A listener that notes when each batch ends."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def stage(self, text: str) -> None:
        pass

    def plan(self, total_batches: int) -> None:
        pass

    def start_fit(self, title: str, epochs: int, batches_per_epoch: int) -> None:
        self.marks = [time.perf_counter()]

    def batch_done(self) -> None:
        self.marks.append(time.perf_counter())

    def epoch_done(self, row: EpochRow) -> None:
        pass

    def end_fit(self) -> None:
        pass


def estimate_duration(
    data: CropSet,
    plans: list[FitPlan],
    fit_idx: npt.NDArray[np.int64],
    config: TrainConfig,
    pretrained: dict[str, torch.Tensor] | None,
    device: torch.device,
) -> DurationEstimate:
    """Time ``config.warmup_batches`` training batches at each batch size of ``plans`` and the
    scoring of a batch of crops, and add up the fits (module docstring)."""
    per_batch: dict[int, float] = {}
    for batch in sorted({p.batch_size for p in plans}):
        n = min(len(fit_idx), batch * (config.warmup_batches + 1))
        clock = _BatchClock()
        # one epoch over the first crops, no validation, no time limit: just the batches
        warm = replace(config, max_minutes=None, early_stop=0)
        if warm.class_weighting == "sampler":
            warm = replace(warm, class_weighting="balanced")  # every crop of the subset
        fit(
            data,
            fit_idx[:n],
            np.zeros(0, np.int64),
            config.lr_grid[0],
            batch,
            1,
            warm,
            pretrained,
            device,
            RunLog(clock),
            title="warm-up",
            seed=config.seed,
        )
        times = np.diff(clock.marks)
        # the first batch pays for start-up (allocations, worker processes)
        per_batch[batch] = float(np.median(times[1:] if len(times) > 1 else times))
    net = build_network(config.architecture, feature_stride=config.feature_stride).to(device)
    net = net.to(memory_format=torch.channels_last)
    sample = data.crops[fit_idx[: min(len(fit_idx), 64)]]
    predict_scores(net, sample[:2], device, crop_normalisation=config.crop_normalisation)
    t0 = time.perf_counter()
    predict_scores(net, sample, device, crop_normalisation=config.crop_normalisation)
    per_crop = (time.perf_counter() - t0) / max(len(sample), 1)
    total = 0.0
    for plan in plans:
        epoch = plan.batches_per_epoch * per_batch[plan.batch_size] + plan.n_val * per_crop
        seconds = plan.epochs * epoch
        if config.max_minutes is not None:
            # the fit ends after the first epoch that ends past the limit
            seconds = min(seconds, (math.floor(60 * config.max_minutes / epoch) + 1) * epoch)
        total += seconds
    return DurationEstimate(
        fits=tuple(plans),
        seconds_per_batch=per_batch,
        seconds_per_val_crop=per_crop,
        seconds=total,
        upper_bound=config.early_stop > 0,
    )
