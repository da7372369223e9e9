"""A PACS without DICOMweb: the DIMSE route (C-FIND to query, C-GET to retrieve).

``tlaudit scan dicom://CALLED_AET@HOST:PORT --calling-aet TLAUDIT --out RUN`` scans such a PACS
exactly as a DICOMweb one (:mod:`auditor.pacs.source`: the same triage from metadata alone, the
same accounting rows, cache, cap, retries and ``--resume``). This module holds the address and
the source (:class:`DimseSource`, a :class:`~auditor.pacs.source.Route`);
:mod:`auditor.pacs.associations` talks to the PACS.

A PACS that refuses the association (a wrong called AE title, a calling AE title it does not
know) stops the scan (:class:`~auditor.pacs.connect.PacsAuthError`, naming both titles); one
that does not answer is retried, then becomes rows. DIMSE here has no TLS and no credentials:
the PACS knows tlaudit by its calling AE title and, usually, its address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from auditor.errors import UsageError
from auditor.pacs.associations import (
    DEFAULT_CALLING_AET,
    DEFAULT_TIMEOUT_S,
    SCHEME,
    Associations,
    DimseConnection,
    check_ae_title,
)
from auditor.pacs.source import RouteOptions

_ADDRESS = re.compile(
    r"^dicom://(?P<aet>[^@/]+)@(?P<host>\[[^\]]+\]|[^:/@\[\]]+):(?P<port>\d+)/?$", re.IGNORECASE
)


def is_dimse_address(archive: str) -> bool:
    """Whether a scan's archive argument names a PACS over DIMSE (``dicom://``)."""
    return str(archive).lower().startswith(SCHEME)


def dimse_connection(
    address: str, calling_aet: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> DimseConnection:
    """The connection a ``dicom://CALLED_AET@HOST:PORT`` address names.

    Raises
    ------
    UsageError
        For another form, an AE title that is none, or a port out of range.
    """
    match = _ADDRESS.match(address.strip())
    if match is None:
        raise UsageError(
            f"{address!r}: expected dicom://CALLED_AET@HOST:PORT, e.g. dicom://PACS@10.0.0.5:104 "
            "(tlaudit's own AE title goes in --calling-aet)"
        )
    host = match["host"].strip("[]")
    return DimseConnection(
        host,
        int(match["port"]),
        check_ae_title(match["aet"], "the called AE title"),
        check_ae_title(
            DEFAULT_CALLING_AET if calling_aet is None else calling_aet, "--calling-aet"
        ),
        timeout_s,
    )


@dataclass(frozen=True)
class DimseSource(RouteOptions):
    """What to take from which PACS over DIMSE, and where to put it (a
    :class:`~auditor.pacs.source.Route`): the PACS and the AE titles (``connection``), and the
    :class:`~auditor.pacs.source.RouteOptions` (each connection an association)."""

    connection: DimseConnection

    @property
    def address(self) -> str:
        """``dicom://CALLED_AET@HOST:PORT``."""
        return self.connection.url

    @property
    def queries(self) -> str:
        """``C-FIND``."""
        return "C-FIND"

    def describe(self) -> str:
        """The source in words, for the reports."""
        dates = f", studies {self.study_date}" if self.study_date else ""
        return f"DIMSE {self.connection.url}{dates}"

    def login(self) -> str:
        """The calling AE title tlaudit uses."""
        return f"as calling AE title {self.connection.calling_aet}"

    def open(self) -> Associations:
        """Associations for one scan (:class:`Associations`)."""
        return Associations(self.connection, self.retry, self.connections)
