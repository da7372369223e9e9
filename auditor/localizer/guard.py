"""The localizer's domain guard: is a radiograph like the images the localizer was trained on?

The localizer answers on any image. The run check (:mod:`auditor.localizer.plausible`) refuses
images whose named boxes do not look like a thoracolumbar spine; the guard asks the question
before any box is decoded, in the network's own feature space, as the classifier's stage guard
does (:mod:`auditor.model.stage_guard`, whose method and storage it reuses):

- each image is described by the spatial mean and standard deviation of each channel of one
  stage's output (the letterboxed, standardised 192 x 192 canvas the network sees), read by a
  forward hook from the localizing forward pass itself (:func:`auditor.model.taps.tap_outputs`),
  so the guard costs no second pass;
- at fit time those vectors of training-world images give a centre and a Ledoit-Wolf shrunk
  covariance; the threshold is the 0.99 quantile of the Mahalanobis distances of held-out
  training-world images (:func:`fit_localizer_guard`);
- at localize time an image beyond the threshold gets no box and the reason
  :data:`OUT_OF_DISTRIBUTION_REASON` (:class:`auditor.localizer.infer.Localizer`).

Default part (:data:`DEFAULT_PARTS`): the channel means and sds of ``u3`` (the first decoder
stage, stride 16; 2 x 48 numbers for the bundled width 12), scaled to unit length (Mueller and
Hein 2025, "Mahalanobis++", ICML). It was chosen by measurement among every stage of the network,
with and without the standard deviations and the normalisation, and the maximum of pairs of
stages (the figures are in ``docs/models.md``, "The vertebra localizer"). Inverted images and
full-resolution noise are not foreign to the localizer: it was trained with both
(:mod:`auditor.localizer.data`) and finds as many boxes on them, and the guard leaves them alone.

Storage: ``guard.safetensors`` beside the localizer's weights and a ``guard`` record in its
``card.json``, both as a classifier's stage guard writes them
(:func:`auditor.model.stage_guard.write_domain_guard`). Loading validates the record, the file's
SHA-256 and every part's stage and width against the bundle's network and runs no code
(:func:`read_localizer_guard`, through the one reader of stage guards,
:func:`auditor.model.stage_guard.read_stage_guard`). A bundle without a ``guard`` record loads
without a guard.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from auditor.files import write_text_atomic
from auditor.model.guard import DEFAULT_ARCHIVE_SHARE, DEFAULT_QUANTILE, GUARD_FILE, GuardFeatures
from auditor.model.stage_guard import (
    PartSpec,
    StageGuard,
    fit_stage_guard,
    read_stage_guard,
    stage_statistics,
    write_domain_guard,
)
from auditor.model.taps import outputs_until

logger = logging.getLogger(__name__)

#: The reason an image beyond the guard's threshold gets instead of boxes.
OUT_OF_DISTRIBUTION_REASON = (
    "image unlike the localizer's training images (out of distribution): check it is a lateral "
    "thoracolumbar radiograph, or supply --boxes"
)
#: The parts of a new localizer guard (measured on localizer-v2; docs/models.md).
DEFAULT_PARTS: tuple[PartSpec, ...] = (PartSpec("u3", "mean+sd", normalised=True),)
#: Most images a fit uses on each side (fit, held out).
DEFAULT_MAX_IMAGES = 2000


def localizer_stages(width: int) -> dict[str, int]:
    """The stages of a :class:`~auditor.localizer.network.LocalizerNet` of ``width`` a guard may
    read, with their output channels (encoder ``stem``..``d4``, ``context``, decoder
    ``u3``..``u1`` and the shared ``trunk``)."""
    w = width
    return {
        "stem": w,
        "d1": 2 * w,
        "d2": 4 * w,
        "d3": 6 * w,
        "d4": 8 * w,
        "context": 8 * w,
        "u3": 4 * w,
        "u2": 3 * w,
        "u1": 2 * w,
        "trunk": 2 * w,
    }


def check_localizer_guard(guard: StageGuard, width: int) -> None:
    """Raise :class:`BundleError` unless every part of ``guard`` reads a stage of a localizer
    network of ``width`` (:func:`localizer_stages`) at that stage's width."""
    guard.check_stages(localizer_stages(width), _network(width))


