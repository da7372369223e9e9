"""Pseudonymising patient identifiers for reports that leave the QA team.

A pseudonym is ``anon-`` plus the first 12 hex digits of HMAC-SHA256(salt, value): stable (the same
patient gets the same pseudonym in every report made with the same salt, so reviewers can still
group studies), and not reversible without the salt. Empty values stay empty. The salt is a secret:
whoever holds it can test guesses of an identifier against a pseudonym.

Archive paths often carry identifiers too (PACS exports name folders after the patient ID or the
accession number), and so does the free text of a read's impression ("discussed with Mr Doe"), so
:meth:`Pseudonymiser.scrub` replaces every occurrence of a study's known identifiers in a text by
their pseudonyms, whatever their case. In free text only whole words are replaced, so a name part
such as "Ann" leaves "annual" alone. That is a best effort: an identifier spelled differently
(another separator, a misspelt name, a name the headers do not carry) is not found. A file without
a header that names its patient (PNG, JPEG, TIFF, an unreadable file) gives no identifiers to look
for, so :meth:`Pseudonymiser.path` replaces every folder name of its path instead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
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

    def ref(self, value: str) -> str:
        """A keyed reference to ``value`` (32 hex digits of HMAC-SHA256 under the salt), made
        whether or not pseudonymisation is enabled: files in the run folder name an archive image
        by it, and only a holder of the salt (the run journal) can resolve it back."""
        digest = hmac.new(
            self.salt.encode("utf-8"), b"ref:" + value.encode("utf-8"), hashlib.sha256
        )
        return digest.hexdigest()[:32]

    def key(self, relpath: str) -> str:
        """How the run's journal and thumbnails name archive image ``relpath``: the image's
        :meth:`ref` when pseudonymising (so that no file of the run folder holds a path, which
        may name the patient), else the path itself."""
        return self.ref(relpath) if self.enabled else relpath

    def path(self, relpath: str, identifiers: Iterable[str] = (), *, header: bool = True) -> str:
        """An archive-relative path as the reports show it.

        With a header (``header``: a DICOM file whose identifiers are ``identifiers``) those
        identifiers are replaced wherever they occur (:meth:`scrub`). Without one, nothing says
        which part of the path names the patient, so each folder name is replaced by its pseudonym
        and the file name loses any folder name it repeats (``12345/12345_lat.png`` becomes
        ``anon-.../anon-..._lat.png``). Disabled, the path is returned unchanged.
        """
        if not self.enabled:
            return relpath
        if header:
            return self.scrub(relpath, identifiers)
        *folders, name = relpath.split("/")
        return "/".join([*(self(folder) for folder in folders), self.scrub(name, folders)])

    def scrub(self, text: str, identifiers: Iterable[str], *, whole_words: bool = False) -> str:
        """Replace each identifier (and each part of a ``^``-separated person name) found in
        ``text``, in any case, by the pseudonym of its header spelling.

        Parts shorter than 3 characters are left alone. With ``whole_words`` (free text) a part
        is only replaced where no letter, digit or underscore touches it. All parts are replaced
        in one pass, so a part never matches inside a pseudonym written for another.
        """
        if not self.enabled or not text:
            return text
        parts: set[str] = set()
        for identifier in identifiers:
            parts.add(identifier.strip())
            parts.update(piece.strip() for piece in identifier.split("^"))
        ordered = sorted((p for p in parts if len(p) >= 3), key=lambda p: (-len(p), p))
        if not ordered:
            return text
        spelling = {p.casefold(): p for p in reversed(ordered)}
        pattern = "|".join(re.escape(p) for p in ordered)
        if whole_words:
            pattern = rf"(?<!\w)(?:{pattern})(?!\w)"

        def pseudonym(match: re.Match[str]) -> str:
            found = match.group(0)
            return self(spelling.get(found.casefold(), found))

        return re.sub(pattern, pseudonym, text, flags=re.IGNORECASE)
