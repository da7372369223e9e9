"""The image check of a scan with a box file (issue 21): the localizer's domain guard asks, of
each whole image, whether it is like the localizer's training images, before its vertebrae are
classified. Every crop of an image it refuses is out of distribution in every report and counts
toward the red banner; synthetic lateral views pass it untouched; a resumed scan reads its
verdicts back; ``--no-image-check`` turns it off; and the crops it cuts from its decode are the
loader's own, so the findings do not change."""

from __future__ import annotations

import csv
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openpyxl
import pytest

import auditor.cli.app as app_module
import auditor.localizer.archive as localizer_archive
from auditor.io.radiograph import read_radiograph
from auditor.records import OUT_OF_DISTRIBUTION
from auditor.scan.assemble import IMAGE_CHECK_REASON
from auditor.scan.config import HeatmapMode
from auditor.scan.locate import IMAGE_CHECK, IMAGE_CHECK_COLUMNS
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


def test_synthetic_views_pass_and_the_findings_match_a_scan_without_the_check(
    synthetic: Path, bundle: Path, tmp_path: Path
) -> None:
    def scan(out: Path, image_check: bool) -> Any:
        return run_scan(
            ScanConfig(
                archive=synthetic / "archive",
                out=out,
                boxes=synthetic / "boxes.csv",
                model=bundle,
                threshold=0.5,
                device="cpu",
                workers=0,
                heatmaps=HeatmapMode.POSITIVE,
                image_check=image_check,
                pseudonym_salt="fixed",
            )
        )

    checked = scan(tmp_path / "on", True)
    plain = scan(tmp_path / "off", False)
    assert checked.domain.images == checked.n_images == 3 and checked.domain.images_out == 0
    assert plain.domain.images == 0 and not (tmp_path / "off" / IMAGE_CHECK).exists()
    assert all(v["out_of_distribution"] == "" for v in _verdicts(tmp_path / "on").values())
    # the check's decode gave the classifier its crops: no image was decoded a second time
    assert checked.timings["precut_images"] == 3 and plain.timings["precut_images"] == 0
    assert not (tmp_path / "on" / "precut").exists()
    on = (tmp_path / "on" / "findings.csv").read_bytes()
    off = (tmp_path / "off" / "findings.csv").read_bytes()
    assert on == off  # the same crops, and nothing out of distribution


def test_resume_reads_the_verdicts_back_and_no_image_check_turns_it_off(
    synthetic: Path,
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    config = ScanConfig(
        archive=synthetic / "archive",
        out=out,
        boxes=synthetic / "boxes.csv",
        model=bundle,
        device="cpu",
        workers=0,
        heatmaps=HeatmapMode.NONE,
    )
    first = run_scan(config)
    assert first.domain is not None and first.domain.images == 3
    # the resumed scan must not decode an image for the check: it reads image_check.csv back,
    # here with one image's distance made foreign, which it then refuses
    decoded: list[Path] = []
    check_images = localizer_archive.check_images

    def counting(localizer: Any, paths: Any, *args: Any) -> Iterator[Any]:
        decoded.extend(paths)
        return check_images(localizer, paths, *args)

    monkeypatch.setattr(localizer_archive, "check_images", counting)
    verdicts = _verdicts(out)
    foreign = sorted(verdicts)[0]
    verdicts[foreign]["distance"] = "9.0"
    with (out / IMAGE_CHECK).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(IMAGE_CHECK_COLUMNS))
        writer.writeheader()
        writer.writerows(verdicts.values())
    resumed = run_scan(replace(config, resume=True))
    assert decoded == []
    assert resumed.domain is not None
    assert (resumed.domain.images, resumed.domain.images_out) == (3, 1)
    rows = [r for r in _findings(out) if r["probability"]]
    marked = {r["image"] for r in rows if r["out_of_distribution"] == "yes"}
    assert marked == {foreign}
    # --no-image-check: no verdict, nothing marked, the summary says it is off
    off = run_scan(replace(config, out=tmp_path / "off", image_check=False))
    assert decoded == [] and off.domain is not None and off.domain.images == 0
    summary = openpyxl.load_workbook(off.reports["xlsx"])["Summary"]
    values = {row[0]: row[1] for row in summary.iter_rows(min_row=1, values_only=True)}
    assert str(values["Image check"]).startswith("off")
