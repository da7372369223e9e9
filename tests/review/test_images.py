"""The workbench's image cache filled ahead of the reviewer (``ImageCache.warm``)."""

from __future__ import annotations

import threading
from pathlib import Path

from auditor.review.images import ImageCache
from auditor.review.run import load_run


def _refs(run_dir: Path) -> list[str]:
    return [case.images[0].ref for case in load_run(run_dir).studies if case.images]


def test_warm_encodes_in_order_up_to_the_cache_size_and_skips_unknown_refs(
    scanned: Path,
) -> None:
    refs = _refs(scanned)
    cache = ImageCache(load_run(scanned), size=2)
    done = cache.warm(["no-such-ref", *refs], threading.Event())
    assert done == 2
    assert list(cache._items) == refs[:2]  # the first two, nothing for the unknown one


def test_warm_stops_when_told(scanned: Path) -> None:
    stop = threading.Event()
    stop.set()
    cache = ImageCache(load_run(scanned))
    assert cache.warm(_refs(scanned), stop) == 0
    assert not cache._items
