"""Writing QA reports: Excel workbooks, self-contained HTML pages, CSV tables and thumbnails.

Each report follows data -> context -> template/writer. The helpers in
:mod:`auditor.reports.cells` (spreadsheet safety and table styling) and :mod:`auditor.reports.files`
(atomic writes) are shared by every report tlaudit writes, the scan's and the evaluation's alike.
"""
