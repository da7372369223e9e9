"""``--resume`` of a scan without a box file: the run's fingerprint holds the localizer bundle's
identity (its card's SHA-256), so the same bundle resumes from any folder, and another bundle is
refused before anything is localized; ``check_resumable`` compares whole fingerprints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from auditor import localizer
from auditor.errors import UsageError
from auditor.localizer.bundle import CARD_FILE, DEFAULT_LOCALIZER, card_sha256
from auditor.resources import resource_path
from auditor.scan.config import HeatmapMode
from auditor.scan.journal import RunJournal, check_resumable
from auditor.scan.pipeline import ScanConfig, run_scan

FINGERPRINT = {"archive": "/a", "boxes_sha256": None, "localizer_sha256": "c" * 64, "n": [1, 2]}


def _config(world: Path, bundle: Path, out: Path, **kw: Any) -> ScanConfig:
    return ScanConfig(
        archive=world / "archive", out=out, model=bundle, heatmaps=HeatmapMode.NONE, **kw
    )


def test_a_localizer_run_resumes_with_its_bundle_and_refuses_another(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auditor.synth.archive import write_archive
    from auditor.synth.config import SynthConfig

    world = tmp_path / "world"
    write_archive(world, studies=2, seed=5, config=SynthConfig(max_side=700, distractor_rate=0.0))
    run = tmp_path / "run"
    first = run_scan(_config(world, bundle, run))
    assert first.n_images > 0
    shipped = resource_path("models", DEFAULT_LOCALIZER)
    same, other = tmp_path / "same", tmp_path / "other"
    shutil.copytree(shipped, same)
    shutil.copytree(shipped, other)
    card = json.loads((other / CARD_FILE).read_text(encoding="utf-8"))
    card["reproduce"] = "another bundle: its card differs, its weights do not"
    (other / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    assert card_sha256(same) == card_sha256(None) != card_sha256(other)

    # the same bundle from another folder: the run resumes, nothing left to classify
    again = run_scan(_config(world, bundle, run, localizer=same, resume=True))
    assert again.timings["classified_this_session"] == 0
    assert again.reports["csv"].read_bytes() == first.reports["csv"].read_bytes()

    # another bundle: refused before the localizer runs
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the localizer ran before the resume was refused")

    monkeypatch.setattr(localizer, "localize_archive", never)
    with pytest.raises(UsageError, match=r"inputs differ .*\(localizer_sha256\)"):
        run_scan(_config(world, bundle, run, localizer=other, resume=True))


def test_a_missing_localizer_bundle_is_a_bundle_error(tmp_path: Path) -> None:
    from auditor.errors import BundleError

    with pytest.raises(BundleError, match="does not exist"):
        card_sha256(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=f"needs {CARD_FILE}"):
        card_sha256(tmp_path / "empty")


def test_check_resumable_compares_whole_fingerprints(tmp_path: Path) -> None:
    check_resumable(tmp_path, FINGERPRINT)  # no journal: nothing to compare
    RunJournal(tmp_path, FINGERPRINT, resume=False).close()
    check_resumable(tmp_path, {**FINGERPRINT, "n": (1, 2)})  # as stored: a tuple is a list
    other = {**FINGERPRINT, "localizer_sha256": "d" * 64, "threshold": 0.5}
    with pytest.raises(UsageError, match=r"\(localizer_sha256, threshold\)"):
        check_resumable(tmp_path, other)
