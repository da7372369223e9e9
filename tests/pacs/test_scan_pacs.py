"""``tlaudit scan dicomweb+http://...`` against a real Orthanc: the same findings as a scan of the
same files from disk, every instance accounted for, clean errors, faults and resume."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from auditor.archive.inventory import FileRecord
from auditor.archive.triage import Reason, TriageRules
from auditor.errors import UsageError
from auditor.pacs.connect import (
    PacsAuthError,
    PacsConnection,
    dicomweb_url,
    load_credentials,
)
from auditor.pacs.retry import RetryPolicy
from auditor.pacs.scan import ACCOUNTING_NAME, scan_pacs
from auditor.pacs.source import CACHE_DIR, PacsSource, gather, parse_study_date
from auditor.scan.config import ScanConfig
from auditor.scan.pipeline import run_scan
from auditor.vocab import FileStatus
from tests.pacs.conftest import PacsWorld, make_pacs_world, start_orthanc, upload
from tests.pacs.orthanc import PASSWORD, USER, Orthanc

FAST_RETRY = RetryPolicy(attempts=2, first_wait_s=0.05, max_wait_s=0.1)


def _source(server: Orthanc, password: str = PASSWORD, **kw: object) -> PacsSource:
    credentials = load_credentials(
        environ={"TLAUDIT_DICOMWEB_USER": USER, "TLAUDIT_DICOMWEB_PASSWORD": password}
    )
    connection = PacsConnection(f"{server.url}/dicom-web", credentials, timeout_s=5)
    return PacsSource(connection, retry=FAST_RETRY, **kw)  # type: ignore[arg-type]


def _config(world: PacsWorld, bundle: Path, out: Path, **kw: object) -> ScanConfig:
    options: dict[str, object] = {
        "archive": world.root / "archive",
        "out": out,
        "boxes": world.root / "boxes.csv",
        "reads": world.root / "reads.csv",
        "model": bundle,
        "threshold": 0.5,
        "device": "cpu",
        "batch_size": 8,
        "workers": 0,
    }
    options.update(kw)
    return ScanConfig(**options)  # type: ignore[arg-type]


def _findings(run: Path) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(SOP Instance UID, level) -> (probability, call, study status); both archives name each
    file by its SOP Instance UID."""
    with (run / "findings.csv").open(newline="", encoding="utf-8") as handle:
        return {
            (Path(row["image"]).stem, row["level"]): (
                row["probability"],
                row["call"],
                row["study_status"],
            )
            for row in csv.DictReader(handle)
        }


