"""Kill the workbench mid-review: no decision it has acknowledged is lost.

The real command runs in a subprocess (``python -m auditor review``) on a free port, with its
token fixed through ``TLAUDIT_REVIEW_TOKEN`` (never on the command line). Decisions are posted
over HTTP; the server is sent SIGKILL right after the last acknowledged answer, and the store is
reopened from the file.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from auditor.review.guard import TOKEN_HEADER
from auditor.review.serve import TOKEN_ENV
from auditor.review.store import ReviewStore
from auditor.vocab import StudyVerdict, VertebraDecision

TOKEN = "kill-test-token-0123456789abcdef"
URL = re.compile(r"^(http://127\.0\.0\.1:(\d+))/\?token=(\S+)$")
STARTUP_S = 60.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


def _read_url(proc: subprocess.Popen[str], errors: Path) -> str:
    """The base URL the server prints, waiting at most STARTUP_S seconds. Lines are read on a
    thread: select() on a buffered text pipe misses a line already in Python's buffer."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + STARTUP_S
    seen = []
    while time.monotonic() < deadline and (proc.poll() is None or not lines.empty()):
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        match = URL.match(line.strip())
        if match:
            assert match.group(3) == TOKEN
            return match.group(1)
    raise AssertionError(
        f"the server printed no URL within {STARTUP_S} s: {seen!r}; "
        f"stderr: {errors.read_text(errors='replace')[-2000:]}"
    )


def test_acknowledged_decisions_survive_sigkill(fresh_run: Path, tmp_path: Path) -> None:
    env = {**os.environ, TOKEN_ENV: TOKEN}
    errors = tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "auditor", "review", str(fresh_run), "--reviewer", "alice"]
    assert TOKEN not in " ".join(command)
    acknowledged: list[dict[str, object]] = []
    with errors.open("w") as stderr:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
    try:
        base = _read_url(proc, errors)
        with httpx.Client(base_url=base, headers={TOKEN_HEADER: TOKEN}, timeout=30) as http:
            queue = http.get("/api/queue").json()["studies"]
            cases = [http.get("/api/case", params={"study": s["key"]}).json() for s in queue]
            decisions = [d.value for d in VertebraDecision]
            changes: list[dict[str, object]] = []
            for case in cases:
                for image in case["images"]:
                    for k, vertebra in enumerate(image["vertebrae"]):
                        changes.append(
                            {
                                "study": case["key"],
                                "image": image["ref"],
                                "box": vertebra["box"],
                                "field": "decision",
                                "value": decisions[k % len(decisions)],
                            }
                        )
                verdict = StudyVerdict.CONFIRMED_MISS.value
                changes.append({"study": case["key"], "field": "verdict", "value": verdict})
            # change the first decision again: the latest acknowledged value is the one kept
            changes.append({**changes[0], "value": VertebraDecision.UNSURE.value})
            for change in changes:
                answer = http.post("/api/record", json=change)
                assert answer.status_code == 200, answer.text
                acknowledged.append(change)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(acknowledged) > 5

    with ReviewStore(fresh_run) as store:
        state = store.state("alice")
        assert len(store.events("alice")) == len(acknowledged)
    expected: dict[tuple[str, str, str, str], object] = {}
    for change in acknowledged:
        key = (
            str(change["study"]),
            str(change.get("image", "")),
            str(change.get("box", "")),
            str(change["field"]),
        )
        expected[key] = change["value"]
    for (study, image, box, field), value in expected.items():
        kept: StudyVerdict | VertebraDecision | None
        if field == "verdict":
            kept = state.studies[study].verdict
        else:
            kept = state.vertebrae[(study, image, box)].decision
        assert kept is not None and kept.value == value, (study, box, field)
