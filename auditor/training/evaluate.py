"""``tlaudit evaluate``: run a bundle on a labelled set and measure what the source study measured.

data (labelled crops, decoded once) -> predictions and heatmaps (the same :class:`Classifier`
``scan`` uses) -> :class:`Evaluation` (metrics with exact and DeLong intervals by patient and
their minimum-count marks (:mod:`auditor.training.intervals`), every operating point with its
study-level figures and QA workload (:mod:`auditor.training.studies`), the reliability diagram and
expected calibration error (:mod:`auditor.training.reliability`), per-level and per-AO-type
sensitivity, heatmap localisation) -> reports (:mod:`auditor.training.report`).

Heatmap localisation: for each true-positive crop with a ground-truth fracture zone, the zone
polygon is mapped into crop pixel coordinates and the crop counts as localised when the pixel
holding the heatmap's maximum lies inside the polygon (its centre, with a half-pixel tolerance).
The source study's surgeons judged the same question by eye for 81 % of its heatmaps.

A peak can sit in the zone while most of the map lies elsewhere, and a supervised map finds the
zone nearly always, so the same crops also get a graded score: the share of the heatmap's mass
on the zone's pixels (the energy-based pointing game of Wang et al. 2020, Score-CAM), reported
next to the zone's share of the crop's pixels, which is what a flat map would score.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.path import Path as PolygonPath

from auditor.checksums import file_sha256
from auditor.model.bundle import ModelBundle, OperatingPoint, load_bundle
from auditor.model.infer import Classifier, select_device
from auditor.records import is_positive, positives
from auditor.training.data import CropSet, load_crop_set, zone_mask
from auditor.training.metrics import BinaryMetrics, binary_metrics, sensitivity_by
from auditor.training.reliability import Reliability, reliability
from auditor.training.studies import StudyLevel, study_level
from auditor.vocab import DEFAULT_HEATMAP, Level

logger = logging.getLogger(__name__)

#: The source study's figures on its 52-crop test set (Sanchez-Rosenberg et al., Fig. 4 and 5).
STUDY_FIGURES: dict[str, dict[str, float]] = {
    "resnet18": {"accuracy": 0.88, "sensitivity": 0.89, "specificity": 0.88, "auc": 0.88},
    "vgg16": {"accuracy": 0.84, "sensitivity": 0.89, "specificity": 0.79, "auc": 0.86},
}
STUDY_LOCALISATION = 0.81
#: How many example crops of each kind the report shows.
N_EXAMPLES = 8


@dataclass(frozen=True)
class EvaluateConfig:
    """Options of an evaluation run."""

    operating_point: str | None = None
    device: str = "auto"
    precision: str = "auto"
    heatmap_method: str = DEFAULT_HEATMAP
    batch_size: int = 64
    n_bootstrap: int = 2000
    """Patient-bootstrap resamples for the expected calibration error's interval."""
    seed: int = 0


@dataclass(frozen=True)
class Example:
    """A crop shown in the report, with its heatmap."""

    kind: str  # "true positive", "false negative", "false positive"
    image: str
    level: str
    label: int
    prob: float
    crop: npt.NDArray[np.float32] = field(repr=False)
    cam: npt.NDArray[np.float32] = field(repr=False)
    zone: npt.NDArray[np.float64] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Localisation:
    """Share of true-positive crops whose heatmap maximum lies in the fracture zone, and the
    mean share of their heatmaps' mass in the zone against the zone's mean share of the crop."""

    hits: int
    total: int
    energy: float = math.nan
    zone_share: float = math.nan

    @property
    def score(self) -> float:
        return self.hits / self.total if self.total else float("nan")


