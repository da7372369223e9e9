"""From network maps to detections on the working canvas.

Peaks are local maxima of the sigmoid heat maps (3x3 max-pool, as in CenterNet) above a score
threshold; each becomes a box from the size and offset heads at its cell. Overlapping peaks of
different channels (a body seen both as whole and as partial) are resolved by box IoU, keeping
the higher score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from auditor.localizer.geometry import box_iou
from auditor.localizer.network import STRIDE


@dataclass(frozen=True)
class Detection:
    """One peak: canvas-pixel box, heat channel, score and level probabilities (T10..S1)."""

    box: tuple[float, float, float, float]
    channel: int
    score: float
    level_probs: tuple[float, ...]

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def decode(
    out: dict[str, torch.Tensor], threshold: float = 0.3, max_peaks: int = 40, nms_iou: float = 0.5
) -> list[list[Detection]]:
    """Decode a batch of network outputs into per-image detection lists (canvas pixels).

    Parameters
    ----------
    out
        The network's output dict for a batch.
    threshold
        Minimum peak score (sigmoid of the heat logit).
    max_peaks
        Most peaks kept per image before suppression.
    nms_iou
        Peaks whose boxes overlap more than this (any channel) keep only the higher score.
    """
    heat = torch.sigmoid(out["heat"].float())
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    size = out["size"].float().clamp(-2.0, 7.0).exp()
    offset = out["offset"].float()
    level = torch.softmax(out["level"].float(), dim=1)
    b, _c, g, _ = heat.shape
    results: list[list[Detection]] = []
    for i in range(b):
        flat = peaks[i].reshape(-1)
        k = min(max_peaks, flat.numel())
        scores, idx = flat.topk(k)
        keep = scores >= threshold
        scores, idx = scores[keep], idx[keep]
        chans = (idx // (g * g)).tolist()
        cells = idx % (g * g)
        ys, xs = (cells // g).tolist(), (cells % g).tolist()
        dets: list[Detection] = []
        for s, ch, y, x in zip(scores.tolist(), chans, ys, xs, strict=True):
            cx = (x + float(offset[i, 0, y, x])) * STRIDE
            cy = (y + float(offset[i, 1, y, x])) * STRIDE
            w, h = float(size[i, 0, y, x]), float(size[i, 1, y, x])
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            dets.append(Detection(box, int(ch), float(s), tuple(level[i, :, y, x].tolist())))
        results.append(_suppress(dets, nms_iou))
    return results


def _suppress(dets: list[Detection], iou: float) -> list[Detection]:
    if not dets:
        return dets
    order = sorted(range(len(dets)), key=lambda j: -dets[j].score)
    boxes: npt.NDArray[np.float64] = np.array([dets[j].box for j in order], dtype=np.float64)
    ious = box_iou(boxes, boxes)
    kept: list[int] = []
    for a in range(len(order)):
        if all(ious[a, b] <= iou for b in kept):
            kept.append(a)
    return [dets[order[a]] for a in kept]
