"""``tlaudit localize`` and ``evaluate-localizer`` on a small generated archive (bundled model)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.boxes import read_box_file
from auditor.cli.app import app
from auditor.localizer import load_localizer
from auditor.synth import SynthConfig, write_archive
from tests.helpers.paths import SAMPLE_DATA

# compares numbers between code paths: CI reruns it on AVX2 kernels and with bf16 for auto
pytestmark = pytest.mark.numerics

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_archive(out, studies=3, seed=11, config=SynthConfig(max_side=700, distractor_rate=0.7))
    return out


def test_bundled_localizer_loads_and_describes_itself() -> None:
    loc = load_localizer()
    card = loc.card
    assert card.name == "localizer-v2"
    assert card.reproduce.startswith("tlaudit train-localizer")
    assert "synthetic" in card.limits
    assert card.figures["recall"] > 0


@pytest.mark.slow
def test_localize_writes_a_box_file_scan_can_read(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "boxes.csv"
    result = runner.invoke(app, ["localize", str(world / "archive"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    box_file = read_box_file(out)
    assert box_file.errors == ()
    assert len(box_file.rows) >= 3
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["source"] for r in rows} == {"localizer"}
    assert all(0.0 < float(r["confidence"]) <= 1.0 for r in rows)
    with (tmp_path / "boxes.images.csv").open(newline="") as fh:
        images = list(csv.DictReader(fh))
    # three lateral studies are candidates; distractors are triaged away before the localizer
    assert len(images) == 3
    assert {r["status"] for r in images} <= {"localized", "nothing_found"}
    for image in images:
        levels = [r["level"] for r in rows if r["image"] == image["image"]]
        assert len(levels) == len(set(levels))  # one box per level and image


@pytest.mark.slow
def test_evaluate_localizer_reports_figures(world: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "evaluate-localizer",
            str(world / "archive"),
            "--annotations",
            str(world / "ground_truth.csv"),
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "eval" / "localizer_report.json").read_text())
    assert figures["images"] == 3
    assert figures["truth_bodies"] >= 9
    assert 0.0 <= figures["recall"] <= 1.0
    assert figures["seconds_per_image"] > 0
    with (tmp_path / "eval" / "localizer_images.csv").open(newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 3


@pytest.mark.slow
def test_train_localizer_command_logs_progress_and_writes_a_bundle(tmp_path: Path) -> None:
    out = tmp_path / "loc"
    result = runner.invoke(
        app,
        [
            "train-localizer",
            str(out),
            "--synth",
            "2",
            "--synth-seed",
            "5",
            "--steps",
            "100",
            "--batch-size",
            "2",
            "--working-size",
            "64",
            "--width",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    # not a terminal: plain progress lines instead of a bar that shows only at the end
    assert "preparing training images" in result.output and "step 100, loss" in result.output
    loc = load_localizer(out)
    assert loc.card.working_size == 64 and loc.card.width == 4


def test_bundled_localizer_on_the_bundled_sample(tmp_path: Path) -> None:
    """Guards the shipped weights and thresholds: on the sample it found and named every body
    when released (recall, precision and level accuracy 1.0); allow a little slack."""
    sample = SAMPLE_DATA
    result = runner.invoke(
        app,
        [
            "evaluate-localizer",
            str(sample / "archive"),
            "--annotations",
            str(sample / "ground_truth.csv"),
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "eval" / "localizer_report.json").read_text())
    assert figures["images"] == 24 and figures["truth_bodies"] == 131
    assert figures["recall"] >= 0.97 and figures["precision"] >= 0.97
    assert figures["recall_fractured"] >= 0.95
    assert figures["level_accuracy"] >= 0.95


def test_decoding_in_worker_processes_gives_the_same_boxes(world: Path, tmp_path: Path) -> None:
    """Workers decode ahead of the localizer: same box file, same outcomes, and a candidate
    whose compressed pixel data is broken is an ``unreadable`` row in both ways."""
    from auditor.localizer.archive import localize_archive

    archive = tmp_path / "archive"
    shutil.copytree(world / "archive", archive)
    with (world / "manifest.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "lateral_tl"]
    (j2k,) = [r["file"] for r in rows if r["transfer_syntax"] == "1.2.840.10008.1.2.4.90"]
    broken = archive / j2k
    data = bytearray(broken.read_bytes())
    start = data.index(b"\xff\x4f\xff\x51")  # the JPEG 2000 codestream: blank its headers
    data[start : start + 400] = bytes(400)
    broken.write_bytes(bytes(data))  # same length, header intact, pixel data undecodable
    loc = load_localizer()
    outputs = {}
    for workers in (0, 2):
        out = tmp_path / f"boxes{workers}.csv"
        summary = localize_archive(archive, out, localizer=loc, workers=workers)
        assert summary.candidates == 3 and summary.unreadable == 1
        outputs[workers] = (out.read_bytes(), out.with_name(out.stem + ".images.csv").read_text())
    assert outputs[0][0] == outputs[2][0]
    assert outputs[0][1] == outputs[2][1]
    assert "pixel data cannot be decoded" in outputs[2][1]
    assert " at 0x" not in outputs[2][1]  # no memory address: the same reason on every run


def test_torch_threads_make_room_for_the_decoders_and_come_back() -> None:
    import os

    import torch

    from auditor.localizer.archive import _cores_for_decoders

    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    with _cores_for_decoders(cores):  # every core decodes: one thread left for the network
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with _cores_for_decoders(0):  # decoding in this process: nothing changes
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before


def test_any_read_failure_is_that_image_s_unreadable_row(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A candidate deleted after the inventory (a ReadError) and one whose read fails in another
    way (an OSError from the storage) each stop their own image only, decoded here or in a
    worker process."""
    import auditor.localizer.archive as localizer_archive
    from auditor.archive.inventory import inventory
    from auditor.vocab import FileStatus

    archive = tmp_path / "archive"
    shutil.copytree(world / "archive", archive)
    records = list(inventory(archive))
    gone, flaky, _ = (r for r in records if r.status is FileStatus.CANDIDATE)
    gone.path.unlink()
    read = localizer_archive.read_radiograph

    def failing_read(path: Path) -> object:
        if path == flaky.path:
            raise OSError("Input/output error")
        return read(path)

    monkeypatch.setattr(localizer_archive, "read_radiograph", failing_read)
    for workers in (0, 1):  # worker processes are forked, so they see the patch
        out = tmp_path / f"boxes{workers}.csv"
        summary = localizer_archive.localize_archive(archive, out, records=records, workers=workers)
        assert summary.candidates == 3 and summary.unreadable == 2 and summary.localized == 1
        with out.with_name(out.stem + ".images.csv").open(newline="") as fh:
            reasons = {r["image"]: r["reason"] for r in csv.DictReader(fh)}
        assert reasons[gone.relpath] == "cannot open file: No such file or directory"
        assert reasons[flaky.relpath] == "cannot read the file (OSError: Input/output error)"


