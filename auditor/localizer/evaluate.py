"""Measuring a localizer against ground-truth boxes: detection, levels, fractured bodies, speed.

Matching is per image and level-blind: detections (whole bodies with a level, including S1) are
matched greedily, highest IoU first, to truth boxes at IoU >= 0.5. Truth bodies marked partial
(cut by the image edge) are neither required nor counted against the localizer: a detection that
matches one is ignored. Figures:

- recall: matched whole truth bodies / whole truth bodies (overall, fractured bodies, per level);
- precision: matched detections / (detections - detections matching a partial truth body);
- mean IoU over matched pairs;
- level accuracy: matched pairs whose level equals the truth level, overall, on images whose truth
  has the sacrum (S1) in view, and on the others; also split by the anchor the localizer used;
- speed: wall seconds per radiograph of :meth:`Localizer.locate` after one warm-up call
  (reading the file excluded, and reported separately), on the machine it runs on.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from auditor.boxes import read_box_file
from auditor.errors import InputFileError, ReadError, TlauditError
from auditor.files import atomic_path, csv_safe, write_text_atomic
from auditor.io.radiograph import read_radiograph
from auditor.localizer.bundle import record_figures
from auditor.localizer.geometry import box_iou
from auditor.localizer.infer import Localizer, LocalizerResult, load_localizer

logger = logging.getLogger(__name__)

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class EvalItem:
    """One radiograph with its truth: level names, boxes, partial and fracture flags."""

    name: str
    pixels: npt.NDArray[np.float32]
    boxes: npt.NDArray[np.float32]  # (N, 4) xyxy, image pixels
    levels: tuple[str, ...]
    partial: npt.NDArray[np.bool_]
    fractured: npt.NDArray[np.bool_]
    pixel_spacing_mm: tuple[float, float] | None = None
    read_seconds: float = 0.0


@dataclass(frozen=True)
class ImageOutcome:
    """Per-image counts (kept for the per-image CSV)."""

    name: str
    truth_whole: int
    truth_partial: int
    detections: int
    matched: int
    ignored: int
    level_correct: int
    sacrum_in_view: bool
    anchor: str
    level_confidence: float
    seconds: float
    reason: str


@dataclass(frozen=True)
class LocalizerReport:
    """Figures of one evaluation run (see the module docstring for definitions)."""

    images: int
    truth_bodies: int
    fractured_bodies: int
    detections: int
    recall: float
    precision: float
    recall_fractured: float
    mean_iou: float
    level_accuracy: float
    level_accuracy_sacrum: float
    level_accuracy_no_sacrum: float
    images_sacrum: int
    recall_by_level: dict[str, float]
    level_accuracy_by_anchor: dict[str, float]
    anchors: dict[str, int]
    seconds_per_image: float
    read_seconds_per_image: float
    machine: str
    bundle: str
    failed_images: int = 0
    outcomes: tuple[ImageOutcome, ...] = field(default=(), repr=False)

    def figures(self) -> dict[str, Any]:
        """The summary figures as a JSON-ready dict (without per-image outcomes)."""
        data = asdict(self)
        data.pop("outcomes")
        return data


def _match(
    det: npt.NDArray[np.float32], truth: npt.NDArray[np.float32]
) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU >= threshold: (det index, truth index, iou)."""
    if len(det) == 0 or len(truth) == 0:
        return []
    iou = box_iou(det, truth)
    pairs = []
    used_d: set[int] = set()
    used_t: set[int] = set()
    for flat in np.argsort(-iou, axis=None):
        d, t = divmod(int(flat), iou.shape[1])
        if iou[d, t] < IOU_THRESHOLD:
            break
        if d in used_d or t in used_t:
            continue
        used_d.add(d)
        used_t.add(t)
        pairs.append((d, t, float(iou[d, t])))
    return pairs


def _ratio(num: float, den: float) -> float:
    return round(num / den, 4) if den else float("nan")


