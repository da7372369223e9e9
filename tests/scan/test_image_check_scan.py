"""The image check of a scan with a box file (issues 21 and 23): the localizer's domain guard
asks, of each whole image, whether it is like the localizer's training images, beside the
classification of its vertebrae and from the loader's decode. Every crop of an image it refuses
is out of distribution in every report and counts toward the red banner; synthetic lateral views
pass it untouched, with no image decoded twice and the findings unchanged; its verdicts are
committed to the journal with each batch, so a scan killed mid-way keeps them and a resumed scan
reads them there; images journaled without one are measured on ``--resume``;
``--no-image-check`` turns it off."""

from __future__ import annotations

import csv
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openpyxl
import pytest

import auditor.cli.app as app_module
import auditor.localizer.archive as localizer_archive
import auditor.scan.dataset as scan_dataset
from auditor.io.radiograph import read_radiograph
from auditor.model.infer import Classifier
from auditor.records import OUT_OF_DISTRIBUTION
from auditor.scan.assemble import IMAGE_CHECK_REASON
from auditor.scan.config import HeatmapMode
from auditor.scan.image_check import IMAGE_CHECK, IMAGE_CHECK_COLUMNS
from auditor.scan.journal import JOURNAL_NAME
from auditor.scan.pipeline import ScanConfig, run_scan
from tests.helpers.paths import REPO_DIR

CORPUS_XRAY = REPO_DIR.parent / "shared" / "dicom-corpus" / "xray"
# three small readable radiographs of the corpus: a chest CR, a DX and a JPEG 2000 one
CORPUS_FILES = ("CR-MONO1-10-chest", "dx_image.dcm", "RG3_J2KI.dcm")
BOX_HEADER = ("image", "level", "x_min", "y_min", "x_max", "y_max")


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["tlaudit", *args])
    with pytest.raises(SystemExit) as info:
        app_module.main()
    return 0 if info.value.code is None else int(info.value.code)


