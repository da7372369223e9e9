"""A scanned run folder for review tests: the tiny scan world scanned with an untrained bundle.

An untrained model gives every crop a probability near 0.5, so at the default threshold of 0.9 no
vertebra is positive: the two studies read positive are flagged (*read positive, model negative*),
the three read negative are *concordant negative* and the last, without a read, is *model
negative, no read*. So the run holds flagged and unflagged studies whatever the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

from auditor.reports.cases import CASES_NAME
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
        # the world's blobs are rightly unlike the localizer's training images: its image check
        # would mark every crop out of distribution, and the run out of domain; the tests of the
        # domain banner mark a run so themselves (mark_out_of_domain)
        image_check=False,
    )


def scanned_run(root: Path, bundle: Path, n_studies: int = 6) -> Path:
    """Write the tiny world to ``root/world``, scan it and return the run folder ``root/run``."""
    make_scan_world(root / "world", n_studies=n_studies)
    out = root / "run"
    run_scan(scan_config(root / "world", bundle, out))
    return out


def mark_out_of_domain(run_dir: Path, banner: str, distance: float = 9.5) -> None:
    """Rewrite ``run_dir``'s ``cases.json`` as a scan of an archive out of the model's domain
    writes it: with ``banner`` and every classified vertebra out of distribution at
    ``distance``. (The untrained bundle has no domain guard, so its scans mark nothing.)"""
    path = run_dir / CASES_NAME
    cases = json.loads(path.read_text(encoding="utf-8"))
    cases["domain_banner"] = banner
    for study in cases["studies"]:
        for image in study["images"]:
            for vertebra in image["vertebrae"]:
                if vertebra["probability"] is not None:
                    vertebra["distance"] = distance
                    vertebra["out_of_distribution"] = True
    path.write_text(json.dumps(cases), encoding="utf-8")
