"""A PACS scan that retrieves while it classifies, in a cache smaller than the archive, against a
real Orthanc: every candidate classified with the file scan's findings, the cache never above its
cap (sampled while the scan runs) and empty at the end, a retrieval that fails mid-stream one
counted row that ``--resume`` completes, and the DICOM results made after the cache is gone; with a
box file, and without one (the localizer's pass streams, and its journal spares a resumed scan the
images it has localized)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from auditor.archive.inventory import inventory
from auditor.archive.triage import TriageRules
from auditor.pacs.export import DicomResults, export_run, run_images
from auditor.pacs.scan import query, scan_pacs
from auditor.pacs.source import CACHE_DIR, GIVE_UP_AFTER
from auditor.pacs.stream import HEADERS_DIR, CacheStream
from auditor.reports.thumbnails import RADIOGRAPH_DIR
from auditor.review.app import create_app
from auditor.review.guard import TOKEN_HEADER
from auditor.review.images import radiograph_png
from auditor.review.run import load_run
from auditor.scan import locate
from auditor.scan.config import ScanEvent
from auditor.scan.feed import failed_marker
from auditor.scan.journal import JOURNAL_NAME
from auditor.scan.locate import LOCALIZER_JOURNAL
from auditor.scan.pipeline import run_scan
from auditor.vocab import FileStatus
from tests.pacs.conftest import PacsWorld, make_pacs_world, start_orthanc, upload
from tests.pacs.orthanc import Orthanc, free_port
from tests.pacs.test_scan_pacs import _accounting, _config, _findings, _source

pytestmark = pytest.mark.slow


def _candidate_sizes(world: PacsWorld) -> list[int]:
    """Sizes of the archive's candidates (the files the stream retrieves)."""
    records = inventory(world.root / "archive", TriageRules())
    return [r.size for r in records if r.status is FileStatus.CANDIDATE]


