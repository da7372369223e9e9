"""When a reads file deserves a warning: :class:`~auditor.records.ReadsCheck` for a scan, with
the most common reasons its rows were rejected.

Rejection reasons name the value they found (``got 'maybe'``), so counting them as written would
count each value apart; :func:`reason_kind` takes the quoted values and numbers out, and
:func:`common_reasons` counts the kinds.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from auditor.records import ReadsCheck, RowError

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d[\d,.]*")


def reason_kind(reason: str) -> str:
    """A rejection reason without the values it quotes or the numbers it names."""
    return _NUMBER.sub("N", _QUOTED.sub("…", reason))


def common_reasons(errors: Iterable[RowError], top: int = 3) -> tuple[tuple[str, int], ...]:
    """The ``top`` most common :func:`reason_kind` of ``errors`` with their counts, most first
    (ties in the order first met)."""
    counts = Counter(reason_kind(error.reason) for error in errors)
    return tuple(counts.most_common(top))


def check_reads(reads: int, errors: Iterable[RowError], matched: int, studies: int) -> ReadsCheck:
    """The :class:`~auditor.records.ReadsCheck` of a scan.

    Parameters
    ----------
    reads
        Reads the file gave (rows that passed the checks).
    errors
        The file's rejected rows.
    matched
        Reads that matched a scanned study.
    studies
        Studies the scan classified.
    """
    errors = tuple(errors)
    return ReadsCheck(
        rows=reads + len(errors),
        rejected=len(errors),
        matched=matched,
        studies=studies,
        reasons=common_reasons(errors),
    )
