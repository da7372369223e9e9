"""The written archive: tables agree with each other, reads plant misses, DICOM reads back and
triage keeps exactly the lateral thoracolumbar views."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from auditor.archive.triage import TriageRules, triage_header
from auditor.errors import ReadError, UsageError
from auditor.io.radiograph import read_header, read_radiograph
from auditor.synth import DISTRACTOR_KINDS, SynthConfig, write_archive
from auditor.synth.schemas import BOX_COLUMNS, READ_COLUMNS, TRUTH_COLUMNS
from auditor.vocab import FileStatus

CONFIG = SynthConfig(
    max_side=300,
    distractor_rate=1.0,
    fracture_study_rate=0.9,
    multi_fracture_rate=0.5,
    miss_rate=0.6,
)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_archive(out, len(DISTRACTOR_KINDS), seed=3, config=CONFIG, preview=True)
    return out


def test_tables_have_the_contract_columns(world: Path) -> None:
    for name, columns in (
        ("boxes.csv", BOX_COLUMNS),
        ("ground_truth.csv", TRUTH_COLUMNS),
        ("reads.csv", READ_COLUMNS),
    ):
        with (world / name).open(encoding="utf-8") as fh:
            assert tuple(next(csv.reader(fh))) == columns
    boxes, truth = _rows(world / "boxes.csv"), _rows(world / "ground_truth.csv")
    assert len(boxes) == len(truth) > 0
    assert {r["label"] for r in truth} <= {"fracture", "no_fracture"}
    coco = json.loads((world / "ground_truth.json").read_text())
    assert len(coco["annotations"]) == len(truth)
    assert [c["name"] for c in coco["categories"]][:2] == ["T10", "T11"]
    plain = json.loads((world / "boxes.json").read_text())
    assert all("label" not in a["attributes"] for a in plain["annotations"])
    assert (world / "contact_sheet.png").stat().st_size > 1000


def test_every_planted_miss_is_a_fracture_in_ground_truth(world: Path) -> None:
    truth = _rows(world / "ground_truth.csv")
    fractured = {(r["study_uid"], r["level"]) for r in truth if r["label"] == "fracture"}
    reads = {r["study_uid"]: r for r in _rows(world / "reads.csv")}
    studies = _rows(world / "studies.csv")
    missed = [
        (s["study_uid"], lv) for s in studies for lv in s["planted_miss_levels"].split(";") if lv
    ]
    assert missed, "the test world should hold planted misses"
    for study_uid, level in missed:
        assert (study_uid, level) in fractured
        read = reads.get(study_uid)
        if read is not None:
            assert level not in read["reported_levels"].split(";")
    for s in studies:
        if (
            s["read_present"] == "yes"
            and not s["planted_miss_levels"]
            and not s["overcalled_levels"]
        ):
            assert set(filter(None, s["reported_levels"].split(";"))) == set(
                filter(None, s["fractured_levels"].split(";"))
            )


def test_files_read_back_and_triage_keeps_exactly_the_laterals(world: Path) -> None:
    manifest = _rows(world / "manifest.csv")
    kinds = {m["kind"] for m in manifest}
    assert set(DISTRACTOR_KINDS) <= kinds
    boxes = _rows(world / "boxes.csv")
    rules = TriageRules()
    for m in manifest:
        path = world / "archive" / m["file"]
        if m["kind"] in ("non_dicom",):
            with pytest.raises(ReadError):
                read_radiograph(path)
            continue
        meta = read_header(path)
        decision = triage_header(meta, m["file"], rules)
        expected = {"candidate": FileStatus.CANDIDATE, "skipped": FileStatus.SKIPPED}
        expected["unreadable"] = FileStatus.UNREADABLE
        assert decision.status == expected[m["expected_triage"]], (m, decision)
        assert (decision.status == FileStatus.CANDIDATE) == (m["kind"] == "lateral_tl")
        if m["kind"] == "truncated":
            with pytest.raises(ReadError):
                read_radiograph(path)
        if m["kind"] == "lateral_tl":
            image = read_radiograph(path)
            rows = [b for b in boxes if b["image"] == m["file"]]
            assert rows
            assert image.pixels.shape == (meta.rows, meta.columns)
            assert meta.pixel_spacing_mm is not None
            for b in rows:
                assert 0 <= float(b["x_min"]) < float(b["x_max"]) <= meta.columns
                assert 0 <= float(b["y_min"]) < float(b["y_max"]) <= meta.rows


def test_refuses_to_overwrite_without_flag(world: Path) -> None:
    with pytest.raises(UsageError, match="already holds"):
        write_archive(world, 1, seed=3, config=CONFIG)


def test_reader_shows_what_the_generator_drew(world: Path) -> None:
    from auditor.synth import generate_study

    studies = _rows(world / "studies.csv")
    for index, row in enumerate(studies):
        image = read_radiograph(world / "archive" / row["image"])
        drawn = generate_study(3, index, CONFIG).pixels
        assert image.pixels.shape == drawn.shape
        if image.windowing.startswith("window"):
            assert float(abs(image.pixels - drawn).max()) < 0.01, image.windowing
        else:  # percentile windowing: same picture up to a monotone stretch
            assert float(np.corrcoef(image.pixels.ravel(), drawn.ravel())[0, 1]) > 0.98