@dataclass(frozen=True)
class Evaluation:
    """Everything ``tlaudit evaluate`` measured."""

    bundle: ModelBundle
    archive: Path
    annotations: Path
    annotations_sha256: str
    data: CropSet
    probs: npt.NDArray[np.float32]
    cam_peak_in_zone: tuple[bool | None, ...]
    operating_point: OperatingPoint
    headline: BinaryMetrics
    at_points: dict[str, BinaryMetrics]
    studies: dict[str, StudyLevel]
    """Study-level figures and QA workload at every operating point of the card."""
    reliability: Reliability
    by_level: dict[str, dict[str, float | int]]
    by_ao_type: dict[str, dict[str, float | int]]
    by_genant_grade: dict[str, dict[str, float | int]]
    localisation: Localisation | None
    heatmap_method: str
    examples: tuple[Example, ...]
    device: str
    seconds: float

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        return self.data.labels

    @property
    def predicted(self) -> npt.NDArray[np.bool_]:
        return positives(self.probs, self.operating_point.threshold)

    def study_comparison(self) -> list[tuple[str, float, float | None]]:
        """(metric, ours, the study's for this architecture) rows for the terminal table."""
        study = STUDY_FIGURES.get(self.bundle.card.architecture, {})
        h = self.headline
        rows: list[tuple[str, float, float | None]] = [
            ("accuracy", h.accuracy.value, study.get("accuracy")),
            ("sensitivity", h.sensitivity.value, study.get("sensitivity")),
            ("specificity", h.specificity.value, study.get("specificity")),
            ("AUC", h.auc.value, study.get("auc")),
        ]
        if self.localisation is not None:
            rows.append(
                (
                    f"heatmap localisation ({self.heatmap_method})",
                    self.localisation.score,
                    STUDY_LOCALISATION,
                )
            )
        return rows

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``evaluation.json`` holds)."""
        card = self.bundle.card
        op = self.operating_point
        return {
            "model": card.name,
            "architecture": card.architecture,
            "bundle_sha256": self.bundle.sha256,
            "archive": str(self.archive),
            "annotations": str(self.annotations),
            "annotations_sha256": self.annotations_sha256,
            "data": self.data.summary(),
            "operating_point": {"name": op.name, "threshold": op.threshold},
            "metrics": self.headline.as_dict(),
            "study_level": self.studies[op.name].as_dict() if op.name in self.studies else None,
            "reliability": self.reliability.as_dict(),
            "operating_points": {
                name: {
                    "threshold": card.operating_points[name].threshold,
                    "accuracy": m.confusion.accuracy,
                    "sensitivity": m.confusion.sensitivity,
                    "specificity": m.confusion.specificity,
                    "ppv": m.confusion.ppv,
                    "npv": m.confusion.npv,
                    "confusion": m.as_dict()["confusion"],
                    "intervals": {
                        key: value
                        for key, value in m.as_dict().items()
                        if key in ("accuracy", "sensitivity", "specificity", "ppv", "npv")
                    },
                    "study_level": self.studies[name].as_dict(),
                }
                for name, m in self.at_points.items()
            },
            "sensitivity_by_level": self.by_level,
            "sensitivity_by_ao_type": self.by_ao_type,
            "sensitivity_by_genant_grade": self.by_genant_grade,
            "localisation": None
            if self.localisation is None
            else {
                "hits": self.localisation.hits,
                "total": self.localisation.total,
                "score": self.localisation.score,
                "energy_in_zone": self.localisation.energy,
                "zone_area_share": self.localisation.zone_share,
                "heatmap_method": self.heatmap_method,
            },
            "device": self.device,
            "seconds": round(self.seconds, 2),
        }


def peak_in_zone(cam: npt.NDArray[np.float32], zone: npt.NDArray[np.float64]) -> bool:
    """True when the heatmap's maximum (its centre, +- half a pixel) lies in ``zone``.

    ``zone`` is a (K, 2) polygon of ``[x, y]`` crop coordinates, where pixel (row r, column c)
    covers [c, c+1) x [r, r+1); the peak counts when its pixel's centre or a corner is inside.
    Where the maximum is a plateau of equal pixels, its centroid is the peak.
    """
    # Bilinear upsampling clamps at the borders, so a peak in an edge cell is a flat plateau;
    # its centroid, not its first pixel, is where the map points.
    rows, cols = np.nonzero(cam >= cam.max() - 1e-6)
    r, c = float(rows.mean()), float(cols.mean())
    polygon = PolygonPath(np.asarray(zone, dtype=np.float64))
    # the peak pixel's centre and corners: it counts when it touches the zone
    probes = np.array([[c + 0.5, r + 0.5], [c, r], [c + 1, r], [c, r + 1], [c + 1, r + 1]], float)
    return bool(polygon.contains_points(probes).any())


def zone_energy(cam: npt.NDArray[np.float32], zone: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(share of the heatmap's mass on the zone's pixels, share of the crop's pixels in the zone).

    Pixels count as in the zone when their centres are (:func:`auditor.training.data.zone_mask`).
    A map with no mass scores 0.
    """
    mask = zone_mask(zone, cam.shape[-1])
    total = float(cam.sum(dtype=np.float64))
    inside = float(cam[mask].sum(dtype=np.float64))
    return (inside / total if total > 0 else 0.0), float(mask.mean())


