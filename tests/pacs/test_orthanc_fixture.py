"""The test PACS itself: loopback only, authentication on, the synthetic world stored."""

from __future__ import annotations

import requests

from tests.pacs.conftest import PacsWorld
from tests.pacs.orthanc import Orthanc


def test_orthanc_holds_the_world_and_refuses_anonymous_access(
    pacs_world: tuple[Orthanc, PacsWorld],
) -> None:
    server, world = pacs_world
    assert server.url.startswith("http://127.0.0.1:")
    anonymous = requests.get(f"{server.url}/dicom-web/instances", timeout=5)
    assert anonymous.status_code == 401
    answer = requests.get(f"{server.url}/dicom-web/instances", auth=server.auth, timeout=5)
    assert answer.status_code == 200
    uids = {item["00080018"]["Value"][0] for item in answer.json()}
    assert uids == set(world.stored)
    # seed 3: 4 lateral studies, a CT slice and an extremity; a truncated file and a non-DICOM
    # file stay behind
    assert (len(world.stored), world.not_dicom) == (6, 2)
