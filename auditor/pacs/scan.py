"""``tlaudit scan dicomweb+https://...`` or ``dicom://...``: the audit of studies held by a PACS.

:func:`route_from_options` picks the route from the address (DICOMweb,
:class:`~auditor.pacs.source.PacsSource`; DIMSE, :class:`~auditor.pacs.dimse.DimseSource`);
everything after is the same for both. :func:`scan_pacs` asks the PACS for its instances and
triages them from the answer (:func:`auditor.pacs.source.triage_instances`), then runs the
ordinary scan (:func:`auditor.scan.pipeline.run_scan`) on the query's rows while
:class:`auditor.pacs.stream.CacheStream` retrieves the images into ``RUN_DIR/cache`` as the scan
reads them: retrieval overlaps the scan, the cache stays within ``--cache-cap-mb`` (the retrieval
waits for the room read images free), and each file goes as soon as the scan is done with it, so
an archive larger than the cap is audited in one run:

* **with a box file** the images are retrieved in the order classification reads them, and each
  file goes once its image's results are journaled;
* **without one** they are retrieved in the order the localizer's pass reads them, and each file
  goes once the pass has localized it and stored the classifier's crops from that decode
  (``RUN_DIR/precut``); classification reads those crops and needs the file no more.

The DICOM results are made afterwards from the headers the stream kept (``RUN_DIR/pacs_headers``),
each heatmap capture's source image retrieved once more.

``RUN_DIR/pacs_accounting.csv`` gets every instance's final row. The cache is removed when the
scan has finished (``keep_cache`` keeps the images; the cap must then hold them all). An
interrupted scan leaves what it retrieved in place: ``--resume`` retrieves only what the journal
(and, without a box file, the localizer's journal) lacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from auditor.archive.inventory import FileRecord, NoCandidatesError, summarise, write_accounting_csv
from auditor.archive.triage import TriageRules
from auditor.errors import UsageError
from auditor.pacs.connect import PacsConnection, dicomweb_url, load_credentials
from auditor.pacs.dicom_out import ImageCalls, PixelSource, WrittenStudy, check_options
from auditor.pacs.dimse import DimseSource, dimse_connection, is_dimse_address
from auditor.pacs.export import DicomResults, write_and_send
from auditor.pacs.source import (
    CACHE_DIR,
    Gathered,
    PacsSource,
    Route,
    parse_study_date,
    triage_instances,
)
from auditor.pacs.stream import HEADERS_DIR, CacheStream, StreamStats
from auditor.scan.config import Progress, ScanConfig, ScanEvent, ScanResult
from auditor.scan.journal import JOURNAL_NAME, run_in_use
from auditor.vocab import FileStatus

logger = logging.getLogger(__name__)

ACCOUNTING_NAME = "pacs_accounting.csv"
"""Every instance the PACS query returned, one row each (columns of the inventory's CSV)."""


def results_from_options(
    dicom_out: Path | None,
    stow_address: str | None = None,
    auth_file: Path | None = None,
    ca_bundle: Path | None = None,
    pseudonymise: bool = False,
    uid_root: str | None = None,
) -> DicomResults | None:
    """``--dicom-out`` and ``--stow`` as :class:`DicomResults` (None without ``--dicom-out``).

    Raises
    ------
    UsageError
        For ``--stow`` without ``--dicom-out`` (the files sent are the ones written), with
        ``--pseudonymise``, for a bad address or credentials, or a ``--uid-root`` that is not
        a UID root (:func:`check_uid_root`).
    """
    check_options(pseudonymise, dicom_out)
    if uid_root is not None:
        check_uid_root(uid_root)
    if dicom_out is None:
        if stow_address:
            raise UsageError("--stow sends the files --dicom-out writes; give --dicom-out too")
        return None
    connection = None
    if stow_address:
        connection = PacsConnection(
            dicomweb_url(stow_address), load_credentials(auth_file), ca_bundle=ca_bundle
        )
    return DicomResults(Path(dicom_out), connection, uid_root=uid_root)


#: Longest UID root accepted: the new UIDs append 30 or so digits and must stay within 64.
MAX_UID_ROOT = 32
_UID_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.$")


def check_uid_root(root: str) -> None:
    """Refuse a ``--uid-root`` that would not make valid UIDs (PS3.5 9.1: digits and dots, no
    leading zero in a component), ending with the dot the new UIDs follow, of at most
    :data:`MAX_UID_ROOT` characters.

    Raises
    ------
    UsageError
        Saying what was expected.
    """
    if len(root) > MAX_UID_ROOT or not _UID_ROOT.match(root):
        raise UsageError(
            f"--uid-root {root!r}: expected your organisation's UID root ending with a dot, at "
            f"most {MAX_UID_ROOT} characters, e.g. 1.2.826.0.1.3680043.10.123."
        )


def export_results(
    config: ScanConfig,
    result: ScanResult,
    results: DicomResults,
    progress: Progress | None = None,
    pixels: PixelSource | None = None,
) -> list[WrittenStudy]:
    """Write (and send) the DICOM results of a finished scan (:mod:`auditor.pacs.dicom_out`,
    :func:`auditor.pacs.export.write_and_send`).

    Raises
    ------
    UsageError
        With ``--pseudonymise`` (the DICOM results carry the sources' identifiers).
    DicomOutputError, PacsError
        When no source is DICOM, or the PACS refuses the results.
    """
    from auditor.model.bundle import load_bundle

    check_options(config.pseudonymise, results.out_dir)
    bundle = load_bundle(config.model)
    return write_and_send(
        config.out, config.archive, bundle, result.threshold, results, progress=progress,
        pixels=pixels,
    )  # fmt: skip


@dataclass(frozen=True)
class PacsScanResult:
    """A finished PACS scan: the scan's own result and what the retrieval did.

    ``gathered`` holds every instance's final row and the retrieval's counts; ``stream`` is what
    the streamed retrieval did.
    """

    scan: ScanResult
    gathered: Gathered
    accounting: Path
    stream: StreamStats | None = None


def source_from_options(
    address: str,
    study_date: str | None = None,
    auth_file: Path | None = None,
    ca_bundle: Path | None = None,
    cache_cap_mb: float = 20_000,
) -> PacsSource:
    """The DICOMweb source from ``tlaudit scan``'s options; credentials from ``auth_file`` or the
    environment (:func:`auditor.pacs.connect.load_credentials`).

    Raises
    ------
    UsageError
        For a bad address, date range, auth file or CA bundle.
    """
    connection = PacsConnection(
        dicomweb_url(address), load_credentials(auth_file), ca_bundle=ca_bundle
    )
    dates = parse_study_date(study_date) if study_date else ""
    return PacsSource(connection, study_date=dates, cache_cap_mb=cache_cap_mb)


def route_from_options(
    address: str,
    study_date: str | None = None,
    auth_file: Path | None = None,
    ca_bundle: Path | None = None,
    cache_cap_mb: float = 20_000,
    calling_aet: str | None = None,
) -> Route:
    """The PACS source from ``tlaudit scan``'s options, by the address's route: DIMSE for
    ``dicom://CALLED_AET@HOST:PORT`` (tlaudit known to the PACS as ``calling_aet``, default
    :data:`~auditor.pacs.dimse.DEFAULT_CALLING_AET`), else DICOMweb
    (:func:`source_from_options`).

    Raises
    ------
    UsageError
        For a bad address, date range, AE title, auth file or CA bundle, or ``calling_aet``
        with a DICOMweb address.
    """
    if not is_dimse_address(address):
        if calling_aet is not None:
            raise UsageError("--calling-aet is tlaudit's AE title for a dicom:// address")
        return source_from_options(address, study_date, auth_file, ca_bundle, cache_cap_mb)
    dates = parse_study_date(study_date) if study_date else ""
    connection = dimse_connection(address, calling_aet)
    return DimseSource(connection, study_date=dates, cache_cap_mb=cache_cap_mb)


def scan_pacs(
    config: ScanConfig,
    source: Route,
    progress: Progress | None = None,
    *,
    keep_cache: bool = False,
    results: DicomResults | None = None,
) -> PacsScanResult:
    """Audit the studies of a PACS (see the module docstring).

    Parameters
    ----------
    config
        The scan as for a folder; its ``archive`` is ignored (the cache takes its place).
    source
        The PACS, by which route, and what to take from it.
    progress
        Receives :class:`~auditor.scan.config.ScanEvent` messages.
    keep_cache
        Keep the retrieved instances in ``RUN_DIR/cache`` after the scan.
    results
        Also write (and send) DICOM results (:func:`export_results`).

    Raises
    ------
    PacsAuthError, PacsError
        When the PACS refuses the credentials or the study query fails.
    NoCandidatesError
        When no instance is a candidate that could be retrieved.
    UsageError, InputFileError, BundleError
        As :func:`~auditor.scan.pipeline.run_scan`.
    """
    from auditor.scan.pipeline import run_scan  # torch loads here

    emit = progress or (lambda event: None)
    if results is not None:
        check_options(config.pseudonymise, results.out_dir)
    out = Path(config.out)
    if not config.resume and (out / JOURNAL_NAME).exists():
        raise run_in_use(out)  # before anything is retrieved into it
    emit(ScanEvent("info", f"Querying {source.describe()} ({source.login()})"))
    t0 = time.perf_counter()
    records = query(source, config.triage, out / CACHE_DIR)
    query_s = time.perf_counter() - t0
    summary = summarise(records)
    counts = ", ".join(f"{n} {status}" for status, n in summary.by_status.items() if n)
    emit(ScanEvent("info", f"PACS: {summary.total} instances ({counts}) in {query_s:.1f} s"))
    if not any(r.status is FileStatus.CANDIDATE for r in records):
        raise NoCandidatesError(source.address, summary)
    cache = out / CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    headers = None if config.pseudonymise else out / HEADERS_DIR  # identifiers in them
    stream = CacheStream(source, config.triage, records, cache, headers, keep_cache)
    scan_config = dataclasses.replace(
        config, archive=cache, records=tuple(records), feed=stream, source=source.describe()
    )
    try:
        result = run_scan(scan_config, emit)
    finally:
        stream.close()  # a scan that failed leaves no retrieval running
    stats = stream.stats()
    final = stream.finish()
    rows = tuple(final.get(r.path, r) for r in records)
    accounting = out / ACCOUNTING_NAME
    write_accounting_csv(rows, accounting)
    emit(
        ScanEvent(
            "info",
            f"PACS: {stats.retrieved} retrieved ({stats.retrieved_bytes / 1e6:.1f} MB in "
            f"{stats.retrieve_s:.1f} s, beside the scan), {stats.reused} already in the cache, "
            f"{stats.not_retrieved} not retrieved; the cache held at most "
            f"{stats.peak_bytes / 1e6:.1f} MB (cap {stats.cap_bytes / 1e6:g} MB); "
            f"rows in {accounting}",
        )
    )
    if results is not None:
        header_config = dataclasses.replace(scan_config, archive=out / HEADERS_DIR)
        try:
            export_results(header_config, result, results, emit, _again(stream, out))
        finally:
            stream.close()  # the connections the captures' retrievals opened
    if not keep_cache:
        remove_cache(out)
    gathered = Gathered(
        cache,
        rows,
        stats.retrieved,
        stats.reused,
        stats.retrieved_bytes,
        query_s,
        stats.retrieve_s,
    )
    return PacsScanResult(result, gathered, accounting, stats)


def query(source: Route, rules: TriageRules, cache: Path) -> list[FileRecord]:
    """Every instance of the PACS query, triaged from its metadata (not retrieved), in query
    order (:func:`auditor.pacs.source.triage_instances`)."""
    link = source.open()
    with (
        contextlib.closing(link),
        ThreadPoolExecutor(source.connections, thread_name_prefix="tlaudit-pacs") as pool,
    ):
        return list(triage_instances(link, source, rules, cache, pool))


def _again(stream: CacheStream, run_dir: Path) -> PixelSource:
    """The heatmap captures' pixels: each source image retrieved once more into the cache."""

    @contextlib.contextmanager
    def pixels(image: ImageCalls) -> Iterator[Path]:
        with stream.retrieved_again(run_dir / CACHE_DIR / image.image) as path:
            yield path

    return pixels


def remove_cache(run_dir: Path) -> None:
    """Remove the retrieval cache of a finished PACS scan (nothing else of the run folder)."""
    shutil.rmtree(Path(run_dir) / CACHE_DIR, ignore_errors=True)
