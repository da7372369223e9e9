"""Image formation: from path lengths to the stored pixels of a processed CR/DX radiograph.

1. Beer-Lambert: primary fluence ``I0(heel) * exp(-(mu_soft * (soft - air) + mu_bone * bone))``
   on the render grid (smooth), collimated.
2. Scatter: a broad blur of the primary times the scatter-to-primary ratio.
3. Upsampling to the stored grid, then quantum noise (Poisson, Gaussian approximation) and detector
   blur at full resolution.
4. Processing as CR/DX consoles do: logarithm, dynamic-range compression (25 mm low-pass),
   unsharp-mask edge enhancement (1.6 mm), a tone curve anchored on the prevertebral soft tissue
   and the vertebral bodies (histogram analysis) with a film-like toe and shoulder, the render
   setting's gamma (1 by default: :mod:`auditor.synth.rendering`), quantisation to Bits Stored,
   MONOCHROME1 inversion.
5. Burned-in lead marker and text in a corner away from the spine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from auditor.synth.grid import resize
from auditor.synth.render import Maps, exposed_rect
from auditor.synth.scene import Acquisition, Scene

F32 = npt.NDArray[np.float32]

MU_SOFT = 0.021  # 1/mm, water-like tissue at an effective 60-70 keV
MU_BONE = 0.046  # 1/mm, cortical bone in excess of the tissue it displaces


@dataclass(frozen=True)
class Formed:
    """Stored pixels and their display rendering."""

    stored: npt.NDArray[np.uint16]
    display: F32  # [0, 1], bone bright, what a viewer shows with the stored window
    window: tuple[float, float]  # (centre, width) in stored values


def form_image(
    scene: Scene,
    maps: Maps,
    rng: np.random.Generator,
    avoid: list[tuple[float, float, float, float]],
) -> Formed:
    """Run the acquisition on the maps; ``avoid`` lists boxes (stored pixels) markers must miss."""
    acq = scene.acquisition
    grid = scene.grid
    rows, cols = grid.rows, grid.cols
    r_rows, r_cols = grid.render_shape

    atten = MU_SOFT * (maps.soft - maps.air) + MU_BONE * maps.bone
    heel = 1.0 + acq.heel * (np.linspace(-0.5, 0.5, r_rows, dtype=np.float32)[:, None])
    primary = heel * np.exp(-atten) * maps.exposed
    # Scatter: broad kernel (about 35 mm), computed on a coarse grid.
    step = max(1, round(4.0 / grid.render_pitch))
    coarse = primary[::step, ::step]
    spread = ndimage.gaussian_filter(coarse, 35.0 / (grid.render_pitch * step), mode="nearest")
    scatter = resize(spread.astype(np.float32), r_rows, r_cols)
    body = (maps.soft > 20.0) & maps.exposed
    spine = (maps.bone > 6.0) & maps.exposed
    if not spine.any():
        spine = body if body.any() else maps.exposed
    spine_level = max(float(np.median(primary[spine])), 1e-12)
    k = acq.scatter_ratio * spine_level / max(float(np.median(scatter[spine])), 1e-12)
    signal = primary + k * scatter
    signal *= np.where(maps.exposed, 1.0, 0.05).astype(np.float32)

    # Full resolution: upsample, quanta, detector blur.
    pixel_area = (grid.pitch / 0.13) ** 2
    scale = np.float32(acq.counts * pixel_area / spine_level)
    counts = resize(signal.astype(np.float32) * scale, rows, cols)
    noise = rng.standard_normal((rows, cols), dtype=np.float32)
    noise *= np.sqrt(counts)
    counts += noise
    counts = ndimage.gaussian_filter(counts, acq.blur_px, truncate=3.0)
    np.maximum(counts, np.float32(0.5), out=counts)
    log = np.log(counts)
    log *= np.float32(-1.0)
    log += np.log(scale)

    # Processing on coarse low-pass copies (cheap), applied at full resolution.
    x0, y0r, x1, y1 = exposed_rect(grid, acq.collimation)
    roi = _roi(avoid, rows, cols, (x0, y0r, x1, y1))
    low_edge = _lowpass(log, 1.6 / grid.pitch)
    low_drc = _lowpass(log, 25.0 / grid.pitch)
    ref = float(np.median(low_drc[roi][::4, ::4]))
    proc = log - low_edge
    proc *= np.float32(acq.edge_gain)
    proc += log
    low_drc -= np.float32(ref)
    low_drc *= np.float32(acq.drc_gain)
    proc -= low_drc
    soft_level, bone_level = _levels(proc, roi, avoid, grid.facing_right)
    # Anchor the soft tissue beside the spine and the vertebral bodies at the acquisition's display
    # levels (what a console's histogram analysis does), then roll off the extremes.
    gain = np.float32(acq.bone_contrast / max(bone_level - soft_level, 1e-6))
    proc -= np.float32(soft_level)
    proc *= gain
    proc += np.float32(acq.soft_level)
    _rolloff(proc)
    if acq.gamma != 1.0:  # a render setting's (auditor.synth.rendering); [0, 1] after the roll-off
        np.power(proc, np.float32(acq.gamma), out=proc)
    display = proc
    r0, r1, c0, c1 = int(y0r), int(np.ceil(y1)), int(x0), int(np.ceil(x1))
    fill = np.float32(1.0 if acq.shutter_white else 0.0)
    display[:r0] = fill
    display[r1:] = fill
    display[:, :c0] = fill
    display[:, c1:] = fill
    np.clip(display, 0.0, 1.0, out=display)
    _burn_in(display, acq, (x0, y0r, x1, y1), avoid)

    maxval = (1 << acq.bits_stored) - 1
    display *= np.float32(maxval)
    np.rint(display, out=display)
    stored = display.astype(np.uint16)
    display *= np.float32(1.0 / maxval)
    if acq.photometric == "MONOCHROME1":
        stored = (maxval - stored).astype(np.uint16)
    window = (float(maxval + 1) / 2.0, float(maxval + 1))
    return Formed(stored, display, window)


def _levels(
    proc: F32,
    roi: tuple[slice, slice],
    boxes: list[tuple[float, float, float, float]],
    facing_right: bool,
) -> tuple[float, float]:
    """Median processed value of the soft tissue around the spine and of the body centres."""
    r0, c0 = roi[0].start, roi[1].start
    sub = proc[roi][::4, ::4]
    rr = r0 + 4 * np.arange(sub.shape[0])[:, None]
    cc = c0 + 4 * np.arange(sub.shape[1])[None, :]
    near = np.zeros(sub.shape, bool)
    ring = np.zeros(sub.shape, bool)
    core = np.zeros(sub.shape, bool)
    for x0, y0, x1, y1 in boxes:
        w, h = x1 - x0, y1 - y0
        near |= (
            (cc > x0 - 0.1 * w) & (cc < x1 + 0.1 * w) & (rr > y0 - 0.1 * h) & (rr < y1 + 0.1 * h)
        )
        if facing_right:  # prevertebral soft tissue only (behind are the posterior elements)
            ring |= (cc > x1 + 0.1 * w) & (cc < x1 + 0.8 * w) & (rr > y0) & (rr < y1)
        else:
            ring |= (cc > x0 - 0.8 * w) & (cc < x0 - 0.1 * w) & (rr > y0) & (rr < y1)
        core |= (
            (cc > x0 + 0.25 * w)
            & (cc < x1 - 0.25 * w)
            & (rr > y0 + 0.25 * h)
            & (rr < y1 - 0.25 * h)
        )
    ring &= ~near
    soft = sub[ring] if ring.sum() > 50 else sub.ravel()
    bone = sub[core] if core.sum() > 20 else sub.ravel()
    soft_level = float(np.median(soft))
    bone_level = float(np.median(bone))
    if bone_level - soft_level < 1e-3:
        soft_level, bone_level = (float(v) for v in np.percentile(sub, [30, 90]))
    return soft_level, bone_level


def _rolloff(y: F32) -> None:
    """Smooth shoulder above 0.85 and a long toe below 0.25 (in place), like a film-like tone
    curve: dark lungs keep their detail, only air outside the body goes black."""
    hi = y > 0.85
    y[hi] = 0.85 + 0.15 * np.tanh((y[hi] - 0.85) / 0.15)
    lo = y < 0.25
    y[lo] = 0.25 - 0.25 * np.tanh((0.25 - y[lo]) / 0.25)


def _roi(
    boxes: list[tuple[float, float, float, float]],
    rows: int,
    cols: int,
    field: tuple[float, float, float, float],
) -> tuple[slice, slice]:
    """The region a console's histogram analysis looks at: the spine and its surroundings,
    inside the collimated field."""
    fx0, fy0, fx1, fy1 = (round(v) for v in field)
    if boxes:
        b = np.asarray(boxes, float)
        x0, y0, x1, y1 = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
        mx = 0.6 * (x1 - x0)
    else:
        x0, y0, x1, y1, mx = cols / 6, rows / 6, cols * 5 / 6, rows * 5 / 6, 0.0
    r0, r1 = max(fy0, int(y0)), min(fy1, int(y1) + 1)
    c0, c1 = max(fx0, int(x0 - mx)), min(fx1, int(x1 + mx) + 1)
    if r1 - r0 < 8 or c1 - c0 < 8:
        return slice(fy0, fy1), slice(fx0, fx1)
    return slice(r0, r1), slice(c0, c1)


def _lowpass(a: F32, sigma_px: float) -> F32:
    """Gaussian low-pass of a full-resolution image, computed on a block-averaged copy."""
    rows, cols = a.shape
    k = max(1, int(sigma_px / 3.0))
    small = (
        a[: rows // k * k, : cols // k * k].reshape(rows // k, k, cols // k, k).mean(axis=(1, 3))
    )
    small = ndimage.gaussian_filter(small, sigma_px / k, mode="nearest")
    return resize(small.astype(np.float32), rows, cols)


def _burn_in(
    display: F32,
    acq: Acquisition,
    field: tuple[float, float, float, float],
    avoid: list[tuple[float, float, float, float]],
) -> None:
    """Lead side marker and console text, white, in corners of the field that miss every box."""
    rows, cols = display.shape
    x0, y0, x1, y1 = (int(v) for v in field)
    size = max(10, int(0.045 * min(rows, cols)))
    corners = [
        (x0 + size // 2, y0 + size // 2),
        (x1 - 2 * size, y0 + size // 2),
        (x0 + size // 2, y1 - 2 * size),
        (x1 - 2 * size, y1 - 2 * size),
    ]
    free = []
    for cx, cy in corners:
        rect = (cx - 4, cy - 4, cx + 4 * size, cy + 2 * size)
        if not any(_overlap(rect, box) for box in avoid):
            free.append((cx, cy))
    font = ImageFont.load_default(size=size)
    if free:
        cx, cy = free[0]
        _stamp(display, acq.marker, font, cx, cy, frame=True)
    if acq.annotation and len(free) > 1:
        small = ImageFont.load_default(size=max(8, size // 2))
        cx, cy = free[-1]
        _stamp(display, acq.annotation, small, cx, cy, frame=False)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _stamp(
    display: F32,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    x: int,
    y: int,
    frame: bool,
) -> None:
    rows, cols = display.shape
    left, top, right, bottom = (round(v) for v in font.getbbox(text))
    w, h = right - left + 8, bottom - top + 8
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if frame:
        draw.rectangle([0, 0, w - 1, h - 1], outline=140, width=max(1, h // 12))
    draw.text((4 - left, 4 - top), text, fill=255, font=font)
    mask = np.asarray(canvas, dtype=np.float32) / 255.0
    x = max(0, min(x, cols - w))
    y = max(0, min(y, rows - h))
    region = display[y : y + h, x : x + w]
    mask = mask[: region.shape[0], : region.shape[1]]
    np.maximum(region, mask * 0.98, out=region)