def test_a_formula_like_file_name_is_neutralised_in_the_box_file_and_read_back(
    world: Path, tmp_path: Path
) -> None:
    """A folder named like a spreadsheet formula stays text in localizer_boxes.csv (an
    apostrophe before it), and reading the file back gives the real path, so --resume and
    --boxes still find the image."""
    from auditor.localizer.archive import localize_archive

    archive = tmp_path / "archive"
    shutil.copytree(world / "archive", archive)
    patient = sorted(p for p in archive.iterdir() if p.is_dir())[0]
    hostile = "=SUM(1+1)*cmd"
    patient.rename(archive / hostile)
    out = tmp_path / "boxes.csv"
    summary = localize_archive(archive, out, localizer=load_localizer())
    mine = [box for box in summary.found if box.image.startswith(hostile + "/")]
    assert mine, "the renamed study has lateral images the localizer boxes"
    with out.open(newline="", encoding="utf-8") as handle:
        raw = [row["image"] for row in csv.DictReader(handle)]
    assert not any(image.startswith("=") for image in raw)
    assert sum(image.startswith("'" + hostile) for image in raw) == len(mine)
    assert read_box_file(out).rows == summary.found


@pytest.mark.parametrize(
    ("name", "exists", "options", "match"),
    [
        ("boxes.json", False, [], "must end in .csv"),  # scan --boxes would read it as COCO
        ("boxes.txt", False, [], "must end in .csv"),
        ("boxes.csv", True, [], "already exists .* pass --overwrite"),
        ("boxes.images.csv", True, [], "already exists"),  # only its outcome file is there
    ],
)
def test_localize_refuses_an_out_it_would_spoil(
    tmp_path: Path, name: str, exists: bool, options: list[str], match: str
) -> None:
    from auditor.errors import UsageError

    archive = tmp_path / "archive"
    archive.mkdir()
    out = tmp_path / name
    if exists:
        out.write_text("image,level,x_min,y_min,x_max,y_max\na.dcm,L1,1,2,30,40\n")
    target = tmp_path / ("boxes.csv" if name.endswith(".images.csv") else name)
    result = runner.invoke(app, ["localize", str(archive), "--out", str(target), *options])
    assert isinstance(result.exception, UsageError), result.output
    assert re.search(match, str(result.exception))
    if exists:  # a box file corrected by hand is left as it was
        assert out.read_text().endswith("a.dcm,L1,1,2,30,40\n")