def _accounting(run: Path) -> list[dict[str, str]]:
    with (run / ACCOUNTING_NAME).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_pacs_scan_finds_what_the_disk_scan_finds(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    server, world = pacs_world
    disk = run_scan(_config(world, bundle, tmp_path / "disk"))
    pacs = scan_pacs(_config(world, bundle, tmp_path / "pacs"), _source(server))

    disk_findings, pacs_findings = _findings(tmp_path / "disk"), _findings(tmp_path / "pacs")
    assert len(pacs_findings) == disk.n_vertebrae > 0
    assert pacs_findings == disk_findings
    assert pacs.scan.status_counts == disk.status_counts
    # every instance of the studies holding a radiograph is one row keyed by its UIDs (the CT
    # study is not asked for); only candidates were retrieved
    rows = _accounting(tmp_path / "pacs")
    radiographs = {uid for uid, modality in world.stored.items() if modality in ("CR", "DX", "RG")}
    assert {r["sop_instance_uid"] for r in rows} == radiographs
    assert len(rows) == len(radiographs)
    for row in rows:
        study, _series, name = row["path"].split("/")
        assert (study, name) == (row["study_uid"], row["sop_instance_uid"] + ".dcm")
    candidates = [r for r in rows if r["status"] == "candidate"]
    assert pacs.gathered.retrieved == len(candidates) == disk.n_candidates == 4
    # the extremity radiograph is skipped from its QIDO metadata alone, never retrieved
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert [r["reason"] for r in skipped] == ["other body part"]
    assert not (tmp_path / "pacs" / CACHE_DIR).exists()  # removed once the scan finished


def test_wrong_password_is_a_clean_error_that_never_shows_the_password(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    server, world = pacs_world
    with pytest.raises(PacsAuthError, match="refused the credentials"):
        scan_pacs(_config(world, bundle, tmp_path / "run"), _source(server, password="wrong"))
    assert not (tmp_path / "run" / "journal.sqlite").exists()


@pytest.mark.slow
def test_cli_scan_of_a_pacs_with_a_wrong_password_exits_1(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    server, world = pacs_world
    wrong = "Not-The-Password-42"
    env = {
        **os.environ,
        "TLAUDIT_DICOMWEB_USER": USER,
        "TLAUDIT_DICOMWEB_PASSWORD": wrong,
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [
            sys.executable, "-m", "auditor", "scan", server.dicomweb, "--out",
            str(tmp_path / "run"), "--model", str(bundle), "--boxes",
            str(world.root / "boxes.csv"), "--device", "cpu",
        ],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refused the credentials (HTTP 401)" in done.stderr
    assert wrong not in done.stdout + done.stderr


def test_credentials_come_from_a_file_and_never_from_the_address(tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"token": "abc.def"}), encoding="utf-8")
    credentials = load_credentials(auth, environ={})
    assert (credentials.kind, credentials.token) == ("token", "abc.def")
    assert "abc.def" not in repr(credentials) + credentials.describe()
    with pytest.raises(UsageError, match="holds credentials"):
        dicomweb_url("dicomweb+https://qa:secret@pacs.example/dicom-web")
    bad = tmp_path / "bad.json"
    bad.write_text('{"password": "only-this-secret"}', encoding="utf-8")
    with pytest.raises(UsageError) as raised:
        load_credentials(bad, environ={})
    assert "only-this-secret" not in str(raised.value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("20200101-20201231", "20200101-20201231"),
        ("2020-01-01-2020-12-31", "20200101-20201231"),
        ("20200101-", "20200101-"),
        ("-20201231", "-20201231"),
        ("20200315", "20200315-20200315"),
    ],
)
def test_study_date_ranges(given: str, expected: str) -> None:
    assert parse_study_date(given) == expected


@pytest.mark.parametrize("given", ["2020", "20201231-20200101", "-", "yesterday"])
def test_bad_study_date_ranges_are_refused(given: str) -> None:
    with pytest.raises(UsageError, match="--study-date"):
        parse_study_date(given)


def test_a_dead_pacs_gives_error_rows_and_resume_retrieves_only_what_is_missing(
    tmp_path: Path,
) -> None:
    server = start_orthanc(tmp_path / "orthanc")
    try:
        root = make_pacs_world(tmp_path / "world")
        stored, _ = upload(server, root / "archive")
        rules = TriageRules()
        stopped: list[str] = []

        def stop_after_first_candidate(record: FileRecord) -> None:
            if record.status is FileStatus.CANDIDATE and not stopped:
                server.stop()  # the PACS dies in the middle of the retrieval
                stopped.append(record.relpath)

        # one request at a time, so that the server dies between two retrievals
        first = gather(
            _source(server, connections=1), rules, tmp_path / "run", stop_after_first_candidate
        )
        failed = [r for r in first.records if r.status is FileStatus.UNREADABLE]
        assert first.retrieved == 1 and len(failed) == 3  # 4 candidates, 1 retrieved
        assert all(r.reason is Reason.CANNOT_OPEN for r in failed)
        assert all("with --resume" in r.detail.lower() for r in failed)
        assert all(r.meta is not None and r.meta.sop_uid in stored for r in failed)

        server.start()
        again = gather(_source(server), rules, tmp_path / "run")
        assert (again.reused, again.retrieved) == (1, 3)
        candidates = [r for r in again.records if r.status is FileStatus.CANDIDATE]
        assert len(candidates) == 4 and all(r.path.is_file() for r in candidates)
        assert [r.relpath for r in candidates if "earlier run" in r.detail] == stopped
    finally:
        server.stop()


def test_retrieved_instances_are_the_files_the_pacs_stores_byte_for_byte(
    pacs_world: tuple[Orthanc, PacsWorld], tmp_path: Path
) -> None:
    server, _world = pacs_world
    gathered = gather(_source(server), TriageRules(), tmp_path / "run")
    candidates = [r for r in gathered.records if r.status is FileStatus.CANDIDATE]
    assert len(candidates) == gathered.retrieved == 4
    session = requests.Session()
    session.auth = server.auth
    for record in candidates:
        assert record.meta is not None
        (found,) = session.post(f"{server.url}/tools/lookup", data=record.meta.sop_uid).json()
        stored = session.get(f"{server.url}/instances/{found['ID']}/file").content
        assert record.path.read_bytes() == stored
        assert record.size == len(stored)
    assert not list((tmp_path / "run" / CACHE_DIR).rglob("*.part"))
