"""``tlaudit bench --pacs URL``: how fast is a scan through DICOMweb, next to a scan of the files?

Measured in one run, on one archive that is both on disk and in the PACS, with the same model,
device, batch size and loader workers:

* **QIDO-RS triage**: the study queries, the instance listings and the triage of every instance
  from its metadata (:func:`auditor.pacs.source.triage_instances`), ``rounds`` times; instances
  per second of the median round;
* **WADO-RS retrieval**: every candidate retrieved into an empty cache (what
  :func:`auditor.pacs.source.gather` times as ``retrieve_s``); instances and megabytes per second;
* **the file scan**: :func:`auditor.scan.pipeline.run_scan` on the archive's folder, wall time;
* **the PACS scan**: :func:`auditor.pacs.scan.scan_pacs` on the PACS, wall time from the first
  query to the cache removed. An untimed file scan goes first (the first scan of a process pays
  some seconds for imports and the first use of the model's kernels), then ``scan_rounds``
  pairs, the PACS scan first in odd rounds and second in even ones;
* their **ratio**, file-scan wall time over PACS-scan wall time, the median of the rounds': the
  share of the file scan's throughput the PACS scan keeps (the same images are classified in
  both; the bench checks it).

The bench starts no server: the PACS at ``--pacs`` must hold the archive (``--upload`` sends its
DICOM files with STOW-RS first, untimed). docs/speed.md says how to start an Orthanc for it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom

from auditor.archive.triage import TriageRules
from auditor.errors import UsageError
from auditor.pacs.retry import call
from auditor.pacs.scan import scan_pacs
from auditor.pacs.source import PacsSource, Sessions, gather, triage_instances
from auditor.scan.config import HeatmapMode, ScanConfig, default_workers


@dataclass(frozen=True)
class PacsBenchConfig:
    """What to benchmark: ``archive`` with its ``boxes`` (the archive the PACS holds), or a
    synthetic archive of ``studies`` studies written first (then ``upload`` it)."""

    source: PacsSource
    archive: Path | None = None
    boxes: Path | None = None
    studies: int = 16
    seed: int = 0
    max_side: int = 3000
    upload: bool = False
    model: Path | None = None
    untrained_input_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 32
    workers: int | None = None
    threads: int | None = None
    rounds: int = 3
    scan_rounds: int = 3
    work_dir: Path | None = None


@dataclass(frozen=True)
class PacsBenchResult:
    """What :func:`run_pacs_bench` measured; seconds unless named otherwise."""

    machine: str
    load: tuple[float, float]  # 1-minute load average at the start and at the end
    connections: int
    workers: int
    instances: int  # rows of the PACS query (every instance of the studies asked for)
    candidates: int
    qido_s: tuple[float, ...]  # one entry per round
    qido_cpu_s: tuple[float, ...]  # this process's CPU time (all threads) in each round
    wado_instances: int
    wado_bytes: int
    wado_s: float
    file_scan_s: float  # median of the rounds
    pacs_scan_s: float
    file_scans_s: tuple[float, ...]  # each round's
    pacs_scans_s: tuple[float, ...]
    pacs_inner_scans_s: tuple[float, ...]  # inside each PACS scan: the scan of its cache
    pacs_query_s: float  # inside the PACS scan: querying and triage
    pacs_retrieve_s: float  # inside the PACS scan: retrieval (beside the scan of the images)
    images: int  # images classified by each scan
    vertebrae: int
    mismatch: str = ""  # how the two scans differ ("" when they classified the same)
    peak_cache_bytes: int = 0  # the most the last PACS scan's cache held at once
    cache_cap_bytes: int = 0  # against its cap (--cache-cap-mb)

    @property
    def qido_ips(self) -> float:
        """Instances triaged from QIDO-RS metadata per second (median round)."""
        seconds = statistics.median(self.qido_s) if self.qido_s else 0.0
        return self.instances / seconds if seconds else 0.0

    @property
    def qido_cpu_share(self) -> float:
        """This process's CPU time over the wall time of the QIDO-RS rounds (the rest is the
        PACS's work and the network)."""
        return sum(self.qido_cpu_s) / sum(self.qido_s) if sum(self.qido_s) else 0.0

    @property
    def wado_ips(self) -> float:
        """Instances retrieved per second."""
        return self.wado_instances / self.wado_s if self.wado_s else 0.0

    @property
    def wado_mbps(self) -> float:
        """Megabytes (10^6 bytes) retrieved per second."""
        return self.wado_bytes / 1e6 / self.wado_s if self.wado_s else 0.0

    @property
    def ratios(self) -> tuple[float, ...]:
        """Each round's file-scan wall time over its PACS-scan wall time."""
        return tuple(
            f / p if p else 0.0 for f, p in zip(self.file_scans_s, self.pacs_scans_s, strict=True)
        )

    @property
    def own_share(self) -> float:
        """The scan of the cache over the whole PACS scan, within each PACS scan (median): what
        the ratio would be if scanning the cache took as long as scanning the archive's folder,
        free of the load changes between two scans."""
        shares = [
            i / p for i, p in zip(self.pacs_inner_scans_s, self.pacs_scans_s, strict=True) if p
        ]
        return statistics.median(shares) if shares else 0.0

    @property
    def ratio(self) -> float:
        """PACS-scan throughput as a share of the file scan's: the median of the rounds' file
        wall time over PACS wall time (the two scans of a round run back to back, so a change
        in the load from other processes weighs on both)."""
        return statistics.median(self.ratios) if self.ratios else 0.0

    def rows(self) -> list[tuple[str, str]]:
        """The figures as (measure, value) rows, for the command's table."""
        return [
            ("Machine", self.machine),
            ("Load average (1 min), start / end", f"{self.load[0]:.2f} / {self.load[1]:.2f}"),
            ("Requests in flight / loader workers", f"{self.connections} / {self.workers}"),
            ("PACS instances / candidates", f"{self.instances} / {self.candidates}"),
            ("QIDO-RS triage (instances/s)", f"{self.qido_ips:.0f}"),
            ("QIDO-RS triage: tlaudit's CPU over wall time", f"{self.qido_cpu_share:.0%}"),
            ("WADO-RS retrieval (instances/s)", f"{self.wado_ips:.1f}"),
            ("WADO-RS retrieval (MB/s)", f"{self.wado_mbps:.0f}"),
            ("File scan wall time (s), median", f"{self.file_scan_s:.2f}"),
            ("PACS scan wall time (s), median", f"{self.pacs_scan_s:.2f}"),
            (
                "Each round, file / PACS (s)",
                ", ".join(
                    f"{f:.2f} / {p:.2f}"
                    for f, p in zip(self.file_scans_s, self.pacs_scans_s, strict=True)
                ),
            ),
            (
                "Last PACS scan (s): query / retrieval (beside the scan) / scan",
                f"{self.pacs_query_s:.2f} / {self.pacs_retrieve_s:.2f} / "
                f"{self.pacs_inner_scans_s[-1]:.2f}",
            ),
            (
                "Last PACS scan: cache at most / cap (MB)",
                f"{self.peak_cache_bytes / 1e6:.1f} / {self.cache_cap_bytes / 1e6:g}",
            ),
            ("Images / vertebrae classified", f"{self.images} / {self.vertebrae}"),
            (
                "PACS scan / file scan throughput, median of the rounds",
                f"{self.ratio:.2f} ({', '.join(f'{r:.2f}' for r in self.ratios)})",
            ),
            ("PACS scan: its scan / whole, median", f"{self.own_share:.2f}"),
        ]


