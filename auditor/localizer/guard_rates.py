"""Measuring the localizer's domain guard (:mod:`auditor.localizer.guard`): the share of images
it refuses as out of distribution on sets it must accept (held-out synthetic worlds) and on sets
it must reject, and its cost: ``tlaudit guard-rates --task localizer``.

Every image goes through :meth:`Localizer.locate_batch`, the scan's path, so a distance here is
the one a scan gives. The sets (:class:`ImageSet`) are lists of files, each read once by
:func:`auditor.io.radiograph.read_radiograph` and given to the localizer after one
:class:`Change`:

- as it is (held-out worlds, worlds drawn with another renderer setting (``tlaudit synth
  --render``), the real radiographs of a corpus, DRRs);
- inverted (a MONOCHROME1 image read as MONOCHROME2);
- with Gaussian noise of sd :data:`~auditor.model.perturb.HEAVY_NOISE` on the [0, 1] grey
  scale, either at the image's full resolution (the letterbox to the network's working size
  averages most of it away) or at that working size (the image first shrunk as the letterbox
  would, so the network sees the noise).

Inversion and noise are :mod:`auditor.model.perturb`'s, shared with the classifier's measure.

The cost (:func:`localizer_guard_cost`) is the guard's statistics and distance alone against the
localizing forward pass it rides on, on the same batch.

With a box file the localizer does not run, and its guard can still be asked about each image
by itself (:func:`auditor.localizer.guard.image_distances`): :func:`image_verdicts` gives those
distances for the images a classifier guard's crops were cut from (``tlaudit guard-rates
--localizer``), and :func:`image_check_cost` times that check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from auditor.archive.inventory import inventory
from auditor.errors import READ_FAILURES, UsageError, read_failure_reason
from auditor.io.radiograph import read_radiograph
from auditor.localizer.geometry import Letterbox
from auditor.localizer.guard import image_distances
from auditor.localizer.infer import Localizer
from auditor.model.perturb import HEAVY_NOISE, inverted, noisy
from auditor.model.taps import tap_outputs
from auditor.vocab import FileStatus

logger = logging.getLogger(__name__)

#: Images per localizing forward pass.
BATCH = 8


class Change(str, Enum):
    """What is done to each image of a set before the localizer sees it."""

    NONE = "as it is"
    INVERTED = "inverted"
    NOISE_FULL = "noise at full resolution"
    NOISE_INPUT = "noise at the network's input size"


@dataclass(frozen=True)
class ImageSet:
    """Named image files, the change applied to each and whether the guard should refuse them."""

    name: str
    paths: tuple[Path, ...]
    foreign: bool
    description: str
    change: Change = Change.NONE


@dataclass(frozen=True)
class ImageRate:
    """How many images of a set the localizer's guard refused, and their distances."""

    name: str
    foreign: bool
    flagged: int
    distances: tuple[float, ...]
    description: str
    change: Change
    unreadable: tuple[str, ...] = field(default=())
    """Files of the set that could not be read, each with the reason (not counted in ``n``)."""

    @property
    def n(self) -> int:
        return len(self.distances)

    @property
    def share(self) -> float:
        return self.flagged / self.n if self.n else float("nan")

    @property
    def median_distance(self) -> float:
        return float(np.median(self.distances)) if self.distances else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "set": self.name,
            "foreign": self.foreign,
            "change": self.change.value,
            "n": self.n,
            "flagged": self.flagged,
            "share": self.share,
            "median_distance": self.median_distance,
            "min_distance": min(self.distances, default=float("nan")),
            "max_distance": max(self.distances, default=float("nan")),
            "description": self.description,
            "unreadable": list(self.unreadable),
        }


def world_images(world: Path, max_images: int | None = None, seed: int = 0) -> tuple[Path, ...]:
    """The lateral TL candidates (the triage a scan applies) of a ``tlaudit synth`` folder's
    ``archive/`` (or of ``world`` itself when it has no ``archive/``), sorted; at most
    ``max_images`` of them, drawn with ``seed``.

    Raises
    ------
    UsageError
        When the folder holds no candidate image.
    """
    world = Path(world)
    archive = world / "archive" if (world / "archive").is_dir() else world
    paths = sorted(r.path for r in inventory(archive) if r.status is FileStatus.CANDIDATE)
    if not paths:
        raise UsageError(f"{archive}: no lateral TL candidate image to measure the guard on")
    if max_images is not None and len(paths) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(paths), max_images, replace=False))
        paths = [paths[i] for i in keep]
    return tuple(paths)


