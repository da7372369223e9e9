"""The localizer network: a small fully convolutional encoder-decoder with CenterNet-style heads.

Input: one standardised greyscale canvas ``(B, 1, S, S)``. Output at stride 4 (``S/4`` square):

- ``heat`` (3 channels, logits): centres of whole vertebral bodies (T10..L5, and any body above
  them), of the S1 body (the sacral anchor), and of bodies cut by the image edge (partial);
- ``size`` (2): log width and log height of the box, in canvas pixels;
- ``offset`` (2): sub-cell position of the centre, in cells;
- ``level`` (10, logits): which level the body at this cell is (class 0: cranial to T10, e.g. T9
  on a thoracic view; classes 1..9: T10..S1), read from the whole field of view (ribs, sacrum,
  spine shape); used to name levels when no sacrum is in view.

The encoder goes down to stride 32 (plus two dilated convolutions) so the level head sees most of
the spine; the decoder brings features back to stride 4 through skip connections.
"""

from __future__ import annotations

import torch
from torch import nn

HEAT_CHANNELS = ("body", "sacrum", "partial")
#: Level classes: 0 = cranial to T10, 1..9 = T10..S1.
N_LEVELS = 10
STRIDE = 4


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(cin, cout, stride=2), _conv(cout, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _Up(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.body = nn.Sequential(_conv(cin + cskip, cout), _conv(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([self.up(x), skip], dim=1))


class LocalizerNet(nn.Module):
    """Encoder (strides 2..32) + decoder to stride 4 + a shared trunk and four 1x1 heads.

    Parameters
    ----------
    width
        Channels of the first stage; later stages use 2x, 4x, 6x, 8x.
    """

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        w = width
        self.stem = _conv(1, w, stride=2)  # /2
        self.d1 = _Down(w, 2 * w)  # /4
        self.d2 = _Down(2 * w, 4 * w)  # /8
        self.d3 = _Down(4 * w, 6 * w)  # /16
        self.d4 = _Down(6 * w, 8 * w)  # /32
        self.context = nn.Sequential(
            _conv(8 * w, 8 * w, dilation=2), _conv(8 * w, 8 * w, dilation=4)
        )
        self.u3 = _Up(8 * w, 6 * w, 4 * w)  # /16
        self.u2 = _Up(4 * w, 4 * w, 3 * w)  # /8
        self.u1 = _Up(3 * w, 2 * w, 2 * w)  # /4
        head = 2 * w
        # One shared 3x3 trunk at stride 4, then 1x1 heads: the stride-4 maps are the costly part.
        self.trunk = _conv(head, head)
        self.heat = nn.Conv2d(head, len(HEAT_CHANNELS), 1)
        self.size = nn.Conv2d(head, 2, 1)
        self.offset = nn.Conv2d(head, 2, 1)
        self.level = nn.Conv2d(head, N_LEVELS, 1)
        # CenterNet's prior: start with a low centre probability so the focal loss is stable.
        assert self.heat.bias is not None
        nn.init.constant_(self.heat.bias, -2.19)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s2 = self.stem(x)
        s4 = self.d1(s2)
        s8 = self.d2(s4)
        s16 = self.d3(s8)
        s32 = self.context(self.d4(s16))
        f = self.trunk(self.u1(self.u2(self.u3(s32, s16), s8), s4))
        return {
            "heat": self.heat(f),
            "size": self.size(f),
            "offset": self.offset(f),
            "level": self.level(f),
        }
