"""The workbench in a real browser (headless Chromium through Playwright).

The queue, the keys, a decision that survives a reload, a box moved through the pan-zoom
transform, a box added, a verdict key, the queue's status badges inside their column at
1,024 px, and the domain banner with the calls and the studies' statuses marked out of
distribution; every page runs under the workbench's CSP (a violation fails the test, see
:func:`tests.review.browser.page`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from auditor.records import OUT_OF_DISTRIBUTION
from auditor.review.store import ReviewStore
from tests.helpers.review_world import mark_out_of_domain
from tests.review import browser as helpers

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow


def _open_first_case(tab: Page, url: str) -> str:
    tab.goto(url)
    tab.wait_for_selector('[data-testid="queue-row"]')
    tab.keyboard.press("j")
    tab.wait_for_selector("body[data-case-ready]")
    return str(tab.get_attribute("body", "data-case-ready"))


def _assert_statuses_fit_their_column(tab: Page) -> None:
    """At 1,024 px each row's status badge stays inside its own cell: it never runs into the
    Study column (the long "read positive, model negative" once did)."""
    rows = tab.locator('[data-testid="queue-row"]')
    assert rows.count() > 0
    for i in range(rows.count()):
        row = rows.nth(i)
        badge = row.locator('[data-testid="queue-status"]').bounding_box()
        cell = row.locator("td.status-cell").bounding_box()
        study = row.locator("td.study").bounding_box()
        assert badge is not None and cell is not None and study is not None
        text = row.locator('[data-testid="queue-status"]').inner_text()
        assert badge["x"] >= cell["x"], text
        assert badge["x"] + badge["width"] <= cell["x"] + cell["width"], text
        assert badge["x"] + badge["width"] <= study["x"], text
        assert badge["y"] + badge["height"] <= cell["y"] + cell["height"], text


def _saved(tab: Page) -> None:
    tab.wait_for_selector('[data-testid="save-state"][data-state="saved"]')


def test_queue_key_case_decision_reload(fresh_run: Path, page: Page) -> None:
    with helpers.serve_workbench(fresh_run, sample_unflagged=1) as url:
        page.goto(url)
        rows = page.locator('[data-testid="queue-row"]')
        assert rows.count() == 3
        flagged = page.locator('[data-testid="queue-section-flagged"] [data-testid="queue-row"]')
        first = flagged.first.get_attribute("data-study")
        assert page.locator('[data-testid="progress"]').inner_text() == "0 of 3 reviewed"
        assert page.evaluate("document.documentElement.scrollWidth") <= 1024
        statuses = page.locator('[data-testid="queue-status"]').all_inner_texts()
        assert "read positive, model negative" in statuses
        _assert_statuses_fit_their_column(page)

        page.keyboard.press("j")
        page.wait_for_selector(f'body[data-case-ready="{first}"]')
        assert page.get_attribute('[data-testid="case"]', "data-study") == first
        # the first flagged study's read says "L1 wedge.": its text's mention, with the sentence
        mention = page.locator('[data-testid="mention"][data-level="L1"]')
        assert mention.get_attribute("data-mention") == "affirmed"
        assert "L1 wedge." in mention.inner_text()
        boxes = page.locator('[data-testid="box"]')
        assert boxes.count() == 4
        box = boxes.first.get_attribute("data-box")
        row = page.locator(f'[data-testid="vertebra"][data-box="{box}"]')
        row.locator('[data-testid="decide-fracture"]').click()
        _saved(page)
        assert page.locator('[data-testid="save-state"]').inner_text() == "saved"

        page.reload()
        page.wait_for_selector(f'body[data-case-ready="{first}"]')
        row = page.locator(f'[data-testid="vertebra"][data-box="{box}"]')
        assert row.get_attribute("data-decision") == "fracture"
        pressed = row.locator('[data-testid="decide-fracture"]').get_attribute("aria-pressed")
        assert pressed == "true"

        page.keyboard.press("2")  # verdict: not a fracture
        _saved(page)
        verdict = page.locator('[data-testid="verdict-not_a_fracture"]')
        assert verdict.get_attribute("aria-pressed") == "true"
        assert page.locator('[data-testid="progress"]').inner_text() == "1 of 3 reviewed"

        page.keyboard.press("j")
        page.wait_for_function(f"document.body.dataset.caseReady !== {first!r}")
        second = page.get_attribute("body", "data-case-ready")
        page.keyboard.press("k")
        page.wait_for_selector(f'body[data-case-ready="{first}"]')
        timings = [helpers.key_to_drawn_ms(page, key) for key in "jkjk"]
        assert all(t > 0 for t in timings)

    with ReviewStore(fresh_run) as store:
        state = store.state("alice")
    assert second != first and first is not None
    verdict_set = state.studies[first].verdict
    assert verdict_set is not None and verdict_set.value == "not a fracture"
    decided = [v for v in state.vertebrae.values() if v.box == box]
    assert [v.decision.value for v in decided if v.decision] == ["fracture"]


def test_move_add_and_delete_boxes(fresh_run: Path, page: Page) -> None:
    with helpers.serve_workbench(fresh_run) as url:
        study = _open_first_case(page, url)
        group = page.locator('[data-testid="box"]').first
        box = str(group.get_attribute("data-box"))
        rect = group.locator("rect.box-rect")
        before = [float(rect.get_attribute(a) or 0) for a in ("x", "y", "width", "height")]
        scale = page.evaluate(
            "document.getElementById('overlay').getBoundingClientRect().width"
            " / document.getElementById('radiograph').naturalWidth"
        )
        bounds = rect.bounding_box()
        assert bounds is not None
        x, y = bounds["x"] + bounds["width"] / 2, bounds["y"] + bounds["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 24, y + 12, steps=4)
        page.mouse.up()
        _saved(page)

        page.click('[data-testid="add-box"]')
        viewport = page.locator('[data-testid="viewport"]').bounding_box()
        assert viewport is not None
        left, top = viewport["x"] + viewport["width"] / 2, viewport["y"] + viewport["height"] - 80
        page.mouse.move(left, top)
        page.mouse.down()
        page.mouse.move(left + 40, top + 30, steps=4)
        page.mouse.up()
        page.wait_for_selector('[data-testid="new-box-dialog"]:not([hidden])')
        page.select_option('[data-testid="new-level"]', "L4")
        page.click('[data-testid="new-box-ok"]')
        page.wait_for_selector('[data-testid="box"][data-level="L4"]')

        last = page.locator('[data-testid="vertebra"]').nth(1)
        deleted = str(last.get_attribute("data-box"))
        last.locator('[data-testid="delete-box"]').click()
        restore = f'[data-testid="vertebra"][data-box="{deleted}"] [data-testid="restore-box"]'
        page.wait_for_selector(restore)
        _saved(page)

    with ReviewStore(fresh_run) as store:
        state = store.state("alice")
    ref = next(key[1] for key in state.vertebrae if key[0] == study)
    moved = state.vertebrae[(study, ref, box)].xyxy
    assert moved is not None
    # 24 and 12 screen pixels through the pan-zoom scale, in image pixels
    assert moved[0] - before[0] == pytest.approx(24 / scale, abs=1.0)
    assert moved[1] - before[1] == pytest.approx(12 / scale, abs=1.0)
    assert moved[2] - moved[0] == pytest.approx(before[2], abs=0.01)
    added = [v for v in state.vertebrae.values() if v.added]
    assert len(added) == 1 and added[0].level is not None and added[0].level.value == "L4"
    assert added[0].xyxy is not None
    assert added[0].xyxy[2] - added[0].xyxy[0] == pytest.approx(40 / scale, abs=1.0)
    assert state.vertebrae[(study, ref, deleted)].deleted


def test_the_domain_banner_and_out_of_distribution_calls_are_shown(
    fresh_run: Path, page: Page
) -> None:
    banner = "Out of distribution: 24 of 24 vertebra crops (100%) are unlike <b>anything</b>"
    mark_out_of_domain(fresh_run, banner)
    with helpers.serve_workbench(fresh_run) as url:
        page.goto(url)
        shown = page.get_by_role("alert").filter(has_text="Out of distribution")
        assert shown.is_visible() and shown.inner_text() == banner
        assert shown.get_attribute("data-testid") == "domain-banner"
        # each study's status says how many of its vertebrae are out of distribution, as the
        # reports' does, and still fits its column
        statuses = page.locator('[data-testid="queue-status"]').all_inner_texts()
        suffix = f"; 4 vertebrae {OUT_OF_DISTRIBUTION}"
        assert statuses and all(text.endswith(suffix) for text in statuses)
        _assert_statuses_fit_their_column(page)
        _open_first_case(page, url)
        assert page.locator('[data-testid="case-status"]').inner_text() == statuses[0]
        shown = page.locator('[data-testid="domain-banner"]')
        assert shown.is_visible() and shown.inner_text() == banner
        # above the case, and the case still fits the window below it
        banner_box, case_box = shown.bounding_box(), page.locator("#case").bounding_box()
        assert banner_box is not None and case_box is not None
        assert banner_box["y"] + banner_box["height"] <= case_box["y"] + 1
        assert page.evaluate("document.documentElement.scrollWidth") <= 1024
        rows = page.locator('[data-testid="vertebra"]')
        marks = page.locator('[data-testid="vertebra"] [data-testid="out-of-distribution"]')
        assert rows.count() > 0 and marks.count() == rows.count()
        assert marks.first.is_visible() and marks.first.inner_text() == OUT_OF_DISTRIBUTION
