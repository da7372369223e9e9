"""The domain guard: how far an input lies from a network's training data, in its own features.

A network answers for any input, including inputs unlike anything it was trained on (a real
radiograph for a model trained on synthetic ones, a chest film, an inverted image), and its
probabilities say nothing about that. The guard measures it. At training time the bundle records
what its training data look like in the network's feature space: the mean and a shrunk covariance
of the penultimate-layer features (the global-average-pooled last feature map) of the training
crops, and the quantiles of the distance of held-out training-world crops to them. At scan time
the classifying forward pass already computes those features, so each crop's distance costs one
small matrix product.

Method: the Mahalanobis distance of the penultimate features to the training distribution (Lee
et al. 2018, "A simple unified framework for detecting out-of-distribution samples and adversarial
attacks", NeurIPS), with the covariance shrunk by the Ledoit-Wolf rule (Ledoit and Wolf 2004,
J. Multivariate Anal. 88:365) so that it is well conditioned with fewer crops than feature
dimensions. Lee et al. use one mean per class and a shared covariance and score the nearest
class; the guard stores one mean per class when its fit was given labels and scores the nearest
(:attr:`FeatureGuard.centres`). The default guard (``mahalanobis+l2``) measures two distances,
on the raw features and on the features scaled to unit length (Mueller and Hein 2025,
"Mahalanobis++: improving OOD detection via feature normalization", ICML: the norm of a feature
vector varies a lot within one class and swamps the Mahalanobis distance), divides each by its
own held-out quantile and takes the larger: on the bundled classifier the normalised distance
catches inverted crops the raw one misses, the raw one heavy noise the normalised one misses.
The energy score (Liu et al. 2020, "Energy-based out-of-distribution detection", NeurIPS: the
negative log-sum-exp of the logits) was measured against it on the bundled classifier and flags
far fewer foreign crops overall at about the same false-alarm rate on held-out synthetic crops
(a few more of 13 real vertebrae on DRRs, far fewer noisy, inverted and real-radiograph crops): a
two-class head leaves it little to work with (the figures are in ``docs/models.md``).

A crop is *out of distribution* when its distance exceeds :attr:`FeatureGuard.threshold`, by
default the 0.99 quantile of the held-out distances (:data:`DEFAULT_QUANTILE`), so about 1 % of
crops like the training data are marked; the rule itself is
:func:`auditor.records.is_out_of_distribution`. An archive is out of the model's domain when more
than :attr:`FeatureGuard.archive_share` of its crops are (the share rule), or when more than a
floor of them are and more of its images have one than an archive like the training data gives
(the count rule, :class:`CountRule`).

Storage: the centres and the covariances go to ``guard.safetensors`` beside the weights (a 512 x
512 covariance is too big for the JSON card); the card records the file's SHA-256, the method,
the threshold and the quantiles (:meth:`FeatureGuard.record`). Loading validates every field and
runs no code (:func:`read_guard`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from auditor.bundle_files import checked_sha256, read_weights, write_weights
from auditor.errors import BundleError
from auditor.records import CountTest

logger = logging.getLogger(__name__)

GUARD_FILE = "guard.safetensors"
GUARD_MARKER = "tlaudit-domain-guard"
#: The methods a guard may use: the Mahalanobis distance of the raw features, or the larger of
#: that and the distance of the L2-normalised features, each in units of its held-out quantile
#: (the default of :func:`fit_guard`; see the module docstring).
GUARD_METHODS = ("mahalanobis", "mahalanobis+l2")
#: Quantile of the held-out distances that becomes the threshold unless a fit asks otherwise.
DEFAULT_QUANTILE = 0.99
#: Share of an archive's crops out of distribution above which the whole archive is out of the
#: model's domain (reports carry a red banner; ``scan --strict-domain`` exits 1): the share rule.
DEFAULT_ARCHIVE_SHARE = 0.2
#: The count rule's defaults (:class:`CountRule`; chosen by resampling whole studies of held-out
#: and foreign archives: ``docs/models.md``, "The archive rules"). The archive's share of crops
#: out of distribution must pass this floor, well above the crop rate below, so that a large
#: archive whose rate is only a little above it (another pixel spacing: 2.5 %) is not marked
#: for it ...
DEFAULT_COUNT_FLOOR = 0.05
#: ... and its number of studies with a crop out of distribution must be this improbable for an
#: archive like the training data ...
DEFAULT_COUNT_ALPHA = 0.001
#: ... in which a crop is out of distribution with at most this probability: an upper figure
#: for the training world's rate (the threshold is the 0.985 quantile of held-out crops, 1.5 %
#: by construction; held-out worlds 0.7-1.6 %, 1.2 % pooled, exact 95 % upper bound 1.7 %), the
#: issue's 2 % target.
DEFAULT_COUNT_CROP_RATE = 0.02
#: Quantiles of the held-out distances a card records.
RECORDED_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
#: Most crops a fit uses on each side (fit, held out); more changes the threshold little and costs
#: a forward pass each (about 0.1 s per 128 px crop on a 2-core CPU).
DEFAULT_MAX_CROPS = 2000


DeviceDistances = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]
"""A guard on one device (``guard.to_device(device)``): called with a batch's pooled penultimate
features (N, D) and the outputs of the stages it taps (``guard.stages``, by name), it gives the
batch's distances, float32 (N,), on that device."""


