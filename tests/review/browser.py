"""Browser tests' helpers: Debian's Chromium driven by Playwright, and a workbench served in a
background thread.

Use from a test module by binding the fixtures to module names (pytest finds fixtures among a
module's attributes)::

    from tests.review import browser as helpers

    chromium = helpers.chromium
    page = helpers.page

When Chromium or Playwright is missing the fixtures skip with the install commands; with
``TLAUDIT_REQUIRE_BROWSER`` set (as ``.ci/run`` does) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

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
    "install the browser with `apt-get install chromium` and the test extras with "
    "`pip install -e '.[test]'`"
)
#: The session token of workbenches these helpers serve.
TOKEN = "browser-test-token-0123456789abcdef"
VIEWPORT = {"width": 1024, "height": 768}
REQUIRE_ENV = "TLAUDIT_REQUIRE_BROWSER"


def chromium_executable() -> str | None:
    """The Chromium binary to drive: Debian's, else one on PATH, else None."""
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    return shutil.which("chromium")


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
    """Serve the workbench for ``run_dir`` on a free loopback port in a background thread.

    Yields the URL to open (token included); the server stops when the block ends.
    ``options`` go to :func:`auditor.review.app.create_app` (``sample_unflagged``, ``seed``).
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


#: JavaScript: press a key, resolve with the milliseconds until ``body[data-case-ready]``
#: changes and the next frame is painted.
KEY_TO_DRAWN_JS = """(key) => new Promise((resolve) => {
  const before = document.body.dataset.caseReady;
  const start = performance.now();
  const watch = new MutationObserver(() => {
    if (document.body.dataset.caseReady !== before) {
      watch.disconnect();
      requestAnimationFrame(() => resolve(performance.now() - start));
    }
  });
  watch.observe(document.body, {attributes: true, attributeFilter: ["data-case-ready"]});
  document.dispatchEvent(new KeyboardEvent("keydown", {key, bubbles: true}));
})"""


def key_to_drawn_ms(tab: Page, key: str = "j") -> float:
    """Milliseconds from a key press on the case page to the next case drawn (image included)."""
    return float(tab.evaluate(KEY_TO_DRAWN_JS, key))