@contextmanager
def _sampled(cache: Path) -> Iterator[list[int]]:
    """The bytes the cache folder holds, sampled every few milliseconds while the block runs."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            total = 0
            for folder, _, names in os.walk(cache):  # a folder removed meanwhile is passed over
                for name in names:
                    with contextlib.suppress(FileNotFoundError):  # removed since the listing
                        total += os.stat(os.path.join(folder, name)).st_size
            samples.append(total)
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def test_an_archive_larger_than_the_cache_is_audited_in_one_run(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    server, world = pacs_world
    sizes = _candidate_sizes(world)
    cap = max(sizes) * 1.5  # one image at a time, and no two of the largest together
    assert sum(sizes) > cap
    disk = run_scan(_config(world, bundle, tmp_path / "disk", batch_size=1))
    with _sampled(tmp_path / "pacs" / CACHE_DIR) as samples:
        pacs = scan_pacs(
            _config(world, bundle, tmp_path / "pacs", batch_size=1),
            _source(server, cache_cap_mb=cap / 1e6),
        )
    assert samples and max(samples) <= cap
    assert pacs.stream is not None and 0 < pacs.stream.peak_bytes <= cap
    assert pacs.stream.retrieved == disk.n_candidates == 4 and pacs.stream.not_retrieved == 0
    assert _findings(tmp_path / "pacs") == _findings(tmp_path / "disk")
    assert pacs.scan.n_images == disk.n_images
    # every instance the query returned is one row, each SOP Instance UID once
    rows = _accounting(tmp_path / "pacs")
    uids = [r["sop_instance_uid"] for r in rows]
    assert len(uids) == len(set(uids)) == len(pacs.gathered.records)
    assert sum(r["status"] == "candidate" for r in rows) == 4
    assert all(int(r["size_bytes"]) > 0 for r in rows if r["status"] == "candidate")
    assert not (tmp_path / "pacs" / CACHE_DIR).exists()
    # each image's header, without its pixels, stays for the DICOM results
    headers = list((tmp_path / "pacs" / HEADERS_DIR).rglob("*.dcm"))
    assert len(headers) == 4
    assert all("PixelData" not in pydicom.dcmread(h) for h in headers)


def _remove_one_after_the_query(
    server: Orthanc, stored: dict[str, str], removed: list[str]
) -> Callable[[ScanEvent], None]:
    """A scan's progress callback that deletes one radiograph from Orthanc once the query has
    listed it, so its retrieval fails; its SOP Instance UID goes into ``removed``."""
    session = requests.Session()
    session.auth = server.auth

    def remove(event: ScanEvent) -> None:
        if event.message.startswith("PACS:") and not removed:
            uid = next(u for u, m in stored.items() if m in ("CR", "DX"))
            (found,) = session.post(f"{server.url}/tools/lookup", data=uid).json()
            session.delete(f"{server.url}/instances/{found['ID']}").raise_for_status()
            removed.append(uid)

    return remove


def test_a_retrieval_that_fails_mid_stream_is_a_row_and_resume_completes_it(
    bundle: Path, tmp_path: Path
) -> None:
    server = start_orthanc(tmp_path / "orthanc")
    try:
        root = make_pacs_world(tmp_path / "world")
        stored, refused = upload(server, root / "archive")
        world = PacsWorld(root, stored, refused)
        removed: list[str] = []
        # an instance deleted between the QIDO-RS query and its WADO-RS retrieval
        remove_one_after_the_query = _remove_one_after_the_query(server, stored, removed)

        cap = max(_candidate_sizes(world)) * 1.5
        run = tmp_path / "pacs"
        first = scan_pacs(
            _config(world, bundle, run, batch_size=1),
            _source(server, cache_cap_mb=cap / 1e6),
            remove_one_after_the_query,
        )
        assert first.stream is not None
        assert (first.stream.retrieved, first.stream.not_retrieved) == (3, 1)
        (row,) = [r for r in _accounting(run) if r["sop_instance_uid"] == removed[0]]
        assert row["status"] == "unreadable" and "rerun with --resume" in row["detail"]
        assert first.scan.n_images == 3  # the three others classified
        with contextlib.closing(sqlite3.connect(run / JOURNAL_NAME)) as db:
            done = [str(image) for (image,) in db.execute("SELECT image FROM images")]
        assert len(done) == 3 and not any(removed[0] in image for image in done)
        assert not (run / CACHE_DIR).exists()

        upload(server, root / "archive")  # the instance is back
        again = scan_pacs(
            _config(world, bundle, run, batch_size=1, resume=True),
            _source(server, cache_cap_mb=cap / 1e6),
        )
        assert again.stream is not None
        assert (again.stream.retrieved, again.stream.not_retrieved) == (1, 0)  # only the missing
        disk = run_scan(_config(world, bundle, tmp_path / "disk", batch_size=1))
        assert _findings(run) == _findings(tmp_path / "disk")
        assert again.scan.n_images == disk.n_images == 4
        assert not [r for r in _accounting(run) if "not retrieved" in r["detail"]]
    finally:
        server.stop()


def test_dicom_results_are_made_after_the_cache_is_cleaned(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    server, world = pacs_world
    cap = max(_candidate_sizes(world)) * 1.5
    out = tmp_path / "dicom"
    pacs = scan_pacs(
        _config(world, bundle, tmp_path / "run", batch_size=1, heatmaps="all"),
        _source(server, cache_cap_mb=cap / 1e6),
        results=DicomResults(out),
    )
    assert pacs.stream is not None and pacs.stream.peak_bytes <= cap
    reports = sorted(out.glob("*.sr.dcm"))
    states = sorted(out.glob("*.pr.dcm"))
    captures = sorted(out.glob("*.sc.dcm"))
    studies = {
        pydicom.dcmread(h).StudyInstanceUID for h in (tmp_path / "run" / HEADERS_DIR).rglob("*.dcm")
    }
    assert len(reports) == len(studies) == 4
    assert len(states) == len(captures) == pacs.scan.n_images == 4  # every image, pixels again
    for capture in captures:
        dataset = pydicom.dcmread(capture)
        assert dataset.Rows > 0 and dataset.SamplesPerPixel == 3
    sources = {pydicom.dcmread(s).ReferencedSeriesSequence[0].ReferencedImageSequence[0]
               .ReferencedSOPInstanceUID for s in states}  # fmt: skip
    assert len(sources) == 4
    assert not (tmp_path / "run" / CACHE_DIR).exists()


def test_without_a_box_file_the_localizer_pass_streams_through_a_cache_smaller_than_the_archive(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    # each file goes once the localizer has read it and the classifier's crops are stored;
    # classification reads the crops and never retrieves the file again
    server, world = pacs_world
    sizes = _candidate_sizes(world)
    cap = max(sizes) * 1.5
    assert sum(sizes) > cap
    disk = run_scan(_config(world, bundle, tmp_path / "disk", boxes=None, batch_size=1))
    with _sampled(tmp_path / "pacs" / CACHE_DIR) as samples:
        pacs = scan_pacs(
            _config(world, bundle, tmp_path / "pacs", boxes=None, batch_size=1),
            _source(server, cache_cap_mb=cap / 1e6),
        )
    assert samples and max(samples) <= cap
    assert pacs.stream is not None and 0 < pacs.stream.peak_bytes <= cap
    assert (pacs.stream.retrieved, pacs.stream.not_retrieved) == (4, 0)  # each file once
    assert disk.n_vertebrae > 0
    assert _findings(tmp_path / "pacs") == _findings(tmp_path / "disk")
    assert pacs.scan.n_images == disk.n_images
    rows = _accounting(tmp_path / "pacs")
    assert sum(r["status"] == "candidate" for r in rows) == 4
    assert not (tmp_path / "pacs" / CACHE_DIR).exists()
    assert len(list((tmp_path / "pacs" / HEADERS_DIR).rglob("*.dcm"))) == 4
    # the report thumbnails come from the stored previews, not from the files
    thumbnails = [sorted((tmp_path / r / RADIOGRAPH_DIR).glob("*")) for r in ("pacs", "disk")]
    assert len(thumbnails[0]) == len(thumbnails[1]) == disk.n_images


def test_without_a_box_file_resume_retrieves_only_what_the_localizer_journal_lacks(
    pacs_world: tuple[Orthanc, PacsWorld],
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, world = pacs_world
    cap = max(_candidate_sizes(world)) * 1.5
    run = tmp_path / "pacs"
    real_write = locate.write_precut
    calls: list[Path] = []

    def dies_at_the_third(target: Path, *args: Any) -> int:
        calls.append(target)
        if len(calls) == 3:
            raise RuntimeError("the scan dies while localizing")
        return real_write(target, *args)

    monkeypatch.setattr(locate, "write_precut", dies_at_the_third)
    with pytest.raises(RuntimeError, match="dies while localizing"):
        scan_pacs(
            _config(world, bundle, run, boxes=None, batch_size=1),
            _source(server, cache_cap_mb=cap / 1e6),
        )
    monkeypatch.setattr(locate, "write_precut", real_write)
    journal = (run / LOCALIZER_JOURNAL).read_text(encoding="utf-8").splitlines()
    assert len(journal) == 3  # the third's result was journaled before its crops failed

    asked: list[Path] = []
    real_localize = CacheStream.localize

    def localize(self: CacheStream, paths: Sequence[Path]) -> None:
        asked.extend(paths)
        real_localize(self, paths)

    monkeypatch.setattr(CacheStream, "localize", localize)
    again = scan_pacs(
        _config(world, bundle, run, boxes=None, batch_size=1, resume=True),
        _source(server, cache_cap_mb=cap / 1e6),
    )
    assert len(asked) == 1  # only the image the localizer's journal lacks
    assert again.stream is not None and again.stream.retrieved <= 1  # it may be in the cache
    assert again.stream.not_retrieved == 0
    run_scan(_config(world, bundle, tmp_path / "disk", boxes=None, batch_size=1))
    assert _findings(run) == _findings(tmp_path / "disk")
    assert again.scan.n_images == 4
    assert not (run / CACHE_DIR).exists()


def test_a_pacs_that_stops_answering_leaves_rows_and_resume_completes_the_audit(
    bundle: Path, tmp_path: Path
) -> None:
    server = start_orthanc(tmp_path / "orthanc")
    try:
        root = make_pacs_world(tmp_path / "world")
        stored, refused = upload(server, root / "archive")
        world = PacsWorld(root, stored, refused)

        def stop_after_the_query(event: ScanEvent) -> None:
            if event.message.startswith("PACS:"):
                server.stop()  # the PACS dies before the scan has retrieved anything

        cap = max(_candidate_sizes(world)) * 1.5
        run = tmp_path / "pacs"
        first = scan_pacs(
            _config(world, bundle, run, batch_size=1),
            _source(server, cache_cap_mb=cap / 1e6, connections=1),
            stop_after_the_query,
        )
        # the scan finished without waiting for what never came: each candidate one row
        assert first.stream is not None
        assert (first.stream.retrieved, first.stream.not_retrieved) == (0, 4)
        assert first.scan.n_images == 0
        rows = _accounting(run)
        lost = [r for r in rows if "not retrieved" in r["detail"]]
        assert len(lost) == 4 and all("rerun with --resume" in r["detail"] for r in lost)
        assert sum("stopped answering" in r["detail"] for r in lost) == 4 - GIVE_UP_AFTER
        assert len({r["sop_instance_uid"] for r in rows}) == len(rows)

        server.start()
        again = scan_pacs(
            _config(world, bundle, run, batch_size=1, resume=True),
            _source(server, cache_cap_mb=cap / 1e6),
        )
        assert again.stream is not None
        assert (again.stream.retrieved, again.stream.not_retrieved) == (4, 0)
        run_scan(_config(world, bundle, tmp_path / "disk", batch_size=1))
        assert _findings(run) == _findings(tmp_path / "disk")
        assert not [r for r in _accounting(run) if "not retrieved" in r["detail"]]
    finally:
        server.stop()


def test_a_pseudonymised_scan_keeps_no_headers(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    server, world = pacs_world
    pacs = scan_pacs(_config(world, bundle, tmp_path / "run", pseudonymise=True), _source(server))
    assert pacs.stream is not None and pacs.stream.retrieved == 4
    assert not (tmp_path / "run" / HEADERS_DIR).exists()
    assert not (tmp_path / "run" / CACHE_DIR).exists()


def test_files_an_interrupted_run_left_are_used_and_only_the_missing_retrieved(
    pacs_world: tuple[Orthanc, PacsWorld], tmp_path: Path
) -> None:
    server, _world = pacs_world
    source = _source(server)
    cache, headers = tmp_path / CACHE_DIR, tmp_path / HEADERS_DIR
    records = query(source, TriageRules(), cache)
    order = [[r.path] for r in records if r.status is FileStatus.CANDIDATE]
    first = CacheStream(source, TriageRules(), records, cache, headers, keep=True)
    first.start(order)
    assert all(row.status is FileStatus.CANDIDATE for row in first.finish().values())
    # as a killed run leaves it: one file missing, one half written, one marked failed
    order[0][0].unlink()
    order[1][0].with_name(order[1][0].name + ".part").write_bytes(b"half")
    failed_marker(order[2][0]).write_text("earlier failure", encoding="utf-8")
    again = CacheStream(source, TriageRules(), records, cache, headers)
    again.start(order)
    rows = again.finish()
    stats = again.stats()
    assert (stats.retrieved, stats.reused, stats.not_retrieved) == (1, 3, 0)
    assert "earlier run" not in rows[order[0][0]].detail
    assert all("earlier run" in rows[p].detail for (p,) in order[1:])
    assert not list(cache.rglob("*.part")) and not list(cache.rglob("*.failed"))


def test_export_dicom_after_a_streamed_scan_retrieves_only_the_captures_pixels_again(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    # the cache is gone: the SR, presentation states and key objects come from the kept
    # headers, the heatmap captures' source images from the PACS once more
    server, world = pacs_world
    run = tmp_path / "run"
    scan_pacs(_config(world, bundle, run, heatmaps="all"), _source(server))
    assert not (run / CACHE_DIR).exists()
    pacs = _source(server).connection
    said: list[str] = []
    export_run(run, DicomResults(tmp_path / "dicom"), bundle, None, _said(said), pacs)
    assert len(list((tmp_path / "dicom").glob("*.sr.dcm"))) == 4
    assert len(list((tmp_path / "dicom").glob("*.pr.dcm"))) == 4
    captures = sorted((tmp_path / "dicom").glob("*.sc.dcm"))
    assert len(captures) == 4 and all(pydicom.dcmread(c).Rows > 0 for c in captures)
    assert not any("skipped" in line for line in said)

    # the PACS unreachable: the captures are lines saying so, the other objects are written
    gone = dataclasses.replace(pacs, url=f"http://127.0.0.1:{free_port()}/dicom-web")
    said.clear()
    export_run(run, DicomResults(tmp_path / "down"), bundle, None, _said(said), gone)
    assert len(list((tmp_path / "down").glob("*.sr.dcm"))) == 4
    assert not list((tmp_path / "down").glob("*.sc.dcm"))
    skipped = [line for line in said if "no heatmap capture" in line]
    assert len(skipped) == 4 and all("is reachable" in line for line in skipped)
    # no PACS given: the same, naming the option
    said.clear()
    export_run(run, DicomResults(tmp_path / "none"), bundle, None, _said(said))
    assert len(list((tmp_path / "none").glob("*.sr.dcm"))) == 4
    assert sum("give export-dicom --pacs" in line for line in said) == 4


def _said(lines: list[str]) -> Callable[[ScanEvent], None]:
    return lambda event: lines.append(event.message)


def test_the_workbench_retrieves_a_streamed_runs_images_from_the_pacs(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    server, world = pacs_world
    run = tmp_path / "run"
    scan_pacs(_config(world, bundle, run, boxes=None), _source(server))
    assert not (run / CACHE_DIR).exists()
    opened = load_run(run)
    ref = opened.studies[0].images[0].ref
    sop = Path(opened.source(ref)).stem
    (original,) = [
        r.path for r in inventory(world.root / "archive", TriageRules())
        if r.meta is not None and r.meta.sop_uid == sop
    ]  # fmt: skip
    token = "test-token-0123456789-abcdefghij"
    fetch = run_images(run, _source(server).connection)
    with TestClient(create_app(run, "alice", token, fetch=fetch), "http://127.0.0.1") as client:
        shown = client.get("/image", params={"ref": ref}, headers={TOKEN_HEADER: token})
    assert shown.status_code == 200 and shown.content == radiograph_png(original)
    # without a PACS to retrieve from, the request says how to get the image
    with TestClient(create_app(run, "bob", token), "http://127.0.0.1") as client:
        refused = client.get("/image", params={"ref": ref}, headers={TOKEN_HEADER: token})
    assert refused.status_code == 422 and "--pacs" in refused.json()["error"]
