"""The localizer's domain guard in a scan (issue 21): an image unlike the localizer's training
images gets no boxes and a counted error row with the reason; synthetic lateral views keep
their boxes; the run's domain check counts the images the guard measured."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import openpyxl

from auditor.localizer.guard import OUT_OF_DISTRIBUTION_REASON
from auditor.scan.config import HeatmapMode
from auditor.scan.pipeline import ScanConfig, run_scan
from tests.helpers import negatives
from tests.helpers.dicom_files import make_dicom


def test_a_foreign_image_gets_the_refusal_row_and_synthetic_views_keep_their_boxes(
    bundle: Path, tmp_path: Path
) -> None:
    from auditor.synth.archive import write_archive
    from auditor.synth.config import SynthConfig

    world = tmp_path / "world"
    config = SynthConfig(max_side=700, distractor_rate=0.0, compressed_share=0.0)
    write_archive(world, studies=2, seed=5, config=config)
    # a lateral TL radiograph by its headers whose pixels are smoothed noise
    noise = (negatives.noise(0) * 4000).astype(np.uint16)
    make_dicom(world / "archive" / "foreign" / "noise.dcm", pixels=noise)
    result = run_scan(
        ScanConfig(
            archive=world / "archive", out=tmp_path / "run", model=bundle, heatmaps=HeatmapMode.NONE
        )
    )
    assert result.n_candidates == 3
    with result.reports["csv"].open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len({row["image"] for row in rows}) == 2  # the two synthetic views, with their boxes
    assert all("noise" not in row["image"] for row in rows)
    errors = list(
        openpyxl.load_workbook(result.reports["xlsx"])["Errors"].iter_rows(
            min_row=2, values_only=True
        )
    )
    refused = [e for e in errors if e[3] == OUT_OF_DISTRIBUTION_REASON]
    assert len(refused) == 1 and refused[0][0] == "localizer" and "noise" in str(refused[0][2])
    assert result.domain is not None
    assert (result.domain.images, result.domain.images_out) == (3, 1)
    with (tmp_path / "run" / "localizer_boxes.images.csv").open(newline="") as handle:
        images = {row["image"]: row for row in csv.DictReader(handle)}
    foreign = images["foreign/noise.dcm"]
    assert foreign["status"] == "nothing_found" and foreign["out_of_distribution"] == "yes"
    assert float(foreign["distance"]) > 1.0
    # a resumed scan reads the localizer's outcomes back, its guard's verdicts included
    resumed = run_scan(
        ScanConfig(
            archive=world / "archive",
            out=tmp_path / "run",
            model=bundle,
            heatmaps=HeatmapMode.NONE,
            resume=True,
        )
    )
    assert resumed.domain is not None
    assert (resumed.domain.images, resumed.domain.images_out) == (3, 1)
