"""Per-item work (decoding and cutting images, mostly), through one executor interface.

Every stage that spreads per-image work over processes (the scan's crops, the localizer's
decoding, the training set's crops) hands it to an :class:`Executor` as a map-style dataset and
gets the results back in input order, so the caller's work on one item overlaps the computation
of the next ones. :class:`LocalProcesses` is the implementation today; a distributed one (a
cluster of workers, each reading its share of an archive) implements the same one method and no
stage changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Work(Protocol[T]):  # type: ignore[misc]
    """Items ``0 .. n - 1`` of some per-item work, computed by ``work[i]`` (picklable: a torch
    map-style :class:`~torch.utils.data.Dataset` is one)."""

    def __getitem__(self, index: int) -> T: ...


class Executor(Protocol):
    """Runs per-item work and yields the results in input order."""

    def map_in_order(self, work: Work[T], size: int) -> Iterator[T]:
        """``work[0], work[1], ... work[size - 1]``, in that order."""
        ...


def _as_is(item: Any) -> Any:
    """The DataLoader's collate function: leaves each item as it is (no batching; at module
    level so that worker processes can pickle it)."""
    return item


def _one_thread(_worker_id: int) -> None:
    # Workers decode and crop; one torch thread each keeps them from competing with the model.
    import torch

    torch.set_num_threads(1)


@dataclass(frozen=True)
class LocalProcesses:
    """Worker processes on this machine (``workers`` 0: in the calling process, in order).

    A torch :class:`~torch.utils.data.DataLoader` with ``batch_size=None`` does the bookkeeping:
    it keeps ``prefetch`` items per worker in flight and yields them in order. With
    ``pin_memory`` (CUDA), items that have a ``pin_memory()`` method come back page-locked.
    """

    workers: int
    prefetch: int = 2
    pin_memory: bool = False

    def map_in_order(self, work: Work[T], size: int) -> Iterator[T]:
        if self.workers <= 0 or size <= 1:
            for i in range(size):
                item = work[i]
                yield item.pin_memory() if self.pin_memory else item  # type: ignore[attr-defined]
            return
        from torch.utils.data import DataLoader  # torch only where processes are started

        yield from DataLoader(
            work,  # type: ignore[arg-type]
            batch_size=None,
            collate_fn=_as_is,
            num_workers=min(self.workers, size),
            prefetch_factor=self.prefetch,
            pin_memory=self.pin_memory,
            worker_init_fn=_one_thread,
        )


def map_in_order(work: Work[T], size: int, workers: int, prefetch: int = 2) -> Iterator[T]:
    """:meth:`LocalProcesses.map_in_order` with ``workers`` processes (0: here)."""
    return LocalProcesses(workers, prefetch).map_in_order(work, size)
