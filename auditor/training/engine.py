"""One epoch of training and one evaluation of a network on crops, with their loss terms.

The loss is the source study's: log-softmax and the negative log-likelihood, class-weighted when
configured (:func:`class_weights`), or class-balanced sampling instead (:func:`balanced_sampler`).
Beyond the study, :func:`zone_attention_loss` pulls each fracture's evidence into its annotated
fracture zone. Training runs in bf16 autocast where the hardware runs it natively
(:func:`training_precision`); the epochs, the kept weights and the schedule are
:func:`auditor.training.loop.fit`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from torchvision import models

from auditor.model.bundle import IMAGENET_MEAN, IMAGENET_STD
from auditor.model.cam import FRACTURE_CLASS, resnet_features
from auditor.model.infer import resolve_precision
from auditor.model.network import freeze_batchnorm
from auditor.records import positives
from auditor.training.data import CropDataset, CropItem
from auditor.training.metrics import Confusion, auc


def training_precision(device: torch.device) -> str:
    """bf16 autocast where the hardware runs it natively, otherwise fp32 (no fp16 training)."""
    prec = resolve_precision(device, "auto")
    return "bf16" if prec == "bf16" else "fp32"


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )


def class_weights(labels: npt.NDArray[np.int64], mode: str) -> torch.Tensor:
    """Loss weights per class: inverse frequency (``balanced``) or ones (``none``, ``sampler``)."""
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    if mode != "balanced" or np.any(counts == 0):
        return torch.ones(2)
    return torch.tensor(len(labels) / (2.0 * counts), dtype=torch.float32)


def balanced_sampler(
    labels: npt.NDArray[np.int64], generator: torch.Generator
) -> WeightedRandomSampler:
    """Each epoch: 2 x (minority count) crops without replacement, about half of each class."""
    counts = np.bincount(labels, minlength=2)
    per_sample = 1.0 / counts[labels].astype(np.float64)
    n = int(2 * counts.min()) if counts.min() > 0 else len(labels)
    return WeightedRandomSampler(
        per_sample.tolist(), num_samples=n, replacement=False, generator=generator
    )


def zone_attention_loss(
    features: torch.Tensor, weight: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """How far the fracture evidence of each crop lies from its fracture zone.

    ``features`` (N, C, h, w) are the last block's activations, ``weight`` (C,) the head's
    fracture-class row, ``masks`` (N, 1, S, S) the zones (all zero where a crop has none). For
    each crop with a zone, the map sum_c relu(w_c) A_c (the ``layercam4`` heatmap, which is also
    the layer4 term of ``layercam``) is turned into a distribution over the h x w cells by a
    softmax, and the loss is -log of the share of it that falls in the zone (each cell counted by
    the fraction of its pixels in the zone). Returns the mean over those crops and their number
    (0 and a zero loss when none has a zone).
    """
    has_zone = masks.flatten(1).sum(dim=1) > 0
    count = int(has_zone.sum())
    if count == 0:
        return features.new_zeros((), dtype=torch.float32), 0
    cam = torch.einsum("nchw,c->nhw", features[has_zone].float(), torch.relu(weight.float()))
    share = F.adaptive_avg_pool2d(masks[has_zone].float(), (cam.shape[1], cam.shape[2]))[:, 0]
    attention = torch.softmax(cam.flatten(1), dim=1)
    inside = (attention * share.flatten(1)).sum(dim=1)
    return -torch.log(inside.clamp_min(1e-6)).mean(), count


def train_one_epoch(
    net: nn.Module,
    loader: DataLoader[CropItem],
    optimiser: torch.optim.Optimizer,
    weights: torch.Tensor,
    device: torch.device,
    precision: str,
    frozen: list[nn.Module],
    zone_weight: float = 0.0,
    on_batch: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """One pass over ``loader``, updating ``net`` after every batch.

    Parameters
    ----------
    net
        The network, already on ``device``.
    loader
        Batches of ``(crops, labels)``, or ``(crops, labels, zone masks)`` when the zone loss is on.
    optimiser
        Steps the trainable parameters.
    weights
        Per-class weights of the NLL loss (:func:`class_weights`), on ``device``.
    device, precision
        Where the batches go, and ``"bf16"`` for autocast or ``"fp32"``.
    frozen
        Modules kept in eval mode while the rest trains (``set_trainable``'s return).
    zone_weight
        Weight of :func:`zone_attention_loss` (ResNet18 only); 0 leaves it out.
    on_batch
        Called after every batch.

    Returns
    -------
    tuple[float, float]
        The mean loss per crop, and the mean zone term per crop that had a zone (NaN when none).
    """
    # the zone loss reads the last block's activations (TrainConfig allows it for ResNet18 only)
    resnet = net if zone_weight > 0 and isinstance(net, models.ResNet) else None
    net.train()
    freeze_batchnorm(frozen)
    total, count = 0.0, 0
    zone_total, zone_count = 0.0, 0
    for batch in loader:
        x = batch[0].to(device).contiguous(memory_format=torch.channels_last)
        y = batch[1].to(device)
        masks = batch[2].to(device) if len(batch) > 2 else None
        with _autocast(device, precision):
            if resnet is not None and masks is not None:
                features = resnet_features(resnet, x)
                logits = resnet.fc(torch.flatten(resnet.avgpool(features), 1))
            else:
                logits = net(x)
        loss = F.nll_loss(F.log_softmax(logits.float(), dim=1), y, weight=weights)
        if resnet is not None and masks is not None:
            zone_term, n_zone = zone_attention_loss(
                features, resnet.fc.weight[FRACTURE_CLASS], masks
            )
            if n_zone:
                loss = loss + zone_weight * zone_term
                zone_total += float(zone_term.detach()) * n_zone
                zone_count += n_zone
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(y)
        count += len(y)
        if on_batch is not None:
            on_batch()
    return total / max(count, 1), zone_total / zone_count if zone_count else float("nan")


def predict_scores(
    net: nn.Module,
    crops: npt.NDArray[np.float32],
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 64,
    crop_normalisation: str = "none",
) -> npt.NDArray[np.float64]:
    """P(fracture) for crops (N, S, S) with ImageNet normalisation, in eval mode."""
    net.eval()
    ds = CropDataset(
        crops,
        np.zeros(len(crops), np.int64),
        IMAGENET_MEAN,
        IMAGENET_STD,
        crop_normalisation=crop_normalisation,
    )
    out = []
    with torch.inference_mode():
        for x, _ in DataLoader(ds, batch_size=batch_size, shuffle=False):
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            with _autocast(device, precision):
                logits = net(x)
            out.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def evaluate(
    net: nn.Module,
    crops: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    weights: torch.Tensor,
    device: torch.device,
    precision: str,
    crop_normalisation: str = "none",
) -> tuple[npt.NDArray[np.float64], dict[str, float]]:
    """Score ``crops`` and measure them against ``labels`` at a threshold of 0.5.

    Returns the scores (:func:`predict_scores`) and ``accuracy``, ``balanced_accuracy``, ``auc``
    and ``loss`` (the class-weighted NLL with ``weights``, as in training).
    """
    scores = predict_scores(net, crops, device, precision, crop_normalisation=crop_normalisation)
    conf = Confusion.from_predictions(labels, positives(scores, 0.5))
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    log_probs = torch.tensor(np.stack([np.log1p(-p), np.log(p)], axis=1))
    loss = float(F.nll_loss(log_probs, torch.from_numpy(labels), weight=weights.double().cpu()))
    return scores, {
        "accuracy": conf.accuracy,
        "balanced_accuracy": conf.balanced_accuracy,
        "auc": auc(labels, scores),
        "loss": loss,
    }


def monitor_key(metrics: dict[str, float], monitor: str) -> tuple[float, float]:
    """Sort key (higher is better): the monitored metric, then lower loss."""
    value = metrics[monitor]
    primary = -value if monitor == "loss" else value
    if not math.isfinite(primary):
        primary = -math.inf
    return primary, -metrics["loss"]
