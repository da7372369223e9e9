"""Command-line options that say how the classifier runs, shared by several commands.

The choices are the library's enums (:mod:`auditor.vocab`), so ``--help`` lists them and the
commands hand the library a value it knows. Nothing here loads torch.
"""

from __future__ import annotations

from typing import Annotated

import typer

from auditor.vocab import DEFAULT_HEATMAP, HeatmapMethod, OperatingPointName, Precision

HEATMAP_METHOD_HELP = (
    "ResNet heatmap: "
    + "; ".join(
        f"{method.value} ({'the default: ' if method is DEFAULT_HEATMAP else ''}{method.summary})"
        for method in HeatmapMethod
    )
    + ". VGG16 always uses Grad-CAM."
)

HeatmapMethodOption = Annotated[HeatmapMethod, typer.Option(help=HEATMAP_METHOD_HELP)]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        help="Inference precision (auto: bf16 on a CUDA GPU or CPU that runs it natively, "
        "otherwise fp16 on a GPU and fp32 on a CPU)."
    ),
]
OperatingPointOption = Annotated[
    OperatingPointName | None,
    typer.Option(
        "--operating-point",
        help="Operating point stored in the bundle's card (default: the card's default).",
    ),
]


def point_name(point: OperatingPointName | None) -> str | None:
    """The ``--operating-point`` value as the library takes it (None: the card's default)."""
    return None if point is None else point.value
