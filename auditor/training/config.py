"""Every choice of a ``tlaudit train`` run (:class:`TrainConfig`), checked when it is built, and
the named recipes (:data:`PRESETS`) that ``--preset`` fills it from.

The defaults are the source study's recipe, but for the starting weights (``auto``, which works
offline: :func:`auditor.training.pretrained.resolve_pretrained`); the pipeline that reads them is
:func:`auditor.training.train.train_bundle`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from auditor.crops import CROP_NORMALISATIONS
from auditor.errors import UsageError
from auditor.model.network import ARCHITECTURES, FEATURE_STRIDES
from auditor.training.data import AugmentConfig

MONITORS = ("balanced_accuracy", "accuracy", "auc", "loss")
#: How class imbalance is handled: inverse-frequency loss weights, a class-balanced sample of the
#: majority class drawn afresh every epoch (cheaper epochs), or nothing.
CLASS_BALANCING = ("balanced", "sampler", "none")
#: What a run's training data are, for the card (:attr:`auditor.model.bundle.ModelCard.
#: training_data`): "synthetic", "clinical", or "" (not stated).
TRAINING_DATA = ("synthetic", "clinical", "")

#: Named recipes for ``tlaudit train --preset``, as :class:`TrainConfig` fields; an option given
#: on the command line overrides its preset's value (:func:`apply_preset`).
PRESETS: dict[str, dict[str, Any]] = {
    # The source study's recipe and its cross-validated search: TrainConfig's own defaults.
    # Days on a CPU at 512 px; the run prints its estimate before it starts.
    "paper": {},
    # A fixed recipe that finishes a 150-study set in well under 30 minutes on 2 CPU cores
    # (measured in docs/models.md): the bundled model's input (128 px, per-crop contrast
    # stretch) at stride 16 (8 x 8 heatmaps), the last two blocks and the head retrained from
    # the default start, one learning rate and batch size (no cross-validation), a short fit
    # that keeps the epoch with the best validation AUC and stops when it stalls, and a time
    # limit as a backstop.
    "quick": {
        "input_size": 128,
        "feature_stride": 16,
        "crop_normalisation": "percentile",
        "trainable": "last2",
        "box_jitter": 0.1,
        "jitter_copies": 1,
        "epochs": 12,
        "lr_grid": (0.0003,),
        "batch_grid": (32,),
        "cv_folds": 0,
        "test_fraction": 0.2,
        "val_fraction": 0.15,
        "plateau_patience": 2,
        "early_stop": 4,
        "max_minutes": 20.0,
        "monitor": "auc",
    },
}


def apply_preset(values: dict[str, Any], preset: str | None, given: set[str]) -> dict[str, Any]:
    """``values`` (TrainConfig fields) with ``preset``'s recipe laid over every field not in
    ``given`` (the options set on the command line, which win).

    Raises
    ------
    UsageError
        For an unknown preset.
    """
    if preset is None:
        return dict(values)
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return {**values, **{k: v for k, v in PRESETS[preset].items() if k not in given}}


@dataclass(frozen=True)
class TrainConfig:
    """Every choice of a training run; the defaults are the source study's recipe."""

    architecture: str = "resnet18"
    pretrained: str = "auto"
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
    training_data: str = ""
    warmup_batches: int = 3
    """Training batches timed before the run for its duration estimate (the first is not
    counted: it pays for start-up); 0 skips the estimate."""

    def __post_init__(self) -> None:
        if self.training_data not in TRAINING_DATA:
            raise UsageError(
                f"--training-data must be 'synthetic' or 'clinical', got {self.training_data!r}"
            )
        if self.warmup_batches < 0:
            raise UsageError(f"warm-up batches must be >= 0, got {self.warmup_batches}")
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
        """The learning-rate x batch-size combinations, in the order cross-validation tries them."""
        return list(itertools.product(self.lr_grid, self.batch_grid))
