"""Study-level flags: comparing the model's per-vertebra calls with the original read.

The rules, per study (all images of the study together; a level seen on several images counts
with its highest probability):

* A vertebra is **positive** when its fracture probability is at or above the operating point's
  threshold (:func:`auditor.records.is_positive`, the one place that rule is written).
* The read's **reported levels** are the levels it names as fractured: in its structured columns,
  or in its text as an affirmed, old or uncertain mention (:class:`~auditor.vocab.Mention`); a
  level the text negates, or does not mention, is not reported. A read that says "fracture: yes"
  without naming any level is taken to cover every level (the model's positives are then
  concordant, never "missed"), because nothing shows that the reader overlooked one
  (:attr:`~auditor.records.ReadRow.covers_every_level`).
* **likely missed**: the model is positive at one or more levels the read did not report as
  fractured (the read said no fracture, negated that level, or named other levels).
* **concordant positive**: the model is positive only at levels the read reported.
* **read positive, model negative**: the read reported a fracture and the model is positive
  nowhere. Listed for completeness (the model may simply be wrong); not a miss.
* **no read available**: the model is positive somewhere and no row of the reads file matches the
  study (or no reads file was given), so there is nothing to compare with.
* **concordant negative** and **model negative, no read**: nothing to review; these studies are
  counted but are not in the flagged queue.

Priority, which orders the queue, is the highest probability among the model's positive levels the
read did not report (for "no read available", among all positive levels); it is 0 for the other
statuses, which follow the likely misses in the queue.
"""

from __future__ import annotations

from collections.abc import Mapping

from auditor.records import ReadRow, StudyFlag, StudyStatus, is_positive
from auditor.vocab import Level


def flag_study(
    level_probabilities: Mapping[Level, float], threshold: float, read: ReadRow | None
) -> StudyFlag:
    """Apply the flag rules of this module to one study.

    Parameters
    ----------
    level_probabilities
        Highest fracture probability per level over the study's images.
    threshold
        Probability at or above which a vertebra is called positive.
    read
        The study's read, or None when there is none.

    Returns
    -------
    StudyFlag
        Status, priority, the model's positive levels and those the read did not report.
    """
    positive = tuple(
        sorted(
            (level for level, p in level_probabilities.items() if is_positive(p, threshold)),
            key=lambda level: level.order,
        )
    )
    if read is None:
        if not positive:
            return StudyFlag(StudyStatus.NEGATIVE_NO_READ, 0.0, (), ())
        priority = max(level_probabilities[level] for level in positive)
        return StudyFlag(StudyStatus.NO_READ, priority, positive, positive)

    unreported = tuple(level for level in positive if not read.reports(level))
    if unreported:
        priority = max(level_probabilities[level] for level in unreported)
        return StudyFlag(StudyStatus.LIKELY_MISSED, priority, positive, unreported)
    if positive:
        return StudyFlag(StudyStatus.CONCORDANT_POSITIVE, 0.0, positive, ())
    if read.fracture_reported:
        return StudyFlag(StudyStatus.READ_POSITIVE_MODEL_NEGATIVE, 0.0, (), ())
    return StudyFlag(StudyStatus.CONCORDANT_NEGATIVE, 0.0, (), ())
