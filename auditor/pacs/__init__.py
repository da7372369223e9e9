"""Auditing studies straight from a PACS through DICOMweb (QIDO-RS, WADO-RS) or DIMSE (C-FIND,
C-GET).

- :mod:`auditor.pacs.connect`: the ``dicomweb+http(s)://`` address, credentials (never from the
  command line, never logged), TLS, and the DICOMweb client;
- :mod:`auditor.pacs.retry`: one network call with retries and back-off;
- :mod:`auditor.pacs.metadata`: a QIDO-RS answer (DICOM JSON) as the header triage reads;
- :mod:`auditor.pacs.source`: query, triage from metadata alone, retrieve only the candidates into
  a cache folder inside the run folder, one accounting row per instance;
- :mod:`auditor.pacs.dimse`: the ``dicom://CALLED_AET@HOST:PORT`` address and the DIMSE source;
  :mod:`auditor.pacs.associations`: its associations, C-FIND and C-GET;
- :mod:`auditor.pacs.scan`: the scan of that cache folder (:func:`auditor.scan.pipeline.run_scan`)
  with the PACS's accounting rows, and the cache removed afterwards;
- :mod:`auditor.pacs.bench`: ``tlaudit bench --pacs``, the PACS's query, retrieval and scan timed
  next to a scan of the same archive's files.
"""
