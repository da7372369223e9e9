"""Pseudonymiser: stable salted pseudonyms, and scrubbing identifiers out of paths and free text."""

from __future__ import annotations

from auditor.reports.pseudonym import PREFIX, Pseudonymiser

ANON = Pseudonymiser("salt")
IDS = ("Doe^Ann", "PID-0042", "ACC77")


def test_pseudonyms_are_stable_salted_and_keep_empty_values() -> None:
    assert ANON("PID-0042") == ANON("PID-0042")
    assert ANON("PID-0042").startswith(PREFIX) and len(ANON("PID-0042")) == len(PREFIX) + 12
    assert Pseudonymiser("other")("PID-0042") != ANON("PID-0042")
    assert ANON("") == ""
    assert Pseudonymiser("salt", enabled=False)("PID-0042") == "PID-0042"


def test_paths_lose_identifiers_in_any_case() -> None:
    path = "pid-0042/ACC77/doe_ann_lateral.dcm"
    scrubbed = ANON.scrub(path, IDS)
    assert scrubbed == f"{ANON('PID-0042')}/{ANON('ACC77')}/{ANON('Doe')}_{ANON('Ann')}_lateral.dcm"


def test_free_text_loses_whole_words_only() -> None:
    text = "Discussed with Mr DOE (pid-0042) at the annual review; Anne Doering not involved."
    scrubbed = ANON.scrub(text, IDS, whole_words=True)
    assert scrubbed == (
        f"Discussed with Mr {ANON('Doe')} ({ANON('PID-0042')}) at the annual review; "
        "Anne Doering not involved."
    )


def test_one_pass_never_rewrites_a_pseudonym() -> None:
    # A part that happens to occur inside another part's pseudonym must not be replaced there.
    digest = ANON("PID-0042")[len(PREFIX) :]
    fragment = digest[:3]
    scrubbed = ANON.scrub("PID-0042", ("PID-0042", fragment))
    assert scrubbed == ANON("PID-0042")


def test_short_parts_and_disabled_scrubbing_leave_text_alone() -> None:
    assert ANON.scrub("Li was seen", ("Li^Wu",), whole_words=True) == "Li was seen"
    off = Pseudonymiser("salt", enabled=False)
    assert off.scrub("Doe PID-0042", IDS, whole_words=True) == "Doe PID-0042"
