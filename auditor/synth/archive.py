"""Writing a whole synthetic world: the PACS-like archive and its box, truth and reads files.

Layout of ``OUT``::

    archive/<PatientID>/<AccessionNumber>/<SeriesNumber>_<Modality>/<SOPInstanceUID>.dcm
    boxes.csv, boxes.json            a box per visible vertebral body, no labels (what a scan gets)
    ground_truth.csv, ground_truth.json   the same boxes with label, AO type, Genant grade, ratios,
                                     fracture zone, partial flag, variants
    reads.csv                        the original read per lateral study (some studies have none):
                                     structured columns and a free-text report in one of five
                                     languages
    reads_truth.csv                  what each report says per level (affirmed, old, uncertain,
                                     negated; * study-wide)
    studies.csv                      per lateral study: fractured, reported, planted-miss levels
    manifest.csv                     every file in the archive with its kind and expected triage
    contact_sheet.png                with --preview

Image paths in the tables are relative to ``OUT/archive`` with POSIX separators. The tables'
columns and rows are :mod:`auditor.synth.schemas`'s, the files' headers
:mod:`auditor.synth.instances`', and :mod:`auditor.synth.writers` writes them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from auditor.errors import UsageError
from auditor.parallel import LocalProcesses
from auditor.synth.config import SynthConfig
from auditor.synth.instances import (
    Distractor,
    hosted_instances,
    lateral_instance,
    plan_distractors,
    standalone_instance,
)
from auditor.synth.preview import contact_sheet, save_sheet, study_tile
from auditor.synth.schemas import Tables, manifest_row, study_tables
from auditor.synth.study import generate_study
from auditor.synth.writers import write_instance, write_tables

logger = logging.getLogger(__name__)

OUTPUT_FILES = (
    "boxes.csv",
    "boxes.json",
    "ground_truth.csv",
    "ground_truth.json",
    "reads.csv",
    "reads_truth.csv",
    "studies.csv",
    "manifest.csv",
    "contact_sheet.png",
)
PREVIEW_TILES = 12


@dataclass(frozen=True)
class ArchiveSummary:
    """What :func:`write_archive` wrote."""

    out: Path
    studies: int
    lateral_images: int
    distractors: dict[str, int]
    boxes: int
    fractured_vertebrae: int
    fractured_studies: int
    planted_misses: int
    studies_without_read: int
    archive_bytes: int
    preview: Path | None


def write_archive(
    out: Path,
    studies: int,
    seed: int,
    config: SynthConfig,
    workers: int = 1,
    preview: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveSummary:
    """Generate ``studies`` lateral studies plus distractors and write the world under ``out``.

    Parameters
    ----------
    out
        Output folder (created). Refused if it already holds an archive, unless ``overwrite``,
        which removes ``out/archive`` and the tables this function writes (nothing else).
    studies
        Number of lateral thoracolumbar studies.
    seed
        World seed; the same arguments give byte-identical files.
    config
        World configuration.
    workers
        Processes to generate studies in parallel (output does not depend on it).
    preview
        Also write ``contact_sheet.png`` with the first 12 studies.
    progress
        Called with (done, total) after each task.

    Raises
    ------
    UsageError
        When ``out`` already holds an archive and ``overwrite`` is false, or arguments are invalid.
    """
    if studies < 1:
        raise UsageError(f"--studies must be at least 1; got {studies}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1; got {workers}")
    archive = out / "archive"
    if archive.exists() or any((out / name).exists() for name in OUTPUT_FILES):
        if not overwrite:
            raise UsageError(
                f"{out} already holds a synthetic archive; choose another folder "
                "or pass --overwrite"
            )
        shutil.rmtree(archive, ignore_errors=True)
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    archive.mkdir(parents=True, exist_ok=True)

    distractors = plan_distractors(seed, studies, config)
    hosted: dict[int, list[Distractor]] = {}
    for d in distractors:
        if d.host is not None:
            hosted.setdefault(d.host, []).append(d)
    tasks: list[tuple[str, object]] = [("lateral", i) for i in range(studies)]
    tasks += [("distractor", d) for d in distractors if d.host is None]
    args = [(kind, item, seed, config, str(archive), hosted, preview) for kind, item in tasks]

    results: list[_Written] = []
    total = len(args)
    # --workers 1 writes in this process; more, in that many worker processes (the output does
    # not depend on the count: each task draws from its own seeded stream)
    executor = LocalProcesses(0 if workers == 1 else workers, prefetch=1)
    for k, res in enumerate(executor.map_in_order(_Tasks(args), total)):
        results.append(res)
        if progress:
            progress(k + 1, total)

    merged = Tables()
    for res in results:
        merged.extend(res.tables)
    write_tables(out, merged)
    sheet_path = None
    if preview:
        tiles = [r.tile for r in results if r.tile is not None][:PREVIEW_TILES]
        sheet_path = out / "contact_sheet.png"
        save_sheet(contact_sheet(tiles), sheet_path)

    counts: dict[str, int] = {}
    for d in distractors:
        counts[d.kind] = counts.get(d.kind, 0) + 1
    return ArchiveSummary(
        out=out,
        studies=studies,
        lateral_images=studies,
        distractors=counts,
        boxes=len(merged.boxes),
        fractured_vertebrae=sum(1 for r in merged.truth if r["label"] == "fracture"),
        fractured_studies=sum(1 for r in merged.studies if r["fractured_levels"]),
        planted_misses=sum(1 for r in merged.studies if r["planted_miss_levels"]),
        studies_without_read=sum(1 for r in merged.studies if r["read_present"] == "no"),
        archive_bytes=sum(int(r["bytes"]) for r in merged.manifest),
        preview=sheet_path,
    )


_Task = tuple[str, object, int, SynthConfig, str, dict[int, list[Distractor]], bool]


@dataclass(frozen=True)
class _Written:
    """What one task wrote: its table rows, and its preview tile (lateral studies, --preview)."""

    tables: Tables
    tile: npt.NDArray[np.uint8] | None = None


class _Tasks:
    """The tasks as per-item work for an :class:`~auditor.parallel.Executor`."""

    def __init__(self, tasks: list[_Task]) -> None:
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> _Written:
        return _run_task(self.tasks[index])


def _run_task(args: _Task) -> _Written:
    """One lateral study with its hosted distractors, or one standalone distractor, written."""
    kind, item, seed, config, archive, hosted, preview = args
    root = Path(archive)
    if kind == "lateral":
        assert isinstance(item, int)
        return _lateral(item, seed, config, root, hosted.get(item, []), preview)
    assert isinstance(item, Distractor)
    instance = standalone_instance(item, seed, config)
    tables = Tables()
    tables.manifest.append(manifest_row(instance, write_instance(instance, root)))
    return _Written(tables)


def _lateral(
    index: int, seed: int, config: SynthConfig, root: Path, hosted: list[Distractor], preview: bool
) -> _Written:
    study = generate_study(seed, index, config)
    lateral = lateral_instance(study)
    size = write_instance(lateral, root)
    tables = study_tables(study, lateral.rel)
    tables.manifest.append(manifest_row(lateral, size))
    for instance in hosted_instances(study, hosted, seed, config):
        tables.manifest.append(manifest_row(instance, write_instance(instance, root)))
    return _Written(tables, study_tile(study) if preview and index < PREVIEW_TILES else None)
