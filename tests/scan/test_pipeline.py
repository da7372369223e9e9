"""End to end: a scan of a tiny generated archive writes its reports, escapes hostile headers,
counts bad input rows, resumes after an interruption to identical findings, and pseudonymises."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import openpyxl
import pytest
from openpyxl.utils import get_column_letter
from typer.testing import CliRunner

from auditor import parallel
from auditor.cli.app import app
from auditor.errors import UsageError
from auditor.model.bundle import create_untrained_bundle
from auditor.records import StudyStatus
from auditor.reports.pseudonym import Pseudonymiser
from auditor.scan.config import HeatmapMode
from auditor.scan.journal import JOURNAL_NAME
from auditor.scan.pipeline import ScanConfig, ScanEvent, ScanResult, run_scan
from tests.helpers.interrupt import stop_after_batches
from tests.helpers.scan_world import (
    BAD_BOX_ROWS,
    BAD_READ_ROWS,
    HOSTILE,
    LEVELS,
    ScanWorld,
    make_scan_world,
    scan_config,
)

# compares numbers between code paths: CI reruns it on AVX2 kernels and with bf16 for auto
pytestmark = pytest.mark.numerics

N_STUDIES = 6


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ScanWorld:
    return make_scan_world(tmp_path_factory.mktemp("world"), n_studies=N_STUDIES)


_config = scan_config


@pytest.fixture(scope="module")
def scanned(world: ScanWorld, bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> ScanResult:
    out = tmp_path_factory.mktemp("run")
    return run_scan(_config(world, bundle, out, workers=1))


class _Html(HTMLParser):
    """Collects tags, attributes, text and table rows of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.rows: dict[str, int] = {}
        self._table: list[str] = []
        self._in_body = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table":
            self._table.append(attributes.get("id") or "")
        elif tag == "tbody":
            self._in_body += 1
        elif tag == "tr" and self._in_body and self._table:
            self.rows[self._table[-1]] = self.rows.get(self._table[-1], 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table.pop()
        elif tag == "tbody":
            self._in_body -= 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(path: Path) -> _Html:
    parser = _Html()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _findings(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_scan_writes_three_reports(scanned: ScanResult, world: ScanWorld) -> None:
    for path in scanned.reports.values():
        assert path.is_file() and path.stat().st_size > 0
    assert scanned.n_vertebrae == N_STUDIES * len(LEVELS)
    rows = _findings(scanned.reports["csv"])
    assert len(rows) == N_STUDIES * len(LEVELS)
    status = {row["image"].split("/")[0]: row["study_status"] for row in rows}
    assert status["FAKE-000"] == StudyStatus.LIKELY_MISSED.value  # read negative
    assert status["FAKE-001"] == StudyStatus.LIKELY_MISSED.value  # read L1 only
    assert status["FAKE-002"] == StudyStatus.CONCORDANT_POSITIVE.value  # yes, no levels
    assert status[f"FAKE-{N_STUDIES - 1:03d}"] == StudyStatus.NO_READ.value
    l1 = next(r for r in rows if r["image"].startswith("FAKE-001") and r["level"] == "L1")
    assert l1["reported_in_read"] == "yes" and l1["call"] == "positive"
    assert all(r["heatmap"].startswith("thumbnails/heatmaps/") for r in rows)


def test_excel_structure(scanned: ScanResult) -> None:
    workbook = openpyxl.load_workbook(scanned.reports["xlsx"])
    assert workbook.sheetnames == ["Summary", "Flagged queue", "Vertebrae", "Files", "Errors"]
    queue = workbook["Flagged queue"]
    headers = [cell.value for cell in queue[1]]
    assert headers[:4] == ["Rank", "Status", "Reviewer verdict", "Comment"]
    assert queue.freeze_panes == "E2"  # the header row and Rank to Comment stay in view
    assert queue.auto_filter.ref is not None
    assert queue.max_row == 1 + N_STUDIES  # every study is flagged at threshold 0
    statuses = [queue.cell(row=r, column=2).value for r in range(2, queue.max_row + 1)]
    assert statuses[0] == StudyStatus.LIKELY_MISSED.value
    priority = headers.index("Priority") + 1
    priorities = [queue.cell(row=r, column=priority).value for r in range(2, queue.max_row + 1)]
    assert priorities == sorted(priorities, reverse=True)
    assert len(queue._images) == N_STUDIES  # one embedded heatmap thumbnail per study
    validations = queue.data_validations.dataValidation
    assert len(validations) == 1
    assert validations[0].formula1 == ('"confirmed miss,not a fracture,already known,unsure"')
    verdict = get_column_letter(headers.index("Reviewer verdict") + 1)
    assert str(validations[0].sqref).startswith(f"{verdict}2:")
    image = headers.index("Image") + 1
    links = [queue.cell(row=r, column=image).hyperlink for r in range(2, queue.max_row + 1)]
    assert all(link is not None for link in links)
    for r, link in enumerate(links, start=2):
        assert link is not None and not link.target.startswith("file:")
        shown = queue.cell(row=r, column=image).value  # the archive-relative path
        assert link.target.endswith("/" + shown)
        assert (scanned.run_dir / unquote(link.target)).is_file()
    for sheet in workbook.worksheets:
        assert sheet.page_setup.orientation == "landscape"
        assert sheet.sheet_properties.pageSetUpPr.fitToPage
        assert sheet.page_setup.fitToWidth == 1 and sheet.page_setup.fitToHeight == 0
        assert sheet.print_title_rows == "$1:$1"
    vertebrae = workbook["Vertebrae"]
    assert vertebrae.max_row == 1 + N_STUDIES * len(LEVELS)
    assert vertebrae.conditional_formatting  # colour scale on probability
    files = workbook["Files"]
    assert files.max_row == 1 + N_STUDIES + 2  # six images, a text file, a broken file
    summary = {row[0]: row[1] for row in workbook["Summary"].iter_rows(values_only=True)}
    assert summary["Vertebrae classified"] == N_STUDIES * len(LEVELS)
    assert summary["Box rows rejected"] == BAD_BOX_ROWS
    assert summary["Reads rows rejected"] == BAD_READ_ROWS
    assert str(summary["Model architecture"]).endswith("heatmap grid")


def test_bad_rows_are_counted_and_named(scanned: ScanResult) -> None:
    workbook = openpyxl.load_workbook(scanned.reports["xlsx"])
    errors = list(workbook["Errors"].iter_rows(min_row=2, values_only=True))
    box = [e for e in errors if e[0] == "box file"]
    reads = [e for e in errors if e[0] == "reads file"]
    assert len(box) == BAD_BOX_ROWS and len(reads) == BAD_READ_ROWS
    reasons = " | ".join(str(e[3]) for e in box)
    for fragment in (
        "unknown vertebral level 'X9'",
        "points outside the archive",
        "not a candidate image",
        "lies outside",
        "degenerate box",
    ):
        assert fragment in reasons
    assert all(isinstance(e[1], int) for e in box + reads)  # every error names its row
    assert scanned.n_errors == BAD_BOX_ROWS + BAD_READ_ROWS


def test_hostile_headers_are_text_in_excel(scanned: ScanResult) -> None:
    workbook = openpyxl.load_workbook(scanned.reports["xlsx"])
    queue = workbook["Flagged queue"]
    headers = [cell.value for cell in queue[1]]
    row = next(
        r
        for r in range(2, queue.max_row + 1)
        if queue.cell(row=r, column=headers.index("Patient ID") + 1).value == HOSTILE["PatientID"]
    )
    for column, expected in (
        ("Patient ID", HOSTILE["PatientID"]),
        ("Accession", HOSTILE["AccessionNumber"]),
        ("Patient name", HOSTILE["PatientName"]),
        ("Impression", "=cmd() <img src=x onerror=alert(1)>"),
        ("Study description", HOSTILE["StudyDescription"]),
    ):
        cell = queue.cell(row=row, column=headers.index(column) + 1)
        assert cell.value == expected
        assert cell.data_type == "s"  # text, never a formula


def test_html_is_self_contained_and_escaped(scanned: ScanResult) -> None:
    page = _parse(scanned.reports["html"])
    assert page.rows["queue-table"] == N_STUDIES
    assert page.rows["vertebra-table"] == N_STUDIES * len(LEVELS)
    assert page.rows["file-table"] == N_STUDIES + 2
    assert page.rows["error-table"] == BAD_BOX_ROWS + BAD_READ_ROWS
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert len(scripts) == 1 and "src" not in scripts[0]  # only our inline script
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert (attrs.get("src") or "").startswith("data:image/jpeg;base64,")
        if tag == "link":
            pytest.fail("external stylesheet or resource link")
    text = "".join(page.text)
    for value in HOSTILE.values():
        assert value in text  # shown as text, i.e. escaped in the markup
    raw = scanned.reports["html"].read_text(encoding="utf-8")
    assert "<script>alert" not in raw and "&lt;script&gt;alert" in raw
    assert "<img src=x" not in raw
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    # each flagged study: one radiograph and one heatmap per positive level
    assert len(images) == N_STUDIES * (1 + len(LEVELS))
    filters = [attrs for tag, attrs in page.tags if "data-filter-table" in attrs]
    assert {a.get("data-filter-attr") for a in filters} >= {"status", "levels", "prob", "level"}


def test_resume_after_interruption_gives_identical_findings(
    world: ScanWorld, bundle: Path, scanned: ScanResult, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_scan(_config(world, bundle, out), stop_after_batches(1))
    assert not (out / "findings.csv").exists()
    with sqlite3.connect(out / JOURNAL_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 2  # one batch

    with pytest.raises(UsageError, match="--resume"):
        run_scan(_config(world, bundle, out))
    events: list[ScanEvent] = []
    resumed = run_scan(_config(world, bundle, out, resume=True), events.append)
    assert resumed.timings["classified_this_session"] == (N_STUDIES - 2) * len(LEVELS)
    assert any("Resuming: 2 images" in e.message for e in events)
    assert (out / "findings.csv").read_bytes() == scanned.reports["csv"].read_bytes()
    fresh = openpyxl.load_workbook(scanned.reports["xlsx"])
    again = openpyxl.load_workbook(resumed.reports["xlsx"])
    for sheet in ("Flagged queue", "Vertebrae", "Files", "Errors"):
        assert list(fresh[sheet].values) == list(again[sheet].values), sheet


def test_resume_with_other_threshold_is_refused(
    world: ScanWorld, bundle: Path, scanned: ScanResult
) -> None:
    with pytest.raises(UsageError, match="threshold"):
        run_scan(_config(world, bundle, scanned.run_dir, threshold=0.9, workers=1, resume=True))


def test_pseudonymised_reports_hide_identifiers(
    world: ScanWorld, bundle: Path, tmp_path: Path
) -> None:
    result = run_scan(
        _config(
            world,
            bundle,
            tmp_path / "anon",
            pseudonymise=True,
            pseudonym_salt="salt",
            heatmaps=HeatmapMode.NONE,
        )
    )
    html = result.reports["html"].read_text(encoding="utf-8")
    queue = openpyxl.load_workbook(result.reports["xlsx"])["Flagged queue"]
    cells = [str(c) for row in queue.values for c in row if c is not None]
    workbook = openpyxl.load_workbook(result.reports["xlsx"])
    every_cell = [str(c) for ws in workbook for row in ws.values for c in row if c is not None]
    # patient ID (also the folder name in paths), name parts, accession, study UID
    # ... and the key of a rejected reads row (ACC9999, bad yes/no), shown in the Errors sheet
    for secret in ("FAKE-001", "Patient1", "ACC0001", world.study_uids[1], "ACC9999"):
        assert secret not in html
        assert not any(secret in c for c in every_cell), secret
        assert secret not in result.reports["csv"].read_text(encoding="utf-8")
    assert any(c.startswith("anon-") for c in cells)
    # the read's impression keeps its words but loses the identifiers, whatever their case
    anon = Pseudonymiser("salt")
    impression = f"L1 wedge. Told {anon('Patient1')} ({anon('FAKE-001')}) by phone."
    assert impression in cells and impression in html
    assert "patient1" not in html.lower() and "fake-001" not in html.lower()
    # stable: the same salt gives the same pseudonyms
    again = run_scan(
        _config(
            world,
            bundle,
            tmp_path / "anon2",
            pseudonymise=True,
            pseudonym_salt="salt",
            heatmaps=HeatmapMode.NONE,
        )
    )
    assert again.reports["csv"].read_bytes() == result.reports["csv"].read_bytes()


def test_scan_without_boxes_uses_the_localizer(bundle: Path, tmp_path: Path) -> None:
    from auditor.synth.archive import write_archive
    from auditor.synth.config import SynthConfig

    world = tmp_path / "world"
    config = SynthConfig(max_side=700, distractor_rate=0.0, compressed_share=0.0)
    write_archive(world, studies=3, seed=5, config=config)
    result = run_scan(
        ScanConfig(
            archive=world / "archive", out=tmp_path / "run", model=bundle, heatmaps=HeatmapMode.NONE
        )
    )
    assert (tmp_path / "run" / "localizer_boxes.csv").is_file()
    with result.reports["csv"].open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, "the localizer found no vertebra on three synthetic lateral views"
    assert {row["box_source"] for row in rows} == {"localizer"}
    assert all(0.0 < float(row["box_confidence"]) <= 1.0 for row in rows)
    assert result.n_candidates == 3 and result.n_vertebrae == len(rows)


def test_localizer_runs_on_the_scan_device_and_hands_its_boxes_over_in_memory(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan's --device reaches the localizer, and the boxes it finds are the ones the box
    file it writes states (read back, they are equal), not a second reading of that file."""
    from auditor.boxes import read_box_file
    from auditor.localizer import archive as localizer_archive
    from auditor.synth.archive import write_archive
    from auditor.synth.config import SynthConfig

    world = tmp_path / "world"
    write_archive(world, studies=2, seed=5, config=SynthConfig(max_side=700, distractor_rate=0.0))
    devices: list[object] = []
    found: list[object] = []
    real_load, real_localize = localizer_archive.load_localizer, localizer_archive.localize_archive

    def spy_load(path: Path | None = None, device: object = None) -> object:
        devices.append(device)
        return real_load(path, device)  # type: ignore[arg-type]

    def spy_localize(*args: object, **kwargs: object) -> object:
        summary = real_localize(*args, **kwargs)  # type: ignore[arg-type]
        found.extend(summary.found)
        return summary

    monkeypatch.setattr(localizer_archive, "load_localizer", spy_load)
    monkeypatch.setattr("auditor.localizer.localize_archive", spy_localize)
    run_scan(
        ScanConfig(
            archive=world / "archive",
            out=tmp_path / "run",
            model=bundle,
            device="cpu",
            heatmaps=HeatmapMode.NONE,
        )
    )
    assert [str(d) for d in devices] == ["cpu"]
    assert found and tuple(found) == read_box_file(tmp_path / "run" / "localizer_boxes.csv").rows


def test_localizer_scan_reads_the_archive_once(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a box file the crops come from the localizer's decode: the same findings as a scan
    that decodes the images again from the localizer's box file, no second decode, and no
    second walk of the archive."""
    from auditor.localizer import archive as localizer_archive
    from auditor.scan import dataset
    from auditor.synth.archive import write_archive
    from auditor.synth.config import SynthConfig

    world = tmp_path / "world"
    config = SynthConfig(max_side=700, distractor_rate=0.0, compressed_share=0.0)
    write_archive(world, studies=3, seed=5, config=config)
    archive = world / "archive"
    located = run_scan(
        ScanConfig(
            archive=archive,
            out=tmp_path / "loc",
            model=bundle,
            heatmaps=HeatmapMode.NONE,
            workers=0,
        )
    )
    assert located.n_images == 3 and located.timings["precut_images"] == 3
    assert not (tmp_path / "loc" / dataset.PRECUT_DIR).exists()  # spent and removed
    decoded = run_scan(
        ScanConfig(
            archive=archive,
            out=tmp_path / "boxes",
            model=bundle,
            boxes=tmp_path / "loc" / "localizer_boxes.csv",
            heatmaps=HeatmapMode.NONE,
            workers=0,
            image_check=False,  # the loader decodes every image; only that differs
        )
    )
    assert decoded.timings["precut_images"] == 0
    assert (tmp_path / "loc" / "findings.csv").read_bytes() == (
        tmp_path / "boxes" / "findings.csv"
    ).read_bytes()

    def no_second_decode(path: Path) -> None:
        raise AssertionError(f"the loader decoded {path} again")

    def no_second_walk(*args: object, **kwargs: object) -> None:
        raise AssertionError("the localizer walked the archive again")

    monkeypatch.setattr(dataset, "read_radiograph", no_second_decode)
    monkeypatch.setattr(localizer_archive, "inventory", no_second_walk)
    again = run_scan(
        ScanConfig(
            archive=archive,
            out=tmp_path / "loc2",
            model=bundle,
            heatmaps=HeatmapMode.NONE,
            workers=0,
        )
    )
    assert again.n_vertebrae == located.n_vertebrae and again.n_errors == located.n_errors


def test_crops_that_cannot_be_stored_are_decoded_again(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auditor.scan import locate
    from auditor.synth.archive import write_archive
    from auditor.synth.config import SynthConfig

    world = tmp_path / "world"
    config = SynthConfig(max_side=700, distractor_rate=0.0, compressed_share=0.0)
    write_archive(world, studies=2, seed=6, config=config)

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(locate, "write_precut", full_disk)
    result = run_scan(
        ScanConfig(
            archive=world / "archive", out=tmp_path / "run", model=bundle, heatmaps=HeatmapMode.NONE
        )
    )
    assert result.timings["precut_images"] == 0
    assert result.n_images == 2 and result.n_vertebrae > 0


def test_stored_crops_that_do_not_match_the_boxes_are_not_used(tmp_path: Path) -> None:
    from auditor.model.bundle import load_bundle
    from auditor.records import VertebraBox
    from auditor.scan.dataset import ImageJob, read_precut, write_precut
    from auditor.vocab import Level

    card = load_bundle(create_untrained_bundle(tmp_path / "b", "resnet18", input_size=32)).card
    pixels = np.random.default_rng(0).random((200, 160), dtype=np.float32)
    target = tmp_path / "precut" / "x.npz"
    write_precut(target, pixels, [("L1", (20.0, 30.0, 90.0, 80.0))], card)

    def job(x_min: float) -> ImageJob:
        box = VertebraBox(1, "x.dcm", "", Level.L1, x_min, 30.0, 90.0, 80.0)
        return ImageJob("x.dcm", tmp_path / "x.dcm", (box,), target)

    stored = read_precut(job(20.0), card)
    assert stored is not None and stored[0][0].shape == (32, 32)
    assert read_precut(job(20.5), card) is None  # a box moved after localization
    other = load_bundle(create_untrained_bundle(tmp_path / "c", "resnet18", input_size=48)).card
    assert read_precut(job(20.0), other) is None  # crops cut for another input size
    target.write_bytes(b"not an npz")
    assert read_precut(job(20.0), card) is None  # unreadable: the loader decodes instead


def test_localizer_failures_are_error_rows(world: ScanWorld, bundle: Path, tmp_path: Path) -> None:
    result = run_scan(
        ScanConfig(
            archive=world.archive, out=tmp_path / "run", model=bundle, heatmaps=HeatmapMode.NONE
        )
    )
    workbook = openpyxl.load_workbook(result.reports["xlsx"])
    errors = [row for row in workbook["Errors"].iter_rows(min_row=2, values_only=True) if row[0]]
    localizer_rows = [row for row in errors if row[0] == "localizer"]
    # every candidate is either classified with localizer boxes or named in an error row
    assert result.n_images + len(localizer_rows) == result.n_candidates
    assert all(row[3] for row in localizer_rows)


def test_cli_scan_prints_model_and_device(world: ScanWorld, bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app,
        [
            "scan",
            str(world.archive),
            "--out",
            str(out),
            "--boxes",
            str(world.boxes),
            "--reads",
            str(world.reads),
            "--model",
            str(bundle),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--heatmaps",
            "none",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "untrained-resnet18-32" in result.output
    assert "Running on cpu" in result.output
    assert (out / "audit.html").is_file()


@pytest.mark.slow
def test_killed_scan_process_resumes(bundle: Path, tmp_path: Path) -> None:
    """A real ``tlaudit scan`` process killed with SIGKILL mid-run resumes to the same findings."""
    n = 16
    big = make_scan_world(tmp_path / "world", n_studies=n, seed=1)
    killed = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "auditor",
        "scan",
        str(big.archive),
        "--out",
        str(killed),
        "--boxes",
        str(big.boxes),
        "--reads",
        str(big.reads),
        "--model",
        str(bundle),
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--threshold",
        "0",
    ]
    process = subprocess.Popen(
        command,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = killed / JOURNAL_NAME
    done = 0
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists():
            try:
                with sqlite3.connect(journal, timeout=1) as db:
                    done = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            except sqlite3.OperationalError:  # table not created yet
                done = 0
            if done >= 2:
                break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if not 2 <= done < n:
        pytest.skip(f"could not catch the scan mid-way (journal had {done} images)")
    assert not (killed / "findings.csv").exists()

    def config(out: Path, resume: bool) -> ScanConfig:
        return ScanConfig(
            archive=big.archive,
            out=out,
            boxes=big.boxes,
            reads=big.reads,
            model=bundle,
            threshold=0.0,
            device="cpu",
            batch_size=4,
            workers=0,
            resume=resume,
        )

    resumed = run_scan(config(killed, resume=True))
    assert resumed.timings["classified_this_session"] < n * len(LEVELS)
    whole = run_scan(config(tmp_path / "whole", resume=False))
    assert resumed.reports["csv"].read_bytes() == whole.reports["csv"].read_bytes()


def test_layercam_pass_runs_only_for_vertebrae_that_get_a_thumbnail(
    scanned: ScanResult, world: ScanWorld, bundle: Path, tmp_path: Path
) -> None:
    """The default, layercam4, and CAM come from the classifying pass; layercam's second pass is
    timed inside the scan and runs for positive vertebrae only."""
    t = scanned.timings
    assert t["heatmaps_drawn"] == t["classified_this_session"] > 0  # threshold 0: all positive
    assert t["heatmap_maps_s"] == 0.0 and t["heatmap_thumbnails_s"] > 0
    layercam = run_scan(_config(world, bundle, tmp_path / "lc", heatmap_method="layercam"))
    assert layercam.timings["heatmaps_drawn"] == t["heatmaps_drawn"]
    assert layercam.timings["model_s"] > layercam.timings["heatmap_maps_s"] > 0
    cam = run_scan(_config(world, bundle, tmp_path / "cam", heatmap_method="cam"))
    assert cam.timings["heatmaps_drawn"] == t["heatmaps_drawn"]
    assert cam.timings["heatmap_maps_s"] == 0.0
    # nothing positive: no thumbnail, and no LayerCAM pass either
    none = run_scan(
        _config(world, bundle, tmp_path / "none", threshold=1.0, heatmap_method="layercam")
    )
    assert none.timings["heatmaps_drawn"] == 0 and none.timings["heatmap_maps_s"] == 0.0


def test_the_report_carries_a_banner_for_a_model_trained_on_synthetic_data(
    world: ScanWorld, bundle: Path, scanned: ScanResult, tmp_path: Path
) -> None:
    """The card's training_data reaches the page: a banner for "synthetic", none when the card
    does not say (the untrained test bundle)."""
    import json
    import shutil

    assert 'id="banner"' not in scanned.reports["html"].read_text(encoding="utf-8")
    synthetic = tmp_path / "synthetic-bundle"
    shutil.copytree(bundle, synthetic)
    card = json.loads((synthetic / "card.json").read_text(encoding="utf-8"))
    card["training_data"] = "synthetic"
    (synthetic / "card.json").write_text(json.dumps(card), encoding="utf-8")
    result = run_scan(_config(world, synthetic, tmp_path / "run", heatmaps=HeatmapMode.NONE))
    html = result.reports["html"].read_text(encoding="utf-8")
    assert 'id="banner"' in html and "not validated on patients" in html
    assert html.index('id="banner"') < html.index('id="queue"')


def test_resume_keeps_a_reviewed_workbook_and_carries_its_verdicts_over(
    world: ScanWorld, bundle: Path, tmp_path: Path
) -> None:
    """A reviewer's verdicts are never wiped by ``--resume``: the reviewed workbook is kept
    beside the new one, and the new one holds the same verdicts for the same studies."""
    out = tmp_path / "run"
    first = run_scan(_config(world, bundle, out, heatmaps=HeatmapMode.NONE))
    workbook = openpyxl.load_workbook(first.reports["xlsx"])
    queue = workbook["Flagged queue"]
    header = [c.value for c in queue[1]]
    study_col, verdict_col, comment_col = (
        header.index(name) + 1 for name in ("Study", "Reviewer verdict", "Comment")
    )
    study = queue.cell(row=2, column=study_col).value
    queue.cell(row=2, column=verdict_col).value = "confirmed miss"
    queue.cell(row=2, column=comment_col).value = "looks real; <b>T12</b> too"
    workbook.save(first.reports["xlsx"])

    again = run_scan(_config(world, bundle, out, heatmaps=HeatmapMode.NONE, resume=True))
    kept = out / "audit.reviewed-1.xlsx"
    assert again.reports["xlsx (the reviewed workbook, kept)"] == kept
    reviewed = openpyxl.load_workbook(kept)["Flagged queue"]
    assert reviewed.cell(row=2, column=verdict_col).value == "confirmed miss"
    new = openpyxl.load_workbook(again.reports["xlsx"])["Flagged queue"]
    rows = {r[study_col - 1]: r for r in new.iter_rows(min_row=2, values_only=True)}
    assert rows[study][verdict_col - 1] == "confirmed miss"
    assert rows[study][comment_col - 1] == "looks real; <b>T12</b> too"
    # a workbook without verdicts is simply replaced, and a second resume keeps the next one apart
    third = run_scan(_config(world, bundle, out, heatmaps=HeatmapMode.NONE, resume=True))
    assert third.reports["xlsx (the reviewed workbook, kept)"] == out / "audit.reviewed-2.xlsx"


def test_the_model_in_the_workers_finds_the_same(
    world: ScanWorld, bundle: Path, scanned: ScanResult, tmp_path: Path, monkeypatch: Any
) -> None:
    from auditor.model.infer import Classifier
    from auditor.scan import classify

    # Every call of predict in this process is recorded; the workers' calls land in their own
    # copies of the list, so an empty list here means the model ran only in the workers.
    here: list[int] = []
    predict = Classifier.predict

    def recorded(self: Classifier, *args: Any, **kwargs: Any) -> Any:
        here.append(os.getpid())
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(Classifier, "predict", recorded)
    result = run_scan(_config(world, bundle, tmp_path / "run", workers=2, model_in_workers=True))
    assert here == [] and not any(isinstance(k, classify.ModelSpec) for k in parallel._LOADED)
    assert result.n_vertebrae == scanned.n_vertebrae
    assert result.reports["csv"].read_bytes() == scanned.reports["csv"].read_bytes()
    with pytest.raises(UsageError, match="--workers 1 or more"):
        run_scan(_config(world, bundle, tmp_path / "none", workers=0, model_in_workers=True))
