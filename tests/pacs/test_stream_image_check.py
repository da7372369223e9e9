"""The image check on a streamed PACS scan (issue 23): the files arrive while the scan
classifies, and the check rides on the loader's decode of each one, so every retrieved image gets
the verdict a scan of the same files from disk gives, with no file kept for it."""

from __future__ import annotations

import csv
from pathlib import Path

import openpyxl
import pytest

from auditor.pacs.scan import scan_pacs
from auditor.pacs.source import CACHE_DIR
from auditor.scan.image_check import IMAGE_CHECK
from auditor.scan.pipeline import run_scan
from tests.pacs.conftest import PacsWorld
from tests.pacs.orthanc import Orthanc
from tests.pacs.test_scan_pacs import _config, _source
from tests.pacs.test_stream import _candidate_sizes

pytestmark = pytest.mark.slow


def _verdicts(run: Path) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (distance, out_of_distribution); both archives name each file by it."""
    with (run / IMAGE_CHECK).open(newline="", encoding="utf-8") as handle:
        return {
            Path(row["image"]).stem: (row["distance"], row["out_of_distribution"])
            for row in csv.DictReader(handle)
        }


def test_a_streamed_scan_checks_every_image_as_a_scan_from_disk_does(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    server, world = pacs_world
    cap = max(_candidate_sizes(world)) * 1.5  # one image in the cache at a time
    disk = run_scan(_config(world, bundle, tmp_path / "disk", batch_size=1, image_check=True))
    pacs = scan_pacs(
        _config(world, bundle, tmp_path / "pacs", batch_size=1, image_check=True),
        _source(server, cache_cap_mb=cap / 1e6),
    )
    assert pacs.stream is not None and pacs.stream.retrieved == 4
    assert pacs.scan.domain is not None and disk.domain is not None
    assert pacs.scan.domain.images == disk.domain.images == 4
    assert pacs.scan.domain.images_out == disk.domain.images_out
    assert _verdicts(tmp_path / "pacs") == _verdicts(tmp_path / "disk")
    assert len(_verdicts(tmp_path / "pacs")) == 4
    assert not (tmp_path / "pacs" / CACHE_DIR).exists()
    summary = openpyxl.load_workbook(pacs.scan.reports["xlsx"])["Summary"]
    values = {row[0]: row[1] for row in summary.iter_rows(min_row=1, values_only=True)}
    assert str(values["Image check"]).startswith("ran: the localizer's domain guard refused")
    assert "4 measured beside this session's classification" in str(values["Image check"])
