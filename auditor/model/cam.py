"""Class activation heatmaps: LayerCAM or CAM for ResNet18, Grad-CAM for VGG16.

ResNet18 has three methods (:data:`RESNET_HEATMAP_SPECS`):

- ``layercam``: LayerCAM (Jiang et al. 2021, IEEE TIP 30:5875), each activation
  weighted by the positive part of the fracture logit's gradient at that position, summed over
  channels. It is read at two depths, the last residual stage (``layer4``) and the second
  (``layer2``), and the two maps are multiplied: the deep map says which part of the crop holds
  the evidence, the mid-level map where in that part the evidence sits. At ``layer4`` the
  gradient is the fracture class's fully connected weight, so that map is CAM restricted to the
  channels that speak *for* a fracture; CAM's channels that speak against one drag its maximum
  off the lesion. The map is computed on the crop and on a copy moved by half of ``layer2``'s
  stride along both axes (shift-and-stitch, :func:`resnet_layercam_map`), which fills in its grid.
  On synthetic validation crops (seed 7; 106 true positives at P >= 0.557) the fused map's
  maximum fell inside the fracture zone for 90 (85 %), CAM's for 69 (65 %); at P >= 0.316
  (112 true positives) shift-and-stitch raised the fused map from 94 (84 %) to 101 (90 %).
- ``layercam4`` (the default, :data:`auditor.vocab.DEFAULT_HEATMAP`): the ``layer4`` map of
  ``layercam`` alone, without the ``layer2`` map and without shift-and-stitch: the last feature
  maps weighted by the positive part of the fracture class's fully connected weights. It is the map
  the zone-attention loss of ``tlaudit train`` trains
  (:func:`auditor.training.engine.zone_attention_loss`), and like CAM it comes from the classifying
  forward pass, so it costs no second pass; its grid is the last stage's (8 pixels at stride 8).
- ``cam``: CAM (Zhou et al. 2016), as the source study did: the last convolutional feature maps
  weighted by the fully connected weights of the fracture class, summed over channels. Global
  average pooling makes this exact: the fracture logit is the spatial mean of the CAM plus the
  bias. It comes from the classifying forward pass; ``layercam`` needs a second pass with
  autograd.

VGG16's fully connected head breaks the CAM identity, so it uses Grad-CAM (Selvaraju et al.
2017): feature maps weighted by the spatially averaged gradient of the fracture logit, then
rectified.

Every map is upsampled (bilinear) to the input size and normalised per map to [0, 1] on the
device; a constant map becomes all zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from auditor.vocab import HeatmapMethod

FRACTURE_CLASS = 1


@dataclass(frozen=True)
class HeatmapSpec:
    """How one ResNet heatmap method is computed.

    A ``forward`` method is read from the classifying pass (:func:`resnet_logits_and_cam`,
    with only the positively weighted channels when ``positive_weights``); any other needs a
    second pass with autograd, ``gradient_map(net, x)`` giving (N, S, S) maps in [0, 1].
    """

    forward: bool
    positive_weights: bool = False
    gradient_map: Callable[[models.ResNet, torch.Tensor], torch.Tensor] | None = None


def normalise_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Upsample (N, h, w) maps to (N, size, size) and min-max normalise each to [0, 1] (float32)."""
    up = F.interpolate(
        maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False
    )
    up = up[:, 0]
    flat = up.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    span = hi - lo
    return torch.where(span > 1e-12, (up - lo) / span.clamp_min(1e-12), torch.zeros_like(up))


def resnet_mid_features(net: models.ResNet, x: torch.Tensor) -> torch.Tensor:
    """Run a torchvision ResNet through its stem, ``layer1`` and ``layer2``: (N, C, h, w)."""
    return net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))


def resnet_features(net: models.ResNet, x: torch.Tensor) -> torch.Tensor:
    """Run a torchvision ResNet up to its last convolutional block: (N, C, h, w) feature maps."""
    return net.layer4(net.layer3(resnet_mid_features(net, x)))


