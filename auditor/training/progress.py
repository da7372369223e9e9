"""Progress of a training run: the per-epoch record, the listener that draws it, the run log.

The run log (:class:`RunLog`) keeps the lines and the epoch history that
:mod:`auditor.training.writer` writes beside the bundle (``train_log.txt``, ``history.csv``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)


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

    def plan(self, total_batches: int) -> None:
        """The training batches of the whole run (every fit to its last epoch), told once before
        the first fit, so that an overall progress bar can show the run's ETA."""
        ...

    def start_fit(self, title: str, epochs: int, batches_per_epoch: int) -> None: ...

    def batch_done(self) -> None: ...

    def epoch_done(self, row: EpochRow) -> None: ...

    def end_fit(self) -> None: ...


class SilentListener:
    """A listener that ignores everything."""

    def stage(self, text: str) -> None:
        pass

    def plan(self, total_batches: int) -> None:
        pass

    def start_fit(self, title: str, epochs: int, batches_per_epoch: int) -> None:
        pass

    def batch_done(self) -> None:
        pass

    def epoch_done(self, row: EpochRow) -> None:
        pass

    def end_fit(self) -> None:
        pass


class RunLog:
    """Forwards to the listener and keeps a plain-text log written beside the bundle."""

    def __init__(self, listener: TrainListener) -> None:
        self.listener = listener
        self.lines: list[str] = []
        self.history: list[EpochRow] = []

    def stage(self, text: str) -> None:
        """Log one stage of the run, time-stamped, and pass it to the listener."""
        stamp = time.strftime("%H:%M:%S")
        self.lines.append(f"[{stamp}] {text}")
        logger.info(text)
        self.listener.stage(text)

    def epoch(self, row: EpochRow) -> None:
        """Record one epoch in the history and the log, and pass it to the listener."""
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
