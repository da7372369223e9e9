"""Where the PACS is and how to log in: addresses, credentials, TLS, the DICOMweb client.

Credentials never come from the command line (they would sit in the shell history and the process
list) and are never logged or written into the run folder. They are read, in this order, from:

1. ``--auth-file FILE``: a JSON object ``{"token": "..."}`` (bearer token) or
   ``{"user": "...", "password": "..."}`` (HTTP basic); the file should be readable by its owner
   only, and a warning says so otherwise;
2. the environment: :data:`TOKEN_ENV` (bearer token), else :data:`USER_ENV` with
   :data:`PASSWORD_ENV` (HTTP basic);
3. nothing: anonymous access.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
from dicomweb_client.api import DICOMwebClient

from auditor.errors import TlauditError, UsageError

logger = logging.getLogger(__name__)

SCHEME_PREFIX = "dicomweb+"
"""A scan archive starting with this (``dicomweb+http://``, ``dicomweb+https://``) is a PACS."""

TOKEN_ENV = "TLAUDIT_DICOMWEB_TOKEN"
USER_ENV = "TLAUDIT_DICOMWEB_USER"
PASSWORD_ENV = "TLAUDIT_DICOMWEB_PASSWORD"

DEFAULT_TIMEOUT_S = 30.0


class PacsError(TlauditError):
    """The PACS could not be used as a whole (unreachable, refused, wrong answer); one instance
    that fails becomes an accounting row instead."""


class PacsAuthError(PacsError):
    """The PACS refused the credentials (HTTP 401 or 403)."""


def is_pacs_address(archive: str) -> bool:
    """Whether a scan's archive argument names a DICOMweb service rather than a folder."""
    return str(archive).lower().startswith(SCHEME_PREFIX)


def dicomweb_url(address: str) -> str:
    """The service's base URL from a ``dicomweb+http(s)://HOST[:PORT]/PATH`` address.

    Raises
    ------
    UsageError
        For another scheme, no host, or credentials written into the address.
    """
    if not is_pacs_address(address):
        raise UsageError(
            f"{address!r} is not a DICOMweb address; expected dicomweb+https://HOST/PATH"
        )
    url = address[len(SCHEME_PREFIX) :]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"{address!r}: expected dicomweb+http://HOST[:PORT]/PATH or dicomweb+https://..."
        )
    if parts.username or parts.password:
        raise UsageError(
            "the DICOMweb address holds credentials; put them in --auth-file or in "
            f"{USER_ENV}/{PASSWORD_ENV} or {TOKEN_ENV} instead of the command line"
        )
    if parts.query or parts.fragment:
        raise UsageError(f"{address!r}: the DICOMweb address takes no query or fragment")
    return url.rstrip("/")


@dataclass(frozen=True)
class Credentials:
    """How to log in: a bearer token, a user and password, or nothing.

    The secret fields are left out of ``repr`` so that they never reach a log or a traceback.
    """

    kind: str  # "token", "basic" or "anonymous"
    source: str  # where they came from, for messages ("auth file X", "environment")
    user: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)

    def describe(self) -> str:
        """What is used, without the secret (e.g. ``HTTP basic as qa from the environment``)."""
        if self.kind == "token":
            return f"bearer token from {self.source}"
        if self.kind == "basic":
            return f"HTTP basic as {self.user} from {self.source}"
        return "no credentials (anonymous)"