def _findings(run: Path) -> list[dict[str, str]]:
    with (run / "findings.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _verdicts(run: Path) -> dict[str, dict[str, str]]:
    with (run / IMAGE_CHECK).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == IMAGE_CHECK_COLUMNS
        return {row["image"]: row for row in reader}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three real radiographs without a TL spine and a forced box file: a 2 x 2 grid of square
    boxes on each, each a fifth of the image's shorter side, named T12 to L3."""
    if not all((CORPUS_XRAY / name).is_file() for name in CORPUS_FILES):
        pytest.skip(f"the shared DICOM corpus is not at {CORPUS_XRAY}")
    root = tmp_path_factory.mktemp("corpus")
    archive = root / "archive"
    archive.mkdir()
    rows = []
    for name in CORPUS_FILES:
        shutil.copy(CORPUS_XRAY / name, archive / name)
        height, width = read_radiograph(archive / name).pixels.shape
        side = 0.2 * min(height, width)
        centres = [(x, y) for y in (0.35 * height, 0.65 * height) for x in (0.35, 0.65)]
        for level, (fx, cy) in zip(("T12", "L1", "L2", "L3"), centres, strict=True):
            cx = fx * width
            rows.append((name, level, cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    boxes = root / "boxes.csv"
    with boxes.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(BOX_HEADER)
        writer.writerows((r[0], r[1], *(f"{c:.2f}" for c in r[2:])) for r in rows)
    return archive, boxes


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic lateral studies (uncompressed, 700 px) and their box file."""
    from auditor.synth.archive import write_archive
    from auditor.synth.config import SynthConfig

    world = tmp_path_factory.mktemp("synthetic")
    config = SynthConfig(max_side=700, distractor_rate=0.0, compressed_share=0.0)
    write_archive(world, studies=3, seed=7, config=config)
    return world


def test_real_radiographs_with_forced_boxes_are_out_of_distribution_in_every_report(
    corpus: tuple[Path, Path],
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive, boxes = corpus
    out = tmp_path / "run"
    args = ["scan", str(archive), "--out", str(out), "--boxes", str(boxes), "--device", "cpu"]
    args += ["--model", str(bundle), "--include-all-radiographs", "--workers", "0"]
    assert _main(monkeypatch, *args, "--heatmaps", "none") == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "Out of distribution:" in printed
    assert f"Image check: ran on {len(CORPUS_FILES)} images, {len(CORPUS_FILES)} unlike" in printed
    verdicts = _verdicts(out)
    assert set(verdicts) == set(CORPUS_FILES)
    assert all(
        v["out_of_distribution"] == "yes" and float(v["distance"]) > 1 for v in verdicts.values()
    )
    rows = [r for r in _findings(out) if r["probability"]]
    assert len(rows) == 4 * len(CORPUS_FILES)
    assert all(r["out_of_distribution"] == "yes" for r in rows)
    html = (out / "audit.html").read_text(encoding="utf-8")
    assert 'id="domain-banner"' in html and f"; {OUT_OF_DISTRIBUTION}" in html
    workbook = openpyxl.load_workbook(out / "audit.xlsx")
    summary = workbook["Summary"]
    assert summary.cell(row=2, column=1).value == "WARNING"
    values = {row[0]: row[1] for row in summary.iter_rows(min_row=1, values_only=True)}
    assert str(values["Image check"]).startswith("ran: the localizer's domain guard refused 3 of 3")
    files = [row for row in workbook["Files"].iter_rows(min_row=2, values_only=True)]
    scanned = [str(cell) for row in files for cell in row if IMAGE_CHECK_REASON in str(cell)]
    assert len(scanned) == len(CORPUS_FILES)
    cells = [
        str(c) for r in workbook["Vertebrae"].iter_rows(min_row=2, values_only=True) for c in r
    ]
    assert sum(f"; {OUT_OF_DISTRIBUTION}" in c for c in cells) == len(rows)


def _decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files the scan's loader decodes (it runs in this process with ``workers=0``); any
    separate pass of the image check over the archive fails the test."""
    decoded: list[Path] = []
    read = scan_dataset.read_radiograph

    def counting(path: Path) -> Any:
        decoded.append(Path(path))
        return read(path)

    def no_pass(*args: Any) -> Iterator[Any]:
        raise AssertionError("the image check decoded images in a pass of its own")

    monkeypatch.setattr(scan_dataset, "read_radiograph", counting)
    monkeypatch.setattr(localizer_archive, "check_images", no_pass)
    return decoded


def _config(synthetic: Path, out: Path, **kw: Any) -> ScanConfig:
    options: dict[str, Any] = {
        "archive": synthetic / "archive",
        "out": out,
        "boxes": synthetic / "boxes.csv",
        "threshold": 0.5,
        "device": "cpu",
        "workers": 0,
        "heatmaps": HeatmapMode.POSITIVE,
        "pseudonym_salt": "fixed",
    }
    options.update(kw)
    return ScanConfig(**options)


def _journal_distances(run: Path) -> dict[str, float]:
    with sqlite3.connect(run / JOURNAL_NAME) as db:
        return {str(i): float(d) for i, d in db.execute("SELECT image, distance FROM image_check")}


def test_synthetic_views_pass_and_the_findings_match_a_scan_without_the_check(
    synthetic: Path, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = _decodes(monkeypatch)
    checked = run_scan(_config(synthetic, tmp_path / "on", model=bundle, image_check=True))
    assert len(decoded) == len(set(decoded)) == 3  # each image decoded once, by the loader
    plain = run_scan(_config(synthetic, tmp_path / "off", model=bundle, image_check=False))
    assert checked.domain is not None and plain.domain is not None
    assert checked.domain.images == checked.n_images == 3 and checked.domain.images_out == 0
    assert plain.domain.images == 0 and not (tmp_path / "off" / IMAGE_CHECK).exists()
    verdicts = _verdicts(tmp_path / "on")
    assert len(verdicts) == 3 and all(v["out_of_distribution"] == "" for v in verdicts.values())
    # the file is written from the journal, which holds every verdict
    stored = _journal_distances(tmp_path / "on")
    assert sorted(f"{d:.4f}" for d in stored.values()) == sorted(
        v["distance"] for v in verdicts.values()
    )
    assert checked.timings["image_check_s"] > 0 and "image_check_s" not in plain.timings
    on = (tmp_path / "on" / "findings.csv").read_bytes()
    off = (tmp_path / "off" / "findings.csv").read_bytes()
    assert on == off  # the same crops, and nothing out of distribution


def test_the_image_check_gives_the_localizer_s_own_distances(
    synthetic: Path, bundle: Path, tmp_path: Path
) -> None:
    # the loader's canvas is the localizer's: the distances are those of check_images, which
    # test_guard.py ties to the localizing pass
    from auditor.localizer.infer import load_localizer

    run_scan(_config(synthetic, tmp_path / "run", model=bundle, heatmaps=HeatmapMode.NONE))
    localizer = load_localizer()
    images = sorted((synthetic / "archive").rglob("*.dcm"))
    alone = {
        path.relative_to(synthetic / "archive").as_posix(): verdict.distance
        for path, verdict in zip(
            images, localizer_archive.check_images(localizer, images), strict=True
        )
    }
    found = _journal_distances(tmp_path / "run")
    assert set(found) <= set(alone) and len(found) == 3
    assert found == pytest.approx({image: alone[image] for image in found}, rel=1e-5)


def test_a_killed_scan_keeps_the_verdicts_it_journaled_and_resume_measures_only_the_rest(
    synthetic: Path, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    config = _config(synthetic, out, model=bundle, batch_size=1, heatmaps=HeatmapMode.NONE)
    predict = Classifier.predict
    calls: list[int] = []

    def dies_on_the_second_batch(self: Classifier, *args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the scan stops here, as when killed
        return predict(self, *args, **kw)

    monkeypatch.setattr(Classifier, "predict", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_scan(config)
    kept = _journal_distances(out)
    assert len(kept) == 1  # the first batch's image, committed with its results
    monkeypatch.setattr(Classifier, "predict", predict)
    decoded = _decodes(monkeypatch)
    resumed = run_scan(replace(config, resume=True))
    assert len(decoded) == 2 and not {
        d.relative_to(config.archive).as_posix() for d in decoded
    } & set(kept)
    assert resumed.domain is not None and resumed.domain.images == 3
    assert _journal_distances(out).items() >= kept.items()
    assert len(_verdicts(out)) == 3


def test_resume_reads_the_verdicts_from_the_journal_and_no_image_check_turns_it_off(
    synthetic: Path, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    config = _config(synthetic, out, model=bundle, heatmaps=HeatmapMode.NONE)
    first = run_scan(config)
    assert first.domain is not None and first.domain.images == 3
    # the resumed scan decodes nothing: it reads the verdicts from the journal, here with one
    # image's distance made foreign, which it then refuses
    foreign = sorted(_journal_distances(out))[0]
    with sqlite3.connect(out / JOURNAL_NAME) as db:
        db.execute("UPDATE image_check SET distance = 9.0 WHERE image = ?", (foreign,))
    decoded = _decodes(monkeypatch)
    resumed = run_scan(replace(config, resume=True))
    assert decoded == []
    assert resumed.domain is not None
    assert (resumed.domain.images, resumed.domain.images_out) == (3, 1)
    rows = [r for r in _findings(out) if r["probability"]]
    marked = {r["image"] for r in rows if r["out_of_distribution"] == "yes"}
    assert marked == {foreign}
    assert _verdicts(out)[foreign]["out_of_distribution"] == "yes"
    # --no-image-check: no verdict, nothing marked, the summary says it is off
    off = run_scan(replace(config, out=tmp_path / "off", image_check=False))
    assert off.domain is not None and off.domain.images == 0
    assert _journal_distances(tmp_path / "off") == {}
    summary = openpyxl.load_workbook(off.reports["xlsx"])["Summary"]
    values = {row[0]: row[1] for row in summary.iter_rows(min_row=1, values_only=True)}
    assert str(values["Image check"]).startswith("off")


def test_images_journaled_without_the_check_are_measured_when_it_resumes_with_it(
    synthetic: Path, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    config = _config(synthetic, out, model=bundle, heatmaps=HeatmapMode.NONE)
    run_scan(replace(config, image_check=False))
    measured: list[Path] = []
    check_images = localizer_archive.check_images

    def counting(localizer: Any, paths: Any, *args: Any) -> Iterator[Any]:
        measured.extend(paths)
        return check_images(localizer, paths, *args)

    monkeypatch.setattr(localizer_archive, "check_images", counting)
    resumed = run_scan(replace(config, resume=True))
    assert len(measured) == 3 and resumed.domain is not None and resumed.domain.images == 3
    assert len(_journal_distances(out)) == 3 and len(_verdicts(out)) == 3
    summary = openpyxl.load_workbook(resumed.reports["xlsx"])["Summary"]
    values = {row[0]: row[1] for row in summary.iter_rows(min_row=1, values_only=True)}
    assert "0 measured beside this session's classification, 3 decoded again" in str(
        values["Image check"]
    )


@pytest.mark.parametrize("model_in_workers", [False, True])
def test_canvases_made_in_worker_processes_give_the_same_verdicts(
    synthetic: Path, bundle: Path, tmp_path: Path, model_in_workers: bool
) -> None:
    # the loader's workers (and, with --model-in-workers, the workers that classify) return
    # each image's canvas with its crops; this process measures them (one image per batch: a
    # single batch would be cut in this process)
    config = _config(
        synthetic, tmp_path / "here", model=bundle, heatmaps=HeatmapMode.NONE, batch_size=1
    )
    run_scan(config)
    spread = replace(config, out=tmp_path / "workers", workers=1, model_in_workers=model_in_workers)
    result = run_scan(spread)
    assert result.domain is not None and result.domain.images == 3
    here, there = tmp_path / "here", tmp_path / "workers"
    assert (there / IMAGE_CHECK).read_bytes() == (here / IMAGE_CHECK).read_bytes()
    assert (there / "findings.csv").read_bytes() == (here / "findings.csv").read_bytes()
