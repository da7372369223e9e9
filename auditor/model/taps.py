"""Reading a network's intermediate outputs from the forward pass it runs anyway.

:func:`tap_outputs` registers a forward hook on each named submodule for the duration of a
``with`` block and always removes them, as pytorch-grad-cam's activation recorder does. The scan
uses it to hand a stage guard (:mod:`auditor.model.stage_guard`) the feature maps of the same
classifying forward pass, so the guard costs no second pass. :func:`outputs_until` runs a network
only as far as the named stages, for a check that needs nothing after them.
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


class _StagesDone(Exception):
    """Raised by :func:`outputs_until`'s hook once every wanted output is in."""


def outputs_until(net: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Run ``net`` on ``x`` only as far as it takes for every submodule in ``names`` to give
    its output, and return those outputs by name: the rest of the network never runs. For a
    check that reads an early stage of a network whose later stages the caller does not need
    (the localizer's domain guard with a box file: :mod:`auditor.localizer.guard`).

    The forward pass is cut by an exception raised from the last hook, caught here; the hooks
    are removed either way. A network that routes a tapped module's output around ``forward``
    (or never calls a module) is run to its end, and the missing names raise.

    Raises
    ------
    AttributeError
        When ``net`` has no submodule of one of the names.
    KeyError
        When the forward pass never called one of the named submodules.
    """
    wanted = tuple(dict.fromkeys(names))
    outputs: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name: str, out: torch.Tensor) -> None:
        outputs[name] = out
        if len(outputs) == len(wanted):
            raise _StagesDone

    try:
        for name in wanted:
            module = net.get_submodule(name)
            handles.append(
                module.register_forward_hook(
                    lambda _module, _inputs, out, name=name: hook(name, out)
                )
            )
        if wanted:
            net(x)
    except _StagesDone:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [n for n in wanted if n not in outputs]
    if missing:
        raise KeyError(f"the forward pass never called {', '.join(missing)}")
    return {n: outputs[n] for n in wanted}
