"""Per-item work (decoding and cutting images, mostly), through one executor interface.

Every stage that spreads per-image work over processes (the scan's crops, the localizer's
decoding, the training set's crops) hands it to an :class:`Executor` as a map-style dataset and
gets the results back in input order, so the caller's work on one item overlaps the computation
of the next ones. :class:`LocalProcesses` is the implementation today; a distributed one (a
cluster of workers, each reading its share of an archive) implements the same one method and no
stage changes.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from auditor.errors import BundleError, UsageError

T = TypeVar("T")

logger = logging.getLogger(__name__)


class Work(Protocol[T]):  # type: ignore[misc]
    """Items ``0 .. n - 1`` of some per-item work, computed by ``work[i]`` (picklable: a torch
    map-style :class:`~torch.utils.data.Dataset` is one). Work may also offer
    ``lost(i, reason) -> T``: the result standing for item ``i`` when the worker process computing
    it died (an error row for each of its images), so that one image that exhausts memory does
    not end the batch."""

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


def _worker_init(parent: int, _worker_id: int) -> None:
    """Set up a worker process: it dies with its parent, and runs one torch thread."""
    _die_with_parent(parent)
    # Workers decode and crop; one torch thread each keeps them from competing with the model.
    import torch

    torch.set_num_threads(1)


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when ``parent`` dies (Linux ``prctl(PR_SET_PDEATHSIG,
    SIGKILL)``). Without it, a scan killed with SIGKILL leaves its decoder workers running, each
    holding a decoded radiograph, until they next look for work. Elsewhere a no-op: torch's own
    watchdog then ends the workers at their next check."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not permitted here (a seccomp sandbox): torch's watchdog remains
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


#: ``PR_SET_PDEATHSIG`` of ``<linux/prctl.h>``.
_PR_SET_PDEATHSIG = 1


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
        start = 0
        while start < size:
            try:
                for item in self._loader(work, range(start, size), self.workers):
                    yield item
                    start += 1
                return
            except RuntimeError as err:
                if not _worker_died(err):
                    raise
                reason = str(err)
            # A worker died (the kernel's OOM killer, a signal) while item `start` was in flight.
            # Alone in a fresh worker it either comes back or was what killed it: then it is lost.
            logger.warning("a worker process died (%s); trying item %d again alone", reason, start)
            try:
                item = next(iter(self._loader(work, [start], 1)))
            except RuntimeError as err:
                if not _worker_died(err):
                    raise
                lost = getattr(work, "lost", None)
                if lost is None:
                    raise WorkerLostError(f"a worker process died twice on item {start}") from err
                item = lost(start, "the worker process decoding it died (out of memory?)")
            yield item
            start += 1

    def _loader(self, work: Work[T], indices: Sequence[int], workers: int) -> Iterable[T]:
        from torch.utils.data import DataLoader  # torch only where processes are started

        return DataLoader(
            work,  # type: ignore[arg-type]
            batch_size=None,
            sampler=indices,
            collate_fn=_as_is,
            num_workers=min(workers, len(indices)),
            prefetch_factor=self.prefetch,
            pin_memory=self.pin_memory,
            worker_init_fn=functools.partial(_worker_init, os.getpid()),
        )


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """What :func:`once_per_worker`'s loader found: the object, what it is (for a message) and
    the SHA-256 that identifies the bundle it came from."""

    value: T
    source: str
    sha256: str


#: What :func:`once_per_worker` loaded in this process, by the spec describing it: the one
#: per-process cache of the project (a worker keeps its model between items and batches).
_LOADED: dict[Hashable, Any] = {}


def once_per_worker(spec: Hashable, expected_sha256: str, load: Callable[[], Loaded[T]]) -> T:
    """The object ``spec`` describes (a classifier, a localizer), loaded by ``load`` once per
    worker process and kept for the process's later items.

    A worker loads the bundle it finds on its own machine, so what it loaded must have the
    SHA-256 the scanning process recorded (``expected_sha256``): every worker and every node
    runs the same bundle.

    Raises
    ------
    BundleError
        When the bundle this worker found is another one.
    """
    if spec not in _LOADED:
        loaded = load()
        if loaded.sha256 != expected_sha256:
            raise BundleError(
                f"a worker found {loaded.source} with SHA-256 {loaded.sha256[:12]}..., not "
                f"the scan's {expected_sha256[:12]}...: every node needs the same bundle"
            )
        _LOADED[spec] = loaded.value
    return cast(T, _LOADED[spec])


class WorkerLostError(RuntimeError):
    """A worker process died on an item whose work offers no ``lost(index, reason)`` result."""


def _worker_died(err: RuntimeError) -> bool:
    """Is this torch's DataLoader saying one of its worker processes died?"""
    text = str(err)
    return "DataLoader worker" in text and ("exited unexpectedly" in text or "killed" in text)


