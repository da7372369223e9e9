"""The stage guard: the domain guard on the feature maps of an earlier stage of the network.

The first guard (:mod:`auditor.model.guard`) measures the penultimate features, the global
average of the last feature map. On the bundled classifier those place real radiographs and
real vertebrae inside the range of the synthetic training world far too often. Lee et al. (2018,
"A simple unified framework for detecting out-of-distribution samples and adversarial
attacks", NeurIPS) measure the Mahalanobis distance at every stage of the network ("feature
ensemble") and combine them. Lee et al. weight the stages by a logistic regression fitted on
foreign validation samples. A guard has none to fit on, so here each part's distance is divided
by its own held-out quantile and the largest counts.

A *part* describes one stage's output (N, C, H, W) by the spatial mean of each channel, or by
the mean and the spatial standard deviation of each channel (2C numbers, which capture texture
and noise as well as content: :func:`stage_statistics`), optionally scaled to unit length
(Mueller and Hein 2025, "Mahalanobis++", ICML). Like the first guard, each part has one centre
per class and a covariance shrunk by the Ledoit-Wolf rule.

Default (:data:`DEFAULT_PARTS`): for ResNet18 one part, the L2-normalised means and standard
deviations of ``layer3``'s output. The guard was chosen by measurement on the bundled classifier
among single stages and their combinations, by maximum or by sum, with and without the standard
deviations and the normalisation (``docs/models.md`` has the figures). Every combination of
several stages flagged fewer of the real-image crops than ``layer3`` alone, and those that
caught more inverted crops also flagged more held-out ones: with more parts, the held-out
quantile of their maximum rises and each part's flags thin out. An earlier stage (``relu`` to
``layer2``) beside ``layer3``, each at its own quantile, caught no more of the inverted crops
either: those lie just beyond ``layer3``'s threshold, and the threshold quantile decides them.
That choice was made for this network and its stride. For VGG16 nothing was measured, and
:func:`default_method` keeps the penultimate guard (``mahalanobis+l2``).

The stage outputs come from the classifying forward pass: :class:`auditor.model.infer.Classifier`
taps them with forward hooks (:func:`auditor.model.taps.tap_outputs`) and the guard's
statistics and distances are computed on the device, in float32.

Storage: ``guard.safetensors`` holds ``part{i}.centres`` and ``part{i}.covariance`` for each
part; the card's record names each part's stage, statistics, normalisation, width, classes and
scale (:meth:`StageGuard.record`). Loading validates every field against the architecture's
stages (:data:`auditor.model.network.GUARD_STAGES`) and runs no code (:func:`read_stage_guard`,
the one reader of stage guards, a classifier's and a localizer's).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from auditor.bundle_files import checked_sha256, read_weights, write_weights
from auditor.errors import BundleError
from auditor.model.guard import (
    DEFAULT_ARCHIVE_SHARE,
    DEFAULT_QUANTILE,
    GUARD_FILE,
    GUARD_MARKER,
    RECORDED_QUANTILES,
    CountRule,
    DeviceDistances,
    FeatureGuard,
    GuardFeatures,
    _mahalanobis,
    checked_quantiles,
    fit_part,
    read_guard,
    write_guard,
)
from auditor.model.network import GUARD_STAGES, penultimate_width

logger = logging.getLogger(__name__)

STAGE_METHOD = "mahalanobis-stages"
#: What a part measures of each channel of its stage's output: the spatial mean, or the mean
#: and the spatial standard deviation.
STATISTICS = ("mean", "mean+sd")
#: Most parts a guard may have (a bound for loading, far above any useful guard).
MAX_PARTS = 16


@dataclass(frozen=True)
class PartSpec:
    """What one part of a stage guard measures (see the module docstring)."""

    stage: str
    statistics: str = "mean+sd"
    normalised: bool = True


#: The parts of a new guard per architecture (measured on the bundled ResNet18; docs/models.md).
#: An architecture absent here gets the penultimate guard (:func:`default_method`).
DEFAULT_PARTS: dict[str, tuple[PartSpec, ...]] = {"resnet18": (PartSpec("layer3"),)}


def default_method(architecture: str) -> str:
    """The guard method a new fit uses for ``architecture``: :data:`STAGE_METHOD` where
    :data:`DEFAULT_PARTS` has parts for it, else ``mahalanobis+l2``."""
    return STAGE_METHOD if architecture in DEFAULT_PARTS else "mahalanobis+l2"


def stage_statistics(maps: torch.Tensor) -> torch.Tensor:
    """The spatial mean and standard deviation of each channel of (N, C, H, W) ``maps``,
    (N, 2C) float32 on their device: the C means, then the C standard deviations (population
    standard deviation, so a 1 x 1 map gives 0). Computed in float32 even under autocast."""
    with torch.autocast(device_type=maps.device.type, enabled=False):
        x = maps.float()
        n, c = x.shape[:2]
        # Reduced over a view in the maps' own layout (channels-last in the scan): on a 2-core
        # CPU, torch.var_mean over (2, 3) of channels-last maps took 20 times as long. The
        # variance as E[x^2] - E[x]^2 loses about 1e-7 of E[x^2] in float32, far below the
        # spread of a channel's sd between crops that the guard measures.
        if x.is_contiguous(memory_format=torch.channels_last):
            flat, dim = x.permute(0, 2, 3, 1).reshape(n, -1, c), 1
        else:
            flat, dim = x.reshape(n, c, -1), 2
        mean = flat.mean(dim=dim)
        variance = (flat.square().mean(dim=dim) - mean.square()).clamp_min(0.0)
        return torch.cat([mean, variance.sqrt()], dim=1)


@dataclass(frozen=True, eq=False)
class StagePart:
    """One part of a :class:`StageGuard`: a stage's statistics, their centres and shrunk
    covariance, and the held-out quantile its distance is divided by.

    Raises
    ------
    BundleError
        For unknown statistics, a scale that is not a number > 0, or centres and covariance
        that :class:`~auditor.model.guard.FeatureGuard` would refuse.
    """

    stage: str
    statistics: str
    normalised: bool
    centres: npt.NDArray[np.float32] = field(repr=False)
    covariance: npt.NDArray[np.float32] = field(repr=False)
    scale: float = 1.0
    whitener: npt.NDArray[np.float32] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.statistics not in STATISTICS:
            expected = ", ".join(STATISTICS)
            raise BundleError(
                f"guard part statistics {self.statistics!r}; expected one of {expected}"
            )
        if not isinstance(self.normalised, bool):
            raise BundleError(f"guard part normalised {self.normalised!r}; expected true or false")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise BundleError(f"guard part scale {self.scale!r}; expected a number > 0")
        # the same checks as the penultimate guard's: shapes, finite, symmetric positive definite
        checked = FeatureGuard(self.centres, self.covariance, threshold=1.0)
        object.__setattr__(self, "centres", checked.centres)
        object.__setattr__(self, "covariance", checked.covariance)
        object.__setattr__(self, "whitener", checked.whitener)
        object.__setattr__(self, "scale", float(self.scale))

    @property
    def width(self) -> int:
        """Length of the vectors the part measures."""
        return int(self.centres.shape[1])

    def describe(self) -> str:
        what = "channel means" if self.statistics == "mean" else "channel means and sds"
        return f"{'L2-normalised ' if self.normalised else ''}{what} of {self.stage}"


@dataclass(frozen=True, eq=False)
class StageGuard:
    """A domain guard on stage outputs: the largest of its parts' distances, each in units of
    its held-out quantile; out of distribution above :attr:`threshold`.

    Fields as :class:`~auditor.model.guard.FeatureGuard`'s, with ``parts`` in place of the
    centres and covariances.

    Raises
    ------
    BundleError
        When a field is malformed (no parts, a threshold or share out of range, quantiles out of
        order).
    """

    parts: tuple[StagePart, ...]
    threshold: float
    quantiles: dict[str, float] = field(default_factory=dict)
    archive_share: float = DEFAULT_ARCHIVE_SHARE
    fitted_on: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    count_rule: CountRule = field(default_factory=CountRule)

    def __post_init__(self) -> None:
        parts = tuple(self.parts)
        if not 1 <= len(parts) <= MAX_PARTS:
            raise BundleError(f"stage guard has {len(parts)} parts; expected 1 to {MAX_PARTS}")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise BundleError(f"domain guard threshold {self.threshold!r}; expected a number > 0")
        if not 0.0 < self.archive_share <= 1.0:
            raise BundleError(
                f"domain guard archive_share {self.archive_share!r}; expected a share in (0, 1]"
            )
        if not isinstance(self.count_rule, CountRule):
            raise BundleError(f"domain guard count_rule {self.count_rule!r}; expected a CountRule")
        object.__setattr__(self, "parts", parts)
        object.__setattr__(self, "quantiles", checked_quantiles(self.quantiles))
        object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def method(self) -> str:
        return STAGE_METHOD

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages whose outputs the guard reads, each once, in the order of the parts."""
        return tuple(dict.fromkeys(p.stage for p in self.parts))

    def check_fits(self, architecture: str) -> None:
        """Raise :class:`BundleError` unless every part reads a stage of ``architecture``
        (:data:`auditor.model.network.GUARD_STAGES`) at that stage's width."""
        self.check_stages(GUARD_STAGES.get(architecture, {}), f"a {architecture}")

    def check_stages(self, stages: Mapping[str, int], network: str) -> None:
        """Raise :class:`BundleError` unless every part reads one of ``stages`` (stage name:
        output channels of the ``network`` the guard rides on) at that stage's width."""
        for i, part in enumerate(self.parts):
            if part.stage not in stages:
                raise BundleError(
                    f"guard part {i} reads stage {part.stage!r}; {network} has "
                    f"{', '.join(stages) or 'no stages a guard may read'}"
                )
            width = stages[part.stage] * (2 if part.statistics == "mean+sd" else 1)
            if part.width != width:
                raise BundleError(
                    f"guard part {i} measures {part.width} numbers of {part.stage}; its "
                    f"{part.statistics} has {width} in {network}"
                )

    def distances(self, statistics: Mapping[str, npt.ArrayLike]) -> npt.NDArray[np.float32]:
        """The guard's distance of each of N crops from its stages' statistics (stage name:
        (N, 2C) as :func:`stage_statistics` gives), float32 (N,)."""
        stats = {
            s: torch.as_tensor(np.asarray(statistics[s], dtype=np.float32)) for s in self.stages
        }
        return self._distances(stats, self._tensors(torch.device("cpu"))).numpy()

    def score(self, features: GuardFeatures) -> npt.NDArray[np.float32]:
        """:meth:`distances` of the stage statistics of ``features``."""
        return self.distances(features.stages)

    def to_device(self, device: torch.device) -> DeviceDistances:
        """The guard on ``device`` (:data:`auditor.model.guard.DeviceDistances`): the stage
        outputs are reduced to their statistics and measured there, in float32."""
        tensors = self._tensors(device)

        def measure(_pooled: torch.Tensor, stages: Mapping[str, torch.Tensor]) -> torch.Tensor:
            stats = {s: stage_statistics(stages[s]) for s in self.stages}
            return self._distances(stats, tensors)

        return measure

    def _tensors(self, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        def put(a: npt.NDArray[np.float32]) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        return [(put(p.centres), put(p.whitener)) for p in self.parts]

    def _distances(
        self, stats: Mapping[str, torch.Tensor], tensors: Sequence[tuple[torch.Tensor, ...]]
    ) -> torch.Tensor:
        with torch.autocast(device_type=next(iter(stats.values())).device.type, enabled=False):
            scaled = []
            for part, (centres, whitener) in zip(self.parts, tensors, strict=True):
                x = _select(stats[part.stage].float(), part)
                scaled.append(_mahalanobis(x, centres, whitener) / part.scale)
            return torch.stack(scaled).amax(dim=0)

    def is_out(self, distances: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Which ``distances`` lie beyond the threshold."""
        return np.asarray(distances, dtype=np.float64) > self.threshold

    def describe(self) -> str:
        """One line for a scan's summary."""
        rule = self.fitted_on.get("threshold_rule", "")
        parts = [p.describe() for p in self.parts]
        what = (
            f"Mahalanobis distance of the {parts[0]}"
            if len(parts) == 1
            else "the largest Mahalanobis distance, each in units of its held-out quantile, of "
            "the " + "; the ".join(parts)
        )
        return f"{what}; out of distribution above {self.threshold:.2f}" + (
            f" ({rule})" if rule else ""
        )

    def record(self, sha256: str) -> dict[str, Any]:
        """The card's JSON record of the guard stored in :data:`GUARD_FILE` with ``sha256``."""
        return {
            "method": STAGE_METHOD,
            "file": GUARD_FILE,
            "sha256": sha256,
            "threshold": self.threshold,
            "quantiles": dict(self.quantiles),
            "archive_share": self.archive_share,
            "count_rule": self.count_rule.record(),
            "fitted_on": dict(self.fitted_on),
            "parts": [
                {
                    "stage": p.stage,
                    "statistics": p.statistics,
                    "normalised": p.normalised,
                    "features": p.width,
                    "classes": int(p.centres.shape[0]),
                    "scale": p.scale,
                }
                for p in self.parts
            ],
        }


DomainGuard = FeatureGuard | StageGuard
"""A bundle's domain guard, of any method."""


def _select(stats: torch.Tensor, part: StagePart | PartSpec) -> torch.Tensor:
    """The columns of (N, 2C) statistics ``part`` measures, scaled to unit length if it asks."""
    x = stats[:, : stats.shape[1] // 2] if part.statistics == "mean" else stats
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12) if part.normalised else x


def fit_stage_guard(
    fit: GuardFeatures,
    heldout: GuardFeatures,
    labels: npt.ArrayLike | None = None,
    parts: Sequence[PartSpec] = DEFAULT_PARTS["resnet18"],
    *,
    quantile: float = DEFAULT_QUANTILE,
    archive_share: float = DEFAULT_ARCHIVE_SHARE,
    source: str = "",
) -> StageGuard:
    """Fit a stage guard: per part, centres (one per class when ``labels`` are given) and the
    Ledoit-Wolf shrunk covariance on ``fit``, its scale the ``quantile`` of the ``heldout``
    crops' distances; the threshold is the ``quantile`` of the held-out crops' guard distance.

    Raises
    ------
    ValueError
        For no parts, fewer than 2 fit or 1 held-out crop, a stage missing from the features, or
        a quantile outside (0, 1).
    """
    if not parts:
        raise ValueError("a stage guard needs at least one part")
    if len(fit) < 2 or len(heldout) < 1:
        raise ValueError(f"need >= 2 fit and >= 1 held-out crops; got {len(fit)}, {len(heldout)}")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    missing = sorted({p.stage for p in parts} - (set(fit.stages) & set(heldout.stages)))
    if missing:
        raise ValueError(f"the features lack the statistics of {', '.join(missing)}")
    fitted, shrinkage = [], []
    for spec in parts:
        x = _select(torch.from_numpy(np.asarray(fit.stages[spec.stage], np.float64)), spec)
        centres, covariance, shrunk = fit_part(x.numpy(), labels)
        shrinkage.append(round(shrunk, 6))
        part = StagePart(spec.stage, spec.statistics, spec.normalised, centres, covariance)
        held = part_distances(part, heldout)
        fitted.append(dataclasses.replace(part, scale=float(np.quantile(held, quantile))))
    provisional = StageGuard(tuple(fitted), threshold=1.0)
    distances = provisional.score(heldout).astype(np.float64)
    levels = sorted({*RECORDED_QUANTILES, quantile})
    return StageGuard(
        tuple(fitted),
        threshold=float(np.quantile(distances, quantile)),
        quantiles={f"{q:g}": float(np.quantile(distances, q)) for q in levels},
        archive_share=archive_share,
        fitted_on={
            "n_fit": len(fit),
            "n_heldout": len(heldout),
            "shrinkage": shrinkage,
            "threshold_rule": f"the {quantile:g} quantile of {len(heldout)} held-out "
            "training-world crops",
            **({"source": source} if source else {}),
        },
    )


def part_distances(part: StagePart, features: GuardFeatures) -> npt.NDArray[np.float64]:
    """One part's Mahalanobis distance of each crop of ``features``, before its scale."""
    stats = torch.from_numpy(np.asarray(features.stages[part.stage], dtype=np.float32))
    x = _select(stats, part)
    centres, whitener = torch.from_numpy(part.centres), torch.from_numpy(part.whitener)
    return _mahalanobis(x, centres, whitener).double().numpy()


def check_guard_fits(guard: DomainGuard, architecture: str) -> None:
    """Raise :class:`BundleError` unless ``guard`` measures what a network of ``architecture``
    gives (the penultimate width, or the stages and their widths)."""
    if isinstance(guard, StageGuard):
        guard.check_fits(architecture)
        return
    width = penultimate_width(architecture)
    if guard.dimension != width:
        raise BundleError(
            f"a guard of {guard.dimension} features does not fit a {architecture} "
            f"({width} features)"
        )


def write_domain_guard(directory: Path, guard: DomainGuard) -> dict[str, Any]:
    """Write ``guard`` as :data:`GUARD_FILE` in ``directory`` (atomically); return the record a
    card stores for it."""
    if isinstance(guard, FeatureGuard):
        return write_guard(directory, guard)
    tensors = {}
    for i, part in enumerate(guard.parts):
        tensors[f"part{i}.centres"] = torch.from_numpy(np.ascontiguousarray(part.centres))
        tensors[f"part{i}.covariance"] = torch.from_numpy(np.ascontiguousarray(part.covariance))
    sha256 = write_weights(Path(directory) / GUARD_FILE, tensors, GUARD_MARKER)
    return guard.record(sha256)


def read_domain_guard(
    folder: Path, record: object, card_path: Path, architecture: str
) -> DomainGuard:
    """The guard a classifier card's ``guard`` ``record`` describes, of any method, read from
    ``folder`` and validated against a network of ``architecture``.

    Raises
    ------
    BundleError
        When the record is malformed or does not match its file, the file is missing, does not
        match its SHA-256 or cannot be read, or the guard does not fit the network.
    """
    if not (isinstance(record, Mapping) and record.get("method") == STAGE_METHOD):
        return read_guard(folder, record, card_path, penultimate_width(architecture))
    return read_stage_guard(
        folder, record, card_path, GUARD_STAGES.get(architecture, {}), f"a {architecture}"
    )


_PART_KEYS = frozenset({"stage", "statistics", "normalised", "features", "classes", "scale"})


def read_stage_guard(
    folder: Path,
    record: object,
    card_path: Path,
    stages: Mapping[str, int],
    network: str,
    *,
    label: str = "domain guard",
    use: str = "scan",
) -> StageGuard:
    """The stage guard a card's ``guard`` ``record`` describes, read from :data:`GUARD_FILE` in
    ``folder`` and validated against ``stages`` (stage name: output channels) of ``network``
    (for the messages, e.g. "a resnet18"). The one reader of stage guards, a classifier's
    (:func:`read_domain_guard`) and a localizer's (:mod:`auditor.localizer.guard`); ``label``
    names the guard in messages and ``use`` what the bundle does without one ("scan").

    Raises
    ------
    BundleError
        When the record is not an object of :data:`STAGE_METHOD`, is malformed or does not match
        its file, the file is missing, does not match its SHA-256 or cannot be read, or a part
        reads a stage ``stages`` lacks or at another width.
    """
    where = f"{card_path}: {label}"
    if not isinstance(record, Mapping):
        raise BundleError(f"{where} must be a JSON object, not {type(record).__name__}")
    if record.get("method") != STAGE_METHOD:
        raise BundleError(f"{where} method {record.get('method')!r}; expected {STAGE_METHOD!r}")
    if record.get("file") != GUARD_FILE:
        raise BundleError(
            f"{where} file {record.get('file')!r}; expected {GUARD_FILE!r} beside the weights"
        )
    path = Path(folder) / GUARD_FILE
    if not path.is_file():
        raise BundleError(
            f"{where} file {GUARD_FILE} is missing from {folder}: copy it with the bundle, or "
            f"remove the card's 'guard' entry to {use} without the guard"
        )
    specs = record.get("parts")
    if not isinstance(specs, list) or not 1 <= len(specs) <= MAX_PARTS:
        raise BundleError(f"{where} parts must be a list of 1 to {MAX_PARTS} objects")
    sha256 = checked_sha256(path, record.get("sha256"), card_path)
    tensors = read_weights(path)
    expected = {f"part{i}.{k}" for i in range(len(specs)) for k in ("centres", "covariance")}
    if set(tensors) != expected:
        raise BundleError(f"{where} file holds {sorted(tensors)}; expected {sorted(expected)}")
    try:
        parts = tuple(_read_part(i, spec, tensors) for i, spec in enumerate(specs))
        fitted_on = record.get("fitted_on", {})
        if not isinstance(fitted_on, Mapping):
            raise BundleError("fitted_on must be a JSON object")
        for key in ("threshold", "archive_share"):
            if isinstance(record.get(key), bool):
                raise BundleError(f"{key} {record[key]!r}; expected a number")
        guard = StageGuard(
            parts,
            threshold=float(record["threshold"]),
            quantiles=dict(record.get("quantiles", {})),
            archive_share=float(record.get("archive_share", DEFAULT_ARCHIVE_SHARE)),
            fitted_on=dict(fitted_on),
            sha256=sha256,
            count_rule=CountRule.from_record(record.get("count_rule")),
        )
        guard.check_stages(stages, network)
    except BundleError as err:
        raise BundleError(f"{where}: {err}") from err
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"{where} is malformed: {err!r}") from err
    return guard


def _read_part(i: int, spec: object, tensors: Mapping[str, torch.Tensor]) -> StagePart:
    """Part ``i`` of a stage guard's record, with its arrays from the guard file."""
    if not isinstance(spec, Mapping) or set(spec) != _PART_KEYS:
        raise BundleError(f"part {i} must be an object with the keys {sorted(_PART_KEYS)}")
    centres = tensors[f"part{i}.centres"].float().numpy()
    if [spec["features"], spec["classes"]] != [centres.shape[1], centres.shape[0]]:
        raise BundleError(
            f"part {i} records {spec['classes']} x {spec['features']} centres; the file holds "
            f"{centres.shape[0]} x {centres.shape[1]}"
        )
    if not isinstance(spec["stage"], str) or isinstance(spec["scale"], bool):
        raise BundleError(f"part {i} has a malformed stage or scale")
    return StagePart(
        spec["stage"],
        str(spec["statistics"]),
        spec["normalised"],
        centres,
        tensors[f"part{i}.covariance"].float().numpy(),
        scale=float(spec["scale"]),
    )
