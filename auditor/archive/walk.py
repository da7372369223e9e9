"""Walk an archive folder tree: every entry once, lazily, in a stable order, never leaving the root.

:func:`walk_archive` yields one :class:`WalkEntry` per entry that is not a plain directory:
regular files to read, and everything the walk refuses to follow, each with a reason, so that the
accounting table has a row for it:

- symbolic links are never followed. A link whose target lies outside the root is reported as
  escaping the root; a link to a directory that contains it (or to the root) as a loop; a link
  to a file or folder inside the root as an alias (the target is walked at its real place, so
  nothing is counted twice); a dangling link as broken;
- sockets, FIFOs and devices are reported and never opened (opening a FIFO would block);
- a directory that cannot be listed becomes one entry with the operating system's reason.

Paths the caller names in ``skip`` (tlaudit's own output: a scan's run folder or an accounting
file inside the archive, with the temporary file it is being written to) are left out without a
row: they are not part of the archive, and a scan and its resume must see the same files whether
or not the run folder exists yet.

Directories are listed one at a time with :func:`os.scandir` and their entries sorted by name,
so the walk holds one directory listing per level in memory, never the whole archive. A set of
visited directory identities (device, inode) guards against loops through bind mounts.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from auditor.files import is_temporary_of

logger = logging.getLogger(__name__)


class WalkIssue(str, Enum):
    """Why the walk yields an entry that is not a regular file to read."""

    LINK_OUTSIDE_ROOT = "symlink leaves the archive"
    LINK_LOOP = "symlink loop"
    LINK_INSIDE_ROOT = "symlink to an entry inside the archive"
    BROKEN_LINK = "broken symlink"
    SPECIAL_FILE = "not a regular file"
    UNLISTABLE_DIRECTORY = "directory cannot be listed"
    UNSTATABLE = "cannot stat entry"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class WalkEntry:
    """One entry of the archive.

    Attributes
    ----------
    path
        The entry's path as found under the root (not resolved).
    relpath
        Path relative to the root, POSIX separators (the key used by box files and reports).
    size
        Size in bytes (of the link itself for links; 0 for directories).
    issue
        None for a regular file to read; otherwise why the walk did not read it.
    detail
        Human-readable detail for ``issue`` (link target, OS error), "" otherwise.
    """

    path: Path
    relpath: str
    size: int
    issue: WalkIssue | None = None
    detail: str = ""


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _link_entry(path: Path, relpath: str, real_root: Path, size: int) -> WalkEntry:
    """Classify a symbolic link without following it into the walk."""
    try:
        target_text = os.readlink(path)
    except OSError as err:
        return WalkEntry(path, relpath, size, WalkIssue.UNSTATABLE, err.strerror or str(err))
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        return WalkEntry(path, relpath, size, WalkIssue.BROKEN_LINK, f"-> {target_text}")
    except (OSError, RuntimeError) as err:  # RuntimeError: a cycle of links (Python < 3.13)
        return WalkEntry(path, relpath, size, WalkIssue.LINK_LOOP, f"-> {target_text} ({err})")
    if not _is_within(resolved, real_root):
        return WalkEntry(path, relpath, size, WalkIssue.LINK_OUTSIDE_ROOT, f"-> {target_text}")
    if resolved.is_dir() and _is_within(path.parent.resolve(), resolved):
        return WalkEntry(path, relpath, size, WalkIssue.LINK_LOOP, f"-> {target_text}")
    inside = resolved.relative_to(real_root).as_posix() or "."
    return WalkEntry(
        path, relpath, size, WalkIssue.LINK_INSIDE_ROOT, f"-> {inside} (read there, not twice)"
    )


def walk_archive(root: Path | str, skip: Iterable[Path | str] = ()) -> Iterator[WalkEntry]:
    """Yield every entry under ``root`` that is not a plain directory, sorted, lazily.

    Parameters
    ----------
    root
        The archive folder. When ``root`` is itself a symlink, the folder it points to is walked
        and paths are still reported under ``root``.
    skip
        Files or folders to leave out (with everything under them), wherever they are; those
        outside the archive, or not there yet, change nothing.

    Yields
    ------
    WalkEntry
        Regular files (``issue`` None) and entries the walk refuses to read (with an issue).

    Raises
    ------
    NotADirectoryError
        When ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    real_root = root.resolve()
    visited: set[tuple[int, int]] = set()
    skipped = frozenset(filter(None, (_inside(Path(path), real_root) for path in skip)))
    yield from _walk_dir(root, "", real_root, visited, skipped)


def _inside(path: Path, real_root: Path) -> str:
    """``path`` relative to the archive, as the walk names it; "" when outside it or the root."""
    resolved = path.resolve()
    if resolved == real_root or not _is_within(resolved, real_root):
        return ""
    return resolved.relative_to(real_root).as_posix()


def _walk_dir(
    directory: Path,
    prefix: str,
    real_root: Path,
    visited: set[tuple[int, int]],
    skipped: frozenset[str] = frozenset(),
) -> Iterator[WalkEntry]:
    try:
        info = directory.stat()
        identity = (info.st_dev, info.st_ino)
        if identity in visited:
            yield WalkEntry(
                directory, prefix or ".", 0, WalkIssue.LINK_LOOP, "directory seen before"
            )
            return
        visited.add(identity)
        with os.scandir(directory) as listing:
            names = sorted(entry.name for entry in listing)
    except OSError as err:
        yield WalkEntry(
            directory, prefix or ".", 0, WalkIssue.UNLISTABLE_DIRECTORY, err.strerror or str(err)
        )
        return
    own = [Path(s).name for s in skipped if s.rpartition("/")[0] == prefix]
    for name in names:
        path = directory / name
        relpath = f"{prefix}/{name}" if prefix else name
        if relpath in skipped or any(is_temporary_of(name, Path(o)) for o in own):
            logger.info("%s: tlaudit's own output, not walked", relpath)
            continue
        try:
            info = path.lstat()
        except OSError as err:
            yield WalkEntry(path, relpath, 0, WalkIssue.UNSTATABLE, err.strerror or str(err))
            continue
        mode = info.st_mode
        if stat.S_ISLNK(mode):
            yield _link_entry(path, relpath, real_root, info.st_size)
        elif stat.S_ISDIR(mode):
            yield from _walk_dir(path, relpath, real_root, visited, skipped)
        elif stat.S_ISREG(mode):
            yield WalkEntry(path, relpath, info.st_size)
        else:
            kind = "FIFO" if stat.S_ISFIFO(mode) else "socket or device"
            yield WalkEntry(path, relpath, 0, WalkIssue.SPECIAL_FILE, kind)
