"""``tlaudit bench``: how fast is a scan, and how much of it is the model?

Two measurements on the machine it runs on, with the same model bundle, device, precision and
batch size:

* **model-only**: random crops, already preprocessed and in memory, through
  :meth:`Classifier.predict`, without heatmaps and with a heatmap for every crop (the worst case,
  ``--heatmaps all``). Rounds alternate the two, and the median batch time of each is used, so
  that a burst of load from other processes hits both alike.
* **end-to-end**: a real :func:`~auditor.scan.pipeline.run_scan` over an archive (a synthetic one
  written first by :func:`auditor.synth.archive.write_archive`, uncompressed unless asked
  otherwise, or one the user gives with its box file): inventory and triage, decoding, cropping,
  classification, heatmap thumbnails, journal and the three reports, timed from start to end.

It reports vertebrae per second for each, the ratio end-to-end / model-only without heatmaps
(the share of the bare classifier's speed a scan keeps, heatmaps included), and the heatmap
overhead over classification alone: in the scan itself (heatmaps for positive vertebrae only,
timed inside the scan), and as a worst case for every crop, with and without drawing an overlay
thumbnail for each. CAM and ``layercam4`` come from the classifying pass and cost little;
``layercam`` needs a second pass with autograd.

Where the scan's wall time went (:attr:`BenchResult.stages`) comes from the timers the scan keeps
itself (``ScanResult.timings``, :class:`~auditor.scan.classify.ClassifyStats`): inventory, the
localizer, the wait for the loader (decoding, cropping and the transfer of batches that the model
did not hide), the model, the heatmap pass, thumbnails, journal, reports, and the rest (model
loading, run folder, worker start-up). Decoding and cropping run in the loader's worker processes,
overlapped with the model, so the scan cannot time them on its path; the bench times them apart
(:func:`measure_loader`: the same reader and crop code, in this process, on up to
``loader_sample`` of the scan's images, in CPU time on one thread) and gives them as
worker-seconds over the scan's wall time (:attr:`BenchResult.worker_stages`), which may exceed
100 % with several workers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import queue
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from auditor.errors import TlauditError, UsageError
from auditor.model.bundle import ModelCard, create_untrained_bundle, load_bundle
from auditor.model.infer import Classifier, select_device
from auditor.parallel import connect_ray
from auditor.reports.thumbnails import heatmap_overlay, save_jpeg
from auditor.scan.config import (
    HeatmapMode,
    ScanConfig,
    ScanResult,
    default_workers,
)
from auditor.scan.dataset import THUMB_SIZE
from auditor.scan.pipeline import run_scan
from auditor.vocab import DEFAULT_HEATMAP, Engine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark.

    Either ``archive`` (with ``boxes``) or ``studies`` (a synthetic archive of that many studies).
    ``untrained_input_size`` benchmarks a randomly initialised ResNet18 of that input size instead
    of a bundle (the same speed as trained weights of the same shape).
    """

    archive: Path | None = None
    boxes: Path | None = None
    studies: int = 16
    seed: int = 0
    compressed: bool = False
    max_side: int = 3000
    model: Path | None = None
    untrained_input_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    heatmap_method: str = DEFAULT_HEATMAP
    batch_size: int = 32
    workers: int | None = None
    rounds: int = 3
    work_dir: Path | None = None
    localizer: bool = True
    localizer_model: Path | None = None
    localizer_scan: bool = False
    # also scan the archive with its box file with and without the image check (alternated)
    image_check_scan: bool = False
    threads: int | None = None  # the scan's model threads (None: as the scan picks them)
    loader_sample: int = 32  # images timed apart for the decode and crop figures (0: none)
    # also scan with --engine ray (on the cluster at ray_address; None: a local Ray instance),
    # alternating with the local engine, to measure Ray's overhead
    ray: bool = False
    ray_address: str | None = None
    model_in_workers: bool = False  # the scan's workers run the model too (scan --model-in-workers)


