"""One network call to the PACS, retried with exponential back-off.

Connection errors, timeouts, :class:`Transient` failures (DIMSE: no association, one that broke
off, a PACS out of resources) and the HTTP statuses that mean "try again later" (408, 429, 500,
502, 503, 504) are retried; 401 and 403 raise :class:`~auditor.pacs.connect.PacsAuthError` at
once (retrying a wrong password only locks the account); anything else raises
:class:`~auditor.pacs.connect.PacsError` at once. The messages name what was asked and what the
server said, never the credentials.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests

from auditor.pacs.connect import PacsAuthError, PacsError

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class Transient(Exception):
    """A failure of a request that is not HTTP (DIMSE) and may pass when tried again; the message
    says what happened."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: ``attempts`` tries in all, waiting
    ``first_wait_s``, then twice that, and so on, at most ``max_wait_s`` between tries."""

    attempts: int = 4
    first_wait_s: float = 0.5
    max_wait_s: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return None if response is None else int(response.status_code)


def call(
    what: str,
    fn: Callable[[], T],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn`` (one DICOMweb or DIMSE request), retrying the failures that may pass.

    Parameters
    ----------
    what
        The request in words, for messages (e.g. ``QIDO-RS instances of series 1.2.3``).
    fn
        The request.
    policy
        Attempts and back-off.
    sleep
        Waits between tries (tests pass a fake).

    Raises
    ------
    PacsAuthError
        On HTTP 401 or 403.
    PacsError
        When the last try failed, or at once for an answer that retrying cannot change.
    """
    wait = policy.first_wait_s
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except requests.HTTPError as err:
            status = _status(err)
            if status in (401, 403):
                raise PacsAuthError(
                    f"{what}: the PACS refused the credentials (HTTP {status}); check "
                    "--auth-file or the TLAUDIT_DICOMWEB_* variables"
                ) from None
            if status not in RETRIED_STATUSES:
                raise PacsError(f"{what}: HTTP {status} from the PACS") from err
            problem = f"HTTP {status}"
        except Transient as err:
            problem = str(err)
        except (requests.ConnectionError, requests.Timeout) as err:
            problem = f"{type(err).__name__}"
            if isinstance(err, requests.exceptions.SSLError):
                raise PacsError(
                    f"{what}: TLS verification failed ({err}); give the PACS's certificate "
                    "authority with --ca-bundle"
                ) from err
        if attempt == policy.attempts:
            raise PacsError(
                f"{what}: {problem} after {policy.attempts} tries; is the PACS up? "
                "Rerun with --resume to fetch what is missing"
            )
        logger.info(
            "%s: %s, try %d of %d in %.1f s", what, problem, attempt + 1, policy.attempts, wait
        )
        sleep(wait)
        wait = min(wait * 2, policy.max_wait_s)
    raise AssertionError("unreachable")  # pragma: no cover
