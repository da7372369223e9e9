"""Fitting a classifier's domain guard (:mod:`auditor.model.guard`) from labelled crops.

Two callers: ``tlaudit train`` fits the guard of the bundle it writes on its own splits (the
training crops describe the distribution, the validation and test crops set the threshold), and
``tlaudit guard`` fits one onto an existing bundle from a labelled archive, split by patient
into a fit part and a held-out part (:func:`fit_guard_on_archive`).

The features are computed by :class:`auditor.model.infer.Classifier` in float32, with the card's
preprocessing: the same forward pass a scan runs, so a scan's distances are the guard's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from auditor.errors import UsageError
from auditor.model.bundle import ModelBundle, attach_guard, load_bundle
from auditor.model.guard import (
    DEFAULT_ARCHIVE_SHARE,
    DEFAULT_MAX_CROPS,
    DEFAULT_QUANTILE,
    GUARD_FILE,
    GUARD_METHODS,
    GuardFeatures,
    fit_guard,
)
from auditor.model.infer import Classifier, select_device
from auditor.model.stage_guard import (
    DEFAULT_PARTS,
    STAGE_METHOD,
    DomainGuard,
    PartSpec,
    default_method,
    fit_stage_guard,
)
from auditor.training.cv import grouped_split
from auditor.training.data import load_crop_set

logger = logging.getLogger(__name__)

#: Share of the patients held out to set the threshold when a guard is fitted on an archive.
DEFAULT_HELDOUT_FRACTION = 0.5


def crop_guard_features(
    bundle: ModelBundle,
    crops: npt.NDArray[np.float32],
    device: torch.device,
    stages: tuple[str, ...] = (),
    batch_size: int = 64,
) -> GuardFeatures:
    """What the guards measure of greyscale ``crops`` (N, S, S) in [0, 1] under ``bundle``'s
    network: the pooled penultimate features and the statistics of ``stages``' outputs, in
    float32 with the card's preprocessing (what a scan measures). At least one crop."""
    classifier = Classifier(bundle, device, precision="fp32")
    return GuardFeatures.concatenate(
        [
            classifier.guard_features(classifier.preprocess(crops[i : i + batch_size]), stages)
            for i in range(0, len(crops), batch_size)
        ]
    )


def subsample(index: npt.NDArray[np.int64], most: int, seed: int) -> npt.NDArray[np.int64]:
    """At most ``most`` of ``index``, drawn without replacement from ``seed``, in order."""
    if len(index) <= most:
        return index
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(index, size=most, replace=False))


def guard_from_crops(
    bundle: ModelBundle,
    crops: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    fit_idx: npt.NDArray[np.int64],
    heldout_idx: npt.NDArray[np.int64],
    device: torch.device,
    *,
    quantile: float = DEFAULT_QUANTILE,
    archive_share: float = DEFAULT_ARCHIVE_SHARE,
    max_crops: int = DEFAULT_MAX_CROPS,
    seed: int = 0,
    source: str = "",
    method: str | None = None,
    parts: tuple[PartSpec, ...] | None = None,
) -> DomainGuard:
    """Fit ``bundle``'s guard: one centre per class on the ``fit_idx`` crops (Lee et al.), the
    threshold at ``quantile`` of the distances of the ``heldout_idx`` crops (disjoint patients).
    Each side is subsampled to ``max_crops``.

    ``method`` is one of :data:`auditor.model.guard.GUARD_METHODS` or
    :data:`auditor.model.stage_guard.STAGE_METHOD`; None takes the architecture's default
    (:func:`auditor.model.stage_guard.default_method`). A stage guard measures ``parts``
    (default: :data:`auditor.model.stage_guard.DEFAULT_PARTS` of the architecture).

    Raises
    ------
    UsageError
        When a side is too small (fewer than 2 fit or 1 held-out crop), or for an unknown
        method or one without parts for this architecture.
    """
    architecture = bundle.card.architecture
    method = method or default_method(architecture)
    if method not in (*GUARD_METHODS, STAGE_METHOD):
        raise UsageError(
            f"unknown guard method {method!r}; expected one of "
            f"{', '.join((*GUARD_METHODS, STAGE_METHOD))}"
        )
    if method == STAGE_METHOD:
        parts = parts or DEFAULT_PARTS.get(architecture)
        if not parts:
            raise UsageError(f"no stage guard parts are defined for a {architecture}")
    fit_idx = subsample(np.asarray(fit_idx, np.int64), max_crops, seed)
    heldout_idx = subsample(np.asarray(heldout_idx, np.int64), max_crops, seed + 1)
    if len(fit_idx) < 2 or len(heldout_idx) < 1:
        raise UsageError(
            f"a domain guard needs at least 2 fit crops and 1 held-out crop; got "
            f"{len(fit_idx)} and {len(heldout_idx)}"
        )
    stages = tuple(dict.fromkeys(p.stage for p in parts)) if parts else ()
    features = crop_guard_features(
        bundle, crops[np.concatenate([fit_idx, heldout_idx])], device, stages
    )
    fit_features = features.take(np.arange(len(fit_idx)))
    heldout_features = features.take(np.arange(len(fit_idx), len(features)))
    fit_labels = labels[fit_idx]
    # one centre per class only where each class has crops enough to place its mean
    per_class = len(np.unique(fit_labels)) > 1 and np.bincount(fit_labels).min() >= 2
    if method == STAGE_METHOD:
        assert parts is not None
        return fit_stage_guard(
            fit_features,
            heldout_features,
            fit_labels if per_class else None,
            parts,
            quantile=quantile,
            archive_share=archive_share,
            source=source,
        )
    return fit_guard(
        fit_features.pooled,
        heldout_features.pooled,
        fit_labels if per_class else None,
        quantile=quantile,
        archive_share=archive_share,
        source=source,
        normalised=method == "mahalanobis+l2",
    )