@dataclass(frozen=True)
class CountRule:
    """The archive rule that counts studies: an archive is out of the model's domain when more
    than ``floor`` of its crops are out of distribution and its number of studies with at least
    one such crop is improbable for an archive like the training data.

    The study is the unit, since the crops of one image share its acquisition, and the images of
    one study its patient and usually its session: their flags are correlated. If a crop like
    the training data is out of distribution with probability at most ``crop_rate``, a study of
    c crops has at least one out with probability at most 1 - (1 - crop_rate)^c: taking the
    events "crop j is out" to be positively associated within a study (they rise together with
    the acquisition's contrast, noise and rendering, and with the patient), Harris's inequality
    (the FKG inequality) makes the chance that none is out at least the product of the crops'
    chances. Studies are taken to be independent, so the number K of studies with a crop out
    is stochastically at most a Poisson-binomial count with those probabilities, and
    the rule fires when P(K >= observed) < ``alpha`` under it (:meth:`test`: the law's exact
    distribution, one binomial per crop count convolved).
    The share rule beside it (:data:`DEFAULT_ARCHIVE_SHARE`) needs no count; this one adds what
    a small share says about a large archive.

    Parameters
    ----------
    floor
        Share of the archive's crops out of distribution the rule needs, in [0, 1).
    crop_rate
        Upper figure for the chance that a crop like the training data is out, in (0, 1).
    alpha
        Tail probability below which the count is improbable, in (0, 1).

    Raises
    ------
    BundleError
        When a value is not a number in its range.
    """

    floor: float = DEFAULT_COUNT_FLOOR
    crop_rate: float = DEFAULT_COUNT_CROP_RATE
    alpha: float = DEFAULT_COUNT_ALPHA

    def __post_init__(self) -> None:
        for name, low, high, closed in (
            ("floor", 0.0, 1.0, True),
            ("crop_rate", 0.0, 1.0, False),
            ("alpha", 0.0, 1.0, False),
        ):
            value = getattr(self, name)
            ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and (low <= value if closed else low < value)
                and value < high
            )
            if not ok:
                bracket = "[" if closed else "("
                raise BundleError(
                    f"domain guard count_rule {name} {value!r}; expected a number in "
                    f"{bracket}{low:g}, {high:g})"
                )
            object.__setattr__(self, name, float(value))

    @classmethod
    def from_record(cls, record: object) -> CountRule:
        """The rule a card's ``count_rule`` object describes (:meth:`record`); the defaults when
        the card has none (a bundle written before the rule existed).

        Raises
        ------
        BundleError
            When the record is not an object of exactly the keys :meth:`record` writes, or a
            value is out of its range.
        """
        if record is None:
            return cls()
        keys = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(record, Mapping) or set(record) != keys:
            raise BundleError(
                f"domain guard count_rule must be an object with the keys {sorted(keys)}"
            )
        return cls(**{k: record[k] for k in keys})

    def record(self) -> dict[str, float]:
        """The card's JSON object for the rule."""
        return {"floor": self.floor, "crop_rate": self.crop_rate, "alpha": self.alpha}

    def test(self, crops_per_study: Sequence[int], flagged_per_study: Sequence[int]) -> CountTest:
        """The rule's figures for an archive: per study, its classified crops and those out of
        distribution (studies without crops do not count).

        Returns
        -------
        CountTest
            The studies counted and flagged, the bound's expected count and the tail
            probability P(K >= flagged), with the rule's constants.
        """
        from scipy.signal import convolve  # only when a scan ends
        from scipy.stats import binom

        crops = np.asarray(crops_per_study, dtype=np.int64)
        flagged = np.asarray(flagged_per_study, dtype=np.int64)[crops > 0]
        crops = crops[crops > 0]
        chances = 1.0 - (1.0 - self.crop_rate) ** crops
        observed = int((flagged > 0).sum())
        # Studies of the same crop count share one chance, so the Poisson-binomial law is the sum
        # of one binomial per crop count: its distribution is their convolution, which scipy
        # computes directly or by FFT, whichever is faster (0.3 s for a million studies, where
        # the pairwise recursion of scipy.stats.poisson_binom is quadratic: 1 s at 50,000).
        # Against poisson_binom on 40 to 20,000 studies the tails agree to a relative 1e-6 down
        # to 1e-10; below 1e-12 (FFT rounding) the reports print "P < 1e-12".
        distribution = np.ones(1)
        for count in np.unique(crops):
            n = int(np.count_nonzero(crops == count))
            chance = 1.0 - (1.0 - self.crop_rate) ** int(count)
            distribution = convolve(distribution, binom.pmf(np.arange(n + 1), n, chance))
        tail = float(distribution[observed:].sum()) if observed else 1.0
        return CountTest(
            studies=len(crops),
            studies_flagged=observed,
            expected=float(chances.sum()),
            tail=min(max(tail, 0.0), 1.0),
            floor=self.floor,
            crop_rate=self.crop_rate,
            alpha=self.alpha,
        )


