"""Nothing a scan or ``scan --resume`` does ever changes the review store."""

from __future__ import annotations

import hashlib
from pathlib import Path

from auditor.review.run import load_run
from auditor.review.store import REVIEW_DB_NAME, ReviewStore, box_id
from auditor.scan.pipeline import run_scan
from auditor.vocab import StudyVerdict, VertebraDecision
from tests.helpers.review_world import scan_config


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_leaves_review_sqlite_byte_identical(
    scanned: Path, fresh_run: Path, review_bundle: Path
) -> None:
    run = load_run(fresh_run)
    case = run.studies[0]
    image = case.images[0]
    with ReviewStore(fresh_run) as store:
        store.record(
            "ana",
            "decision",
            VertebraDecision.FRACTURE,
            study=case.key,
            image=image.ref,
            box=box_id(image.vertebrae[0].box_row),
        )
        store.record("ana", "verdict", StudyVerdict.CONFIRMED_MISS, study=case.key)
    db = fresh_run / REVIEW_DB_NAME
    before = _sha256(db)
    siblings = sorted(p.name for p in fresh_run.iterdir() if p.name.startswith(REVIEW_DB_NAME))

    run_scan(scan_config(scanned.parent / "world", review_bundle, fresh_run, resume=True))

    assert _sha256(db) == before
    assert sorted(p.name for p in fresh_run.iterdir() if p.name.startswith(REVIEW_DB_NAME)) == (
        siblings
    )
    with ReviewStore(fresh_run) as store:
        state = store.state("ana")
    assert state.studies[case.key].verdict is StudyVerdict.CONFIRMED_MISS