def upload_archive(archive: Path, sessions: Sessions, source: PacsSource) -> tuple[int, int]:
    """Send every DICOM file of ``archive`` that decodes with STOW-RS, one at a time; returns
    (sent, left out). Files that are not DICOM, or whose pixels do not decode (a truncated
    file, which some PACS accept), are left out, as a PACS would not hold them."""
    sent = left_out = 0
    for path in sorted(p for p in archive.rglob("*") if p.is_file()):
        try:
            with warnings.catch_warnings():  # a truncated file warns, then fails: left out
                warnings.simplefilter("ignore")
                dataset = pydicom.dcmread(path)
                dataset.pixel_array  # noqa: B018
        except Exception:
            left_out += 1
            continue
        call(
            f"STOW-RS {path.name}",
            functools.partial(sessions.client().store_instances, [dataset]),
            source.retry,
        )
        sent += 1
    return sent, left_out


def _synthetic_archive(config: PacsBenchConfig, work: Path) -> tuple[Path, Path]:
    from auditor.synth.archive import write_archive
    from auditor.synth.config import SynthConfig

    synth = SynthConfig(max_side=config.max_side, compressed_share=0.0, uncompressed=True)
    out = work / "world"
    write_archive(out, config.studies, config.seed, synth, workers=max(1, os.cpu_count() or 1))
    return out / "archive", out / "boxes.csv"


