"""Training targets and losses for the CenterNet-style heads.

Each annotated body becomes a Gaussian peak in its heat channel at stride 4 (radius from the
box size, as in CenterNet), plus size, offset and level targets at its centre cell. The heat loss
is CenterNet's penalty-reduced focal loss; size and offset use L1 at centre cells; level uses
cross-entropy at centre cells of bodies whose level is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from auditor.localizer.network import HEAT_CHANNELS, STRIDE

BODY, SACRUM, PARTIAL = (HEAT_CHANNELS.index(n) for n in ("body", "sacrum", "partial"))
#: Level index meaning "unknown level" (no level loss at this centre).
NO_LEVEL = -1


@dataclass(frozen=True)
class CanvasTargets:
    """Boxes of one canvas: ``(N, 4)`` xyxy canvas pixels, heat channel and level index each."""

    boxes: npt.NDArray[np.float32]
    channels: npt.NDArray[np.int64]
    levels: npt.NDArray[np.int64]


def _radius(w: float, h: float) -> float:
    # A Gaussian whose sigma scales with the smaller box side (in cells); the disc between two
    # bodies is narrow, so keep peaks tight enough that neighbours stay separate.
    return max(0.7, min(w, h) / STRIDE / 5.0)


def render(targets: list[CanvasTargets], size: int) -> dict[str, torch.Tensor]:
    """Render a batch of canvas targets into dense maps at stride 4.

    Returns
    -------
    dict
        ``heat`` (B, 3, G, G) in [0, 1]; ``size`` and ``offset`` (B, 2, G, G); ``reg_mask``
        (B, 1, G, G) true at centre cells; ``level`` (B, G, G) int64, -1 where no level.
    """
    grid = size // STRIDE
    b = len(targets)
    heat = np.zeros((b, len(HEAT_CHANNELS), grid, grid), np.float32)
    size_t = np.zeros((b, 2, grid, grid), np.float32)
    offset_t = np.zeros((b, 2, grid, grid), np.float32)
    reg_mask = np.zeros((b, 1, grid, grid), bool)
    level_t = np.full((b, grid, grid), NO_LEVEL, np.int64)
    ys, xs = np.mgrid[0:grid, 0:grid].astype(np.float32)
    for i, t in enumerate(targets):
        for box, channel, level in zip(t.boxes, t.channels, t.levels, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            w, h = x1 - x0, y1 - y0
            if w < 1.0 or h < 1.0:
                continue
            cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
            ix, iy = int(cx), int(cy)
            if not (0 <= ix < grid and 0 <= iy < grid):
                continue
            sigma = _radius(w, h)
            g = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
            heat[i, channel] = np.maximum(heat[i, channel], g)
            heat[i, channel, iy, ix] = 1.0
            size_t[i, :, iy, ix] = (np.log(w), np.log(h))
            offset_t[i, :, iy, ix] = (cx - ix, cy - iy)
            reg_mask[i, 0, iy, ix] = True
            if level != NO_LEVEL:
                # Level is a property of the whole body: supervise the 3x3 cells around the centre.
                level_t[i, max(0, iy - 1) : iy + 2, max(0, ix - 1) : ix + 2] = level
    return {
        "heat": torch.from_numpy(heat),
        "size": torch.from_numpy(size_t),
        "offset": torch.from_numpy(offset_t),
        "reg_mask": torch.from_numpy(reg_mask),
        "level": torch.from_numpy(level_t),
    }


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss (alpha 2, beta 4), per positive."""
    p = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1.0).float()
    neg = 1.0 - pos
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p**2 * (1 - target) ** 4 * neg
    n_pos = pos.sum().clamp_min(1.0)
    return -(pos_loss.sum() + neg_loss.sum()) / n_pos


def losses(out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """All loss terms for one batch, and their weighted ``total``."""
    heat = focal_loss(out["heat"], tgt["heat"])
    mask = tgt["reg_mask"].float()
    n = mask.sum().clamp_min(1.0)
    size = (F.l1_loss(out["size"].float(), tgt["size"], reduction="none") * mask).sum() / n
    offset = (F.l1_loss(out["offset"].float(), tgt["offset"], reduction="none") * mask).sum() / n
    level_target = tgt["level"]
    if bool((level_target != NO_LEVEL).any()):
        level = F.cross_entropy(out["level"].float(), level_target, ignore_index=NO_LEVEL)
    else:
        level = out["level"].sum() * 0.0
    total = heat + 2.0 * size + offset + 0.5 * level
    return {"total": total, "heat": heat, "size": size, "offset": offset, "level": level}
