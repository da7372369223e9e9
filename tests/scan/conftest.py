"""Fixtures the scan tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.model.bundle import create_untrained_bundle


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained resnet18 classifier bundle for 32-pixel crops (seed 0), built once.

    Shared by every scan test, so tests only read it: a test that changes a bundle makes its own.
    """
    return create_untrained_bundle(tmp_path_factory.mktemp("model"), "resnet18", 32, seed=0)
