"""Fixtures the review tests share: an untrained bundle and one scanned run folder.

The run folder is built once per session and only read by tests: a test that records decisions
copies it (:func:`fresh_run`) so that no two tests share a ``review.sqlite``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from auditor.model.bundle import create_untrained_bundle
from tests.helpers.review_world import scanned_run

# The browser fixtures, registered once for the folder: a second Playwright cannot start while one
# runs, so two modules must not each bind their own session-scoped ``chromium``.
from tests.review.browser import chromium, page

__all__ = ["chromium", "fresh_run", "page", "review_bundle", "scanned"]


@pytest.fixture(scope="session")
def review_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained resnet18 bundle for 32-pixel crops (seed 0)."""
    return create_untrained_bundle(tmp_path_factory.mktemp("model"), "resnet18", 32, seed=0)


@pytest.fixture(scope="session")
def scanned(tmp_path_factory: pytest.TempPathFactory, review_bundle: Path) -> Path:
    """The run folder of a finished scan of the tiny scan world (read only: copy it to write)."""
    return scanned_run(tmp_path_factory.mktemp("review"), review_bundle)


@pytest.fixture
def fresh_run(scanned: Path, tmp_path: Path) -> Path:
    """A private copy of the scanned run folder (the archive stays where the scan found it)."""
    target = tmp_path / "run"
    shutil.copytree(scanned, target)
    return target