def evaluate_items(
    localizer: Localizer,
    items: Iterable[EvalItem],
    progress: Callable[[int], None] | None = None,
) -> LocalizerReport:
    """Run ``localizer`` on each item and compare with its truth (see the module docstring)."""
    outcomes: list[ImageOutcome] = []
    n_truth = n_frac = n_det = n_match = n_frac_match = n_ignored = 0
    ious: list[float] = []
    lev_ok = Counter[str]()
    lev_n = Counter[str]()
    by_level_hit = Counter[str]()
    by_level_n = Counter[str]()
    anchors = Counter[str]()
    anchor_ok = Counter[str]()
    anchor_n = Counter[str]()
    seconds: list[float] = []
    reads: list[float] = []
    # One warm-up call so the timing is the steady state, not the first call's allocations.
    localizer.locate(np.zeros((64, 48), np.float32))
    for k, item in enumerate(items):
        started = time.perf_counter()
        result: LocalizerResult = localizer.locate(item.pixels, item.pixel_spacing_mm)
        seconds.append(time.perf_counter() - started)
        reads.append(item.read_seconds)
        det = np.array([b.xyxy for b in result.boxes], np.float32).reshape(-1, 4)
        det_levels = [b.level.value for b in result.boxes]
        whole = ~item.partial
        truth_whole = item.boxes[whole]
        truth_levels = [lv for lv, w in zip(item.levels, whole, strict=True) if w]
        truth_frac = item.fractured[whole]
        pairs = _match(det, truth_whole)
        matched_d = {d for d, _, _ in pairs}
        rest = [d for d in range(len(det)) if d not in matched_d]
        ignored = (
            {rest[d] for d, _, _ in _match(det[rest], item.boxes[item.partial])} if rest else set()
        )
        sacrum = "S1" in item.levels
        key = "sacrum" if sacrum else "no_sacrum"
        correct = 0
        for d, t, iou in pairs:
            ious.append(iou)
            ok = det_levels[d] == truth_levels[t]
            correct += ok
            lev_ok[key] += ok
            lev_n[key] += 1
            anchor_ok[result.anchor] += ok
            anchor_n[result.anchor] += 1
            by_level_hit[truth_levels[t]] += 1
            if truth_frac[t]:
                n_frac_match += 1
        for lv in truth_levels:
            by_level_n[lv] += 1
        anchors[result.anchor] += 1
        n_truth += len(truth_whole)
        n_frac += int(truth_frac.sum())
        n_det += len(det)
        n_match += len(pairs)
        n_ignored += len(ignored)
        outcomes.append(
            ImageOutcome(
                name=item.name,
                truth_whole=len(truth_whole),
                truth_partial=int(item.partial.sum()),
                detections=len(det),
                matched=len(pairs),
                ignored=len(ignored),
                level_correct=correct,
                sacrum_in_view=sacrum,
                anchor=result.anchor,
                level_confidence=round(result.level_confidence, 4),
                seconds=round(seconds[-1], 4),
                reason=result.reason,
            )
        )
        if progress is not None:
            progress(k + 1)
    return LocalizerReport(
        images=len(outcomes),
        truth_bodies=n_truth,
        fractured_bodies=n_frac,
        detections=n_det,
        recall=_ratio(n_match, n_truth),
        precision=_ratio(n_match, n_det - n_ignored),
        recall_fractured=_ratio(n_frac_match, n_frac),
        mean_iou=round(float(np.mean(ious)), 4) if ious else float("nan"),
        level_accuracy=_ratio(sum(lev_ok.values()), sum(lev_n.values())),
        level_accuracy_sacrum=_ratio(lev_ok["sacrum"], lev_n["sacrum"]),
        level_accuracy_no_sacrum=_ratio(lev_ok["no_sacrum"], lev_n["no_sacrum"]),
        images_sacrum=sum(o.sacrum_in_view for o in outcomes),
        recall_by_level={lv: _ratio(by_level_hit[lv], n) for lv, n in sorted(by_level_n.items())},
        level_accuracy_by_anchor={a: _ratio(anchor_ok[a], n) for a, n in anchor_n.items()},
        anchors=dict(anchors),
        seconds_per_image=round(float(np.mean(seconds)), 4) if seconds else float("nan"),
        read_seconds_per_image=round(float(np.mean(reads)), 4) if reads else float("nan"),
        machine=f"{platform.machine()} {platform.processor() or ''} torch threads "
        f"{torch.get_num_threads()}".strip(),
        bundle=str(localizer.path or localizer.card.name),
        outcomes=tuple(outcomes),
    )


