"""``scan --engine ray``: the same stages on a local Ray cluster (``ray.init(num_cpus=2)``) give
the same findings (and image-check verdicts) as the local engine, resume across engines, and a Ray
worker process killed mid-map costs a retry, never a lost or doubled item."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray

from auditor import parallel
from auditor.errors import BundleError
from auditor.parallel import RayTasks
from auditor.scan.classify import ModelSpec, _worker_classifier
from auditor.scan.config import HeatmapMode, ScanConfig, ScanResult
from auditor.scan.image_check import IMAGE_CHECK
from auditor.scan.journal import JOURNAL_NAME
from auditor.scan.pipeline import run_scan
from tests.helpers.interrupt import stop_after_batches
from tests.helpers.scan_world import ScanWorld, make_scan_world, scan_config

# compares numbers between code paths: CI reruns it on AVX2 kernels and with bf16 for auto
pytestmark = pytest.mark.numerics

N_STUDIES = 6


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    """A local Ray instance of two CPUs for this module (the engine joins it)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the tests' own work classes travel by value: Ray's workers need not import this module
    ray.cloudpickle.register_pickle_by_value(__import__(__name__, fromlist=["_"]))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ScanWorld:
    return make_scan_world(tmp_path_factory.mktemp("world"), n_studies=N_STUDIES)


def _config(world: ScanWorld, bundle: Path, out: Path, **kw: object) -> ScanConfig:
    return scan_config(world, bundle, out, **{"workers": 1, **kw})


