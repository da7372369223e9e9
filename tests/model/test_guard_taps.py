"""Reading a network's stage outputs for a guard: a pass cut short after the stages it needs
(auditor.model.taps.outputs_until)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditor.model.taps import outputs_until, tap_outputs


class _Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 3, 3, padding=1)
        self.c = nn.Conv2d(3, 1, 3, padding=1)
        self.unused = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(self.a(x)))


def test_the_pass_stops_after_the_last_tapped_stage_with_the_same_outputs() -> None:
    torch.manual_seed(0)
    net = _Chain().eval()
    x = torch.rand(2, 1, 8, 8)
    calls: list[str] = []
    net.c.register_forward_pre_hook(lambda _m, _i: calls.append("c"))
    with torch.inference_mode(), tap_outputs(net, ("a", "b")) as full:
        net(x)
    assert calls == ["c"]
    calls.clear()
    with torch.inference_mode():
        cut = outputs_until(net, x, ("b", "a", "b"))
    assert list(cut) == ["b", "a"] and calls == []  # c never ran
    for name in ("a", "b"):
        torch.testing.assert_close(cut[name], full[name], rtol=0, atol=0)
    # the hooks are gone: a plain pass runs to the end and stores nothing
    net(x)
    assert calls == ["c"]
    assert not net.b._forward_hooks


def test_a_stage_the_pass_never_calls_or_does_not_have_raises() -> None:
    net = _Chain()
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(KeyError, match="never called unused"):
        outputs_until(net, x, ("a", "unused"))
    assert not net.a._forward_hooks
    with pytest.raises(AttributeError):
        outputs_until(net, x, ("nope",))
    assert outputs_until(net, x, ()) == {}
