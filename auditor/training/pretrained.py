"""Starting weights for transfer learning: ImageNet's, the bundled classifier's, or a user file.

Nothing here reaches a network unless the caller allows it explicitly: a hospital workstation is
often offline, and tests never download. When ImageNet weights are asked for and missing, the
error names the file to place and the folder to place it in.

The default, ``auto``, works offline: torchvision's ImageNet weights when its cache holds them
(the source study's start), otherwise the bundled classifier's weights, which ship with tlaudit.
Those were trained on tlaudit's synthetic radiographs for this very task, so their early layers
already respond to vertebral outlines and endplates; a short CPU fit from them learns far more
than one from random weights, which is what ``none`` gives (measured in docs/models.md). Their
one catch: figures on *synthetic* worlds flatter a model started from them, since the start has
seen the same renderer. The card records which start a run used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torchvision import models

from auditor.checksums import file_sha256
from auditor.errors import BundleError, UsageError
from auditor.model.bundle import DEFAULT_BUNDLE_NAME, load_bundle

logger = logging.getLogger(__name__)

_WEIGHTS = {
    "resnet18": models.ResNet18_Weights.IMAGENET1K_V1,
    "vgg16": models.VGG16_Weights.IMAGENET1K_V1,
}


def imagenet_weights_location(architecture: str) -> tuple[str, Path]:
    """Return (download URL, expected cache file) for torchvision's ImageNet weights."""
    weights = _WEIGHTS[architecture]
    filename = Path(urlparse(weights.url).path).name
    return weights.url, Path(torch.hub.get_dir()) / "checkpoints" / filename


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, SafetensorError, ValueError) as err:
        raise UsageError(f"cannot read pretrained weights {path}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path} does not hold a plain state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def resolve_pretrained(
    spec: str, architecture: str, allow_download: bool = False
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """Find the starting weights named by ``--pretrained``.

    Parameters
    ----------
    spec
        ``"auto"`` (ImageNet from torchvision's cache when there, otherwise ``"bundled"``; for
        VGG16, which has no bundled weights, ``"none"``), ``"imagenet"`` (torchvision's weights:
        its cache, or a download when allowed), ``"bundled"`` (the bundled ResNet18 classifier's
        weights), ``"none"`` (train from scratch) or a path to a ``.pth``/``.pt``/
        ``.safetensors`` state dict.
    architecture
        ``"resnet18"`` or ``"vgg16"``.
    allow_download
        Let torchvision download the ImageNet weights when they are not cached.

    Returns
    -------
    (state dict or None, description for the model card)

    Raises
    ------
    UsageError
        When the weights are not available; the message names the file and the folder.
    """
    if spec == "none":
        return None, "none (trained from scratch)"
    if spec == "auto":
        _, cached = imagenet_weights_location(architecture)
        if cached.is_file():
            state, desc = resolve_pretrained("imagenet", architecture)
            return state, f"auto: {desc}"
        if architecture != "resnet18":
            return None, (
                f"auto: none (trained from scratch; no ImageNet weights for {architecture} in "
                "torchvision's cache and no bundled weights for it)"
            )
        state, desc = resolve_pretrained("bundled", architecture)
        return state, f"auto: {desc} (no ImageNet weights in torchvision's cache)"
    if spec == "bundled":
        if architecture != "resnet18":
            raise UsageError(
                f"--pretrained bundled: the bundled classifier is a resnet18, not {architecture}"
            )
        try:
            bundle = load_bundle(None)
        except BundleError as err:
            raise UsageError(f"--pretrained bundled: {err}") from err
        state = {k: v.float() if v.is_floating_point() else v for k, v in bundle.state_dict.items()}
        return state, (
            f"bundled {DEFAULT_BUNDLE_NAME} weights (SHA-256 {bundle.sha256}; trained on "
            "synthetic radiographs)"
        )
    if spec == "imagenet":
        url, cached = imagenet_weights_location(architecture)
        if cached.is_file():
            logger.info("using cached ImageNet weights %s", cached)
            return _load_state_file(cached), f"torchvision ImageNet ({cached.name})"
        if not allow_download:
            raise UsageError(
                f"ImageNet weights for {architecture} are not in torchvision's cache: place "
                f"{cached.name} (from {url}) in {cached.parent}, or pass --pretrained PATH, "
                "--download-weights (needs a network) or --pretrained none"
            )
        try:
            state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
        except OSError as err:
            raise UsageError(
                f"could not download {url} ({err}); place {cached.name} in {cached.parent} or "
                "pass --pretrained PATH"
            ) from err
        return state, f"torchvision ImageNet ({cached.name}, downloaded)"
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UsageError(
            f"--pretrained {spec!r}: expected 'auto', 'imagenet', 'bundled', 'none' or an "
            "existing weights file"
        )
    # The name alone says little (every bundle's file is weights.safetensors): the hash says which.
    return _load_state_file(path), f"file {path.name} (SHA-256 {file_sha256(path)})"
