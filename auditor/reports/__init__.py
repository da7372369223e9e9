"""Writing QA reports: Excel workbooks, self-contained HTML pages, CSV tables and thumbnails.

Each report follows data -> context -> template/writer. :mod:`auditor.reports.cells` (spreadsheet
safety and table styling) is shared by every workbook tlaudit writes, the scan's and the
evaluation's alike; atomic writes and CSV formula safety live in :mod:`auditor.files`, below every
stage, since the inventory, the bundles and the localizer write files too.
"""
