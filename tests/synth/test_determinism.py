"""Same seed, same bytes; different seed, different world."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from auditor.synth import SynthConfig, generate_study, write_archive

SMALL = SynthConfig(max_side=300, distractor_rate=1.0)


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_generate_study_is_deterministic() -> None:
    a = generate_study(5, 3, SMALL)
    b = generate_study(5, 3, SMALL)
    assert np.array_equal(a.stored, b.stored)
    assert a.vertebrae == b.vertebrae
    assert a.header == b.header and a.read == b.read
    c = generate_study(6, 3, SMALL)
    assert c.header.study_uid != a.header.study_uid


@pytest.mark.slow
def test_archive_bytes_identical_across_runs_and_workers(tmp_path: Path) -> None:
    first = write_archive(tmp_path / "one", 3, seed=11, config=SMALL, preview=True)
    write_archive(tmp_path / "two", 3, seed=11, config=SMALL, workers=2, preview=True)
    one, two = _digest(tmp_path / "one"), _digest(tmp_path / "two")
    assert one == two
    assert first.distractors  # distractor_rate 1.0 with 3 studies gives 3 distractors
    assert sum(first.distractors.values()) == 3


def test_subtle_share_makes_fractures_grade_1_wedges() -> None:
    """``--subtle-share 1`` draws every fracture as an A1 wedge with 20-25 % height loss."""
    subtle = SynthConfig(max_side=300, distractor_rate=0.0, subtle_share=1.0)
    fractures = [
        v for s in range(10) for v in generate_study(s, 3, subtle).vertebrae if v.genant_grade
    ]
    assert len(fractures) >= 5
    assert {(v.ao_type, v.genant_grade) for v in fractures} == {("A1", 1)}
    assert all(0.20 <= v.height_loss <= 0.25 for v in fractures)
    usual = SynthConfig(max_side=300, distractor_rate=0.0)
    mix = {v.ao_type for s in range(10) for v in generate_study(s, 3, usual).vertebrae if v.ao_type}
    assert len(mix) > 1


def test_uncompressed_worlds_hold_the_same_pixels_and_truth(tmp_path: Path) -> None:
    """``--uncompressed`` changes how pixels are stored, never what they are."""
    import csv
    from dataclasses import replace

    import pydicom

    config = SynthConfig(max_side=300, distractor_rate=1.0)
    write_archive(tmp_path / "c", 4, seed=5, config=config)
    write_archive(tmp_path / "u", 4, seed=5, config=replace(config, uncompressed=True))
    for name in ("ground_truth.csv", "boxes.csv", "reads.csv", "studies.csv"):
        assert (tmp_path / "c" / name).read_bytes() == (tmp_path / "u" / name).read_bytes()

    def manifest(root: Path) -> list[dict[str, str]]:
        with (root / "manifest.csv").open(newline="") as fh:
            return list(csv.DictReader(fh))

    packed, plain = manifest(tmp_path / "c"), manifest(tmp_path / "u")
    assert [r["file"] for r in packed] == [r["file"] for r in plain]
    compressed = 0
    for a, b in zip(packed, plain, strict=True):
        if not a["file"].endswith(".dcm") or a["expected_triage"] == "unreadable":
            continue
        assert b["transfer_syntax"] == "1.2.840.10008.1.2.1"
        compressed += a["transfer_syntax"] not in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
        pa = pydicom.dcmread(tmp_path / "c" / "archive" / a["file"])
        pb = pydicom.dcmread(tmp_path / "u" / "archive" / b["file"])
        if "PixelData" in pa:
            assert np.array_equal(pa.pixel_array, pb.pixel_array), a["file"]
    assert compressed >= 2  # the default world did use compressed syntaxes here


def test_bare_subtle_wedges_lose_their_secondary_signs_only() -> None:
    """``--subtle-bare``: the wedge's height loss stays, its gap, band, bulge and roughness go."""
    from dataclasses import replace

    from auditor.synth.anatomy import normal_body, sample_patient
    from auditor.synth.fractures import FractureSpec, apply_fracture

    rng = np.random.default_rng(3)
    body = normal_body("L1", sample_patient(rng), rng)
    spec = FractureSpec("L1", "A1", 1, 0.22)
    seeds = range(40)
    signed = [apply_fracture(body, spec, np.random.default_rng(s)) for s in seeds]
    bare = [apply_fracture(body, replace(spec, bare=True), np.random.default_rng(s)) for s in seeds]
    assert any(s.gaps or s.bands for s in signed) and any(s.bulge_anterior > 0 for s in signed)
    for s, b in zip(signed, bare, strict=True):
        assert (b.gaps, b.bands) == (body.gaps, body.bands)
        assert b.bulge_anterior == 0 and b.rough_top == 0 and b.rough_bottom == 0
        assert b.heights() == s.heights()  # the height loss is untouched

    config = SynthConfig(max_side=300, distractor_rate=0.0, subtle_share=1.0, subtle_bare=True)
    studies = [generate_study(7, index, config) for index in range(8)]
    fractures = [v for study in studies for v in study.vertebrae if v.label]
    assert fractures and {(v.ao_type, v.genant_grade) for v in fractures} == {("A1", 1)}
    again = generate_study(7, 3, config)
    assert np.array_equal(again.stored, studies[3].stored)


def test_wedge_variants_mimic_grade_1_without_fracture_signs() -> None:
    """``--wedge-variants 1``: every intact T7-L1 body is wedged 18-24.5 %, labelled intact, and
    carries none of a fracture's signs; other levels and fractured bodies are left alone."""
    from auditor.synth.anatomy import normal_body, sample_patient
    from auditor.synth.fractures import WEDGE_VARIANT_LEVELS, apply_wedge_variant
    from auditor.synth.shape import height_loss

    rng = np.random.default_rng(4)
    body = normal_body("T12", sample_patient(rng), rng)
    for seed in range(30):
        wedged = apply_wedge_variant(body, np.random.default_rng(seed))
        assert 0.18 - 1e-3 <= height_loss(wedged) <= 0.245 + 1e-3
        assert (wedged.gaps, wedged.bands, wedged.zone) == (body.gaps, body.bands, body.zone)
        assert wedged.bulge_anterior == body.bulge_anterior
        assert (wedged.rough_top, wedged.rough_bottom) == (body.rough_top, body.rough_bottom)

    config = SynthConfig(max_side=300, distractor_rate=0.0, wedge_variant_share=1.0)
    vertebrae = [v for s in range(8) for v in generate_study(11, s, config).vertebrae]
    intact = [v for v in vertebrae if not v.label]
    in_levels = [v for v in intact if v.level in WEDGE_VARIANT_LEVELS]
    assert len(in_levels) >= 10
    for v in in_levels:
        assert "physiologic_wedge" in v.variants and v.genant_grade == 0 and not v.zone
        assert 0.18 - 2e-3 <= v.height_loss <= 0.245 + 2e-3
    assert not any(
        "physiologic_wedge" in v.variants
        for v in vertebrae
        if v.label or v.level not in WEDGE_VARIANT_LEVELS
    )
    plain = SynthConfig(max_side=300, distractor_rate=0.0)
    assert all(
        v.height_loss < 0.185 and "physiologic_wedge" not in v.variants
        for s in range(8)
        for v in generate_study(11, s, plain).vertebrae
        if not v.label
    )
