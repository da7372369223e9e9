"""Shipped resources resolve in the source tree, after a wheel install, and from explicit paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor import resources
from auditor.errors import TlauditError


def test_explicit_path_wins(tmp_path: Path) -> None:
    target = tmp_path / "my-template.html.j2"
    target.write_text("x", encoding="utf-8")
    assert resources.resource_path("templates", "ignored", explicit=target) == target


def test_missing_explicit_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TlauditError, match="does not exist"):
        resources.resource_path("models", "x", explicit=tmp_path / "absent")


def test_installed_layout_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site-packages" / "auditor"
    (package / "_data" / "templates").mkdir(parents=True)
    (package / "_data" / "templates" / "a.j2").write_text("x", encoding="utf-8")
    monkeypatch.setattr(resources, "_PACKAGE_DIR", package)
    assert resources.resource_path("templates", "a.j2") == package / "_data" / "templates" / "a.j2"
    with pytest.raises(TlauditError, match="missing"):
        resources.resource_path("templates", "b.j2")


def test_nothing_found_names_both_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "_PACKAGE_DIR", tmp_path / "nowhere" / "auditor")
    with pytest.raises(TlauditError, match="cannot find the bundled models"):
        resources.resource_dir("models")


def test_source_tree_directories_exist() -> None:
    assert resources.resource_dir("templates").name == "templates"
    assert resources.resource_dir("models").name == "models"