@dataclass(frozen=True)
class GuardFeatures:
    """What the guards measure of N crops, on the host, float32: the pooled penultimate features
    (N, D) and, per tapped stage, the spatial mean and standard deviation of each channel of
    the stage's output (N, 2C: the C means, then the C standard deviations;
    :func:`auditor.model.stage_guard.stage_statistics`)."""

    pooled: npt.NDArray[np.float32]
    stages: Mapping[str, npt.NDArray[np.float32]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pooled)

    def take(self, index: npt.ArrayLike) -> GuardFeatures:
        """The rows ``index`` of every array."""
        rows = np.asarray(index)
        return GuardFeatures(self.pooled[rows], {k: v[rows] for k, v in self.stages.items()})

    @staticmethod
    def concatenate(parts: Sequence[GuardFeatures]) -> GuardFeatures:
        """The rows of ``parts`` one after another (at least one part; same stages in each)."""
        return GuardFeatures(
            np.concatenate([p.pooled for p in parts]),
            {k: np.concatenate([p.stages[k] for p in parts]) for k in parts[0].stages},
        )


@dataclass(frozen=True, eq=False)
class FeatureGuard:
    """What a network's training data look like in its feature space, and the line beyond which an
    input is out of distribution.

    Parameters
    ----------
    centres
        (K, D) float32: the mean feature vector of the training crops (K = 1), or one per class.
    covariance
        (D, D) float32: the shrunk covariance of the training features around their centre.
    threshold
        Distance above which an input is out of distribution.
    quantiles
        Distances of held-out training-world inputs at :data:`RECORDED_QUANTILES` (keys are the
        quantiles as text, e.g. ``"0.99"``).
    archive_share
        Share of an archive's inputs out of distribution above which the archive is (the share
        rule).
    method
        One of :data:`GUARD_METHODS`.
    count_rule
        The archive rule that counts studies (:class:`CountRule`).
    l2_centres, l2_covariance
        For ``mahalanobis+l2``: the centres and shrunk covariance of the L2-normalised features.
    scales
        For ``mahalanobis+l2``: the held-out quantile of the raw distances and of the normalised
        ones; the guard's distance is the larger of the two distances, each divided by its scale.
    fitted_on
        Free-form description of the fit (crop counts, shrinkage, source).
    sha256
        SHA-256 of the file the guard was read from ("" for one fitted in this process): a
        scan's journal records it, so a resume with another guard is refused.

    Raises
    ------
    BundleError
        When a field is malformed: shapes that do not agree, values that are not finite, a
        covariance that is not symmetric positive definite, quantiles out of order.
    """

    centres: npt.NDArray[np.float32]
    covariance: npt.NDArray[np.float32]
    threshold: float
    quantiles: dict[str, float] = field(default_factory=dict)
    archive_share: float = DEFAULT_ARCHIVE_SHARE
    method: str = "mahalanobis"
    count_rule: CountRule = field(default_factory=CountRule)
    fitted_on: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    l2_centres: npt.NDArray[np.float32] | None = field(default=None, repr=False)
    l2_covariance: npt.NDArray[np.float32] | None = field(default=None, repr=False)
    scales: tuple[float, float] = (1.0, 1.0)
    whitener: npt.NDArray[np.float32] = field(init=False, repr=False)
    """(D, D): ``W`` with ``W.T @ W`` the inverse covariance, so a distance is ``|W (f - c)|``."""
    l2_whitener: npt.NDArray[np.float32] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        centres = np.asarray(self.centres, dtype=np.float32)
        covariance = np.asarray(self.covariance, dtype=np.float32)
        if self.method not in GUARD_METHODS:
            raise BundleError(
                f"domain guard method {self.method!r}; expected one of {', '.join(GUARD_METHODS)}"
            )
        if centres.ndim != 2 or centres.shape[0] < 1 or centres.shape[1] < 1:
            raise BundleError(
                f"domain guard centres have shape {centres.shape}; expected (classes, features)"
            )
        dim = centres.shape[1]
        if covariance.shape != (dim, dim):
            raise BundleError(
                f"domain guard covariance has shape {covariance.shape}; expected ({dim}, {dim})"
            )
        if not (np.isfinite(centres).all() and np.isfinite(covariance).all()):
            raise BundleError("domain guard centres or covariance hold non-finite values")
        scale = max(float(np.abs(covariance).max()), 1e-30)
        if float(np.abs(covariance - covariance.T).max()) > 1e-4 * scale:
            raise BundleError("domain guard covariance is not symmetric")
        try:
            lower = np.linalg.cholesky(covariance.astype(np.float64))
        except np.linalg.LinAlgError as err:
            raise BundleError("domain guard covariance is not positive definite") from err
        whitener = np.linalg.inv(lower).astype(np.float32)
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise BundleError(f"domain guard threshold {self.threshold!r}; expected a number > 0")
        if not 0.0 < self.archive_share <= 1.0:
            raise BundleError(
                f"domain guard archive_share {self.archive_share!r}; expected a share in (0, 1]"
            )
        if not isinstance(self.count_rule, CountRule):
            raise BundleError(f"domain guard count_rule {self.count_rule!r}; expected a CountRule")
        quantiles = checked_quantiles(self.quantiles)
        two_part = self.method == "mahalanobis+l2"
        if two_part != (self.l2_centres is not None and self.l2_covariance is not None):
            raise BundleError(
                f"domain guard method {self.method!r} needs L2 centres and covariance exactly "
                "when it is 'mahalanobis+l2'"
            )
        scales = tuple(float(v) for v in self.scales)
        if len(scales) != 2 or not all(math.isfinite(v) and v > 0 for v in scales):
            raise BundleError(f"domain guard scales {self.scales!r}; expected two numbers > 0")
        l2_whitener = None
        if two_part:
            assert self.l2_centres is not None and self.l2_covariance is not None
            l2 = FeatureGuard(self.l2_centres, self.l2_covariance, threshold=1.0)
            if l2.dimension != dim or l2.centres.shape[0] != centres.shape[0]:
                raise BundleError("domain guard L2 centres do not match the raw ones")
            object.__setattr__(self, "l2_centres", l2.centres)
            object.__setattr__(self, "l2_covariance", l2.covariance)
            l2_whitener = l2.whitener
        object.__setattr__(self, "l2_whitener", l2_whitener)
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "centres", centres)
        object.__setattr__(self, "covariance", covariance)
        object.__setattr__(self, "quantiles", quantiles)
        object.__setattr__(self, "whitener", whitener)

    @property
    def dimension(self) -> int:
        """Length of the feature vectors the guard measures."""
        return int(self.centres.shape[1])

    def distances(self, features: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """The guard's distance of each row of ``features`` (N, D), float32 (N,): the Mahalanobis
        distance to the nearest centre, or for ``mahalanobis+l2`` the larger of the raw and the
        normalised one, each divided by its scale."""
        f = torch.as_tensor(np.asarray(features, dtype=np.float32))
        return self.device_distances(f, *self.on_device(torch.device("cpu"))).numpy()

    @property
    def stages(self) -> tuple[str, ...]:
        """Intermediate stages the guard reads: none, it measures the pooled features alone."""
        return ()

    def score(self, features: GuardFeatures) -> npt.NDArray[np.float32]:
        """:meth:`distances` of the pooled features of ``features``."""
        return self.distances(features.pooled)

    def to_device(self, device: torch.device) -> DeviceDistances:
        """The guard on ``device`` (see :data:`DeviceDistances`; the stage outputs are ignored)."""
        tensors = self.on_device(device)

        def measure(pooled: torch.Tensor, _stages: Mapping[str, torch.Tensor]) -> torch.Tensor:
            return FeatureGuard.device_distances(pooled, *tensors)

        return measure

    def on_device(
        self, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """The guard's arrays as float32 tensors on ``device``, in the order
        :meth:`device_distances` takes them."""

        def put(a: npt.NDArray[np.float32] | None) -> torch.Tensor | None:
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device)

        centres, whitener = put(self.centres), put(self.whitener)
        assert centres is not None and whitener is not None
        scales = torch.tensor(self.scales, dtype=torch.float32, device=device)
        return centres, whitener, put(self.l2_centres), put(self.l2_whitener), scales

    @staticmethod
    def device_distances(
        features: torch.Tensor,
        centres: torch.Tensor,
        whitener: torch.Tensor,
        l2_centres: torch.Tensor | None = None,
        l2_whitener: torch.Tensor | None = None,
        scales: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The guard's distances of (N, D) ``features`` (see :meth:`distances`) from the arrays
        :meth:`on_device` gives, computed in float32 on the features' device: (N,)."""
        # In float32 even inside the scan's bf16/fp16 autocast: the distances of a bf16 einsum
        # are off by about 1 % and come back as a dtype numpy cannot take.
        with torch.autocast(device_type=features.device.type, enabled=False):
            f = features.float()
            raw = _mahalanobis(f, centres.float(), whitener.float())
            if l2_centres is None or l2_whitener is None:
                return raw if scales is None else raw / scales[0]
            unit = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
            normalised = _mahalanobis(unit, l2_centres.float(), l2_whitener.float())
            if scales is None:
                return torch.maximum(raw, normalised)
            return torch.maximum(raw / scales[0], normalised / scales[1])

    def is_out(self, distances: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Which ``distances`` lie beyond the threshold."""
        return np.asarray(distances, dtype=np.float64) > self.threshold

    def describe(self) -> str:
        """One line for a scan's summary, e.g. ``mahalanobis distance of the penultimate
        features; out of distribution above 31.2 (the 0.99 quantile ...)``."""
        rule = self.fitted_on.get("threshold_rule", "")
        what = (
            "the larger Mahalanobis distance of the raw and the L2-normalised penultimate-layer "
            "features, each in units of its held-out quantile"
            if self.method == "mahalanobis+l2"
            else "mahalanobis distance of the penultimate-layer features"
        )
        return f"{what}; out of distribution above {self.threshold:.2f}" + (
            f" ({rule})" if rule else ""
        )

    def record(self, sha256: str) -> dict[str, Any]:
        """The card's JSON record of the guard stored in :data:`GUARD_FILE` with ``sha256``."""
        return {
            "method": self.method,
            "file": GUARD_FILE,
            "sha256": sha256,
            "features": self.dimension,
            "classes": int(self.centres.shape[0]),
            "threshold": self.threshold,
            "quantiles": dict(self.quantiles),
            "archive_share": self.archive_share,
            "count_rule": self.count_rule.record(),
            "fitted_on": dict(self.fitted_on),
            **({"scales": list(self.scales)} if self.method == "mahalanobis+l2" else {}),
        }


def checked_quantiles(quantiles: Mapping[Any, Any]) -> dict[str, float]:
    """A guard's recorded quantiles as ``{"0.99": distance}``, in order of level.

    Raises
    ------
    BundleError
        When a level is not a number inside (0, 1), a distance is not finite, or the distances
        decrease with the level.
    """
    try:
        values = {str(k): float(v) for k, v in quantiles.items()}
        keys = sorted(values, key=float)
    except (TypeError, ValueError) as err:
        raise BundleError(f"domain guard quantiles must be numbers: {err}") from err
    ordered = [values[k] for k in keys]
    if any(not 0.0 < float(k) < 1.0 for k in keys) or any(not math.isfinite(v) for v in ordered):
        raise BundleError("domain guard quantiles must be finite, at levels inside (0, 1)")
    if any(b < a for a, b in itertools.pairwise(ordered)):
        raise BundleError("domain guard quantiles decrease with the level")
    return {k: values[k] for k in keys}


def write_guard(directory: Path, guard: FeatureGuard) -> dict[str, Any]:
    """Write ``guard`` as :data:`GUARD_FILE` in ``directory`` (atomically); return the record a
    card stores for it (:meth:`FeatureGuard.record`)."""
    arrays = {"centres": guard.centres, "covariance": guard.covariance}
    if guard.l2_centres is not None and guard.l2_covariance is not None:
        arrays |= {"l2_centres": guard.l2_centres, "l2_covariance": guard.l2_covariance}
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    sha256 = write_weights(Path(directory) / GUARD_FILE, tensors, GUARD_MARKER)
    return guard.record(sha256)


def read_guard(folder: Path, record: object, card_path: Path, dimension: int) -> FeatureGuard:
    """The guard a card's ``guard`` ``record`` describes, read from ``folder`` and validated.

    Parameters
    ----------
    folder
        The bundle folder.
    record
        The card's ``guard`` object (:meth:`FeatureGuard.record`).
    card_path
        The card, for messages.
    dimension
        Length of the feature vectors of the bundle's network: the guard must measure those.

    Raises
    ------
    BundleError
        When the record is malformed, names a file outside the folder or one that is missing,
        the file does not match its SHA-256 or cannot be read, or the guard does not fit the
        network.
    """
    where = f"{card_path}: domain guard"
    if not isinstance(record, Mapping):
        raise BundleError(f"{where} must be a JSON object, not {type(record).__name__}")
    name = record.get("file")
    if name != GUARD_FILE:
        raise BundleError(f"{where} file {name!r}; expected {GUARD_FILE!r} beside the weights")
    path = Path(folder) / GUARD_FILE
    if not path.is_file():
        raise BundleError(
            f"{where} file {GUARD_FILE} is missing from {folder}: copy it with the bundle, or "
            "remove the card's 'guard' entry to scan without the guard"
        )
    sha256 = checked_sha256(path, record.get("sha256"), card_path)
    tensors = read_weights(path)
    expected = {"centres", "covariance"}
    if record.get("method") == "mahalanobis+l2":
        expected |= {"l2_centres", "l2_covariance"}
    if set(tensors) != expected:
        raise BundleError(f"{where} file holds {sorted(tensors)}; expected {sorted(expected)}")
    l2 = {k: tensors[k].float().numpy() for k in ("l2_centres", "l2_covariance") if k in tensors}
    try:
        guard = FeatureGuard(
            centres=tensors["centres"].float().numpy(),
            covariance=tensors["covariance"].float().numpy(),
            threshold=float(record["threshold"]),
            quantiles=dict(record.get("quantiles", {})),
            archive_share=float(record.get("archive_share", DEFAULT_ARCHIVE_SHARE)),
            method=str(record.get("method", "")),
            count_rule=CountRule.from_record(record.get("count_rule")),
            fitted_on=dict(record.get("fitted_on", {})),
            sha256=sha256,
            l2_centres=l2.get("l2_centres"),
            l2_covariance=l2.get("l2_covariance"),
            scales=tuple(record.get("scales", (1.0, 1.0))),
        )
    except BundleError as err:
        raise BundleError(f"{where}: {err}") from err
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"{where} is malformed: {err!r}") from err
    if guard.dimension != dimension:
        raise BundleError(
            f"{where} measures {guard.dimension} features; this network has {dimension}"
        )
    return guard


def fit_guard(
    fit: npt.ArrayLike,
    heldout: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    *,
    quantile: float = DEFAULT_QUANTILE,
    archive_share: float = DEFAULT_ARCHIVE_SHARE,
    source: str = "",
    normalised: bool = True,
) -> FeatureGuard:
    """Fit a guard to training features and set its threshold on held-out ones.

    Parameters
    ----------
    fit
        (N, D) features of training inputs: their mean (or per-class means) and the Ledoit-Wolf
        shrunk covariance of the residuals.
    heldout
        (M, D) features of held-out inputs from the same world: their distances give the
        quantiles and the threshold. Must not overlap ``fit``.
    labels
        Class of each ``fit`` row, for one centre per class (Lee et al.); None for one centre.
    quantile
        Quantile of the held-out distances that becomes the threshold.
    archive_share
        Stored as :attr:`FeatureGuard.archive_share`.
    source
        What the inputs were, for the card.
    normalised
        Fit the ``mahalanobis+l2`` guard (the raw and the L2-normalised features; each part's
        distance is divided by its own held-out ``quantile``, and the threshold is the
        ``quantile`` of the larger of the two); False for the raw distance alone.

    Raises
    ------
    ValueError
        For fewer than 2 fit or 1 held-out rows, widths that differ, or a quantile outside (0, 1).
    """
    x = np.asarray(fit, dtype=np.float64)
    h = np.asarray(heldout, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2 or h.ndim != 2 or len(h) < 1 or h.shape[1] != x.shape[1]:
        raise ValueError(
            f"need (N >= 2, D) fit and (M >= 1, D) held-out features; got {x.shape}, {h.shape}"
        )
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    raw = fit_part(x, labels)
    shrinkage = {"shrinkage": round(raw[2], 6)}
    extra: dict[str, Any] = {}
    if normalised:
        l2 = fit_part(_unit(x), labels)
        shrinkage["shrinkage_l2"] = round(l2[2], 6)
        parts = (
            FeatureGuard(raw[0], raw[1], threshold=1.0).distances(h).astype(np.float64),
            FeatureGuard(l2[0], l2[1], threshold=1.0).distances(_unit(h)).astype(np.float64),
        )
        scales = (float(np.quantile(parts[0], quantile)), float(np.quantile(parts[1], quantile)))
        extra = {"l2_centres": l2[0], "l2_covariance": l2[1], "scales": scales}
    provisional = FeatureGuard(
        raw[0],
        raw[1],
        threshold=1.0,
        method="mahalanobis+l2" if normalised else "mahalanobis",
        **extra,
    )
    distances = provisional.distances(h).astype(np.float64)
    levels = sorted({*RECORDED_QUANTILES, quantile})
    quantiles = {f"{q:g}": float(np.quantile(distances, q)) for q in levels}
    return FeatureGuard(
        centres=provisional.centres,
        covariance=provisional.covariance,
        threshold=float(np.quantile(distances, quantile)),
        quantiles=quantiles,
        archive_share=archive_share,
        method=provisional.method,
        fitted_on={
            "n_fit": len(x),
            "n_heldout": len(h),
            **shrinkage,
            "threshold_rule": f"the {quantile:g} quantile of {len(h)} held-out training-world "
            "crops",
            **({"source": source} if source else {}),
        },
        **extra,
    )


def _unit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Rows of ``x`` scaled to unit length (Mahalanobis++: Mueller and Hein 2025)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_part(
    x: npt.NDArray[np.float64], labels: npt.ArrayLike | None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], float]:
    """Centres (one, or one per class), the Ledoit-Wolf shrunk covariance of the residuals and
    the shrinkage; the arrays in float32, as stored."""
    from sklearn.covariance import LedoitWolf  # only when fitting, never at scan time

    if labels is None:
        centres = x.mean(axis=0, keepdims=True)
        residual = x - centres
    else:
        y = np.asarray(labels)
        classes = np.unique(y)
        centres = np.stack([x[y == c].mean(axis=0) for c in classes])
        residual = x - centres[np.searchsorted(classes, y)]
    shrunk = LedoitWolf(assume_centered=True).fit(residual)
    covariance = np.asarray(shrunk.covariance_, dtype=np.float32)
    return centres.astype(np.float32), covariance, float(shrunk.shrinkage_)


def _mahalanobis(f: torch.Tensor, centres: torch.Tensor, whitener: torch.Tensor) -> torch.Tensor:
    """Mahalanobis distance of (N, D) ``f`` to the nearest of (K, D) ``centres``, (N,)."""
    # |W (f - c)| is the Mahalanobis distance; whitening f and c apart costs one (N, D) x (D, D)
    # product instead of K of them
    white = f @ whitener.T
    residual = white[:, None, :] - (centres @ whitener.T)[None, :, :]
    return residual.square().sum(dim=2).min(dim=1).values.sqrt()
