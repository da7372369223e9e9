"""The localizer as callers use it: a bundle on disk, a :class:`Localizer`, its results.

A bundle is a folder holding ``card.json`` (format marker, architecture, working size, decoding
thresholds, training summary, measured figures, limits, the weights' SHA-256) and
``weights.safetensors`` (the network's state dict). Loading never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from auditor import __version__
from auditor.bundle_files import checked_sha256, read_card, read_weights, write_weights
from auditor.errors import BundleError, TlauditError
from auditor.files import write_text_atomic
from auditor.localizer.decode import Detection, decode
from auditor.localizer.geometry import Letterbox, normalise
from auditor.localizer.levels import assign_levels
from auditor.localizer.net import HEAT_CHANNELS, LocalizerNet
from auditor.localizer.targets import BODY, PARTIAL, SACRUM
from auditor.records import VertebraBox
from auditor.resources import resource_path
from auditor.vocab import Level

logger = logging.getLogger(__name__)

#: Level-head class of S1 (classes: 0 above T10, 1..9 T10..S1).
S1_CLASS = 9

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
class PartialBody:
    """A body cut by the image edge beyond recognition: boxed, never given a level."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    confidence: float


@dataclass(frozen=True)
class LocalizerResult:
    """What the localizer found on one radiograph (boxes in input-image pixel coordinates).

    ``boxes`` are cranial to caudal, ``source="localizer"``, ``confidence`` the detection score,
    ``row`` their 1-based position, ``image`` and ``sop_instance_uid`` empty (the caller knows
    them). ``anchor`` says how levels were named (``sacrum``, ``rib`` or ``none``) and
    ``level_confidence`` how sure that naming is. ``reason`` is empty, or says why nothing usable
    was found.
    """

    boxes: tuple[VertebraBox, ...]
    partial: tuple[PartialBody, ...]
    anchor: str
    level_confidence: float
    reason: str = ""


