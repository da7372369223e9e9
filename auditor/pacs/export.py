"""Writing and sending a run's DICOM results: right after a scan (``scan --dicom-out``,
:func:`auditor.pacs.scan.export_results`) or later, for a finished and perhaps reviewed run
(``tlaudit export-dicom``, :func:`export_run`).

The objects and their content are :mod:`auditor.pacs.dicom_out`'s; this module finds what they
are made from (the run's archive, model and threshold, the reviewer's decisions given) and
reports what was written, skipped and sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.errors import InputFileError, UsageError
from auditor.pacs.connect import PacsConnection
from auditor.pacs.dicom_out import (
    Algorithm,
    DicomOutputError,
    PixelSource,
    WrittenStudy,
    check_options,
    stow,
    write_dicom_results,
)
from auditor.pacs.retry import RetryPolicy
from auditor.pacs.sr_content import ReviewedStudy
from auditor.scan.config import Progress, ScanEvent
from auditor.scan.journal import JOURNAL_NAME, stored_meta

if TYPE_CHECKING:
    from auditor.model.bundle import ModelBundle

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DicomResults:
    """``--dicom-out`` and ``--stow``: where to write the DICOM results, where to send them."""

    out_dir: Path
    stow: PacsConnection | None = None
    uid_root: str | None = None


def algorithm_of(bundle: ModelBundle, threshold: float) -> Algorithm:
    """The SR's identification of a model bundle and the threshold it was used at."""
    card = bundle.card
    version = card.versions.get("tlaudit") or card.created or "unversioned"
    return Algorithm(card.name, version, bundle.sha256, threshold)


def write_and_send(
    run_dir: Path,
    archive: Path,
    bundle: ModelBundle,
    threshold: float,
    results: DicomResults,
    reviews: Mapping[str, ReviewedStudy] | None = None,
    progress: Progress | None = None,
    pixels: PixelSource | None = None,
) -> list[WrittenStudy]:
    """Write a run's DICOM results (:func:`~auditor.pacs.dicom_out.write_dicom_results`, with
    heatmap captures, their pixels from ``pixels`` when given), say what was written and
    skipped on ``progress``, and send them with STOW-RS when ``results`` names a PACS.

    Raises
    ------
    DicomOutputError, PacsError
        When the run has no findings or no readable source, or the PACS refuses the results.
    """
    emit = progress or (lambda event: None)
    written = write_dicom_results(
        run_dir,
        archive,
        algorithm_of(bundle, threshold),
        results.out_dir,
        uid_root=results.uid_root,
        reviews=reviews,
        crop_margin=bundle.card.crop_margin,
        pixels=pixels,
    )
    n_sr = sum(w.report is not None for w in written)
    n_ko = sum(w.key_objects is not None for w in written)
    n_pr = sum(len(w.presentation_states) for w in written)
    n_sc = sum(len(w.captures) for w in written)
    reviewed = sum(1 for w in written if w.report is not None and w.study_uid in (reviews or {}))
    emit(
        ScanEvent(
            "info",
            f"DICOM: {n_sr} SR ({reviewed} with the reviewer's decisions), {n_pr} presentation "
            f"states, {n_sc} heatmap captures, {n_ko} key objects in {results.out_dir}",
        )
    )
    for failed in (w for w in written if w.error):
        emit(
            ScanEvent(
                "info", f"warning: no DICOM results for study {failed.study_uid}: {failed.error}"
            )
        )
    for reason in (r for w in written if not w.error for r in w.skipped):
        emit(ScanEvent("info", f"warning: skipped {reason}"))
    if results.stow is not None:
        paths = [p for w in written for p in w.paths()]
        sent = stow(paths, results.stow, RetryPolicy())
        emit(ScanEvent("info", f"STOW-RS: {sent} objects stored in {results.stow.url}"))
    return written


def run_fingerprint(run_dir: Path) -> dict[str, Any]:
    """What the run's journal records of its inputs: archive, model hash, threshold,
    pseudonymisation (:func:`auditor.scan.pipeline` writes it).

    Raises
    ------
    InputFileError
        When the folder holds no journal with a fingerprint (not a scan's run folder).
    """
    text = stored_meta(run_dir, "fingerprint")
    if text is None:
        raise InputFileError(
            f"{run_dir} holds no readable {JOURNAL_NAME} with the scan's inputs: is it the run "
            "folder of a finished scan?"
        )
    try:
        fingerprint = json.loads(text)
        missing = [
            key for key in ("archive", "model_sha256", "threshold") if key not in fingerprint
        ]
    except (ValueError, TypeError) as err:
        missing = [f"a readable fingerprint ({type(err).__name__}: {err})"]
    if missing:
        raise InputFileError(
            f"{Path(run_dir) / JOURNAL_NAME} does not record the scan's "
            f"{', '.join(missing)}: is it the run folder of a finished scan?"
        )
    return dict(fingerprint)


def export_run(
    run_dir: Path,
    results: DicomResults,
    model: Path | None = None,
    reviews: Mapping[str, ReviewedStudy] | None = None,
    progress: Progress | None = None,
) -> list[WrittenStudy]:
    """Write (and send) the DICOM results of a finished run, with a reviewer's decisions.

    Parameters
    ----------
    run_dir
        A scan's run folder.
    results
        Where to write and send.
    model
        The bundle the run was scanned with (None: the bundled model); its SHA-256 must be the
        one the run's journal records.
    reviews
        What a reviewer recorded, by the study's key (the Study Instance UID).
    progress
        Receives what was written, skipped and sent.

    Raises
    ------
    UsageError
        For a pseudonymised run (:func:`~auditor.pacs.dicom_out.check_options`) or another model
        than the run's.
    InputFileError
        When the folder is not a scan's run folder.
    DicomOutputError, PacsError, BundleError
        As :func:`write_and_send`, and for a model that cannot be loaded.
    """
    from auditor.model.bundle import load_bundle

    fingerprint = run_fingerprint(run_dir)
    check_options(bool(fingerprint.get("pseudonymise")), results.out_dir)
    bundle = load_bundle(model)
    if bundle.sha256 != fingerprint["model_sha256"]:
        raise UsageError(
            f"{run_dir} was scanned with the model of weights SHA-256 "
            f"{fingerprint['model_sha256'][:12]}..., not {bundle.card.name} "
            f"({bundle.sha256[:12]}...): give the run's bundle with --model"
        )
    archive = Path(fingerprint["archive"])
    if not archive.is_dir():
        raise DicomOutputError(
            f"the archive {archive} that {run_dir} scanned is gone: the results are made from "
            "its images (a PACS scan keeps them only with scan --keep-cache)"
        )
    logger.info("exporting %s (archive %s)", run_dir, archive)
    return write_and_send(
        Path(run_dir),
        archive,
        bundle,
        float(fingerprint["threshold"]),
        results,
        reviews,
        progress,
    )
