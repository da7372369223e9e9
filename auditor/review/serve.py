"""Serve the workbench with uvicorn on a local port, behind a fresh session token.

The server binds to 127.0.0.1 unless told otherwise; port 0 asks the system for a free port, and
the URL printed names the port actually bound. The token is ``secrets.token_urlsafe(32)`` unless
the environment variable :data:`TOKEN_ENV` holds one (tests and scripts that drive the server set
it; it is never a command-line argument, which other users of the machine could read in the
process list). uvicorn's access log is off: it would write the token of every image URL.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import UsageError
from auditor.review.guard import LOOPBACK_HOSTS, TOKEN_PARAM
from auditor.review.images import ImageFetch

logger = logging.getLogger(__name__)

#: Environment variable that fixes the session token instead of a random one.
TOKEN_ENV = "TLAUDIT_REVIEW_TOKEN"
#: Shortest token accepted from :data:`TOKEN_ENV`.
MIN_TOKEN_CHARS = 20
DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServeConfig:
    """What ``tlaudit review`` asked for; ``fetch`` retrieves the images of a PACS run whose
    cache is gone (``--pacs``, :mod:`auditor.review.images`)."""

    run_dir: Path
    reviewer: str
    host: str = DEFAULT_HOST
    port: int = 0
    sample_unflagged: int = 0
    seed: int = 0
    fetch: ImageFetch | None = None


def session_token(environ: dict[str, str] | None = None) -> str:
    """The session token: :data:`TOKEN_ENV` when set, else ``secrets.token_urlsafe(32)``.

    Raises
    ------
    UsageError
        When :data:`TOKEN_ENV` is set but shorter than :data:`MIN_TOKEN_CHARS` characters or
        holds characters other than letters, digits, ``-`` and ``_``.
    """
    environ = dict(os.environ) if environ is None else environ
    given = environ.get(TOKEN_ENV)
    if given is None:
        return secrets.token_urlsafe(32)
    allowed = all(c.isascii() and (c.isalnum() or c in "-_") for c in given)
    if len(given) < MIN_TOKEN_CHARS or not allowed:
        raise UsageError(
            f"{TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} letters, digits, '-' or '_' "
            f"(got {len(given)} characters); unset it to get a random token"
        )
    return given


def is_loopback(host: str) -> bool:
    """True when ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free port.

    Raises
    ------
    UsageError
        When the address cannot be bound (in use, not an address of this machine).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise UsageError(f"cannot resolve --host {host!r}: {err}") from err
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as err:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    sock.set_inheritable(True)
    return sock


def workbench_url(host: str, port: int, token: str) -> str:
    """The URL a reviewer opens: ``http://HOST:PORT/?token=...`` (IPv6 hosts in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?{TOKEN_PARAM}={token}"


def serve(
    config: ServeConfig,
    token: str,
    announce: Callable[[str], None],
    warn: Callable[[str], None],
) -> None:
    """Serve the workbench until interrupted.

    Parameters
    ----------
    config
        Run folder, reviewer, address and unflagged sample.
    token
        The session token (see :func:`session_token`).
    announce
        Called once with the URL to open, after the socket is listening.
    warn
        Called with a warning when the host is not a loopback address.

    Raises
    ------
    UsageError
        When the address cannot be bound or a reviewer name or sample size is not valid.
    InputFileError
        When the run folder is not a finished scan's.
    """
    import uvicorn

    from auditor.review.app import create_app

    app = create_app(
        config.run_dir,
        config.reviewer,
        token,
        sample_unflagged=config.sample_unflagged,
        seed=config.seed,
        hosts=(config.host,),
        fetch=config.fetch,
    )
    if not is_loopback(config.host):
        warn(
            f"the workbench listens on {config.host}, not only on this machine: anyone who can "
            "reach that address and learns the URL can read these studies and record decisions"
        )
    sock = bind(config.host, config.port)
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", workers=1)
    )
    announce(workbench_url(config.host, port, token))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
