"""Review of a finished scan: the workbench, its decision store, and the way from decisions to
labels (``export-annotations``), from a workbook back to decisions (``import-verdicts``) and to
the figures a QA team reports (``review-stats``)."""