def test_localize_overwrites_when_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import auditor.localizer.archive as localizer_archive

    archive = tmp_path / "archive"
    archive.mkdir()
    out = tmp_path / "boxes.csv"
    out.write_text("hand-corrected\n")
    called: list[Path] = []

    def fake(archive: Path, out: Path, *args: object, **kwargs: object):
        called.append(out)
        return localizer_archive.LocalizeSummary(out, out, 0, 0, 0, 0, 0, 0)

    monkeypatch.setattr(localizer_archive, "localize_archive", fake)
    result = runner.invoke(app, ["localize", str(archive), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert called == [out]


def test_the_box_files_localize_writes_have_the_run_folder_s_permissions(
    tmp_path: Path,
) -> None:
    """Written like every other file (the user's umask), not owner-only as a mkstemp file is."""
    from auditor.localizer.archive import localize_archive
    from auditor.localizer.infer import LocalizerResult
    from tests.helpers.dicom_files import make_dicom

    class NoBoxes:
        def locate(self, pixels: object, spacing: object) -> LocalizerResult:
            return LocalizerResult((), (), "none", 0.0, "nothing found")

    archive = tmp_path / "archive"
    make_dicom(archive / "p" / "lat.dcm")
    out = tmp_path / "boxes.csv"
    localize_archive(archive, out, localizer=NoBoxes())  # type: ignore[arg-type]
    plain = tmp_path / "plain.csv"
    plain.write_text("x")
    for written in (out, out.with_name("boxes.images.csv")):
        assert written.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_the_summary_counts_the_images_out_of_the_localizer_s_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import auditor.localizer.archive as localizer_archive

    archive = tmp_path / "archive"
    archive.mkdir()

    def fake(archive: Path, out: Path, *args: object, **kwargs: object):
        # 5 candidates: 2 localized, 3 without boxes of which the guard refused 2
        return localizer_archive.LocalizeSummary(out, out, 6, 5, 2, 3, 0, 14, out_of_distribution=2)

    monkeypatch.setattr(localizer_archive, "localize_archive", fake)
    result = runner.invoke(app, ["localize", str(archive), "--out", str(tmp_path / "b.csv")])
    assert result.exit_code == 0, result.output
    rows = {
        cells[1].strip(): cells[2].strip()
        for line in result.output.splitlines()
        if len(cells := line.split("│")) == 4
    }
    assert rows["nothing usable found"] == "3"
    assert rows["of them out of the localizer's distribution"] == "2"
