"""Pseudonymising patient identifiers for reports that leave the QA team.

A pseudonym is ``anon-`` plus the first 12 hex digits of HMAC-SHA256(salt, value): stable (the same
patient gets the same pseudonym in every report made with the same salt, so reviewers can still
group studies), and not reversible without the salt. Empty values stay empty. The salt is a secret:
whoever holds it can test guesses of an identifier against a pseudonym.

Archive paths often carry identifiers too (PACS exports name folders after the patient ID or the
accession number), so :meth:`Pseudonymiser.scrub` replaces every occurrence of a file's known
identifiers in a text by their pseudonyms. That is a best effort: an identifier spelled differently
in a path (another separator, another case) is not found, and free text such as the read's
impression is not scrubbed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "anon-"


def new_salt() -> str:
    """A random salt (32 hex digits)."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Pseudonymiser:
    """Replace identifiers with stable salted hashes; a disabled one returns values unchanged.

    Parameters
    ----------
    salt
        Secret salt; the same salt gives the same pseudonyms.
    enabled
        False to pass values through (reports for the QA team itself).
    """

    salt: str
    enabled: bool = True

    def __call__(self, value: str) -> str:
        """Return the pseudonym of ``value`` ("" stays "")."""
        if not self.enabled or not value:
            return value
        digest = hmac.new(self.salt.encode("utf-8"), value.encode("utf-8"), hashlib.sha256)
        return PREFIX + digest.hexdigest()[:12]

    def scrub(self, text: str, identifiers: Iterable[str]) -> str:
        """Replace each identifier (and each part of a ``^``-separated person name) found in
        ``text`` by its pseudonym; parts shorter than 3 characters are left alone."""
        if not self.enabled or not text:
            return text
        parts: set[str] = set()
        for identifier in identifiers:
            parts.add(identifier.strip())
            parts.update(piece.strip() for piece in identifier.split("^"))
        for part in sorted((p for p in parts if len(p) >= 3), key=len, reverse=True):
            text = text.replace(part, self(part))
        return text