@dataclass(frozen=True)
class BenchResult:
    """Measured throughputs and where the scan's time went."""

    machine: str
    device: str
    model: str
    input_size: int
    batch_size: int
    workers: int
    model_only_vps: float  # vertebrae/s with a heatmap for every crop (worst case)
    model_only_no_cam_vps: float  # vertebrae/s, classification alone
    overlay_s: float  # seconds to draw and write one heatmap overlay thumbnail
    end_to_end_vps: float
    n_images: int
    n_vertebrae: int
    heatmaps_drawn: int
    scan_timings: dict[str, float]
    heatmap_method: str  # the method the scan and the "every crop" timing used
    localizer_images: int = 0
    localizer_s_per_image: float | None = None  # network + decoding, median per radiograph
    localizer_read_s_per_image: float | None = None  # reading the file, median per radiograph
    # scans without a box file: crops cut from the localizer's decode, and decoded a second time
    localizer_scan_vps: float | None = None
    localizer_scan_decode_twice_vps: float | None = None
    # scans with the box file, with and without the image check: wall seconds, best of each
    image_check_on_s: float | None = None
    image_check_off_s: float | None = None
    threads: int = 0  # torch threads of the scan's model
    loader_images: int = 0  # images timed apart by measure_loader
    decode_s_per_image: float | None = None  # reading and decoding, mean per image
    crop_s_per_image: float | None = None  # cutting, thumbnails and preview, mean per image
    # --ray: end-to-end vertebrae/s of the scans alternated between the engines (best of each)
    ray_vps: float | None = None
    ray_local_vps: float | None = None
    ray_cpus: int = 0  # CPUs of the Ray cluster
    # classification alone, one model per core on one thread each, all at once (CPU only)
    model_per_core_vps: float | None = None
    model_in_workers: bool = False  # the scan ran the model in its workers

    @property
    def ray_overhead(self) -> float | None:
        """Ray's cost over the local engine on the same archive: local / Ray throughput - 1."""
        if not self.ray_vps or not self.ray_local_vps:
            return None
        return self.ray_local_vps / self.ray_vps - 1.0

    @property
    def stages(self) -> list[tuple[str, float]]:
        """The scan's wall time by stage, in seconds, from its own timers; they add up to
        ``total_s`` ("other" is the rest: model loading, run folder, worker start-up)."""
        t = self.scan_timings
        maps = t.get("heatmap_maps_s", 0.0)
        # with the image check, the workers also make each image's localizer canvas
        cut = "decode, crop, canvas" if "image_check_s" in t else "decode, crop"
        parts = [
            ("inventory and triage", t.get("inventory_s", 0.0)),
            ("localizer", t.get("localizer_s", 0.0)),
            ("image check (localizer loading, guard network)", t.get("image_check_s", 0.0)),
            (
                f"wait for the workers ({cut} and model)"
                if self.model_in_workers
                else f"loader wait ({cut}, transfer not hidden)",
                t.get("loader_wait_s", 0.0),
            ),
            (
                "model" + (", in this process" if self.model_in_workers else ""),
                t.get("model_s", 0.0) - maps,
            ),
            ("heatmap pass", maps),
            ("thumbnails", t.get("heatmap_thumbnails_s", 0.0)),
            ("journal", t.get("journal_s", 0.0)),
            ("reports", t.get("reports_s", 0.0)),
        ]
        total = t.get("total_s", 0.0)
        parts.append(("other", max(0.0, total - sum(seconds for _, seconds in parts))))
        return parts

    @property
    def worker_stages(self) -> list[tuple[str, float]]:
        """Decoding and cropping of all the scan's images, in worker-seconds, estimated from
        :func:`measure_loader`'s means; overlapped with the model in the loader's workers."""
        if self.decode_s_per_image is None or self.crop_s_per_image is None:
            return []
        return [
            ("decode (in the workers)", self.decode_s_per_image * self.n_images),
            ("crop (in the workers)", self.crop_s_per_image * self.n_images),
        ]

    def shares(self, stages: list[tuple[str, float]]) -> list[tuple[str, float, float]]:
        """``stages`` with each one's share of the scan's wall time."""
        total = self.scan_timings.get("total_s", 0.0)
        return [(name, seconds, seconds / total if total else 0.0) for name, seconds in stages]

    @property
    def image_check_ratio(self) -> float | None:
        """A scan's time with the image check over its time without (None: not measured)."""
        if not self.image_check_on_s or not self.image_check_off_s:
            return None
        return self.image_check_on_s / self.image_check_off_s

    @property
    def precut_speedup(self) -> float | None:
        """Localizer-path scan throughput with one decode per image over two decodes."""
        if not self.localizer_scan_vps or not self.localizer_scan_decode_twice_vps:
            return None
        return self.localizer_scan_vps / self.localizer_scan_decode_twice_vps

    @property
    def model_only_best_vps(self) -> float:
        """The machine's model-only throughput without heatmaps: the faster of one model on
        torch's threads and one model per core (when measured)."""
        return max(self.model_only_no_cam_vps, self.model_per_core_vps or 0.0)

    @property
    def ratio(self) -> float:
        """End-to-end throughput as a share of the machine's model-only throughput without
        heatmaps (:attr:`model_only_best_vps`)."""
        if not self.model_only_best_vps:
            return 0.0
        return self.end_to_end_vps / self.model_only_best_vps

    @property
    def cam_overhead(self) -> float:
        """Extra model time with a heatmap for every crop over classification alone (0.05 = 5 %)."""
        if not self.model_only_vps:
            return 0.0
        return self.model_only_no_cam_vps / self.model_only_vps - 1.0

    @property
    def scan_heatmap_overhead(self) -> float:
        """In the end-to-end scan: the heatmaps' time over classification alone. The heatmaps'
        time is the separate heatmap pass (none for ``cam`` and ``layercam4``, which come from
        the classifying pass) plus drawing and writing their overlay thumbnails; classification
        alone is the rest of the model time."""
        maps = self.scan_timings.get("heatmap_maps_s", 0.0)
        thumbnails = self.scan_timings.get("heatmap_thumbnails_s", 0.0)
        rest = self.scan_timings.get("model_s", 0.0) - maps
        return (maps + thumbnails) / rest if rest > 0 else 0.0

    @property
    def heatmap_overhead_all(self) -> float:
        """Worst case: heatmaps plus an overlay thumbnail for every vertebra, over classification
        alone (a scan draws overlays only for positive vertebrae unless ``--heatmaps all``)."""
        if not self.model_only_vps or not self.model_only_no_cam_vps:
            return 0.0
        plain = 1.0 / self.model_only_no_cam_vps
        return (1.0 / self.model_only_vps + self.overlay_s) / plain - 1.0


