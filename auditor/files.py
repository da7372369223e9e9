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

Text shown as it is stored. Unicode's bidirectional controls (right-to-left override and its
kin) make a viewer draw text in another order than it is stored, so a file name or header value
could read as something it is not ("Trojan Source"). The reports a person reads (HTML, workbook)
show such text with the controls stripped (:func:`strip_bidi`): every visible character stays, so
the value is still found by searching for it. CSV files keep them, so that a path read back still
names its file.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

#: Unicode bidirectional controls (UAX #9): the Arabic letter mark, the left-to-right and
#: right-to-left marks, embeddings and overrides (U+202A-U+202E) and isolates (U+2066-U+2069).
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def strip_bidi(text: str) -> str:
    """``text`` without bidirectional controls (:data:`BIDI_CONTROLS`), so that it shows in the
    order it is stored."""
    return BIDI_CONTROLS.sub("", text)


def is_formula_like(text: str) -> bool:
    """Return True when a spreadsheet could read ``text`` as a formula."""
    return text.startswith(FORMULA_PREFIXES)


def csv_safe(value: Any) -> Any:
    """Neutralise text that a spreadsheet would read as a formula when it opens a CSV file.

    Formula-like strings get a leading apostrophe; so does formula-like text that already starts
    with apostrophes (``'=x``), so that :func:`csv_unsafe` gives back exactly what was written.
    Everything else is returned unchanged (numbers stay numbers so other tools can read them).
    """
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str) and is_formula_like(value.lstrip("'")):
        return "'" + value
    return value


def csv_unsafe(text: str) -> str:
    """Undo :func:`csv_safe` on a value read back from a CSV file tlaudit wrote: an apostrophe
    before formula-like text (after any further apostrophes) is taken off; anything else is
    returned unchanged."""
    if text.startswith("'") and is_formula_like(text.lstrip("'")):
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


def is_temporary_of(name: str, target: Path) -> bool:
    """True when ``name`` is a temporary file :func:`atomic_path` makes beside ``target``
    (so that a walk of the folder can leave it out)."""
    target = Path(target)
    pattern = re.escape(f".{target.stem}.") + "[0-9a-f]{16}" + re.escape(f".tmp{target.suffix}")
    return re.fullmatch(pattern, name) is not None


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def write_with(target: Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
