"""What ``run_scan`` is asked to do, what it reports while running, and what it returns."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from auditor.archive.triage import TriageRules
from auditor.errors import UsageError
from auditor.records import DomainCheck, ReadsCheck, StudyStatus
from auditor.reports.limits import DEFAULT_EMBED_LIMIT, DEFAULT_TABLE_LIMIT
from auditor.vocab import (
    DEFAULT_HEATMAP,
    BoxFormat,
    Device,
    Engine,
    HeatmapMethod,
    HeatmapMode,
    Precision,
)

if TYPE_CHECKING:
    from auditor.archive.inventory import FileRecord
    from auditor.scan.feed import ImageFeed

_Choice = TypeVar("_Choice", bound=Enum)


def _coerce(kind: type[_Choice], value: object, what: str) -> _Choice:
    """``value`` as a member of ``kind`` (its value in any case), or a UsageError naming both."""
    if isinstance(value, kind):
        return value
    try:
        return kind(str(value).strip().lower())
    except ValueError:
        names = ", ".join(str(member.value) for member in kind)
        raise UsageError(f"unknown {what} {value!r}; expected one of {names}") from None


@dataclass(frozen=True)
class ScanConfig:
    """Everything ``tlaudit scan`` was asked to do.

    ``operating_point`` and ``threshold`` exclude each other; with neither, the model card's
    default operating point is used. Without ``boxes`` the vertebra localizer (``localizer``, or
    the bundled one when None) finds them. ``workers`` None picks a count for this machine.
    ``device``, ``precision``, ``heatmap_method`` and ``box_format`` (how the box file states
    its boxes) may be given as their enums' values (any case) and are coerced to the enums.

    Raises
    ------
    UsageError
        For an unknown device, precision, heatmap method or box format.
    """

    archive: Path
    out: Path
    boxes: Path | None = None
    box_format: BoxFormat | str = BoxFormat.AUTO
    reads: Path | None = None
    model: Path | None = None
    localizer: Path | None = None
    operating_point: str | None = None
    threshold: float | None = None
    device: Device | str = Device.AUTO
    precision: Precision | str = Precision.AUTO
    heatmap_method: HeatmapMethod | str = DEFAULT_HEATMAP
    batch_size: int = 32
    workers: int | None = None
    threads: int | None = None  # torch threads of the classifier (None: torch's own count)
    # where the crops are decoded and cut: worker processes here, or Ray tasks on the cluster at
    # ray_address (None: a Ray instance started on this machine); the model runs in this process
    engine: Engine | str = Engine.LOCAL
    ray_address: str | None = None
    # the local engine's worker processes classify the crops they cut too (one model and one
    # thread each) instead of this process running the model beside them; CPU only
    model_in_workers: bool = False
    resume: bool = False
    pseudonymise: bool = False
    pseudonym_salt: str | None = None
    heatmaps: HeatmapMode = HeatmapMode.POSITIVE
    triage: TriageRules = field(default_factory=TriageRules)
    verify_pixels: bool = False
    embed_limit: int = DEFAULT_EMBED_LIMIT
    table_limit: int = DEFAULT_TABLE_LIMIT
    # without a box file, cut the crops from the localizer's decode (RUN_DIR/precut)
    precut: bool = True
    # refuse a model without a domain guard; the command exits 1 when the archive is out of domain
    strict_domain: bool = False
    # with a box file, the localizer's domain guard checks each whole image beside classification
    # (auditor.scan.image_check): None runs it when the localizer bundle has a guard, True
    # requires one, False turns it off
    image_check: bool | None = None
    # the reports link each study to the PACS viewer through this URL template (``{study_uid}``
    # is replaced, URL-encoded) instead of a run-relative file path; "" for file links
    viewer_url: str = ""
    # A scan of a PACS (auditor.pacs): ``archive`` is the folder of retrieved candidates,
    # ``extra_records`` the accounting rows of the instances not retrieved (skipped, failed), and
    # ``source`` names the PACS in the reports instead of that folder.
    extra_records: tuple[FileRecord, ...] = ()
    source: str = ""
    # A streamed PACS scan (auditor.pacs.stream): ``records`` are every instance's accounting
    # row from the query, in place of a walk of ``archive`` (whose files arrive while the scan
    # runs), and ``feed`` brings the images' files into ``archive`` (auditor.scan.feed).
    records: tuple[FileRecord, ...] | None = None
    feed: ImageFeed | None = None
    # the reads file: (role, export column names) the user gave (auditor.reads.columns), report
    # rule files extending the shipped ones, and whether a reads warning makes the command fail
    reads_columns: tuple[tuple[str, tuple[str, ...]], ...] = ()
    reads_rules: tuple[Path, ...] = ()
    strict_reads: bool = False

    def __post_init__(self) -> None:
        # Coerce at the boundary: callers may pass plain strings and str paths.
        object.__setattr__(self, "heatmaps", HeatmapMode(self.heatmaps))
        object.__setattr__(self, "device", _coerce(Device, self.device, "device"))
        object.__setattr__(self, "precision", _coerce(Precision, self.precision, "precision"))
        object.__setattr__(
            self, "heatmap_method", _coerce(HeatmapMethod, self.heatmap_method, "heatmap method")
        )
        object.__setattr__(self, "box_format", _coerce(BoxFormat, self.box_format, "box format"))
        object.__setattr__(self, "engine", _coerce(Engine, self.engine, "engine"))
        object.__setattr__(self, "archive", Path(self.archive))
        object.__setattr__(self, "out", Path(self.out))
        for name in ("boxes", "reads", "model", "localizer"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))


@dataclass(frozen=True)
class ScanEvent:
    """Progress reported to the caller: a message, or batch progress."""

    kind: str  # "info" (message), "start" (total vertebrae to classify), "batch" (advance)
    message: str = ""
    total: int = 0
    advance: int = 0


@dataclass(frozen=True)
class ScanResult:
    """What a finished scan produced."""

    run_dir: Path
    reports: dict[str, Path]
    headline: str
    device: str
    threshold: float
    n_files: int
    n_candidates: int
    n_images: int
    n_vertebrae: int
    n_positive: int
    n_flagged: int
    status_counts: dict[StudyStatus, int]
    n_errors: int
    timings: dict[str, float]
    domain: DomainCheck | None = None
    reads: ReadsCheck | None = None  # how the reads file served the scan (None: no reads file)


Progress = Callable[[ScanEvent], None]


def default_workers() -> int:
    """Worker processes for crop loading: one per spare core, at least one, at most four."""
    cores = os.cpu_count() or 1
    return max(1, min(4, cores - 1))


def default_decode_workers() -> int:
    """Worker processes decoding images for the localizer: one per core, at most four.

    The localizer's network is light next to decoding (about 30 against 160 ms for a compressed
    1500 px synthetic image on this project's 2-core machine), so the main process mostly waits
    and every core can decode; the crop loader instead leaves a core to the classifier.
    """
    return max(1, min(4, os.cpu_count() or 1))
