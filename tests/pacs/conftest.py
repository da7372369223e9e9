"""Fixtures for the PACS tests: a synthetic archive and a real Orthanc holding it.

Orthanc and its DICOMweb plugin come from the Debian packages ``orthanc`` and
``orthanc-dicomweb``. Without them the tests skip with a message, unless ``TLAUDIT_REQUIRE_PACS=1``
(set by ``.ci/run``), which makes a missing server a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from auditor.synth.archive import write_archive
from auditor.synth.config import SynthConfig
from tests.pacs.orthanc import REQUIRE_ENV, Orthanc, find_orthanc


@dataclass(frozen=True)
class PacsWorld:
    """A synthetic world on disk (``root``: archive/, boxes.csv, reads.csv) and what was sent."""

    root: Path
    stored: dict[str, str]  # SOP Instance UID -> Modality of each instance Orthanc accepted
    not_dicom: int  # files of the archive that are no DICOM a PACS would take


def make_pacs_world(root: Path, studies: int = 4, seed: int = 3) -> Path:
    """A small synthetic world with one distractor of each kind per study (CT, extremity...)."""
    write_archive(root, studies, seed, SynthConfig(max_side=320, distractor_rate=1.0))
    return root


def upload(server: Orthanc, archive: Path) -> tuple[dict[str, str], int]:
    """Send every DICOM file of ``archive`` with STOW-RS; return the stored UIDs (with their
    modality) and the number
    of files that are not DICOM a PACS takes (the synthetic world's non-DICOM and truncated
    distractors)."""
    session = requests.Session()
    session.auth = server.auth
    client = DICOMwebClient(f"{server.url}/dicom-web", session=session)
    stored: dict[str, str] = {}
    refused = 0
    for path in sorted(p for p in archive.rglob("*") if p.is_file()):
        try:
            dataset = pydicom.dcmread(path)
            dataset.pixel_array  # noqa: B018  (a truncated file fails here, not in Orthanc)
        except Exception:
            refused += 1
            continue
        client.store_instances([dataset])
        stored[str(dataset.SOPInstanceUID)] = str(dataset.get("Modality", ""))
    return stored, refused


def start_orthanc(folder: Path) -> Orthanc:
    """Start an Orthanc in ``folder`` or skip (fail with TLAUDIT_REQUIRE_PACS=1) without one."""
    found = find_orthanc()
    if found is None:
        message = (
            "Orthanc with its DICOMweb plugin is not installed "
            "(apt-get install orthanc orthanc-dicomweb)"
        )
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {message}")
        pytest.skip(message)
    server = Orthanc(found[0], found[1], folder)
    server.start()
    return server


@pytest.fixture(scope="module")
def orthanc_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Orthanc]]:
    """Servers started by a test module; all are stopped when the module ends."""
    servers: list[Orthanc] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def pacs_world(
    tmp_path_factory: pytest.TempPathFactory, orthanc_factory: list[Orthanc]
) -> tuple[Orthanc, PacsWorld]:
    """An Orthanc on loopback holding the synthetic world, and the world on disk."""
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    orthanc_factory.append(server)
    root = make_pacs_world(tmp_path_factory.mktemp("world"))
    stored, refused = upload(server, root / "archive")
    return server, PacsWorld(root, stored, refused)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained resnet18 classifier bundle for 32-pixel crops (seed 0); tests only read it."""
    from auditor.model.bundle import create_untrained_bundle

    return create_untrained_bundle(tmp_path_factory.mktemp("model"), "resnet18", 32, seed=0)
