"""A run folder nothing can damage: refused runs do no work, one scan at a time, no links out,
file-system failures are one-line errors, workers die with their parent, huge images are rows."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pydicom
import pytest

from auditor.errors import UnsupportedImageError, UsageError
from auditor.io.dicom import read_dicom
from auditor.io.limits import MAX_PIXELS_ENV, too_large
from auditor.model.bundle import create_untrained_bundle
from auditor.scan import locate
from auditor.scan.config import ScanConfig
from auditor.scan.pipeline import run_scan
from auditor.scan.runfolder import LOCK_NAME, RunFolderError, claim_run_folder
from tests.helpers.dicom_files import make_dicom
from tests.helpers.scan_world import ScanWorld, make_scan_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ScanWorld:
    return make_scan_world(tmp_path_factory.mktemp("world"), n_studies=2)


def _config(world: ScanWorld, bundle: Path, out: Path, **kw: object) -> ScanConfig:
    options: dict[str, object] = {
        "archive": world.archive,
        "out": out,
        "boxes": world.boxes,
        "reads": world.reads,
        "model": bundle,
        "threshold": 0.5,
        "device": "cpu",
        "batch_size": 8,
        "workers": 0,
    }
    options.update(kw)
    return ScanConfig(**options)  # type: ignore[arg-type]


def test_a_second_scan_into_a_held_folder_is_refused(
    world: ScanWorld, bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    with claim_run_folder(out):  # as a running scan holds it
        with pytest.raises(RunFolderError, match=rf"another tlaudit scan \(process {os.getpid()}"):
            run_scan(_config(world, bundle, out, resume=True))
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing was written
    # released at the end: the same scan now runs
    assert run_scan(_config(world, bundle, out, resume=True)).n_images == 2


def test_a_resume_with_other_inputs_is_refused_before_the_localizer_runs(
    world: ScanWorld, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    run_scan(_config(world, bundle, out))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != LOCK_NAME}

    def no_localizer(*args: object, **kwargs: object) -> None:
        raise AssertionError("the localizer ran for a refused resume")

    monkeypatch.setattr("auditor.localizer.localize_archive", no_localizer)
    assert locate.LOCALIZER_BOXES not in before
    changed = _config(world, bundle, out, boxes=None, threshold=0.7, resume=True)
    # a box file's run resumed with the localizer: the boxes' source differs too
    differ = r"inputs differ from this command's \(boxes_sha256, localizer_sha256, threshold\)"
    with pytest.raises(UsageError, match=differ):
        run_scan(changed)
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != LOCK_NAME}
    assert after == before  # no localizer_boxes.csv, no precut/, no report rewritten


@pytest.mark.parametrize("entry", ["thumbnails", "precut", "audit.html"])
def test_a_symbolic_link_where_the_scan_writes_is_refused(
    world: ScanWorld, bundle: Path, tmp_path: Path, entry: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "run"
    out.mkdir()
    (out / entry).symlink_to(outside, target_is_directory=True)
    with pytest.raises(UsageError, match=rf"{entry} is a symbolic link"):
        run_scan(_config(world, bundle, out))
    assert list(outside.iterdir()) == []


def test_an_out_under_a_regular_file_is_a_usage_error(
    world: ScanWorld, bundle: Path, tmp_path: Path
) -> None:
    regular = tmp_path / "notes.txt"
    regular.write_text("x")
    with pytest.raises(UsageError, match="which is not a folder"):
        run_scan(_config(world, bundle, regular / "run"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused_before_any_work(
    world: ScanWorld, bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(RunFolderError, match="cannot write in the run folder"):
            run_scan(_config(world, bundle, out))
    finally:
        out.chmod(0o700)


def test_a_full_disk_is_refused_before_any_work(tmp_path: Path) -> None:
    # the free space of tmp_path's file system is below this bound on any machine
    with (
        pytest.raises(RunFolderError, match=r"MiB free in the run folder .* at least"),
        claim_run_folder(tmp_path / "run", min_free_bytes=2**62),
    ):
        pass


def test_a_read_only_file_system_mid_run_is_one_line_with_exit_1(tmp_path: Path) -> None:
    """``main`` turns an OSError the scan meets after its checks into one line and exit 1."""
    script = textwrap.dedent(
        """
        import errno, sys
        import auditor.cli.app as app
        def fail():
            raise OSError(errno.EROFS, "Read-only file system", "/run/journal.sqlite")
        app.app = fail
        app.main()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) <= 2 and "Read-only file system (/run/journal.sqlite)" in done.stderr
    assert "scan --resume goes on" in done.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    """A parent killed with SIGKILL while its DataLoader workers are busy takes them along."""
    pids = tmp_path / "pids"
    script = textwrap.dedent(
        f"""
        import os, time
        from auditor.parallel import map_in_order

        class Slow:
            def __len__(self):
                return 4

            def __getitem__(self, i):
                with open({str(pids)!r}, "a") as f:
                    f.write(f"{{os.getpid()}}\\n")
                time.sleep(60)
                return i

        for _ in map_in_order(Slow(), 4, workers=2):
            pass
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = pids.read_text().split() if pids.exists() else []
        if len(set(found)) >= 2:
            break
        time.sleep(0.2)
    workers = {int(p) for p in pids.read_text().split()}
    assert len(workers) >= 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    alive = set(workers)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _alive(pid)}
        time.sleep(0.1)
    assert not alive, f"workers {sorted(alive)} outlived their parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_a_dicom_declaring_a_huge_image_is_refused_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_dicom(tmp_path / "huge.dcm")
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 40000  # declared only: the pixel data stays 64 x 64
    ds.save_as(path)
    with pytest.raises(UnsupportedImageError, match="exceeds the 400-megapixel limit"):
        read_dicom(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, str(2 * 40000 * 40000))
    assert too_large(40000, 40000) == ""
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    assert "1000" not in too_large(64, 64) and too_large(64, 64).startswith("image of 64 x 64")


class _Deadly:
    """Item 2 kills the process computing it, as the kernel's OOM killer would."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> str:
        if index == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return f"item {index}"

    def lost(self, index: int, reason: str) -> str:
        return f"lost {index}: {reason}"


def test_a_worker_killed_on_one_item_makes_that_item_an_error_and_the_rest_go_on() -> None:
    from auditor.parallel import map_in_order

    got = list(map_in_order(_Deadly(), 5, workers=2))
    assert got[:2] == ["item 0", "item 1"] and got[3:] == ["item 3", "item 4"]
    assert got[2].startswith("lost 2: the worker process decoding it died")


def test_a_non_finite_probability_is_an_error_row_never_a_blank(
    world: ScanWorld, tmp_path: Path
) -> None:
    import torch

    from auditor.model.bundle import load_bundle, save_bundle
    from auditor.model.network import build_network
    from auditor.scan.classify import NON_FINITE

    untrained = create_untrained_bundle(tmp_path / "untrained", input_size=32)
    card = load_bundle(untrained).card
    net = build_network(card.architecture, feature_stride=card.feature_stride)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.fill_(float("nan"))
    nan_bundle = save_bundle(tmp_path / "nan", card, net)
    result = run_scan(_config(world, nan_bundle, tmp_path / "run"))
    assert result.n_vertebrae == 0  # not one blank probability counted as classified
    with (result.run_dir / "findings.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(row["probability"] == "" and row["error"] == NON_FINITE for row in rows)


def test_a_scan_of_an_archive_with_nothing_to_audit_exits_1_with_the_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import auditor.cli.app as app_module

    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "notes.txt").write_text("not an image")
    make_dicom(archive / "chest.dcm", body_part="CHEST", view="PA")
    out = tmp_path / "run"
    monkeypatch.setattr(
        sys, "argv", ["tlaudit", "scan", str(archive), "--out", str(out), "--device", "cpu"]
    )
    with pytest.raises(SystemExit) as info:
        app_module.main()
    assert info.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"no lateral thoracolumbar radiograph to audit in {archive}: 2 files" in err
    assert not (out / "audit.html").exists()  # no empty reports
