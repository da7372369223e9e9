"""The workbench's front door: the session token, the Host allowlist and the security headers.

Every request passes through :class:`Guard` before it reaches a route:

- its ``Host`` header must name an allowed host (127.0.0.1, localhost, ::1 and the host the server
  is bound to), which defeats DNS rebinding: a hostile page whose name resolves to 127.0.0.1
  still sends its own name;
- it must carry the session token, compared in constant time (:func:`hmac.compare_digest`). A
  GET or HEAD may carry it in the ``token`` query parameter (an ``<img>`` cannot send a header);
  any other method must send it in the ``X-Tlaudit-Token`` header, and is refused when the token
  is only in the URL. A custom header also makes a cross-site request need a CORS preflight,
  which the workbench never grants. A request with an ``Origin`` header must come from an
  allowed host;
- every response, a refusal included, carries a Content-Security-Policy without remote origins
  or inline script, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` (the
  token never leaves in a Referer) and ``X-Frame-Options: DENY``; a response that sets no
  ``Cache-Control`` of its own gets ``no-store``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_HEADER = "X-Tlaudit-Token"
TOKEN_PARAM = "token"
#: Hosts a loopback-bound workbench answers to.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
_SAFE_METHODS = frozenset({"GET", "HEAD"})


def host_name(value: str) -> str:
    """The host part of a ``Host`` header or URL authority, lower case, without port or
    brackets (``"[::1]:8000"`` -> ``"::1"``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


class Guard:
    """ASGI middleware enforcing the token, the Host allowlist and the security headers.

    Parameters
    ----------
    app
        The application behind the guard.
    token
        The session token (compared in constant time).
    hosts
        Hosts allowed besides :data:`LOOPBACK_HOSTS` (the host the server is bound to).
    """

    def __init__(self, app: ASGIApp, token: str, hosts: Iterable[str] = ()) -> None:
        if not token:
            raise ValueError("the workbench needs a non-empty session token")
        self._app = app
        self._token = token.encode("utf-8")
        self._hosts = LOOPBACK_HOSTS | {host_name(h) for h in hosts if h}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS:
                    if name.lower().encode("latin-1") not in names:
                        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        refusal = self.refusal(scope)
        if refusal is not None:
            status, reason = refusal
            await PlainTextResponse(reason, status_code=status)(scope, receive, send_with_headers)
            return
        await self._app(scope, receive, send_with_headers)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """Why a request is refused, as (status, reason), or None when it may pass."""
        headers = Headers(scope=scope)
        if host_name(headers.get("host", "")) not in self._hosts:
            return 403, "refused: this workbench answers only to its own host name"
        origin = headers.get("origin")
        if origin is not None and host_name(urlsplit(origin).netloc) not in self._hosts:
            return 403, "refused: cross-origin request"
        sent = headers.get(TOKEN_HEADER)
        if scope["method"] in _SAFE_METHODS:
            if sent is None:
                query = scope.get("query_string", b"").decode("latin-1")
                sent = dict(parse_qsl(query)).get(TOKEN_PARAM)
        elif sent is None:
            return (
                403,
                f"refused: a {scope['method']} request must carry the token in {TOKEN_HEADER}",
            )
        if sent is None or not hmac.compare_digest(sent.encode("utf-8"), self._token):
            return 403, "refused: missing or wrong session token (open the URL the server printed)"
        return None
