"""Reports link each study to the PACS viewer through a URL template (``scan --viewer-url``)."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from auditor.errors import UsageError
from auditor.scan.config import ScanConfig
from auditor.scan.pipeline import run_scan
from auditor.scan.viewer import check_viewer_url, viewer_link
from tests.helpers.scan_world import make_scan_world

OHIF = "https://pacs.example/ohif/viewer?StudyInstanceUIDs={study_uid}"


@pytest.mark.parametrize(
    ("template", "pseudonymise", "match"),
    [
        ("javascript:alert(1)//{study_uid}", False, "expected an http"),
        ("file:///viewer/{study_uid}", False, "expected an http"),
        ("https://pacs.example/viewer", False, "expected an http"),  # no field
        ("https://pacs.example/{study_uid}/{patient_id}", False, "no other field"),
        ("https://pacs.example/{}", False, "no other field"),
        ("https://pacs.example/{study_uid", False, "viewer-url"),
        (OHIF, True, "--pseudonymise"),
    ],
)
def test_templates_tlaudit_would_not_fill_safely_are_refused(
    template: str, pseudonymise: bool, match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        check_viewer_url(template, pseudonymise)


def test_a_hostile_uid_stays_inside_its_parameter() -> None:
    link = viewer_link(OHIF, "1.2&next=https://evil.example/#x")
    assert link == (
        "https://pacs.example/ohif/viewer?StudyInstanceUIDs=1.2%26next%3Dhttps%3A%2F%2Fevil"
        ".example%2F%23x"
    )


def test_the_reports_link_each_study_to_the_viewer(bundle: Path, tmp_path: Path) -> None:
    world = make_scan_world(tmp_path / "world", n_studies=2)
    result = run_scan(
        ScanConfig(
            archive=world.archive,
            out=tmp_path / "run",
            boxes=world.boxes,
            model=bundle,
            threshold=0.0,  # an untrained model: every study flagged
            device="cpu",
            workers=0,
            viewer_url=OHIF,
        )
    )
    queue = openpyxl.load_workbook(result.reports["xlsx"])["Flagged queue"]
    headers = [cell.value for cell in queue[1]]
    targets = {
        queue.cell(row=row, column=headers.index("Image") + 1).hyperlink.target
        for row in range(2, queue.max_row + 1)
    }
    assert targets == {viewer_link(OHIF, uid) for uid in world.study_uids[:2]}
    html = result.reports["html"].read_text(encoding="utf-8")
    for uid in world.study_uids[:2]:
        assert f'href="{viewer_link(OHIF, uid)}"' in html
