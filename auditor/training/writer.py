"""What a training run leaves in its bundle folder: the card, the weights and the run's tables.

:func:`build_card` describes the run (:func:`run_recipe` records every choice and what it led
to); :func:`write_bundle` writes, into one folder:

- the bundle itself, weights and card (:func:`auditor.model.bundle.save_bundle`);
- ``cv_results.csv``, one row per fold and one ``mean`` row per grid combination (none without
  cross-validation);
- ``history.csv``, one row per epoch of every fit (:class:`~auditor.training.progress.EpochRow`);
- ``skipped_rows.csv``, the annotation rows that gave no crop, with the reason;
- ``train_log.txt``, the run log;
- ``operating_points.json``, threshold, sensitivity and specificity of each operating point.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from auditor.files import atomic_path, csv_safe, write_text_atomic
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
from auditor.records import RowError
from auditor.training.config import TrainConfig
from auditor.training.engine import training_precision
from auditor.training.loop import FitResult
from auditor.training.progress import RunLog


def as_stored(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights as the bundle will store them (float16), so recorded figures match a reload."""
    return {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}


def run_recipe(
    config: TrainConfig,
    lr: float,
    batch_size: int,
    result: FitResult,
    pretrained: str,
    device: torch.device,
    seconds: float,
) -> dict[str, Any]:
    """The card's ``recipe``: every field of ``config`` and what the run chose and did.

    Parameters
    ----------
    config
        The run's configuration.
    lr, batch_size
        The values cross-validation chose (or the only ones in the grid).
    result
        The final fit.
    pretrained
        Where the starting weights came from, as
        :func:`auditor.training.pretrained.resolve_pretrained` describes them.
    device
        Where the run trained.
    seconds
        Length of the whole run.
    """
    recipe = asdict(config)
    recipe.update(
        chosen_lr=lr,
        chosen_batch_size=batch_size,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        trainable_effective=config.effective_trainable,
        pretrained_weights=pretrained,
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
        training_seconds=round(seconds, 1),
    )
    return recipe


def build_card(
    config: TrainConfig,
    name: str,
    training: dict[str, Any],
    recipe: dict[str, Any],
    metrics: dict[str, Any],
    points: dict[str, OperatingPoint],
) -> ModelCard:
    """The model card of a trained classifier (the ``balanced`` point is its default).

    Parameters
    ----------
    config
        The run's configuration (architecture, input size, stride, crop margin and normalisation).
    name
        The model's name.
    training
        What it was trained on: the crop set's summary, its source and the split sizes.
    recipe
        How it was trained (:func:`run_recipe`).
    metrics
        Validation, test and cross-validation figures.
    points
        The operating points chosen on the validation split.
    """
    return ModelCard(
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


def write_bundle(
    out: Path,
    card: ModelCard,
    net: nn.Module,
    cv_table: Sequence[dict[str, Any]],
    skipped: Sequence[RowError],
    log: RunLog,
    seconds: float,
) -> None:
    """Write the bundle and the run's tables and log into ``out`` (see the module docstring).

    ``net`` is moved to the CPU. The log's last line, naming the folder and ``seconds``, is
    added here, so ``train_log.txt`` ends with it.
    """
    save_bundle(out, card, net.cpu().to(memory_format=torch.contiguous_format))
    _write_csv(out / "cv_results.csv", cv_table)
    _write_csv(out / "history.csv", [asdict(r) for r in log.history])
    _write_csv(
        out / "skipped_rows.csv",
        [{"row": e.row, "image": e.image, "level": e.level, "reason": e.reason} for e in skipped],
    )
    log.stage(f"wrote bundle {out} in {seconds:.0f}s total")
    write_text_atomic(out / "train_log.txt", "\n".join(log.lines) + "\n")
    write_text_atomic(
        out / "operating_points.json", json.dumps(_op_dict(card.operating_points), indent=2) + "\n"
    )


def _op_dict(points: dict[str, OperatingPoint]) -> dict[str, dict[str, float]]:
    return {
        k: {"threshold": p.threshold, "sensitivity": p.sensitivity, "specificity": p.specificity}
        for k, p in points.items()
    }


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` atomically; text a spreadsheet would read as a formula (an image path from
    the annotations, say) is neutralised (:func:`auditor.files.csv_safe`)."""
    if not rows:
        return
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows({key: csv_safe(value) for key, value in row.items()} for row in rows)
