"""The scan: triage, vertebra crops, batched classification with heatmaps, flags and reports.

Stages live in their own modules: :mod:`~auditor.scan.reads` (the original radiology reads),
:mod:`~auditor.scan.dataset` (crop loading in DataLoader workers), :mod:`~auditor.scan.flags`
(study-level flag rules), :mod:`~auditor.scan.journal` (the resumable SQLite run journal) and
:mod:`~auditor.scan.pipeline` (:func:`run_scan`, which ties them together).
"""
