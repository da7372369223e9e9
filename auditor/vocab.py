"""Shared vocabulary: vertebral levels, file statuses, and the names of model and scan choices.

Strings from box files, reads and the command line are coerced to these enums at the boundary
(:meth:`Level.parse`), so the rest of the code compares enums, never free text. The command line
offers the same enums as its choices. This module stays light (no torch, no pydicom), so that the
command line can build its options without loading them.
"""

from __future__ import annotations

import re
from enum import Enum


class Level(str, Enum):
    """Vertebral levels tlaudit works with, cranial to caudal (T10 to L5, S1 as the anchor)."""

    T10 = "T10"
    T11 = "T11"
    T12 = "T12"
    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"
    L5 = "L5"
    S1 = "S1"

    def __str__(self) -> str:
        return self.value

    @property
    def order(self) -> int:
        """Position from cranial (T10 = 0) to caudal (S1 = 8)."""
        return LEVEL_ORDER.index(self)

    @classmethod
    def parse(cls, text: str) -> Level:
        """Coerce a level name as people write it (``"t12"``, ``"T 12"``, ``"L-1"``) to a Level.

        Raises
        ------
        ValueError
            When the text names no level in T10..S1.
        """
        key = re.sub(r"[\s\-_.]", "", str(text)).upper()
        try:
            return cls(key)
        except ValueError:
            names = ", ".join(level.value for level in cls)
            raise ValueError(f"unknown vertebral level {text!r}; expected one of {names}") from None


LEVEL_ORDER: tuple[Level, ...] = tuple(Level)

#: Every level a report may name, cranial to caudal: T1..T12, L1..L5 and S1. The scan classifies
#: only :class:`Level` (T10..S1); the report parser keeps the others in its output.
SPINE_LEVELS: tuple[str, ...] = (
    *(f"T{n}" for n in range(1, 13)),
    *(f"L{n}" for n in range(1, 6)),
    "S1",
)

#: The level name of a study-wide statement in parsed reads ("no fracture").
STUDY_WIDE = "*"


class Mention(str, Enum):
    """What a report says about a fracture at one level (or study-wide).

    ``affirmed``: a fracture (acute or unspecified); ``old``: old, chronic, healed or known;
    ``uncertain``: possible, questionable, cannot be excluded; ``negated``: no fracture there
    (also "L2 intact", "heights maintained"). The first three are *reported* for the audit.
    """

    AFFIRMED = "affirmed"
    OLD = "old"
    UNCERTAIN = "uncertain"
    NEGATED = "negated"

    def __str__(self) -> str:
        return self.value

    @property
    def reported(self) -> bool:
        """True when the reader saw a fracture there (affirmed, old or uncertain)."""
        return self is not Mention.NEGATED


#: DICOM Photometric Interpretation values of a greyscale image (PS3.3 C.7.6.3.1.2); anything
#: else (RGB, YBR_*, PALETTE COLOR) is a colour image.
GREYSCALE_PHOTOMETRIC = frozenset({"MONOCHROME1", "MONOCHROME2"})


class FileStatus(str, Enum):
    """Outcome of triage for one file in the archive."""

    CANDIDATE = "candidate"
    SKIPPED = "skipped"
    UNREADABLE = "unreadable"

    def __str__(self) -> str:
        return self.value


class Device(str, Enum):
    """Where a network runs: ``auto`` prefers CUDA, then Apple MPS, then the CPU.

    See :func:`auditor.model.infer.select_device`.
    """

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"

    def __str__(self) -> str:
        return self.value


class RenderPreset(str, Enum):
    """A setting of the synthetic world's renderer: ``default`` is the world the bundled models
    were trained on; the others change the image formation strongly, for measuring the domain
    guards on a renderer the models never saw.

    The settings themselves are in :data:`auditor.synth.rendering.RENDER_SETTINGS`.
    """

    DEFAULT = "default"
    FLAT = "flat"
    HARSH = "harsh"

    def __str__(self) -> str:
        return self.value


class Precision(str, Enum):
    """Inference precision: ``auto`` takes bf16 where the device runs it natively.

    See :func:`auditor.model.infer.resolve_precision`.
    """

    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"

    def __str__(self) -> str:
        return self.value