class Localizer:
    """A loaded localizer network with its card; call :meth:`locate` per radiograph."""

    def __init__(
        self,
        net: LocalizerNet,
        card: LocalizerCard,
        path: Path | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.net = net.eval().to(self.device)
        self.card = card
        self.path = path

    @torch.inference_mode()
    def locate(
        self,
        pixels: npt.NDArray[np.floating],
        pixel_spacing_mm: tuple[float, float] | None = None,
    ) -> LocalizerResult:
        """Find and name the vertebral bodies on one radiograph.

        Parameters
        ----------
        pixels
            float32 (rows, cols) in [0, 1], bone bright (as ``read_radiograph`` returns).
        pixel_spacing_mm
            Row/column spacing if known. The network is trained across scales and does not need
            it; it is accepted so callers pass what they have (kept for future plausibility checks).

        Raises
        ------
        ValueError
            When ``pixels`` is not a non-empty 2-D array.
        """
        return self.locate_batch([pixels], [pixel_spacing_mm])[0]

    @torch.inference_mode()
    def locate_batch(
        self,
        images: Sequence[npt.NDArray[np.floating]],
        pixel_spacings_mm: Sequence[tuple[float, float] | None] | None = None,
    ) -> list[LocalizerResult]:
        """:meth:`locate` for several radiographs in one forward pass."""
        if not images:
            return []
        del pixel_spacings_mm  # see locate()
        size = self.card.working_size
        canvases, masks, letterboxes = [], [], []
        for pixels in images:
            arr = np.asarray(pixels)
            if arr.ndim != 2 or arr.size == 0:
                raise ValueError(f"expected a non-empty 2-D greyscale image, got shape {arr.shape}")
            lb = Letterbox.fit(arr.shape[0], arr.shape[1], size)
            canvases.append(lb.place(arr))
            mask = torch.zeros((size, size), dtype=torch.bool)
            mask[: lb.content_rows, : lb.content_cols] = True
            masks.append(mask)
            letterboxes.append(lb)
        x = normalise(torch.stack(canvases)[:, None], torch.stack(masks)[:, None])
        # the network runs on the chosen device; peaks are decoded on the host
        out = {key: value.cpu() for key, value in self.net(x.to(self.device)).items()}
        low = min(self.card.score_threshold, self.card.sacrum_peak_threshold)
        detections = [
            [
                d
                for d in dets
                if d.score
                >= (
                    self.card.sacrum_peak_threshold
                    if d.channel == SACRUM
                    else self.card.score_threshold
                )
            ]
            for dets in decode(out, threshold=low)
        ]
        return [self._result(dets, lb) for dets, lb in zip(detections, letterboxes, strict=True)]

    def _result(self, dets: list[Detection], lb: Letterbox) -> LocalizerResult:
        bodies = [d for d in dets if d.channel == BODY]
        sacrum = _sacrum_anchor(dets)
        partial = tuple(
            _partial(lb.boxes_to_image(np.array([d.box]))[0], d.score)
            for d in dets
            if d.channel == PARTIAL
        )
        if not bodies:
            reason = "no whole vertebral body found"
            if partial:
                reason += f" ({len(partial)} cut by the image edge)"
            return LocalizerResult((), partial, "none", 0.0, reason)
        assignment = assign_levels(bodies, sacrum, self.card.sacrum_threshold)
        named: list[tuple[Level, Detection]] = [
            (level, bodies[i])
            for i, level in zip(assignment.order, assignment.levels, strict=True)
            if level is not None
        ]
        if assignment.anchor == "sacrum" and sacrum is not None and sacrum.channel == SACRUM:
            named.append((Level.S1, sacrum))
        if not named:
            return LocalizerResult(
                (), partial, "none", 0.0, "bodies found, but none could be named T10..L5"
            )
        image_boxes = lb.boxes_to_image(np.array([d.box for _, d in named]))
        boxes = tuple(
            VertebraBox(
                row=i + 1,
                image="",
                sop_instance_uid="",
                level=level,
                x_min=float(b[0]),
                y_min=float(b[1]),
                x_max=float(b[2]),
                y_max=float(b[3]),
                source="localizer",
                confidence=round(det.score, 4),
            )
            for i, ((level, det), b) in enumerate(zip(named, image_boxes, strict=True))
        )
        return LocalizerResult(boxes, partial, assignment.anchor, assignment.confidence)


def _sacrum_anchor(dets: list[Detection]) -> Detection | None:
    """The S1 detection to count from, with its anchor score, or None.

    The S1 body is usually cut by the lower image edge, so in training it was mostly a *partial*
    body and the sacrum heat channel alone fires weakly (on held-out synthetic views its peak
    stayed below 0.3 on most images with S1 in view). The level head names S1 reliably from
    context, so an S1 candidate is a sacrum or partial peak, scored by the larger of its heat
    score and its S1 level probability. A partial S1 anchors the count but gets no box.
    """
    best: Detection | None = None
    best_score = 0.0
    for d in dets:
        if d.channel not in (SACRUM, PARTIAL):
            continue
        score = (
            max(d.score, d.level_probs[S1_CLASS])
            if d.channel == SACRUM
            else d.level_probs[S1_CLASS]
        )
        if score > best_score:
            best, best_score = d, score
    return None if best is None else dataclasses.replace(best, score=best_score)


def _partial(box: npt.NDArray[np.float32], score: float) -> PartialBody:
    x0, y0, x1, y1 = (float(v) for v in box)
    return PartialBody(x0, y0, x1, y1, round(score, 4))


def save_localizer(net: LocalizerNet, card: LocalizerCard, folder: Path) -> Path:
    """Write a bundle folder (weights as safetensors, card as JSON, both written atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    data = card.to_json()
    data["weights_sha256"] = write_weights(folder / WEIGHTS_FILE, state, FORMAT_MARKER)
    write_text_atomic(folder / CARD_FILE, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return folder


def load_localizer(path: Path | None = None, device: torch.device | None = None) -> Localizer:
    """Load a localizer bundle; ``None`` loads the bundled default from ``models/``. The network
    runs on ``device`` (default: the CPU).

    Raises
    ------
    BundleError
        When the folder is not a localizer bundle, its card is malformed, the weights do not
        match the card's hash, or they do not fit the recorded architecture.
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
    logger.info("loaded localizer %s from %s", card.name, folder)
    return Localizer(net, card, folder, device)


def record_figures(folder: Path, figures: dict[str, Any], dataset: str) -> None:
    """Store measured figures (and what they were measured on) in a bundle's card.

    The weights and their hash are untouched; only ``figures`` in ``card.json`` is replaced.

    Raises
    ------
    BundleError
        When ``folder`` is not a loadable localizer bundle.
    """
    loaded = load_localizer(folder)
    card_path = Path(folder) / CARD_FILE
    data = json.loads(card_path.read_text(encoding="utf-8"))
    data["figures"] = {"dataset": dataset, **figures}
    write_text_atomic(card_path, json.dumps(data, indent=2) + "\n")
    logger.info("recorded figures in %s (%s)", card_path, loaded.card.name)
