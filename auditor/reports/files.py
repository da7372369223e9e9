"""Atomic report writing: a report appears complete or not at all.

A scan that is killed while writing must never leave a half-written ``audit.xlsx`` beside a journal
that says the run finished, so every report is written to a temporary file in the same directory and
moved into place with :func:`os.replace` (atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it onto ``target``.

    The temporary file keeps ``target``'s suffix so that writers which infer a format from the
    name (openpyxl, PIL) still work. On an exception the temporary file is removed and ``target``
    is left as it was.

    Parameters
    ----------
    target
        The final path of the report.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A fresh unique name that the writer creates itself, so the report gets the user's usual
    # permissions (umask) rather than mkstemp's owner-only ones.
    tmp = target.parent / f".{target.stem}.{secrets.token_hex(8)}.tmp{target.suffix}"
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def write_with(target: Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
