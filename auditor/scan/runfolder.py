"""The run folder, claimed before any work: writable, with room, not a trap, and one scan at a time.

A scan writes everything it makes under ``--out`` (the journal, thumbnails, the crops cut by the
localizer, the reports). Before the localizer or the model runs, :func:`claim_run_folder`:

* refuses an ``--out`` that lies under a regular file, that cannot be created, that is not
  writable (a file is written, flushed and removed), or whose file system has less free space
  than :data:`MIN_FREE_BYTES`, each with a one-line message naming the folder;
* refuses symbolic links where the scan writes (:data:`WRITTEN_ENTRIES`): a link there would
  send the scan's files outside ``--out``;
* takes an exclusive lock (``flock`` on :data:`LOCK_NAME`, held until the scan ends), so a
  second scan or ``--resume`` into the same folder is refused while the first runs. The kernel
  releases the lock when the process dies, so a killed scan never leaves the folder locked.

A file-system failure later in the run (a disk that fills up) still ends the scan; the command
line turns it into a one-line message (:func:`auditor.cli.app.main`), and the journal keeps every
batch committed before it, for ``--resume``.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from auditor.errors import TlauditError, UsageError
from auditor.reports.thumbnails import HEATMAP_DIR, RADIOGRAPH_DIR
from auditor.scan.dataset import PRECUT_DIR
from auditor.scan.journal import JOURNAL_NAME
from auditor.scan.locate import LOCALIZER_BOXES

#: The lock file in the run folder (empty apart from the holder's process ID, for messages).
LOCK_NAME = ".tlaudit-scan.lock"
#: Least free space a scan starts with: the journal, thumbnails and reports of a small archive
#: (a 384-study scan writes about 40 MB); a fuller disk is refused before any work.
MIN_FREE_BYTES = 64 * 1024 * 1024
#: Entries of the run folder the scan writes into or through; none may be a symbolic link.
WRITTEN_ENTRIES: tuple[str, ...] = (
    "thumbnails",
    HEATMAP_DIR,
    RADIOGRAPH_DIR,
    PRECUT_DIR,
    JOURNAL_NAME,
    JOURNAL_NAME + "-wal",
    JOURNAL_NAME + "-shm",
    LOCALIZER_BOXES,
    Path(LOCALIZER_BOXES).stem + ".images.csv",
    "audit.xlsx",
    "audit.html",
    "findings.csv",
    "cases.json",
    LOCK_NAME,
)


class RunFolderError(TlauditError):
    """The run folder cannot hold a scan (not creatable, not writable, full, or busy)."""


@contextmanager
def claim_run_folder(out: Path, min_free_bytes: int = MIN_FREE_BYTES) -> Iterator[Path]:
    """Check and lock the run folder ``out`` for the duration of a scan; yields it.

    Raises
    ------
    RunFolderError
        When ``out`` cannot be created or written, has less than ``min_free_bytes`` free, or
        another scan holds its lock.
    UsageError
        When ``out`` lies under a regular file or a symbolic link stands where the scan writes.
    """
    out = Path(out)
    _create(out)
    for name in WRITTEN_ENTRIES:
        if (out / name).is_symlink():
            raise UsageError(
                f"{out / name} is a symbolic link; a scan writes only inside --out {out}: "
                "remove the link or choose another --out"
            )
    _check_writable(out, min_free_bytes)
    with _locked(out / LOCK_NAME):
        yield out


def _create(out: Path) -> None:
    for parent in (out, *out.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise UsageError(
                    f"--out {out} lies under {parent}, which is not a folder; choose another --out"
                )
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"cannot create the run folder {out}: {_why(err)}") from err


def _check_writable(out: Path, min_free_bytes: int) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".tlaudit-probe-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
        free = shutil.disk_usage(out).free
    except OSError as err:
        raise RunFolderError(f"cannot write in the run folder {out}: {_why(err)}") from err
    if free < min_free_bytes:
        raise RunFolderError(
            f"only {free / 2**20:.0f} MiB free in the run folder {out}; a scan starts with at "
            f"least {min_free_bytes / 2**20:.0f} MiB: free some space or choose another --out"
        )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl  # POSIX; tlaudit's scans run on Linux and macOS

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RunFolderError(f"cannot create the lock file {path}: {_why(err)}") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunFolderError(f"cannot lock {path}: {_why(err)}") from err
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunFolderError(
                f"another tlaudit scan (process {holder}) is running in {path.parent}; wait for "
                "it to end or choose another --out"
            ) from err
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _why(err: OSError) -> str:
    """An OS error as a person reads it: the system's words, without the errno prefix."""
    return err.strerror or str(err)
