"""Per-item work (decoding images, mostly) in worker processes, with results in input order.

A torch :class:`~torch.utils.data.DataLoader` with ``batch_size=None`` does the bookkeeping: it
keeps ``prefetch`` items per worker in flight and yields them in order, so the caller's work on
one item overlaps the decoding of the next ones. Items come back as the dataset returned them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from torch.utils.data import DataLoader, Dataset

T = TypeVar("T")


def _as_is(item: Any) -> Any:
    """The DataLoader's collate function: leaves each item as it is (no batching; at module
    level so that worker processes can pickle it)."""
    return item


def map_in_order(work: Dataset[T], size: int, workers: int, prefetch: int = 2) -> Iterator[T]:
    """``work[0], work[1], ... work[size - 1]``, computed in ``workers`` processes (0: here)."""
    if workers <= 0 or size <= 1:
        yield from (work[i] for i in range(size))
        return
    yield from DataLoader(
        work,
        batch_size=None,
        collate_fn=_as_is,
        num_workers=min(workers, size),
        prefetch_factor=prefetch,
    )
