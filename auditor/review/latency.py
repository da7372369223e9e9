"""How long the workbench takes from a key press to the next case drawn, in real Chromium.

Serves the workbench for a scanned run folder on a loopback port in a background thread, opens
the first flagged case in headless Chromium (driven by Playwright) at 1,024 x 768, then presses
``j`` (next case) and, at the end of the queue, ``k`` (previous case) ``presses`` times, waiting
``dwell_ms`` after each case is drawn before the next press (0: back to back, the worst case, as
the prefetch of the next case has had no time; a reviewer looks at a case for seconds). Each
press is a real key event sent through Chromium's input pipeline (``page.keyboard.press``); its
time runs from the key event's own timestamp (``KeyboardEvent.timeStamp``, taken when the browser
received it) to the first task after the frame in which the next case is drawn: the page sets
``body[data-case-ready]`` once the radiograph has decoded and its boxes are on it, and the time
is read in a ``setTimeout`` queued from the next ``requestAnimationFrame``, that is after that
frame has been painted. The workbench prefetches the neighbours of the case on screen, as it does
for a reviewer. The figures are given for all presses and apart for the first pass over the queue
(each radiograph asked for the first time: read and encoded then, unless the workbench's start-up
thread has done it already) and the later presses (the server's and the browser's caches hold
them).

Run it with ``tlaudit bench --review RUN_DIR`` (``--presses N --dwell-ms MS``) or
``python -m auditor.review.latency RUN_DIR``.
It records nothing in the run's ``review.sqlite`` (the store is opened, and created when absent,
but no decision is made). Needs Playwright (``pip install -e '.[test]'``) and Chromium (Debian:
``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.errors import UsageError

if TYPE_CHECKING:
    from playwright.sync_api import Page

#: Where Debian's ``chromium`` package puts the browser.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
INSTALL_HINT = (
    "install the browser with `apt-get install chromium` and Playwright with "
    "`pip install -e '.[test]'`"
)
VIEWPORT = {"width": 1024, "height": 768}
#: The reviewer name the measurement opens the workbench under (it records nothing).
BENCH_REVIEWER = "latency-bench"
DEFAULT_PRESSES = 40
#: Pause after each case is drawn before the next press, milliseconds (0: back to back).
DEFAULT_DWELL_MS = 0
#: The issue's target for the median and 95th percentile, milliseconds.
TARGET_MS = 150.0

#: JavaScript: arm a watch for the next key press; ``window.__tlauditDrawn`` resolves with the
#: milliseconds from the keydown event's timestamp to the task after the frame that shows the
#: case (``body[data-case-ready]`` changed).
ARM_JS = """() => {
  const before = document.body.dataset.caseReady;
  window.__tlauditDrawn = new Promise((resolve) => {
    let pressed = null;
    document.addEventListener("keydown", (event) => { pressed = event.timeStamp; },
                              {capture: true, once: true});
    const watch = new MutationObserver(() => {
      if (document.body.dataset.caseReady !== before) {
        watch.disconnect();
        requestAnimationFrame(() => setTimeout(() => resolve(performance.now() - pressed), 0));
      }
    });
    watch.observe(document.body, {attributes: true, attributeFilter: ["data-case-ready"]});
  });
}"""
WAIT_JS = "() => window.__tlauditDrawn"


def chromium_executable() -> str | None:
    """The Chromium binary to drive: Debian's, else one on PATH, else None."""
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    return shutil.which("chromium")


def key_to_drawn_ms(tab: Page, key: str = "j") -> float:
    """Press ``key`` on a case page and return the milliseconds until the next case is drawn
    (see the module docstring for the two ends of the interval)."""
    tab.evaluate(ARM_JS)
    tab.keyboard.press(key)
    return float(tab.evaluate(WAIT_JS))


@contextmanager
def serve_in_thread(run_dir: Path, reviewer: str, token: str, **options: Any) -> Iterator[str]:
    """Serve the workbench for ``run_dir`` on a free loopback port in a background thread.

    Yields the URL to open (token included); the server stops when the block ends. ``options``
    go to :func:`auditor.review.app.create_app` (``sample_unflagged``, ``seed``).

    Raises
    ------
    RuntimeError
        When the server does not start within 30 seconds.
    """
    import uvicorn

    from auditor.review.app import create_app
    from auditor.review.serve import bind, workbench_url

    app = create_app(run_dir, reviewer, token, **options)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the workbench did not start")
            time.sleep(0.02)
        yield workbench_url("127.0.0.1", int(sock.getsockname()[1]), token)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@dataclass(frozen=True)
