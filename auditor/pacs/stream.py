"""The candidates of a PACS, retrieved while the scan classifies them, in a cache of bounded size.

:class:`CacheStream` is the scan's :class:`~auditor.scan.feed.ImageFeed` for a PACS scan with a
box file (:func:`auditor.pacs.scan.scan_pacs`). Once the scan knows which images it will
classify (those the journal lacks) and in which batches, :meth:`CacheStream.start` retrieves
them in that order through the source's route (WADO-RS or C-GET), as
:func:`auditor.pacs.source.gather` does (each instance as
stored, under a temporary name renamed when whole, ``source.connections`` requests in flight,
each with its retries), into ``RUN_DIR/cache/STUDY_UID/SERIES_UID/SOP_UID.dcm``:

* **the cap is back-pressure**: an instance is written only when the cache has room for it
  (``--cache-cap-mb``), room made by the images the localizer's pass has read or the scan has
  committed to its journal, whose files go at once (:meth:`CacheStream.localized`,
  :meth:`CacheStream.journaled`; ``--keep-cache`` keeps them, and then an instance that does
  not fit is not retrieved). Files are admitted in the scan's order, so the
  images the loader needs first are never crowded out by later ones. While an instance waits
  for room, the requests already in flight finish into memory (at most ``connections``
  instances);
* **what cannot be retrieved is one row saying what to do**, and a failure marker beside its
  path (:func:`~auditor.scan.feed.failed_marker`), so the loader never waits for it: an
  instance that fails after its retries, the rest when :data:`~auditor.pacs.source.GIVE_UP_AFTER`
  fail in a row (the PACS is down), an instance larger than the cap on its own, and one that
  cannot fit beside the other images of its batch (a batch's files are all needed before any of
  them is classified: the cap must hold one batch, ``--batch-size`` vertebrae). The scan then
  reports the row and forgets the image, so ``--resume`` retrieves it;
* each retrieved file is triaged again from **its own header** (a PACS may leave attributes out
  of its QIDO-RS answers), and that header without its pixels is kept in ``RUN_DIR/pacs_headers``
  (same layout) for the DICOM results (:mod:`auditor.pacs.export`), which are built once the
  cache is empty; not by a pseudonymised scan, whose run folder holds no identifiers.

``--resume``: the images in the journal are not asked for, nor those the localizer's journal
holds (:func:`auditor.localizer.archive.localize_archive`) for the localizer's pass, nor, for
classification, those whose spent marker an interrupted run left; whole files an interrupted run
left in the cache are used as they are, the others removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom

from auditor.archive.inventory import FileRecord
from auditor.archive.triage import Reason, TriageRules, triage_header
from auditor.errors import READ_FAILURES
from auditor.io.radiograph import read_header
from auditor.pacs.connect import PacsAuthError, PacsError
from auditor.pacs.source import GIVE_UP_AFTER, Route
from auditor.scan.feed import failed_marker, spent_marker
from auditor.vocab import FileStatus

logger = logging.getLogger(__name__)

HEADERS_DIR = "pacs_headers"
"""Folder of the run folder with each retrieved instance's header, pixels left out."""


@dataclass(frozen=True)
class StreamStats:
    """What a :class:`CacheStream` did.

    Attributes
    ----------
    retrieved, reused, not_retrieved
        Instances retrieved now, found whole in the cache from an interrupted run, and not
        retrieved (each a row saying why).
    retrieved_bytes
        Bytes written to the cache now.
    peak_bytes
        The most the cache held at once (what it admitted: whole files and the ones being
        written), against ``cap_bytes``.
    cap_bytes
        The cap (``--cache-cap-mb``).
    retrieve_s
        From :meth:`CacheStream.start` to the last instance written or given up.
    waited_s
        Time instances spent waiting for room in the cache.
    """

    retrieved: int
    reused: int
    not_retrieved: int
    retrieved_bytes: int
    peak_bytes: int
    cap_bytes: int
    retrieve_s: float
    waited_s: float


_AGAIN = "rerun with --resume (it retrieves only what the journal lacks)"


class _Refused(Exception):
    """An instance that is not admitted to the cache (the message is its row's detail)."""


