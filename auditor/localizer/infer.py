"""The localizer as callers use it: a :class:`Localizer` on a device, and what it finds.

:func:`load_localizer` loads a bundle (:mod:`auditor.localizer.bundle`) and puts its network on
the chosen device; :meth:`Localizer.locate` finds and names the vertebral bodies on one
radiograph. With the bundle's domain guard (:mod:`auditor.localizer.guard`) the same forward
pass gives each image a distance from the training images, and an image beyond the guard's
threshold gets no box.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from auditor.localizer.bundle import LocalizerCard, load_localizer_bundle
from auditor.localizer.decode import Detection, decode
from auditor.localizer.geometry import Letterbox, normalise
from auditor.localizer.guard import OUT_OF_DISTRIBUTION_REASON
from auditor.localizer.levels import assign_levels
from auditor.localizer.network import LocalizerNet
from auditor.localizer.plausible import DEFAULT_RULES, NOT_TL, RunRules, check_run
from auditor.localizer.targets import BODY, PARTIAL, SACRUM
from auditor.model.stage_guard import StageGuard, stage_statistics
from auditor.model.taps import tap_outputs
from auditor.records import VertebraBox, is_out_of_distribution
from auditor.vocab import Level

logger = logging.getLogger(__name__)

#: Level-head class of S1 (classes: 0 above T10, 1..9 T10..S1).
S1_CLASS = 9


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
    was found. ``distance`` is the domain guard's distance of the image (None without a guard);
    an image ``out_of_distribution`` has no boxes and the reason
    :data:`~auditor.localizer.guard.OUT_OF_DISTRIBUTION_REASON`.
    """

    boxes: tuple[VertebraBox, ...]
    partial: tuple[PartialBody, ...]
    anchor: str
    level_confidence: float
    reason: str = ""
    distance: float | None = None
    out_of_distribution: bool = False


class Localizer:
    """A loaded localizer network with its card; call :meth:`locate` per radiograph.

    ``rules`` (:mod:`auditor.localizer.plausible`) decide whether the named boxes of an image are
    a thoracolumbar spine at all; an image that fails them gets no box and the reason
    "no thoracolumbar vertebrae found: ...". None turns the check off.

    ``guard`` (:mod:`auditor.localizer.guard`), when given, measures each image in the same
    forward pass (forward hooks on the stages it reads); an image beyond its threshold gets no
    box and the reason :data:`~auditor.localizer.guard.OUT_OF_DISTRIBUTION_REASON`.
    """

    def __init__(
        self,
        net: LocalizerNet,
        card: LocalizerCard,
        path: Path | None = None,
        device: torch.device | None = None,
        rules: RunRules | None = DEFAULT_RULES,
        guard: StageGuard | None = None,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.net = net.eval().to(self.device)
        self.card = card
        self.path = path
        self.rules = rules
        self.guard = guard
        self._measure = guard.to_device(self.device) if guard is not None else None

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
        x, letterboxes = self._canvases(images)
        stages = self.guard.stages if self.guard is not None else ()
        with tap_outputs(self.net, stages) as taps:
            raw = self.net(x.to(self.device))
        distances: list[float | None] = [None] * len(images)
        if self._measure is not None:
            # the stage guard ignores the pooled features: an empty (N, 0) stands in for them
            measured = self._measure(x.new_zeros((len(images), 0)), taps)
            distances = [float(d) for d in measured.cpu().numpy()]
        # peaks are decoded on the host
        out = {key: value.cpu() for key, value in raw.items()}
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
        return [
            self._guarded(dets, lb, distance)
            for dets, lb, distance in zip(detections, letterboxes, distances, strict=True)
        ]

    @torch.inference_mode()
    def stage_statistics(
        self, images: Sequence[npt.NDArray[np.floating]], stages: Sequence[str]
    ) -> dict[str, npt.NDArray[np.float32]]:
        """What a guard measures of ``images`` (as :meth:`locate_batch` takes them): per stage
        of ``stages``, the spatial mean and sd of each channel of its output, (N, 2C) float32
        (:func:`auditor.model.stage_guard.stage_statistics`), from the localizing forward pass.

        Raises
        ------
        ValueError
            When an image is not a non-empty 2-D array.
        AttributeError
            When the network has no stage of one of the names.
        """
        x, _ = self._canvases(images)
        with tap_outputs(self.net, stages) as taps:
            self.net(x.to(self.device))
        return {s: stage_statistics(taps[s]).cpu().numpy() for s in stages}

    def _canvases(
        self, images: Sequence[npt.NDArray[np.floating]]
    ) -> tuple[torch.Tensor, list[Letterbox]]:
        """The network's input for ``images`` (:func:`network_inputs` at the card's working
        size) and the letterboxes."""
        return network_inputs(images, self.card.working_size)

    def _guarded(
        self, dets: list[Detection], lb: Letterbox, distance: float | None
    ) -> LocalizerResult:
        """The result of one image: refused when the guard puts it out of distribution."""
        threshold = self.guard.threshold if self.guard is not None else None
        if is_out_of_distribution(distance, threshold):
            return LocalizerResult(
                (), (), "none", 0.0, OUT_OF_DISTRIBUTION_REASON, distance, out_of_distribution=True
            )
        return dataclasses.replace(self._result(dets, lb), distance=distance)

    def _result(self, dets: list[Detection], lb: Letterbox) -> LocalizerResult:
        bodies = [d for d in dets if d.channel == BODY]
        sacrum = _sacrum_anchor(dets)
        partial = tuple(
            _partial(lb.boxes_to_image(np.array([d.box]))[0], d.score)
            for d in dets
            if d.channel == PARTIAL
        )
        if not bodies:
            reason = f"{NOT_TL}: no whole vertebral body"
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
                (), partial, "none", 0.0, f"{NOT_TL}: bodies found, but none named T10..L5"
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
        if self.rules is not None:
            check = check_run(boxes, self.rules)
            if not check.plausible:
                return LocalizerResult((), partial, "none", 0.0, f"{NOT_TL}: {check.failure}")
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


def network_inputs(
    images: Sequence[npt.NDArray[np.floating]], size: int
) -> tuple[torch.Tensor, list[Letterbox]]:
    """The localizer network's input for ``images``: each letterboxed onto the ``size`` x
    ``size`` working canvas and standardised over its content, (N, 1, S, S) on the host, and
    the letterboxes.

    Raises
    ------
    ValueError
        When an image is not a non-empty 2-D array.
    """
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
    return normalise(torch.stack(canvases)[:, None], torch.stack(masks)[:, None]), letterboxes


def load_localizer(path: Path | None = None, device: torch.device | None = None) -> Localizer:
    """Load a localizer bundle (``None``: the bundled default, see
    :func:`~auditor.localizer.bundle.load_localizer_bundle`) with its network on ``device``
    (default: the CPU) and its domain guard, when the bundle has one.

    Raises
    ------
    BundleError
        When the folder is not a loadable localizer bundle.
    """
    bundle = load_localizer_bundle(path)
    return Localizer(bundle.net, bundle.card, bundle.path, device, guard=bundle.guard)
