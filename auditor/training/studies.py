"""Study-level figures and the QA workload of an operating point.

A QA team reviews studies, not vertebrae. At one threshold:

- a fractured study is **found** when at least one of its fractured vertebrae is called positive
  (a positive call on an intact vertebra of that study does not count);
- a fracture-free study is **clear** when none of its vertebrae is called positive;
- a study is **flagged** when any of its vertebrae is called positive, and a flag is **confirmed**
  when one of the positive calls is on a fractured vertebra.

The workload is read off the evaluation set as if no fracture in it had been reported by the
original read (``scan`` flags only calls at levels the read missed): flags per 1,000 studies and
confirmed flags per 100 flags depend on this set's share of fractured studies, which an archive's
unreported fractures rarely match. False flags per 1,000 fracture-free studies do not depend on
it, and with ``scan``'s own count of studies gives the review load an archive of mostly intact
studies will bring.

Every figure is a proportion over studies with the exact interval of
:func:`auditor.training.intervals.proportion`, by patient (several studies of one patient are not
independent), scaled to its unit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from auditor.training.intervals import Estimate, proportion


@dataclass(frozen=True)
class StudyLevel:
    """Study-level sensitivity and specificity and the QA workload at one threshold."""

    threshold: float
    n_studies: int
    n_fractured: int
    sensitivity: Estimate
    """Fractured studies found, over fractured studies."""
    specificity: Estimate
    """Fracture-free studies with no positive call, over fracture-free studies."""
    flags_per_1000: Estimate
    """Flagged studies per 1,000 studies of this set."""
    confirmed_per_100_flags: Estimate
    """Flags with a positive call on a fractured vertebra, per 100 flags."""
    false_flags_per_1000_clear: Estimate
    """Flags per 1,000 fracture-free studies."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "n_studies": self.n_studies,
            "n_fractured": self.n_fractured,
            "sensitivity": self.sensitivity.as_dict(),
            "specificity": self.specificity.as_dict(),
            "flags_per_1000_studies": self.flags_per_1000.as_dict(),
            "confirmed_per_100_flags": self.confirmed_per_100_flags.as_dict(),
            "false_flags_per_1000_fracture_free_studies": self.false_flags_per_1000_clear.as_dict(),
        }


def _scaled(est: Estimate, factor: float) -> Estimate:
    """The same proportion per ``factor`` (per 1,000 studies, per 100 flags)."""
    return replace(est, value=est.value * factor, low=est.low * factor, high=est.high * factor)


def study_level(
    labels: npt.ArrayLike,
    predicted: npt.ArrayLike,
    studies: npt.ArrayLike,
    patients: npt.ArrayLike,
    threshold: float,
) -> StudyLevel:
    """Study-level figures from per-vertebra labels and calls.

    Parameters
    ----------
    labels, predicted
        Per vertebra: fracture (1) or not, and called positive or not.
    studies
        Per vertebra: its study (the study UID, or the image where none is known).
    patients
        Per vertebra: its patient (the intervals resample patients, not studies).
    threshold
        The threshold the calls were made at (recorded only).
    """
    y = np.asarray(labels).astype(bool)
    p = np.asarray(predicted).astype(bool)
    keys, study = np.unique(np.asarray(studies), return_inverse=True)
    n = len(keys)
    fractured = np.bincount(study, weights=y, minlength=n) > 0
    flagged = np.bincount(study, weights=p, minlength=n) > 0
    found = np.bincount(study, weights=y & p, minlength=n) > 0
    # a study's patient: the first vertebra's (a study belongs to one patient)
    first = np.unique(study, return_index=True)[1]
    patient = np.asarray(patients)[first]
    return StudyLevel(
        threshold=threshold,
        n_studies=n,
        n_fractured=int(fractured.sum()),
        sensitivity=proportion(found[fractured], patient[fractured]),
        specificity=proportion(~flagged[~fractured], patient[~fractured]),
        flags_per_1000=_scaled(proportion(flagged, patient), 1000),
        confirmed_per_100_flags=_scaled(proportion(found[flagged], patient[flagged]), 100),
        false_flags_per_1000_clear=_scaled(
            proportion(flagged[~fractured], patient[~fractured]), 1000
        ),
    )
