"""DICOM results (--dicom-out, --stow): TID 1500 SR and key objects, read back by pydicom and
highdicom and checked item by item against findings.csv; sent to Orthanc and queried back."""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests
from pydicom.sr.codedict import codes
from typer.testing import CliRunner

from auditor.cli.app import app
from auditor.errors import UsageError
from auditor.pacs.dicom_out import FRACTURE_CALL, LEVEL_SITES, PROBABILITY, STATUS_CODES
from auditor.pacs.scan import DicomResults, export_results, results_from_options
from auditor.records import StudyStatus
from auditor.scan.config import ScanConfig, ScanResult
from auditor.scan.pipeline import run_scan
from auditor.vocab import Level
from tests.pacs.conftest import PacsWorld, make_pacs_world
from tests.pacs.orthanc import PASSWORD, USER, Orthanc


@pytest.fixture(scope="module")
def scanned(
    tmp_path_factory: pytest.TempPathFactory, bundle: Path
) -> tuple[ScanConfig, ScanResult]:
    root = make_pacs_world(tmp_path_factory.mktemp("world"))
    config = ScanConfig(
        archive=root / "archive",
        out=root / "run",
        boxes=root / "boxes.csv",
        reads=root / "reads.csv",
        model=bundle,
        threshold=0.5,
        device="cpu",
        batch_size=8,
        workers=0,
    )
    return config, run_scan(config)


def _findings(run: Path) -> list[dict[str, str]]:
    with (run / "findings.csv").open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row["probability"]]


