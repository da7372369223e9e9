"""``tlaudit calibrate``: choose a bundle's operating points again on a local labelled set.

A bundle's operating points come from the validation split of its own training run, which also
picked the kept epoch, so they lean optimistic and rest on few fractures. A site that has a
labelled set the model never saw (its own annotated radiographs, or for the bundled model a fresh
synthetic world) can re-derive them there:

labelled crops (decoded once) -> probabilities (the bundle's :class:`Classifier`, no heatmaps) ->
:func:`~auditor.training.metrics.choose_operating_points` (the same rules as ``train``) -> a
bundle with the same weights, byte for byte, and a card holding the new points, the old ones and
where the new ones came from.

Calibrate on data kept apart from the set that ``evaluate`` will judge, or the evaluation
flatters the thresholds.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from auditor.checksums import file_sha256
from auditor.errors import UsageError
from auditor.model.bundle import (
    WEIGHTS_FILE,
    ModelBundle,
    OperatingPoint,
    load_bundle,
    write_card,
)
from auditor.model.infer import Classifier, select_device
from auditor.training.data import load_crop_set
from auditor.training.metrics import choose_operating_points

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """What ``calibrate`` found and wrote."""

    bundle: ModelBundle  # the bundle as written to the output folder
    previous: dict[str, OperatingPoint]
    points: dict[str, OperatingPoint]
    data_summary: dict[str, Any]
    probs: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]


def calibrate_bundle(
    bundle_path: Path | None,
    archive: Path,
    annotations: Path,
    out: Path,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 128,
    target: float = 0.95,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Calibration:
    """Re-choose the operating points of a bundle on a labelled set and write the result to ``out``.

    Parameters
    ----------
    bundle_path
        Bundle folder (None: the bundled default model).
    archive, annotations
        The labelled calibration set: archive root and a box file with labels.
    out
        Folder of the calibrated bundle. It may be the input bundle's own folder (the card is
        then replaced, atomically; the weights stay as they are).
    device, precision, batch_size
        Where and how to run the model (see :class:`Classifier`).
    target
        Sensitivity of ``sensitive`` and specificity of ``specific`` (0.95 as in ``train``).
    on_progress
        Callback ``(stage, done, total)`` with stage ``"decode"`` or ``"classify"``.

    Raises
    ------
    BundleError, InputFileError, UsageError
        For an unusable bundle or annotation file, or a set without both classes.
    """
    bundle = load_bundle(bundle_path)
    card = bundle.card
    data = load_crop_set(
        archive,
        annotations,
        card.input_size,
        card.crop_margin,
        on_image=(lambda d, t: on_progress("decode", d, t)) if on_progress else None,
    )
    labels = data.labels
    if len(np.unique(labels)) < 2:
        raise UsageError(
            f"{annotations}: calibration needs fractured and unfractured vertebrae; "
            f"this set has only {'fractures' if labels.all() else 'unfractured vertebrae'}"
        )
    clf = Classifier(bundle, select_device(device), precision)
    probs = np.zeros(len(labels), dtype=np.float32)
    for lo in range(0, len(labels), batch_size):
        hi = min(lo + batch_size, len(labels))
        probs[lo:hi] = clf.predict(clf.preprocess(data.crops[lo:hi]), cam=False).probs
        if on_progress:
            on_progress("classify", hi, len(labels))
    points = choose_operating_points(labels, probs, target=target)
    summary = data.summary()
    metrics = dict(card.metrics)
    metrics["calibration"] = {
        "archive": Path(archive).name,
        "annotations": Path(annotations).name,
        "annotations_sha256": file_sha256(Path(annotations)),
        "n_crops": summary["n_crops"],
        "n_groups": summary["n_groups"],
        "by_class": summary["by_class"],
        "target": target,
        "device": clf.describe(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "previous_operating_points": {
            name: {
                "threshold": p.threshold,
                "sensitivity": p.sensitivity,
                "specificity": p.specificity,
            }
            for name, p in card.operating_points.items()
        },
    }
    new_card = replace(card, operating_points=points, metrics=metrics)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    source = bundle.path / WEIGHTS_FILE
    if weights.resolve() != source.resolve():
        shutil.copyfile(source, weights)
    write_card(out, new_card, bundle.sha256)
    written = load_bundle(out)  # re-read: the hash check proves the weights came across whole
    logger.info("calibrated %s on %d crops -> %s", card.name, len(labels), out)
    return Calibration(
        bundle=written,
        previous=dict(card.operating_points),
        points=points,
        data_summary=summary,
        probs=probs,
        labels=labels,
    )
