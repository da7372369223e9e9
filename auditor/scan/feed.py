"""Image files that arrive while the scan runs: the scan's side of a streamed archive.

A PACS scan (:mod:`auditor.pacs.stream`) does not retrieve every candidate before classifying:
its retrieval runs beside the scan, into a cache folder of bounded size, and each image's file
goes as soon as the image's results are in the journal. The scan (:mod:`auditor.scan.pipeline`)
talks to such a source through :class:`ImageFeed`:

0. without a box file, ``localize(paths)`` first: the feed brings the candidates' files in that
   order while the localizer's pass reads them (each decode waits for its file,
   :func:`arrived`), and ``localized(path, stored)`` after each: the file may go, and when the
   classifier's crops were stored from that decode (``RUN_DIR/precut``) the feed leaves a
   *spent* marker in its place (:func:`spent_marker`), so that classification, which reads those
   crops, does not wait for the file or bring it again;
1. ``start(batches)`` once the images to classify (those the journal lacks) and their batches are
   known: the feed brings their files in that order;
2. before the loader reads a batch, :func:`wait_for_files` waits (in the loader's worker process)
   until each file of the batch is whole, spent, or has a failure marker (:func:`failed_marker`),
   which the feed writes for every file it cannot bring;
3. ``journaled(paths)`` after each batch's commit: those files may go;
4. ``finish()`` after the last batch: the final accounting row of every file the feed was asked
   for in either pass (retrieved, or not, with what to do); the scan reports the ones not
   brought as such rows and forgets their journal entries, so ``--resume`` tries them again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from auditor.errors import ReadError

if TYPE_CHECKING:
    from auditor.archive.inventory import FileRecord

FAILED_SUFFIX = ".failed"
"""Suffix of the marker a feed writes beside a file it could not bring (its text: the reason)."""
SPENT_SUFFIX = ".spent"
"""Suffix of the marker a feed leaves in place of a file whose crops are stored (empty)."""

#: Seconds :func:`wait_for_files` waits for one file before giving up on it (the feed then
#: counts it as not brought); a safety net, as a feed marks every file it cannot bring.
STALL_S = 900.0
_POLL_S = 0.02


class ImageFeed(Protocol):
    """A source whose image files arrive while the scan runs (the module docstring)."""

    def localize(self, paths: Sequence[Path]) -> None:
        """Begin bringing these files, one after another, for the localizer's pass."""
        ...

    def localized(self, path: Path, stored: bool) -> None:
        """The localizer's pass is done with this file; ``stored``: the classifier's crops of
        its image are stored, so classification needs the file no more."""
        ...

    def start(self, batches: Sequence[Sequence[Path]]) -> None:
        """Begin bringing these files, batch after batch, in this order."""
        ...

    def journaled(self, paths: Sequence[Path]) -> None:
        """These images' results are committed to the journal: their files may go."""
        ...

    def finish(self) -> Mapping[Path, FileRecord]:
        """Wait until the feed has ended; every file it was asked for, as its final accounting
        row (a candidate when brought, else unreadable with what to do)."""
        ...


def failed_marker(path: Path) -> Path:
    """The marker written beside ``path`` when its file cannot be brought."""
    return path.with_name(path.name + FAILED_SUFFIX)


def spent_marker(path: Path) -> Path:
    """The marker left in place of ``path`` when its image's crops are stored (``localized``)."""
    return path.with_name(path.name + SPENT_SUFFIX)


def _there(path: Path) -> bool:
    return path.is_file() or failed_marker(path).is_file() or spent_marker(path).is_file()


def wait_for_files(paths: Sequence[Path], stall_s: float = STALL_S) -> None:
    """Return when each of ``paths`` is a file, spent, or has a failure marker, or after
    ``stall_s`` seconds without a new one (the loader then fails to read what is missing, and
    the feed's final rows say why)."""
    waiting = list(paths)
    last = time.monotonic()
    while waiting:
        left = [p for p in waiting if not _there(p)]
        if len(left) < len(waiting):
            last = time.monotonic()
        waiting = left
        if not waiting or time.monotonic() - last > stall_s:
            return
        time.sleep(_POLL_S)


def arrived(path: Path) -> None:
    """Wait for ``path`` (:func:`wait_for_files`), the localizer's decode's side.

    Raises
    ------
    ReadError
        With the feed's reason, when the file will not come (its failure marker).
    """
    wait_for_files([path])
    marker = failed_marker(path)
    if not path.is_file() and marker.is_file():
        try:
            reason = marker.read_text(encoding="utf-8")
        except OSError:
            reason = "not brought by the scan's feed"
        raise ReadError(path, reason)


@dataclass(frozen=True)
class FedFiles:
    """A feed as the localizer's pass takes its files
    (:class:`auditor.localizer.archive.Arrivals`): it asks the feed for them
    (:meth:`ImageFeed.localize`), waits for each in the decoding process (:func:`arrived`) and
    lets each go once read (:meth:`ImageFeed.localized`); ``stored`` says whether an image's
    crops were stored from that decode."""

    feed: ImageFeed
    stored: Callable[[Path], bool]

    @property
    def wait(self) -> Callable[[Path], None]:
        """:func:`arrived` (picklable)."""
        return arrived

    def expect(self, paths: Sequence[Path]) -> None:
        """Ask the feed for these files, in this order."""
        self.feed.localize(paths)

    def done(self, path: Path) -> None:
        """The pass is done with this file."""
        self.feed.localized(path, self.stored(path))
