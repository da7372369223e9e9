"""The image sets of ``tlaudit guard-rates --task localizer`` (issue 21); the command itself is
tested in tests/cli/test_guard.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from auditor.localizer.guard_rates import Change, changed, image_files
from auditor.model.perturb import HEAVY_NOISE


def test_image_files_of_folders_files_and_a_drr_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "corpus"
    for name in ("a.dcm", "sub/b.png", ".hidden", ".git/c.dcm"):
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_bytes(b"x")
    drr = tmp_path / "drr"
    for name in ("images/v1.png", "masks/v1_L1.png", "detection_data.json"):
        (drr / name).parent.mkdir(parents=True, exist_ok=True)
        (drr / name).write_bytes(b"x")
    single = tmp_path / "one.png"
    single.write_bytes(b"x")
    # a relative path through '..' is not a hidden folder
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    found = image_files([Path("../corpus"), Path("../drr"), Path("../one.png")])
    assert sorted(os.path.relpath(p, tmp_path) for p in found) == [
        "corpus/a.dcm",
        "corpus/sub/b.png",
        "drr/images/v1.png",
        "one.png",
    ]


@pytest.mark.parametrize("change", list(Change))
def test_changes_leave_the_caller_s_image_alone(change: Change) -> None:
    pixels = np.random.default_rng(0).random((400, 300)).astype(np.float32)
    before = pixels.copy()
    out = changed(pixels, change, 192, (1, 2, 3))
    np.testing.assert_array_equal(pixels, before)
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    if change is Change.NOISE_INPUT:
        assert out.shape == (192, 144)  # shrunk as the letterbox does, long side 192
        again = changed(pixels, change, 192, (1, 2, 3))
        np.testing.assert_array_equal(out, again)  # the noise is drawn from the seed
    else:
        assert out.shape == pixels.shape
    if change is Change.NOISE_FULL:
        assert 0.5 * HEAVY_NOISE < float(np.std(out - pixels)) < HEAVY_NOISE