def describe_machine() -> str:
    """CPU model, cores, torch threads and SIMD level, e.g. for the README."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} cores ({capability}), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads{gpu}"
    )


@dataclass(frozen=True)
class ModelTimes:
    """Per-batch seconds of the model with and without heatmaps, and of drawing one overlay."""

    with_cam: tuple[float, ...]
    without_cam: tuple[float, ...]
    overlay_s: float

    def merged(self, other: ModelTimes) -> ModelTimes:
        """Both sets of rounds together (the overlay time of the later set)."""
        return ModelTimes(
            self.with_cam + other.with_cam, self.without_cam + other.without_cam, other.overlay_s
        )


def measure_model_only(
    classifier: Classifier, batch_size: int, rounds: int, scratch: Path, warm_up: bool = True
) -> ModelTimes:
    """Time the model on random crops, with and without heatmaps, and the overlay drawing.

    Parameters
    ----------
    classifier
        The model on its device.
    batch_size
        Crops per batch.
    rounds
        Timed rounds; each runs one batch with heatmaps and one without, alternating so that load
        from other processes hits both alike.
    scratch
        Folder for the overlay thumbnails written while timing their drawing.
    warm_up
        Run one untimed batch each way first (allocator, oneDNN/cuDNN kernel choice).
    """
    size = classifier.card.input_size
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn((batch_size, 3, size, size), generator=generator)
    if classifier.device.type == "cuda":
        batch = batch.pin_memory()
    if warm_up:
        classifier.predict(batch, cam=True)
        classifier.predict(batch, cam=False)
    times: dict[bool, list[float]] = {True: [], False: []}
    cams = None
    for _ in range(max(1, rounds)):
        for cam in (True, False):
            start = time.perf_counter()
            prediction = classifier.predict(batch, cam=cam)  # numpy out: the device is done
            times[cam].append(time.perf_counter() - start)
            if cam:
                cams = prediction.cams
    assert cams is not None
    crop = (torch.rand((THUMB_SIZE, THUMB_SIZE), generator=generator) * 255).to(torch.uint8)
    start = time.perf_counter()
    for index in range(len(cams)):
        overlay = heatmap_overlay(crop.numpy(), cams[index])
        save_jpeg(overlay, scratch / f"overlay-{index}.jpg")
    return ModelTimes(
        tuple(times[True]), tuple(times[False]), (time.perf_counter() - start) / len(cams)
    )


#: Seconds :func:`measure_model_per_core` waits for its copies, which report in well under a
#: minute on a 2-core CPU; a copy that dies is reported at once, not after this.
PER_CORE_TIMEOUT_S = 600


def _model_on_one_core(
    model: Path | None,
    precision: str,
    heatmap_method: str,
    batch_size: int,
    rounds: int,
    start: Any,
    results: Any,
) -> None:
    """One copy of :func:`measure_model_per_core`: in its own process, on one thread."""
    torch.set_num_threads(1)
    classifier = Classifier(load_bundle(model), torch.device("cpu"), precision, heatmap_method)
    size = classifier.card.input_size
    batch = torch.randn((batch_size, 3, size, size), generator=torch.Generator().manual_seed(0))
    classifier.predict(batch, cam=False)  # warm-up: allocator, oneDNN kernel choice
    start.wait()
    times = []
    for _ in range(rounds):
        begin = time.perf_counter()
        classifier.predict(batch, cam=False)
        times.append(time.perf_counter() - begin)
    results.put(times)


def measure_model_per_core(
    model: Path | None,
    precision: str,
    heatmap_method: str,
    batch_size: int,
    rounds: int,
    copies: int,
) -> float:
    """Vertebrae/s of ``copies`` copies of the model on the CPU, one process and one thread each,
    all running at once: the arrangement of ``scan --model-in-workers`` and of the Ray engine's
    tasks, whose model-only reference this is. Each copy times ``rounds`` batches of random crops
    without heatmaps after a warm-up; the result is the sum of each copy's batch size over its
    median batch time. The processes are spawned (a fresh interpreter each), and only the
    batches are timed, not their start-up.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(copies)
    results = context.Queue()
    args = (model, precision, heatmap_method, batch_size, rounds, start, results)
    processes = [context.Process(target=_model_on_one_core, args=args) for _ in range(copies)]
    for process in processes:
        process.start()
    times: list[list[float]] = []
    deadline = time.monotonic() + PER_CORE_TIMEOUT_S
    try:
        while len(times) < copies:
            try:
                times.append(results.get(timeout=0.5))
                continue
            except queue.Empty:
                pass
            # A copy that died (killed for memory, a bundle that fails to load) never reports:
            # say so at once instead of waiting out the deadline.
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise TlauditError(
                    f"a model copy of the one-model-per-core measure died (exit code {dead[0]}; "
                    "a negative code is the signal that killed it, e.g. -9 when out of memory)"
                )
            if time.monotonic() > deadline:
                raise TlauditError(
                    f"the one-model-per-core measure did not finish in {PER_CORE_TIMEOUT_S} s"
                )
    finally:
        if len(times) < copies:
            start.abort()  # copies still waiting for the others to start give up
            for process in processes:
                process.terminate()
        for process in processes:
            process.join()
    return sum(batch_size / statistics.median(each) for each in times)


