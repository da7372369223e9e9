"""Batched inference: device and precision choice, preprocessing, probabilities and heatmaps.

:class:`Classifier` wraps a loaded bundle for one device. It runs channels-last, under
``torch.inference_mode`` (ResNet18) with mixed precision where the hardware has it: bf16 autocast
on CPUs with native bf16 (AVX-512 BF16 / AMX), bf16 or fp16 on CUDA. CAMs come from the same
forward pass and stay on the device until the batch is done, and so does each crop's domain-guard
distance (:mod:`auditor.model.guard`, :mod:`auditor.model.stage_guard`): the pooled features the
head reads, or the outputs of the stages the guard taps with forward hooks in the same pass
(:func:`auditor.model.taps.tap_outputs`), whitened by one matrix product, in float32 whatever the
precision.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torchvision import models

from auditor.crops import normalise_crops
from auditor.errors import UsageError
from auditor.model.bundle import ModelBundle, ModelCard
from auditor.model.cam import (
    RESNET_HEATMAP_SPECS,
    RESNET_HEATMAPS,
    normalise_maps,
    resnet_logits_and_cam,
    vgg_logits_and_gradcam,
    vgg_logits_and_pooled,
)
from auditor.model.guard import GuardFeatures
from auditor.model.stage_guard import stage_statistics
from auditor.model.taps import tap_outputs
from auditor.vocab import DEFAULT_HEATMAP, Device, HeatmapMethod, Precision

logger = logging.getLogger(__name__)

DEVICES = tuple(device.value for device in Device)
PRECISIONS = tuple(precision.value for precision in Precision)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def select_device(requested: str = "auto") -> torch.device:
    """Pick the torch device: ``auto`` prefers CUDA, then Apple MPS, then CPU.

    Raises
    ------
    UsageError
        For an unknown name, or a device this machine does not have.
    """
    name = requested.lower().strip()
    if name not in DEVICES:
        raise UsageError(f"unknown device {requested!r}; expected one of {', '.join(DEVICES)}")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if has_mps else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    if name == "mps" and not has_mps:
        raise UsageError("device 'mps' requested but Apple MPS is not available; use --device cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True when oneDNN can run bf16 natively on this CPU (AVX-512 BF16 or AMX).

    Without it bf16 autocast is emulated and slower than fp32, so ``auto`` keeps fp32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(device: torch.device, requested: str = "auto") -> str:
    """Choose ``bf16``/``fp16``/``fp32`` for ``device``.

    Raises
    ------
    UsageError
        For an unknown name or a precision the device cannot run.
    """
    name = requested.lower().strip()
    if name not in PRECISIONS:
        raise UsageError(
            f"unknown precision {requested!r}; expected one of {', '.join(PRECISIONS)}"
        )
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if name == "auto":
            return "bf16" if bf16_ok else "fp16"
        if name == "bf16" and not bf16_ok:
            raise UsageError("this GPU does not support bf16; use --precision fp16")
        return name
    if device.type == "mps":
        return "fp16" if name == "auto" else name
    if name == "auto":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if name == "fp16":
        raise UsageError("fp16 autocast is not useful on CPU; use bf16 or fp32")
    return name


def preprocess_crops(crops: npt.NDArray[np.float32], card: ModelCard) -> torch.Tensor:
    """Turn greyscale crops (N, S, S) in [0, 1] into a normalised (N, 3, S, S) float32 tensor.

    The card's per-crop normalisation is applied first (``percentile``: contrast stretch, see
    :func:`auditor.crops.stretch_contrast`); the grey value is then repeated on the three
    channels the ImageNet-shaped network expects and normalised with the card's mean and std.
    Works on CPU without touching the model, so it can run in DataLoader workers. The caller's
    array is not modified.

    Raises
    ------
    ValueError
        When the crops are not (N, S, S) with S equal to the card's input size.
    """
    arr = np.asarray(crops, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (card.input_size, card.input_size):
        raise ValueError(
            f"expected crops of shape (N, {card.input_size}, {card.input_size}), got {arr.shape}"
        )
    arr = normalise_crops(arr, card.crop_normalisation)
    x = torch.from_numpy(arr.copy())[:, None].expand(-1, 3, -1, -1)
    mean = torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


@dataclass(frozen=True)
class Prediction:
    """Output of one batch: P(fracture) per crop, when asked heatmaps in [0, 1], and when the
    bundle has a domain guard each crop's distance to the training data (None without one).

    Crops below the ``cam_min_prob`` given to :meth:`Classifier.predict` have all-zero maps.
    """

    probs: npt.NDArray[np.float32]
    cams: npt.NDArray[np.float32] | None
    heatmap_s: float = 0.0  # seconds of the separate heatmap pass (layercam, Grad-CAM)
    distances: npt.NDArray[np.float32] | None = None


class Classifier:
    """A bundle's network on one device, ready for batched prediction with heatmaps.

    Parameters
    ----------
    bundle
        A loaded :class:`~auditor.model.bundle.ModelBundle`.
    device
        Where to run (see :func:`select_device`).
    precision
        ``auto`` (see :func:`resolve_precision`), ``bf16``, ``fp16`` or ``fp32``.
    heatmap
        ResNet heatmap method, ``layercam``, ``layercam4`` or ``cam`` (see
        :mod:`auditor.model.cam`); VGG16 always uses Grad-CAM.

    Raises
    ------
    UsageError
        For an unknown device, precision or heatmap method.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        device: torch.device,
        precision: str = "auto",
        heatmap: str = DEFAULT_HEATMAP,
    ) -> None:
        try:
            method = HeatmapMethod(heatmap)
        except ValueError:
            raise UsageError(
                f"unknown heatmap method {heatmap!r}; expected one of {', '.join(RESNET_HEATMAPS)}"
            ) from None
        self._spec = RESNET_HEATMAP_SPECS[method]
        self.bundle = bundle
        self.card = bundle.card
        self.device = device
        self.precision = resolve_precision(device, precision)
        self.channels_last = device.type in ("cpu", "cuda")
        net = bundle.build_model().to(device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net.eval()
        self.heatmap = "grad-cam" if isinstance(net, models.VGG) else method.value
        self.guard = bundle.card.guard
        self._guard = None if self.guard is None else self.guard.to_device(device)
        self._guard_stages = () if self.guard is None else self.guard.stages

    def describe(self) -> str:
        """Human-readable device and precision, e.g. ``cpu, fp32, channels-last``."""
        prec = "fp32" if self.precision == "fp32" else f"{self.precision} autocast"
        parts = [str(self.device), prec]
        if self.channels_last:
            parts.append("channels-last")
        parts.append(f"{self.heatmap} heatmaps")
        return ", ".join(parts)

    def preprocess(self, crops: npt.NDArray[np.float32]) -> torch.Tensor:
        """See :func:`preprocess_crops` (uses this classifier's card)."""
        return preprocess_crops(crops, self.card)

    def _autocast(self) -> torch.autocast:
        dtype = _DTYPES.get(self.precision, torch.float32)
        return torch.autocast(
            device_type=self.device.type, dtype=dtype, enabled=self.precision != "fp32"
        )

    def predict(
        self, batch: torch.Tensor, cam: bool = True, cam_min_prob: float = 0.0
    ) -> Prediction:
        """Classify a preprocessed batch (N, 3, S, S); heatmaps for the fracture class if ``cam``.

        Heatmaps are computed for the crops whose probability is at least ``cam_min_prob`` (all
        by default); the others get all-zero maps, which saves the second, autograd pass of
        LayerCAM and Grad-CAM for crops nobody looks at. The batch may live on the CPU (pinned
        or not); it is moved to the device without modifying the caller's tensor.
        """
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, S, S) batch, got {tuple(batch.shape)}")
        non_blocking = self.device.type == "cuda" and batch.is_pinned()
        x = batch.to(self.device, dtype=torch.float32, non_blocking=non_blocking)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        size = int(batch.shape[-1])
        maps: torch.Tensor | None = None
        distances: torch.Tensor | None = None
        with (
            torch.inference_mode(),
            self._autocast(),
            tap_outputs(self.net, self._guard_stages) as stages,
        ):
            if isinstance(self.net, models.ResNet):
                logits, raw, pooled = resnet_logits_and_cam(
                    self.net,
                    x,
                    with_cam=cam and self._spec.forward,
                    positive_weights=self._spec.positive_weights,
                )
                if raw is not None:
                    maps = normalise_maps(raw, size)
            else:
                logits, pooled = vgg_logits_and_pooled(self.net, x)
            if self._guard is not None:
                distances = self._guard(pooled, stages)
        probs = torch.softmax(logits.float(), dim=1)[:, 1]
        out_probs = probs.cpu().numpy().astype(np.float32, copy=False)
        out_distances = (
            None if distances is None else distances.cpu().numpy().astype(np.float32, copy=False)
        )
        heatmap_s = 0.0
        if cam and maps is None:
            # compared in float64 on the host, as callers compare float(prob) >= threshold
            wanted = np.flatnonzero(out_probs.astype(np.float64) >= cam_min_prob)
            maps = torch.zeros((x.shape[0], size, size), device=x.device)
            if len(wanted):
                start = time.perf_counter()
                index = torch.from_numpy(wanted).to(x.device)
                maps[index] = self._gradient_maps(x[index], size)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                heatmap_s = time.perf_counter() - start
        out_maps = (
            maps.float().cpu().numpy().astype(np.float32, copy=False) if maps is not None else None
        )
        return Prediction(
            probs=out_probs, cams=out_maps, heatmap_s=heatmap_s, distances=out_distances
        )

    def features(self, batch: torch.Tensor) -> npt.NDArray[np.float32]:
        """The pooled penultimate features (N, C) of a preprocessed batch, float32: what the
        domain guard measures, for fitting one (:func:`auditor.model.guard.fit_guard`)."""
        return self.guard_features(batch).pooled

    def guard_features(self, batch: torch.Tensor, stages: tuple[str, ...] = ()) -> GuardFeatures:
        """The pooled penultimate features of a preprocessed batch and the statistics of the
        outputs of ``stages`` (:func:`auditor.model.stage_guard.stage_statistics`), read by
        forward hooks from the same pass, on the host in float32: what the guards measure, for
        fitting one (:func:`auditor.model.stage_guard.fit_stage_guard`)."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, S, S) batch, got {tuple(batch.shape)}")
        x = batch.to(self.device, dtype=torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast(), tap_outputs(self.net, stages) as maps:
            if isinstance(self.net, models.ResNet):
                _, _, pooled = resnet_logits_and_cam(self.net, x, with_cam=False)
            else:
                _, pooled = vgg_logits_and_pooled(self.net, x)
            statistics = {s: _host(stage_statistics(maps[s])) for s in stages}
        return GuardFeatures(_host(pooled), statistics)

    def _gradient_maps(self, x: torch.Tensor, size: int) -> torch.Tensor:
        """LayerCAM (ResNet) or Grad-CAM (VGG16) maps of the crops ``x``, (N, size, size) in
        [0, 1]. A second pass with autograd, so outside ``inference_mode`` (``x`` was made
        outside it, so it can enter autograd)."""
        with self._autocast():
            if isinstance(self.net, models.ResNet):
                assert self._spec.gradient_map is not None  # forward methods never get here
                maps = self._spec.gradient_map(self.net, x)
            else:
                _, raw = vgg_logits_and_gradcam(self.net, x, with_cam=True)
                assert raw is not None
                maps = normalise_maps(raw, size)
        return maps.detach().float()


def _host(t: torch.Tensor) -> npt.NDArray[np.float32]:
    return t.float().cpu().numpy().astype(np.float32, copy=False)