class LatencyResult:
    """Key press to next case drawn, over ``len(samples_ms)`` presses."""

    run_dir: str
    cases: int  # studies in the queue the presses walked
    dwell_ms: int  # pause after each case drawn before the next press
    samples_ms: tuple[float, ...]
    median_ms: float
    p95_ms: float
    max_ms: float
    browser: str
    machine: str
    viewport: str

    def passes(self) -> dict[str, tuple[float, ...]]:
        """The samples of the first pass over the queue (``cases - 1`` presses, each case asked
        for the first time) and of the later presses (cached)."""
        first = self.cases - 1
        return {"first pass": self.samples_ms[:first], "later": self.samples_ms[first:]}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, with the median and 95th percentile of each pass."""
        data = asdict(self)
        data["passes"] = {
            name: {"presses": len(values), "median_ms": statistics.median(values),
                   "p95_ms": percentile(values, 95)}
            for name, values in self.passes().items()
            if values
        }  # fmt: skip
        return data

    def summary(self) -> str:
        """Median, 95th percentile and maximum with the target; then each pass's."""
        lines = [
            f"key press to next case drawn, {len(self.samples_ms)} presses over {self.cases} "
            f"cases, {self.dwell_ms} ms after each: median {self.median_ms:.1f} ms, "
            f"95th percentile {self.p95_ms:.1f} ms, max {self.max_ms:.1f} ms "
            f"(target < {TARGET_MS:.0f} ms) in {self.browser}, {self.viewport}"
        ]
        for name, values in self.passes().items():
            if values:
                lines.append(
                    f"  {name}: {len(values)} presses, median {statistics.median(values):.1f} "
                    f"ms, 95th percentile {percentile(values, 95):.1f} ms"
                )
        return "\n".join(lines)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` with linear interpolation between ranks
    (NumPy's default method)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def measure_latency(
    run_dir: Path, presses: int = DEFAULT_PRESSES, dwell_ms: int = DEFAULT_DWELL_MS
) -> LatencyResult:
    """Measure key press to next case drawn on the workbench of ``run_dir`` (module docstring).

    Raises
    ------
    UsageError
        When Playwright or Chromium is missing, ``presses`` is below 1, or the run's flagged queue
        holds fewer than two studies.
    """
    if presses < 1 or dwell_ms < 0:
        raise UsageError(
            f"presses must be at least 1 and dwell 0 or more, got {presses}, {dwell_ms}"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise UsageError(f"playwright is not installed: {INSTALL_HINT}") from err
    executable = chromium_executable()
    if executable is None:
        raise UsageError(f"no Chromium at {CHROMIUM} or on PATH: {INSTALL_HINT}")
    token = secrets.token_urlsafe(32)
    samples: list[float] = []
    with serve_in_thread(Path(run_dir), BENCH_REVIEWER, token) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
            tab = context.new_page()
            tab.goto(url)
            cases = tab.locator('[data-testid="queue-section-flagged"] [data-testid="queue-row"]')
            count = cases.count()
            if count < 2:
                raise UsageError(
                    f"{run_dir}: the flagged queue holds {count} studies; the measurement "
                    "walks from case to case and needs at least two"
                )
            tab.keyboard.press("j")
            tab.wait_for_selector("body[data-case-ready]")
            position, step = 0, 1
            for _ in range(presses):
                if dwell_ms:
                    tab.wait_for_timeout(dwell_ms)
                if not 0 <= position + step < count:
                    step = -step
                samples.append(key_to_drawn_ms(tab, "j" if step > 0 else "k"))
                position += step
            version = f"Chromium {browser.version} (headless, Playwright)"
            context.close()
        finally:
            browser.close()
    return LatencyResult(
        run_dir=str(run_dir),
        cases=count,
        dwell_ms=dwell_ms,
        samples_ms=tuple(round(s, 2) for s in samples),
        median_ms=statistics.median(samples),
        p95_ms=percentile(samples, 95),
        max_ms=max(samples),
        browser=version,
        machine=f"{platform.machine()}, {_cpus()} CPUs, {platform.system()}",
        viewport=f"{VIEWPORT['width']} x {VIEWPORT['height']}",
    )


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m auditor.review.latency RUN_DIR [--presses N] [--json FILE]``."""
    parser = argparse.ArgumentParser(
        prog="python -m auditor.review.latency",
        description="Key press to next case drawn in the review workbench, in headless Chromium.",
    )
    parser.add_argument("run_dir", type=Path, help="The run folder of a scan (its --out).")
    parser.add_argument("--presses", type=int, default=DEFAULT_PRESSES, help="Key presses.")
    parser.add_argument(
        "--dwell-ms", type=int, default=DEFAULT_DWELL_MS, help="Pause after each case drawn."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args(argv)
    result = measure_latency(args.run_dir, args.presses, args.dwell_ms)
    print(result.summary())
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
