"""A real Orthanc PACS with its DICOMweb plugin, started on loopback for one test module.

:class:`Orthanc` writes a configuration into a temporary folder (HTTP on a free loopback port,
remote access refused, one registered user, storage and index inside the folder, the Debian
``orthanc-dicomweb`` plugin), starts ``Orthanc`` as a subprocess and waits
until its REST API answers. It can be stopped and started again on the same port and storage,
which the fault tests use to kill the server in the middle of a scan.

Its DICOM port (:attr:`Orthanc.dicom_port`, a free port; tlaudit's DIMSE route) answers only
the AE title :data:`CALLING_AET` from 127.0.0.1 (``DicomCheckModalityHost``), and only C-ECHO,
C-FIND and C-GET, addressed to :data:`CALLED_AET` (``DicomCheckCalledAet``): Orthanc 1.10 has no
option to listen on loopback alone, so an association from elsewhere, or under another title,
is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ORTHANC_BINARIES = ("Orthanc", "/usr/sbin/Orthanc")
DICOMWEB_PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7",
)
REQUIRE_ENV = "TLAUDIT_REQUIRE_PACS"
USER, PASSWORD = "qa-robot", "s3cret-Passw0rd"
CALLED_AET = "TLAUDIT-PACS"
"""Orthanc's own AE title (``DicomAet``)."""
CALLING_AET = "TLAUDIT"
"""The one AE title Orthanc answers (tlaudit's default ``--calling-aet``)."""


def find_orthanc() -> tuple[str, str] | None:
    """(Orthanc binary, DICOMweb plugin) when both are installed, else None."""
    binary = next((b for b in map(shutil.which, ORTHANC_BINARIES) if b), None)
    plugin = next((p for p in DICOMWEB_PLUGINS if Path(p).is_file()), None)
    return (binary, plugin) if binary and plugin else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Orthanc:
    """One Orthanc server on 127.0.0.1 with storage under ``folder``."""

    binary: str
    plugin: str
    folder: Path
    port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        """The DICOMweb root as tlaudit scan takes it."""
        return f"dicomweb+{self.url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return (USER, PASSWORD)

    def write_config(self) -> Path:
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "tlaudit-test",
            "HttpPort": self.port,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,  # loopback only
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "DicomServerEnabled": True,
            "DicomAet": CALLED_AET,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomModalities": {
                "tlaudit": {
                    "AET": CALLING_AET,
                    "Host": "127.0.0.1",
                    "Port": 104,  # never called: C-GET answers on the association itself
                    "AllowEcho": True,
                    "AllowFind": True,
                    "AllowGet": True,
                    "AllowMove": False,
                    "AllowStore": False,
                }
            },
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [self.plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"},
            "HttpTimeout": 10,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until its REST API answers (raises on failure)."""
        config = self.write_config()
        log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            env={**os.environ, "LANG": "C.UTF-8"},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: {self.log()}")
            try:
                answer = requests.get(f"{self.url}/system", auth=self.auth, timeout=1)
                if answer.status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout} s: {self.log()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log(self) -> str:
        """The end of the server's log, for failure messages."""
        path = self.folder / "orthanc.log"
        return path.read_text(errors="replace")[-2000:] if path.is_file() else ""
