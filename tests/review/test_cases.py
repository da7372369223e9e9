"""``cases.json``: every classified study with its boxes, for the review workbench."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from auditor.errors import InputFileError
from auditor.reports.cases import CASES_NAME, read_cases
from auditor.review.run import load_run
from auditor.scan.pipeline import run_scan
from tests.helpers.review_world import scan_config
from tests.helpers.scan_world import HOSTILE, LEVELS, make_scan_world


def test_cases_hold_every_study_in_queue_order_and_refs_resolve(scanned: Path) -> None:
    run = load_run(scanned)
    flagged = [case for case in run.studies if case.queue_rank is not None]
    assert [case.queue_rank for case in flagged] == list(range(1, len(flagged) + 1))
    assert run.studies[: len(flagged)] == tuple(flagged)  # the queue first, then the rest
    rest = [case.key for case in run.studies[len(flagged) :]]
    assert rest == sorted(rest) and len(rest) == 4
    assert len(run.studies) == 6  # every classified study of the world
    for case in run.studies:
        assert len(case.images) == 1
        image = case.images[0]
        assert [v.level.value for v in image.vertebrae] == list(LEVELS)
        assert run.image_path(image.ref).is_file()
        assert run.source(image.ref) == image.image  # not pseudonymised: the path as shown
        assert all(v.box[2] > v.box[0] and v.box[3] > v.box[1] for v in image.vertebrae)


def test_pseudonymised_cases_name_no_identifier_and_still_resolve(
    tmp_path: Path, review_bundle: Path
) -> None:
    make_scan_world(tmp_path / "world")
    config = scan_config(tmp_path / "world", review_bundle, tmp_path / "run")
    run_scan(replace(config, pseudonymise=True))
    text = (tmp_path / "run" / CASES_NAME).read_text(encoding="utf-8")
    for identifier in ("FAKE-001", HOSTILE["PatientID"], "1.2.826.0.1.3680043.99.0.1"):
        assert json.dumps(identifier)[1:-1] not in text
    run = load_run(tmp_path / "run")
    for case in run.studies:
        assert case.key.startswith("anon-")
        assert run.image_path(case.images[0].ref).is_file()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "cannot be read as JSON"),
        ('{"format": "other"}', "not a tlaudit cases file"),
        ('{"format": "tlaudit-cases", "version": 99}', "version 99"),
        ('{"format": "tlaudit-cases", "version": 1, "threshold": 0.5}', "malformed field"),
        (
            '{"format": "tlaudit-cases", "version": 1, "threshold": 0.5, "studies": '
            '[{"key": "k", "status": "bogus"}]}',
            "malformed field",
        ),
    ],
)
def test_a_bad_cases_file_is_a_clean_error(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / CASES_NAME
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputFileError, match=match):
        read_cases(path)
