"""tlaudit export-dicom: a reviewed run's DICOM results. The SR carries the reviewer's decisions
(checked content item by item), each image with heatmaps gets a Secondary Capture (checked for
its study, source and pixel size), STOW-RS sends them to a real Orthanc and QIDO-RS finds them;
bad inputs end in one line or a counted skip."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from typer.testing import CliRunner

from auditor.cli import app as app_module
from auditor.cli.app import app
from auditor.model.bundle import create_untrained_bundle
from auditor.pacs import heatmap_sc
from auditor.pacs.sr_content import (
    AO_TYPE,
    BOX_EDIT,
    BOX_EDITS,
    COMMENT,
    DECISION_CODES,
    FRACTURE,
    FRACTURE_CALL,
    GENANT_CODES,
    GENANT_GRADE,
    LEVEL_SITES,
    PROBABILITY,
    REVIEW_VERDICT,
    VERDICT_CODES,
    ao_code,
)
from auditor.records import Radiograph, StudyCase
from auditor.reports.thumbnails import (
    HEATMAP_DIR,
    colour_lut,
    heatmap_overlay,
    heatmap_values_path,
    read_heatmap_values,
    save_heatmap_values,
    save_jpeg,
)
from auditor.review.run import load_run
from auditor.review.store import ReviewStore, box_id
from auditor.scan.pipeline import run_scan
from auditor.vocab import Level, StudyVerdict, VertebraDecision
from tests.helpers.review_world import scan_config, scanned_run
from tests.pacs.orthanc import Orthanc

REVIEWER = "Anne Smith"


@pytest.fixture(scope="module")
def world_run(tmp_path_factory: pytest.TempPathFactory, bundle: Path) -> Path:
    """The review world scanned (heatmaps for every vertebra); read only: copy it to write."""
    return scanned_run(tmp_path_factory.mktemp("export"), bundle)


@pytest.fixture
def run(world_run: Path, tmp_path: Path) -> Path:
    """A private copy of the run folder (its archive stays where the scan found it)."""
    target = tmp_path / "run"
    shutil.copytree(world_run, target)
    return target


@dataclasses.dataclass(frozen=True)
class Reviewed:
    """The study the test reviewed and the scan's boxes of its first image."""

    case: StudyCase
    added: str  # the box id of the box the reviewer drew


def review(run: Path) -> Reviewed:
    """Record one reviewer's decisions on the first flagged study: fracture (AO A1, Genant 2) on
    its first box, the second moved and no fracture, the third deleted, an L4 box drawn and
    unsure, the verdict confirmed miss and a comment."""
    opened = load_run(run)
    case = opened.studies[0]
    image = case.images[0]
    first, second, third = image.vertebrae[:3]
    where = {"study": case.key, "image": image.ref}
    with ReviewStore(run) as store:
        store.record(REVIEWER, "decision", "fracture", **where, box=box_id(first.box_row))
        store.record(REVIEWER, "ao_type", "A1", **where, box=box_id(first.box_row))
        store.record(REVIEWER, "genant_grade", 2, **where, box=box_id(first.box_row))
        store.record(REVIEWER, "box", [31, 13, 71, 43], **where, box=box_id(second.box_row))
        store.record(REVIEWER, "decision", "no_fracture", **where, box=box_id(second.box_row))
        store.record(REVIEWER, "deleted", True, **where, box=box_id(third.box_row))
        added = store.add_box(REVIEWER, **where, level="L4", xyxy=[30, 120, 70, 150])
        store.record(REVIEWER, "decision", "unsure", **where, box=added.box)
        store.record(REVIEWER, "verdict", "confirmed miss", study=case.key)
        store.record(REVIEWER, "comment", 'T12 wedge, "missed" <b>', study=case.key)
    return Reviewed(case, added.box)


