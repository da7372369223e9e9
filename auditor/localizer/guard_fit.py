"""Fitting a localizer bundle's domain guard (:mod:`auditor.localizer.guard`) on an archive of
its training world: ``tlaudit guard --task localizer``.

The archive's lateral TL candidates (the triage a scan applies) are split by patient into a fit
part and a held-out part; each image is measured by :meth:`Localizer.stage_statistics`, the
localizing forward pass with its preprocessing, so a scan's distances are the guard's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from auditor.archive.inventory import inventory
from auditor.archive.triage import TriageRules
from auditor.errors import READ_FAILURES, UsageError
from auditor.io.radiograph import read_radiograph
from auditor.localizer.bundle import CARD_FILE, load_localizer_bundle
from auditor.localizer.guard import (
    DEFAULT_MAX_IMAGES,
    DEFAULT_PARTS,
    fit_localizer_guard,
    write_localizer_guard,
)
from auditor.localizer.infer import Localizer
from auditor.model.guard import DEFAULT_ARCHIVE_SHARE, DEFAULT_QUANTILE, GUARD_FILE
from auditor.model.stage_guard import StageGuard
from auditor.vocab import FileStatus

logger = logging.getLogger(__name__)

#: Share of the patients held out to set the threshold.
DEFAULT_HELDOUT_FRACTION = 0.5
#: Images measured per forward pass while fitting.
BATCH = 16


@dataclass(frozen=True)
class LocalizerGuardFit:
    """What :func:`fit_guard_on_localizer` did."""

    folder: Path
    guard: StageGuard
    n_fit: int
    n_heldout: int
    n_patients: int
    unreadable: int


def fit_guard_on_localizer(
    bundle_dir: Path,
    archive: Path,
    *,
    quantile: float = DEFAULT_QUANTILE,
    archive_share: float = DEFAULT_ARCHIVE_SHARE,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
    max_images: int = DEFAULT_MAX_IMAGES,
    seed: int = 0,
    force: bool = False,
    source: str = "",
    rules: TriageRules | None = None,
) -> LocalizerGuardFit:
    """Fit a domain guard for the localizer bundle in ``bundle_dir`` on the candidate images of
    ``archive`` (triage ``rules``, default: lateral TL radiographs) and store it in the bundle
    (``guard.safetensors`` and the card's ``guard`` record; the weights are untouched).

    The patients are shuffled with ``seed`` and about ``heldout_fraction`` of them held out;
    each side keeps at most ``max_images`` images. The fit side gives the centre and covariance
    of :data:`~auditor.localizer.guard.DEFAULT_PARTS`, the held-out side the threshold at
    ``quantile`` (:func:`~auditor.localizer.guard.fit_localizer_guard`).

    Raises
    ------
    UsageError
        When the bundle already has a guard and ``force`` is False, or the archive has fewer
        than 2 patients, 2 fit images or 1 held-out image.
    BundleError
        When the bundle cannot be loaded.
    """
    bundle = load_localizer_bundle(bundle_dir)
    if bundle.guard is not None and not force:
        raise UsageError(
            f"{bundle.path} already has a domain guard ({GUARD_FILE}); pass --force to replace it"
        )
    records = [r for r in inventory(Path(archive), rules) if r.status is FileStatus.CANDIDATE]
    patients = sorted({(r.meta.patient_id if r.meta else "") or r.relpath for r in records})
    if len(patients) < 2:
        raise UsageError(
            f"{archive}: {len(records)} candidate images of {len(patients)} patients; a guard "
            "needs images of at least 2 patients (fit and held out)"
        )
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(patients)[: max(1, round(heldout_fraction * len(patients)))])
    sides: dict[bool, list[Path]] = {False: [], True: []}
    for r in records:
        sides[((r.meta.patient_id if r.meta else "") or r.relpath) in held].append(r.path)
    for key, paths in sides.items():
        if len(paths) > max_images:
            keep = np.sort(rng.choice(len(paths), size=max_images, replace=False))
            sides[key] = [paths[i] for i in keep]
    localizer = Localizer(bundle.net, bundle.card, bundle.path)
    stages = tuple(dict.fromkeys(p.stage for p in DEFAULT_PARTS))
    unreadable = 0
    stats: dict[bool, dict[str, npt.NDArray[np.float32]]] = {}
    for key, paths in sides.items():
        measured, lost = _measure(localizer, paths, stages)
        stats[key], unreadable = measured, unreadable + lost
    n_fit, n_held = (len(next(iter(stats[k].values()))) for k in (False, True))
    if n_fit < 2 or n_held < 1:
        raise UsageError(
            f"{archive}: a guard needs at least 2 fit images and 1 held-out image; got {n_fit} "
            f"and {n_held}"
        )
    guard = fit_localizer_guard(
        stats[False],
        stats[True],
        DEFAULT_PARTS,
        quantile=quantile,
        archive_share=archive_share,
        source=source or f"candidate images of {Path(archive).name}",
    )
    write_localizer_guard(bundle.path, bundle.path / CARD_FILE, guard)
    # read back as a scan will: the record and the file must agree
    stored = load_localizer_bundle(bundle.path).guard
    assert stored is not None
    logger.info("localizer guard: %s", stored.describe())
    return LocalizerGuardFit(bundle.path, stored, n_fit, n_held, len(patients), unreadable)


def _measure(
    localizer: Localizer, paths: list[Path], stages: tuple[str, ...]
) -> tuple[dict[str, npt.NDArray[np.float32]], int]:
    """The stage statistics of the readable images of ``paths`` and how many were not."""
    chunks: dict[str, list[npt.NDArray[np.float32]]] = {s: [] for s in stages}
    lost = 0
    for start in range(0, len(paths), BATCH):
        pixels = []
        for path in paths[start : start + BATCH]:
            try:
                pixels.append(read_radiograph(path).pixels)
            except READ_FAILURES as err:
                logger.warning("guard fit: %s skipped: %s", path, err)
                lost += 1
        if pixels:
            for stage, values in localizer.stage_statistics(pixels, stages).items():
                chunks[stage].append(values)
    return {
        s: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for s, v in chunks.items()
    }, lost
