"""Errors tlaudit raises.

Every error says what was found and what was expected, and names the file or row. The command
line maps :class:`TlauditError` to a clean message and exit code (``auditor.cli.app``); inside a
batch the same errors become counted rows of a report instead of stopping the run.
"""

from __future__ import annotations

from pathlib import Path


class TlauditError(Exception):
    """Base class for errors tlaudit reports to a user."""


class ReadError(TlauditError):
    """A file could not be read as a radiograph (not an image, broken, undecodable pixels)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedImageError(ReadError):
    """A readable object that is not a single-frame greyscale radiograph (colour, multi-frame,
    no pixel data)."""


class InputFileError(TlauditError):
    """A user-supplied table (box file, reads file, annotations) is malformed as a whole."""


class BundleError(TlauditError):
    """A model bundle is missing, malformed, or not one of ours."""


class UsageError(TlauditError):
    """The command line asked for something that cannot be done (exit code 2)."""


class ReviewError(UsageError):
    """A review decision that cannot be recorded: an unknown field, a value out of its range, a
    reviewer name or a key that is malformed (see :mod:`auditor.review.store`)."""


#: What reading one image inside a batch may raise: our own errors, and the storage's or a
#: decoder's (a file gone or unreadable, a plugin failing on bad data, an image too large). Each
#: stops that image only; the batch records it with its reason and goes on.
READ_FAILURES: tuple[type[BaseException], ...] = (
    TlauditError,
    OSError,
    ValueError,
    RuntimeError,
    MemoryError,
)


def read_failure_reason(err: BaseException) -> str:
    """The reason a person reads for one of :data:`READ_FAILURES`: a :class:`ReadError`'s own,
    otherwise the exception's type and message (a file that vanished, a decoder failing)."""
    if isinstance(err, ReadError):
        return err.reason
    return f"cannot read the file ({type(err).__name__}: {err})"
