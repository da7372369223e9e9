"""``tlaudit bench --pacs``: a scan through DICOMweb next to a scan of the files, against a real
Orthanc; the figures are printed and written, never judged here (no timed assertions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from auditor.cli import app as cli_app
from tests.pacs.conftest import PacsWorld, start_orthanc
from tests.pacs.orthanc import PASSWORD, USER, Orthanc

ENV = {"TLAUDIT_DICOMWEB_USER": USER, "TLAUDIT_DICOMWEB_PASSWORD": PASSWORD, "COLUMNS": "200"}
FIELDS = (
    "QIDO-RS triage (instances/s)",
    "WADO-RS retrieval (instances/s)",
    "WADO-RS retrieval (MB/s)",
    "File scan wall time (s)",
    "PACS scan wall time (s)",
    "PACS scan / file scan throughput",
    "Load average",
)


def _bench(server: Orthanc, bundle: Path, out: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli_app.app,
        [
            "bench", "--pacs", server.dicomweb, "--model", str(bundle), "--device", "cpu",
            "--workers", "0", "--batch-size", "8", "--rounds", "2", "--scan-rounds", "2",
            "--json", str(out), *args,
        ],
        env=ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    for field in FIELDS:
        assert field in result.output
    assert "warning" not in result.output  # both scans classified the same images
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


@pytest.mark.slow
def test_bench_measures_a_pacs_that_holds_the_archive(
    pacs_world: tuple[Orthanc, PacsWorld], bundle: Path, tmp_path: Path
) -> None:
    server, world = pacs_world
    data = _bench(
        server,
        bundle,
        tmp_path / "bench.json",
        "--archive", str(world.root / "archive"), "--boxes", str(world.root / "boxes.csv"),
    )  # fmt: skip
    radiographs = [m for m in world.stored.values() if m in ("CR", "DX", "RG")]
    assert data["instances"] == len(radiographs)
    assert data["candidates"] == data["wado_instances"] == data["images"] == 4
    assert len(data["qido_s"]) == len(data["ratios"]) == len(data["pacs_scans_s"]) == 2
    for key in ("qido_ips", "wado_ips", "wado_mbps", "ratio", "own_share", "pacs_scan_s"):
        assert isinstance(data[key], float) and data[key] > 0, key
    assert data["mismatch"] == ""


@pytest.mark.slow
def test_bench_uploads_a_synthetic_archive_to_an_empty_pacs(bundle: Path, tmp_path: Path) -> None:
    server = start_orthanc(tmp_path / "orthanc")
    try:
        data = _bench(
            server, bundle, tmp_path / "bench.json",
            "--studies", "2", "--seed", "4", "--max-side", "320", "--upload",
        )  # fmt: skip
    finally:
        server.stop()
    assert data["images"] == data["candidates"] == data["wado_instances"] == 2
    assert data["ratio"] > 0
