"""A hostile archive through the real command line, measured the way issue 22's audit measured main.

The archive mixes the synthetic scan world (one study with hostile headers: a formula patient ID,
script in the name, bidirectional controls), fuzzed copies of its DICOMs (bytes flipped and files
cut short, seeded), the real DICOMs of ``../shared/dicom-corpus`` when present (broken ones
included), a DICOM declaring 40,000 x 40,000 pixels, text and empty files. ``tlaudit scan`` runs
with the bundled localizer and ``--pseudonymise`` as a subprocess, once straight through and once
killed with SIGKILL mid-run and resumed. Checked: every file is accounted for, no traceback, no
live formula in any file written, no identifier of the archive anywhere in the run folder, no
worker process left after the kill, and the resumed findings equal the straight ones. The figures
(files, counts, peak memory) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import csv
import json
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openpyxl
import pydicom
import pytest

from tests.helpers.dicom_files import make_dicom
from tests.helpers.paths import REPO_DIR
from tests.helpers.scan_world import make_scan_world

pytestmark = pytest.mark.slow

FUZZED = 60
IDENTIFYING = ("PatientID", "PatientName", "AccessionNumber", "StudyInstanceUID")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _fuzz(source: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(source)
    if rng.random() < 0.3:  # cut short
        return bytes(data[: int(rng.integers(16, len(data)))])
    for _ in range(int(rng.integers(1, 40))):  # flip bytes, mostly in the header
        at = int(rng.integers(0, min(len(data), 2048) if rng.random() < 0.8 else len(data)))
        data[at] = int(rng.integers(0, 256))
    return bytes(data)


def _archive(root: Path) -> Path:
    make_scan_world(root / "world", n_studies=6)
    archive = root / "world" / "archive"
    rng = np.random.default_rng(22)
    sources = sorted(archive.rglob("*.dcm"))
    fuzz = archive / "fuzz"
    fuzz.mkdir()
    for k in range(FUZZED):
        (fuzz / f"f{k:03d}.dcm").write_bytes(_fuzz(sources[k % len(sources)].read_bytes(), rng))
    corpus = REPO_DIR.parent / "shared" / "dicom-corpus"  # the real files, when present
    if corpus.is_dir():
        for path in sorted(corpus.rglob("*")):
            if path.is_file() and path.suffix.lower() in (".dcm", ""):
                target = archive / "corpus" / path.relative_to(corpus)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    huge = make_dicom(archive / "huge" / "declared.dcm")
    ds = pydicom.dcmread(huge)
    ds.Rows = ds.Columns = 40000
    ds.save_as(huge)
    (archive / "notes.txt").write_text("not an image")
    (archive / "empty.dcm").write_bytes(b"")
    return archive


def _identifiers(archive: Path) -> set[str]:
    found: set[str] = set()
    for path in archive.rglob("*"):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # a fuzzed file: it names nobody pydicom can read
            continue
        for keyword in IDENTIFYING:
            try:
                value = str(ds.get(keyword, "") or "").strip()
            except Exception:  # a fuzzed element pydicom cannot decode: no name either
                continue
            # the whole value, and name components that are no common word ("Patient1")
            parts = [value, *(p for p in value.split("^") if any(c.isdigit() for c in p))]
            found.update(part for part in parts if len(part) >= 6 and not part.isdigit())
    return found


def _scan(archive: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "auditor", "scan", str(archive), "--out", str(out)]
    command += ["--pseudonymise", "--pseudonym-salt", "hostile", "--device", "cpu"]
    command += ["--workers", "2", "--heatmaps", "positive", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _live_formulas(run: Path) -> list[str]:
    found = []
    for path in run.rglob("*.xlsx"):
        for sheet in openpyxl.load_workbook(path):
            for row in sheet.iter_rows():
                found += [f"{path.name}!{c.coordinate}" for c in row if c.data_type == "f"]
    for path in run.rglob("*.csv"):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                for cell in row:
                    if cell.startswith(FORMULA_START) and not _number(cell):
                        found.append(f"{path.name}: {cell[:30]!r}")
    return found


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_hostile_archive_through_the_command_line(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    n_files = sum(1 for p in archive.rglob("*") if p.is_file())
    secrets = _identifiers(archive)
    figures: dict[str, object] = {"files": n_files, "identifiers_checked": len(secrets)}

    straight = _scan(archive, tmp_path / "straight")
    _, err = straight.communicate(timeout=900)
    assert straight.returncode == 0, err[-3000:]
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)

    # kill -9 mid-run, once the classifier has committed something; then resume
    killed_out = tmp_path / "killed"
    victim = _scan(archive, killed_out)
    deadline = time.monotonic() + 600
    workers: set[int] = set()
    precut = killed_out / "precut"
    while time.monotonic() < deadline and victim.poll() is None:
        workers |= _children(victim.pid)
        # the localizer stage, its decoding workers busy, is where main left them orphaned
        if len(workers) >= 2 and precut.is_dir() and any(precut.iterdir()):
            break
        time.sleep(0.02)
    workers |= _children(victim.pid)
    killed_mid_run = victim.poll() is None
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [pid for pid in workers if _alive(pid)]
    figures.update(killed_mid_run=killed_mid_run, workers_seen=len(workers), orphans=len(orphans))
    resumed = _scan(archive, killed_out, "--resume")
    _, resume_err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, resume_err[-3000:]

    tracebacks = sum("Traceback" in text for text in (err, resume_err))
    run = tmp_path / "straight"
    with (run / "findings.csv").open(newline="", encoding="utf-8") as handle:
        findings = list(csv.DictReader(handle))
    workbook = openpyxl.load_workbook(run / "audit.xlsx")
    accounted = workbook["Files"].max_row - 1
    formulas = _live_formulas(run) + _live_formulas(killed_out)
    leaks = [
        f"{secret!r} in {path.relative_to(tmp_path)}"
        for base in (run, killed_out)
        for path in base.rglob("*")
        if path.is_file()
        for secret in secrets
        if secret.encode("utf-8") in path.read_bytes()
    ]
    figures.update(
        accounted=accounted,
        vertebrae=len(findings),
        tracebacks=tracebacks,
        live_formulas=len(formulas),
        identifier_leaks=len(leaks),
    )
    print("\nhostile archive:", json.dumps(figures))
    assert accounted == n_files
    assert tracebacks == 0
    assert formulas == []
    assert leaks == [], leaks
    assert orphans == []
    keep = ("study", "image", "level", "probability", "call", "study_status", "error")
    assert [{k: r[k] for k in keep} for r in findings] == [
        {k: r[k] for k in keep}
        for r in csv.DictReader((killed_out / "findings.csv").open(newline="", encoding="utf-8"))
    ]
