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
from tests.helpers.scan_world import ScanWorld, make_scan_world


def scanned_run(root: Path, bundle: Path, n_studies: int = 6, threshold: float = 0.9) -> Path:
    """Scan the tiny world under ``root`` with ``bundle`` (heatmaps for every vertebra) and
    return the run folder ``root/run``."""
    world: ScanWorld = make_scan_world(root / "world", n_studies=n_studies)
    out = root / "run"
    run_scan(
        ScanConfig(
            archive=world.archive,
            out=out,
            boxes=world.boxes,
            reads=world.reads,
            model=bundle,
            threshold=threshold,
            device="cpu",
            batch_size=8,
            workers=0,
            heatmaps=HeatmapMode.ALL,
        )
    )
    return out
