"""DIMSE with a PACS, for :mod:`auditor.pacs.dimse`: associations, C-FIND and C-GET (pynetdicom).

* **queries** (:class:`DimseFinder`) use the Study Root Query/Retrieve Information Model - FIND
  (PS3.4 C.6.2), hierarchically: the studies holding a modality (``ModalitiesInStudy``) in the
  date range, with their study-level attributes; then each study's series; then each series'
  images with :data:`~auditor.pacs.metadata.QUERY_FIELDS`. An image's answer lacking an
  attribute takes it from its series' or study's answer (a strict PACS answers each level's
  attributes only at that level). Several studies at once are asked for with one IMAGE-level
  query matching their UIDs, as many PACS answer (:meth:`DimseFinder.search_for_instances`).
  The answers are turned into DICOM JSON, so the triage reads them as it reads a QIDO-RS
  answer;
* **retrieval** (:meth:`Associations.retrieve`) uses C-GET (Study Root - GET, PS3.4 C.4.3) at
  image level: the images come back on the same association, so tlaudit needs no inbound port
  and the PACS no entry for tlaudit's port (C-MOVE would need both). tlaudit proposes the
  instance's SOP Class once per transfer syntax of :data:`TRANSFER_SYNTAXES`, with the Storage
  SCP role (PS3.7 D.3.3.4), so the PACS sends each image as it stores it, not transcoded; the
  file is its data set as received behind a new file meta header;
* **associations** are kept open between requests, one per thread at a time
  (:class:`Associations`); one for queries, one per SOP Class for retrievals.

A PACS that refuses the association (a wrong called AE title, a calling AE title it does not
know) raises :class:`~auditor.pacs.connect.PacsAuthError` at once, saying which titles were used;
no association at all (nobody at HOST:PORT), one that breaks off, a PACS out of resources, or a
match that cannot be decoded is retried (:class:`~auditor.pacs.retry.Transient`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association

from auditor.archive.triage import SOP_CLASS_MODALITIES
from auditor.errors import UsageError
from auditor.pacs.connect import PacsAuthError, PacsError
from auditor.pacs.retry import RetryPolicy, Transient, call
from auditor.pacs.source import DEFAULT_CONNECTIONS
from auditor.records import RadiographMeta

logger = logging.getLogger(__name__)

SCHEME = "dicom://"
"""A scan archive starting with this (``dicom://CALLED_AET@HOST:PORT``) is a PACS over DIMSE."""

DEFAULT_CALLING_AET = "TLAUDIT"
"""tlaudit's own AE title when ``--calling-aet`` is not given."""

DEFAULT_TIMEOUT_S = 30.0

STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
"""Study Root Query/Retrieve Information Model - FIND (PS3.4 C.6.2.1)."""
STUDY_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.2.3")
"""Study Root Query/Retrieve Information Model - GET (PS3.4 C.6.2.1)."""

TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1,
    JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, RLELossless,
)  # fmt: skip
"""Transfer syntaxes a retrieved image may come in, each proposed in its own presentation
context so that the PACS finds the one it stores the image in."""

STUDY_FIELDS = ("StudyDate", "AccessionNumber", "PatientID", "PatientName", "StudyDescription")
"""Study-level attributes of :data:`~auditor.pacs.metadata.QUERY_FIELDS`, asked for with the
studies."""
SERIES_FIELDS = ("Modality", "SeriesDescription", "BodyPartExamined", "ProtocolName", "Laterality")
"""Series-level attributes of :data:`~auditor.pacs.metadata.QUERY_FIELDS`, asked for with the
series."""

