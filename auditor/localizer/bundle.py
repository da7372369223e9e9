"""The localizer's bundle: its card, and reading and writing the bundle folder.

A bundle is a folder holding ``card.json`` (format marker, architecture, working size, decoding
thresholds, training summary, measured figures, limits, the weights' SHA-256, and optionally the
record of a domain guard), ``weights.safetensors`` (the network's state dict) and, with a guard,
``guard.safetensors`` (:mod:`auditor.localizer.guard`). Loading never unpickles anything; the file
handling shared with the classifier's bundle is :mod:`auditor.bundle_files`. Running the network
on radiographs is :mod:`auditor.localizer.infer`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor import __version__
from auditor.bundle_files import checked_sha256, read_card, read_weights, write_weights
from auditor.checksums import file_sha256
from auditor.errors import BundleError, TlauditError
from auditor.files import write_text_atomic
from auditor.localizer.guard import read_localizer_guard
from auditor.localizer.network import HEAT_CHANNELS, LocalizerNet
from auditor.model.stage_guard import StageGuard
from auditor.resources import resource_path
from auditor.vocab import Level

logger = logging.getLogger(__name__)

FORMAT_MARKER = "tlaudit-localizer-bundle"
FORMAT_VERSION = 1
CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.safetensors"
#: Folder name, inside ``models/``, of the bundle ``load_localizer(None)`` loads.
DEFAULT_LOCALIZER = "localizer-v2"
ARCHITECTURE = "centernet-unet"


@dataclass(frozen=True)
class LocalizerCard:
    """Everything needed to use a localizer bundle correctly, and what is known of it."""

    name: str
    working_size: int = 192
    width: int = 12
    architecture: str = ARCHITECTURE
    heat_channels: tuple[str, ...] = HEAT_CHANNELS
    levels: tuple[str, ...] = tuple(level.value for level in Level)
    score_threshold: float = 0.3
    sacrum_threshold: float = 0.2
    sacrum_peak_threshold: float = 0.15
    training: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    reproduce: str = ""
    limits: str = (
        "Trained on synthetic lateral thoracolumbar radiographs only (tlaudit synth); not "
        "validated on real radiographs. Levels outside T10..S1 are not named."
    )
    tlaudit_version: str = __version__

    def __post_init__(self) -> None:
        # Bounds that keep a crafted card from costing gigabytes or giving silent nonsense
        # (a width of 4,096 reached 9 GB; a NaN score threshold found no box and said nothing).
        for key, low, high in (("working_size", 64, 1024), ("width", 4, 64)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise BundleError(f"localizer card {key} {value!r}; expected {low} to {high}")
        for key in ("score_threshold", "sacrum_threshold", "sacrum_peak_threshold"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
                raise BundleError(f"localizer card {key} {value!r}; expected a number in (0, 1)")
        if tuple(self.levels) != tuple(level.value for level in Level):
            raise BundleError(f"localizer card levels {list(self.levels)}; expected T10..S1")
        if tuple(self.heat_channels) != HEAT_CHANNELS:
            raise BundleError(
                f"localizer card heat_channels {list(self.heat_channels)}; expected "
                f"{list(HEAT_CHANNELS)}"
            )

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["format"] = FORMAT_MARKER
        data["format_version"] = FORMAT_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> LocalizerCard:
        if data.get("format") != FORMAT_MARKER:
            raise BundleError(
                f"{where}: not a tlaudit localizer bundle (format {data.get('format')!r}, "
                f"expected {FORMAT_MARKER!r})"
            )
        if data.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"{where}: localizer bundle format version {data.get('format_version')!r} is not "
                f"supported (expected {FORMAT_VERSION})"
            )
        if data.get("architecture") != ARCHITECTURE:
            raise BundleError(
                f"{where}: unknown localizer architecture {data.get('architecture')!r}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("heat_channels", "levels"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise BundleError(f"{where}: malformed localizer card: {err}") from err


@dataclass(frozen=True)
class LocalizerBundle:
    """A loaded bundle: the network (CPU, eval mode), its card, the folder it came from and its
    domain guard (None for a bundle without one)."""

    net: LocalizerNet
    card: LocalizerCard
    path: Path
    guard: StageGuard | None = None


def save_localizer(net: LocalizerNet, card: LocalizerCard, folder: Path) -> Path:
    """Write a bundle folder (weights as safetensors, card as JSON, both written atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    data = card.to_json()
    data["weights_sha256"] = write_weights(folder / WEIGHTS_FILE, state, FORMAT_MARKER)
    write_text_atomic(folder / CARD_FILE, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return folder


def load_localizer_bundle(path: Path | None = None) -> LocalizerBundle:
    """Load a localizer bundle (its network on the CPU, in eval mode); ``None`` loads the bundled
    default from ``models/``.

    Raises
    ------
    BundleError
        When the folder is not a localizer bundle, its card is malformed, the weights do not
        match the card's hash, or they do not fit the recorded architecture, or the card's
        ``guard`` record is malformed or does not match its file or the network.
    """
    try:
        folder = resource_path("models", DEFAULT_LOCALIZER, explicit=path)
    except TlauditError as err:
        raise BundleError(str(err)) from err
    card_path, weights = folder / CARD_FILE, folder / WEIGHTS_FILE
    if not card_path.is_file() or not weights.is_file():
        raise BundleError(
            f"{folder}: a localizer bundle needs {CARD_FILE} and {WEIGHTS_FILE} in the folder"
        )
    data = read_card(card_path, "localizer")
    card = LocalizerCard.from_json(data, card_path)
    checked_sha256(weights, data.get("weights_sha256"), card_path)
    state = read_weights(weights)
    net = LocalizerNet(width=card.width)
    try:
        net.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        )
    except RuntimeError as err:
        raise BundleError(f"{weights}: weights do not fit {card.architecture}: {err}") from err
    guard = None
    if "guard" in data:  # a bundle made before the localizer had a guard has none
        guard = read_localizer_guard(folder, data["guard"], card_path, card.width)
    logger.info("loaded localizer %s from %s", card.name, folder)
    return LocalizerBundle(net.eval(), card, folder, guard)


def card_sha256(path: Path | None = None) -> str:
    """The SHA-256 of a localizer bundle's ``card.json``, the bundle's identity (the card records
    the weights' and the guard's hashes, which loading checks), read without loading the network;
    ``None`` is the bundled default, the folder resolved as :func:`load_localizer_bundle` does.

    Raises
    ------
    BundleError
        When the folder does not exist or holds no card.
    """
    try:
        folder = resource_path("models", DEFAULT_LOCALIZER, explicit=path)
    except TlauditError as err:
        raise BundleError(str(err)) from err
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise BundleError(f"{folder}: a localizer bundle needs {CARD_FILE} in the folder")
    return file_sha256(card_path)


def record_figures(folder: Path, figures: dict[str, Any], dataset: str) -> None:
    """Store measured figures (and what they were measured on) in a bundle's card.

    The weights and their hash are untouched; only ``figures`` in ``card.json`` is replaced.

    Raises
    ------
    BundleError
        When ``folder`` is not a loadable localizer bundle.
    """
    loaded = load_localizer_bundle(folder)
    card_path = Path(folder) / CARD_FILE
    data = json.loads(card_path.read_text(encoding="utf-8"))
    data["figures"] = {"dataset": dataset, **figures}
    write_text_atomic(card_path, json.dumps(data, indent=2) + "\n")
    logger.info("recorded figures in %s (%s)", card_path, loaded.card.name)
