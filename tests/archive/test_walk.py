"""Archive walk: sorted, lazy, never following links out of the root or round a loop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditor.archive.walk import WalkIssue, walk_archive


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "a" / "2.dcm").write_bytes(b"x" * 10)
    (root / "a" / "1.dcm").write_bytes(b"x" * 5)
    (root / "b" / "deep" / "3.dcm").write_bytes(b"")
    (root / "top.txt").write_text("hello")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.dcm").write_bytes(b"x")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    (root / "escape_file.dcm").symlink_to(outside / "secret.dcm")
    (root / "b" / "loop").symlink_to(root, target_is_directory=True)
    (root / "b" / "self").symlink_to(root / "b", target_is_directory=True)
    (root / "alias.dcm").symlink_to(root / "a" / "1.dcm")
    (root / "dangling").symlink_to(root / "missing")
    (root / "b" / "up").symlink_to(Path("..") / ".." / "outside")  # relative escape
    os.mkfifo(root / "pipe")
    return root


def test_every_entry_once_in_sorted_order_with_reasons(tmp_path: Path):
    root = _tree(tmp_path)
    entries = list(walk_archive(root))
    issues = {e.relpath: e.issue for e in entries}
    assert [e.relpath for e in entries] == sorted(issues, key=lambda p: p.split("/"))
    assert issues == {
        "a/1.dcm": None,
        "a/2.dcm": None,
        "alias.dcm": WalkIssue.LINK_INSIDE_ROOT,
        "b/deep/3.dcm": None,
        "b/loop": WalkIssue.LINK_LOOP,
        "b/self": WalkIssue.LINK_LOOP,
        "b/up": WalkIssue.LINK_OUTSIDE_ROOT,
        "dangling": WalkIssue.BROKEN_LINK,
        "escape_dir": WalkIssue.LINK_OUTSIDE_ROOT,
        "escape_file.dcm": WalkIssue.LINK_OUTSIDE_ROOT,
        "pipe": WalkIssue.SPECIAL_FILE,
        "top.txt": None,
    }
    sizes = {e.relpath: e.size for e in entries if e.issue is None}
    assert sizes == {"a/1.dcm": 5, "a/2.dcm": 10, "b/deep/3.dcm": 0, "top.txt": 5}
    assert not any("secret" in str(e.path) for e in entries)


def test_walk_is_lazy(tmp_path: Path):
    root = _tree(tmp_path)
    walker = walk_archive(root)
    first = next(walker)
    assert first.relpath == "a/1.dcm"
    # Files created after the walk started in a later folder are still seen: nothing was
    # listed ahead of time beyond the folders on the current path.
    (root / "b" / "deep" / "4.dcm").write_bytes(b"")
    assert "b/deep/4.dcm" in {e.relpath for e in walker}


def test_root_given_through_a_symlink(tmp_path: Path):
    root = _tree(tmp_path)
    link = tmp_path / "link_to_archive"
    link.symlink_to(root, target_is_directory=True)
    relpaths = {e.relpath: e.issue for e in walk_archive(link)}
    assert relpaths["a/1.dcm"] is None
    assert relpaths["escape_dir"] is WalkIssue.LINK_OUTSIDE_ROOT


@pytest.mark.skipif(os.geteuid() == 0, reason="root can list any directory")
def test_unlistable_directory_becomes_an_entry(tmp_path: Path):
    root = tmp_path / "archive"
    locked = root / "locked"
    locked.mkdir(parents=True)
    (locked / "x.dcm").write_bytes(b"x")
    locked.chmod(0)
    try:
        entries = list(walk_archive(root))
    finally:
        locked.chmod(0o755)
    assert [(e.relpath, e.issue) for e in entries] == [("locked", WalkIssue.UNLISTABLE_DIRECTORY)]


def test_root_must_be_a_directory(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        list(walk_archive(tmp_path / "file"))


@pytest.mark.parametrize(
    ("skip", "left_out"),
    [
        (["b"], {"b/deep/3.dcm", "b/loop", "b/self", "b/up"}),  # a run folder inside the archive
        (["b/deep/"], {"b/deep/3.dcm"}),
        (["top.txt"], {"top.txt"}),  # an accounting file written into the archive
        (["b/../a/1.dcm"], {"a/1.dcm"}),
        (["escape_dir/run"], set()),  # through a link: resolved outside the archive
        (["not-there-yet"], set()),  # a run folder the scan has not made yet
        (["."], set()),  # the root itself is never skipped
        (["../outside"], set()),
    ],
)
def test_tlaudit_output_inside_the_archive_is_left_out(
    tmp_path: Path, skip: list[str], left_out: set[str]
) -> None:
    root = _tree(tmp_path)
    everything = {e.relpath for e in walk_archive(root)}
    walked = {e.relpath for e in walk_archive(root, skip=[root / s for s in skip])}
    assert everything - walked == left_out
    assert walked <= everything


def test_a_skipped_folder_is_matched_through_a_link_to_it(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (tmp_path / "run-link").symlink_to(root / "b", target_is_directory=True)
    walked = {e.relpath for e in walk_archive(root, skip=[tmp_path / "run-link"])}
    assert not any(path.startswith("b/") for path in walked)
