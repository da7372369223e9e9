"""Model bundles: weights plus a card that says everything needed to use them correctly.

A bundle is a folder::

    <name>/
        card.json           # the ModelCard fields, a format marker and the weights' SHA-256
        weights.safetensors # the network's state dict (half precision by default)
        guard.safetensors   # optional: the domain guard's centres and covariances (its SHA-256,
                            # method and threshold are in the card's "guard" entry;
                            # auditor.model.guard, auditor.model.stage_guard)

Loading never executes code: weights are read with safetensors, the card with ``json``. A folder
without our format marker, with a card that does not parse, or whose weights (or guard file) do
not match the recorded hash is refused with :class:`~auditor.errors.BundleError`. A card without
a ``guard`` entry (a bundle made before the guard existed) loads with ``guard`` None.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from auditor import __version__
from auditor.bundle_files import checked_sha256, read_card, read_weights, write_weights
from auditor.crops import CROP_NORMALISATIONS
from auditor.errors import BundleError, TlauditError
from auditor.files import write_text_atomic
from auditor.model.guard import GUARD_FILE
from auditor.model.network import ARCHITECTURES, FEATURE_STRIDES, build_network
from auditor.model.stage_guard import (
    DomainGuard,
    check_guard_fits,
    read_domain_guard,
    write_domain_guard,
)
from auditor.resources import resource_path

logger = logging.getLogger(__name__)

FORMAT_MARKER = "tlaudit-model-bundle"
FORMAT_VERSION = 1
CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.safetensors"
#: Folder name, inside ``models/``, of the bundle ``load_bundle(None)`` loads.
DEFAULT_BUNDLE_NAME = "tl-resnet18-synthetic"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASS_NAMES = ("no_fracture", "fracture")
#: Bounds of a card's crop size in pixels: below, the network has no feature map left; above,
#: one crop would take gigabytes (a crafted card said 60,000).
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 16, 1024
#: Largest crop margin a card may state (a share of the box on each side).
MAX_CROP_MARGIN = 1.0
#: Values of :attr:`ModelCard.training_data`: what the weights were trained on ("" = not stated).
TRAINING_DATA_KINDS = ("synthetic", "clinical", "")


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold on P(fracture) and the validation figures behind it."""

    name: str
    threshold: float
    sensitivity: float
    specificity: float


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to use a classifier correctly, stored beside its weights.

    ``training``, ``recipe`` and ``metrics`` are free-form JSON objects written by ``tlaudit train``
    (data counts by class, level and AO type; hyperparameters; validation and test figures).
    """

    name: str
    architecture: str
    input_size: int
    crop_margin: float
    crop_normalisation: str = "none"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    class_names: tuple[str, str] = CLASS_NAMES
    operating_points: dict[str, OperatingPoint] = field(default_factory=dict)
    default_operating_point: str = "balanced"
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    feature_stride: int = 32
    """Downsampling of the last feature map (32 = torchvision's; 16 or 8 for finer heatmaps)."""
    training_data: str = ""
    """What the weights were trained on: "synthetic", "clinical", or "" (not stated). Reports
    warn that a "synthetic" model is not validated on patients."""
    guard: DomainGuard | None = field(default=None, compare=False, repr=False)
    """The domain guard (:mod:`auditor.model.guard`, :mod:`auditor.model.stage_guard`): what the
    training data look like in the network's features, stored in ``guard.safetensors`` beside
    the weights and written with the card (:func:`write_card`). None for a bundle without one:
    a scan then marks nothing out of distribution and says so."""
    validation: dict[str, Any] = field(default_factory=dict)
    """Where the card's held-out figures come from (:data:`VALIDATION_FIELDS`): ``status``
    "synthetic" (synthetic data only), "local" (a site's own labelled radiographs) or "none" (no
    held-out set), the set's name and size, and a ``warning`` when its figures say the model is
    not useful. Empty: not stated. Every scan and report shows :meth:`validation_status`."""

    def __post_init__(self) -> None:
        _check_validation(self.validation)
        if self.training_data not in TRAINING_DATA_KINDS:
            raise BundleError(
                f"model card training_data {self.training_data!r}; expected 'synthetic', "
                "'clinical' or '' (not stated)"
            )
        if self.feature_stride not in FEATURE_STRIDES:
            raise BundleError(
                f"model card feature_stride {self.feature_stride}; expected one of "
                f"{', '.join(map(str, FEATURE_STRIDES))}"
            )
        if self.architecture not in ARCHITECTURES:
            raise BundleError(
                f"model card names architecture {self.architecture!r}; expected one of "
                f"{', '.join(ARCHITECTURES)}"
            )
        if self.crop_normalisation not in CROP_NORMALISATIONS:
            raise BundleError(
                f"model card crop_normalisation {self.crop_normalisation!r}; expected one of "
                f"{', '.join(CROP_NORMALISATIONS)}"
            )
        if not MIN_INPUT_SIZE <= self.input_size <= MAX_INPUT_SIZE:
            raise BundleError(
                f"model card input_size {self.input_size}; expected {MIN_INPUT_SIZE} to "
                f"{MAX_INPUT_SIZE} pixels"
            )
        if not (math.isfinite(self.crop_margin) and 0.0 <= self.crop_margin <= MAX_CROP_MARGIN):
            raise BundleError(
                f"model card crop_margin {self.crop_margin}; expected 0 to {MAX_CROP_MARGIN}"
            )
        if (
            len(self.mean) != 3
            or len(self.std) != 3
            or not all(math.isfinite(v) for v in (*self.mean, *self.std))
            or min(self.std) <= 0
        ):
            raise BundleError(
                f"model card mean {self.mean} and std {self.std}; expected three finite means and "
                "three finite positive standard deviations"
            )
        for key, point in self.operating_points.items():
            if not (math.isfinite(point.threshold) and 0.0 <= point.threshold <= 1.0):
                raise BundleError(
                    f"model card operating point {key!r} has threshold {point.threshold}; "
                    "expected a probability from 0 to 1"
                )
        if tuple(self.class_names) != CLASS_NAMES:
            raise BundleError(
                f"model card class_names {self.class_names!r}; expected {CLASS_NAMES!r}"
            )
        if self.operating_points and self.default_operating_point not in self.operating_points:
            raise BundleError(
                f"default operating point {self.default_operating_point!r} is not among "
                f"{sorted(self.operating_points)}"
            )

    def operating_point(self, name: str | None = None) -> OperatingPoint:
        """Return the named operating point (the default one when ``name`` is None).

        Raises
        ------
        BundleError
            When the card has no operating point of that name.
        """
        key = name or self.default_operating_point
        try:
            return self.operating_points[key]
        except KeyError:
            known = ", ".join(sorted(self.operating_points)) or "none"
            raise BundleError(
                f"model {self.name!r} has no operating point {key!r} (it has: {known})"
            ) from None

    @property
    def heatmap_grid(self) -> int:
        """Cells per side of the raw heatmap: ResNet18's last feature map, or for VGG16 the
        conv5_3 map Grad-CAM reads (stride 16)."""
        stride = 16 if self.architecture == "vgg16" else self.feature_stride
        return max(1, -(-self.input_size // stride))

    def validation_status(self) -> str:
        """The card's validation status in words, e.g. "synthetic only (not validated on
        patients): held-out synthetic world, 947 vertebrae (113 fractures) of 150 patients"."""
        v = self.validation
        status = v.get("status")
        if not status:
            return "validation not stated"
        if status == "none":
            text = "not validated (no held-out set)"
        else:
            text = (
                "synthetic only (not validated on patients)"
                if status == "synthetic"
                else "validated locally"
            )
            text += (
                f": {v.get('set') or 'held-out set'}, {v['n_vertebrae']:,} vertebrae "
                f"({v['n_fractures']:,} fractures) of {v['n_patients']:,} patients"
            )
        if v.get("warning"):
            text += f"; WARNING: {v['warning']}"
        return text

    def headline(self) -> str:
        """One line describing the model, printed when a bundle is loaded."""
        grid = self.heatmap_grid
        parts = [
            f"{self.name}: {self.architecture}, {self.input_size}px crops, "
            f"{grid}x{grid} heatmap grid"
        ]
        source = self.training.get("source")
        if source:
            parts.append(f"trained on {source}")
        n = self.training.get("n_crops")
        if n:
            parts.append(f"{n} crops")
        test = self.metrics.get("test") or {}
        if "auc" in test:
            parts.append(f"test-split AUC {float(test['auc']):.3f}")
        if self.operating_points:
            op = self.operating_point()
            # points re-chosen by `tlaudit calibrate` rest on its set, not the validation split
            basis = "calibration" if "calibration" in self.metrics else "validation"
            parts.append(
                f"operating point {op.name} (P >= {op.threshold:.3f}; {basis} sens "
                f"{op.sensitivity:.2f}, spec {op.specificity:.2f})"
            )
        else:
            parts.append("no operating points (untrained)")
        if self.validation:
            parts.append(self.validation_status())
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The card as a JSON-ready dict (without the format marker and hash)."""
        # the guard's arrays go to their own file; write_card adds its record
        data = _json_safe(dataclasses.asdict(dataclasses.replace(self, guard=None)))
        del data["guard"]
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        data["class_names"] = list(self.class_names)
        if not self.training_data:
            del data["training_data"]  # optional: cards that do not state it stay as they were
        if not self.validation:
            del data["validation"]  # the same
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        """Build a card from :meth:`to_json` output.

        Raises
        ------
        BundleError
            On missing or malformed fields.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"guard"}  # see load_bundle
        try:
            fields = {k: v for k, v in data.items() if k in known}
            fields["operating_points"] = {
                k: OperatingPoint(
                    name=str(v["name"]),
                    threshold=float(v["threshold"]),
                    sensitivity=_float_or_nan(v.get("sensitivity")),
                    specificity=_float_or_nan(v.get("specificity")),
                )
                for k, v in dict(data.get("operating_points", {})).items()
            }
            fields["mean"] = tuple(float(v) for v in data.get("mean", IMAGENET_MEAN))
            fields["std"] = tuple(float(v) for v in data.get("std", IMAGENET_STD))
            fields["class_names"] = tuple(data.get("class_names", CLASS_NAMES))
            fields["input_size"] = int(data["input_size"])
            fields["crop_margin"] = float(data["crop_margin"])
            fields["feature_stride"] = int(data.get("feature_stride", 32))
            return cls(**fields)
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(f"model card is malformed: {err}") from err


@dataclass
class ModelBundle:
    """A loaded bundle: its card, its folder, the weights' hash and the weights themselves."""

    card: ModelCard
    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor] = field(repr=False)

    def build_model(self) -> nn.Module:
        """Instantiate the network in float32 eval mode with the bundle's weights loaded.

        Raises
        ------
        BundleError
            When the weights do not fit the card's architecture.
        """
        net = build_network(self.card.architecture, feature_stride=self.card.feature_stride)
        state = {k: v.float() if v.is_floating_point() else v for k, v in self.state_dict.items()}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise BundleError(
                f"{self.path}: weights do not fit a {self.card.architecture} network: "
                f"{str(err).splitlines()[0]}"
            ) from err
        return net.eval()


#: Values of ``validation["status"]`` (:attr:`ModelCard.validation`).
VALIDATION_KINDS = ("synthetic", "local", "none")
#: Keys of :attr:`ModelCard.validation`: required ones (with a status other than "none") first.
VALIDATION_FIELDS = ("status", "n_vertebrae", "n_fractures", "n_patients", "set", "warning")


def _check_validation(value: Any) -> None:
    """Refuse a malformed :attr:`ModelCard.validation` (an empty one is "not stated")."""
    if not isinstance(value, dict):
        raise BundleError(f"model card validation must be an object, got {value!r}")
    if not value:
        return
    unknown = sorted(set(value) - set(VALIDATION_FIELDS))
    if unknown:
        raise BundleError(
            f"model card validation has unknown keys {unknown}; expected {VALIDATION_FIELDS}"
        )
    status = value.get("status")
    if status not in VALIDATION_KINDS:
        raise BundleError(
            f"model card validation status {status!r}; expected one of {VALIDATION_KINDS}"
        )
    if status == "none":
        return
    for key in ("n_vertebrae", "n_fractures", "n_patients"):
        count = value.get(key)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise BundleError(
                f"model card validation {key} must be a count (an integer >= 0), got {count!r}"
            )
    if value["n_fractures"] > value["n_vertebrae"]:
        raise BundleError(
            f"model card validation counts {value['n_fractures']} fractures among "
            f"{value['n_vertebrae']} vertebrae"
        )
    for key in ("set", "warning"):
        if not isinstance(value.get(key, ""), str):
            raise BundleError(f"model card validation {key} must be text, got {value[key]!r}")


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats (NaN = "not measured") by None so the card is strict JSON."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _float_or_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def software_versions() -> dict[str, str]:
    """Versions recorded in a card (tlaudit, torch, torchvision, numpy, Python)."""
    import torchvision

    return {
        "tlaudit": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def utc_now() -> str:
    """Current UTC time as ISO 8601, seconds precision."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def save_bundle(
    directory: Path, card: ModelCard, model: nn.Module, half_precision: bool = True
) -> Path:
    """Write ``model`` and ``card`` as a bundle folder.

    Parameters
    ----------
    directory
        The bundle folder to create (or overwrite: an existing bundle's two files are replaced).
    card
        The model card.
    model
        A network built by :func:`~auditor.model.network.build_network` for ``card.architecture``.
    half_precision
        Store floating-point tensors as float16 (half the size; inference runs in float32 or
        lower anyway).

    Returns
    -------
    pathlib.Path
        ``directory``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu")
        if half_precision and t.is_floating_point():
            t = t.half()
        state[key] = t.contiguous()
    sha256 = write_weights(directory / WEIGHTS_FILE, state, FORMAT_MARKER)
    write_card(directory, card, sha256)
    logger.info("wrote model bundle %s (%s)", directory, sha256[:12])
    return directory


def write_card(directory: Path, card: ModelCard, sha256: str) -> None:
    """Write (atomically) ``card.json`` for the weights file already in ``directory``, whose
    SHA-256 is ``sha256``, and the card's domain guard, when it has one, as
    ``guard.safetensors`` beside it."""
    data = {"format": FORMAT_MARKER, "format_version": FORMAT_VERSION, **card.to_json()}
    data["weights_file"] = WEIGHTS_FILE
    data["sha256"] = sha256
    if card.guard is not None:
        data["guard"] = write_domain_guard(Path(directory), card.guard)
    write_text_atomic(
        Path(directory) / CARD_FILE, json.dumps(data, indent=2, allow_nan=False) + "\n"
    )


def load_bundle(path: Path | None = None) -> ModelBundle:
    """Load a bundle folder (or its ``card.json``); None loads the bundled default model.

    Raises
    ------
    BundleError
        When the path is missing, is not a tlaudit bundle, its card is malformed, its weights do
        not match the recorded SHA-256, or the weights file cannot be read.
    """
    if path is None:
        try:
            path = resource_path("models", DEFAULT_BUNDLE_NAME)
        except TlauditError as err:
            raise BundleError(f"no bundled model: {err}") from err
    path = Path(path).expanduser()
    folder = path.parent if path.is_file() and path.name == CARD_FILE else path
    card_path = folder / CARD_FILE
    if not folder.is_dir():
        raise BundleError(f"{path}: model bundle not found (expected a folder holding {CARD_FILE})")
    if not card_path.is_file():
        raise BundleError(
            f"{folder}: not a tlaudit model bundle (no {CARD_FILE}; expected {CARD_FILE} and "
            f"{WEIGHTS_FILE})"
        )
    data = read_card(card_path, "model")
    if data.get("format") != FORMAT_MARKER:
        raise BundleError(
            f"{card_path}: not a tlaudit model bundle (format marker {FORMAT_MARKER!r} missing)"
        )
    version = data.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise BundleError(
            f"{card_path}: bundle format_version {version!r}; expected a whole number"
        )
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{card_path}: bundle format version {data.get('format_version')} is newer than this "
            f"tlaudit understands ({FORMAT_VERSION}); upgrade tlaudit"
        )
    weights = folder / str(data.get("weights_file", WEIGHTS_FILE))
    if weights.parent.resolve() != folder.resolve() or not weights.is_file():
        raise BundleError(f"{folder}: weights file {weights.name!r} missing from the bundle")
    actual = checked_sha256(weights, data.get("sha256"), card_path)
    card = ModelCard.from_json(data)
    if "guard" in data:
        guard = read_domain_guard(folder, data["guard"], card_path, card.architecture)
        card = dataclasses.replace(card, guard=guard)
    state = read_weights(weights)
    return ModelBundle(card=card, path=folder, sha256=actual, state_dict=state)


def attach_guard(directory: Path, guard: DomainGuard | None) -> ModelBundle:
    """Give the bundle in ``directory`` the domain guard ``guard`` (None removes it): the guard
    file and the card are rewritten, the weights are untouched (same SHA-256).

    Raises
    ------
    BundleError
        When ``directory`` is not a loadable bundle, or the guard does not fit its network.
    """
    bundle = load_bundle(directory)
    if guard is not None:
        try:
            check_guard_fits(guard, bundle.card.architecture)
        except BundleError as err:
            raise BundleError(f"{directory}: {err}") from err
    write_card(bundle.path, dataclasses.replace(bundle.card, guard=guard), bundle.sha256)
    if guard is None:
        (bundle.path / GUARD_FILE).unlink(missing_ok=True)
    return load_bundle(bundle.path)


def create_untrained_bundle(
    directory: Path,
    architecture: str = "resnet18",
    input_size: int = 64,
    seed: int = 0,
    feature_stride: int = 32,
) -> Path:
    """Write a bundle with randomly initialised weights (for tests and benchmarks only).

    Its operating point ``balanced`` sits at 0.5 with no validation behind it (figures NaN).
    """
    torch.manual_seed(seed)
    net = build_network(architecture, feature_stride=feature_stride)
    nan = float("nan")
    card = ModelCard(
        name=f"untrained-{architecture}-{input_size}",
        architecture=architecture,
        input_size=input_size,
        feature_stride=feature_stride,
        crop_margin=0.15,
        operating_points={"balanced": OperatingPoint("balanced", 0.5, nan, nan)},
        default_operating_point="balanced",
        description="Randomly initialised weights for tests and benchmarks; predicts nothing.",
        training={"source": "nothing (untrained)", "n_crops": 0, "seed": seed},
        versions=software_versions(),
        created=utc_now(),
    )
    return save_bundle(directory, card, net)