class CacheStream:
    """Retrieve a PACS's candidates into the cache while the scan classifies them (see the
    module docstring).

    Parameters
    ----------
    source
        The PACS, the cap and the requests in flight.
    rules
        Triage rules, applied again to each retrieved file's own header.
    records
        The query's rows; the candidates among them are what may be asked for.
    cache
        The cache folder (``RUN_DIR/cache``).
    headers
        Where each retrieved file's header goes (``RUN_DIR/pacs_headers``); None keeps none (a
        pseudonymised scan leaves no identifiers in its run folder).
    keep
        Keep each file after its image is journaled (``--keep-cache``).
    """

    def __init__(
        self,
        source: Route,
        rules: TriageRules,
        records: Sequence[FileRecord],
        cache: Path,
        headers: Path | None,
        keep: bool = False,
    ) -> None:
        self.source = source
        self.rules = rules
        self.cache = cache
        self.headers = headers
        self.keep = keep
        self._records = {r.path: r for r in records if r.status is FileStatus.CANDIDATE}
        self._link = source.open()
        self._cap = int(source.cache_cap_mb * 1e6)
        self._room = threading.Condition()
        self._resident: dict[Path, tuple[int, int]] = {}  # path -> (bytes, batch)
        self._used = 0
        self._peak = 0
        self._final: dict[Path, FileRecord] = {}
        self._order: list[Path] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._counts = {"retrieved": 0, "reused": 0, "bytes": 0}
        self._waited = 0.0
        self._t0 = self._t1 = 0.0

    # -- the ImageFeed side -------------------------------------------------------------------

    def localize(self, paths: Sequence[Path]) -> None:
        """Retrieve these files for the localizer's pass, one after another, in a background
        thread (each file its own batch: the pass frees them in this order). Nothing to read
        (a resumed pass whose journal holds every image) leaves the cache as it is."""
        for path in paths:  # a marker whose image the localizer's journal lacks: stale
            spent_marker(path).unlink(missing_ok=True)
        if paths:
            self._begin([[path] for path in paths], spent_too=False)

    def localized(self, path: Path, stored: bool) -> None:
        """The localizer's pass is done with this file: it goes (not with ``keep``), and when
        its crops are ``stored`` a spent marker takes its place."""
        failed_marker(path).unlink(missing_ok=True)
        if self.keep or not path.is_file():
            return
        if stored:
            spent_marker(path).touch()
        path.unlink(missing_ok=True)
        self._release(path)

    def start(self, batches: Sequence[Sequence[Path]]) -> None:
        """Retrieve these files, batch after batch, in a background thread; a spent file (its
        crops stored by the localizer's pass) is not retrieved."""
        self._begin(batches, spent_too=True)

    def _begin(self, batches: Sequence[Sequence[Path]], spent_too: bool) -> None:
        if self._thread is not None:  # the localizer's retrieval, ended with its pass
            self._thread.join()
            self._thread = None
        order = [(b, path) for b, batch in enumerate(batches) for path in batch]
        asked = [path for _, path in order]
        self._order = [*self._order, *(path for path in asked if path not in self._final)]
        self._t0 = self._t0 or time.perf_counter()
        wanted = set(asked)
        self.cache.mkdir(parents=True, exist_ok=True)
        for left in [*self.cache.rglob("*.part"), *self.cache.rglob("*.failed")]:
            left.unlink(missing_ok=True)  # an interrupted run's, or a failure to retry
        for found in self.cache.rglob("*.dcm"):
            if found not in wanted and not self.keep:
                found.unlink(missing_ok=True)  # its image is in the journal
                self._release(found)
        fetch: list[tuple[int, Path]] = []
        for batch, path in order:
            record = self._records.get(path)
            earlier = self._final.get(path)
            if record is None:
                self._fail(path, "not retrieved: not a candidate of the PACS query")
            elif (
                earlier is not None
                and earlier.status is FileStatus.CANDIDATE
                and (path.is_file() or (spent_too and spent_marker(path).is_file()))
            ):
                if path in self._resident:  # kept since the localizer's pass (--keep-cache)
                    self._resident[path] = (self._resident[path][0], batch)
            elif spent_too and spent_marker(path).is_file():  # crops stored by an earlier run
                self._counts["reused"] += 1
                self._final[path] = replace(
                    record, detail=record.detail + "; its crops stored by an earlier run"
                )
            elif path.is_file():
                size = path.stat().st_size
                self._resident[path] = (size, batch)
                self._used += size
                self._counts["reused"] += 1
                try:  # the file's own header, as for one retrieved now
                    record = replace(record, meta=read_header(path))
                except READ_FAILURES as err:
                    logger.warning("%s: header unreadable, the query's kept (%s)", path, err)
                self._final[path] = replace(
                    record, size=size, detail=record.detail + "; in the cache from an earlier run"
                )
            else:
                fetch.append((batch, path))
        self._peak = max(self._peak, self._used)
        self._thread = threading.Thread(
            target=self._run, args=(fetch,), name="tlaudit-pacs-stream", daemon=True
        )
        self._thread.start()

    def journaled(self, paths: Sequence[Path]) -> None:
        """These images are committed: their files go (not with ``keep``), making room."""
        for path in paths:
            failed_marker(path).unlink(missing_ok=True)
            if not self.keep:
                path.unlink(missing_ok=True)  # gone before its room is given to another
                self._release(path)

    def finish(self) -> Mapping[Path, FileRecord]:
        """Wait for the retrieval to end; every file asked for (by either pass) as its final
        row."""
        self.close()
        for path in self._order:
            if path not in self._final:  # never reached: the retrieval thread ended early
                self._fail(path, "not retrieved: the retrieval stopped; rerun with --resume")
        return {path: self._final[path] for path in self._order}

    def close(self) -> None:
        """Stop admitting instances that would wait for room, wait for the thread, and close the
        connections to the PACS (:meth:`retrieved_again` opens new ones; close again after)."""
        with self._room:
            self._closing = True
            self._room.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._link.close()

    def stats(self) -> StreamStats:
        """What the stream did so far."""
        end = self._t1 or time.perf_counter()
        failed = sum(r.status is not FileStatus.CANDIDATE for r in self._final.values())
        return StreamStats(
            self._counts["retrieved"],
            self._counts["reused"],
            failed,
            self._counts["bytes"],
            self._peak,
            self._cap,
            end - self._t0 if self._t0 else 0.0,
            self._waited,
        )

    # -- the retrieval thread -----------------------------------------------------------------

    def _run(self, fetch: list[tuple[int, Path]]) -> None:
        try:
            self._retrieve(fetch)
        except BaseException as err:  # a bug must not leave the loader waiting: rows for the rest
            logger.exception("the PACS retrieval stopped")
            for _, path in fetch:
                if path not in self._final:
                    self._fail(path, f"not retrieved: {type(err).__name__}: {err}; {_AGAIN}")
        finally:
            self._t1 = time.perf_counter()

    def _retrieve(self, fetch: list[tuple[int, Path]]) -> None:
        """Downloads run ``connections`` at a time; files are admitted one by one, in order."""
        waiting = iter(fetch)
        pending: deque[tuple[int, Path, Future[memoryview]]] = deque()
        failed_in_a_row = 0
        with ThreadPoolExecutor(self.source.connections, thread_name_prefix="tlaudit-wado") as pool:

            def ask() -> None:
                nxt = next(waiting, None)
                if nxt is not None:
                    batch, path = nxt
                    pending.append((batch, path, pool.submit(self._download, path)))

            for _ in range(self.source.connections):
                ask()
            while pending:
                batch, path, future = pending.popleft()
                refused = False
                try:
                    data = future.result()
                except PacsError as err:  # PacsAuthError too: the row says to check credentials
                    failed_in_a_row += 1
                    refused = isinstance(err, PacsAuthError)
                    self._fail(path, f"not retrieved: {err}; {_AGAIN}")
                except Exception as err:  # a malformed answer: this instance's row
                    logger.warning("%s: retrieval failed", path, exc_info=True)
                    failed_in_a_row += 1
                    self._fail(path, f"not retrieved: {type(err).__name__}: {err}; {_AGAIN}")
                else:
                    failed_in_a_row = 0
                    self._admit(batch, path, data)
                if failed_in_a_row >= GIVE_UP_AFTER or refused:
                    self._give_up(pending, waiting)
                    return
                ask()

    def _give_up(
        self,
        pending: deque[tuple[int, Path, Future[memoryview]]],
        waiting: Iterator[tuple[int, Path]],
    ) -> None:
        reason = (
            f"not retrieved: the PACS stopped answering ({GIVE_UP_AFTER} retrievals in a row "
            "failed, or it refused the credentials); rerun with --resume when it is back"
        )
        for _, path, future in pending:
            future.cancel()
            self._fail(path, reason)
        for _, path in waiting:
            self._fail(path, reason)

    def _download(self, path: Path) -> memoryview:
        record = self._records[path]
        meta = record.meta
        assert meta is not None  # candidates carry their metadata
        return self._link.retrieve(meta)

    def _admit(self, batch: int, path: Path, data: memoryview) -> None:
        """Wait for room, write the file, triage its own header, keep that header."""
        record = self._records[path]
        size = len(data)
        try:
            self._reserve(path, batch, size)
        except _Refused as err:
            self._fail(path, str(err))
            return
        partial = path.with_name(path.name + ".part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            meta = replace(read_header(partial), path=path)
            decision = triage_header(meta, record.relpath, self.rules)
            if decision.status is FileStatus.CANDIDATE:
                if self.headers is not None:
                    header = pydicom.dcmread(partial, stop_before_pixels=True, force=True)
                    target = self.headers / record.relpath
                    target.parent.mkdir(parents=True, exist_ok=True)
                    header.save_as(target)
                os.replace(partial, path)
        except READ_FAILURES as err:  # a full disk, a header pydicom cannot read
            partial.unlink(missing_ok=True)
            self._release(path)
            self._fail(path, f"not retrieved: {type(err).__name__}: {err}; {_AGAIN}")
            return
        if decision.status is not FileStatus.CANDIDATE:
            partial.unlink(missing_ok=True)
            self._release(path)
            self._final[path] = FileRecord(
                path,
                record.relpath,
                size,
                decision.status,
                decision.reason,
                f"{decision.detail} (the retrieved file's own header)",
                meta,
            )
            failed_marker(path).write_text(decision.detail, encoding="utf-8")
            return
        self._counts["retrieved"] += 1
        self._counts["bytes"] += size
        self._final[path] = FileRecord(
            path, record.relpath, size, record.status, decision.reason, decision.detail, meta
        )

    def _reserve(self, path: Path, batch: int, size: int) -> None:
        """Take ``size`` bytes of the cache for ``path``, waiting for room the scan frees."""
        cap_mb = f"{self._cap / 1e6:g} MB"
        if size > self._cap:
            raise _Refused(
                f"not retrieved: the instance alone ({size / 1e6:.1f} MB) is larger than the "
                f"cache cap of {cap_mb}; rerun with --resume and a larger --cache-cap-mb"
            )
        t0 = time.perf_counter()
        with self._room:
            while self._used + size > self._cap:
                # only the files of earlier batches will go before this one is classified
                earlier = any(b < batch for _, b in self._resident.values())
                if self.keep or self._closing or not earlier:
                    why = (
                        "--keep-cache keeps every retrieved file"
                        if self.keep
                        else "the other images of its batch fill it"
                    )
                    raise _Refused(
                        f"not retrieved: the cache cap of {cap_mb} is reached ({why}); rerun "
                        "with --resume and a larger --cache-cap-mb"
                        + ("" if self.keep else " or a smaller --batch-size")
                    )
                self._room.wait(timeout=1.0)
            self._used += size
            self._resident[path] = (size, batch)
            self._peak = max(self._peak, self._used)
        self._waited += time.perf_counter() - t0

    def _release(self, path: Path) -> None:
        with self._room:
            held = self._resident.pop(path, None)
            if held is not None:
                self._used -= held[0]
            self._room.notify_all()

    def _fail(self, path: Path, detail: str) -> None:
        record = self._records.get(path)
        relpath = record.relpath if record is not None else path.name
        self._final[path] = FileRecord(
            path,
            relpath,
            0,
            FileStatus.UNREADABLE,
            Reason.CANNOT_OPEN,
            detail,
            record.meta if record is not None else None,
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            failed_marker(path).write_text(detail, encoding="utf-8")
        except OSError:  # the loader's wait then ends on its timeout
            logger.warning("cannot write the failure marker of %s", path, exc_info=True)

    @contextlib.contextmanager
    def retrieved_again(self, path: Path) -> Iterator[Path]:
        """``path`` retrieved once more, for as long as the block runs (a DICOM result that
        needs the pixels after the cache was cleaned: the heatmap captures); removed after.

        Raises
        ------
        KeyError
            When ``path`` is no candidate of the query.
        PacsError
            When the retrieval fails after its retries.
        """
        data = self._download(path)
        again = path.with_name(path.name + ".again")
        again.parent.mkdir(parents=True, exist_ok=True)
        try:
            again.write_bytes(data)
            yield again
        finally:
            again.unlink(missing_ok=True)