def measure_localizer(
    archive: Path, bundle: Path | None = None, device: torch.device | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Seconds per candidate radiograph of ``archive``: (locating, reading), one entry each.

    Locating is :meth:`Localizer.locate` (letterbox, network, decoding, level naming) on the
    decoded pixels, on ``device`` (default: the CPU); reading is :func:`read_radiograph`. The
    first image is located twice and its first (warm-up) time dropped. Unreadable files are
    skipped.
    """
    from auditor.archive.inventory import inventory
    from auditor.errors import ReadError
    from auditor.io.radiograph import read_radiograph
    from auditor.localizer import load_localizer
    from auditor.vocab import FileStatus

    loc = load_localizer(bundle, device)
    locate_s: list[float] = []
    read_s: list[float] = []
    for record in inventory(archive):
        if record.status is not FileStatus.CANDIDATE:
            continue
        start = time.perf_counter()
        try:
            radiograph = read_radiograph(record.path)
        except ReadError:
            continue
        read_s.append(time.perf_counter() - start)
        if not locate_s:
            loc.locate(radiograph.pixels)  # warm-up
        start = time.perf_counter()
        loc.locate(radiograph.pixels)
        locate_s.append(time.perf_counter() - start)
    return tuple(locate_s), tuple(read_s)


@dataclass(frozen=True)
class LoaderTimes:
    """Seconds per image of the loader's work, timed apart: reading and decoding, and the rest
    (cutting the crops, their thumbnails and the report preview, preprocessing)."""

    decode: tuple[float, ...]
    crop: tuple[float, ...]


def measure_loader(archive: Path, boxes: Path, card: ModelCard, limit: int) -> LoaderTimes:
    """Time the scan loader's per-image work on the first ``limit`` images of ``archive`` that
    ``boxes`` gives boxes for, in this process.

    Each image is read with :func:`~auditor.io.radiograph.read_radiograph` (decode), then taken
    through :class:`~auditor.scan.dataset.VertebraCropDataset` (decode again, then crop), so the
    crop time is the second time less the first, and the code timed is the scan's own. It runs
    on one torch thread, as a loader worker does, and the times are that thread's CPU time
    (:func:`time.thread_time`): other processes' load inflates it far less than wall time, and
    the model's idle threads, which spin for a while after the scan's last batch, do not count.
    """
    from auditor.archive.inventory import inventory
    from auditor.boxes import read_box_file, resolve_boxes
    from auditor.errors import READ_FAILURES
    from auditor.io.radiograph import read_radiograph
    from auditor.scan.dataset import ImageJob, VertebraCropDataset
    from auditor.vocab import FileStatus

    records = [r for r in inventory(archive) if r.status is FileStatus.CANDIDATE]
    paths = {r.relpath: r.path for r in records}
    metas = {r.relpath: r.meta for r in records if r.meta is not None}
    resolved = resolve_boxes(read_box_file(boxes).rows, metas)
    jobs = [
        ImageJob(image, paths[image], tuple(found))
        for image, found in list(resolved.by_image.items())[: max(0, limit)]
    ]
    dataset = VertebraCropDataset(jobs, card)
    decode: list[float] = []
    crop: list[float] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for index, job in enumerate(jobs):
            start = time.thread_time()
            try:
                read_radiograph(job.path)
            except READ_FAILURES:
                continue
            middle = time.thread_time()
            dataset[index]
            end = time.thread_time()
            decode.append(middle - start)
            crop.append(max(0.0, (end - middle) - (middle - start)))
    finally:
        torch.set_num_threads(threads)
    return LoaderTimes(tuple(decode), tuple(crop))


def _synthetic_archive(config: BenchConfig, work: Path) -> tuple[Path, Path]:
    from auditor.synth.archive import write_archive
    from auditor.synth.config import SynthConfig

    synth = SynthConfig(
        max_side=config.max_side,
        compressed_share=0.6 if config.compressed else 0.0,
        uncompressed=not config.compressed,  # distractors too: no JPEG encoder needed
    )
    out = work / "world"
    write_archive(out, config.studies, config.seed, synth, workers=max(1, (os.cpu_count() or 1)))
    return out / "archive", out / "boxes.csv"


def run_bench(config: BenchConfig, say: Callable[[str], None] | None = None) -> BenchResult:
    """Measure model-only and end-to-end scan throughput (see the module docstring).

    Parameters
    ----------
    config
        What to measure.
    say
        Optional callback for progress messages.

    Raises
    ------
    UsageError
        When ``archive`` is given without ``boxes``, or options are out of range.
    BundleError
        When the model bundle cannot be loaded.
    """
    tell = say or (lambda message: None)
    if config.archive is not None and config.boxes is None:
        raise UsageError("--archive needs --boxes (the box file of that archive)")
    if config.batch_size < 1 or config.rounds < 1 or config.studies < 1:
        raise UsageError("--batch-size, --rounds and --studies must be at least 1")
    with tempfile.TemporaryDirectory(prefix="tlaudit-bench-", dir=config.work_dir) as tmp:
        work = Path(tmp)
        model_path = config.model
        if config.untrained_input_size is not None:
            model_path = create_untrained_bundle(
                work / "untrained", "resnet18", config.untrained_input_size, seed=0
            )
        bundle = load_bundle(model_path)
        classifier = Classifier(
            bundle, select_device(config.device), config.precision, config.heatmap_method
        )
        tell(f"Model {bundle.card.name} on {classifier.describe()}")
        tell(f"Model-only: rounds of {config.batch_size} random crops, with and without heatmaps")
        # Half the model-only rounds before the scan and half after, so that a change in the
        # load from other processes during the run weighs on both measurements alike.
        first = (config.rounds + 1) // 2
        times = measure_model_only(classifier, config.batch_size, first, work)

        if config.archive is not None and config.boxes is not None:
            archive, boxes = config.archive, config.boxes
        else:
            tell(f"Writing a synthetic archive of {config.studies} studies (not timed)")
            archive, boxes = _synthetic_archive(config, work)
        workers = default_workers() if config.workers is None else config.workers
        tell(f"End-to-end: scanning {archive} with {workers} loader workers")
        scan_config = ScanConfig(
            archive=archive,
            out=work / "run",
            boxes=boxes,
            model=model_path,
            localizer=config.localizer_model,
            device=config.device,
            precision=config.precision,
            heatmap_method=config.heatmap_method,
            batch_size=config.batch_size,
            workers=workers,
            threads=config.threads,
            heatmaps=HeatmapMode.POSITIVE,
            model_in_workers=config.model_in_workers,
        )
        scan: ScanResult = run_scan(scan_config)
        threads = torch.get_num_threads() if config.threads is None else config.threads
        if config.rounds - first > 0:
            tell(f"Model-only again: {config.rounds - first} rounds")
            times = times.merged(
                measure_model_only(
                    classifier, config.batch_size, config.rounds - first, work, warm_up=False
                )
            )
        per_core = None
        cores = os.cpu_count() or 1
        if classifier.device.type == "cpu" and cores > 1:
            tell(f"Model-only, one model per core: {cores} processes of one thread each")
            per_core = measure_model_per_core(
                model_path,
                config.precision,
                config.heatmap_method,
                config.batch_size,
                max(3, 2 * config.rounds),
                cores,
            )
        localizer_vps: dict[bool, float] = {}
        if config.localizer_scan:
            # Alternate the two ways (twice each, best kept) so that load changes hit both alike.
            for attempt, precut in enumerate((True, False, True, False)):
                tell(f"Scan without a box file, {'one decode' if precut else 'two decodes'}")
                run_dir = work / f"localizer-run-{attempt}"
                result = run_scan(
                    dataclasses.replace(scan_config, out=run_dir, boxes=None, precut=precut)
                )
                shutil.rmtree(run_dir, ignore_errors=True)
                vps = result.n_vertebrae / result.timings["total_s"]
                localizer_vps[precut] = max(vps, localizer_vps.get(precut, 0.0))
        checked: dict[bool, float] = {}
        if config.image_check_scan:
            # Alternate the two (three times each, best kept) so that load changes hit both alike.
            for attempt, check in enumerate((True, False) * 3):
                tell(f"Scan with the box file, image check {'on' if check else 'off'}")
                run_dir = work / f"image-check-run-{attempt}"
                result = run_scan(dataclasses.replace(scan_config, out=run_dir, image_check=check))
                shutil.rmtree(run_dir, ignore_errors=True)
                total = result.timings["total_s"]
                checked[check] = min(total, checked.get(check, float("inf")))
        engines: dict[Engine, float] = {}
        ray_cpus = 0
        if config.ray:
            # Alternate the engines (twice each, best kept) so that load changes hit both alike;
            # the first Ray scan also starts the local Ray instance, as a user's first scan would.
            for attempt, engine in enumerate((Engine.RAY, Engine.LOCAL, Engine.RAY, Engine.LOCAL)):
                tell(f"Scan with --engine {engine.value}")
                run_dir = work / f"engine-run-{attempt}"
                result = run_scan(
                    dataclasses.replace(
                        scan_config,
                        out=run_dir,
                        engine=engine,
                        ray_address=config.ray_address if engine is Engine.RAY else None,
                    )
                )
                shutil.rmtree(run_dir, ignore_errors=True)
                vps = result.n_vertebrae / result.timings["total_s"]
                engines[engine] = max(vps, engines.get(engine, 0.0))
            ray_cpus = int(connect_ray(config.ray_address).cluster_resources().get("CPU", 0))
        locate_s: tuple[float, ...] = ()
        read_s: tuple[float, ...] = ()
        loader = LoaderTimes((), ())
        if config.loader_sample > 0:
            tell(f"Loader: decoding and cropping up to {config.loader_sample} images apart")
            loader = measure_loader(archive, boxes, bundle.card, config.loader_sample)
        if config.localizer:
            tell("Localizer: locating every candidate radiograph of the archive")
            locate_s, read_s = measure_localizer(archive, config.localizer_model, classifier.device)
    timings = dict(scan.timings)
    return BenchResult(
        machine=describe_machine(),
        device=classifier.describe(),
        model=bundle.card.name,
        input_size=bundle.card.input_size,
        batch_size=config.batch_size,
        workers=workers,
        model_only_vps=config.batch_size / statistics.median(times.with_cam),
        model_only_no_cam_vps=config.batch_size / statistics.median(times.without_cam),
        model_per_core_vps=per_core,
        model_in_workers=config.model_in_workers,
        overlay_s=times.overlay_s,
        end_to_end_vps=scan.n_vertebrae / timings["total_s"] if timings["total_s"] else 0.0,
        n_images=scan.n_images,
        n_vertebrae=scan.n_vertebrae,
        heatmaps_drawn=int(timings.get("heatmaps_drawn", 0)),
        scan_timings=timings,
        heatmap_method=classifier.heatmap,
        localizer_images=len(locate_s),
        localizer_s_per_image=statistics.median(locate_s) if locate_s else None,
        localizer_read_s_per_image=statistics.median(read_s) if read_s else None,
        localizer_scan_vps=localizer_vps.get(True),
        localizer_scan_decode_twice_vps=localizer_vps.get(False),
        image_check_on_s=checked.get(True),
        image_check_off_s=checked.get(False),
        threads=threads,
        loader_images=len(loader.decode),
        decode_s_per_image=statistics.mean(loader.decode) if loader.decode else None,
        crop_s_per_image=statistics.mean(loader.crop) if loader.crop else None,
        ray_vps=engines.get(Engine.RAY),
        ray_local_vps=engines.get(Engine.LOCAL),
        ray_cpus=ray_cpus,
    )
