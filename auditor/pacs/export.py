"""Writing and sending a run's DICOM results: right after a scan (``scan --dicom-out``,
:func:`auditor.pacs.scan.export_results`) or later, for a finished and perhaps reviewed run
(``tlaudit export-dicom``, :func:`export_run`).

The objects and their content are :mod:`auditor.pacs.dicom_out`'s; this module finds what they
are made from (the run's archive, model and threshold, the reviewer's decisions given) and
reports what was written, skipped and sent.

A PACS scan removes its cache of images when it ends (unless ``--keep-cache``). Its run folder
keeps each image's header (``RUN_DIR/pacs_headers``), which is all the SR, the presentation
states and the key objects are made from; only the heatmap captures need pixels, and
:class:`PacsPixels` retrieves those source images again from the PACS, one at a time, each
removed once its capture is drawn. A capture that cannot be made (the PACS unreachable, no
PACS given) is a line saying why; the other objects are written all the same.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
import requests

from auditor.errors import InputFileError, UsageError
from auditor.pacs.connect import PacsConnection, PacsError
from auditor.pacs.dicom_out import (
    Algorithm,
    DicomOutputError,
    ImageCalls,
    PixelSource,
    WrittenStudy,
    check_options,
    stow,
    write_dicom_results,
)
from auditor.pacs.retry import RetryPolicy, call
from auditor.pacs.source import GIVE_UP_AFTER, dicom_part, fetch_answer
from auditor.pacs.sr_content import ReviewedStudy
from auditor.pacs.stream import HEADERS_DIR
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


@dataclass
class PacsPixels:
    """A :data:`~auditor.pacs.dicom_out.PixelSource` for a PACS run whose cache is gone: each
    source image retrieved again with WADO-RS (its UIDs read from its kept header), into a
    temporary folder, for as long as its capture is drawn.

    After :data:`~auditor.pacs.source.GIVE_UP_AFTER` retrievals in a row fail (the PACS is
    down), the rest are not tried: each capture's line says so at once.
    """

    connection: PacsConnection
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    _failed_in_a_row: int = 0
    _local: threading.local = field(default_factory=threading.local)  # a session per thread

    def __call__(self, image: ImageCalls) -> contextlib.AbstractContextManager[Path]:
        """The source image of ``image``, whose ``path`` is its kept header (:meth:`again`)."""
        return self.again(image.path)

    @contextlib.contextmanager
    def again(self, header: Path) -> Iterator[Path]:
        """The image whose header (pixels left out) is ``header``, retrieved again.

        Raises
        ------
        PacsError
            When it cannot be retrieved, saying what to do.
        OSError, InvalidDicomError
            When the header cannot be read.
        """
        url = self.connection.url
        if self._failed_in_a_row >= GIVE_UP_AFTER:
            raise PacsError(
                f"not retrieved from {url}: the PACS stopped answering ({GIVE_UP_AFTER} "
                "retrievals in a row failed); check that the PACS is reachable, and try again"
            )
        kept = pydicom.dcmread(header, stop_before_pixels=True, force=True)
        study, series, sop = kept.StudyInstanceUID, kept.SeriesInstanceUID, kept.SOPInstanceUID
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.connection.session()
        wado = f"{url}/studies/{study}/series/{series}/instances/{sop}"
        try:
            body, content_type = call(
                f"WADO-RS instance {sop}",
                functools.partial(fetch_answer, session, wado, self.connection.timeout_s),
                self.retry,
            )
        except PacsError as err:
            self._failed_in_a_row += 1
            what = str(err).split("; ")[0]  # what failed, without the scan's advice to resume
            raise PacsError(
                f"its pixels could not be retrieved again from {url} ({what}); check that the "
                "PACS is reachable and the credentials, and try again"
            ) from err
        self._failed_in_a_row = 0
        with tempfile.TemporaryDirectory(prefix="tlaudit-again-") as scratch:
            found = Path(scratch) / f"{sop}.dcm"
            found.write_bytes(dicom_part(body, content_type))
            yield found


def run_images(
    run_dir: Path, connection: PacsConnection
) -> Callable[[str], contextlib.AbstractContextManager[Path]]:
    """A PACS run's images by archive-relative path, each retrieved again from ``connection``
    (:meth:`PacsPixels.again`, its header kept in ``RUN_DIR/pacs_headers``): what the review
    workbench shows once the scan's cache is gone (``tlaudit review --pacs``).

    The header path is checked to lie inside ``RUN_DIR/pacs_headers``; a path that leads
    outside raises :class:`~auditor.errors.UsageError`.
    """
    headers = (Path(run_dir) / HEADERS_DIR).resolve()
    pixels = PacsPixels(connection)

    def image(relative: str) -> contextlib.AbstractContextManager[Path]:
        header = (headers / relative).resolve()
        if not header.is_relative_to(headers):
            raise UsageError(f"image {relative!r} leads outside {headers}")
        return pixels.again(header)

    return image


def _no_pacs(image: ImageCalls) -> contextlib.AbstractContextManager[Path]:
    """The pixel source of a PACS run exported without ``--pacs``: every capture refused."""
    raise PacsError(
        "the scan's cache of images is gone; give export-dicom --pacs (the address the run "
        "scanned) to retrieve the source images again, or scan with --keep-cache"
    )


def export_run(
    run_dir: Path,
    results: DicomResults,
    model: Path | None = None,
    reviews: Mapping[str, ReviewedStudy] | None = None,
    progress: Progress | None = None,
    pacs: PacsConnection | None = None,
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
    pacs
        The PACS a PACS run scanned, for the heatmap captures' pixels once the run's cache is
        gone (:class:`PacsPixels`); without it those captures are skipped, each with a line
        saying so.

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
    pixels: PixelSource | None = None
    headers = Path(run_dir) / HEADERS_DIR
    if not archive.is_dir() and headers.is_dir():  # a PACS run: the headers it kept
        archive, pixels = headers, (_no_pacs if pacs is None else PacsPixels(pacs))
    if not archive.is_dir():
        raise DicomOutputError(
            f"the archive {archive} that {run_dir} scanned is gone: the results are made from "
            "its images"
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
        pixels,
    )
