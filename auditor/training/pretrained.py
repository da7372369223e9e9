"""Pretrained (ImageNet) weights for transfer learning, from torchvision's cache or a user file.

Nothing here reaches a network unless the caller allows it explicitly: a hospital workstation is
often offline, and tests never download. When the weights are missing the error names the file to
place and the folder to place it in.
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
from auditor.errors import UsageError

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
        ``"imagenet"`` (torchvision's weights: its cache, or a download when allowed), ``"none"``
        (train from scratch) or a path to a ``.pth``/``.pt``/``.safetensors`` state dict.
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
            f"--pretrained {spec!r}: expected 'imagenet', 'none' or an existing weights file"
        )
    # The name alone says little (every bundle's file is weights.safetensors): the hash says which.
    return _load_state_file(path), f"file {path.name} (SHA-256 {file_sha256(path)})"
