"""A PACS as the scan's archive: query, triage from metadata, retrieve only the candidates.

The steps below are the same for every route to a PACS (:class:`Route`): DICOMweb
(:class:`PacsSource`, QIDO-RS and WADO-RS, the words used below) and DIMSE
(:class:`auditor.pacs.dimse.DimseSource`, C-FIND and C-GET). A route only answers queries in the
shape of a QIDO-RS answer (:class:`Finder`) and retrieves one instance as a DICOM file
(:class:`Link`); the triage, the accounting, the cache, its cap and the retries live here once.

:func:`gather` runs in four steps:

1. QIDO-RS asks for the studies in the date range that hold one of the accepted modalities
   (``ModalitiesInStudy``, one query per modality), then for every instance of those studies
   with :data:`~auditor.pacs.metadata.QUERY_FIELDS`, :data:`STUDIES_PER_LISTING` studies a
   request (:func:`triage_instances`; one request per study took 4 times as long on Orthanc,
   series by series 16 times);
2. each instance is triaged from that metadata alone
   (:func:`auditor.archive.triage.triage_header`), exactly as a file's header would be;
3. WADO-RS retrieves the candidates, and only them, as stored (``transfer-syntax=*``: no
   transcoding) into the cache folder ``RUN_DIR/cache/STUDY_UID/SERIES_UID/SOP_UID.dcm``: the
   answer's bytes are written as they came (:func:`dicom_part`), not decoded and encoded again,
   each file under a temporary name and renamed when whole; a file already there from an
   interrupted run is kept, so ``--resume`` retrieves only what is missing; the cache stops
   growing at its size cap;
4. every instance the query returned becomes one accounting row
   (:class:`~auditor.archive.inventory.FileRecord`, keyed ``STUDY_UID/SERIES_UID/SOP_UID.dcm``):
   a candidate in the cache, a skipped instance with its triage reason, or an unreadable one
   (retrieval failed after its retries, cache full, a QIDO answer without UIDs) with what to do.

Requests run ``PacsSource.connections`` at a time, each thread with its own HTTP session (kept
alive between requests) asking for answers uncompressed
(:meth:`~auditor.pacs.connect.PacsConnection.session`); the studies' listings are triaged in
those threads as they arrive. Each query is one request without ``limit``/``offset`` paging:
Orthanc 1.10 ignores ``offset`` without ``limit`` and drops matches when it pages a
``ModalitiesInStudy`` query, so paging would lose studies there. A PACS that caps its answers
(many cap at a few thousand matches) needs a narrower ``--study-date`` range.

A network error is retried with back-off (:mod:`auditor.pacs.retry`) and then becomes rows,
never a crash; after :data:`GIVE_UP_AFTER` instances in a row fail to retrieve, the rest are not
tried (the PACS is down) and are rows saying so. Only a PACS that refuses the credentials, or a
study query that fails, stops the scan (:class:`~auditor.pacs.connect.PacsError`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.datadict import tag_for_keyword

from auditor.archive.inventory import FileRecord
from auditor.archive.triage import DEFAULT_MODALITIES, Reason, TriageRules, triage_header
from auditor.errors import UsageError
from auditor.pacs.connect import PacsAuthError, PacsConnection, PacsError
from auditor.pacs.metadata import QUERY_FIELDS, is_uid, json_uids, meta_from_json
from auditor.pacs.retry import RetryPolicy, call
from auditor.records import RadiographMeta
from auditor.vocab import FileStatus

logger = logging.getLogger(__name__)

CACHE_DIR = "cache"
"""Folder inside the run folder that holds the retrieved candidates until the scan ends."""

DEFAULT_CACHE_CAP_MB = 20_000
GIVE_UP_AFTER = 3
"""Consecutive instances whose retrieval failed after which the PACS counts as down."""
DEFAULT_CONNECTIONS = 4
"""Requests in flight at once: on Orthanc on loopback (2 shared cores) 4 and 8 retrieved alike
and faster than 1 (docs/speed.md); 4 asks less of the PACS."""

WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
"""The WADO-RS media type asked for: each instance as stored, never transcoded (PS3.18 8.7.3)."""

_DATE = re.compile(r"^(\d{8})?-(\d{8})?$")


def parse_study_date(text: str) -> str:
    """A ``--study-date`` value as the QIDO-RS range it stands for.

    ``FROM-TO`` with dates as ``YYYYMMDD`` or ``YYYY-MM-DD``; either end may be left open
    (``20200101-``, ``-20201231``); a single date means that day.

    Raises
    ------
    UsageError
        For anything else, or a range that ends before it starts.
    """
    compact = text.strip()
    # YYYY-MM-DD -> YYYYMMDD, leaving the range's own dash
    compact = re.sub(r"(\d{4})-(\d{2})-(\d{2})", r"\1\2\3", compact)
    if re.fullmatch(r"\d{8}", compact):
        compact = f"{compact}-{compact}"
    match = _DATE.match(compact)
    if match is None or compact == "-":
        raise UsageError(
            f"--study-date {text!r}: expected FROM-TO as YYYYMMDD-YYYYMMDD (or YYYY-MM-DD), "
            "either end may be open"
        )
    start, end = match.groups()
    if start and end and start > end:
        raise UsageError(f"--study-date {text!r}: the range ends before it starts")
    return compact


class Finder(Protocol):
    """The queries :func:`triage_instances` asks, answered as DICOM JSON objects (PS3.18 F.2)
    with the asked-for attributes (the subset of dicomweb-client's ``DICOMwebClient`` used here).

    Failures that may pass raise what :func:`~auditor.pacs.retry.call` retries; a PACS that
    refuses tlaudit raises :class:`~auditor.pacs.connect.PacsAuthError`.
    """

    def search_for_studies(
        self, *, search_filters: dict[str, Any], fields: list[str]
    ) -> list[dict[str, Any]]:
        """Studies matching ``search_filters`` (``ModalitiesInStudy``, ``StudyDate``), each with
        its Study Instance UID and ``fields``."""
        ...

    def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        *,
        search_filters: dict[str, Any] | None = None,
        fields: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Every instance of one study, or of the studies listed in
        ``search_filters["StudyInstanceUID"]`` (comma-separated), each with its Study, Series and
        SOP Instance UIDs and ``fields``."""
        ...


class Link(Protocol):
    """One scan's connections to a PACS, shared by its threads (each request on a connection
    no other thread uses at the time; kept open between requests)."""

    def client(self) -> Finder:
        """The queries, for the calling thread."""
        ...

    def retrieve(self, meta: RadiographMeta) -> memoryview:
        """The instance ``meta`` names (its Study, Series, SOP Instance UIDs) as a DICOM Part 10
        file, its data set as the PACS stores it, after the route's retries.

        Raises
        ------
        PacsError
            When the retrieval fails after its retries (PacsAuthError when refused).
        """
        ...

    def close(self) -> None:
        """Close the connections kept open; a later request opens new ones."""
        ...


class Route(Protocol):
    """What to take from which PACS, by which protocol, and where to put it: what the scan
    needs of :class:`PacsSource` (DICOMweb) and :class:`~auditor.pacs.dimse.DimseSource`
    (DIMSE)."""

    @property
    def study_date(self) -> str:
        """A date range (:func:`parse_study_date`), "" for all dates."""
        ...

    @property
    def cache_cap_mb(self) -> float:
        """The cache folder stops growing at this size."""
        ...

    @property
    def retry(self) -> RetryPolicy:
        """Retries and back-off of each request."""
        ...

    @property
    def connections(self) -> int:
        """Requests in flight at once."""
        ...

    @property
    def address(self) -> str:
        """Where the PACS is, for messages (no credentials in it)."""
        ...

    @property
    def queries(self) -> str:
        """The query service's name, for messages (``QIDO-RS``, ``C-FIND``)."""
        ...

    def describe(self) -> str:
        """The source in words, for the reports (no credentials in it)."""
        ...

    def login(self) -> str:
        """How tlaudit makes itself known, in words (never a secret)."""
        ...

    def open(self) -> Link:
        """Connections for one scan (:meth:`Link.close` them when it ends)."""
        ...


@dataclass(frozen=True, kw_only=True)
class RouteOptions:
    """What every route takes beside its connection (keywords only, after it).

    Attributes
    ----------
    study_date
        A date range (:func:`parse_study_date`), "" for all dates.
    cache_cap_mb
        The cache folder stops growing at this size; candidates beyond it are rows saying so.
    retry
        Retries and back-off of each request.
    connections
        Requests in flight at once (instance listings, retrievals), each thread with its own
        connection.

    Raises
    ------
    UsageError
        For a cap that is not positive or fewer than one connection.
    """

    study_date: str = ""
    cache_cap_mb: float = DEFAULT_CACHE_CAP_MB
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connections: int = DEFAULT_CONNECTIONS

    def __post_init__(self) -> None:
        if self.cache_cap_mb <= 0:
            raise UsageError(f"--cache-cap-mb must be positive, got {self.cache_cap_mb}")
        if self.connections < 1:
            raise UsageError(f"connections must be at least 1, got {self.connections}")


@dataclass(frozen=True)
class PacsSource(RouteOptions):
    """What to take from which DICOMweb service, and where to put it (a :class:`Route`): the
    service and how to log in (``connection``), and the :class:`RouteOptions` (the date range
    a QIDO-RS one, each connection a thread's own HTTP session)."""

    connection: PacsConnection

    @property
    def address(self) -> str:
        """The service's base URL."""
        return self.connection.url

    @property
    def queries(self) -> str:
        """``QIDO-RS``."""
        return "QIDO-RS"

    def describe(self) -> str:
        """The source in words, for the reports (no credentials in it)."""
        dates = f", studies {self.study_date}" if self.study_date else ""
        return f"DICOMweb {self.connection.url}{dates}"

    def login(self) -> str:
        """The credentials in words, without the secret."""
        return self.connection.credentials.describe()

    def open(self) -> Sessions:
        """One HTTP session per thread that asks (:class:`Sessions`)."""
        return Sessions(self.connection, self.retry)


@dataclass(frozen=True)
class Gathered:
    """What :func:`gather` found and retrieved.

    Attributes
    ----------
    cache
        The folder holding the retrieved candidates (the scan's archive).
    records
        One accounting row per instance the query returned (and per series whose instances
        could not be listed), in query order.
    retrieved, reused
        Candidates retrieved now, and found whole in the cache from an interrupted run.
    retrieved_bytes
        Bytes written to the cache now.
    query_s, retrieve_s
        Time spent querying and retrieving.
    """

    cache: Path
    records: tuple[FileRecord, ...]
    retrieved: int
    reused: int
    retrieved_bytes: int
    query_s: float
    retrieve_s: float

    def not_cached(self) -> tuple[FileRecord, ...]:
        """The rows of instances that are not in the cache (the scan's inventory of the cache
        gives the others)."""
        return tuple(r for r in self.records if r.status is not FileStatus.CANDIDATE)


def relpath_for(study: str, series: str, sop: str) -> str:
    """The cache-relative key of one instance: ``STUDY_UID/SERIES_UID/SOP_UID.dcm``."""
    return f"{study}/{series}/{sop}.dcm"


def _items(answer: Any) -> list[Mapping[str, Any]]:
    return [item for item in (answer or []) if isinstance(item, Mapping)]


class Sessions:
    """The DICOMweb :class:`Link`: one HTTP session, and a DICOMweb client on it, per thread that
    asks (requests' sessions are not thread-safe); each keeps its connection to the PACS alive
    between requests."""

    def __init__(self, connection: PacsConnection, retry: RetryPolicy | None = None) -> None:
        self.connection = connection
        self.retry = retry or RetryPolicy()
        self._local = threading.local()

    def session(self) -> requests.Session:
        """This thread's session."""
        if not hasattr(self._local, "session"):
            self._local.session = self.connection.session()
        session: requests.Session = self._local.session
        return session

    def client(self) -> DICOMwebClient:
        """This thread's DICOMweb client, on :meth:`session`."""
        if not hasattr(self._local, "client"):
            self._local.client = self.connection.client(self.session())
        client: DICOMwebClient = self._local.client
        return client

    def retrieve(self, meta: RadiographMeta) -> memoryview:
        """One instance with WADO-RS, as stored (:data:`WADO_ACCEPT`), after its retries."""
        url = (
            f"{self.connection.url}/studies/{meta.study_uid}/series/{meta.series_uid}"
            f"/instances/{meta.sop_uid}"
        )
        body, content_type = call(
            f"WADO-RS instance {meta.sop_uid}",
            functools.partial(fetch_answer, self.session(), url, self.connection.timeout_s),
            self.retry,
        )
        return dicom_part(body, content_type)

    def close(self) -> None:
        """Nothing to do: each thread's session closes with the thread's end."""


STUDIES_PER_LISTING = 32
"""Studies whose instances one QIDO-RS request lists (UID list matching, PS3.18 8.3.4.1)."""

_STUDY_INSTANCES = "00201208"  # Number of Study Related Instances


def _studies_with(client: Finder, source: Route, modality: str) -> list[Mapping[str, Any]]:
    filters: dict[str, Any] = {"ModalitiesInStudy": modality}
    if source.study_date:
        filters["StudyDate"] = source.study_date
    return _items(
        call(
            f"{source.queries} studies ({modality})",
            functools.partial(
                client.search_for_studies,
                search_filters=filters,
                fields=["NumberOfStudyRelatedInstances"],
            ),
            source.retry,
        )
    )


def query_studies(client: Finder, source: Route, modalities: Iterable[str]) -> list[str]:
    """Study Instance UIDs in the date range holding one of ``modalities``, in answer order
    (modalities sorted), one request per modality, one after the other."""
    found = (_studies_with(client, source, modality) for modality in sorted(modalities))
    return list(_study_counts(found))


def _study_counts(answers: Iterable[list[Mapping[str, Any]]]) -> dict[str, int | None]:
    """Study Instance UID -> how many instances the PACS says the study holds (None when it
    does not say), in answer order."""
    found: dict[str, int | None] = {}
    for items in answers:
        for item in items:
            study = json_uids(item)[0]
            if study and study not in found:
                found[study] = _count(item)
    return found


def _count(item: Mapping[str, Any]) -> int | None:
    try:
        return int(item[_STUDY_INSTANCES]["Value"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _instances_of(client: Finder, source: Route, studies: list[str]) -> list[Mapping[str, Any]]:
    """Every instance of ``studies``: one study by its path, several by UID list matching."""
    if len(studies) == 1:
        what, fetch = (
            f"study {studies[0]}",
            functools.partial(client.search_for_instances, studies[0], fields=list(QUERY_FIELDS)),
        )
    else:
        what, fetch = (
            f"{len(studies)} studies",
            functools.partial(
                client.search_for_instances,
                search_filters={"StudyInstanceUID": ",".join(studies)},
                fields=list(QUERY_FIELDS),
            ),
        )
    return _items(call(f"{source.queries} instances of {what}", fetch, source.retry))


def _row(
    cache: Path, relpath: str, status: FileStatus, reason: Reason, detail: str, meta: Any = None
) -> FileRecord:
    return FileRecord(cache / relpath, relpath, 0, status, reason, detail, meta)


def triage_instances(
    sessions: Link,
    source: Route,
    rules: TriageRules,
    cache: Path,
    pool: ThreadPoolExecutor,
) -> Iterator[FileRecord]:
    """Steps 1 and 2 of the module docstring: one triaged row per instance (size 0: not
    retrieved yet), in study order.

    The studies' instances are listed up to :data:`STUDIES_PER_LISTING` studies a request (fewer
    when that keeps all ``source.connections`` busy), and triaged, in ``pool``. A study that such a
    listing leaves out, or gives fewer instances than the study query said it holds (a PACS
    that caps its answers, or knows no UID list matching), is listed again on its own. A study
    whose listing fails after its retries is one unreadable row.

    Raises
    ------
    PacsAuthError
        When the PACS refuses the credentials.
    PacsError
        When a study query fails after its retries.
    """
    modalities = rules.modalities or DEFAULT_MODALITIES
    studies = _study_counts(
        pool.map(
            lambda modality: _studies_with(sessions.client(), source, modality),
            sorted(modalities),
        )
    )

    def listing(batch: list[str]) -> list[FileRecord]:
        try:
            items = _instances_of(sessions.client(), source, batch)
        except PacsAuthError:
            raise
        except PacsError as err:
            if len(batch) > 1:  # perhaps the list itself: each study on its own
                return [row for study in batch for row in listing([study])]
            return [
                _row(cache, f"{batch[0]}/", FileStatus.UNREADABLE, Reason.CANNOT_OPEN, str(err))
            ]
        by_study: dict[str, list[Mapping[str, Any]]] = {study: [] for study in batch}
        for item in items:
            study = json_uids(item)[0]
            if len(batch) == 1:
                study = study or batch[0]
            if study in by_study:
                by_study[study].append(item)
        rows: list[FileRecord] = []
        for study, found in by_study.items():
            expected = studies.get(study)
            if len(batch) > 1 and (not found or (expected is not None and len(found) < expected)):
                rows += listing([study])
            else:
                rows += [_triaged(item, study, rules, cache, source.queries) for item in found]
        return rows

    # as many studies a request as keep every connection busy, at most STUDIES_PER_LISTING
    order = list(studies)
    size = min(STUDIES_PER_LISTING, max(1, -(-len(order) // source.connections)))
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    for rows in pool.map(listing, batches):
        yield from rows


_ASKED_FOR = frozenset(
    f"{tag_for_keyword(keyword):08X}"
    for keyword in (*QUERY_FIELDS, "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
)


def _asked_for(item: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of a QIDO-RS answer that were asked for: PACS add others (Orthanc its
    patient and study tags), and reading them would double the time an instance takes."""
    return {tag: value for tag, value in item.items() if tag in _ASKED_FOR}


def _triaged(
    item: Mapping[str, Any],
    study: str,
    rules: TriageRules,
    cache: Path,
    queries: str = "QIDO-RS",
) -> FileRecord:
    found_study, series, sop = json_uids(item)
    study = found_study or study
    if not all(is_uid(uid) for uid in (study, series, sop)):
        return _row(
            cache,
            relpath_for(study, series, sop or "unknown"),
            FileStatus.UNREADABLE,
            Reason.UNREADABLE_HEADER,
            f"{queries} answer without a valid Study/Series/SOP Instance UID ({study!r}, "
            f"{series!r}, {sop!r}); the PACS must return them for every instance",
        )
    relpath = relpath_for(study, series, sop)
    try:
        meta = meta_from_json(_asked_for(item), cache / relpath)
    except (ValueError, TypeError, KeyError) as err:
        return _row(
            cache,
            relpath,
            FileStatus.UNREADABLE,
            Reason.UNREADABLE_HEADER,
            f"{queries} answer is not DICOM JSON pydicom reads: {err}",
        )
    if meta.has_pixels and not meta.photometric:
        # Many PACS leave Photometric Interpretation out of QIDO-RS answers; triage would call
        # the image colour. Assume grey here: a retrieved candidate is triaged again from its
        # own header by the scan's inventory, and the row keeps the answer as it was.
        decision = triage_header(replace(meta, photometric="MONOCHROME2"), relpath, rules)
        decision = replace(
            decision,
            detail=f"{decision.detail}; Photometric Interpretation not in the {queries} answer "
            "(checked in the retrieved file)",
        )
    else:
        decision = triage_header(meta, relpath, rules)
    return FileRecord(
        meta.path, relpath, 0, decision.status, decision.reason, decision.detail, meta
    )


def _cache_size(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*.dcm") if p.is_file())


def dicom_part(body: bytes, content_type: str) -> memoryview:
    """The DICOM file in a WADO-RS answer to a request for one instance: the first part of a
    ``multipart/related`` body (PS3.18 8.7.3.1), or the whole body of an ``application/dicom``
    answer.

    Raises
    ------
    ValueError
        When the body has no such part, or the part is not a DICOM Part 10 file (no ``DICM``
        after the 128-byte preamble, PS3.10 7.1).
    """
    data = memoryview(body)
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "multipart/related":
        found = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.IGNORECASE)
        if found is None:
            raise ValueError(f"WADO-RS answer {content_type!r} names no multipart boundary")
        delimiter = b"--" + found.group(1).strip().encode("ascii")
        opening = body.find(delimiter)
        headers_end = body.find(b"\r\n\r\n", opening) if opening >= 0 else -1
        closing = body.find(b"\r\n" + delimiter, headers_end) if headers_end >= 0 else -1
        if closing < 0:
            raise ValueError(f"WADO-RS answer of {len(body)} bytes is not a whole multipart body")
        data = data[headers_end + 4 : closing]
    elif media_type != "application/dicom":
        raise ValueError(f"WADO-RS answered {content_type!r}; expected application/dicom")
    if bytes(data[128:132]) != b"DICM":
        raise ValueError(
            f"WADO-RS answer is not a DICOM file ({len(data)} bytes without DICM at byte 128)"
        )
    return data


READ_CHUNK = 1 << 20
"""Bytes read from the socket at a time: with requests' default of 10 kB, one loopback connection
read 9 MB answers at 349 instead of 453 MB/s (docs/speed.md)."""


def fetch_answer(session: requests.Session, url: str, timeout_s: float) -> tuple[bytes, str]:
    """One WADO-RS answer: (its body, its Content-Type); an answer that breaks off is a
    connection error (retried)."""
    try:
        with session.get(
            url, headers={"Accept": WADO_ACCEPT}, timeout=timeout_s, stream=True
        ) as response:
            response.raise_for_status()
            body = b"".join(response.iter_content(READ_CHUNK))
    except requests.exceptions.ChunkedEncodingError as err:
        raise requests.ConnectionError(f"the answer broke off: {err}") from err
    return body, response.headers.get("Content-Type", "")


def _store(link: Link, record: FileRecord) -> int:
    """Retrieve one instance into its cache path, its bytes as the PACS sent them; returns the
    bytes written."""
    meta = record.meta
    assert meta is not None  # candidates always carry their metadata
    data = link.retrieve(meta)
    record.path.parent.mkdir(parents=True, exist_ok=True)
    partial = record.path.with_name(record.path.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, record.path)
    return len(data)


class _Budget:
    """What the retrieval threads share: the cache's size against its cap, and how many
    retrievals in a row have failed (the PACS counts as down after :data:`GIVE_UP_AFTER`)."""

    def __init__(self, size: int, cap: int) -> None:
        self.lock = threading.Lock()
        self.size = size
        self.cap = cap
        self.failed_in_a_row = 0

    def refusal(self) -> str:
        """Why no further retrieval is tried ("" when it may be)."""
        with self.lock:
            if self.failed_in_a_row >= GIVE_UP_AFTER:
                return (
                    f"not retrieved: the PACS stopped answering ({GIVE_UP_AFTER} retrievals in a "
                    "row failed); rerun with --resume when it is back"
                )
            if self.size >= self.cap:
                return (
                    f"not retrieved: the cache reached its cap of {self.cap / 1e6:g} MB; rerun "
                    "with --resume and a larger --cache-cap-mb"
                )
        return ""

    def done(self, outcome: str, size: int) -> None:
        with self.lock:
            if outcome == "retrieved":
                self.size += size
            self.failed_in_a_row = self.failed_in_a_row + 1 if outcome == "failed" else 0


def gather(
    source: Route,
    rules: TriageRules,
    run_dir: Path,
    on_record: Callable[[FileRecord], None] | None = None,
) -> Gathered:
    """Query, triage and retrieve (the module docstring's steps); never raises for one instance.

    ``source.connections`` requests run at once; rows come back in query order. The cache may
    pass its cap by up to that many instances less one (those already in flight).

    Parameters
    ----------
    source
        The PACS and what to take from it.
    rules
        Triage rules (``rules.modalities`` also narrows the study query).
    run_dir
        The scan's run folder; the cache is ``run_dir/cache``.
    on_record
        Called with each row when it is final (progress display).

    Raises
    ------
    PacsAuthError
        When the PACS refuses the credentials.
    PacsError
        When the study query fails after its retries.
    """
    cache = Path(run_dir) / CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    for partial in cache.rglob("*.part"):  # left by a killed run
        partial.unlink(missing_ok=True)
    link = source.open()
    with (
        contextlib.closing(link),
        ThreadPoolExecutor(source.connections, thread_name_prefix="tlaudit-pacs") as pool,
    ):
        t0 = time.perf_counter()
        triaged = list(triage_instances(link, source, rules, cache, pool))
        query_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        budget = _Budget(_cache_size(cache), int(source.cache_cap_mb * 1e6))

        def final(record: FileRecord) -> tuple[FileRecord, str]:
            if record.status is not FileStatus.CANDIDATE:
                return record, "not a candidate"
            return _retrieve_one(link, record, budget)

        counts = {"reused": 0, "retrieved": 0}
        written = 0
        records: list[FileRecord] = []
        # one connection: one after the other, each row final before the next request
        mapper = pool.map if source.connections > 1 else map
        for record, outcome in mapper(final, triaged):
            if outcome in counts:
                counts[outcome] += 1
            if outcome == "retrieved":
                written += record.size
            if on_record is not None:
                on_record(record)
            records.append(record)
    return Gathered(
        cache,
        tuple(records),
        counts["retrieved"],
        counts["reused"],
        written,
        query_s,
        time.perf_counter() - t1,
    )


def _retrieve_one(
    link: Link,
    record: FileRecord,
    budget: _Budget,
) -> tuple[FileRecord, str]:
    """One candidate: (its final row, "reused" / "retrieved" / "failed" / "not tried")."""

    def failed(detail: str) -> FileRecord:
        return FileRecord(
            record.path, record.relpath, 0, FileStatus.UNREADABLE, Reason.CANNOT_OPEN, detail,
            record.meta,
        )  # fmt: skip

    if record.path.is_file():
        size_now = record.path.stat().st_size
        return FileRecord(
            record.path,
            record.relpath,
            size_now,
            record.status,
            record.reason,
            record.detail + "; in the cache from an earlier run",
            record.meta,
        ), "reused"
    refusal = budget.refusal()
    if refusal:
        return failed(refusal), "not tried"
    try:
        stored = _store(link, record)
    except PacsAuthError:
        raise
    except PacsError as err:
        budget.done("failed", 0)
        return failed(f"not retrieved: {err}"), "failed"
    except Exception as err:  # a malformed answer or a full disk: this instance's row, not a crash
        logger.warning("%s: retrieval failed", record.relpath, exc_info=True)
        budget.done("failed", 0)
        return failed(f"not retrieved: {type(err).__name__}: {err}"), "failed"
    budget.done("retrieved", stored)
    return FileRecord(
        record.path,
        record.relpath,
        stored,
        record.status,
        record.reason,
        record.detail,
        record.meta,
    ), "retrieved"
