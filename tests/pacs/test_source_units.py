"""The PACS source without a server: retries, QIDO answers missing fields, metadata."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from auditor.archive.triage import Reason, TriageRules
from auditor.pacs.connect import PacsAuthError, PacsConnection, PacsError
from auditor.pacs.metadata import meta_from_json
from auditor.pacs.retry import RetryPolicy, call
from auditor.pacs.source import (
    DEFAULT_CACHE_CAP_MB,
    STUDIES_PER_LISTING,
    PacsSource,
    _triaged,
    dicom_part,
    triage_instances,
)
from auditor.vocab import FileStatus

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


def _flaky(failures: list[BaseException]) -> Callable[[], str]:
    def request() -> str:
        if failures:
            raise failures.pop(0)
        return "answer"

    return request


def test_transient_failures_are_retried_with_growing_waits() -> None:
    waits: list[float] = []
    failures: list[BaseException] = [requests.ConnectionError("down"), _http_error(503)]
    policy = RetryPolicy(attempts=3, first_wait_s=0.5, max_wait_s=8)
    assert call("QIDO-RS studies", _flaky(failures), policy, sleep=waits.append) == "answer"
    assert waits == [0.5, 1.0]


def test_the_last_failure_says_what_to_do() -> None:
    failures: list[BaseException] = [requests.Timeout("slow")] * 3
    with pytest.raises(PacsError, match=r"Timeout after 3 tries.*--resume"):
        call(
            "WADO-RS instance 1.2", _flaky(failures), RetryPolicy(attempts=3), sleep=lambda s: None
        )


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_not_retried(status: int) -> None:
    waits: list[float] = []
    with pytest.raises(PacsAuthError, match=f"HTTP {status}"):
        call("QIDO-RS", _flaky([_http_error(status)]), RetryPolicy(), sleep=waits.append)
    assert waits == []


def test_other_http_errors_are_not_retried() -> None:
    waits: list[float] = []
    with pytest.raises(PacsError, match="HTTP 404"):
        call("QIDO-RS", _flaky([_http_error(404)]), RetryPolicy(), sleep=waits.append)
    assert waits == []


def _item(**values: object) -> dict[str, object]:
    tags = {
        "study": ("0020000D", "UI"), "series": ("0020000E", "UI"), "sop": ("00080018", "UI"),
        "modality": ("00080060", "CS"), "body": ("00180015", "CS"), "view": ("00185101", "CS"),
        "rows": ("00280010", "US"), "name": ("00100010", "PN"),
    }  # fmt: skip
    return {tags[k][0]: {"vr": tags[k][1], "Value": [v]} for k, v in values.items()}


def test_a_qido_answer_without_a_sop_instance_uid_is_an_unreadable_row(tmp_path: Path) -> None:
    record = _triaged(_item(study=STUDY, series=SERIES), STUDY, TriageRules(), tmp_path)
    assert record.status is FileStatus.UNREADABLE
    assert record.reason is Reason.UNREADABLE_HEADER
    assert "must return them" in record.detail


def test_a_qido_answer_without_triage_fields_is_triaged_as_a_blank_header(tmp_path: Path) -> None:
    record = _triaged(
        _item(study=STUDY, series=SERIES, sop=SOP, modality="DX", rows=100), STUDY, TriageRules(),
        tmp_path,
    )  # fmt: skip
    assert (record.status, record.reason) == (FileStatus.SKIPPED, Reason.NO_BODY_PART)
    assert "Photometric Interpretation not in the QIDO-RS answer" in record.detail
    assert record.meta is not None and record.meta.photometric == ""  # the answer as it was
    assert record.relpath == f"{STUDY}/{SERIES}/{SOP}.dcm"


def test_a_lateral_lumbar_answer_is_a_candidate_and_an_sr_has_no_pixels(tmp_path: Path) -> None:
    lateral = _item(
        study=STUDY, series=SERIES, sop=SOP, modality="DX", body="LSPINE", view="LL", rows=100
    )
    assert _triaged(lateral, STUDY, TriageRules(), tmp_path).status is FileStatus.CANDIDATE
    report = _item(study=STUDY, series=SERIES, sop=SOP, modality="DX", body="LSPINE", view="LL")
    assert _triaged(report, STUDY, TriageRules(), tmp_path).reason is Reason.NO_PIXEL_DATA


def test_person_names_and_spacing_come_through(tmp_path: Path) -> None:
    item = _item(study=STUDY, name={"Alphabetic": "Doe^Jane"})
    item["00280030"] = {"vr": "DS", "Value": [0.15, 0.2]}
    meta = meta_from_json(item, tmp_path / "x.dcm")
    assert (meta.patient_name, meta.pixel_spacing_mm) == ("Doe^Jane", (0.15, 0.2))


def test_the_command_line_cache_cap_default_is_the_library_default() -> None:
    from auditor.cli.scan import scan

    default = inspect.signature(scan).parameters["cache_cap_mb"].default
    assert default == DEFAULT_CACHE_CAP_MB


def _dicom_file(payload: bytes = b"\x00" * 64) -> bytes:
    return b"\x00" * 128 + b"DICM" + payload


def test_a_multipart_answer_gives_its_dicom_part_byte_for_byte() -> None:
    dicom = _dicom_file(b"\r\n--not-the-boundary\r\n" + bytes(range(256)))
    body = (
        b"--b0und\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n\r\n"
        + dicom
        + b"\r\n--b0und--\r\n"
    )
    content_type = 'multipart/related; type="application/dicom"; boundary="b0und"'
    assert bytes(dicom_part(body, content_type)) == dicom
    assert bytes(dicom_part(dicom, "application/dicom")) == dicom


@pytest.mark.parametrize(
    ("body", "content_type", "match"),
    [
        (b"--b\r\n\r\n" + _dicom_file(), "multipart/related; boundary=b", "not a whole multipart"),
        (b"--b\r\n\r\nnot dicom\r\n--b--", "multipart/related; boundary=b", "not a DICOM file"),
        (_dicom_file(), "multipart/related", "no multipart boundary"),
        (b"{}", "application/json", "expected application/dicom"),
    ],
)
def test_a_broken_wado_answer_is_refused_with_what_was_wrong(
    body: bytes, content_type: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        dicom_part(body, content_type)


class _FakePacs:
    """A QIDO-RS service of studies with one DX instance each; it may know no UID list
    matching, or cap its instance answers."""

    def __init__(self, studies: int, list_matching: bool = True, cap: int = 0) -> None:
        self.studies = [f"1.2.{n}" for n in range(1, studies + 1)]
        self.list_matching, self.cap = list_matching, cap
        self.listings: list[str] = []

    def search_for_studies(self, **kw: Any) -> list[dict[str, Any]]:
        return [
            {"0020000D": {"vr": "UI", "Value": [s]}, "00201208": {"vr": "IS", "Value": [1]}}
            for s in self.studies
        ]

    def search_for_instances(
        self, study: str | None = None, search_filters: dict[str, str] | None = None, **kw: Any
    ) -> list[dict[str, object]]:
        wanted = [study] if study else (search_filters or {})["StudyInstanceUID"].split(",")
        self.listings.append(study or "list")
        if study is None and not self.list_matching:
            wanted = []  # the list taken as one UID: nothing matches
        items = [
            _item(study=s, series=s + ".1", sop=s + ".1.1", modality="DX", body="LSPINE",
                  view="LL", rows=100)
            for s in wanted
        ]  # fmt: skip
        return items[: self.cap] if self.cap and study is None else items

    def client(self) -> _FakePacs:
        return self


@pytest.mark.parametrize(
    ("pacs", "list_requests", "single_listings"),
    [
        (_FakePacs(40), 4, 0),  # 10 studies a request keep the 4 connections busy
        (_FakePacs(200), 7, 0),  # at most STUDIES_PER_LISTING a request
        (_FakePacs(40, list_matching=False), 4, 40),  # every study listed again on its own
        (_FakePacs(40, cap=5), 4, 40 - 4 * 5),  # the studies each capped answer left out
    ],
)
def test_studies_are_listed_in_batches_and_none_is_lost(
    pacs: _FakePacs, list_requests: int, single_listings: int, tmp_path: Path
) -> None:
    assert STUDIES_PER_LISTING == 32
    source = PacsSource(PacsConnection("http://pacs.invalid/dicom-web"), connections=4)
    with ThreadPoolExecutor(2) as pool:
        rows = list(triage_instances(pacs, source, TriageRules(), tmp_path, pool))  # type: ignore[arg-type]
    assert [r.meta.study_uid for r in rows if r.meta] == pacs.studies
    assert all(r.status is FileStatus.CANDIDATE for r in rows)
    assert pacs.listings.count("list") == list_requests
    assert len(pacs.listings) - list_requests == single_listings
