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

A threshold chosen on a handful of fractures is noise: a set with fewer than
:data:`MIN_FRACTURES` fractured or :data:`MIN_INTACT` intact vertebrae is refused unless the caller
forces it. Each new threshold gets a 95 % interval from a bootstrap that resamples whole patients
and chooses the points again on every resample (percentile interval; thresholds are observed
scores, so BCa's smoothness assumptions do not hold), and each point's sensitivity and specificity
on the calibration set get exact intervals by patient (:mod:`auditor.training.intervals`; they
lean optimistic, since the thresholds were chosen on the same crops). When a bundle's old
threshold lies outside the new one's interval, the move is more than resampling this set
explains, and a warning says so: the set and the data the old points came from disagree.
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
from auditor.records import positives
from auditor.training.data import load_crop_set
from auditor.training.intervals import Estimate, cluster_resamples, percentile_interval, proportion
from auditor.training.metrics import choose_operating_points

logger = logging.getLogger(__name__)

#: Fewest fractured vertebrae a calibration set needs (without ``force``).
MIN_FRACTURES = 30
#: Fewest intact vertebrae a calibration set needs (without ``force``).
MIN_INTACT = 100


@dataclass(frozen=True)
class PointCheck:
    """A new operating point with its threshold's bootstrap interval and what it does on the set.

    ``sensitivity`` and ``specificity`` are measured on the calibration set itself, with exact
    intervals by patient.
    """

    name: str
    threshold: float
    threshold_low: float
    threshold_high: float
    sensitivity: Estimate
    specificity: Estimate
    previous: float | None
    """The bundle's threshold for this point before calibration (None when it had none)."""

    @property
    def moved_beyond_interval(self) -> bool:
        """True when the old threshold lies outside the new threshold's 95 % interval."""
        return self.previous is not None and not (
            self.threshold_low <= self.previous <= self.threshold_high
        )


@dataclass(frozen=True)
class Calibration:
    """What ``calibrate`` found and wrote."""

    bundle: ModelBundle  # the bundle as written to the output folder
    previous: dict[str, OperatingPoint]
    points: dict[str, OperatingPoint]
    data_summary: dict[str, Any]
    probs: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    checks: dict[str, PointCheck]
    forced: bool
    """True when the set was below the minimum counts and ``force`` let it through."""

    @property
    def warnings(self) -> list[str]:
        """One line per point whose threshold moved more than its interval explains."""
        return [
            f"{c.name}: the threshold moved from {c.previous:.4f} to {c.threshold:.4f}, outside "
            f"its 95% bootstrap interval ({c.threshold_low:.4f}-{c.threshold_high:.4f}): this "
            "set and the data the old point came from disagree; check the set's size and case "
            "mix before using the new point"
            for c in self.checks.values()
            if c.moved_beyond_interval and c.previous is not None
        ]


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
    force: bool = False,
    n_bootstrap: int = 1000,
    seed: int = 0,
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
    force
        Calibrate on a set with fewer than :data:`MIN_FRACTURES` fractures or :data:`MIN_INTACT`
        intact vertebrae all the same (the card records that it was forced).
    n_bootstrap, seed
        Patient-bootstrap resamples for the thresholds' intervals, and their seed.

    Raises
    ------
    BundleError, InputFileError, UsageError
        For an unusable bundle or annotation file, a set without both classes, or a set below
        the minimum counts without ``force``.
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
    n_fractures, n_intact = int(labels.sum()), int(len(labels) - labels.sum())
    small = n_fractures < MIN_FRACTURES or n_intact < MIN_INTACT
    if small and not force:
        raise UsageError(
            f"{annotations}: {n_fractures} fractured and {n_intact} intact vertebrae are too few "
            f"to choose thresholds on (at least {MIN_FRACTURES} and {MIN_INTACT} are needed: "
            "with fewer, one vertebra more or less moves a threshold across most of its range); "
            "pass --force to calibrate on this set anyway"
        )
    if small:
        logger.warning(
            "calibrating on %d fractured and %d intact vertebrae, below the minimum (forced)",
            n_fractures,
            n_intact,
        )
    clf = Classifier(bundle, select_device(device), precision)
    probs = np.zeros(len(labels), dtype=np.float32)
    for lo in range(0, len(labels), batch_size):
        hi = min(lo + batch_size, len(labels))
        probs[lo:hi] = clf.predict(clf.preprocess(data.crops[lo:hi]), cam=False).probs
        if on_progress:
            on_progress("classify", hi, len(labels))
    points = choose_operating_points(labels, probs, target=target)
    checks = _check_points(
        labels, probs, data.groups, points, card.operating_points, target, n_bootstrap, seed
    )
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
        "forced": small,
        "threshold_intervals": {
            name: {
                "ci_low": c.threshold_low,
                "ci_high": c.threshold_high,
                "method": (f"percentile bootstrap, {n_bootstrap} resamples by patient"),
            }
            for name, c in checks.items()
        },
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
        checks=checks,
        forced=small,
    )


def _check_points(
    labels: npt.NDArray[np.int64],
    probs: npt.NDArray[np.float32],
    groups: npt.NDArray[np.str_],
    points: dict[str, OperatingPoint],
    previous: dict[str, OperatingPoint],
    target: float,
    n_bootstrap: int,
    seed: int,
) -> dict[str, PointCheck]:
    """Each new point's threshold interval (patient bootstrap: the points chosen again on every
    resample holding both classes) and its sensitivity and specificity with exact intervals."""
    samples: dict[str, list[float]] = {name: [] for name in points}
    for idx in cluster_resamples(groups, len(labels), n_bootstrap, seed):
        y = labels[idx]
        if 0 < y.sum() < len(y):
            for name, p in choose_operating_points(y, probs[idx], target=target).items():
                samples[name].append(p.threshold)
    checks = {}
    for name, p in points.items():
        called = positives(probs, p.threshold)
        fractured = labels == 1
        low, high = percentile_interval(samples[name])
        old = previous.get(name)
        checks[name] = PointCheck(
            name=name,
            threshold=p.threshold,
            threshold_low=low,
            threshold_high=high,
            sensitivity=proportion(called[fractured], groups[fractured]),
            specificity=proportion(~called[~fractured], groups[~fractured]),
            previous=None if old is None else old.threshold,
        )
    return checks