def run_pacs_bench(
    config: PacsBenchConfig, say: Callable[[str], None] | None = None
) -> PacsBenchResult:
    """Measure QIDO-RS triage, WADO-RS retrieval, and a PACS scan next to a file scan (see the
    module docstring).

    Raises
    ------
    UsageError
        When ``archive`` comes without ``boxes``, or the PACS holds no candidate of it.
    PacsAuthError, PacsError
        When the PACS refuses the credentials or cannot be queried.
    """
    from auditor.scan.pipeline import run_scan  # torch loads here

    tell = say or (lambda message: None)
    if config.archive is not None and config.boxes is None:
        raise UsageError("--archive needs --boxes (the box file of that archive)")
    if config.rounds < 1 or config.batch_size < 1 or config.scan_rounds < 1:
        raise UsageError("--rounds, --scan-rounds and --batch-size must be at least 1")
    load_start = os.getloadavg()[0]
    source, rules = config.source, TriageRules()
    sessions = Sessions(source.connection)
    with tempfile.TemporaryDirectory(prefix="tlaudit-pacs-bench-", dir=config.work_dir) as tmp:
        work = Path(tmp)
        if config.archive is not None and config.boxes is not None:
            archive, boxes = config.archive, config.boxes
        else:
            tell(f"Writing a synthetic archive of {config.studies} studies (not timed)")
            archive, boxes = _synthetic_archive(config, work)
        if config.upload:
            sent, left_out = upload_archive(archive, sessions, source)
            tell(f"STOW-RS: {sent} files sent to {source.connection.url}, {left_out} left out")
        model = config.model
        if config.untrained_input_size is not None:
            from auditor.model.bundle import create_untrained_bundle

            model = create_untrained_bundle(
                work / "untrained", "resnet18", config.untrained_input_size, seed=0
            )

        tell(f"QIDO-RS triage, {config.rounds} rounds")
        qido_s: list[float] = []
        qido_cpu_s: list[float] = []
        with ThreadPoolExecutor(source.connections, thread_name_prefix="tlaudit-bench") as pool:
            for _ in range(config.rounds):
                start, cpu = time.perf_counter(), time.process_time()
                records = list(triage_instances(sessions, source, rules, work / "cache", pool))
                qido_s.append(time.perf_counter() - start)
                qido_cpu_s.append(time.process_time() - cpu)

        tell("WADO-RS retrieval of every candidate")
        # every candidate, whatever the PACS scan's cap (which only that scan is about)
        retrieval = gather(dataclasses.replace(source, cache_cap_mb=1e9), rules, work / "wado")
        shutil.rmtree(work / "wado", ignore_errors=True)
        if not retrieval.retrieved:
            raise UsageError(
                f"the PACS at {source.connection.url} holds no candidate to retrieve; load the "
                "archive into it (--upload)"
            )

        workers = default_workers() if config.workers is None else config.workers
        scan = ScanConfig(
            archive=archive,
            out=work / "pacs-run",
            boxes=boxes,
            model=model,
            device=config.device,
            precision=config.precision,
            batch_size=config.batch_size,
            workers=workers,
            threads=config.threads,
            heatmaps=HeatmapMode.POSITIVE,
        )
        tell("Warm-up: a file scan, not timed")
        run_scan(dataclasses.replace(scan, out=work / "warm-up"))
        pacs_runs: list[float] = []
        pacs_inner: list[float] = []
        file_runs: list[float] = []
        for attempt in range(config.scan_rounds):
            # alternate which scan goes first, so that a change in load hits both alike
            for kind in ("pacs", "file") if attempt % 2 == 0 else ("file", "pacs"):
                out = work / f"{kind}-run-{attempt}"
                start = time.perf_counter()
                if kind == "pacs":
                    tell(f"PACS scan {attempt + 1} of {source.connection.url}")
                    pacs = scan_pacs(dataclasses.replace(scan, out=out), source)
                    pacs_runs.append(time.perf_counter() - start)
                    pacs_inner.append(pacs.scan.timings.get("total_s", 0.0))
                else:
                    tell(f"File scan {attempt + 1} of {archive}")
                    files = run_scan(dataclasses.replace(scan, out=out))
                    file_runs.append(time.perf_counter() - start)

    mismatch = ""
    if (pacs.scan.n_images, pacs.scan.n_vertebrae) != (files.n_images, files.n_vertebrae):
        mismatch = (
            f"the PACS scan classified {pacs.scan.n_images} images ({pacs.scan.n_vertebrae} "
            f"vertebrae), the file scan {files.n_images} ({files.n_vertebrae}): the PACS does "
            "not hold the same archive"
        )
    return PacsBenchResult(
        machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        load=(load_start, os.getloadavg()[0]),
        connections=source.connections,
        workers=workers,
        instances=len(records),
        candidates=retrieval.retrieved,
        qido_s=tuple(qido_s),
        qido_cpu_s=tuple(qido_cpu_s),
        wado_instances=retrieval.retrieved,
        wado_bytes=retrieval.retrieved_bytes,
        wado_s=retrieval.retrieve_s,
        file_scan_s=statistics.median(file_runs),
        pacs_scan_s=statistics.median(pacs_runs),
        file_scans_s=tuple(file_runs),
        pacs_scans_s=tuple(pacs_runs),
        pacs_inner_scans_s=tuple(pacs_inner),
        pacs_query_s=pacs.gathered.query_s,
        pacs_retrieve_s=pacs.gathered.retrieve_s,
        images=files.n_images,
        vertebrae=files.n_vertebrae,
        mismatch=mismatch,
        peak_cache_bytes=pacs.stream.peak_bytes if pacs.stream else 0,
        cache_cap_bytes=int(source.cache_cap_mb * 1e6),
    )
