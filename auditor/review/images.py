"""The pictures the workbench serves: a radiograph as an 8-bit PNG, and a vertebra's heatmap.

No request names a file. A radiograph is asked for by its image reference, which the run journal
resolves inside the archive (:meth:`~auditor.review.run.ReviewRun.image_path`); a heatmap by
(study, image reference, box id), looked up in ``cases.json`` and checked to lie inside the run
folder's ``thumbnails/``. Encoding a full-resolution PNG costs tens of milliseconds on a large
film, so the last few are kept in a small cache (the next case is prefetched while the reviewer
reads the current one), and a background thread fills it with the first cases of the queue when
the workbench starts (:meth:`ImageCache.warm`), so that the first pass is not slower than the next.

A PACS scan removes its cache of images when it ends (unless ``scan --keep-cache``), so the
archive a PACS run names is gone. The workbench then retrieves each radiograph from the PACS
when the reviewer opens it, through the :data:`ImageFetch` it was given (``tlaudit review
--pacs``, :func:`auditor.pacs.export.run_images`: the image's header kept by the scan names it,
WADO-RS brings it, and the file goes once encoded); the full-resolution image is what a
reviewer judges a fracture and moves a box on, which the scan's 640-pixel previews are not.
Without one, the image's request says how to get it.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
from PIL import Image

from auditor.errors import READ_FAILURES, ReadError, UsageError
from auditor.io.radiograph import read_radiograph
from auditor.review.run import ReviewRun
from auditor.review.store import box_id

logger = logging.getLogger(__name__)

#: Folder of the run that heatmap thumbnails must lie in.
THUMBNAIL_DIR = "thumbnails"
#: How many encoded radiographs the cache keeps (one PNG of a 3000 x 2500 film is a few MB).
CACHE_SIZE = 24

ImageFetch = Callable[[str], AbstractContextManager[Path]]
"""Gives, for as long as its block runs, the file of an image by its archive-relative path,
retrieved from where the archive's copy came from (a PACS run whose cache is gone)."""

GONE_HINT = (
    "its file is gone (a PACS scan removes its cache of images when it ends); start tlaudit "
    "review with --pacs, the address the run scanned, to retrieve it from the PACS"
)
"""What the image request of a run whose files are gone says (no :data:`ImageFetch` given)."""


class ImageGone(ReadError):
    """An image whose file is gone and could not be retrieved; the reason says what to do."""


def radiograph_png(path: Path) -> bytes:
    """Read a radiograph through the one reading entry point and encode it as an 8-bit PNG at
    full resolution (display orientation, bone bright).

    Raises
    ------
    ReadError
        When the file cannot be read as a radiograph.
    """
    pixels = read_radiograph(path).pixels
    grey = np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    # compress_level 1: a third of the default's time for a few per cent more bytes on loopback
    Image.fromarray(grey, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class ImageCache:
    """Encoded radiographs of one run by image reference, the last :data:`CACHE_SIZE` kept.

    Safe to share between the server's worker threads.
    """

    def __init__(
        self, run: ReviewRun, size: int = CACHE_SIZE, fetch: ImageFetch | None = None
    ) -> None:
        self._run = run
        self._size = size
        self._fetch = fetch
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def png(self, ref: str) -> bytes:
        """The PNG of the image ``ref`` names; when its file is gone, retrieved with ``fetch``.

        Raises
        ------
        KeyError
            When the run has no image with this reference.
        UsageError
            When the recorded path leads outside the archive.
        ReadError
            When the file cannot be read; :class:`ImageGone` when it is gone and cannot be
            retrieved, saying what to do.
        """
        with self._lock:
            if ref in self._items:
                self._items.move_to_end(ref)
                return self._items[ref]
        path = self._run.image_path(ref)
        if path.is_file():
            data = radiograph_png(path)
        elif self._fetch is None:
            raise ImageGone(path, GONE_HINT)
        else:
            try:
                with self._fetch(self._run.source(ref)) as found:
                    data = radiograph_png(found)
            except READ_FAILURES as err:
                raise ImageGone(path, f"its file is gone and was not retrieved: {err}") from err
        with self._lock:
            self._items[ref] = data
            self._items.move_to_end(ref)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return data

    def warm(self, refs: Iterable[str], stop: threading.Event) -> int:
        """Encode the images ``refs`` name, in order, until :attr:`size` are cached or ``stop``
        is set; return how many were encoded. An image that cannot be served is skipped (its
        request reports the error when it is asked for)."""
        skipped: tuple[type[BaseException], ...] = (KeyError, UsageError, *READ_FAILURES)
        done = 0
        for ref in refs:
            if stop.is_set() or done >= self._size:
                break
            try:
                self.png(ref)
            except skipped as err:
                logger.debug("not cached ahead: %s: %s", ref, err)
                continue
            done += 1
        return done

    @property
    def size(self) -> int:
        """How many encoded images the cache keeps."""
        return self._size


def heatmap_path(run: ReviewRun, study: str, ref: str, box: str) -> Path:
    """The heatmap thumbnail of one scanned box, checked to lie inside the run's thumbnails.

    Parameters
    ----------
    run
        The opened run.
    study, ref, box
        Study key, image reference and box id (``box-<row>``) as the case JSON names them.

    Raises
    ------
    KeyError
        When the run has no such box, or the box has no heatmap.
    UsageError
        When the recorded path leads outside ``thumbnails/`` (a tampered ``cases.json``).
    """
    case, image = run.image(ref)
    if case.key != study:
        raise KeyError(ref)
    finding = next((v for v in image.vertebrae if box_id(v.box_row) == box), None)
    if finding is None or not finding.heatmap:
        raise KeyError(box)
    root = (Path(run.run_dir) / THUMBNAIL_DIR).resolve()
    path = (Path(run.run_dir) / finding.heatmap).resolve()
    if not path.is_relative_to(root):
        raise UsageError(f"heatmap {finding.heatmap!r} leads outside {root}")
    if not path.is_file():
        raise KeyError(box)
    return path