@dataclass(frozen=True)
class GuardFit:
    """What :func:`fit_guard_on_archive` did."""

    bundle: ModelBundle
    n_fit: int
    n_heldout: int
    n_patients: int


def fit_guard_on_archive(
    bundle_dir: Path,
    archive: Path,
    annotations: Path,
    *,
    quantile: float = DEFAULT_QUANTILE,
    archive_share: float = DEFAULT_ARCHIVE_SHARE,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
    max_crops: int = DEFAULT_MAX_CROPS,
    seed: int = 0,
    force: bool = False,
    device: str = "auto",
    workers: int = 0,
    source: str = "",
    method: str | None = None,
) -> GuardFit:
    """Fit a domain guard for the bundle in ``bundle_dir`` on the labelled vertebrae of
    ``annotations`` in ``archive`` and store it in the bundle (``guard.safetensors`` and the
    card's ``guard`` record; the weights are untouched).

    The patients are split (grouped, stratified by class) into a fit part and a held-out part of
    about ``heldout_fraction``; see :func:`guard_from_crops` (also for ``method``).

    Raises
    ------
    UsageError
        When the bundle already has a guard and ``force`` is False, or the set is too small to
        split by patient.
    BundleError, InputFileError
        When the bundle cannot be loaded or the annotations give no usable crop.
    """
    bundle = load_bundle(bundle_dir)
    if bundle.card.guard is not None and not force:
        raise UsageError(
            f"{bundle.path} already has a domain guard ({GUARD_FILE}); pass --force to replace it"
        )
    data = load_crop_set(
        archive,
        annotations,
        bundle.card.input_size,
        bundle.card.crop_margin,
        workers=workers,
    )
    labels, groups = data.labels, data.groups
    try:
        fit_idx, heldout_idx = grouped_split(labels, groups, heldout_fraction, seed)
    except ValueError as err:
        raise UsageError(f"cannot split {annotations} by patient for the guard: {err}") from err
    guard = guard_from_crops(
        bundle,
        data.crops,
        labels,
        fit_idx,
        heldout_idx,
        select_device(device),
        quantile=quantile,
        archive_share=archive_share,
        max_crops=max_crops,
        seed=seed,
        source=source or f"{Path(annotations).name} on {Path(archive).name}",
        method=method,
    )
    updated = attach_guard(bundle.path, guard)
    return GuardFit(
        bundle=updated,
        n_fit=int(guard.fitted_on["n_fit"]),
        n_heldout=int(guard.fitted_on["n_heldout"]),
        n_patients=len(set(groups.tolist())),
    )
