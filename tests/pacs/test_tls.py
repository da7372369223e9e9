"""TLS is verified by default, ``--ca-bundle`` trusts a local authority, and a bearer token is
sent as such. Orthanc 1.10.1 from Debian crashes on its first https request, so the server here
is a minimal DICOMweb stand-in on loopback (Python's http.server with ssl), answering QIDO-RS
with an empty list."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from auditor.pacs.connect import Credentials, PacsConnection, PacsError
from auditor.pacs.retry import RetryPolicy
from auditor.pacs.source import PacsSource, query_studies


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (needed to make a test certificate)")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_pacs(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """(DICOMweb root, CA bundle, Authorization headers received) of a loopback https server."""
    cert, key = _certificate(tmp_path)
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append(self.headers.get("Authorization", ""))
            body = b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/dicom-web", cert, received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_tls_is_verified_and_a_ca_bundle_is_trusted(
    https_pacs: tuple[str, Path, list[str]],
) -> None:
    url, ca_bundle, received = https_pacs
    token = Credentials("token", "test", token="t0ken-value")
    retry = RetryPolicy(attempts=1)
    untrusted = PacsSource(PacsConnection(url, token), retry=retry)
    with pytest.raises(PacsError, match=r"TLS verification failed.*--ca-bundle"):
        query_studies(untrusted.connection.client(), untrusted, ["DX"])
    assert received == []  # nothing was sent over an unverified connection

    trusted = PacsSource(PacsConnection(url, token, ca_bundle=ca_bundle), retry=retry)
    assert query_studies(trusted.connection.client(), trusted, ["DX"]) == []
    assert received == ["Bearer t0ken-value"]
