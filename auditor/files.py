"""Writing the files tlaudit makes: atomically, and with text no spreadsheet reads as a formula.

Atomic writes. A scan that is killed while writing must never leave a half-written ``audit.xlsx``
beside a journal that says the run finished, so every report, card, weights file and table is
written to a temporary file in the same directory and moved into place with :func:`os.replace`
(atomic on POSIX and Windows within one file system): it appears complete or not at all.

Formula-safe text. Strings in our files come from DICOM headers, file names and user CSV files:
untrusted text. A value such as ``=HYPERLINK("http://evil", "click")`` or ``+cmd|' /C calc'!A0``
must never become a formula when a QA reviewer opens a CSV file tlaudit wrote (OWASP "CSV
injection"): :func:`csv_safe` prefixes such text with an apostrophe, the usual neutralisation, and
:func:`csv_unsafe` takes it off again where tlaudit reads its own file back (a box file).
Workbooks get the same protection cell by cell in :mod:`auditor.reports.cells`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def is_formula_like(text: str) -> bool:
    """Return True when a spreadsheet could read ``text`` as a formula."""
    return text.startswith(FORMULA_PREFIXES)


def csv_safe(value: Any) -> Any:
    """Neutralise text that a spreadsheet would read as a formula when it opens a CSV file.

    Formula-like strings get a leading apostrophe; everything else is returned unchanged (numbers
    stay numbers so other tools can read them).
    """
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str) and is_formula_like(value):
        return "'" + value
    return value


def csv_unsafe(text: str) -> str:
    """Undo :func:`csv_safe` on a value read back from a CSV file tlaudit wrote: an apostrophe
    followed by formula-like text loses the apostrophe; anything else is returned unchanged."""
    if text.startswith("'") and is_formula_like(text[1:]):
        return text[1:]
    return text


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
