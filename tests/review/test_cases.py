"""``cases.json``: every classified study with its boxes, for the review workbench."""

from __future__ import annotations

import json
import re
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
        (_set_banner(None), "domain_banner must be a string, got null"),
        (_set_banner(["Out of distribution"]), "domain_banner must be a string"),
        (_set_vertebra("out_of_distribution", "yes"), "out_of_distribution must be true or false"),
        (
            _set_vertebra("out_of_distribution", 1),
            "out_of_distribution must be true or false, got 1",
        ),
        (_set_vertebra("out_of_distribution", None), "out_of_distribution must be true or false"),
        (_set_vertebra("distance", "9.5"), 'distance must be a number, got "9.5"'),
        (_set_vertebra("distance", True), "distance must be a number, got true"),
    ],
)
def test_the_domain_fields_are_not_coerced(
    scanned: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], match: str
) -> None:
    path = _rewritten(scanned, tmp_path / CASES_NAME, change)
    with pytest.raises(InputFileError, match=f"malformed field: .*{re.escape(match)}"):
        read_cases(path)


# -- every field read strictly ----------------------------------------------------------------

STUDY = ("studies", 0)  # the first flagged study: read positive, so it has a read
READ = (*STUDY, "read")
IMAGE = (*STUDY, "images", 0)
VERTEBRA = (*IMAGE, "vertebrae", 0)


def _field(where: tuple[str | int, ...]) -> str:
    """A field's name as the messages give it: ``studies[0].images[0].ref``."""
    name = ""
    for part in where:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name


def _at(document: Any, where: tuple[str | int, ...]) -> Any:
    for part in where:
        document = document[part]
    return document


#: (field, a value the scan never writes there, what the message says is expected)
BAD_VALUES: list[tuple[tuple[str | int, ...], Any, str]] = [
    (("threshold",), "0.9", "a number from 0.0 to 1.0"),
    (("threshold",), True, "a number from 0.0 to 1.0"),
    (("threshold",), 1.5, "a number from 0.0 to 1.0"),
    (("threshold",), float("nan"), "a number from 0.0 to 1.0"),
    (("training_data",), 1, "a string"),
    (("studies",), {}, "a list"),
    (STUDY, "study", "an object"),
    ((*STUDY, "key"), 7, "a string"),
    ((*STUDY, "status"), "bogus", "one of 'likely missed', "),
    ((*STUDY, "status"), 0, "one of 'likely missed', "),
    ((*STUDY, "priority"), "0.9", "a number"),
    ((*STUDY, "priority"), None, "a number"),
    ((*STUDY, "queue_rank"), 1.0, "a whole number >= 1"),
    ((*STUDY, "queue_rank"), True, "a whole number >= 1"),
    ((*STUDY, "queue_rank"), 0, "a whole number >= 1"),
    ((*STUDY, "study_uid"), None, "a string"),
    ((*STUDY, "accession_number"), 12, "a string"),
    ((*STUDY, "patient_id"), ["P1"], "a string"),
    ((*STUDY, "study_date"), 20240101, "a string"),
    ((*STUDY, "description"), False, "a string"),
    (READ, "yes", "an object"),
    ((*READ, "row"), "3", "a whole number >= 1"),
    ((*READ, "row"), 0, "a whole number >= 1"),
    ((*READ, "accession_number"), None, "a string"),
    ((*READ, "study_uid"), 1, "a string"),
    ((*READ, "image"), None, "a string"),
    ((*READ, "fracture_reported"), "no", "true or false"),
    ((*READ, "fracture_reported"), 0, "true or false"),
    ((*READ, "fracture_reported"), None, "true or false"),
    ((*READ, "reported_levels"), "L1", "a list"),
    ((*READ, "reported_levels"), ["L9"], "a list of levels (T10, "),
    ((*READ, "reported_levels"), [1], "a list of levels (T10, "),
    ((*READ, "impression"), None, "a string"),
    ((*READ, "mentions"), "L1 wedge.", "a list"),
    ((*READ, "mentions", 0), "L1", "an object"),
    ((*READ, "mentions", 0, "level"), 1, "a string"),
    ((*READ, "mentions", 0, "mention"), "maybe", "one of 'affirmed', "),
    ((*READ, "mentions", 0, "sentence"), None, "a string"),
    ((*READ, "disagreement"), None, "a string"),
    (IMAGE, [], "an object"),
    ((*IMAGE, "image"), 1, "a string"),
    ((*IMAGE, "ref"), None, "a string"),
    ((*IMAGE, "sop_instance_uid"), 1.5, "a string"),
    ((*IMAGE, "vertebrae"), None, "a list"),
    ((*VERTEBRA, "box_row"), "2", "a whole number"),
    ((*VERTEBRA, "box_row"), True, "a whole number"),
    ((*VERTEBRA, "level"), "l1", "one of 'T10', "),
    ((*VERTEBRA, "box"), [1, 2, 3], "a list of four numbers"),
    ((*VERTEBRA, "box"), ["1", 2, 3, 4], "a list of four numbers"),
    ((*VERTEBRA, "box"), "1 2 3 4", "a list of four numbers"),
    ((*VERTEBRA, "box_source"), None, "a string"),
    ((*VERTEBRA, "box_confidence"), "0.8", "a number"),
    ((*VERTEBRA, "probability"), "0.5", "a number from 0.0 to 1.0"),
    ((*VERTEBRA, "probability"), 1.5, "a number from 0.0 to 1.0"),
    ((*VERTEBRA, "probability"), False, "a number from 0.0 to 1.0"),
    ((*VERTEBRA, "positive"), "no", "true or false"),
    ((*VERTEBRA, "positive"), "yes", "true or false"),
    ((*VERTEBRA, "positive"), 0, "true or false"),
    ((*VERTEBRA, "positive"), None, "true or false"),
    ((*VERTEBRA, "reference_label"), "1", "a whole number"),
    ((*VERTEBRA, "reference_label"), True, "a whole number"),
    ((*VERTEBRA, "reference_label"), 1.0, "a whole number"),
    ((*VERTEBRA, "heatmap"), None, "a string"),
    ((*VERTEBRA, "error"), 0, "a string"),
    ((*VERTEBRA, "reported"), "no", "true, false or null"),
    ((*VERTEBRA, "reported"), 1, "true, false or null"),
]