def _network(width: int) -> str:
    return f"a localizer network of width {width}"


def fit_localizer_guard(
    fit: Mapping[str, npt.ArrayLike],
    heldout: Mapping[str, npt.ArrayLike],
    parts: Sequence[PartSpec] = DEFAULT_PARTS,
    *,
    quantile: float = DEFAULT_QUANTILE,
    archive_share: float = DEFAULT_ARCHIVE_SHARE,
    source: str = "",
) -> StageGuard:
    """Fit a localizer guard on per-image stage statistics (stage name: (N, 2C) float32, as
    :meth:`auditor.localizer.infer.Localizer.stage_statistics` gives): one centre and the
    Ledoit-Wolf shrunk covariance on ``fit``, the threshold at ``quantile`` of the distances of
    the ``heldout`` images (:func:`auditor.model.stage_guard.fit_stage_guard`).

    Raises
    ------
    ValueError
        For fewer than 2 fit or 1 held-out image, a stage missing from the statistics, or a
        quantile outside (0, 1).
    """

    def features(stats: Mapping[str, npt.ArrayLike]) -> GuardFeatures:
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in stats.items()}
        n = len(next(iter(arrays.values()))) if arrays else 0
        return GuardFeatures(np.zeros((n, 0), np.float32), arrays)

    fit_features, heldout_features = features(fit), features(heldout)
    guard = fit_stage_guard(
        fit_features,
        heldout_features,
        None,
        parts,
        quantile=quantile,
        archive_share=archive_share,
        source=source,
    )
    rule = f"the {quantile:g} quantile of {len(heldout_features)} held-out training-world images"
    return dataclasses.replace(guard, fitted_on={**guard.fitted_on, "threshold_rule": rule})


def write_localizer_guard(folder: Path, card_file: Path, guard: StageGuard | None) -> None:
    """Store ``guard`` in the localizer bundle ``folder``: :data:`GUARD_FILE` beside the weights
    and the ``guard`` record of ``card_file``, both written atomically; None removes both. The
    weights and the rest of the card are untouched."""
    data = json.loads(card_file.read_text(encoding="utf-8"))
    if guard is None:
        data.pop("guard", None)
    else:
        data["guard"] = write_domain_guard(folder, guard)
    write_text_atomic(card_file, json.dumps(data, indent=2) + "\n")
    if guard is None:
        (folder / GUARD_FILE).unlink(missing_ok=True)


def read_localizer_guard(folder: Path, record: object, card_path: Path, width: int) -> StageGuard:
    """The guard a localizer card's ``guard`` ``record`` describes, read from ``folder`` and
    validated against a localizer network of ``width``
    (:func:`auditor.model.stage_guard.read_stage_guard`).

    Raises
    ------
    BundleError
        When the record is malformed or of another method, does not match its file, the file is
        missing, does not match its SHA-256 or cannot be read, or the guard does not fit the
        network.
    """
    return read_stage_guard(
        folder,
        record,
        card_path,
        localizer_stages(width),
        _network(width),
        label="localizer domain guard",
        use="localize",
    )


def image_distances(
    net: nn.Module, canvases: torch.Tensor, guard: StageGuard
) -> npt.NDArray[np.float32]:
    """The localizer guard's distance of each of the (N, 1, S, S) network inputs ``canvases``
    (as :class:`~auditor.localizer.infer.Localizer` letterboxes and standardises an image), from
    a forward pass of the localizer network ``net`` that stops once the guard's stages have run
    (:func:`auditor.model.taps.outputs_until`): the image-level check alone, for images whose
    boxes come from elsewhere (a box file), at about two thirds of a full pass's cost
    (``docs/models.md``). The same distances :meth:`Localizer.locate_batch` gives."""
    device = next(net.parameters()).device
    with torch.inference_mode():
        maps = outputs_until(net, canvases.to(device), guard.stages)
        stats = {stage: stage_statistics(out).cpu().numpy() for stage, out in maps.items()}
    return guard.distances(stats)
