"""``--resume`` of a streamed PACS scan without a box file after a failed retrieval, against a
real Orthanc: the localizer's pass could not retrieve one candidate, classification journaled the
others; with the instance back, ``--resume`` localizes and classifies it (the run's fingerprint
holds the localizer bundle's identity, not the box file the pass completes) to a file scan's
findings."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from auditor.pacs.scan import scan_pacs
from auditor.pacs.source import CACHE_DIR
from auditor.scan.journal import JOURNAL_NAME
from auditor.scan.locate import LOCALIZER_BOXES
from auditor.scan.pipeline import run_scan
from tests.pacs.conftest import PacsWorld, make_pacs_world, start_orthanc, upload
from tests.pacs.test_scan_pacs import _accounting, _config, _findings, _source
from tests.pacs.test_stream import _candidate_sizes, _remove_one_after_the_query

pytestmark = pytest.mark.slow


def test_without_a_box_file_resume_localizes_what_the_pass_could_not_retrieve(
    bundle: Path, tmp_path: Path
) -> None:
    server = start_orthanc(tmp_path / "orthanc")
    try:
        root = make_pacs_world(tmp_path / "world")
        stored, refused = upload(server, root / "archive")
        world = PacsWorld(root, stored, refused)
        removed: list[str] = []
        # an instance deleted between the QIDO-RS query and the localizer's retrieval
        remove_one_after_the_query = _remove_one_after_the_query(server, stored, removed)

        cap = max(_candidate_sizes(world)) * 1.5
        run = tmp_path / "pacs"
        first = scan_pacs(
            _config(world, bundle, run, boxes=None, batch_size=1),
            _source(server, cache_cap_mb=cap / 1e6),
            remove_one_after_the_query,
        )
        assert first.stream is not None and first.stream.not_retrieved == 1
        assert first.scan.n_images == 3  # the three others localized and classified
        with contextlib.closing(sqlite3.connect(run / JOURNAL_NAME)) as db:
            done = [str(image) for (image,) in db.execute("SELECT image FROM images")]
        assert len(done) == 3 and not any(removed[0] in image for image in done)
        boxes_before = (run / LOCALIZER_BOXES).read_bytes()
        assert removed[0] not in boxes_before.decode("utf-8")

        upload(server, root / "archive")  # the instance is back
        again = scan_pacs(
            _config(world, bundle, run, boxes=None, batch_size=1, resume=True),
            _source(server, cache_cap_mb=cap / 1e6),
        )
        assert again.stream is not None and again.stream.not_retrieved == 0
        assert again.scan.timings["classified_this_session"] > 0  # only the missing image
        # the box file changed under the journal: it now holds the image localized this time
        assert (run / LOCALIZER_BOXES).read_bytes() != boxes_before
        assert removed[0] in (run / LOCALIZER_BOXES).read_text(encoding="utf-8")
        disk = run_scan(_config(world, bundle, tmp_path / "disk", boxes=None, batch_size=1))
        assert _findings(run) == _findings(tmp_path / "disk")
        assert again.scan.n_images == disk.n_images == 4
        assert not [r for r in _accounting(run) if "not retrieved" in r["detail"]]
        assert not (run / CACHE_DIR).exists()
    finally:
        server.stop()