@pytest.mark.parametrize(
    ("where", "value", "expected"),
    BAD_VALUES,
    ids=[f"{_field(w)}={json.dumps(v)}" for w, v, _ in BAD_VALUES],
)
def test_every_field_is_read_strictly(
    scanned: Path, tmp_path: Path, where: tuple[str | int, ...], value: Any, expected: str
) -> None:
    """A value the scan never writes is refused, naming the field, the value found and what was
    expected, never coerced (the string "no" read as true)."""

    def change(document: dict[str, Any]) -> None:
        read = document["studies"][0]["read"]
        read["mentions"] = read["mentions"] or [
            {"level": "L1", "mention": "affirmed", "sentence": "x"}
        ]
        _at(document, where[:-1])[where[-1]] = value

    path = _rewritten(scanned, tmp_path / CASES_NAME, change)
    found = json.dumps(value)
    message = f"{_field(where)} must be {expected}"
    with pytest.raises(InputFileError, match=re.escape(message)) as info:
        read_cases(path)
    text = str(info.value)
    assert text.startswith(f"{path} has a malformed field: ") and f", got {found}" in text
    assert "scan the archive again" in text


@pytest.mark.parametrize(
    "where",
    [("threshold",), ("studies",), (*STUDY, "key"), (*READ, "fracture_reported"), (*IMAGE, "ref")]
    + [(*VERTEBRA, key) for key in ("positive", "probability", "box", "reported")],
    ids=_field,
)
def test_a_missing_field_is_named(
    scanned: Path, tmp_path: Path, where: tuple[str | int, ...]
) -> None:
    path = _rewritten(scanned, tmp_path / CASES_NAME, lambda d: _at(d, where[:-1]).pop(where[-1]))
    with pytest.raises(InputFileError, match=re.escape(f"{_field(where)} is missing")):
        read_cases(path)


def test_what_a_scan_writes_reads_back_unchanged(scanned: Path) -> None:
    """The strict reader takes every value the scan wrote, as written."""
    document = json.loads((scanned / CASES_NAME).read_text(encoding="utf-8"))
    cases = read_cases(scanned / CASES_NAME)
    assert cases.threshold == document["threshold"]
    assert len(cases.studies) == len(document["studies"])
    for case, study in zip(cases.studies, document["studies"], strict=True):
        assert (case.key, case.status.value, case.queue_rank) == (
            study["key"],
            study["status"],
            study["queue_rank"],
        )
        assert (case.read is None) == (study["read"] is None)
        for image, image_item in zip(case.images, study["images"], strict=True):
            for v, item in zip(image.vertebrae, image_item["vertebrae"], strict=True):
                assert v.positive is item["positive"] and v.reported == item["reported"]
                assert v.probability == item["probability"] and list(v.box) == item["box"]
                assert v.reference_label == item["reference_label"]
