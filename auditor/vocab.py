"""Shared vocabulary: vertebral levels and file statuses.

Strings from box files, reads and the command line are coerced to these enums at the boundary
(:meth:`Level.parse`), so the rest of the code compares enums, never free text.
"""

from __future__ import annotations

import re
from enum import Enum


class Level(str, Enum):
    """Vertebral levels tlaudit works with, cranial to caudal (T10 to L5, S1 as the anchor)."""

    T10 = "T10"
    T11 = "T11"
    T12 = "T12"
    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"
    L5 = "L5"
    S1 = "S1"

    def __str__(self) -> str:
        return self.value

    @property
    def order(self) -> int:
        """Position from cranial (T10 = 0) to caudal (S1 = 8)."""
        return LEVEL_ORDER.index(self)

    @classmethod
    def parse(cls, text: str) -> Level:
        """Coerce a level name as people write it (``"t12"``, ``"T 12"``, ``"L-1"``) to a Level.

        Raises
        ------
        ValueError
            When the text names no level in T10..S1.
        """
        key = re.sub(r"[\s\-_.]", "", str(text)).upper()
        try:
            return cls(key)
        except ValueError:
            names = ", ".join(level.value for level in cls)
            raise ValueError(f"unknown vertebral level {text!r}; expected one of {names}") from None


LEVEL_ORDER: tuple[Level, ...] = tuple(Level)


class FileStatus(str, Enum):
    """Outcome of triage for one file in the archive."""

    CANDIDATE = "candidate"
    SKIPPED = "skipped"
    UNREADABLE = "unreadable"

    def __str__(self) -> str:
        return self.value