def resnet_logits_and_cam(
    net: models.ResNet,
    x: torch.Tensor,
    with_cam: bool = True,
    class_index: int = FRACTURE_CLASS,
    positive_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One forward pass giving logits (N, classes), raw CAMs (N, h, w) for ``class_index`` and
    the pooled penultimate features (N, C) the fully connected head reads (what the domain guard
    measures, :mod:`auditor.model.guard`).

    With ``positive_weights`` only the channels whose fully connected weight is positive count,
    each by its weight: the ``layercam4`` map (the layer4 LayerCAM). The map is unnormalised, in
    feature-map resolution, float32; pass it to :func:`normalise_maps`.
    """
    feats = resnet_features(net, x)
    pooled = torch.flatten(net.avgpool(feats), 1)
    logits = net.fc(pooled)
    if not with_cam:
        return logits, None, pooled
    weight = net.fc.weight[class_index].float()
    if positive_weights:
        weight = torch.relu(weight)
    cam = torch.einsum("nchw,c->nhw", feats.float(), weight)
    return logits, cam, pooled


def vgg_logits_and_pooled(net: models.VGG, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VGG16's forward pass (as ``net(x)``) giving logits and the global average of its last
    feature map (conv5_3 after pooling), (N, 512): the features the domain guard measures."""
    maps = net.features(x)
    logits = net.classifier(torch.flatten(net.avgpool(maps), 1))
    return logits, maps.mean(dim=(2, 3))


def resnet_layercam(
    net: models.ResNet, x: torch.Tensor, class_index: int = FRACTURE_CLASS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw LayerCAMs (N, h, w) of ``class_index`` at ``layer2`` and at ``layer4``, float32.

    The stem and the first two stages run without autograd; only ``layer3`` onwards is
    differentiated, with respect to activations (never to weights). Needs autograd, so call it
    outside ``torch.inference_mode``. Fuse the maps with :func:`fuse_maps`.
    """
    with torch.no_grad():
        mid = resnet_mid_features(net, x)
    mid = mid.detach().requires_grad_(True)
    with torch.enable_grad():
        deep = net.layer4(net.layer3(mid))
        logits = net.fc(torch.flatten(net.avgpool(deep), 1))
        grad_mid, grad_deep = torch.autograd.grad(logits[:, class_index].sum(), (mid, deep))
    maps = [
        torch.einsum("nchw,nchw->nhw", torch.relu(g.float()), a.detach().float())
        for g, a in ((grad_mid, mid), (grad_deep, deep))
    ]
    return maps[0], maps[1]


#: Input shifts (rows, columns) of the shift-and-stitch LayerCAM: none, and half of layer2's
#: stride of 8 along both axes (a quincunx lattice). On validation crops (seed 7, 112 true
#: positives) all four half-stride shifts found the fracture zone for the same 101 crops as these
#: two, at twice the cost. At 128 px (stage 10, hard decision world seed 24, 246 true positives)
#: the unshifted map alone found it for 229 and these two for 235; evaluation took 266 s against
#: 319 s.
STITCH_SHIFTS = ((0, 0), (4, 4))


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the content of (N, C, H, W) images by ``dy`` rows and ``dx`` columns (negative: up or
    left), repeating the edge pixels into the uncovered border; same shape."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)), mode="replicate")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + height, left : left + width]


def resnet_layercam_map(
    net: models.ResNet, x: torch.Tensor, class_index: int = FRACTURE_CLASS
) -> torch.Tensor:
    """The ``layercam`` heatmap: (N, S, S) in [0, 1] for an (N, 3, S, S) batch.

    The layer2 x layer4 LayerCAM (:func:`resnet_layercam`, :func:`fuse_maps`) of the crop moved
    by each of :data:`STITCH_SHIFTS`, each map moved back, and the maps averaged
    (shift-and-stitch, Long et al. 2015): the maps' 8-pixel grid gains the points halfway
    between, so a peak can sit on a thin band such as a compressed endplate. One batched pass of
    ``len(STITCH_SHIFTS) * N`` crops.
    """
    n, size = x.shape[0], int(x.shape[-1])
    moved = torch.cat([translate(x, dy, dx) for dy, dx in STITCH_SHIFTS])
    fused = fuse_maps(resnet_layercam(net, moved, class_index), size)
    total = torch.zeros((n, size, size), device=x.device)
    for k, (dy, dx) in enumerate(STITCH_SHIFTS):
        total += translate(fused[k * n : (k + 1) * n, None], -dy, -dx)[:, 0]
    return normalise_maps(total / len(STITCH_SHIFTS), size)


#: The one registry of ResNet heatmap methods: a new method is its :class:`HeatmapSpec` here and its
#: member (with a summary) in :class:`auditor.vocab.HeatmapMethod`.
RESNET_HEATMAP_SPECS: dict[HeatmapMethod, HeatmapSpec] = {
    HeatmapMethod.LAYERCAM4: HeatmapSpec(forward=True, positive_weights=True),
    HeatmapMethod.LAYERCAM: HeatmapSpec(forward=False, gradient_map=resnet_layercam_map),
    HeatmapMethod.CAM: HeatmapSpec(forward=True),
}
#: Their names, in the enum's order.
RESNET_HEATMAPS = tuple(method.value for method in RESNET_HEATMAP_SPECS)


def fuse_maps(maps: tuple[torch.Tensor, ...], size: int) -> torch.Tensor:
    """Upsample and normalise each (N, h, w) map (:func:`normalise_maps`), multiply them, and
    normalise the product to [0, 1] again: (N, size, size) float32."""
    fused = normalise_maps(maps[0], size)
    for extra in maps[1:]:
        fused = fused * normalise_maps(extra, size)
    return normalise_maps(fused, size)


@contextmanager
def _capture_activation(layer: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record ``layer``'s output during forward passes; the hook is always removed."""
    store: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        if (
            not output.requires_grad
        ):  # frozen weights and a plain input: make it a leaf to differentiate
            output = output.detach().requires_grad_(True)
        store.append(output)
        return output

    handle = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def vgg_target_layer(net: models.VGG) -> nn.Module:
    """The layer Grad-CAM reads for VGG16: the ReLU after the last convolution (conv5_3)."""
    relus = [m for m in net.features if isinstance(m, nn.ReLU)]
    return relus[-1]


def vgg_logits_and_gradcam(
    net: models.VGG, x: torch.Tensor, with_cam: bool = True, class_index: int = FRACTURE_CLASS
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (N, classes) and raw Grad-CAMs (N, h, w) for ``class_index`` from one forward pass.

    Needs autograd (call outside ``torch.inference_mode``); the input itself needs no gradient.
    The ReLU in the network is made out-of-place for the duration so the hooked activation stays
    valid for differentiation.
    """
    if not with_cam:
        return net(x), None
    layer = vgg_target_layer(net)
    was_inplace = getattr(layer, "inplace", False)
    layer.inplace = False  # type: ignore[assignment]
    try:
        with torch.enable_grad(), _capture_activation(layer) as store:
            logits = net(x)
            acts = store[-1]
            score = logits[:, class_index].float().sum()
            (grads,) = torch.autograd.grad(score, acts)
    finally:
        layer.inplace = was_inplace  # type: ignore[assignment]
    weights = grads.float().mean(dim=(2, 3))
    cam = torch.relu(torch.einsum("nchw,nc->nhw", acts.detach().float(), weights))
    return logits.detach(), cam
