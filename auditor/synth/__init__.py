"""A synthetic world of lateral thoracolumbar radiographs with exact ground truth.

What it is
----------
Every study is one lateral (sagittal) radiograph of the thoracolumbar spine, generated from a
patient (size, age, bone density, sagittal alignment), a column of vertebral bodies built from
published norms (:mod:`~auditor.synth.anatomy`), fractures and normal variants
(:mod:`~auditor.synth.fractures`), soft tissues, and an acquisition (:mod:`~auditor.synth.scene`),
rendered as path lengths along the beam (:mod:`~auditor.synth.render`) and imaged by Beer-Lambert
attenuation, scatter, quantum noise, detector blur and CR/DX processing
(:mod:`~auditor.synth.imaging`). The label of a vertebra is recoverable only from its shape and
fracture signs; intensity, texture and headers do not depend on it.

Python API (no files)
---------------------
``generate_study(seed, index=0, config=None) -> SynthStudy``
    One study: ``pixels`` (float32 [0, 1], bone bright), ``stored`` (uint16 as written),
    ``vertebrae`` (tuple of :class:`VertebraTruth`: level, box ``(x_min, y_min, x_max, y_max)`` in
    stored pixels, label, AO type, Genant grade, height ratios, fracture-zone polygon, partial flag,
    normal variants), ``read`` (:class:`ReadPlan`: the original read and planted misses),
    ``header`` (:class:`HeaderPlan`) and ``scene`` (every random draw).
``iter_vertebra_crops(seed, studies, config=None, include_partial=False) -> Iterator[VertebraCrop]``
    A crop (box plus ``config.crop_margin``) per boxed vertebra, for training on the fly.
``write_archive(out, studies, seed, config, workers=1, preview=False)``
    The archive and tables ``tlaudit synth`` writes (:mod:`~auditor.synth.archive`).

``SynthConfig(max_side=3000, fracture_study_rate=0.6, multi_fracture_rate=0.3, miss_rate=0.3,
no_read_rate=0.06, overcall_rate=0.03, distractor_rate=0.15, compressed_share=0.6,
crop_margin=0.15)``. Images are about 2200-3000 pixels on the long side by default; a smaller
``max_side`` keeps the same anatomy at a coarser pixel spacing (fast for tests and training).

Determinism: ``(seed, index, config)`` fixes every random draw (numpy ``SeedSequence``); UIDs are
``2.25`` UIDs hashed from the seed; no file holds the wall-clock time.
"""

from auditor.synth.archive import ArchiveSummary, write_archive
from auditor.synth.config import DISTRACTOR_KINDS, SynthConfig
from auditor.synth.study import (
    HeaderPlan,
    ReadPlan,
    SynthStudy,
    VertebraCrop,
    VertebraTruth,
    crop_box,
    generate_study,
    iter_vertebra_crops,
)

__all__ = [
    "DISTRACTOR_KINDS",
    "ArchiveSummary",
    "HeaderPlan",
    "ReadPlan",
    "SynthConfig",
    "SynthStudy",
    "VertebraCrop",
    "VertebraTruth",
    "crop_box",
    "generate_study",
    "iter_vertebra_crops",
    "write_archive",
]