@pytest.fixture(scope="module")
def local(world: ScanWorld, bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> ScanResult:
    return run_scan(_config(world, bundle, tmp_path_factory.mktemp("local")))


def test_a_ray_scan_finds_what_a_local_scan_finds(
    world: ScanWorld, bundle: Path, local: ScanResult, tmp_path: Path
) -> None:
    result = run_scan(_config(world, bundle, tmp_path / "ray", engine="ray"))
    assert result.n_vertebrae == local.n_vertebrae > 0
    assert (tmp_path / "ray" / "findings.csv").read_bytes() == local.reports["csv"].read_bytes()


def test_the_ray_tasks_make_the_image_check_s_canvases_with_the_local_verdicts(
    world: ScanWorld, bundle: Path, tmp_path: Path
) -> None:
    # the tasks that cut the crops return each image's localizer canvas too; the driver runs
    # the guard's network on them, as the local engine does
    here = run_scan(_config(world, bundle, tmp_path / "local", image_check=True))
    there = run_scan(_config(world, bundle, tmp_path / "ray", engine="ray", image_check=True))
    assert there.domain is not None and here.domain is not None
    assert there.domain.images == here.domain.images == N_STUDIES
    assert (tmp_path / "ray" / IMAGE_CHECK).read_bytes() == (
        tmp_path / "local" / IMAGE_CHECK
    ).read_bytes()
    assert (tmp_path / "ray" / "findings.csv").read_bytes() == here.reports["csv"].read_bytes()


@pytest.mark.parametrize(("first", "then"), [("local", "ray"), ("ray", "local")])
def test_a_scan_resumes_on_the_other_engine(
    world: ScanWorld, bundle: Path, local: ScanResult, tmp_path: Path, first: str, then: str
) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_scan(_config(world, bundle, out, engine=first, batch_size=4), stop_after_batches(1))
    with sqlite3.connect(out / JOURNAL_NAME) as db:
        done = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    assert 0 < done < N_STUDIES
    resumed = run_scan(_config(world, bundle, out, engine=then, batch_size=4, resume=True))
    assert resumed.timings["classified_this_session"] == (N_STUDIES - done) * 4
    assert (out / "findings.csv").read_bytes() == local.reports["csv"].read_bytes()


@dataclass(frozen=True)
class _DiesOnce:
    """Squares; the worker process computing item ``victim`` kills itself on the first try."""

    marks: Path
    victim: int

    def __getitem__(self, index: int) -> tuple[int, int]:
        (self.marks / f"{index}.{os.getpid()}").touch()  # one mark per attempt
        if index == self.victim and not (self.marks / "killed").exists():
            (self.marks / "killed").touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return index, index * index


@dataclass(frozen=True)
class _AlwaysDies:
    victim: int

    def __getitem__(self, index: int) -> int:
        if index == self.victim:
            os.kill(os.getpid(), signal.SIGKILL)
        return index

    def lost(self, index: int, reason: str) -> int:
        return -1


def test_a_killed_ray_worker_costs_a_retry_not_an_item(tmp_path: Path) -> None:
    results = list(RayTasks(in_flight=3).map_in_order(_DiesOnce(tmp_path, 4), 10))
    assert results == [(i, i * i) for i in range(10)]  # each once, in order
    assert (tmp_path / "killed").exists()
    attempts = [p.name.split(".")[0] for p in tmp_path.glob("*.*")]
    assert attempts.count("4") == 2  # killed once, then run again
    assert all(attempts.count(str(i)) == 1 for i in range(10) if i != 4)


def test_an_item_that_kills_every_worker_is_lost_not_the_map() -> None:
    results = list(RayTasks(retries=1).map_in_order(_AlwaysDies(2), 5))
    assert results == [0, 1, -1, 3, 4]


def test_an_error_in_the_work_is_raised_as_itself() -> None:
    with pytest.raises(ZeroDivisionError):
        list(RayTasks().map_in_order(_Fails(), 3))


class _Fails:
    def __getitem__(self, index: int) -> float:
        return 1 / (index - 1)


def test_a_worker_refuses_a_bundle_other_than_the_scans(bundle: Path) -> None:
    spec = ModelSpec(bundle, "0" * 64, "fp32", "cam")
    with pytest.raises(BundleError, match="every node needs the same bundle"):
        _worker_classifier(spec)


def test_a_ray_scan_without_boxes_localizes_in_the_workers(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a box file the localizer stage runs as Ray tasks too (decode and localize per
    image, the localizer loaded in each worker): same box file and findings as the local engine,
    and the localizer never runs in the scanning process."""
    from auditor.localizer import archive
    from auditor.localizer.infer import Localizer
    from auditor.synth.archive import write_archive
    from auditor.synth.config import SynthConfig

    world = tmp_path / "world"
    synth = SynthConfig(max_side=700, distractor_rate=0.0, compressed_share=0.0)
    write_archive(world, studies=3, seed=5, config=synth)

    def config(out: Path, engine: str) -> ScanConfig:
        return ScanConfig(
            archive=world / "archive",
            out=out,
            model=bundle,
            heatmaps=HeatmapMode.NONE,
            engine=engine,
        )

    local = run_scan(config(tmp_path / "local", "local"))
    here: list[int] = []
    locate = Localizer.locate

    def recorded(self: Localizer, *args: Any, **kwargs: Any) -> Any:
        here.append(os.getpid())
        return locate(self, *args, **kwargs)

    monkeypatch.setattr(Localizer, "locate", recorded)
    on_ray = run_scan(config(tmp_path / "ray", "ray"))
    # localized in the workers only
    assert here == [] and not any(isinstance(k, archive.LocalizerSpec) for k in parallel._LOADED)
    assert local.n_vertebrae == on_ray.n_vertebrae > 0
    for name in ("localizer_boxes.csv", "localizer_boxes.images.csv", "findings.csv"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_a_worker_refuses_a_localizer_other_than_the_scans() -> None:
    from auditor.localizer.archive import LocalizerSpec, worker_localizer
    from auditor.localizer.plausible import DEFAULT_RULES

    with pytest.raises(BundleError, match="every node needs the same bundle"):
        worker_localizer(LocalizerSpec(None, "0" * 64, DEFAULT_RULES, guarded=True))