def _partial_flags(path: Path) -> dict[int, bool]:
    """Row number -> partial flag from a ground-truth CSV's optional ``partial`` column."""
    if path.suffix.lower() != ".csv":
        return {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        names = {n.strip().lower(): n for n in reader.fieldnames or []}
        if "partial" not in names:
            return {}
        column = names["partial"]
        return {
            i: (row.get(column) or "").strip().lower() in ("1", "true", "yes")
            for i, row in enumerate(reader, start=1)
        }


def archive_items(
    archive: Path, annotations: Path, failures: list[str] | None = None
) -> Iterator[EvalItem]:
    """Evaluation items from an archive and a box / ground-truth file (CSV or COCO JSON).

    Rows are grouped by ``image`` (archive-relative path). The ``label`` column marks fractured
    bodies; an optional ``partial`` column (as in the synthetic world's ``ground_truth.csv``)
    marks bodies cut by the image edge. Images that cannot be read are skipped and named in
    ``failures``.

    Raises
    ------
    InputFileError
        When the annotation file cannot be read as a whole, or names no image by path.
    """
    box_file = read_box_file(annotations)
    for err in box_file.errors:
        logger.warning("%s: skipped %s", annotations, err)
    partial = _partial_flags(Path(annotations))
    grouped: dict[str, list[Any]] = {}
    for box in box_file.rows:
        if box.image:
            grouped.setdefault(box.image, []).append(box)
    if not grouped:
        raise InputFileError(f"{annotations}: no row names an image path (the 'image' column)")
    root = Path(archive).resolve()
    for name in sorted(grouped):
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            logger.warning("%s: image %s lies outside the archive; skipped", annotations, name)
            continue
        started = time.perf_counter()
        try:
            radiograph = read_radiograph(path)
        except ReadError as err:
            logger.warning("cannot read %s: %s", name, err.reason)
            if failures is not None:
                failures.append(name)
            continue
        rows = grouped[name]
        yield EvalItem(
            name=name,
            pixels=radiograph.pixels,
            boxes=np.array([b.xyxy for b in rows], np.float32).reshape(-1, 4),
            levels=tuple(b.level.value for b in rows),
            partial=np.array([partial.get(b.row, False) for b in rows], bool),
            fractured=np.array([b.label == 1 for b in rows], bool),
            pixel_spacing_mm=radiograph.meta.pixel_spacing_mm,
            read_seconds=time.perf_counter() - started,
        )


def write_report(report: LocalizerReport, out_dir: Path) -> tuple[Path, Path]:
    """Write ``localizer_report.json`` (figures) and ``localizer_images.csv`` (per image), each
    atomically; image names that a spreadsheet would read as a formula are neutralised
    (:func:`auditor.files.csv_safe`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = out_dir / "localizer_report.json"
    write_text_atomic(summary, json.dumps(report.figures(), indent=2) + "\n")
    per_image = out_dir / "localizer_images.csv"
    with atomic_path(per_image) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        names = list(ImageOutcome.__dataclass_fields__)
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for outcome in report.outcomes:
            writer.writerow({key: csv_safe(value) for key, value in asdict(outcome).items()})
    return summary, per_image


def evaluate_localizer(
    bundle_path: Path | None,
    archive: Path,
    annotations: Path,
    out_dir: Path,
    progress: Callable[[int], None] | None = None,
    record: bool = False,
) -> LocalizerReport:
    """Evaluate a localizer bundle on an annotated archive and write the report files.

    Parameters
    ----------
    bundle_path
        Localizer bundle folder; None for the bundled default.
    archive
        Archive root the annotation paths are relative to.
    annotations
        Box file or ground truth (CSV or COCO JSON) with truth boxes and levels; ``label``
        marks fractured bodies, an optional ``partial`` column bodies cut by the edge.
    out_dir
        Folder for ``localizer_report.json`` and ``localizer_images.csv``.
    progress
        Called with the number of images done.
    record
        Also store the figures in the bundle's card (``figures``), naming the archive and
        annotation file they were measured on.

    Raises
    ------
    BundleError, InputFileError
        For an unusable bundle or annotation file.
    """
    localizer = load_localizer(bundle_path)
    failures: list[str] = []
    items = archive_items(Path(archive), Path(annotations), failures)
    report = evaluate_items(localizer, items, progress)
    report = _with_failures(report, len(failures))
    if report.images == 0:
        raise TlauditError(
            f"no annotated image in {archive} could be read ({len(failures)} failed)"
        )
    write_report(report, out_dir)
    if record and localizer.path is not None:
        record_figures(
            localizer.path,
            report.figures(),
            f"archive {Path(archive).resolve()}, annotations {Path(annotations).resolve()}",
        )
    return report


def _with_failures(report: LocalizerReport, failed: int) -> LocalizerReport:
    return replace(report, failed_images=failed)