def load_credentials(
    auth_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Credentials:
    """Credentials from ``auth_file``, else from the environment (see the module docstring).

    Raises
    ------
    UsageError
        When the auth file cannot be read, is not JSON, or holds neither a token nor a user and
        password; when only one of the user and password variables is set.
    """
    env = os.environ if environ is None else environ
    if auth_file is not None:
        return _from_file(Path(auth_file))
    if env.get(TOKEN_ENV):
        return Credentials("token", f"${TOKEN_ENV}", token=env[TOKEN_ENV])
    user, password = env.get(USER_ENV, ""), env.get(PASSWORD_ENV, "")
    if user and password:
        return Credentials("basic", f"${USER_ENV}", user=user, password=password)
    if user or password:
        given, missing = (USER_ENV, PASSWORD_ENV) if user else (PASSWORD_ENV, USER_ENV)
        raise UsageError(f"{given} is set but {missing} is not; set both for HTTP basic")
    return Credentials("anonymous", "nowhere")


def _from_file(path: Path) -> Credentials:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--auth-file {path}: cannot read it ({err})") from err
    except json.JSONDecodeError as err:
        # the message would quote the file's text, secrets included: say where, not what
        raise UsageError(
            f"--auth-file {path}: not JSON (line {err.lineno}, column {err.colno}); expected "
            '{"token": "..."} or {"user": "...", "password": "..."}'
        ) from None
    try:
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("--auth-file %s can be read by others; chmod 600 it", path)
    except OSError:
        pass
    if isinstance(data, dict) and isinstance(data.get("token"), str) and data["token"]:
        return Credentials("token", f"auth file {path}", token=data["token"])
    if (
        isinstance(data, dict)
        and isinstance(data.get("user"), str)
        and isinstance(data.get("password"), str)
        and data["user"]
    ):
        return Credentials(
            "basic", f"auth file {path}", user=data["user"], password=data["password"]
        )
    keys = sorted(data) if isinstance(data, dict) else type(data).__name__
    raise UsageError(
        f'--auth-file {path}: found {keys}; expected {{"token": "..."}} or '
        '{"user": "...", "password": "..."}'
    )


@dataclass(frozen=True)
class PacsConnection:
    """Everything needed to talk to one DICOMweb service.

    Attributes
    ----------
    url
        Base URL of the service (``http(s)://HOST[:PORT]/PATH``).
    credentials
        How to log in.
    ca_bundle
        A PEM file of certificate authorities to trust for https instead of the system's; TLS
        certificates are always verified.
    timeout_s
        Connect and read timeout of each request.
    """

    url: str
    credentials: Credentials = field(default_factory=lambda: Credentials("anonymous", "nowhere"))
    ca_bundle: Path | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise UsageError(f"--ca-bundle {self.ca_bundle} is not a file")

    def session(self) -> requests.Session:
        """An HTTP session with the credentials and TLS verification on, asking for answers
        uncompressed (``Accept-Encoding: identity``).

        PACS compress answers on the fly when the client accepts gzip, as requests does by
        default: Orthanc 1.10 then served 9 MB images at 14 MB/s instead of 300 MB/s on loopback,
        and DICOM pixel data hardly shrinks. One session per thread: sessions are not thread-safe.
        """
        session = requests.Session()
        # Without the environment's settings: requests lets REQUESTS_CA_BUNDLE override the
        # session's CA bundle, and reads credentials from ~/.netrc. Proxies (HTTP(S)_PROXY,
        # NO_PROXY) and, without --ca-bundle, REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE are taken here.
        session.trust_env = False
        session.proxies = requests.utils.get_environ_proxies(self.url)
        env_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        session.verify = str(self.ca_bundle) if self.ca_bundle else (env_bundle or True)
        session.headers["Accept-Encoding"] = "identity"
        if self.credentials.kind == "basic":
            session.auth = (self.credentials.user, self.credentials.password)
        elif self.credentials.kind == "token":
            session.headers["Authorization"] = f"Bearer {self.credentials.token}"
        return session

    def client(self, session: requests.Session | None = None) -> DICOMwebClient:
        """A DICOMweb client on ``session`` (default: a new :meth:`session`), with retries left
        to :mod:`auditor.pacs.retry` (which also retries connection errors)."""
        client = DICOMwebClient(self.url, session=session or self.session(), timeout=self.timeout_s)
        client.set_http_retry_params(retry=False)
        return client


def connection_from_options(
    address: str, auth_file: Path | None = None, ca_bundle: Path | None = None
) -> PacsConnection:
    """A DICOMweb connection from the commands' options: ``address`` as ``dicomweb+http(s)://``,
    credentials from ``auth_file`` or the environment (:func:`load_credentials`).

    Raises
    ------
    UsageError
        For a bad address, auth file or CA bundle.
    """
    return PacsConnection(dicomweb_url(address), load_credentials(auth_file), ca_bundle=ca_bundle)
