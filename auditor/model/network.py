"""Network definitions: the source study's ResNet18 and VGG16 with a two-class head.

Both are torchvision's architectures with the 1000-way ImageNet classifier replaced by a
2-neuron fully connected layer (``no_fracture``, ``fracture``). The networks return logits; training
applies log-softmax and the negative log-likelihood loss, as the study did, and inference applies
softmax. Which layers train is decided here too (:func:`set_trainable`).

The feature stride sets how fine the heatmaps are. torchvision's networks downsample by 32, so a
64 px crop leaves ResNet18 a 2 x 2 last feature map: a class activation map can then only name a
quadrant of the crop. ``feature_stride=16`` or ``8`` (ResNet18 only) keeps the last one or two
stages at the resolution of the stage before them: the first convolution of ``layer4`` (and
``layer3``) and its shortcut get stride 1, the usual way weakly supervised localisation gets
finer maps. The weights keep their shapes, so ImageNet or earlier weights load into any stride;
the stride is recorded in the model card. Measured on this project's 2-core CPU (one thread,
batch 32, forward and backward): 64 px at stride 32, 16 and 8 took 1.3, 1.9 and 4.6 s; 128 px
at stride 32 took 4.2 s.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

import torch
from torch import nn
from torchvision import models

Architecture = Literal["resnet18", "vgg16"]
ARCHITECTURES: tuple[str, ...] = ("resnet18", "vgg16")
#: Total downsampling of the last feature map: 32 (torchvision's), 16 or 8.
FEATURE_STRIDES: tuple[int, ...] = (32, 16, 8)

NUM_CLASSES = 2
#: Channels of the last feature map, whose global average is the feature vector the domain guard
#: measures (:mod:`auditor.model.guard`): ResNet18's penultimate layer, VGG16's pooled conv5_3.
_PENULTIMATE_WIDTH = {"resnet18": 512, "vgg16": 512}


#: The stages whose outputs a stage guard may read (:mod:`auditor.model.stage_guard`), as module
#: names inside the network (``net.get_submodule(name)``) with their channel counts: ResNet18's four
#: residual stages, VGG16's five convolutional blocks (each up to its max pooling).
GUARD_STAGES: dict[str, dict[str, int]] = {
    "resnet18": {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
    "vgg16": {
        "features.4": 64,
        "features.9": 128,
        "features.16": 256,
        "features.23": 512,
        "features.30": 512,
    },
}


def penultimate_width(architecture: str) -> int:
    """Length of the pooled feature vector of ``architecture`` (see :data:`_PENULTIMATE_WIDTH`).

    Raises
    ------
    ValueError
        For an unknown architecture.
    """
    try:
        return _PENULTIMATE_WIDTH[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}"
        ) from None


def build_network(
    architecture: str, num_classes: int = NUM_CLASSES, feature_stride: int = 32
) -> nn.Module:
    """Create an untrained network with a ``num_classes``-way head.

    Parameters
    ----------
    architecture
        ``"resnet18"`` or ``"vgg16"``.
    num_classes
        Size of the new fully connected head.
    feature_stride
        Downsampling of the last feature map (32, 16 or 8); see the module docstring.

    Raises
    ------
    ValueError
        For an unknown architecture or stride.
    """
    if feature_stride not in FEATURE_STRIDES:
        raise ValueError(f"feature stride {feature_stride} is not one of {FEATURE_STRIDES}")
    if architecture == "resnet18":
        net = models.resnet18(weights=None)
        net.fc = nn.Linear(net.fc.in_features, num_classes)
        stages = [net.layer4, net.layer3][: {32: 0, 16: 1, 8: 2}[feature_stride]]
        for stage in stages:
            first = stage[0]
            assert isinstance(first, models.resnet.BasicBlock) and first.downsample is not None
            first.conv1.stride = (1, 1)
            shortcut = first.downsample[0]
            assert isinstance(shortcut, nn.Conv2d)
            shortcut.stride = (1, 1)
        return net
    if architecture == "vgg16":
        if feature_stride != 32:
            # Its Grad-CAM already reads conv5_3, before the last pooling (stride 16).
            raise ValueError("a feature stride other than 32 is implemented for resnet18 only")
        vgg = models.vgg16(weights=None)
        last = vgg.classifier[6]
        assert isinstance(last, nn.Linear)
        vgg.classifier[6] = nn.Linear(last.in_features, num_classes)
        return vgg
    raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")


def load_backbone_weights(net: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy pretrained (e.g. ImageNet) weights into ``net``, skipping the replaced classifier.

    Tensors whose name or shape does not match (the 1000-way head) are left at their fresh
    initialisation. Returns the names that were not loaded.

    Raises
    ------
    ValueError
        When fewer than half of the network's tensors match: the file is for another architecture.
    """
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < len(own) // 2:
        raise ValueError(
            f"pretrained weights match only {len(usable)} of {len(own)} tensors of this network; "
            "they belong to another architecture"
        )
    net.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


def _trainable_modules(net: nn.Module, architecture: str) -> Iterator[nn.Module]:
    if architecture == "resnet18":
        assert isinstance(net, models.ResNet)
        # The study "retrained only ... the 2 last residual blocks": torchvision's layer4 holds
        # ResNet18's last two BasicBlocks; plus the new head.
        yield net.layer4
        yield net.fc
    elif architecture == "vgg16":
        assert isinstance(net, models.VGG)
        # VGG has no residual blocks; the equivalent is its last convolutional block
        # (conv5_1..conv5_3 and the pooling after them) plus the fully connected classifier.
        yield net.features[24:]
        yield net.classifier
    else:
        raise ValueError(f"unknown architecture {architecture!r}")


def set_trainable(net: nn.Module, architecture: str, layers: str) -> list[nn.Module]:
    """Freeze all but the layers to retrain; return the frozen modules.

    Parameters
    ----------
    layers
        ``"last2"`` (the study's transfer learning: last two residual blocks + head) or ``"all"``.

    Notes
    -----
    Frozen modules should stay in eval mode during training (:func:`freeze_batchnorm`), so that
    their batch-norm statistics stay those of the pretrained network.
    """
    if layers == "all":
        for p in net.parameters():
            p.requires_grad_(True)
        return []
    if layers != "last2":
        raise ValueError(f"unknown trainable-layer setting {layers!r}; expected 'last2' or 'all'")
    for p in net.parameters():
        p.requires_grad_(False)
    keep = list(_trainable_modules(net, architecture))
    for module in keep:
        for p in module.parameters():
            p.requires_grad_(True)
    kept_ids = {id(m) for k in keep for m in k.modules()}
    return [
        m for m in net.children() if id(m) not in kept_ids and any(True for _ in m.parameters())
    ]


def freeze_batchnorm(frozen: list[nn.Module]) -> None:
    """Put frozen modules in eval mode (call after every ``net.train()``)."""
    for module in frozen:
        module.eval()