def image_files(sources: Iterable[Path]) -> tuple[Path, ...]:
    """The files of ``sources``: a file as it is; a folder's files below it (hidden ones left
    out), or, for a COCO-style folder with an ``images/`` subfolder (a DRR set), that
    subfolder's files only."""
    files: set[Path] = set()
    for source in map(Path, sources):
        if source.is_file():
            files.add(source)
            continue
        folder = source / "images" if (source / "images").is_dir() else source
        files.update(
            p
            for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
    return tuple(sorted(files))


def changed(
    pixels: npt.NDArray[np.float32], change: Change, working_size: int, seed: Sequence[int]
) -> npt.NDArray[np.float32]:
    """``pixels`` (float32 in [0, 1]) after ``change``; noise drawn from ``seed``. The caller's
    array is not modified."""
    if change is Change.NONE:
        return pixels
    if change is Change.INVERTED:
        return inverted(pixels)
    if change is Change.NOISE_INPUT:
        # shrink as the letterbox does, so that the network sees noise pixel for pixel
        lb = Letterbox.fit(pixels.shape[0], pixels.shape[1], working_size)
        pixels = lb.place(pixels).numpy()[: lb.content_rows, : lb.content_cols]
    return noisy(pixels, HEAVY_NOISE, seed)


def measure_localizer_guard(
    localizer: Localizer, sets: Sequence[ImageSet], seed: int = 0, batch: int = BATCH
) -> list[ImageRate]:
    """The share of the images of each of ``sets`` that ``localizer``'s guard refuses, through
    :meth:`Localizer.locate_batch`. A file shared by several sets (a world and its changes) is
    read once; one that cannot be read is that set's counted ``unreadable`` entry.

    Raises
    ------
    UsageError
        When the localizer has no guard, or a set has no readable image.
    """
    if localizer.guard is None:
        raise UsageError(
            f"{localizer.path} has no domain guard; fit one with tlaudit guard --task localizer"
        )
    members: dict[Path, list[int]] = {}
    for i, image_set in enumerate(sets):
        for path in image_set.paths:
            members.setdefault(path, []).append(i)
    position = [{path: j for j, path in enumerate(s.paths)} for s in sets]
    distances: list[list[float]] = [[] for _ in sets]
    flagged = [0] * len(sets)
    unreadable: list[list[str]] = [[] for _ in sets]
    pending: list[list[npt.NDArray[np.float32]]] = [[] for _ in sets]

    def flush(i: int) -> None:
        for result in localizer.locate_batch(pending[i]):
            assert result.distance is not None  # the localizer has a guard
            distances[i].append(result.distance)
            flagged[i] += result.out_of_distribution
        pending[i] = []

    for path, indices in members.items():
        try:
            pixels = read_radiograph(path).pixels
        except READ_FAILURES as err:
            for i in indices:
                unreadable[i].append(f"{path.name}: {read_failure_reason(err)}")
            continue
        for i in indices:
            noise_seed = (seed, i, position[i][path])
            image = changed(pixels, sets[i].change, localizer.card.working_size, noise_seed)
            pending[i].append(image)
            if len(pending[i]) >= batch:
                flush(i)
    for i in range(len(sets)):
        if pending[i]:
            flush(i)
    rates = []
    for i, image_set in enumerate(sets):
        if not distances[i]:
            raise UsageError(f"image set {image_set.name!r} has no readable image")
        rates.append(
            ImageRate(
                name=image_set.name,
                foreign=image_set.foreign,
                flagged=flagged[i],
                distances=tuple(distances[i]),
                description=image_set.description,
                change=image_set.change,
                unreadable=tuple(unreadable[i]),
            )
        )
    return rates


@dataclass(frozen=True)
class LocalizerGuardCost:
    """Seconds per image of the localizing forward pass and of the guard's part alone."""

    forward_s: float
    guard_s: float
    batch: int
    repeats: int

    @property
    def share(self) -> float:
        return self.guard_s / self.forward_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "forward_s_per_image": self.forward_s,
            "guard_s_per_image": self.guard_s,
            "share_of_forward": self.share,
            "batch": self.batch,
            "repeats": self.repeats,
        }


