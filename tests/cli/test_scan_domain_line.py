"""The terminal line of a scan whose archive stays within the model's domain names the rules it
passed and, where the count rule ran, its counts (issue 21)."""

from __future__ import annotations

from auditor.cli.scan import domain_counts
from auditor.model.guard import DEFAULT_ARCHIVE_SHARE, CountRule
from auditor.records import DomainCheck


def test_the_line_gives_the_count_rules_figures() -> None:
    check = DomainCheck(
        True, 1.0, DEFAULT_ARCHIVE_SHARE, crops=18, crops_out=2,
        count=CountRule().test([6, 6, 6], [2, 0, 0]),
    )  # fmt: skip
    assert not check.out_of_domain
    assert domain_counts(check) == (
        ", on 1 of 3 studies (at most 0.3 expected, P = 0.3); the archive passes both rules"
    )


def test_without_the_count_rule_the_line_names_the_share_rule_alone() -> None:
    check = DomainCheck(False, None, DEFAULT_ARCHIVE_SHARE, crops=10, crops_out=1)
    assert domain_counts(check) == "; the archive passes the share rule"