class HeatmapMethod(str, Enum):
    """How a ResNet classifier's heatmap is computed (see :mod:`auditor.model.cam`).

    VGG16 always uses Grad-CAM, whatever is asked.
    """

    LAYERCAM4 = "layercam4"
    LAYERCAM = "layercam"
    CAM = "cam"

    def __str__(self) -> str:
        return self.value

    @property
    def summary(self) -> str:
        """What the method is, in a few words (for ``--help``)."""
        return _HEATMAP_SUMMARIES[self]


# A new method is a member above, its summary here, and its entry in
# :data:`auditor.model.cam.RESNET_HEATMAP_SPECS` (which a test checks against this enum).
_HEATMAP_SUMMARIES = {
    HeatmapMethod.LAYERCAM4: "the layer4 LayerCAM, from the classifying pass",
    HeatmapMethod.LAYERCAM: "layer2 x layer4 LayerCAM, a second pass with autograd",
    HeatmapMethod.CAM: "the source study's CAM, from the classifying pass",
}


#: The ResNet method scan, evaluate and bench use unless told otherwise. On the hard decision
#: world (seed 24, 246 true positives of the stage-11 classifier) its peak fell in the fracture
#: zone for 246, layercam's for 221; ``docs/models-history.md`` has the rule and the figures.
DEFAULT_HEATMAP = HeatmapMethod.LAYERCAM4


class OperatingPointName(str, Enum):
    """The operating points a model card holds, as ``train`` and ``calibrate`` choose them.

    See :func:`auditor.training.metrics.choose_operating_points` for the rules.
    """

    BALANCED = "balanced"
    SENSITIVE = "sensitive"
    SPECIFIC = "specific"

    def __str__(self) -> str:
        return self.value


class HeatmapMode(str, Enum):
    """Which vertebrae of a scan get a heatmap overlay thumbnail."""

    POSITIVE = "positive"
    ALL = "all"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


class Engine(str, Enum):
    """Where ``tlaudit scan`` decodes and crops its images (``--engine``): worker processes on
    this machine, or tasks on a Ray cluster (:mod:`auditor.parallel`)."""

    LOCAL = "local"
    RAY = "ray"

    def __str__(self) -> str:
        return self.value


class BoxFormat(str, Enum):
    """How a CSV box file states its boxes (``--box-format``); the column names each one reads
    are in :mod:`auditor.box_formats`. ``auto`` decides from the columns and refuses where that
    would be a guess."""

    AUTO = "auto"
    CORNERS = "corners"  # x_min, y_min, x_max, y_max in pixels (CVAT's xtl, ytl, xbr, ybr...)
    XYWH = "xywh"  # the top-left corner x, y, then width and height, in pixels
    PERCENT = "percent"  # Label Studio: x, y, width, height in % of original_width / _height

    def __str__(self) -> str:
        return self.value


class VertebraDecision(str, Enum):
    """A reviewer's decision on one vertebra. Only ``fracture`` and ``no_fracture`` become labels;
    ``unsure`` never does (an undecided vertebra is never a silent negative)."""

    FRACTURE = "fracture"
    NO_FRACTURE = "no_fracture"
    UNSURE = "unsure"

    def __str__(self) -> str:
        return self.value

    @property
    def label(self) -> int | None:
        """The training label (1 fracture, 0 no fracture), None for ``unsure``."""
        return {"fracture": 1, "no_fracture": 0}.get(self.value)


class StudyVerdict(str, Enum):
    """A reviewer's verdict on one study: the workbench's choices and the workbook's drop-down."""

    CONFIRMED_MISS = "confirmed miss"
    NOT_A_FRACTURE = "not a fracture"
    ALREADY_KNOWN = "already known"
    UNSURE = "unsure"

    def __str__(self) -> str:
        return self.value


#: Genant's semiquantitative grades of a vertebral fracture: 0 normal, 1 mild (20-25 % height
#: loss), 2 moderate (25-40 %), 3 severe (over 40 %).
GENANT_GRADES = (0, 1, 2, 3)