def evaluate_bundle(
    bundle_path: Path | None,
    archive: Path,
    annotations: Path,
    config: EvaluateConfig,
    ground_truth: Path | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Evaluation:
    """Score a labelled set with a bundle and compute every figure of the evaluation report.

    Parameters
    ----------
    bundle_path
        Bundle folder (None: the bundled default model).
    archive, annotations
        The labelled set: archive root and a box file with labels.
    config
        Device, precision, batch size, bootstrap settings and operating point.
    ground_truth
        Optional ``ground_truth.csv`` holding ``fracture_zone`` polygons (for localisation).
    on_progress
        Callback ``(stage, done, total)`` with stage ``"decode"`` or ``"classify"``.

    Raises
    ------
    BundleError, InputFileError, UsageError
        For an unusable bundle, annotation file or device.
    """
    start = time.perf_counter()
    bundle = load_bundle(bundle_path)
    card = bundle.card
    op = card.operating_point(config.operating_point)
    data = load_crop_set(
        archive,
        annotations,
        card.input_size,
        card.crop_margin,
        ground_truth=ground_truth,
        on_image=(lambda d, t: on_progress("decode", d, t)) if on_progress else None,
    )
    clf = Classifier(bundle, select_device(config.device), config.precision, config.heatmap_method)
    n = len(data.records)
    labels = data.labels
    probs = np.zeros(n, dtype=np.float32)
    in_zone: list[bool | None] = [None] * n
    energies: list[tuple[float, float]] = []
    for lo in range(0, n, config.batch_size):
        hi = min(lo + config.batch_size, n)
        # heatmaps only where localisation is scored: crops called positive
        pred = clf.predict(clf.preprocess(data.crops[lo:hi]), cam=True, cam_min_prob=op.threshold)
        assert pred.cams is not None
        probs[lo:hi] = pred.probs
        for j, i in enumerate(range(lo, hi)):
            zone = data.records[i].fracture_zone
            if labels[i] == 1 and is_positive(pred.probs[j], op.threshold) and zone is not None:
                in_zone[i] = peak_in_zone(pred.cams[j], zone)
                energies.append(zone_energy(pred.cams[j], zone))
        if on_progress:
            on_progress("classify", hi, n)
    predicted = positives(probs, op.threshold)
    headline = binary_metrics(labels, probs, op.threshold, groups=data.groups)
    at_points = {
        name: binary_metrics(labels, probs, p.threshold, groups=data.groups)
        for name, p in card.operating_points.items()
    }
    # a study is its UID, or its image where the annotations give none
    study_keys = [r.study_uid or r.image for r in data.records]
    studies = {
        name: study_level(
            labels, positives(probs, p.threshold), study_keys, data.groups, p.threshold
        )
        for name, p in card.operating_points.items()
    }
    calibration = reliability(
        labels, probs, data.groups, n_bootstrap=config.n_bootstrap, seed=config.seed
    )
    levels = [r.level for r in data.records]
    ao = [r.ao_type or "unknown" for r in data.records]
    grades = [
        str(r.genant_grade) if r.genant_grade is not None else "unknown" for r in data.records
    ]
    scored = [v for v in in_zone if v is not None]
    localisation = (
        Localisation(
            sum(scored),
            len(scored),
            energy=float(np.mean([e for e, _ in energies])),
            zone_share=float(np.mean([z for _, z in energies])),
        )
        if scored
        else None
    )
    examples = _examples(clf, data, probs, predicted)
    seconds = time.perf_counter() - start
    logger.info("evaluated %d crops in %.1fs on %s", n, seconds, clf.describe())
    return Evaluation(
        bundle=bundle,
        archive=Path(archive),
        annotations=Path(annotations),
        annotations_sha256=file_sha256(Path(annotations)),
        data=data,
        probs=probs,
        cam_peak_in_zone=tuple(in_zone),
        operating_point=op,
        headline=headline,
        at_points=at_points,
        studies=studies,
        reliability=calibration,
        by_level=_cranial_to_caudal(sensitivity_by(labels, predicted, levels)),
        by_ao_type=sensitivity_by(labels, predicted, ao),
        by_genant_grade=sensitivity_by(labels, predicted, grades),
        localisation=localisation,
        heatmap_method=clf.heatmap,
        examples=examples,
        device=clf.describe(),
        seconds=seconds,
    )


def _cranial_to_caudal(
    by_level: dict[str, dict[str, float | int]],
) -> dict[str, dict[str, float | int]]:
    """Levels in anatomical order (T10 first), as a radiologist reads them; unknown names last."""

    def rank(name: str) -> tuple[int, str]:
        try:
            return Level.parse(name).order, name
        except ValueError:
            return len(Level), name

    return dict(sorted(by_level.items(), key=lambda kv: rank(kv[0])))


def _examples(
    clf: Classifier,
    data: CropSet,
    probs: npt.NDArray[np.float32],
    predicted: npt.NDArray[np.bool_],
) -> tuple[Example, ...]:
    """The most confident true positives, the worst false negatives and false positives, with
    their heatmaps (recomputed for these few crops only)."""
    labels = data.labels.astype(bool)
    picks: list[tuple[str, int]] = []
    for kind, mask, order in (
        ("true positive", labels & predicted, -probs),
        ("false negative", labels & ~predicted, probs),
        ("false positive", ~labels & predicted, -probs),
    ):
        idx = np.flatnonzero(mask)
        picks.extend(
            (kind, int(i)) for i in idx[np.argsort(order[idx], kind="stable")][:N_EXAMPLES]
        )
    if not picks:
        return ()
    chosen = np.array([i for _, i in picks])
    pred = clf.predict(clf.preprocess(data.crops[chosen]), cam=True)
    assert pred.cams is not None
    return tuple(
        Example(
            kind=kind,
            image=data.records[i].image,
            level=data.records[i].level,
            label=int(data.labels[i]),
            prob=float(probs[i]),
            crop=data.crops[i],
            cam=pred.cams[k],
            zone=data.records[i].fracture_zone,
        )
        for k, (kind, i) in enumerate(picks)
    )
