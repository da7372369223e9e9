"""How much of a big archive the HTML report shows (light: no Jinja, so a scan config can use it).

The flagged queue embeds its images for the first :data:`DEFAULT_EMBED_LIMIT` studies; later ones
link to the JPEG files in ``thumbnails/``. The vertebra, file and error tables show at most
:data:`DEFAULT_TABLE_LIMIT` rows each, with a note pointing at ``audit.xlsx`` and ``findings.csv``
for the rest (see :mod:`auditor.reports.html`).
"""

from __future__ import annotations

DEFAULT_EMBED_LIMIT = 200
DEFAULT_TABLE_LIMIT = 2000