def _export(run: Path, out: Path, bundle: Path, *extra: str) -> str:
    outcome = CliRunner().invoke(
        app,
        ["export-dicom", str(run), "--dicom-out", str(out), "--model", str(bundle), *extra],
        env={"COLUMNS": "200"},
    )
    assert outcome.exit_code == 0, (outcome.output, outcome.exception)
    return outcome.output


def _items(dataset: Dataset) -> Iterator[Dataset]:
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _concept(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return str(code.CodeValue), str(code.CodingSchemeDesignator)


Group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations


def _region(group: Group) -> tuple[str, list[list[float]]]:
    region = group.roi
    assert region is not None
    (source,) = region.ContentSequence
    sop = str(source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    return sop, np.asarray(region.value).tolist()


def _closed(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _evaluations(
    group: Group | hd.sr.MeasurementsAndQualitativeEvaluations, name: hd.sr.CodedConcept
) -> list[hd.sr.CodedConcept]:
    found = [e.value for e in group.get_qualitative_evaluations(name=name)]
    assert all(isinstance(value, hd.sr.CodedConcept) for value in found)
    return found  # type: ignore[return-value]


def test_the_reviewed_sr_carries_the_decisions_item_by_item(
    run: Path, bundle: Path, tmp_path: Path
) -> None:
    reviewed = review(run)
    out = tmp_path / "dicom"
    printed = _export(run, out, bundle)
    assert "Anne Smith's decisions on 1 studies" in " ".join(printed.split())
    case = reviewed.case
    image = case.images[0]
    first, second, third, *rest = image.vertebrae
    dataset = pydicom.dcmread(out / f"{case.study_uid}.sr.dcm")
    report = hd.sr.Comprehensive3DSR.from_dataset(dataset)
    assert dataset.SeriesDescription.startswith("tlaudit fracture audit (AI and reviewer)")
    # the reviewer as person observer, beside the device observer for the AI
    names = [i for i in _items(dataset) if _concept(i) == ("121008", "DCM")]
    assert [str(i.PersonName) for i in names] == [f"{REVIEWER}^"]
    observers = [i for i in _items(dataset) if _concept(i) == ("121005", "DCM")]
    types = [i.ConceptCodeSequence[0].CodeValue for i in observers]
    assert types == ["121006", "121007"]  # Person, Device
    content = report.content
    assert isinstance(content, hd.sr.MeasurementReport)
    groups = content.get_planar_roi_measurement_groups()
    by_id: dict[str, list[tuple[Group, list[list[float]]]]] = {}
    for group in groups:
        sop, points = _region(group)
        assert sop == image.sop_instance_uid  # every box references its source image
        by_id.setdefault(str(group.tracking_identifier), []).append((group, points))
    # first box: fracture, AO A1, Genant 2, and the AI's probability and call kept
    (group, points), *_ = by_id[f"{first.level.value} vertebral body"]
    assert points == _closed(*first.box)
    assert _evaluations(group, FRACTURE) == [DECISION_CODES[VertebraDecision.FRACTURE]]
    assert _evaluations(group, FRACTURE) == [hd.sr.CodedConcept.from_code(codes.SCT.Present)]
    assert _evaluations(group, AO_TYPE) == [ao_code("A1")]
    assert _evaluations(group, GENANT_GRADE) == [GENANT_CODES[2]]
    assert GENANT_CODES[2] == hd.sr.CodedConcept.from_code(codes.SCT.Moderate)
    assert len(_evaluations(group, FRACTURE_CALL)) == 1
    (probability,) = group.get_measurements(name=PROBABILITY)
    assert probability.value == pytest.approx(first.probability, abs=1e-6)
    assert group.finding_sites[0].value == LEVEL_SITES[first.level]
    # second box: moved, no fracture
    (group, points), *_ = by_id[f"{second.level.value} vertebral body"]
    assert points == _closed(31, 13, 71, 43)
    assert _evaluations(group, BOX_EDIT) == [BOX_EDITS["moved"]]
    assert _evaluations(group, FRACTURE) == [hd.sr.CodedConcept.from_code(codes.SCT.Absent)]
    # third box: marked deleted, the AI's box and output kept, no decision
    (group, points), *_ = by_id[f"{third.level.value} vertebral body"]
    assert points == _closed(*third.box)
    assert _evaluations(group, BOX_EDIT) == [BOX_EDITS["deleted"]]
    assert _evaluations(group, FRACTURE) == []
    assert len(group.get_measurements(name=PROBABILITY)) == 1
    # the box the reviewer drew: L4, unsure, no AI output
    drawn = [
        (g, p) for g, p in by_id["L4 vertebral body"] if _evaluations(g, BOX_EDIT)
    ]  # the scan may have an L4 box of its own
    ((group, points),) = drawn
    assert points == _closed(30, 120, 70, 150)
    assert _evaluations(group, BOX_EDIT) == [BOX_EDITS["added"]]
    assert _evaluations(group, FRACTURE) == [hd.sr.CodedConcept.from_code(codes.SCT.Indeterminate)]
    assert group.get_measurements(name=PROBABILITY) == []
    assert group.finding_sites[0].value == LEVEL_SITES[Level.L4]
    # the scan's other boxes: the AI's alone
    for vertebra in rest:
        (group, _), *_ = by_id[f"{vertebra.level.value} vertebral body"]
        assert _evaluations(group, FRACTURE) == [] and _evaluations(group, BOX_EDIT) == []
    assert len(groups) == len(image.vertebrae) + 1
    # the study's verdict and comment
    study_groups = content.get_image_measurement_groups()
    (verdict,) = [g for g in study_groups if g.tracking_identifier == "study review"]
    assert _evaluations(verdict, REVIEW_VERDICT) == [VERDICT_CODES[StudyVerdict.CONFIRMED_MISS]]
    comments = [i for i in _items(verdict[0]) if _concept(i) == (COMMENT.value, "DCM")]
    assert [i.TextValue for i in comments] == ['T12 wedge, "missed" <b>']
    # the other studies were not reviewed: the AI's report alone
    for other in load_run(run).studies[1:]:
        ds = pydicom.dcmread(out / f"{other.study_uid}.sr.dcm")
        assert "not reviewed" in ds.SeriesDescription
        assert not [i for i in _items(ds) if _concept(i) == ("121008", "DCM")]


def test_each_image_with_heatmaps_gets_a_secondary_capture(
    run: Path, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "dicom"
    _export(run, out, bundle)
    opened = load_run(run)
    series = set()
    for case in opened.studies:
        for image in case.images:
            source = pydicom.dcmread(opened.archive / opened.source(image.ref))
            path = out / f"{image.sop_instance_uid}.sc.dcm"
            capture = pydicom.dcmread(path)
            assert hd.imread(path).SOPInstanceUID == capture.SOPInstanceUID
            assert capture.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
            assert capture.StudyInstanceUID == source.StudyInstanceUID
            assert capture.PatientID == source.PatientID
            assert capture.SeriesInstanceUID != source.SeriesInstanceUID
            assert capture.SeriesDescription.startswith("tlaudit heatmaps (AI, not reviewed)")
            (referenced,) = capture.SourceImageSequence
            assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
            assert (capture.Rows, capture.Columns) == (source.Rows, source.Columns)
            assert capture.PhotometricInterpretation == "RGB" and capture.SamplesPerPixel == 3
            assert [float(v) for v in capture.PixelSpacing] == [
                float(v) for v in source.PixelSpacing
            ]
            pixels = capture.pixel_array.astype(int)
            # the heatmaps are blended in (colour), the rest of the radiograph stays grey
            x0, y0, x1, y1 = (round(v) for v in image.vertebrae[0].box)
            inside = pixels[(y0 + y1) // 2 + 2 : y1 - 2, x0 + 2 : x1 - 2]  # under the label
            assert np.abs(inside[..., 2] - inside[..., 0]).mean() > 10
            corner = pixels[: y0 // 2, : x0 // 2] if x0 > 4 and y0 > 4 else pixels[-2:, -2:]
            assert (corner[..., 0] == corner[..., 2]).all()
            series.add(capture.SeriesInstanceUID)
    assert len(series) == len(opened.studies)  # one capture series per study
    # a radiograph larger than the capture's longest side is downscaled: the pixel size says so
    monkeypatch.setattr(heatmap_sc, "MAX_SIDE", 80)
    small = tmp_path / "small"
    _export(run, small, bundle)
    image = opened.studies[0].images[0]
    capture = pydicom.dcmread(small / f"{image.sop_instance_uid}.sc.dcm")
    source = pydicom.dcmread(opened.archive / opened.source(image.ref))
    assert max(capture.Rows, capture.Columns) == 80
    scale = 80 / max(source.Rows, source.Columns)
    assert [float(v) for v in capture.PixelSpacing] == pytest.approx(
        [float(v) / scale for v in source.PixelSpacing], rel=0.02
    )


def test_heatmap_values_are_recovered_from_a_thumbnail(tmp_path: Path) -> None:
    """What the scan writes (crop blended with the colour map, JPEG) gives back its heatmap."""
    rng = np.random.default_rng(0)
    crop = np.clip(rng.normal(120, 30, (128, 128)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:128, 0:128] / 127.0
    heat = (np.exp(-((xx - 0.4) ** 2 + (yy - 0.6) ** 2) / 0.08)).astype(np.float32)
    overlay = heatmap_overlay(crop, heat)
    exact = heatmap_sc.heatmap_from_thumbnail(np.asarray(overlay))
    assert np.abs(exact - heat).max() < 6 / 255  # the blend's rounding, on flat runs of the map
    save_jpeg(overlay, tmp_path / "t.jpg")
    with Image.open(tmp_path / "t.jpg") as jpeg:
        recovered = heatmap_sc.heatmap_from_thumbnail(np.asarray(jpeg.convert("RGB")))
    assert np.abs(recovered - heat).mean() < 0.03
    assert recovered.shape == heat.shape and recovered.dtype == np.float32


def test_the_capture_uses_the_values_the_scan_kept(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each heatmap thumbnail of a scan has its values beside it, and the capture is drawn from
    them (the colours of the JPEG are read back only for a run without them)."""
    thumbnails = sorted((run / HEATMAP_DIR).glob("*.jpg"))
    assert thumbnails, "the scan drew no heatmap"
    for thumbnail in thumbnails:
        values = read_heatmap_values(heatmap_values_path(thumbnail))
        with Image.open(thumbnail) as jpeg:
            recovered = heatmap_sc.heatmap_from_thumbnail(np.asarray(jpeg.convert("RGB")))
        # the map at the network's input size (the thumbnail's colours are it, upsampled)
        assert values.ndim == 2 and 0.0 <= values.min() <= values.max() <= 1.0
        shrunk = Image.fromarray(recovered, mode="F").resize(
            values.shape[::-1], Image.Resampling.BILINEAR
        )
        assert np.abs(values - np.asarray(shrunk)).mean() < 0.05  # the same map
    # one vertebra's capture: from the values file, as from the exact map handed over directly
    rng = np.random.default_rng(1)
    pixels = rng.random((300, 240)).astype(np.float32)
    radiograph = Radiograph(pixels=pixels, meta=None, windowing="test")  # type: ignore[arg-type]
    yy, xx = np.mgrid[0:128, 0:128] / 127.0
    heat = (np.exp(-((xx - 0.4) ** 2 + (yy - 0.6) ** 2) / 0.08)).astype(np.float32)
    thumbnail = tmp_path / "t.jpg"
    save_jpeg(heatmap_overlay((pixels[:128, :128] * 255).astype(np.uint8), heat), thumbnail)
    calls = [((60.0, 80.0, 160.0, 170.0), "L1 0.90", True, thumbnail)]
    without_values, _ = heatmap_sc.render_capture(radiograph, calls, 0.15)
    save_heatmap_values(heat, heatmap_values_path(thumbnail))
    with_values, _ = heatmap_sc.render_capture(radiograph, calls, 0.15)
    monkeypatch.setattr(heatmap_sc, "read_heatmap_values", lambda path: heat)
    exact, _ = heatmap_sc.render_capture(radiograph, calls, 0.15)

    def off(a: np.ndarray) -> npt.NDArray[np.int64]:
        return np.abs(a.astype(np.int64) - exact.astype(np.int64))

    # 16-bit values: at most one step of the colour map, blended (plus rounding), here and there
    step = np.abs(np.diff(colour_lut().astype(np.int64), axis=0)).max()
    assert off(with_values).max() <= np.ceil(heatmap_sc.ALPHA * step) + 1
    assert off(with_values).mean() < 0.01
    assert off(without_values).mean() > 10 * off(with_values).mean()  # the JPEG's colours


def _command(run: Path, out: str, *extra: str) -> list[str]:
    return ["export-dicom", str(run), "--dicom-out", out, *extra]


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["tlaudit", *args])
    with pytest.raises(SystemExit) as info:
        app_module.main()
    code = info.value.code
    return 0 if code is None else int(code)


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    text = " ".join(err.split())
    assert text.startswith("error:"), err
    return text


def test_bad_runs_end_in_one_line(
    run: Path,
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = str(tmp_path / "dicom")
    # an unreadable review store
    (run / "review.sqlite").write_bytes(b"not a database at all" * 100)
    assert _main(monkeypatch, *_command(run, out, "--model", str(bundle))) == 1
    assert "is not a tlaudit review store" in _one_line_error(capsys.readouterr().err)
    (run / "review.sqlite").unlink()
    # another model than the run's
    other = create_untrained_bundle(tmp_path / "other", "resnet18", 32, seed=1)
    assert _main(monkeypatch, *_command(run, out, "--model", str(other))) == 2
    assert "give the run's bundle with --model" in _one_line_error(capsys.readouterr().err)
    # two reviewers and none named
    opened = load_run(run)
    case = opened.studies[0]
    with ReviewStore(run) as store:
        for name in ("one", "two"):
            store.record(name, "verdict", "unsure", study=case.key)
    assert _main(monkeypatch, *_command(run, out, "--model", str(bundle))) == 2
    assert "--reviewer" in _one_line_error(capsys.readouterr().err)
    # a run folder without findings
    (run / "findings.csv").unlink()
    assert _main(monkeypatch, *_command(run, out, "--model", str(bundle), "--reviewer", "one")) == 1
    assert "findings.csv is missing" in _one_line_error(capsys.readouterr().err)
    # a folder that is no run
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _main(monkeypatch, *_command(empty, out)) == 1
    assert "is it the run folder" in _one_line_error(capsys.readouterr().err)


def test_a_source_gone_from_the_archive_is_a_counted_skip(bundle: Path, tmp_path: Path) -> None:
    run = scanned_run(tmp_path, bundle)
    opened = load_run(run)
    gone = opened.studies[0]
    path = opened.archive / opened.source(gone.images[0].ref)
    path.unlink()
    printed = " ".join(_export(run, tmp_path / "dicom", bundle).split())
    assert f"no DICOM results for study {gone.key}" in printed
    assert "gone from the archive" in printed
    written = sorted((tmp_path / "dicom").glob("*.sr.dcm"))
    assert len(written) == len(opened.studies) - 1
    # the whole archive gone: one line
    shutil.rmtree(opened.archive)
    outcome = CliRunner().invoke(
        app, ["export-dicom", str(run), "--dicom-out", str(tmp_path / "d2"), "--model", str(bundle)]
    )
    assert outcome.exit_code != 0 and "is gone" in str(outcome.exception)


def test_a_pseudonymised_run_is_refused(
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.helpers.scan_world import make_scan_world

    make_scan_world(tmp_path / "world", n_studies=2)
    config = dataclasses.replace(
        scan_config(tmp_path / "world", bundle, tmp_path / "run"), pseudonymise=True
    )
    run_scan(config)
    capsys.readouterr()  # the scan's own warnings
    out = str(tmp_path / "dicom")
    code = _main(monkeypatch, *_command(tmp_path / "run", out, "--model", str(bundle)))
    assert code == 2
    assert "--pseudonymise" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "dicom").exists()


@pytest.mark.slow
def test_stow_sends_the_reviewed_results_and_qido_finds_the_new_series(
    run: Path,
    bundle: Path,
    tmp_path: Path,
    orthanc_factory: list[Orthanc],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.pacs.conftest import start_orthanc
    from tests.pacs.orthanc import PASSWORD, USER

    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    orthanc_factory.append(server)
    monkeypatch.setenv("TLAUDIT_DICOMWEB_USER", USER)
    monkeypatch.setenv("TLAUDIT_DICOMWEB_PASSWORD", PASSWORD)
    reviewed = review(run)
    out = tmp_path / "dicom"
    printed = " ".join(_export(run, out, bundle, "--stow", server.dicomweb).split())
    assert "STOW-RS" in printed and PASSWORD not in printed
    study = reviewed.case.study_uid
    answer = requests.get(
        f"{server.url}/dicom-web/studies/{study}/series",
        params={"includefield": "0008103E"},
        auth=server.auth,
        timeout=10,
    )
    assert answer.status_code == 200
    found = {
        item["00080060"]["Value"][0]: (
            item["0020000E"]["Value"][0],
            item["0008103E"]["Value"][0],
        )
        for item in answer.json()
    }
    report = pydicom.dcmread(out / f"{study}.sr.dcm")
    capture = pydicom.dcmread(out / f"{reviewed.case.images[0].sop_instance_uid}.sc.dcm")
    assert found["SR"] == (report.SeriesInstanceUID, report.SeriesDescription)
    assert found["OT"] == (capture.SeriesInstanceUID, capture.SeriesDescription)
    assert found["PR"][1].startswith("tlaudit")
    # what Orthanc returns is the SR written: the reviewer's name and verdict in it
    back = requests.get(
        f"{server.url}/dicom-web/studies/{study}/series/{report.SeriesInstanceUID}/instances/"
        f"{report.SOPInstanceUID}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        auth=server.auth,
        timeout=10,
    )
    assert back.status_code == 200
    body = back.content
    stored = pydicom.dcmread(BytesIO(body[body.index(b"\r\n\r\n") + 4 : body.rindex(b"\r\n--")]))
    assert stored.SOPInstanceUID == report.SOPInstanceUID
    names = [str(i.PersonName) for i in _items(stored) if _concept(i) == ("121008", "DCM")]
    assert names == [f"{REVIEWER}^"]
    verdicts = [
        i.ConceptCodeSequence[0].CodeValue
        for i in _items(stored)
        if _concept(i) == (REVIEW_VERDICT.value, REVIEW_VERDICT.scheme_designator)
    ]
    assert verdicts == ["CONFIRMED_MISS"]


def test_a_capture_that_cannot_be_drawn_is_a_counted_skip(
    run: Path, bundle: Path, tmp_path: Path
) -> None:
    opened = load_run(run)
    image = opened.studies[0].images[0]
    broken = run / image.vertebrae[0].heatmap
    broken.write_bytes(b"not a JPEG")  # and its values too: nothing left to draw it from
    heatmap_values_path(broken).write_bytes(b"not a PNG")
    printed = " ".join(_export(run, tmp_path / "dicom", bundle).split())
    assert f"skipped {opened.source(image.ref)}: no heatmap capture" in printed
    assert not (tmp_path / "dicom" / f"{image.sop_instance_uid}.sc.dcm").exists()
    assert (tmp_path / "dicom" / f"{opened.studies[0].study_uid}.sr.dcm").is_file()
    captures = list((tmp_path / "dicom").glob("*.sc.dcm"))
    assert len(captures) == sum(len(case.images) for case in opened.studies) - 1