_AE_TITLE = re.compile(r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")
# C-FIND and C-GET statuses (PS3.4 C.4.1.1.4, C.4.3.1.4; PS3.7 C)
_PENDING = frozenset({0xFF00, 0xFF01})
_SUCCESS = 0x0000
_OUT_OF_RESOURCES = frozenset({0xA700, 0xA701, 0xA702})
_MODALITY = "00080060"


def check_ae_title(title: str, what: str) -> str:
    """``title`` when it is a valid AE title (PS3.5 6.2: 1 to 16 characters of the default
    repertoire, no backslash or control characters, not only spaces), stripped.

    Raises
    ------
    UsageError
        Naming ``what`` (e.g. ``--calling-aet``) and what was expected.
    """
    stripped = title.strip()
    if not _AE_TITLE.match(stripped):
        raise UsageError(
            f"{what} {title!r}: expected an AE title of 1 to 16 characters (letters, digits, "
            "spaces inside, no backslash)"
        )
    return stripped


@dataclass(frozen=True)
class DimseConnection:
    """Everything needed to talk to one PACS over DIMSE.

    Attributes
    ----------
    host, port
        Where the PACS listens.
    called_aet
        The PACS's AE title.
    calling_aet
        tlaudit's AE title, which the PACS must know (and usually tie to this machine's address).
    timeout_s
        Timeout of the association's negotiation, of each DIMSE answer and of the network.
    """

    host: str
    port: int
    called_aet: str
    calling_aet: str = DEFAULT_CALLING_AET
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        check_ae_title(self.called_aet, "the called AE title")
        check_ae_title(self.calling_aet, "--calling-aet")
        if not 0 < self.port < 65536:
            raise UsageError(f"DICOM port {self.port}: expected 1 to 65535")

    @property
    def url(self) -> str:
        """The address as ``tlaudit scan`` takes it: ``dicom://CALLED_AET@HOST:PORT``."""
        return f"{SCHEME}{self.called_aet}@{self.host}:{self.port}"

    def titles(self) -> str:
        """The AE titles in words, for messages."""
        return f"called AE title {self.called_aet!r}, calling AE title {self.calling_aet!r}"


class _Held:
    """One association and what its C-STORE handler received during the current C-GET."""

    def __init__(self) -> None:
        self.assoc: Association | None = None
        self.received: list[bytes] = []

    def on_store(self, event: Any) -> int:
        self.received.append(bytes(event.encoded_dataset()))
        return _SUCCESS


class Associations:
    """The DIMSE :class:`~auditor.pacs.source.Link`: associations kept open between requests,
    each used by one thread at a time (idle ones wait in a pool), one kind for queries and one
    per SOP Class retrieved; at most ``limit`` (``connections``) open at once unless more threads
    than that ask at the same time: an idle one of another kind is released to make way."""

    def __init__(
        self,
        connection: DimseConnection,
        retry: RetryPolicy | None = None,
        limit: int = DEFAULT_CONNECTIONS,
    ) -> None:
        self.connection = connection
        self.retry = retry or RetryPolicy()
        self._limit = limit
        self._open = 0  # associations open: idle in the pool or in use
        self._lock = threading.Lock()
        self._idle: dict[str, list[_Held]] = {}
        self._studies: dict[str, dict[str, Any]] = {}  # study UID -> its study-level answer

    def keep_study(self, answer: dict[str, Any]) -> None:
        """Keep a study's answer (DICOM JSON) for its images' attributes."""
        uid = (answer.get("0020000D", {}).get("Value") or [""])[0]
        if uid:
            with self._lock:
                self._studies[uid] = answer

    def study(self, uid: str) -> dict[str, Any]:
        """The answer kept for study ``uid`` ({} when none)."""
        with self._lock:
            return self._studies.get(uid, {})

    # -- the Link side ------------------------------------------------------------------------

    def client(self) -> DimseFinder:
        """The queries (thread-safe: each takes an association of its own)."""
        return DimseFinder(self)

    def retrieve(self, meta: RadiographMeta) -> memoryview:
        """One instance with C-GET (see the module docstring), after its retries."""
        return call(
            f"C-GET instance {meta.sop_uid}",
            functools.partial(self._get, meta),
            self.retry,
        )

    def close(self) -> None:
        """Release the idle associations."""
        with self._lock:
            idle = [held for pool in self._idle.values() for held in pool]
            self._idle.clear()
            self._open -= len(idle)
        for held in idle:
            _release(held)

    # -- associations -------------------------------------------------------------------------

    @contextlib.contextmanager
    def held(self, sop_class: str | None) -> Iterator[_Held]:
        """An association for queries (``sop_class`` None) or for retrieving images of
        ``sop_class`` ("" when unknown: the radiograph classes), from the pool or new; back to
        the pool after the block, aborted when the block failed.

        Raises
        ------
        PacsAuthError
            When the PACS rejects the association.
        Transient
            When there is no association (nobody answers, the PACS aborted it).
        """
        key = "find" if sop_class is None else f"get:{sop_class}"
        surplus: list[_Held] = []
        with self._lock:
            pool = self._idle.get(key, [])
            held = pool.pop() if pool else None
            if held is None:
                self._open += 1
                # at most `limit` open: idle ones of another kind make way (a PACS serves a
                # few associations at once, and an idle one holds its place)
                for others in self._idle.values():
                    while others and self._open > self._limit:
                        surplus.append(others.pop())
                        self._open -= 1
        for extra in surplus:
            _release(extra)
        if held is None or held.assoc is None or not held.assoc.is_established:
            try:
                held = self._associate(sop_class)
            except BaseException:
                with self._lock:
                    self._open -= 1
                raise
        held.received = []
        try:
            yield held
        except BaseException:
            _abort(held)
            with self._lock:
                self._open -= 1
            raise
        with self._lock:
            self._idle.setdefault(key, []).append(held)

    def _associate(self, sop_class: str | None) -> _Held:
        conn = self.connection
        ae = AE(ae_title=conn.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = conn.timeout_s
        ae.connection_timeout = conn.timeout_s
        ae.maximum_pdu_size = 0  # no limit on what the PACS may send at once
        held = _Held()
        roles: list[Any] = []
        handlers: list[Any] = []
        if sop_class is None:
            ae.add_requested_context(STUDY_ROOT_FIND)
        else:
            ae.add_requested_context(STUDY_ROOT_GET)
            classes = [sop_class] if sop_class else list(SOP_CLASS_MODALITIES)
            for uid in classes:
                for syntax in TRANSFER_SYNTAXES:
                    ae.add_requested_context(uid, syntax)
                roles.append(build_role(uid, scp_role=True))
            handlers.append((evt.EVT_C_STORE, held.on_store))
        assoc = ae.associate(
            conn.host, conn.port, ae_title=conn.called_aet, ext_neg=roles, evt_handlers=handlers
        )
        if assoc.is_established:
            held.assoc = assoc
            raw: Any = getattr(assoc.dul.socket, "socket", None)
            with contextlib.suppress(AttributeError, OSError):
                # Nagle's algorithm held each request's second PDU for the PACS's delayed
                # acknowledgement: 100 ms a C-FIND on loopback instead of 50
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return held
        if assoc.is_rejected:
            raise PacsAuthError(
                f"{conn.url}: the PACS rejected the association ({_rejection(assoc)}; "
                f"{conn.titles()}); check the AE title in the address, and that the PACS knows "
                "--calling-aet from this machine's address"
            )
        # pynetdicom marks a connection refused as aborted too
        raise Transient(
            f"no association: nobody answered at {conn.host}:{conn.port}, or the PACS aborted "
            f"the request ({conn.titles()})"
        )

    # -- requests -----------------------------------------------------------------------------

    def find(self, query: Dataset) -> list[Dataset]:
        """The matches of one C-FIND (Study Root), on a query association.

        Raises
        ------
        PacsError
            When the PACS answers with a failure status (cannot change when tried again).
        Transient
            When the association breaks off or the PACS is out of resources.
        """
        found: list[Dataset] = []
        with self.held(None) as held:
            assert held.assoc is not None
            for status, identifier in held.assoc.send_c_find(query, STUDY_ROOT_FIND):
                code = _status(status)
                if code in _PENDING:
                    if identifier is None:  # pynetdicom could not decode it: never drop a match
                        raise Transient("a C-FIND match that could not be decoded")
                    found.append(identifier)
                    continue
                if code == _SUCCESS:
                    return found
                _raise_failure("C-FIND", code, held.assoc)
        raise Transient("the PACS sent no final C-FIND status")

    def _get(self, meta: RadiographMeta) -> memoryview:
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = meta.study_uid
        query.SeriesInstanceUID = meta.series_uid
        query.SOPInstanceUID = meta.sop_uid
        with self.held(meta.sop_class_uid) as held:
            assert held.assoc is not None
            last: Dataset | None = None
            for status, _ in held.assoc.send_c_get(query, STUDY_ROOT_GET):
                code = _status(status)
                last = status
                if code in _PENDING:
                    continue
                if code in (_SUCCESS, 0xB000) and held.received:
                    return memoryview(held.received[0])
                if code in (_SUCCESS, 0xB000):
                    failed = getattr(last, "NumberOfFailedSubOperations", "?")
                    raise PacsError(
                        f"C-GET instance {meta.sop_uid}: the PACS sent nothing ({failed} failed "
                        f"sub-operations: no longer stored, or its SOP Class "
                        f"{meta.sop_class_uid or '(not in the C-FIND answer)'} in a transfer "
                        "syntax tlaudit did not propose)"
                    )
                _raise_failure(f"C-GET instance {meta.sop_uid}", code, held.assoc)
        raise Transient("the PACS sent no final C-GET status")


def _release(held: _Held) -> None:
    if held.assoc is not None and held.assoc.is_established:
        held.assoc.release()


def _abort(held: _Held) -> None:
    if held.assoc is not None:
        held.assoc.abort()


def _status(status: Dataset | None) -> int | None:
    """The DIMSE status code, None when no answer came (timeout, association broken off)."""
    if status is None or "Status" not in status:
        return None
    return int(status.Status)


def _raise_failure(what: str, code: int | None, assoc: Association) -> NoReturn:
    if code is None:
        raise Transient(
            "no answer (the association broke off or timed out)"
            if not assoc.is_established
            else "no answer within the timeout"
        )
    if code in _OUT_OF_RESOURCES:
        raise Transient(f"the PACS is out of resources (status 0x{code:04X})")
    meaning = (
        "unable to process; for a retrieval, the PACS may no longer hold the instance"
        if code & 0xF000 == 0xC000
        else "identifier does not match the SOP Class"
        if code == 0xA900
        else "see PS3.4 annex C"
    )
    raise PacsError(f"{what}: the PACS answered with failure status 0x{code:04X} ({meaning})")


def _rejection(assoc: Association) -> str:
    """Why the PACS rejected the association, as it said (PS3.8 9.3.4)."""
    primitive = getattr(assoc.acceptor, "primitive", None)
    reason = getattr(primitive, "reason_str", "") if primitive is not None else ""
    return f"reason: {reason}" if reason else "no reason given"


def _json(dataset: Dataset) -> dict[str, Any]:
    return dict(dataset.to_json_dict())


def _has_value(item: Mapping[str, Any]) -> bool:
    return bool(item.get("Value") or item.get("InlineBinary") or item.get("BulkDataURI"))


def _filled(item: dict[str, Any], *higher: Mapping[str, Any]) -> dict[str, Any]:
    """``item`` with each attribute it lacks (or gives blank) taken from the first of ``higher``
    that gives it."""
    for answer in higher:
        for tag, element in answer.items():
            if _has_value(element) and not _has_value(item.get(tag, {})):
                item[tag] = element
    return item


def _query(level: str, keys: Mapping[str, str], fields: tuple[str, ...] | list[str]) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword in fields:
        setattr(query, keyword, None)
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


class DimseFinder:
    """The :class:`~auditor.pacs.source.Finder` over C-FIND (see the module docstring)."""

    def __init__(self, associations: Associations) -> None:
        self._associations = associations

    def search_for_studies(
        self, *, search_filters: dict[str, Any], fields: list[str]
    ) -> list[dict[str, Any]]:
        """STUDY-level C-FIND with ``search_filters`` as matching keys; each study's answer is
        kept for its instances."""
        keys = {"StudyInstanceUID": "", **{k: str(v) for k, v in search_filters.items()}}
        wanted = tuple(dict.fromkeys([*fields, *STUDY_FIELDS]))
        answers = [_json(found) for found in self._associations.find(_query("STUDY", keys, wanted))]
        for answer in answers:
            self._associations.keep_study(answer)
        return answers

    def search_for_instances(
        self,
        study_instance_uid: str | None = None,
        *,
        search_filters: dict[str, Any] | None = None,
        fields: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Every image of one study hierarchically (SERIES-level C-FIND, then IMAGE-level per
        series); of several at once with one IMAGE-level C-FIND matching their list of UIDs
        (PS3.4 C.2.2.2.2), as many PACS answer, each study whose images came without a
        Modality (a PACS answering each level's attributes only at that level) asked again
        hierarchically. A study the list's answer leaves out is listed again on its own by
        :func:`~auditor.pacs.source.triage_instances`."""
        wanted = list(fields or ())
        if study_instance_uid:
            return self._instances_of(study_instance_uid, wanted)
        studies = [
            s for s in str((search_filters or {}).get("StudyInstanceUID", "")).split(",") if s
        ]
        keys = {
            "StudyInstanceUID": "\\".join(studies),
            "SeriesInstanceUID": "",
            "SOPInstanceUID": "",
        }
        by_study: dict[str, list[dict[str, Any]]] = {}
        for image in self._associations.find(_query("IMAGE", keys, [*wanted, *SERIES_FIELDS])):
            answer = _json(image)
            study = (answer.get("0020000D", {}).get("Value") or [""])[0]
            by_study.setdefault(study, []).append(answer)
        found: list[dict[str, Any]] = []
        for study, answers in by_study.items():
            if all(_has_value(a.get(_MODALITY, {})) for a in answers):
                found += [_filled(a, self._associations.study(study)) for a in answers]
            elif study:
                found += self._instances_of(study, wanted)
        return found

    def _instances_of(self, study: str, fields: list[str]) -> list[dict[str, Any]]:
        find = self._associations.find
        study_answer = self._associations.study(study)
        series_answers = [
            _json(found)
            for found in find(
                _query(
                    "SERIES", {"StudyInstanceUID": study, "SeriesInstanceUID": ""}, SERIES_FIELDS
                )
            )
        ]
        out: list[dict[str, Any]] = []
        for series_answer in series_answers:
            series = (series_answer.get("0020000E", {}).get("Value") or [""])[0]
            if not series:
                continue
            keys = {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": ""}
            for image in find(_query("IMAGE", keys, fields)):
                out.append(_filled(_json(image), series_answer, study_answer))
        return out