def map_in_order(work: Work[T], size: int, workers: int, prefetch: int = 2) -> Iterator[T]:
    """:meth:`LocalProcesses.map_in_order` with ``workers`` processes (0: here)."""
    return LocalProcesses(workers, prefetch).map_in_order(work, size)


#: Times Ray runs a task again when the worker process running it dies (Ray's own default is 3).
RAY_TASK_RETRIES = 3


@dataclass(frozen=True)
class RayTasks:
    """Ray tasks on a Ray cluster (``tlaudit scan --engine ray``), one task per item.

    ``address`` None starts a new Ray instance on this machine for the duration of the process
    (or uses the one the process already started, as the tests do);
    otherwise ``ray.init(address)`` joins a running cluster ("auto", or "HOST:PORT" of its head).
    Every node must have tlaudit installed and read the archive at the same path (shared storage).

    At most ``in_flight`` tasks are pending at a time (default: two per CPU of the cluster), so a
    large archive does not queue all its images at once; results come back in input order. A task
    whose worker process dies is run again by Ray up to :data:`RAY_TASK_RETRIES` times; when it
    still fails, the work's ``lost(i, reason)`` stands for it, as with :class:`LocalProcesses`. An
    exception raised by the work itself ends the map, as it does locally.
    """

    address: str | None = None
    in_flight: int | None = None
    retries: int = RAY_TASK_RETRIES

    def map_in_order(self, work: Work[T], size: int) -> Iterator[T]:
        import collections

        ray = connect_ray(self.address)
        from ray.exceptions import RayTaskError, WorkerCrashedError

        shared = ray.put(work)
        task = ray.remote(num_cpus=1, max_retries=self.retries)(_ray_item)
        window = self.in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        pending: collections.deque[tuple[int, Any]] = collections.deque()
        submitted = 0
        for _ in range(size):
            while submitted < size and len(pending) < window:
                pending.append((submitted, task.remote(shared, submitted)))
                submitted += 1
            index, ref = pending.popleft()
            try:
                yield ray.get(ref)
            except WorkerCrashedError as err:
                lost = getattr(work, "lost", None)
                if lost is None:
                    raise WorkerLostError(
                        f"Ray's worker processes died {self.retries + 1} times on item {index}"
                    ) from err
                logger.warning(
                    "item %d lost: its Ray worker died %d times", index, self.retries + 1
                )
                yield lost(index, "the worker process decoding it died (out of memory?)")
            except RayTaskError as err:
                raise err.as_instanceof_cause() from None


def _ray_item(work: Work[T], index: int) -> T:
    """One item of ``work``, in a Ray worker process (module level, so Ray can pickle it)."""
    import torch

    if torch.get_num_threads() != 1:  # decode and crop on one thread, as LocalProcesses does
        torch.set_num_threads(1)
    return work[index]


def connect_ray(address: str | None) -> Any:
    """The ``ray`` module, connected: to the running cluster at ``address``, or, for None, to
    the instance this process already started or a new one on this machine (no dashboard; never
    another instance that happens to run here). Ray's worker output is not forwarded to this
    process's log.

    Raises
    ------
    RayUnavailableError
        When the ``ray`` extra is not installed.
    """
    try:
        import ray
    except ImportError as err:
        raise RayUnavailableError(
            "--engine ray needs Ray: pip install 'tlaudit[ray]' (or use --engine local)"
        ) from err
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if address is None:  # "local": a new instance, never one that happens to run here
        ray.init(address="local", _node_ip_address="127.0.0.1", **options)
    else:
        ray.init(address=address, **options)
    return ray


class RayUnavailableError(UsageError):
    """``--engine ray`` without Ray installed."""
