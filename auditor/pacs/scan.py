"""``tlaudit scan dicomweb+https://...``: the audit of studies held by a PACS.

:func:`scan_pacs` gathers the candidates into ``RUN_DIR/cache``
(:func:`auditor.pacs.source.gather`), writes every instance's accounting row to
``RUN_DIR/pacs_accounting.csv``, runs the ordinary scan (:func:`auditor.scan.pipeline.run_scan`)
on the cache with the rows of the instances not retrieved, and removes the cache when the scan
has finished (``keep_cache`` keeps it, e.g. for ``tlaudit review``, which shows the images). An
interrupted scan leaves the cache in place, so ``--resume`` retrieves only what is missing and
classifies only what the journal lacks.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from auditor.archive.inventory import NoCandidatesError, summarise, write_accounting_csv
from auditor.pacs.connect import PacsConnection, dicomweb_url, load_credentials
from auditor.pacs.source import CACHE_DIR, Gathered, PacsSource, gather, parse_study_date
from auditor.scan.config import Progress, ScanConfig, ScanEvent, ScanResult
from auditor.scan.journal import JOURNAL_NAME, run_in_use
from auditor.vocab import FileStatus

logger = logging.getLogger(__name__)

ACCOUNTING_NAME = "pacs_accounting.csv"
"""Every instance the PACS query returned, one row each (columns of the inventory's CSV)."""


@dataclass(frozen=True)
class PacsScanResult:
    """A finished PACS scan: the scan's own result and what the retrieval did."""

    scan: ScanResult
    gathered: Gathered
    accounting: Path


def source_from_options(
    address: str,
    study_date: str | None = None,
    auth_file: Path | None = None,
    ca_bundle: Path | None = None,
    cache_cap_mb: float = 20_000,
) -> PacsSource:
    """The PACS source from ``tlaudit scan``'s options; credentials from ``auth_file`` or the
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


def scan_pacs(
    config: ScanConfig,
    source: PacsSource,
    progress: Progress | None = None,
    *,
    keep_cache: bool = False,
) -> PacsScanResult:
    """Audit the studies of a PACS (see the module docstring).

    Parameters
    ----------
    config
        The scan as for a folder; its ``archive`` is ignored (the cache takes its place).
    source
        The PACS and what to take from it.
    progress
        Receives :class:`~auditor.scan.config.ScanEvent` messages.
    keep_cache
        Keep the retrieved instances in ``RUN_DIR/cache`` after the scan.

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
    out = Path(config.out)
    if not config.resume and (out / JOURNAL_NAME).exists():
        raise run_in_use(out)  # before anything is retrieved into it
    emit(
        ScanEvent(
            "info", f"Querying {source.describe()} ({source.connection.credentials.describe()})"
        )
    )
    gathered = gather(source, config.triage, out)
    accounting = out / ACCOUNTING_NAME
    summary = write_accounting_csv(gathered.records, accounting)
    counts = ", ".join(f"{n} {status}" for status, n in summary.by_status.items() if n)
    emit(
        ScanEvent(
            "info",
            f"PACS: {summary.total} instances ({counts}) in {gathered.query_s:.1f} s; "
            f"{gathered.retrieved} retrieved ({gathered.retrieved_bytes / 1e6:.1f} MB in "
            f"{gathered.retrieve_s:.1f} s), {gathered.reused} already in the cache; "
            f"rows in {accounting}",
        )
    )
    if not any(r.status is FileStatus.CANDIDATE for r in gathered.records):
        raise NoCandidatesError(source.connection.url, summarise(gathered.records))
    scan_config = dataclasses.replace(
        config,
        archive=gathered.cache,
        extra_records=gathered.not_cached(),
        source=source.describe(),
    )
    result = run_scan(scan_config, emit)
    if not keep_cache:
        remove_cache(out)
    return PacsScanResult(result, gathered, accounting)


def remove_cache(run_dir: Path) -> None:
    """Remove the retrieval cache of a finished PACS scan (nothing else of the run folder)."""
    shutil.rmtree(Path(run_dir) / CACHE_DIR, ignore_errors=True)
