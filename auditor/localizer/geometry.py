"""Working-resolution geometry: letterboxing a radiograph and mapping boxes back.

The localizer sees every radiograph at one fixed square working size: the image is scaled so its
long side fits, keeping the aspect ratio, and padded with zeros on the right and bottom. A
:class:`Letterbox` records that mapping so boxes found on the working canvas are returned in the
stored-pixel coordinates of the input image (x = column, y = row), whatever its size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Letterbox:
    """How an image of ``rows`` x ``cols`` was placed on a ``size`` x ``size`` canvas.

    Canvas coordinates are ``image coordinates * scale``; the image occupies the top-left
    ``content_rows`` x ``content_cols`` of the canvas and the rest is zero padding.
    """

    rows: int
    cols: int
    size: int
    scale: float

    @classmethod
    def fit(cls, rows: int, cols: int, size: int) -> Letterbox:
        """The letterbox that fits an image of ``rows`` x ``cols`` into a ``size`` canvas."""
        if rows < 1 or cols < 1:
            raise ValueError(f"image shape must be positive, got {rows} x {cols}")
        return cls(rows=rows, cols=cols, size=size, scale=size / max(rows, cols))

    @property
    def content_rows(self) -> int:
        return max(1, min(self.size, round(self.rows * self.scale)))

    @property
    def content_cols(self) -> int:
        return max(1, min(self.size, round(self.cols * self.scale)))

    def boxes_to_canvas(self, boxes: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Map ``(N, 4)`` xyxy boxes from image to canvas coordinates."""
        return (np.asarray(boxes, dtype=np.float32) * self.scale).astype(np.float32)

    def boxes_to_image(self, boxes: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Map ``(N, 4)`` xyxy boxes from canvas to image coordinates, clipped to the image."""
        out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / self.scale
        out[:, 0::2] = np.clip(out[:, 0::2], 0.0, float(self.cols))
        out[:, 1::2] = np.clip(out[:, 1::2], 0.0, float(self.rows))
        return out.astype(np.float32)

    def place(self, pixels: npt.NDArray[np.floating] | torch.Tensor) -> torch.Tensor:
        """Resize ``pixels`` (rows, cols) with antialiasing and pad to the canvas.

        Returns a float32 tensor of shape ``(size, size)``.
        """
        image = torch.as_tensor(np.asarray(pixels, dtype=np.float32))
        if tuple(image.shape) != (self.rows, self.cols):
            raise ValueError(
                f"letterbox was fitted to {self.rows} x {self.cols}, got {tuple(image.shape)}"
            )
        resized = F.interpolate(
            image[None, None],
            size=(self.content_rows, self.content_cols),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[0, 0]
        canvas = torch.zeros((self.size, self.size), dtype=torch.float32)
        canvas[: self.content_rows, : self.content_cols] = resized
        return canvas


def normalise(canvas: torch.Tensor, content_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Standardise a canvas (or a batch ``(B, 1, S, S)``) to zero mean, unit spread.

    Statistics come from the image content only (``content_mask`` true), so the zero padding does
    not shift them; padding is set to the content's minimum after standardising. Per-image
    standardisation removes most of the window/level differences between archives.
    """
    x = canvas if canvas.dim() == 4 else canvas[None, None]
    mask = torch.ones_like(x, dtype=torch.bool) if content_mask is None else content_mask
    if mask.dim() != 4:
        mask = mask.reshape(x.shape)
    maskf = mask.to(x.dtype)
    count = maskf.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
    mean = (x * maskf).sum(dim=(1, 2, 3), keepdim=True) / count
    var = (((x - mean) * maskf) ** 2).sum(dim=(1, 2, 3), keepdim=True) / count
    out = (x - mean) / (var.sqrt() + 0.05)
    low = torch.where(mask, out, torch.full_like(out, torch.inf)).amin(dim=(1, 2, 3), keepdim=True)
    out = torch.where(mask, out, low.expand_as(out))
    return out if canvas.dim() == 4 else out[0, 0]


def box_iou(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes, shape ``(N, M)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
