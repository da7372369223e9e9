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

Randomised ranges (module docs give the sources)
-------------------------------------------------
- patient: sex F 45 %; age 17-88; vertebral size x N(0.95 F / 1.04 M, 0.04) in [0.86, 1.14];
  trunk width 270-430 mm, prevertebral tissue 110-290 mm, back 72-145 mm (habitus); cancellous
  density N(1.05 - 0.006 (age - 45)+, 0.08) in [0.6, 1.25]; sacral slope 30-50 deg; lordosis
  slope + 5-18 deg; thoracic kyphosis 2.5-5 deg per segment; lateral tilt N(0, 2.5 deg).
- bodies: T10-L5 norms x size x N(1, 0.03); anterior/posterior ratio 0.82-0.96 at T10-L1
  (physiologic wedging), 0.90-1.06 at L2-L4, 1.00-1.15 at L5; endplate concavity 0.2-1.5 mm
  (middle/posterior >= 0.84); discs thoracic 4-6.5 mm, lumbar 8.5-11 mm x N(1, 0.06);
  degenerated disc (height x 0.4-0.7, sclerosis, 30 % vacuum) 4-39 % by age, x 1.6 at L4-S1.
- normal variants per body: Schmorl node 6-14 %, osteophytes 5-55 % (age), irregular endplate
  12 %, Hahn's cleft 10 %, bone island 4 %; endplate double contours from beam divergence and
  tilt (0-8 mm).
- fractures: 60 % of studies; 30 % of those with 2-3; level T10 .07, T11 .10, T12 .16, L1 .19,
  L2 .13, L3 .12, L4 .12, L5 .11; AO A1 .27, A2 .07, A3 .25, A4 .31, B .06, C .04; height loss
  20.5-24.5 % (grade 1), 26-39 % (2), 41-58 % (3); B kyphosis 4-12 deg, C shift 3-9 mm.
  ``subtle_share`` (default 0) of the fractures are instead A1 wedges of grade 1, with
  ``subtle_bare`` without secondary signs. ``wedge_variant_share`` (default 0) of intact T7-L1
  bodies carry a physiologic wedge of 18-24.5 % height loss with an A1 wedge's geometry and no
  fracture signs (a normal variant that mimics grade 1).
- field: thoracolumbar .42, lumbar .33, lower thoracic .13, long .12; 4-9 boxed bodies; height
  >= 175 mm, width 165-300 mm; rotation N(0, 3 deg); anterior to the right 35 %.
- acquisition: DX 65 % / CR 35 %; magnification 1.08-1.25; pixel spacing 0.1-0.2 mm (default
  size); Bits Stored 10/12/14/15/16; MONOCHROME1 25 % DX, 45 % CR; 250-1400 quanta per
  0.13 mm pixel behind the spine (fewer for large patients); scatter-to-primary 0.25-1.3; heel
  +-18 %; detector blur 0.5-0.9 px (DX), 0.8-1.4 px (CR); edge gain 0.3-1.1; dynamic range
  compression 0.6-0.85; collimation 0-9 % left/right, 0-3 % top/bottom (none 30 %); burned-in
  L/R marker and text.
- headers: Body Part blank 15 %; View Position LL/LAT/RL/blank 2:2:1:1; 60 % compressed (JPEG
  Lossless 50 %, JPEG 2000 25 %, JPEG-LS 25 %), else Explicit (2/3) or Implicit VR; window in
  75 % of files.
- reads: none for 6 % of studies; 30 % of fractured studies missed (negative read, or with
  several fractures half the time the subtlest level missed); 3 % of intact studies over-called.

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
