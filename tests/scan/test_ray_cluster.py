"""``scan --engine ray --ray-address``: a head and a worker node started with ``ray start`` on
loopback (token authentication on, as it is by default), tasks run on both nodes, and a scan
through the CLI on that cluster finds what a local scan finds."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.scan_world import ScanWorld, make_scan_world

pytestmark = pytest.mark.slow

# Ray's command line, run by this interpreter: its `ray` script may sit in another bin folder
# (a venv over system site-packages)
RAY = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A two-node Ray cluster on this machine: the head and one worker node, one CPU each."""
    env = dict(
        os.environ,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_USAGE_STATS_ENABLED="0",
    )
    address = f"127.0.0.1:{_free_port()}"
    # a short folder of its own (Ray's socket paths must stay short): the cluster's processes
    # are found by it afterwards, so no other Ray on the machine is touched
    folder = tempfile.mkdtemp(prefix="tlray", dir="/tmp")
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    head = ["--head", "--port", address.split(":")[1], "--include-dashboard=false"]
    head += ["--temp-dir", folder]
    try:
        subprocess.run(
            [*RAY, "start", *head, *common],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [*RAY, "start", "--address", address, *common],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield address, env
    finally:
        _kill_cluster(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _kill_cluster(folder: str) -> None:
    """SIGKILL the processes whose command line names ``folder`` (the nodes' GCS, raylets and
    monitors) and all their descendants (their workers and agents). ``ray stop`` would stop
    every Ray on the machine, a developer's own cluster included."""
    parents: dict[int, int] = {}
    roots: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            command = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        if folder.encode() in command:
            roots.add(int(proc.name))
    mine: set[int] = set()  # never this process nor its ancestors
    pid = os.getpid()
    while pid > 1 and pid not in mine:
        mine.add(pid)
        pid = parents.get(pid, 0)
    doomed = roots - mine
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in doomed} - doomed
        doomed |= children
        grew = bool(children)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_tasks_run_on_both_nodes(cluster: tuple[str, dict[str, str]]) -> None:
    address, env = cluster
    script = textwrap.dedent(
        f"""
        import time
        import ray
        from auditor.parallel import RayTasks, connect_ray

        class Where:
            def __getitem__(self, index):
                time.sleep(0.3)
                return ray.get_runtime_context().get_node_id()

        ray = connect_ray({address!r})
        assert len(ray.nodes()) == 2, ray.nodes()
        print(len(set(RayTasks({address!r}).map_in_order(Where(), 12))))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "2"


def test_a_cli_scan_on_the_cluster_finds_what_a_local_scan_finds(
    cluster: tuple[str, dict[str, str]], bundle: Path, tmp_path: Path
) -> None:
    address, env = cluster
    world: ScanWorld = make_scan_world(tmp_path / "world", n_studies=4)
    common = [
        "scan",
        str(world.archive),
        "--boxes",
        str(world.boxes),
        "--model",
        str(bundle),
        "--threshold",
        "0.5",
        "--device",
        "cpu",
        "--batch-size",
        "2",
    ]

    def scan(out: str, *extra: str) -> Path:
        done = subprocess.run(
            [sys.executable, "-m", "auditor", *common, "--out", str(tmp_path / out), *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return tmp_path / out / "findings.csv"

    on_cluster = scan("ray", "--engine", "ray", "--ray-address", address)
    assert on_cluster.read_bytes() == scan("local", "--workers", "1").read_bytes()
