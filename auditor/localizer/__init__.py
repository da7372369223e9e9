"""The bundled vertebra localizer: find and name T10..L5 (and S1) on a lateral radiograph.

Method (measurements behind each choice are in ``models/localizer-v2/MODEL_CARD.md``,
``docs/models-history.md`` and the bundle card):

- The radiograph is letterboxed to a 192 x 192 working canvas (long side fitted, aspect kept,
  zero padding) and standardised per image. At that size a lumbar body is still 12-20 px high
  and the disc between two bodies 3 px or more, enough to separate neighbours.
- A small fully convolutional encoder-decoder (:mod:`~auditor.localizer.network`, width 12, about
  0.6 M parameters) predicts CenterNet-style maps at stride 4: centre heat maps for whole
  bodies, the S1 body and bodies cut by the edge, box size and sub-cell offset, and a level
  class per body read from the whole field of view. Single-threaded on the shared 2-core CPU a
  training step (batch 16) took about 1 s where the 256 px / width 16 variant took 3.4 s, which
  decided the working size: a from-scratch run must fit in about half an hour.
- Peaks become boxes (:mod:`~auditor.localizer.decode`), the bodies are ordered along the spine
  and levels are named by counting up from S1 when the sacrum is in view, else by the most
  probable consecutive run of the level head (anchor ``rib`` when it spans T12/L1, else
  ``none`` at lower confidence) (:mod:`~auditor.localizer.levels`). Bodies cut by the edge are
  reported as partial, without a level.
- Before any of that, the bundle's domain guard (:mod:`~auditor.localizer.guard`) measures, in
  the same forward pass, how far the image lies from the training images; an image beyond its
  threshold gets no box. The run check (:mod:`~auditor.localizer.plausible`) then refuses named
  boxes that do not form a plausible T10..S1 run.
- Training is from scratch on the synthetic world with heavy augmentation
  (:mod:`~auditor.localizer.data`): contrast, gamma, inversion, noise, blur, rotation, scale,
  crops that cut bodies, burned-in text, collimation.

Public API: :func:`load_localizer`, :class:`Localizer` (``locate``, ``locate_batch``),
:class:`LocalizerResult`, :class:`PartialBody`, :func:`localize_archive`,
:func:`evaluate_localizer`, :func:`run_training`.
"""

from auditor.localizer.archive import LocalizeSummary, localize_archive
from auditor.localizer.bundle import DEFAULT_LOCALIZER, LocalizerCard, save_localizer
from auditor.localizer.evaluate import LocalizerReport, evaluate_localizer
from auditor.localizer.infer import Localizer, LocalizerResult, PartialBody, load_localizer
from auditor.localizer.train import (
    TrainConfig,
    TrainJob,
    TrainResult,
    run_training,
    train_localizer,
)

__all__ = [
    "DEFAULT_LOCALIZER",
    "LocalizeSummary",
    "Localizer",
    "LocalizerCard",
    "LocalizerReport",
    "LocalizerResult",
    "PartialBody",
    "TrainConfig",
    "TrainJob",
    "TrainResult",
    "evaluate_localizer",
    "load_localizer",
    "localize_archive",
    "run_training",
    "save_localizer",
    "train_localizer",
]