def localizer_guard_cost(
    localizer: Localizer,
    images: Sequence[npt.NDArray[np.float32]],
    repeats: int = 5,
    guard_repeats: int = 50,
) -> LocalizerGuardCost:
    """Time, on the same batch ``images``, the localizer network's forward pass with the guard's
    forward hooks (as :meth:`Localizer.locate_batch` runs it; letterboxing and decoding left
    out) and the guard's part alone: the statistics of the tapped stage outputs and the
    distance. Each the best of ``repeats`` and ``guard_repeats`` runs (the least disturbed by
    other work on the machine).

    Raises
    ------
    UsageError
        When the localizer has no guard or ``images`` is empty.
    """
    guard = localizer.guard
    if guard is None:
        raise UsageError(
            f"{localizer.path} has no domain guard; fit one with tlaudit guard --task localizer"
        )
    if not images:
        raise UsageError("no image to time the localizer's guard on")
    measure = guard.to_device(localizer.device)
    # the same canvases locate_batch builds
    x = localizer._canvases(images)[0].to(localizer.device)
    forward, part = [], []
    with torch.inference_mode(), tap_outputs(localizer.net, guard.stages) as taps:
        localizer.net(x)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            localizer.net(x)
            forward.append(time.perf_counter() - start)
        empty = x.new_zeros((len(images), 0))  # the stage guard ignores pooled features
        measure(empty, taps)
        for _ in range(guard_repeats):
            start = time.perf_counter()
            measure(empty, taps).cpu()
            part.append(time.perf_counter() - start)
    n = len(images)
    return LocalizerGuardCost(min(forward) / n, min(part) / n, n, repeats)


def image_verdicts(
    localizer: Localizer,
    paths: Iterable[Path],
    change: Change = Change.NONE,
    seed: int = 0,
    batch: int = BATCH,
) -> dict[Path, float]:
    """The localizer guard's distance of each readable file of ``paths`` after ``change``, from
    the image-level check alone (:func:`auditor.localizer.guard.image_distances`, as with a box
    file); unreadable files are left out. Noise is drawn from ``seed`` and the file's place.

    Raises
    ------
    UsageError
        When the localizer has no guard.
    """
    guard = localizer.guard
    if guard is None:
        raise UsageError(
            f"{localizer.path} has no domain guard; fit one with tlaudit guard --task localizer"
        )
    done: dict[Path, float] = {}
    pending: list[tuple[Path, npt.NDArray[np.float32]]] = []

    def flush() -> None:
        x = localizer._canvases([image for _, image in pending])[0]
        for (path, _), d in zip(pending, image_distances(localizer.net, x, guard), strict=True):
            done[path] = float(d)
        pending.clear()

    for j, path in enumerate(sorted(set(map(Path, paths)))):
        try:
            pixels = read_radiograph(path).pixels
        except READ_FAILURES as err:
            logger.info("image check: %s unreadable (%s)", path, read_failure_reason(err))
            continue
        pending.append((path, changed(pixels, change, localizer.card.working_size, (seed, j))))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    return done


def image_check_cost(
    localizer: Localizer, images: Sequence[npt.NDArray[np.float32]], repeats: int = 5
) -> float:
    """Seconds per image of the image-level check with a box file, for one image at a time as
    a scan's images come: letterbox, the localizer network up to the guard's stages, the
    statistics and the distance (:func:`auditor.localizer.guard.image_distances`); the median
    over ``images`` of each image's best of ``repeats`` runs.

    Raises
    ------
    UsageError
        When the localizer has no guard or ``images`` is empty.
    """
    guard = localizer.guard
    if guard is None or not images:
        raise UsageError(f"{localizer.path}: no guard, or no image to time its check on")
    times = []
    for pixels in images:
        image_distances(localizer.net, localizer._canvases([pixels])[0], guard)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            image_distances(localizer.net, localizer._canvases([pixels])[0], guard)
            best = min(best, time.perf_counter() - start)
        times.append(best)
    return float(np.median(times))
