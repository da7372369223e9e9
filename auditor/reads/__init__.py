"""Reading the original radiology reads as hospitals export them.

Modules, from the bytes of a file to what a report says per level:

* :mod:`auditor.reads.table`: a CSV (any delimiter, detected encoding) or ``.xlsx`` export as
  a header and rows of cells;
* :mod:`auditor.reads.columns`: which export column holds the study key, the report text and
  the structured fracture columns (common names in several languages, or the user's mapping);
* :mod:`auditor.reads.rules`: tlaudit's report rules, a data file shipped beside this package
  (``report_rules.json``) that a user extends with ``--reads-rules FILE``;
* :mod:`auditor.reads.levels`: the vertebral levels a text names (``L1``, ``LWK 1``, ``Th12``,
  ``D12``, ``the fourth lumbar vertebra``, ranges such as ``T11-L1``);
* :mod:`auditor.reads.text`: per level, whether the report affirms, negates, doubts or dates a
  fracture there (negation, uncertainty and history through negspacy on a blank spaCy pipeline);
* :mod:`auditor.reads.file`: the reads file as :class:`~auditor.records.ReadRow` rows and named
  row errors, and :mod:`auditor.reads.quality`: when a reads file deserves a warning;
* :mod:`auditor.reads.parsed`: ``tlaudit parse-reads`` and its ``parsed.csv``;
  :mod:`auditor.reads.evaluate`: F1 and accuracy against a truth;
  :mod:`auditor.reads.speed`: ``tlaudit bench --reads``.

Nothing here imports spaCy at module import: the parser loads it when it first parses.
"""
