"""``tlaudit scan dicom://CALLED_AET@HOST:PORT`` (C-FIND and C-GET) against a real Orthanc: the
file scan's findings, the DICOMweb route's accounting, clean refusals, faults and resume."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

from auditor.archive.triage import TriageRules
from auditor.errors import UsageError
from auditor.pacs.associations import (
    DEFAULT_CALLING_AET,
    Associations,
    DimseConnection,
    _Held,
    check_ae_title,
)
from auditor.pacs.connect import PacsAuthError
from auditor.pacs.dimse import DimseSource, dimse_connection
from auditor.pacs.scan import query, route_from_options, scan_pacs
from auditor.pacs.source import CACHE_DIR, PacsSource, gather
from auditor.scan.config import ScanEvent
from auditor.scan.journal import JOURNAL_NAME
from auditor.scan.pipeline import run_scan
from auditor.vocab import FileStatus
from tests.pacs.conftest import PacsWorld, make_pacs_world, start_orthanc, upload
from tests.pacs.orthanc import CALLED_AET, CALLING_AET, Orthanc
from tests.pacs.test_scan_pacs import FAST_RETRY, _accounting, _config, _findings, _source


def _dimse(
    server: Orthanc, called: str = CALLED_AET, calling: str = CALLING_AET, **kw: object
) -> DimseSource:
    connection = DimseConnection("127.0.0.1", server.dicom_port, called, calling, timeout_s=5)
    return DimseSource(connection, retry=FAST_RETRY, **kw)  # type: ignore[arg-type]


def _stored_file(server: Orthanc, sop_uid: str) -> bytes:
    session = requests.Session()
    session.auth = server.auth
    (found,) = session.post(f"{server.url}/tools/lookup", data=sop_uid).json()
    return session.get(f"{server.url}/instances/{found['ID']}/file").content


# -- addresses, without a server ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("dicom://PACS@10.0.0.5:104", ("10.0.0.5", 104, "PACS")),
        ("DICOM://MAIN ARCHIVE@pacs.example:11112/", ("pacs.example", 11112, "MAIN ARCHIVE")),
        ("dicom://PACS@[::1]:4242", ("::1", 4242, "PACS")),
    ],
)
def test_dimse_addresses(address: str, expected: tuple[str, int, str]) -> None:
    connection = dimse_connection(address)
    assert (connection.host, connection.port, connection.called_aet) == expected
    assert connection.calling_aet == DEFAULT_CALLING_AET


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("dicom://pacs.example:104", "expected dicom://CALLED_AET@HOST:PORT"),
        ("dicom://PACS@pacs.example", "expected dicom://CALLED_AET@HOST:PORT"),
        ("dicom://PACS@pacs.example:104/path", "expected dicom://CALLED_AET@HOST:PORT"),
        ("dicom://A-TITLE-LONGER-THAN-16@pacs:104", "the called AE title"),
        ("dicom://BACK\\SLASH@pacs:104", "the called AE title"),
        ("dicom://PACS@pacs:70000", "expected 1 to 65535"),
    ],
)
def test_bad_dimse_addresses_say_what_was_expected(address: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        dimse_connection(address)


def test_calling_aet_is_checked_and_only_for_dimse() -> None:
    assert check_ae_title(" QA ROBOT ", "--calling-aet") == "QA ROBOT"
    with pytest.raises(UsageError, match="--calling-aet"):
        dimse_connection("dicom://PACS@pacs:104", calling_aet="")
    with pytest.raises(UsageError, match="--calling-aet is tlaudit's AE title"):
        route_from_options("dicomweb+https://pacs.example/dicom-web", calling_aet="TLAUDIT")
    route = route_from_options("dicom://PACS@pacs:104", "20200101-", calling_aet="QA")
    assert isinstance(route, DimseSource)
    assert route.describe() == "DIMSE dicom://PACS@pacs:104, studies 20200101-"
    assert isinstance(route_from_options("dicomweb+https://pacs.example/dicom-web"), PacsSource)


class _StrictPacs(Associations):
    """C-FIND answers of a PACS that gives each level's attributes only at that level (and
    ignores a list of Study Instance UIDs above the image level), without a server."""

    def __init__(self) -> None:
        super().__init__(DimseConnection("127.0.0.1", 104, "PACS"))
        self.levels: list[str] = []

    def find(self, query: Dataset) -> list[Dataset]:
        level = str(query.QueryRetrieveLevel)
        self.levels.append(level)
        answer = Dataset()
        answer.StudyInstanceUID = "1.2.3"
        if level == "STUDY":
            answer.PatientID, answer.StudyDescription = "P1", "SPINE"
        elif level == "SERIES":
            answer.SeriesInstanceUID, answer.Modality, answer.BodyPartExamined = (
                "1.2.3.4",
                "DX",
                "SPINE",
            )
        else:
            answer.SeriesInstanceUID, answer.SOPInstanceUID = "1.2.3.4", "1.2.3.4.5"
            answer.ViewPosition, answer.Rows, answer.Modality = "LL", 100, ""
        return [answer]


def test_a_strict_pacs_answers_are_merged_from_its_three_levels() -> None:
    pacs = _StrictPacs()
    finder = pacs.client()
    (study,) = finder.search_for_studies(search_filters={"ModalitiesInStudy": "DX"}, fields=[])
    for found in (
        finder.search_for_instances("1.2.3", fields=["ViewPosition", "Rows"]),
        # several studies at once: the images came without a Modality, so asked again in turn
        finder.search_for_instances(
            search_filters={"StudyInstanceUID": "1.2.3,9.9"}, fields=["ViewPosition", "Rows"]
        ),
    ):
        (image,) = found
        values = {tag: element.get("Value") for tag, element in image.items()}
        assert values["00100020"] == ["P1"]  # Patient ID, from the study's answer
        assert values["00080060"] == ["DX"]  # Modality, from the series' answer
        assert values["00185101"] == ["LL"]  # View Position, the image's own
    assert study["0020000D"]["Value"] == ["1.2.3"]
    assert pacs.levels == ["STUDY", "SERIES", "IMAGE", "IMAGE", "SERIES", "IMAGE"]


class _FakeAssociation:
    is_established = True

    def __init__(self, opened: list[_FakeAssociation]) -> None:
        self.released = False
        opened.append(self)

    def release(self) -> None:
        self.released = True
        self.is_established = False


def test_idle_associations_of_another_kind_make_way_within_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[_FakeAssociation] = []

    def associate(self: Associations, sop_class: str | None) -> _Held:
        held = _Held()
        held.assoc = _FakeAssociation(opened)  # type: ignore[assignment]
        return held

    monkeypatch.setattr(Associations, "_associate", associate)
    link = Associations(DimseConnection("127.0.0.1", 104, "PACS"), limit=1)
    with link.held(None):
        pass
    with link.held("1.2.840.10008.5.1.4.1.1.1.1"):
        assert opened[0].released  # the idle query association went first
    with link.held("1.2.840.10008.5.1.4.1.1.1.1"):
        pass
    assert len(opened) == 2  # the retrieval association was kept and used again
    link.close()
    assert all(a.released for a in opened)


# -- against Orthanc ------------------------------------------------------------------------------


@pytest.mark.parametrize("connections", [1, 4])  # 1: the studies in one list; 4: one by one
def test_c_find_triages_as_qido_does(
    pacs_world: tuple[Orthanc, PacsWorld], tmp_path: Path, connections: int
) -> None:
    server, _world = pacs_world
    dimse = query(_dimse(server, connections=connections), TriageRules(), tmp_path / CACHE_DIR)
    web = query(_source(server), TriageRules(), tmp_path / CACHE_DIR)
    assert len(dimse) == 5  # the CT study is not asked for
    assert [(r.relpath, r.status, r.reason, r.detail, r.meta) for r in dimse] == [
        (r.relpath, r.status, r.reason, r.detail, r.meta) for r in web
    ]


def test_c_get_retrieves_the_data_sets_the_pacs_stores(
    pacs_world: tuple[Orthanc, PacsWorld], tmp_path: Path
) -> None:
    server, _world = pacs_world
    gathered = gather(_dimse(server), TriageRules(), tmp_path / "run")
    candidates = [r for r in gathered.records if r.status is FileStatus.CANDIDATE]
    assert len(candidates) == gathered.retrieved == 4
    for record in candidates:
        assert record.meta is not None
        stored = pydicom.dcmread(
            pydicom.filebase.DicomBytesIO(_stored_file(server, record.meta.sop_uid))
        )
        retrieved = pydicom.dcmread(record.path)
        # as stored, not transcoded: the same transfer syntax and the same elements
        assert retrieved.file_meta.TransferSyntaxUID == stored.file_meta.TransferSyntaxUID
        assert retrieved == stored
        assert record.size == record.path.stat().st_size
    assert not list((tmp_path / "run" / CACHE_DIR).rglob("*.part"))


@pytest.mark.slow
def test_dimse_scan_finds_what_the_disk_scan_finds(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    server, world = pacs_world
    disk = run_scan(_config(world, bundle, tmp_path / "disk"))
    dimse = scan_pacs(_config(world, bundle, tmp_path / "dimse"), _dimse(server))
    assert _findings(tmp_path / "dimse") == _findings(tmp_path / "disk")
    assert len(_findings(tmp_path / "dimse")) == disk.n_vertebrae > 0
    assert dimse.scan.status_counts == disk.status_counts
    assert dimse.stream is not None and dimse.stream.retrieved == disk.n_candidates == 4
    # the same accounting as the DICOMweb route: one row per instance, keyed by its UIDs
    web = scan_pacs(_config(world, bundle, tmp_path / "web"), _source(server))
    assert web.stream is not None

    def rows(run: Path) -> list[tuple[str, ...]]:
        return [
            (r["path"], r["status"], r["reason"], r["sop_instance_uid"], r["study_uid"])
            for r in _accounting(run)
        ]

    # sizes differ by the file meta header: C-GET sends the data set, tlaudit writes the header

    assert rows(tmp_path / "dimse") == rows(tmp_path / "web")
    assert all(
        int(r["size_bytes"]) > 0
        for r in _accounting(tmp_path / "dimse")
        if r["status"] == "candidate"
    )
    assert not (tmp_path / "dimse" / CACHE_DIR).exists()


@pytest.mark.parametrize(
    ("called", "calling", "reason"),
    [
        ("NOT-THE-PACS", CALLING_AET, "Called AE title not recognised"),
        (CALLED_AET, "STRANGER", "Calling AE title not recognised"),
    ],
)
def test_a_refused_association_is_a_clean_error_naming_the_titles(
    pacs_world: tuple[Orthanc, PacsWorld],
    bundle: Path,
    tmp_path: Path,
    called: str,
    calling: str,
    reason: str,
) -> None:
    server, world = pacs_world
    with pytest.raises(PacsAuthError, match="rejected the association") as raised:
        scan_pacs(_config(world, bundle, tmp_path / "run"), _dimse(server, called, calling))
    assert f"called AE title {called!r}, calling AE title {calling!r}" in str(raised.value)
    assert reason.lower() in str(raised.value).lower() or "no reason given" in str(raised.value)
    assert not (tmp_path / "run" / JOURNAL_NAME).exists()


@pytest.mark.slow
def test_cli_scan_over_dimse_with_a_wrong_called_aet_exits_1(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    server, world = pacs_world
    done = subprocess.run(
        [
            sys.executable, "-m", "auditor", "scan",
            f"dicom://WRONG@127.0.0.1:{server.dicom_port}", "--calling-aet", CALLING_AET,
            "--out", str(tmp_path / "run"), "--model", str(bundle), "--boxes",
            str(world.root / "boxes.csv"), "--device", "cpu",
        ],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, check=False,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "rejected the association" in done.stderr
    assert "called AE title 'WRONG'" in done.stderr


def test_a_dead_pacs_gives_rows_and_resume_retrieves_only_what_is_missing(
    tmp_path: Path,
) -> None:
    server = start_orthanc(tmp_path / "orthanc")
    try:
        stored, _ = upload(server, make_pacs_world(tmp_path / "world") / "archive")
        rules = TriageRules()
        stopped: list[str] = []

        def stop_after_first_candidate(record: object) -> None:
            if getattr(record, "status", None) is FileStatus.CANDIDATE and not stopped:
                server.stop()  # the PACS dies in the middle of the retrieval
                stopped.append(record.relpath)  # type: ignore[attr-defined]

        first = gather(
            _dimse(server, connections=1), rules, tmp_path / "run", stop_after_first_candidate
        )
        failed = [r for r in first.records if r.status is FileStatus.UNREADABLE]
        assert first.retrieved == 1 and len(failed) == 3
        assert all("--resume" in r.detail for r in failed)
        assert all(r.meta is not None and r.meta.sop_uid in stored for r in failed)

        server.start()  # the same ports and storage
        again = gather(_dimse(server), rules, tmp_path / "run")
        assert (again.reused, again.retrieved) == (1, 3)
        candidates = [r for r in again.records if r.status is FileStatus.CANDIDATE]
        assert len(candidates) == 4 and all(r.path.is_file() for r in candidates)
        assert [r.relpath for r in candidates if "earlier run" in r.detail] == stopped
    finally:
        server.stop()


def _broken_copy(world: Path) -> str:
    """Add to the world's archive a copy of one candidate under a new SOP Instance UID with half
    its pixel data cut off (it stores, and fails to decode), with boxes; its UID."""
    boxes = world / "boxes.csv"
    with boxes.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    source = world / "archive" / rows[0]["image"]
    dataset = pydicom.dcmread(source)
    assert not dataset.file_meta.TransferSyntaxUID.is_compressed
    uid = pydicom.uid.generate_uid(prefix="2.25.")
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = uid
    dataset.PixelData = dataset.PixelData[: len(dataset.PixelData) // 2]
    image = str(Path(rows[0]["image"]).with_name(f"{uid}.dcm"))
    dataset.save_as(world / "archive" / image)
    copies = [
        {**row, "image": image, "sop_instance_uid": uid}
        for row in rows
        if row["image"] == rows[0]["image"]
    ]
    with boxes.open("a", newline="", encoding="utf-8") as handle:
        csv.DictWriter(handle, fieldnames=list(rows[0])).writerows(copies)
    return uid


@pytest.mark.slow
def test_a_missing_instance_and_one_that_fails_to_decode_are_rows_and_resume_completes(
    bundle: Path, tmp_path: Path
) -> None:
    server = start_orthanc(tmp_path / "orthanc")
    try:
        root = make_pacs_world(tmp_path / "world")
        broken = _broken_copy(root)
        session = requests.Session()
        session.auth = server.auth
        path = next((root / "archive").rglob(f"{broken}.dcm"))
        # Orthanc stores what pydicom cannot decode (upload() leaves such files out)
        session.post(f"{server.url}/instances", data=path.read_bytes()).raise_for_status()
        stored, refused = upload(server, root / "archive")
        world = PacsWorld(root, stored, refused)
        removed: list[str] = []

        def remove_one_after_the_query(event: ScanEvent) -> None:
            # an instance deleted between the C-FIND query and its C-GET retrieval
            if event.message.startswith("PACS:") and not removed:
                uid = next(u for u, m in stored.items() if m in ("CR", "DX") and u != broken)
                (found,) = session.post(f"{server.url}/tools/lookup", data=uid).json()
                session.delete(f"{server.url}/instances/{found['ID']}").raise_for_status()
                removed.append(uid)

        run = tmp_path / "dimse"
        first = scan_pacs(
            _config(world, bundle, run, batch_size=1),
            _dimse(server),
            remove_one_after_the_query,
        )
        assert first.stream is not None
        assert (first.stream.retrieved, first.stream.not_retrieved) == (4, 1)
        (row,) = [r for r in _accounting(run) if r["sop_instance_uid"] == removed[0]]
        assert row["status"] == "unreadable" and "rerun with --resume" in row["detail"]
        assert "failure status 0xC000 (unable to process" in row["detail"]  # Orthanc's answer
        # the broken copy was retrieved, and is the scan's one input error (as in the file scan)
        assert first.scan.n_errors == 1
        disk = run_scan(_config(world, bundle, tmp_path / "disk", batch_size=1))
        assert disk.n_errors == 1

        upload(server, root / "archive")  # the instance is back
        again = scan_pacs(_config(world, bundle, run, batch_size=1, resume=True), _dimse(server))
        assert again.stream is not None
        assert again.stream.not_retrieved == 0
        assert _findings(run) == _findings(tmp_path / "disk")
        assert again.scan.n_images == disk.n_images
    finally:
        server.stop()
