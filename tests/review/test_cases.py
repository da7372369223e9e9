"""``cases.json``: every classified study with its boxes, for the review workbench."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from auditor.errors import InputFileError
from auditor.reports.cases import CASES_NAME, read_cases
from auditor.review.run import load_run
from auditor.scan.pipeline import run_scan
from tests.helpers.review_world import mark_out_of_domain, scan_config
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


# -- the domain guard's fields ----------------------------------------------------------------


def _vertebrae(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for s in document["studies"] for i in s["images"] for v in i["vertebrae"]]


def _rewritten(scanned: Path, target: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """``scanned``'s ``cases.json`` with ``change`` applied to its document, written to
    ``target``."""
    document = json.loads((scanned / CASES_NAME).read_text(encoding="utf-8"))
    change(document)
    target.write_text(json.dumps(document), encoding="utf-8")
    return target


def test_a_scan_without_a_domain_guard_writes_no_banner_and_marks_nothing(scanned: Path) -> None:
    document = json.loads((scanned / CASES_NAME).read_text(encoding="utf-8"))
    assert document["domain_banner"] == ""
    vertebrae = _vertebrae(document)
    assert vertebrae and all(v["out_of_distribution"] is False for v in vertebrae)
    assert all(v["distance"] is None for v in vertebrae)


def test_an_older_cases_file_without_the_domain_fields_loads(scanned: Path, tmp_path: Path) -> None:
    def drop(document: dict[str, Any]) -> None:
        del document["domain_banner"]
        for v in _vertebrae(document):
            del v["distance"], v["out_of_distribution"]

    older = read_cases(_rewritten(scanned, tmp_path / CASES_NAME, drop))
    assert older.domain_banner == ""
    assert older.studies == read_cases(scanned / CASES_NAME).studies
    # and the workbench opens it
    shutil.copytree(scanned, tmp_path / "run")
    _rewritten(scanned, tmp_path / "run" / CASES_NAME, drop)
    assert load_run(tmp_path / "run").domain_banner == ""


def test_the_domain_banner_and_out_of_distribution_calls_are_read(
    scanned: Path, tmp_path: Path
) -> None:
    shutil.copytree(scanned, tmp_path / "run")
    mark_out_of_domain(tmp_path / "run", "Out of distribution: test banner", distance=9.5)
    run = load_run(tmp_path / "run")
    assert run.domain_banner == "Out of distribution: test banner"
    vertebrae = [v for case in run.studies for image in case.images for v in image.vertebrae]
    classified = [v for v in vertebrae if v.probability is not None]
    assert classified and all(v.out_of_distribution for v in classified)
    assert all(v.distance == 9.5 for v in classified)


def _set_banner(value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda document: document.__setitem__("domain_banner", value)


def _set_vertebra(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda document: _vertebrae(document)[0].__setitem__(key, value)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_set_banner(None), "domain_banner must be a str, got None"),
        (_set_banner(["Out of distribution"]), "domain_banner must be a str"),
        (_set_vertebra("out_of_distribution", "yes"), "out_of_distribution must be a bool"),
        (_set_vertebra("out_of_distribution", 1), "out_of_distribution must be a bool, got 1"),
        (_set_vertebra("out_of_distribution", None), "out_of_distribution must be a bool"),
        (_set_vertebra("distance", "9.5"), "distance must be a number or null, got '9.5'"),
        (_set_vertebra("distance", True), "distance must be a number or null, got True"),
    ],
)
def test_the_domain_fields_are_not_coerced(
    scanned: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], match: str
) -> None:
    path = _rewritten(scanned, tmp_path / CASES_NAME, change)
    with pytest.raises(InputFileError, match=f"malformed field: TypeError.*{match}"):
        read_cases(path)
