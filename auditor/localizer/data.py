"""Training images for the localizer, their in-memory cache, and on-the-fly augmentation.

Any source of annotated lateral radiographs becomes a stream of :class:`TrainingImage`; the
trainer letterboxes each once into a :class:`CanvasCache` (a larger canvas than the working size,
so that zooming in keeps detail) and draws augmented batches from it with :func:`augment_batch`.

Augmentation (all randomised per sample; ranges are the ``AugmentConfig`` defaults):

- geometry: scale 0.75-1.35 of the fitted size, rotation +-15 degrees, translation +-18% of the
  canvas, horizontal flip 50% (anterior left or right). Bodies pushed partly out of view become
  *partial* when less than ``partial_below`` (0.9) of their box stays visible, and are dropped
  below ``drop_below`` (0.35), close to the synthetic world's own rules (partial below 0.97 of
  the outline visible, no box below 0.35); this is where the crops that cut bodies come from.
- collimation: 35% of samples get one to three straight shutter edges (bright or dark bands).
- intensity: gamma 0.6-1.7, contrast 0.7-1.4, MONOCHROME inversion mistake 15%, Gaussian noise
  sigma 0-0.04, blur 30%, burned-in text-like marks 40%.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from auditor.localizer.geometry import Letterbox, normalise
from auditor.localizer.levels import level_class
from auditor.localizer.targets import BODY, NO_LEVEL, PARTIAL, SACRUM, CanvasTargets


@dataclass(frozen=True)
class TrainingImage:
    """One annotated radiograph: pixels and its bodies in image pixel coordinates.

    ``levels`` holds level names (``T9`` and above are allowed and mean "cranial to T10"; "" for
    unknown). ``partial`` marks bodies cut by the image edge; ``fractured`` is kept for
    evaluation only.
    """

    pixels: npt.NDArray[np.float32]
    boxes: npt.NDArray[np.float32]  # (N, 4) xyxy
    levels: tuple[str, ...]
    partial: npt.NDArray[np.bool_]
    fractured: npt.NDArray[np.bool_]
    name: str = ""


def _channel(level: str, partial: bool) -> int:
    if partial:
        return PARTIAL
    return SACRUM if level.strip().upper() == "S1" else BODY


def _class(level: str) -> int:
    if not level:
        return NO_LEVEL
    try:
        return level_class(level)
    except ValueError:
        return NO_LEVEL


@dataclass(frozen=True)
class CanvasCache:
    """Letterboxed training images held in memory (float16) with canvas-coordinate boxes."""

    canvases: torch.Tensor  # (N, 1, C, C) float16
    content: torch.Tensor  # (N, 2) content rows, cols
    boxes: tuple[npt.NDArray[np.float32], ...]
    channels: tuple[npt.NDArray[np.int64], ...]
    classes: tuple[npt.NDArray[np.int64], ...]

    @classmethod
    def build(cls, images: Iterable[TrainingImage], size: int) -> CanvasCache:
        canvases, content, boxes, channels, classes = [], [], [], [], []
        for im in images:
            lb = Letterbox.fit(im.pixels.shape[0], im.pixels.shape[1], size)
            canvases.append(lb.place(im.pixels).half())
            content.append((lb.content_rows, lb.content_cols))
            boxes.append(lb.boxes_to_canvas(im.boxes).reshape(-1, 4))
            channels.append(
                np.array(
                    [_channel(lv, bool(p)) for lv, p in zip(im.levels, im.partial, strict=True)],
                    np.int64,
                )
            )
            classes.append(np.array([_class(lv) for lv in im.levels], np.int64))
        if not canvases:
            raise ValueError("no training images")
        return cls(
            torch.stack(canvases)[:, None],
            torch.tensor(content, dtype=torch.int64),
            tuple(boxes),
            tuple(channels),
            tuple(classes),
        )

    def __len__(self) -> int:
        return int(self.canvases.shape[0])

    def save(self, path: Path) -> None:
        """Write the cache to an ``.npz`` file (plain arrays; loads without pickle)."""
        counts = np.array([len(b) for b in self.boxes], np.int64)
        np.savez(
            path,
            canvases=self.canvases.numpy(),
            content=self.content.numpy(),
            counts=counts,
            boxes=np.concatenate(self.boxes).reshape(-1, 4) if counts.sum() else np.zeros((0, 4)),
            channels=np.concatenate(self.channels) if counts.sum() else np.zeros(0, np.int64),
            classes=np.concatenate(self.classes) if counts.sum() else np.zeros(0, np.int64),
        )

    @classmethod
    def load(cls, path: Path) -> CanvasCache:
        """Read a cache written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            splits = np.cumsum(data["counts"])[:-1]
            return cls(
                torch.from_numpy(data["canvases"]),
                torch.from_numpy(data["content"]),
                tuple(np.split(data["boxes"].astype(np.float32), splits)),
                tuple(np.split(data["channels"].astype(np.int64), splits)),
                tuple(np.split(data["classes"].astype(np.int64), splits)),
            )

    @property
    def size(self) -> int:
        return int(self.canvases.shape[-1])


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges (see the module docstring). ``enabled=False`` only fits the canvas."""

    enabled: bool = True
    scale: tuple[float, float] = (0.75, 1.35)
    rotation_deg: float = 15.0
    translate: float = 0.18
    flip: float = 0.5
    collimation: float = 0.35
    gamma: tuple[float, float] = (0.6, 1.7)
    contrast: tuple[float, float] = (0.7, 1.4)
    invert: float = 0.15
    noise: float = 0.04
    blur: float = 0.3
    text: float = 0.4
    partial_below: float = 0.9
    drop_below: float = 0.35


def augment_batch(
    cache: CanvasCache,
    indices: list[int],
    out_size: int,
    rng: np.random.Generator,
    config: AugmentConfig,
) -> tuple[torch.Tensor, list[CanvasTargets]]:
    """Draw an augmented, normalised batch ``(B, 1, S, S)`` and its canvas targets."""
    b = len(indices)
    c = cache.size
    base = out_size / c
    thetas = np.zeros((b, 2, 3), np.float32)
    forward = np.zeros((b, 2, 3), np.float64)  # cache canvas px -> output canvas px
    rotations = np.zeros(b)
    for i in range(b):
        if config.enabled:
            s = base * rng.uniform(*config.scale)
            a = math.radians(rng.uniform(-config.rotation_deg, config.rotation_deg))
            flip = rng.random() < config.flip
            rows, cols = (int(v) for v in cache.content[indices[i]])
            # aim the content centre at the canvas centre, then shift
            tx = out_size / 2 + rng.uniform(-1, 1) * config.translate * out_size
            ty = out_size / 2 + rng.uniform(-1, 1) * config.translate * out_size
            cx, cy = cols / 2, rows / 2
        else:
            s, a, flip = base, 0.0, False
            tx = ty = cx = cy = 0.0
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        lin = s * rot @ (np.diag([-1.0, 1.0]) if flip else np.eye(2))
        shift = np.array([tx, ty]) - lin @ np.array([cx, cy])
        forward[i, :, :2], forward[i, :, 2] = lin, shift
        rotations[i] = a
        # affine_grid maps output normalised coords -> input normalised coords (align_corners=False)
        inv = np.linalg.inv(lin)
        inv_shift = -inv @ shift
        to_norm_out = np.array([[out_size / 2, 0, out_size / 2], [0, out_size / 2, out_size / 2]])
        m_out = np.vstack([to_norm_out, [0, 0, 1]])  # normalised -> px (approx, centres ignored)
        m_inv = np.vstack([np.hstack([inv, inv_shift[:, None]]), [0, 0, 1]])
        m_in = np.array([[2 / c, 0, -1], [0, 2 / c, -1], [0, 0, 1]])
        thetas[i] = (m_in @ m_inv @ m_out)[:2]
    theta = torch.from_numpy(thetas)
    src = cache.canvases[indices].float()
    grid = F.affine_grid(theta, [b, 1, out_size, out_size], align_corners=False)
    images = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    content = torch.zeros((b, 1, c, c))
    for i, idx in enumerate(indices):
        rows, cols = (int(v) for v in cache.content[idx])
        content[i, 0, :rows, :cols] = 1.0
    visible = F.grid_sample(
        content, grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    norm_mask = visible > 0.5
    if config.enabled:
        images, visible = _collimate(images, visible, rng, config)
        images = _intensity(images, norm_mask, rng, config)
    targets = [
        _transform_targets(cache, idx, forward[i], rotations[i], visible[i, 0], config)
        for i, idx in enumerate(indices)
    ]
    return normalise(images, norm_mask), targets


def _transform_targets(
    cache: CanvasCache,
    idx: int,
    forward: np.ndarray,
    rotation: float,
    visible: torch.Tensor,
    config: AugmentConfig,
) -> CanvasTargets:
    boxes = cache.boxes[idx]
    size = visible.shape[-1]
    if len(boxes) == 0:
        empty = np.zeros(0, np.int64)
        return CanvasTargets(np.zeros((0, 4), np.float32), empty, empty)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2
    lin, shift = forward[:, :2], forward[:, 2]
    scale = float(np.sqrt(abs(np.linalg.det(lin))))
    new_c = centres @ lin.T + shift
    cos, sin = abs(math.cos(rotation)), abs(math.sin(rotation))
    # Axis-aligned extent of a rotated body: between a rectangle's and an ellipse's.
    rect_w = half[:, 0] * cos + half[:, 1] * sin
    rect_h = half[:, 0] * sin + half[:, 1] * cos
    ell_w = np.sqrt((half[:, 0] * cos) ** 2 + (half[:, 1] * sin) ** 2)
    ell_h = np.sqrt((half[:, 0] * sin) ** 2 + (half[:, 1] * cos) ** 2)
    new_half = np.stack([(rect_w + ell_w) / 2, (rect_h + ell_h) / 2], axis=1) * scale
    full = np.concatenate([new_c - new_half, new_c + new_half], axis=1)
    vis = visible.numpy() > 0.5
    out_boxes, channels, classes = [], [], []
    for box, channel, cls in zip(full, cache.channels[idx], cache.classes[idx], strict=True):
        x0, y0, x1, y1 = box
        area = max((x1 - x0) * (y1 - y0), 1e-6)
        ix0, iy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        ix1, iy1 = min(size, math.ceil(x1)), min(size, math.ceil(y1))
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        region = vis[iy0:iy1, ix0:ix1]
        frac = float(region.sum()) / area
        if frac < config.drop_below:
            continue
        rows = np.nonzero(region.any(axis=1))[0]
        cols = np.nonzero(region.any(axis=0))[0]
        clipped = np.array(
            [
                max(x0, ix0 + cols[0]),
                max(y0, iy0 + rows[0]),
                min(x1, ix0 + cols[-1] + 1),
                min(y1, iy0 + rows[-1] + 1),
            ],
            np.float32,
        )
        if frac < config.partial_below:
            channel, cls = PARTIAL, NO_LEVEL
        out_boxes.append(clipped)
        channels.append(channel)
        classes.append(cls)
    if not out_boxes:
        empty = np.zeros(0, np.int64)
        return CanvasTargets(np.zeros((0, 4), np.float32), empty, empty)
    return CanvasTargets(
        np.stack(out_boxes), np.array(channels, np.int64), np.array(classes, np.int64)
    )


def _collimate(
    images: torch.Tensor, visible: torch.Tensor, rng: np.random.Generator, config: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    b, _, s, _ = images.shape
    ys, xs = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    for i in range(b):
        if rng.random() >= config.collimation:
            continue
        shutter = torch.zeros((s, s), dtype=torch.bool)
        for _ in range(int(rng.integers(1, 4))):
            angle = rng.uniform(0, 2 * math.pi)
            nx, ny = math.cos(angle), math.sin(angle)
            # a straight edge at distance d from the centre; the far side is shuttered
            d = rng.uniform(0.25, 0.5) * s
            shutter |= ((xs - s / 2) * nx + (ys - s / 2) * ny) > d
        value = float(rng.choice([rng.uniform(0.85, 1.0), rng.uniform(0.0, 0.1)]))
        images[i, 0][shutter & (visible[i, 0] > 0.5)] = value
        visible[i, 0][shutter] = 0.0
    return images, visible


def _intensity(
    images: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator, config: AugmentConfig
) -> torch.Tensor:
    b, _, _s, _ = images.shape
    out = images.clamp(0.0, 1.0)
    for i in range(b):
        x = out[i, 0]
        gamma = math.exp(rng.uniform(math.log(config.gamma[0]), math.log(config.gamma[1])))
        x = x.clamp_min(1e-4) ** gamma
        contrast = rng.uniform(*config.contrast)
        x = ((x - 0.5) * contrast + 0.5 + rng.uniform(-0.1, 0.1)).clamp(0.0, 1.0)
        if rng.random() < config.invert:
            x = 1.0 - x
        if rng.random() < config.blur:
            k = int(rng.choice([3, 5]))
            x = F.avg_pool2d(x[None, None], k, stride=1, padding=k // 2, count_include_pad=False)[
                0, 0
            ]
        if rng.random() < config.text:
            x = _text_marks(x, rng)
        sigma = rng.uniform(0.0, config.noise)
        x = x + sigma * torch.randn_like(x)
        out[i, 0] = torch.where(mask[i, 0], x, torch.zeros_like(x))
    return out


def _text_marks(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Burned-in text: short rows of small bright or dark glyph-like blocks."""
    s = x.shape[-1]
    x = x.clone()
    for _ in range(int(rng.integers(1, 4))):
        glyph = int(rng.integers(2, 6))
        n = int(rng.integers(2, 9))
        r0 = int(rng.integers(0, s - glyph))
        c0 = int(rng.integers(0, max(1, s - n * (glyph + 1))))
        value = float(rng.choice([1.0, 0.0]))
        for k in range(n):
            if rng.random() < 0.8:
                c = c0 + k * (glyph + 1)
                block = torch.rand(glyph, glyph) < 0.6
                x[r0 : r0 + glyph, c : c + glyph][block[: s - r0, : max(0, s - c)]] = value
    return x
