"""A bundle's two files, for both bundled models (the classifier and the localizer).

A bundle is a folder holding a JSON card and a safetensors weights file whose SHA-256 the card
records. Reading one runs no code: the card is JSON, the weights are plain tensors
(safetensors), and weights whose hash does not match the card are refused. Each model's loader
(:func:`auditor.model.bundle.load_bundle`, :func:`auditor.localizer.infer.load_localizer`)
validates its own card's fields; the file handling they share lives here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from auditor.checksums import file_sha256
from auditor.errors import BundleError
from auditor.files import atomic_path


def read_card(card_path: Path, what: str) -> dict[str, Any]:
    """The card ``card_path`` as a JSON object; ``what`` names the model in errors.

    Raises
    ------
    BundleError
        When the file cannot be read, is not JSON, or is not a JSON object.
    """
    try:
        data = json.loads(Path(card_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{card_path}: cannot read the {what} card: {err}") from err
    except RecursionError as err:  # JSON nested thousands deep: no card of ours
        raise BundleError(f"{card_path}: the {what} card is nested too deeply to be one") from err
    if not isinstance(data, dict):
        raise BundleError(f"{card_path}: the {what} card must be a JSON object")
    return data


def checked_sha256(weights: Path, recorded: object, card_path: Path) -> str:
    """The SHA-256 of ``weights``, when it is the one the card records.

    Raises
    ------
    BundleError
        When the hashes differ (the weights were changed or damaged) or the card records none.
    """
    actual = file_sha256(weights)
    if actual != recorded:
        shown = str(recorded)[:16] + "..." if recorded else "(none)"
        raise BundleError(
            f"{weights}: the weights do not match the SHA-256 recorded in {Path(card_path).name} "
            f"({actual[:16]}... against {shown}); they were changed or damaged"
        )
    return actual


def read_weights(weights: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU (no code runs).

    Raises
    ------
    BundleError
        When the file cannot be read as safetensors.
    """
    try:
        return load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise BundleError(f"{weights}: cannot read the weights: {err}") from err


def write_weights(weights: Path, state: dict[str, torch.Tensor], format_marker: str) -> str:
    """Write ``state`` as safetensors atomically, with ``format_marker`` in its metadata;
    return the file's SHA-256 for the card."""
    with atomic_path(Path(weights)) as tmp:
        save_file(state, str(tmp), metadata={"format": format_marker})
    return file_sha256(weights)
