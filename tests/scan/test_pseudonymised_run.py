"""With --pseudonymise, no file of the run folder holds an identifier the reports do not: the
journal and thumbnails name images by keyed reference, and the workbench still finds them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from auditor.review.run import load_run
from auditor.scan.config import HeatmapMode, ScanConfig, ScanResult
from auditor.scan.journal import IMAGE_KEYS, JOURNAL_NAME
from auditor.scan.pipeline import run_scan
from tests.helpers.scan_world import make_scan_world


def _scan(
    root: Path, bundle: Path, out: Path, *, pseudonymise: bool, resume: bool = False
) -> ScanResult:
    if not (root / "archive").exists():
        make_scan_world(root, n_studies=3)
    return run_scan(
        ScanConfig(
            archive=root / "archive",
            out=out,
            boxes=root / "boxes.csv",
            reads=root / "reads.csv",
            model=bundle,
            threshold=0.0,  # an untrained model: every vertebra positive, every study flagged
            device="cpu",
            batch_size=8,
            workers=0,
            heatmaps=HeatmapMode.ALL,
            pseudonymise=pseudonymise,
            resume=resume,
        )
    )


def test_no_file_of_a_pseudonymised_run_holds_an_identifier(bundle: Path, tmp_path: Path) -> None:
    world = tmp_path / "world"
    result = _scan(world, bundle, tmp_path / "run", pseudonymise=True)
    # patient IDs (also the archive's folder names), names, accession numbers, study UIDs; study 0
    # carries hostile headers instead (its folder name is then no identifier of it)
    secrets = ['=HYPERLINK("http://evil.example","click")']
    for i in (1, 2):
        secrets += [f"FAKE-{i:03d}", f"Patient{i}", f"ACC{i:04d}", f"1.2.826.0.1.3680043.99.{i}.1"]
    files = [p for p in result.run_dir.rglob("*") if p.is_file()]
    assert len(files) > 10  # journal, reports, cases.json, thumbnails
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret} in {path.relative_to(result.run_dir)}"
    with sqlite3.connect(result.run_dir / JOURNAL_NAME) as db:
        assert dict(db.execute("SELECT key, value FROM meta").fetchall())[IMAGE_KEYS] == "ref"
    # the workbench still resolves every image of the run to its file in the archive
    run = load_run(result.run_dir)
    for study in run.studies:
        for image in study.images:
            assert run.image_path(image.ref).is_file()
    # a resumed pseudonymised run finds its work done
    again = _scan(world, bundle, tmp_path / "run", pseudonymise=True, resume=True)
    assert again.timings["classified_this_session"] == 0
    assert again.reports["csv"].read_bytes() == result.reports["csv"].read_bytes()


def test_a_plain_run_names_images_by_path(bundle: Path, tmp_path: Path) -> None:
    result = _scan(tmp_path / "world", bundle, tmp_path / "run", pseudonymise=False)
    with sqlite3.connect(result.run_dir / JOURNAL_NAME) as db:
        images = [row[0] for row in db.execute("SELECT image FROM images")]
    assert images and all(image.startswith("FAKE-") for image in images)


def test_files_named_by_their_uids_are_pseudonymised(bundle: Path, tmp_path: Path) -> None:
    """Archives often name a series folder by its Series Instance UID and a file by its SOP
    Instance UID: neither may reach a file of a pseudonymised run."""
    import csv

    import pydicom

    world = tmp_path / "world"
    make_scan_world(world, n_studies=3)
    old = "FAKE-001/study/img01.dcm"
    header = pydicom.dcmread(world / "archive" / old, stop_before_pixels=True)
    series, sop = str(header.SeriesInstanceUID), str(header.SOPInstanceUID)
    new = f"FAKE-001/{series}/{sop}.dcm"
    (world / "archive" / new).parent.mkdir(parents=True)
    (world / "archive" / old).rename(world / "archive" / new)
    with (world / "boxes.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    with (world / "boxes.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([[new if c == old else c for c in row] for row in rows])
    result = _scan(world, bundle, tmp_path / "run", pseudonymise=True)
    assert result.n_images == 3  # the renamed image was scanned
    for path in (p for p in result.run_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for secret in (series, sop):
            assert secret.encode() not in data, f"{secret} in {path.relative_to(result.run_dir)}"