def _check_report(path: Path, findings: list[dict[str, str]]) -> StudyStatus:
    """Check one SR against findings.csv, content item by item; return its study status. The
    synthetic world names each image file by its SOP Instance UID, as the PACS cache does."""
    dataset = pydicom.dcmread(path)
    report = hd.sr.Comprehensive3DSR.from_dataset(dataset)
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert dataset.SeriesDescription.startswith("tlaudit fracture audit")
    content = report.content
    assert isinstance(content, hd.sr.MeasurementReport)
    groups = content.get_planar_roi_measurement_groups()
    rows = [r for r in findings if r["study"] == dataset.StudyInstanceUID]
    assert len(groups) == len(rows) > 0
    for group, row in zip(groups, rows, strict=True):
        level = Level(row["level"])
        (site,) = group.finding_sites
        assert site.value == LEVEL_SITES[level]
        (measurement,) = group.get_measurements(name=PROBABILITY)
        assert measurement.value == pytest.approx(float(row["probability"]), abs=1e-6)
        (call,) = group.get_qualitative_evaluations(name=FRACTURE_CALL)
        expected = codes.SCT.Present if row["call"] == "positive" else codes.SCT.Absent
        assert call.value == expected
        region = group.roi
        assert region is not None and region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        x0, y0, x1, y1 = (float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
        np.testing.assert_allclose(
            region.value, [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], atol=0.01
        )
        (image,) = region.ContentSequence
        assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == Path(row["image"]).stem
    (study_group,) = content.get_image_measurement_groups()
    assert study_group.tracking_identifier == "study"
    status = StudyStatus(rows[0]["study_status"])
    (evaluation,) = study_group.get_qualitative_evaluations()
    assert evaluation.value == STATUS_CODES[status]
    return status


def _check_presentation_state(path: Path, findings: list[dict[str, str]]) -> None:
    state = pydicom.dcmread(path)
    assert state.SOPClassUID == "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy PS
    sop = path.name.removesuffix(".pr.dcm")
    rows = {r["level"]: r for r in findings if Path(r["image"]).stem == sop}
    referenced = state.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert referenced.ReferencedSOPInstanceUID == sop
    drawn = {}
    for annotation in state.GraphicAnnotationSequence:
        for graphic, text in zip(
            annotation.GraphicObjectSequence, annotation.TextObjectSequence, strict=True
        ):
            level, probability, sign = text.UnformattedTextValue.split()
            drawn[level] = (probability, sign, [float(v) for v in graphic.GraphicData])
    assert set(drawn) == set(rows)
    for level, (probability, sign, data) in drawn.items():
        row = rows[level]
        assert probability == f"P={float(row['probability']):.2f}"
        assert sign == ("+" if row["call"] == "positive" else "-")
        x0, y0, x1, y1 = (float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
        np.testing.assert_allclose(data, [x0, y0, x1, y0, x1, y1, x0, y1, x0, y0], atol=0.01)


def test_sr_and_key_objects_read_back_item_by_item(
    scanned: tuple[ScanConfig, ScanResult], tmp_path: Path
) -> None:
    config, result = scanned
    written = export_results(config, result, DicomResults(tmp_path / "dicom"))
    findings = _findings(config.out)
    assert len(written) == len({r["study"] for r in findings})
    assert not [w.error for w in written if w.error]
    statuses = [_check_report(w.report, findings) for w in written if w.report is not None]
    with_ko = [w for w, s in zip(written, statuses, strict=True) if s is StudyStatus.LIKELY_MISSED]
    assert [w.key_objects is not None for w in written] == [
        s is StudyStatus.LIKELY_MISSED for s in statuses
    ]
    for study in written:  # one presentation state per classified image, drawing its boxes
        for path in study.presentation_states:
            _check_presentation_state(path, findings)
    for study in with_ko:
        assert study.key_objects is not None
        ko = hd.ko.KeyObjectSelectionDocument.from_dataset(pydicom.dcmread(study.key_objects))
        assert ko.StudyInstanceUID == study.study_uid
        assert ko.SeriesDescription.startswith("tlaudit")


def test_dicom_out_is_refused_with_pseudonymise(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--pseudonymise"):
        results_from_options(tmp_path, pseudonymise=True)
    with pytest.raises(UsageError, match="--dicom-out"):
        results_from_options(None, "dicomweb+http://127.0.0.1:1/dicom-web")


@pytest.mark.slow
def test_cli_scans_the_pacs_and_stows_the_results_back(
    pacs_world: tuple[Orthanc, PacsWorld],
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, world = pacs_world
    monkeypatch.setenv("TLAUDIT_DICOMWEB_USER", USER)
    monkeypatch.setenv("TLAUDIT_DICOMWEB_PASSWORD", PASSWORD)
    run, dicom = tmp_path / "run", tmp_path / "dicom"
    outcome = CliRunner().invoke(
        app,
        [
            "scan", server.dicomweb, "--out", str(run), "--model", str(bundle),
            "--boxes", str(world.root / "boxes.csv"), "--reads", str(world.root / "reads.csv"),
            "--threshold", "0.0", "--device", "cpu", "--workers", "0",
            "--study-date", "19000101-", "--dicom-out", str(dicom), "--stow", server.dicomweb,
        ],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    assert PASSWORD not in outcome.output
    reports, kos = sorted(dicom.glob("*.sr.dcm")), sorted(dicom.glob("*.ko.dcm"))
    states = sorted(dicom.glob("*.pr.dcm"))
    assert len(reports) == 4 and len(kos) == 4  # at threshold 0 every read misses a level
    assert len(states) == 4  # one lateral image per study
    # QIDO-RS finds what STOW-RS sent, in the source studies
    for modality, sent in (("SR", reports), ("KO", kos), ("PR", states)):
        answer = requests.get(
            f"{server.url}/dicom-web/instances",
            params={"Modality": modality},
            auth=server.auth,
            timeout=10,
        )
        assert answer.status_code == 200
        found = {item["00080018"]["Value"][0] for item in answer.json()}
        assert found == {str(pydicom.dcmread(p).SOPInstanceUID) for p in sent}
    # what Orthanc returns is the SR written, item by item
    first = pydicom.dcmread(reports[0])
    back = requests.get(
        f"{server.url}/dicom-web/studies/{first.StudyInstanceUID}/series/"
        f"{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        auth=server.auth,
        timeout=10,
    )
    assert back.status_code == 200
    stored = tmp_path / "back.sr.dcm"
    body = back.content
    start = body.index(b"\r\n\r\n") + 4
    end = body.rindex(b"\r\n--")
    stored.write_bytes(body[start:end])
    _check_report(stored, _findings(run))


def test_what_is_written_passes_dciodvfy(
    scanned: tuple[ScanConfig, ScanResult], bundle: Path, tmp_path: Path
) -> None:
    """Every SR (the AI's and a reviewed one), presentation state, heatmap capture and key object
    validates with dicom3tools' dciodvfy: no error (warnings remain for the private 99TLAUDIT
    codes and the sources' empty Type 2 study attributes). Also a world whose images lack
    Patient's Birth Date and Study Time, as many archived images do: they are Type 2 in what the
    results copy, and are written empty."""
    import shutil
    import subprocess

    from auditor.cli.export_dicom import reviews_for_dicom
    from auditor.pacs.export import export_run
    from auditor.review.run import load_run
    from auditor.review.store import ReviewStore, box_id
    from auditor.vocab import HeatmapMode

    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        if os.environ.get("TLAUDIT_REQUIRE_PACS"):
            pytest.fail("dciodvfy missing: apt-get install dicom3tools")
        pytest.skip("dciodvfy not installed (Debian: apt-get install dicom3tools)")
    config, _ = scanned
    archive = tmp_path / "archive"
    shutil.copytree(config.archive, archive)
    for path in archive.rglob("*.dcm"):  # strip what archived images often lack
        ds = pydicom.dcmread(path, force=True)
        for keyword in ("PatientBirthDate", "PatientSex", "StudyTime", "StudyID"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(path)
    config = dataclasses.replace(
        config, archive=archive, out=tmp_path / "run", heatmaps=HeatmapMode.ALL
    )
    result = run_scan(config)
    written = export_results(config, result, DicomResults(tmp_path / "dicom"))
    # the same run reviewed (a reviewer's name outside ASCII), exported again
    run = load_run(config.out)
    case = run.studies[0]
    image = case.images[0]
    where = {"study": case.key, "image": image.ref}
    reviewer = "Zoë Ångström"
    with ReviewStore(config.out) as store:
        first, second = image.vertebrae[:2]
        store.record(reviewer, "decision", "fracture", **where, box=box_id(first.box_row))
        store.record(reviewer, "ao_type", "A3", **where, box=box_id(first.box_row))
        store.record(reviewer, "genant_grade", 3, **where, box=box_id(first.box_row))
        store.record(reviewer, "deleted", True, **where, box=box_id(second.box_row))
        added = store.add_box(reviewer, **where, level="S1", xyxy=[10, 10, 40, 30])
        store.record(reviewer, "decision", "no_fracture", **where, box=added.box)
        store.record(reviewer, "verdict", "already known", study=case.key)
        store.record(reviewer, "comment", "Ångström: <b>known</b>", study=case.key)
    reviews = reviews_for_dicom(config.out, None)
    assert set(reviews) == {case.key}
    written += export_run(config.out, DicomResults(tmp_path / "reviewed"), bundle, reviews)
    paths = [p for w in written for p in w.paths()]
    assert paths and not [w.error for w in written if w.error]
    kinds = {p.name.split(".")[-2] for p in paths}
    assert kinds >= {"sr", "pr", "sc"}
    assert (
        "AI and reviewer"
        in pydicom.dcmread(tmp_path / "reviewed" / f"{case.study_uid}.sr.dcm").SeriesDescription
    )
    for path in paths:
        done = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
        assert errors == [], (path.name, errors)


@pytest.mark.parametrize("root", ["1.2.3", "1.02.3.", "1.2.a.", "2.25." + "1" * 40, ".1.2.", ""])
def test_a_uid_root_that_would_not_make_valid_uids_is_refused(root: str) -> None:
    from auditor.pacs.scan import check_uid_root

    with pytest.raises(UsageError, match="--uid-root"):
        check_uid_root(root)


def test_the_results_take_their_uids_under_the_given_root(
    scanned: tuple[ScanConfig, ScanResult], tmp_path: Path
) -> None:
    config, result = scanned
    root = "1.2.826.0.1.3680043.10.999."
    written = export_results(config, result, DicomResults(tmp_path / "dicom", uid_root=root))
    for path in (p for w in written for p in w.paths()):
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID.startswith(root) and ds.SeriesInstanceUID.startswith(root)
        assert len(ds.SOPInstanceUID) <= 64
