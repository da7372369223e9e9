"""Screenshots of the workbench for the docs: the queue and the first flagged case at 1,024 x 768.

``python -m auditor.review.screenshots RUN_DIR OUT_DIR`` serves the workbench for a scanned run
folder (see :func:`auditor.review.latency.serve_in_thread`), opens it in headless Chromium and
writes ``review-queue-1024.png`` and ``review-case-1024.png`` into ``OUT_DIR``; the docs' images
come from the sample scan (``docs/user-guide.md``, *Reviewing a run*). It records nothing in the
run's ``review.sqlite``. Also prints the page widths, so that a horizontal scroll shows.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Sequence
from pathlib import Path

from auditor.errors import UsageError
from auditor.review.latency import (
    CHROMIUM,
    CHROMIUM_ARGS,
    INSTALL_HINT,
    VIEWPORT,
    chromium_executable,
    serve_in_thread,
)

QUEUE_NAME = "review-queue-1024.png"
CASE_NAME = "review-case-1024.png"
#: The reviewer the pages are opened under (nothing is recorded).
REVIEWER = "qa-reviewer"
WIDTH_JS = "document.documentElement.scrollWidth"


def take_screenshots(run_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write the queue and case screenshots of ``run_dir`` into ``out_dir``; return each page's
    scroll width in CSS pixels (the window is :data:`~auditor.review.latency.VIEWPORT` wide).

    Raises
    ------
    UsageError
        When Playwright or Chromium is missing, or the run flagged no study.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise UsageError(f"playwright is not installed: {INSTALL_HINT}") from err
    executable = chromium_executable()
    if executable is None:
        raise UsageError(f"no Chromium at {CHROMIUM} or on PATH: {INSTALL_HINT}")
    out_dir.mkdir(parents=True, exist_ok=True)
    widths = {}
    token = secrets.token_urlsafe(32)
    with serve_in_thread(run_dir, REVIEWER, token) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
            tab = context.new_page()
            tab.goto(url)
            if not tab.locator('[data-testid="queue-row"]').count():
                raise UsageError(f"{run_dir}: the scan flagged no study to show")
            widths["queue"] = int(tab.evaluate(WIDTH_JS))
            tab.screenshot(path=str(out_dir / QUEUE_NAME))
            tab.keyboard.press("j")
            tab.wait_for_selector("body[data-case-ready]")
            tab.wait_for_load_state("networkidle")  # the heatmaps too
            widths["case"] = int(tab.evaluate(WIDTH_JS))
            tab.screenshot(path=str(out_dir / CASE_NAME))
            context.close()
        finally:
            browser.close()
    return widths


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m auditor.review.screenshots RUN_DIR OUT_DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m auditor.review.screenshots",
        description="Screenshots of the review workbench's queue and first case at 1,024 x 768.",
    )
    parser.add_argument("run_dir", type=Path, help="The run folder of a scan (its --out).")
    parser.add_argument("out_dir", type=Path, help="Folder to write the two PNGs into.")
    args = parser.parse_args(argv)
    widths = take_screenshots(args.run_dir, args.out_dir)
    for page, width in widths.items():
        print(f"{page}: page width {width} px in a {VIEWPORT['width']} px window")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
