"""Image files that arrive while the scan runs: the scan's side of a streamed archive.

A PACS scan (:mod:`auditor.pacs.stream`) does not retrieve every candidate before classifying:
its retrieval runs beside the scan, into a cache folder of bounded size, and each image's file
goes as soon as the image's results are in the journal. The scan (:mod:`auditor.scan.pipeline`)
talks to such a source through :class:`ImageFeed`:

1. ``start(batches)`` once the images to classify (those the journal lacks) and their batches are
   known: the feed brings their files in that order;
2. before the loader reads a batch, :func:`wait_for_files` waits (in the loader's worker process)
   until each file of the batch is whole or has a failure marker (:func:`failed_marker`), which
   the feed writes for every file it cannot bring;
3. ``journaled(paths)`` after each batch's commit: those files may go;
4. ``finish()`` after the last batch: the final accounting row of every file the feed was asked
   for (retrieved, or not, with what to do); the scan reports the ones not brought as such rows
   and forgets their journal entries, so ``--resume`` tries them again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from auditor.archive.inventory import FileRecord

FAILED_SUFFIX = ".failed"
"""Suffix of the marker a feed writes beside a file it could not bring (its text: the reason)."""

#: Seconds :func:`wait_for_files` waits for one file before giving up on it (the feed then
#: counts it as not brought); a safety net, as a feed marks every file it cannot bring.
STALL_S = 900.0
_POLL_S = 0.02


class ImageFeed(Protocol):
    """A source whose image files arrive while the scan runs (the module docstring)."""

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


def wait_for_files(paths: Sequence[Path], stall_s: float = STALL_S) -> None:
    """Return when each of ``paths`` is a file or has a failure marker, or after ``stall_s``
    seconds without a new one (the loader then fails to read what is missing, and the feed's
    final rows say why)."""
    waiting = list(paths)
    last = time.monotonic()
    while waiting:
        left = [p for p in waiting if not (p.is_file() or failed_marker(p).is_file())]
        if len(left) < len(waiting):
            last = time.monotonic()
        waiting = left
        if not waiting or time.monotonic() - last > stall_s:
            return
        time.sleep(_POLL_S)
