"""A scanned run folder for review tests: the tiny scan world scanned with an untrained bundle.

An untrained model gives every crop a probability near 0.5, so at the default threshold of 0.9 no
vertebra is positive: the two studies read positive are flagged (*read positive, model negative*),
the three read negative are *concordant negative* and the last, without a read, is *model
negative, no read*. So the run holds flagged and unflagged studies whatever the CPU.
"""

from __future__ import annotations

from pathlib import Path

from auditor.scan.config import HeatmapMode, ScanConfig
from auditor.scan.pipeline import run_scan
from tests.helpers.scan_world import make_scan_world

THRESHOLD = 0.9


def scan_config(world: Path, bundle: Path, out: Path, *, resume: bool = False) -> ScanConfig:
    """The scan of the world under ``world`` (heatmaps for every vertebra) into ``out``."""
    return ScanConfig(
        archive=world / "archive",
        out=out,
        boxes=world / "boxes.csv",
        reads=world / "reads.csv",
        model=bundle,
        threshold=THRESHOLD,
        device="cpu",
        batch_size=8,
        workers=0,
        heatmaps=HeatmapMode.ALL,
        resume=resume,
    )


def scanned_run(root: Path, bundle: Path, n_studies: int = 6) -> Path:
    """Write the tiny world to ``root/world``, scan it and return the run folder ``root/run``."""
    make_scan_world(root / "world", n_studies=n_studies)
    out = root / "run"
    run_scan(scan_config(root / "world", bundle, out))
    return out
