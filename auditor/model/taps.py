"""Reading a network's intermediate outputs from the forward pass it runs anyway.

:func:`tap_outputs` registers a forward hook on each named submodule for the duration of a
``with`` block and always removes them, as pytorch-grad-cam's activation recorder does. The scan
uses it to hand a stage guard (:mod:`auditor.model.stage_guard`) the feature maps of the same
classifying forward pass, so the guard costs no second pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def tap_outputs(net: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Inside the block, every forward pass of ``net`` stores the output of each submodule in
    ``names`` (e.g. ``"layer3"``) in the yielded dict, under its name; the last pass wins. No
    names: no hooks, an empty dict.

    Raises
    ------
    AttributeError
        When ``net`` has no submodule of one of the names.
    """
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            module = net.get_submodule(name)
            handles.append(
                module.register_forward_hook(
                    lambda _module, _inputs, out, name=name: outputs.__setitem__(name, out)
                )
            )
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
