"""Measuring a domain guard: the share of crops it marks out of distribution on sets it must
accept (held-out worlds like the training data) and on sets it must reject (foreign images).

``tlaudit guard-rates`` runs :func:`measure_guard`; ``docs/models.md`` holds the figures and the
commands that produced them. The crop sets:

- :func:`world_crops`: the labelled vertebrae of a ``tlaudit synth`` output folder (its
  ``archive/`` and ``ground_truth.csv``): held-out worlds, and foreign ones drawn at another
  pixel spacing (``--max-side``) or with another renderer setting (``--render``);
- those crops with the grey scale turned over (a MONOCHROME1 image read as MONOCHROME2) or with
  heavy Gaussian noise (:mod:`auditor.model.perturb`, shared with the localizer's measure);
- :func:`grid_crops`: square boxes on a grid over radiographs that hold no thoracolumbar spine
  (the real DICOM corpus: chest, hip, tibia, dental), as a forced box file would give;
- :func:`coco_crops`: the boxes of a COCO detection file, e.g. the vertebrae of lateral DRRs
  rendered from real CTs.

The guard's cost is measured by :func:`guard_cost`: the distance computation alone (for a stage
guard with the statistics of the tapped stage outputs) against the classifying forward pass it
rides on, on the same batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torchvision import models

from auditor.boxes import read_box_file
from auditor.crops import crop_vertebra
from auditor.errors import TlauditError, UsageError
from auditor.io.radiograph import read_radiograph
from auditor.model.bundle import ModelBundle
from auditor.model.cam import resnet_logits_and_cam, vgg_logits_and_pooled
from auditor.model.infer import Classifier
from auditor.model.taps import tap_outputs
from auditor.training.data import load_crop_set
from auditor.training.guard import crop_guard_features, subsample

logger = logging.getLogger(__name__)

#: The file of a ``tlaudit synth`` folder that labels its vertebrae.
WORLD_ANNOTATIONS = "ground_truth.csv"


@dataclass(frozen=True)
class CropSet:
    """A named set of greyscale crops (N, S, S) in [0, 1] and whether the guard should flag it.

    ``image_out``, when measured, says for each crop whether an image-level check refused the
    image it was cut from (the localizer's guard asked about the whole image, as with a box
    file: :func:`auditor.localizer.guard_rates.image_verdicts`); a scan would then mark every
    crop of that image out of distribution.
    """

    name: str
    crops: npt.NDArray[np.float32]
    foreign: bool
    description: str
    image_out: npt.NDArray[np.bool_] | None = None


@dataclass(frozen=True)
class GuardRate:
    """How many crops of a set the guard marked out of distribution."""

    name: str
    foreign: bool
    n: int
    flagged: int
    median_distance: float
    description: str
    energy_flagged: int | None = None
    """Crops the energy score (:func:`energy_scores`) would flag at the threshold of
    :func:`measure_guard` (None for a network without a ResNet head)."""
    image_flagged: int | None = None
    """Crops whose image the image-level check refused (None: not measured)."""
    either_flagged: int | None = None
    """Crops the guard flagged or whose image the image-level check refused (None: not
    measured)."""

    @property
    def share(self) -> float:
        return self.flagged / self.n if self.n else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "set": self.name,
            "foreign": self.foreign,
            "n": self.n,
            "flagged": self.flagged,
            "share": self.share,
            "median_distance": self.median_distance,
            "description": self.description,
            "energy_flagged": self.energy_flagged,
            "energy_share": None if self.energy_flagged is None else self.energy_flagged / self.n,
            "image_flagged": self.image_flagged,
            "either_flagged": self.either_flagged,
            "either_share": None if self.either_flagged is None else self.either_flagged / self.n,
        }


def world_crops(
    world: Path, size: int, margin: float, max_crops: int, seed: int = 0, workers: int = 0
) -> tuple[npt.NDArray[np.float32], tuple[Path, ...]]:
    """The crops of every labelled vertebra of a ``tlaudit synth`` folder (at most ``max_crops``,
    drawn from ``seed``) and the image file each was cut from."""
    archive = Path(world) / "archive"
    data = load_crop_set(archive, Path(world) / WORLD_ANNOTATIONS, size, margin, workers=workers)
    index = subsample(np.arange(len(data.crops), dtype=np.int64), max_crops, seed)
    return data.crops[index], tuple(archive / data.records[i].image for i in index)


def boxes_per_image(world: Path) -> float:
    """The mean number of labelled vertebrae per image of a ``tlaudit synth`` folder: the crops
    a scan classifies per image there (:func:`world_crops` subsamples them)."""
    rows = read_box_file(Path(world) / WORLD_ANNOTATIONS).rows
    return len(rows) / max(1, len({row.image for row in rows}))


def grid_crops(
    paths: Iterable[Path],
    size: int,
    margin: float,
    per_side: int = 4,
    box_share: float = 0.2,
) -> tuple[npt.NDArray[np.float32], list[str], tuple[Path, ...]]:
    """Crops of square boxes on a ``per_side`` x ``per_side`` grid over each readable radiograph,
    each box ``box_share`` of the image's shorter side: a forced box file on images without a
    thoracolumbar spine. Files that cannot be read as one greyscale image are skipped and named.

    Returns the crops, the skipped files with the reason, and the file each crop was cut from.
    """
    crops: list[npt.NDArray[np.float32]] = []
    skipped: list[str] = []
    images: list[Path] = []
    for path in sorted(Path(p) for p in paths):
        try:
            pixels = read_radiograph(path).pixels
        except TlauditError as err:
            skipped.append(f"{path.name}: {err}")
            continue
        rows, cols = pixels.shape
        side = box_share * min(rows, cols)
        for cy in np.linspace(side / 2, rows - side / 2, per_side):
            for cx in np.linspace(side / 2, cols - side / 2, per_side):
                box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
                crops.append(crop_vertebra(pixels, box, margin, size))
                images.append(path)
    out = np.stack(crops) if crops else np.zeros((0, size, size), np.float32)
    return out.astype(np.float32), skipped, tuple(images)


def coco_crops(
    detections: Path,
    size: int,
    margin: float,
    images: Path | None = None,
    view_key: str = "APorLA",
    views: Sequence[str] = ("LA",),
) -> tuple[npt.NDArray[np.float32], tuple[Path, ...]]:
    """Crops of every box of a COCO detection file whose image is of one of ``views`` (the
    image's ``view_key`` field; images without it all count) and exists under ``images``
    (default: the ``images`` folder beside the file), and the image file each was cut from."""
    detections = Path(detections)
    folder = Path(images) if images is not None else detections.parent / "images"
    data = json.loads(detections.read_text())
    wanted = {
        int(im["id"]): folder / str(im["file_name"])
        for im in data["images"]
        if str(im.get(view_key, views[0])) in views and (folder / str(im["file_name"])).is_file()
    }
    crops: list[npt.NDArray[np.float32]] = []
    sources: list[Path] = []
    for image_id, path in sorted(wanted.items()):
        pixels = read_radiograph(path).pixels
        for ann in data["annotations"]:
            if int(ann["image_id"]) != image_id:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            crops.append(crop_vertebra(pixels, (x, y, x + w, y + h), margin, size))
            sources.append(path)
    out = np.stack(crops) if crops else np.zeros((0, size, size), np.float32)
    return out.astype(np.float32), tuple(sources)


def energy_scores(
    bundle: ModelBundle, features: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64] | None:
    """The energy score of each crop from its pooled features (Liu et al. 2020: minus the
    log-sum-exp of the logits; higher is further out), through the ResNet head ``fc``; None for
    another network."""
    state = bundle.state_dict
    if "fc.weight" not in state:
        return None
    weight = state["fc.weight"].double().numpy()
    bias = state["fc.bias"].double().numpy()
    logits = np.asarray(features, dtype=np.float64) @ weight.T + bias
    top = logits.max(axis=1)
    return -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))


def measure_guard(
    bundle: ModelBundle, sets: Sequence[CropSet], device: torch.device, quantile: float = 0.99
) -> list[GuardRate]:
    """The share of each of ``sets`` that the bundle's guard marks out of distribution.

    For comparison the energy score is thresholded at ``quantile`` of its values on the first
    set that is not foreign (a held-out world: about the guard's false-alarm rate there) and
    its flags are counted too. Where a set carries image-level verdicts (``image_out``), the
    crops they flag and those flagged by either are counted as well.

    Raises
    ------
    UsageError
        When the bundle has no guard, a set is empty, or its image verdicts do not match its
        crops.
    """
    guard = bundle.card.guard
    if guard is None:
        raise UsageError(f"{bundle.path} has no domain guard; fit one with tlaudit guard")
    features = []
    for crop_set in sets:
        if not len(crop_set.crops):
            raise UsageError(f"crop set {crop_set.name!r} is empty")
        features.append(crop_guard_features(bundle, crop_set.crops, device, guard.stages))
    energies = [energy_scores(bundle, f.pooled) for f in features]
    reference = next((e for s, e in zip(sets, energies, strict=True) if not s.foreign), None)
    cut = None if reference is None else float(np.quantile(reference, quantile))
    rates = []
    for crop_set, f, energy in zip(sets, features, energies, strict=True):
        distances = guard.score(f)
        out = guard.is_out(distances)
        image_out = crop_set.image_out
        if image_out is not None and len(image_out) != len(distances):
            raise UsageError(
                f"crop set {crop_set.name!r}: {len(image_out)} image verdicts for "
                f"{len(distances)} crops"
            )
        rates.append(
            GuardRate(
                name=crop_set.name,
                foreign=crop_set.foreign,
                n=len(distances),
                flagged=int(out.sum()),
                median_distance=float(np.median(distances)),
                description=crop_set.description,
                energy_flagged=None if energy is None or cut is None else int((energy > cut).sum()),
                image_flagged=None if image_out is None else int(np.sum(image_out)),
                either_flagged=None if image_out is None else int(np.sum(out | image_out)),
            )
        )
    return rates


@dataclass(frozen=True)
class GuardCost:
    """Seconds per crop of the classifying forward pass and of the guard's distances alone."""

    forward_s: float
    distance_s: float
    batch: int
    repeats: int

    @property
    def share(self) -> float:
        return self.distance_s / self.forward_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "forward_s_per_crop": self.forward_s,
            "distance_s_per_crop": self.distance_s,
            "share_of_forward": self.share,
            "batch": self.batch,
            "repeats": self.repeats,
        }


def guard_cost(
    bundle: ModelBundle,
    crops: npt.NDArray[np.float32],
    device: torch.device,
    repeats: int = 5,
    precision: str = "auto",
    distance_repeats: int = 50,
) -> GuardCost:
    """Time, on the same batch ``crops``, the scan's classifying forward pass without heatmaps
    (the guard included) and the guard's distance computation alone on that pass's pooled
    features or tapped stage outputs; the best of ``repeats`` forward passes and of
    ``distance_repeats`` distance computations (the least disturbed by other work on the machine:
    the distances take milliseconds, and one slice of another process's time swamps them).

    Raises
    ------
    UsageError
        When the bundle has no guard.
    """
    guard = bundle.card.guard
    if guard is None:
        raise UsageError(f"{bundle.path} has no domain guard; fit one with tlaudit guard")
    classifier = Classifier(bundle, device, precision=precision)
    batch = classifier.preprocess(crops)
    classifier.predict(batch, cam=False)  # warm-up
    forward = []
    for _ in range(repeats):
        start = time.perf_counter()
        classifier.predict(batch, cam=False)
        forward.append(time.perf_counter() - start)
    measure = guard.to_device(device)
    x = batch.to(device)
    if classifier.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    distance = []
    with torch.inference_mode(), tap_outputs(classifier.net, guard.stages) as stages:
        if isinstance(classifier.net, models.ResNet):
            _, _, pooled = resnet_logits_and_cam(classifier.net, x, with_cam=False)
        else:
            _, pooled = vgg_logits_and_pooled(classifier.net, x)
        measure(pooled, stages)
        for _ in range(distance_repeats):
            start = time.perf_counter()
            measure(pooled, stages).cpu()
            distance.append(time.perf_counter() - start)
    n = len(crops)
    return GuardCost(
        forward_s=min(forward) / n, distance_s=min(distance) / n, batch=n, repeats=repeats
    )
