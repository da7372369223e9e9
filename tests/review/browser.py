"""Browser tests' helpers: Debian's Chromium driven by Playwright, and a workbench served in a
background thread.

The fixtures ``chromium`` (one per session) and ``page`` are registered for ``tests/review/`` by
its ``conftest.py``; a test asks for ``page`` and serves a run with :func:`serve_workbench`. Do not
bind them again in a test module: that makes a second session-scoped Playwright, which cannot
start while the first runs.

When Chromium or Playwright is missing the fixtures skip with the install commands; with
``TLAUDIT_REQUIRE_BROWSER`` set (as ``.ci/run`` does) they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from auditor.review.latency import (
    CHROMIUM,
    CHROMIUM_ARGS,
    INSTALL_HINT,
    VIEWPORT,
    chromium_executable,
    key_to_drawn_ms,
    serve_in_thread,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

__all__ = ["chromium", "key_to_drawn_ms", "page", "serve_workbench"]

#: The session token of workbenches these helpers serve.
TOKEN = "browser-test-token-0123456789abcdef"
REQUIRE_ENV = "TLAUDIT_REQUIRE_BROWSER"


def _unavailable(reason: str) -> NoReturn:
    message = f"{reason}: {INSTALL_HINT}"
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{message} ({REQUIRE_ENV} is set)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """A headless Chromium for the session (skips when Chromium or Playwright is missing)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    executable = chromium_executable()
    if executable is None:
        _unavailable(f"no Chromium at {CHROMIUM} or on PATH")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh 1,024 x 768 page; fails the test on a page error or a CSP violation."""
    context = chromium.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    try:
        yield tab
    finally:
        context.close()
    assert not problems, problems


@contextmanager
def serve_workbench(
    run_dir: Path, reviewer: str = "alice", token: str = TOKEN, **options: Any
) -> Iterator[str]:
    """Serve the workbench for ``run_dir`` on a free loopback port in a background thread
    (:func:`auditor.review.latency.serve_in_thread`); yields the URL to open, token included."""
    with serve_in_thread(run_dir, reviewer, token, **options) as url:
        yield url
