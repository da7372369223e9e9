"""auditor.files: formula-safe CSV text round-trips through csv_safe and csv_unsafe."""

from __future__ import annotations

import pytest

from auditor.files import csv_safe, csv_unsafe


@pytest.mark.parametrize(
    "text",
    ["=1+1", "+cmd|' /C calc'!A0", "-2", "@SUM(A1)", '=HYPERLINK("http://x")', "plain", "", "'"],
)
def test_csv_unsafe_undoes_csv_safe(text: str) -> None:
    assert csv_unsafe(csv_safe(text)) == text


def test_csv_unsafe_leaves_an_apostrophe_before_ordinary_text() -> None:
    assert csv_unsafe("'quoted") == "'quoted"  # not our neutralisation: kept
    assert csv_safe("=x") == "'=x" and csv_unsafe("'=x") == "=x"
