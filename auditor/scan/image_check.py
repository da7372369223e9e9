"""The image check of a scan with a box file: the localizer's domain guard on each whole image.

With a box file the localizer does not run, so its domain guard (:mod:`auditor.localizer.guard`)
checks each image that has boxes on its own: on by default when the localizer bundle has a guard,
``--image-check`` requires one, ``--no-image-check`` turns it off (:func:`load_image_check`).

It runs beside classification, on the loader's decode. The workers that decode each image for its
crops also letterbox it onto the localizer network's small input canvas
(:class:`auditor.scan.dataset.VertebraCropDataset`; on Ray, the tasks do), and the scanning
process runs the network up to the guard's stages on each batch's canvases
(:func:`auditor.localizer.guard.image_distances`, in
:func:`auditor.scan.classify.classify_batches`), so no image is decoded for it alone. Each
distance is committed to the run journal in the same transaction as its image's results
(:mod:`auditor.scan.journal`): a killed scan keeps the verdict of every image it journaled, and
``--resume`` reads them there. An image journaled without one (by a session with
``--no-image-check``) is decoded again for it after classification (:func:`complete`), except on
a streamed PACS scan, whose journaled files are gone: it is then counted as not checked.

Every crop of an image beyond the guard's threshold is out of distribution in the reports
(:mod:`auditor.scan.pipeline`). The verdicts are also written to ``RUN_DIR/image_check.csv``
for people, naming images as the reports do (:func:`write_verdicts`); the scan never reads that
file back.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from auditor.errors import UsageError
from auditor.files import atomic_path, csv_safe
from auditor.records import is_out_of_distribution
from auditor.scan.config import Progress, ScanConfig, ScanEvent
from auditor.scan.journal import RunJournal

if TYPE_CHECKING:
    import torch

    from auditor.localizer.infer import Localizer

IMAGE_CHECK = "image_check.csv"
"""The image check's verdicts, written into RUN_DIR by a scan with ``--boxes``."""
IMAGE_CHECK_COLUMNS = ("image", "distance", "out_of_distribution")


@dataclass(frozen=True)
class ImageVerdicts:
    """What the image check said about the images of a scan with a box file: each measured
    image's localizer-guard distance (archive-relative path: distance) and those beyond the
    guard's threshold; how many it measured this session beside classification, how many
    journaled images it decoded again for want of a verdict, and how many of those it could not
    (a streamed scan's files are gone once journaled)."""

    path: Path
    distances: Mapping[str, float]
    refused: frozenset[str]
    measured: int = 0
    rechecked: int = 0
    unchecked: int = 0


def load_image_check(config: ScanConfig, device: torch.device, emit: Progress) -> Localizer | None:
    """The localizer whose guard checks the images of a scan with a box file, on ``device``, or
    None when the check is off (``--no-image-check``, or by default a localizer bundle without
    a guard).

    Raises
    ------
    UsageError
        For ``--image-check`` with a localizer bundle that has no domain guard.
    """
    if config.image_check is False:
        emit(ScanEvent("info", "Image check: off (--no-image-check)"))
        return None
    from auditor.localizer.infer import load_localizer  # torch model

    localizer = load_localizer(config.localizer, device)
    if localizer.guard is None:
        if config.image_check:
            raise UsageError(
                f"--image-check: the localizer bundle {localizer.path} records no domain guard "
                "(fit one with tlaudit guard --task localizer)"
            )
        emit(ScanEvent("info", "Image check: off (the localizer bundle records no guard)"))
        return None
    emit(
        ScanEvent(
            "info",
            "Image check: the localizer's domain guard on each whole image, beside classification",
        )
    )
    return localizer


def complete(
    localizer: Localizer,
    journal: RunJournal,
    classified: Mapping[str, Path],
    workers: int,
    streamed: bool,
) -> tuple[dict[str, float], int, int]:
    """Every journaled image's distance (journal key: distance), after classification.

    ``classified`` are the journal keys of the images classified (by any session) and their
    files. Those without a distance, journaled by a session without the check, are decoded
    again and measured here (:func:`auditor.localizer.archive.check_images`, ``workers``
    processes) and their distances committed; on a ``streamed`` scan their files are gone, and
    they stay without one. Returns the distances, how many were measured here, and how many
    could not be.
    """
    distances = journal.image_distances()
    missing = [key for key in classified if key not in distances]
    if not missing:
        return distances, 0, 0
    if streamed:
        return distances, 0, len(missing)
    from auditor.localizer.archive import check_images  # torch model

    found: dict[str, float] = {}
    checked = check_images(localizer, [classified[key] for key in missing], workers)
    for key, verdict in zip(missing, checked, strict=True):
        if verdict.distance is not None:  # unreadable now: the image stays without a verdict
            found[key] = verdict.distance
    journal.record_distances(found)
    return {**distances, **found}, len(found), len(missing) - len(found)


def write_verdicts(
    out: Path,
    images: Sequence[str],
    distances: Mapping[str, float],
    threshold: float,
    shown: Mapping[str, str],
) -> frozenset[str]:
    """Write the verdicts of ``images`` (archive-relative paths, in this order; those without a
    distance are left out) to ``out`` atomically, each image named as the reports name it
    (``shown``), and return the images beyond ``threshold``."""
    refused: Set[str] = {
        image
        for image in images
        if image in distances and is_out_of_distribution(distances[image], threshold)
    }
    with atomic_path(out) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(IMAGE_CHECK_COLUMNS)
        for image in images:
            if image in distances:
                flag = "yes" if image in refused else ""
                writer.writerow([csv_safe(shown[image]), f"{distances[image]:.4f}", flag])
    return frozenset(refused)
