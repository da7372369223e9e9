"""The review store: every decision a reviewer makes on a run, kept as an append-only log.

A reviewer's decisions live in ``RUN_DIR/review.sqlite`` and nowhere else; nothing a scan or
``scan --resume`` does ever opens it. Each change is one row of the ``events`` table (who, when,
which study / image / box, which field, the new value and the value before, both as JSON), and
SQLite triggers refuse every UPDATE and DELETE of that table, so the history cannot be rewritten
through SQL. The ``current_state`` view holds the latest event of each reviewer, study, image, box
and field; :meth:`ReviewStore.state` reads it into a :class:`ReviewState`.

Durability: the file is in WAL mode with ``synchronous=FULL`` and :meth:`ReviewStore.record`
commits before it returns, so a decision the workbench has acknowledged survives the process being
killed (``kill -9``) or the machine losing power.

Keys. ``study`` is the study's key in ``cases.json``; ``image`` is the image's keyed reference
(``CaseImage.ref``); ``box`` is :func:`box_id` of the scan's box row (``box-<row>``) or the id
:meth:`ReviewStore.add_box` gave a box the reviewer drew (``new-<12 hex digits>``). Study fields
(verdict, comment) have an empty image and box; vertebra fields have all three.

Tables: ``meta`` (key/value: ``format`` = ``tlaudit-review``, ``schema`` = the schema version),
``events`` (id, reviewer, at, study, image, box, field, value, before) and the view
``current_state`` over it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import secrets
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

from auditor.boxes import degenerate_reason
from auditor.errors import InputFileError, ReviewError, UsageError
from auditor.vocab import GENANT_GRADES, Level, StudyVerdict, VertebraDecision

logger = logging.getLogger(__name__)

REVIEW_DB_NAME = "review.sqlite"
_FORMAT = "tlaudit-review"
_SCHEMA_VERSION = "1"

#: Longest reviewer name, study key, image reference and comment accepted.
MAX_REVIEWER_CHARS = 64
MAX_KEY_CHARS = 256
MAX_COMMENT_CHARS = 2000
#: AO Spine classification of thoracolumbar injuries (Vaccaro et al., 2013): compression types
#: A0-A4, tension band types B1-B3, translation type C.
AO_TYPES = ("A0", "A1", "A2", "A3", "A4", "B1", "B2", "B3", "C")

# One statement each: executescript() would commit the transaction the schema is created in.
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        reviewer TEXT NOT NULL,
        at TEXT NOT NULL,
        study TEXT NOT NULL,
        image TEXT NOT NULL,
        box TEXT NOT NULL,
        field TEXT NOT NULL,
        value TEXT NOT NULL,
        before TEXT NOT NULL
    )""",
    "CREATE INDEX events_key ON events (reviewer, study, image, box, field, id)",
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN
        SELECT RAISE(ABORT, 'review events are append-only: UPDATE is refused');
    END""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN
        SELECT RAISE(ABORT, 'review events are append-only: DELETE is refused');
    END""",
    """CREATE VIEW current_state AS
        SELECT events.* FROM events
        JOIN (
            SELECT MAX(id) AS id FROM events GROUP BY reviewer, study, image, box, field
        ) AS latest ON events.id = latest.id""",
)

_BOX_ID = re.compile(r"box-([1-9][0-9]*)\Z")
_NEW_BOX_ID = re.compile(r"new-[0-9a-f]{12}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Field(str, Enum):
    """What one review event changes."""

    DECISION = "decision"  # a vertebra: VertebraDecision, or None to clear
    AO_TYPE = "ao_type"  # a vertebra: one of AO_TYPES, or "" to clear
    GENANT_GRADE = "genant_grade"  # a vertebra: one of GENANT_GRADES, or None to clear
    BOX = "box"  # a vertebra: the moved or resized box [x_min, y_min, x_max, y_max]
    LEVEL = "level"  # a vertebra: the renamed level
    ADDED = "added"  # a vertebra the reviewer drew: {"level": ..., "box": [...]} (add_box only)
    DELETED = "deleted"  # a vertebra: True to delete a box, False to restore it
    VERDICT = "verdict"  # a study: StudyVerdict, or None to clear
    COMMENT = "comment"  # a study: free text
    SAMPLE = "sample"  # the run: the unflagged studies sampled for this reviewer (sample only)

    def __str__(self) -> str:
        return self.value


_VERTEBRA_FIELDS = frozenset(
    {
        Field.DECISION,
        Field.AO_TYPE,
        Field.GENANT_GRADE,
        Field.BOX,
        Field.LEVEL,
        Field.ADDED,
        Field.DELETED,
    }
)
_STUDY_FIELDS = frozenset({Field.VERDICT, Field.COMMENT})


@dataclass(frozen=True)
class Event:
    """One recorded change. ``at`` is ISO 8601 in UTC; ``value`` and ``before`` are the
    JSON-decoded values (``before`` is None when the field had no value for this reviewer)."""

    id: int
    reviewer: str
    at: str
    study: str
    image: str
    box: str
    field: Field
    value: Any
    before: Any


@dataclass(frozen=True)
class VertebraReview:
    """One reviewer's current decisions on one vertebra box.

    ``xyxy`` is the moved or resized box (or the box the reviewer drew), None when the scan's box
    is unchanged; ``level`` is the renamed level (or the drawn box's level), None when unchanged.
    """

    study: str
    image: str
    box: str
    decision: VertebraDecision | None = None
    ao_type: str = ""
    genant_grade: int | None = None
    xyxy: tuple[float, float, float, float] | None = None
    level: Level | None = None
    added: bool = False
    deleted: bool = False


@dataclass(frozen=True)
class StudyReview:
    """One reviewer's current verdict and comment on one study."""

    study: str
    verdict: StudyVerdict | None = None
    comment: str = ""


@dataclass(frozen=True)
class ReviewState:
    """Everything one reviewer has decided on a run, as of now.

    ``vertebrae`` is keyed by (study, image reference, box id); ``sample`` is the unflagged sample
    this reviewer asked for (empty when none was).
    """

    reviewer: str
    vertebrae: Mapping[tuple[str, str, str], VertebraReview]
    studies: Mapping[str, StudyReview]
    sample: tuple[str, ...] = ()


def box_id(box_row: int) -> str:
    """The id of the box the scan classified from box row ``box_row`` (``box-<row>``).

    Boxes a reviewer adds get ``new-<12 hex digits>`` from :meth:`ReviewStore.add_box`.

    Raises
    ------
    ReviewError
        When ``box_row`` is not a positive integer.
    """
    if isinstance(box_row, bool) or not isinstance(box_row, int) or box_row < 1:
        raise ReviewError(f"box row {box_row!r} is not a positive integer")
    return f"box-{box_row}"


def box_row_of(box: str) -> int | None:
    """The scan's box row a box id names, or None for a box a reviewer added.

    Raises
    ------
    ReviewError
        When ``box`` is neither ``box-<row>`` nor ``new-<12 hex digits>``.
    """
    match = _BOX_ID.match(box)
    if match:
        return int(match.group(1))
    if _NEW_BOX_ID.match(box):
        return None
    raise ReviewError(f"box id {box!r} is neither 'box-<row>' nor 'new-<12 hex digits>'")


def coerce_field(field: Field | str) -> Field:
    """``field`` as a :class:`Field` (raises :class:`ReviewError` naming the known fields)."""
    try:
        return Field(field)
    except ValueError:
        names = ", ".join(f.value for f in Field)
        raise ReviewError(f"unknown review field {field!r}; expected one of {names}") from None


def check_reviewer(reviewer: str) -> str:
    """A reviewer name as stored: stripped, non-empty, at most 64 characters, no control
    characters (raises :class:`ReviewError`)."""
    if not isinstance(reviewer, str):
        raise ReviewError(f"reviewer must be a name, got {type(reviewer).__name__}")
    name = reviewer.strip()
    if not name or len(name) > MAX_REVIEWER_CHARS or _CONTROL.search(name):
        raise ReviewError(
            f"reviewer name {reviewer!r} is not 1 to {MAX_REVIEWER_CHARS} printable characters"
        )
    return name


def check_value(field: Field | str, value: Any) -> Any:
    """The JSON value stored for ``value`` of ``field``, after checking it.

    Strings are coerced to enums at this boundary (``"fracture"``, ``"t12"``, ``"confirmed
    miss"``); enums are stored by their value.

    Raises
    ------
    ReviewError
        When the value is not one ``field`` takes; the message says what was found and what was
        expected.
    """
    field = coerce_field(field)
    if field is Field.DECISION:
        return _enum_or_none(VertebraDecision, value, "decision")
    if field is Field.VERDICT:
        return _enum_or_none(StudyVerdict, value, "verdict")
    if field is Field.AO_TYPE:
        text = value.strip().upper() if isinstance(value, str) else None
        if text is None or (text and text not in AO_TYPES):
            raise ReviewError(
                f"ao_type {value!r} is not an AO Spine type; expected one of "
                f"{', '.join(AO_TYPES)} or '' to clear"
            )
        return text
    if field is Field.GENANT_GRADE:
        return _genant(value)
    if field is Field.BOX:
        return list(_xyxy(value))
    if field is Field.LEVEL:
        return _level(value).value
    if field is Field.DELETED:
        if not isinstance(value, bool):
            raise ReviewError(f"deleted must be true or false, got {value!r}")
        return value
    if field is Field.COMMENT:
        if not isinstance(value, str) or len(value) > MAX_COMMENT_CHARS:
            found = f"{len(value)} characters" if isinstance(value, str) else repr(value)
            raise ReviewError(
                f"comment must be text of at most {MAX_COMMENT_CHARS} characters, got {found}"
            )
        return value
    if field is Field.ADDED:
        if not isinstance(value, Mapping) or set(value) != {"level", "box"}:
            raise ReviewError(f"added must be {{'level': ..., 'box': [...]}}, got {value!r}")
        return {"level": _level(value["level"]).value, "box": list(_xyxy(value["box"]))}
    # Field.SAMPLE
    if not isinstance(value, Mapping) or not isinstance(value.get("studies"), list):
        raise ReviewError(f"sample must be {{'studies': [...], ...}}, got {value!r}")
    return dict(value)


def _enum_or_none(kind: type[Enum], value: Any, name: str) -> Any:
    if value is None or value == "":
        return None
    try:
        return kind(value).value
    except ValueError:
        names = ", ".join(repr(member.value) for member in kind)
        raise ReviewError(f"{name} {value!r} is not one of {names} (or none)") from None


def _genant(value: Any) -> int | None:
    if value is None or value == "":
        return None
    grade: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        grade = value
    elif isinstance(value, str) and value.strip().isdigit():
        grade = int(value.strip())
    if grade not in GENANT_GRADES:
        grades = ", ".join(str(g) for g in GENANT_GRADES)
        raise ReviewError(
            f"genant_grade {value!r} is not a Genant grade; expected {grades} or none"
        )
    return grade


def _level(value: Any) -> Level:
    try:
        return value if isinstance(value, Level) else Level.parse(str(value))
    except ValueError as err:
        raise ReviewError(str(err)) from None


def _xyxy(value: Any) -> tuple[float, float, float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 4:
        raise ReviewError(f"box must be [x_min, y_min, x_max, y_max], got {value!r}")
    corners: list[float] = []
    for corner in value:
        if isinstance(corner, bool) or not isinstance(corner, (int, float)):
            raise ReviewError(f"box corner {corner!r} is not a number (box {list(value)!r})")
        if not math.isfinite(corner):
            raise ReviewError(f"box corner {corner!r} is not a finite number (box {list(value)!r})")
        corners.append(float(corner))
    xyxy = (corners[0], corners[1], corners[2], corners[3])
    problem = degenerate_reason(xyxy)
    if problem:
        raise ReviewError(problem)
    return xyxy


def _key(text: Any, name: str, *, empty: bool) -> str:
    if not isinstance(text, str):
        raise ReviewError(f"{name} must be text, got {type(text).__name__}")
    if (not text and not empty) or len(text) > MAX_KEY_CHARS or _CONTROL.search(text):
        raise ReviewError(f"{name} {text!r} is not 1 to {MAX_KEY_CHARS} printable characters")
    return text


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def open_existing(run_dir: Path) -> ReviewStore:
    """Open the review store of a run folder that has one (for reading a review: exporting it,
    counting it), never creating one.

    Raises
    ------
    UsageError
        When the run folder holds no ``review.sqlite`` (nobody has reviewed the run yet).
    InputFileError
        As :class:`ReviewStore`.
    """
    if not (Path(run_dir) / REVIEW_DB_NAME).is_file():
        raise UsageError(
            f"{run_dir} holds no {REVIEW_DB_NAME}: nobody has reviewed this run yet "
            "(tlaudit review, or tlaudit import-verdicts)"
        )
    return ReviewStore(run_dir)


class ReviewStore:
    """Open (or create) the review store of a run folder: ``RUN_DIR/review.sqlite``.

    One store may be shared by the threads of one process (calls are serialised), and several
    processes may open the same file (SQLite's locking; writers wait up to 10 s for each other).

    Parameters
    ----------
    run_dir
        A scan's run folder (it must exist).

    Raises
    ------
    ReviewError
        When ``run_dir`` is not a folder.
    InputFileError
        When ``review.sqlite`` exists but is not a tlaudit review store, or one of a newer schema.
    """

    def __init__(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ReviewError(f"{run_dir} is not a folder: expected the run folder of a scan")
        self.path = run_dir / REVIEW_DB_NAME
        self._lock = threading.Lock()
        try:
            # autocommit mode: every write below opens its own BEGIN IMMEDIATE transaction
            self._db = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as err:
            raise InputFileError(f"{self.path} cannot be opened: {err}") from err
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._open_schema()
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise InputFileError(f"{self.path} is not a tlaudit review store: {err}") from err
        except InputFileError:
            self._db.close()
            raise

    def _open_schema(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            tables = {
                str(row[0])
                for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if not tables:
                for statement in _SCHEMA:
                    self._db.execute(statement)
                self._db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("format", _FORMAT), ("schema", _SCHEMA_VERSION)],
                )
                logger.info("created the review store %s", self.path)
            else:
                meta = {}
                if "meta" in tables:
                    meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
                if meta.get("format") != _FORMAT or "events" not in tables:
                    raise InputFileError(
                        f"{self.path} is an SQLite file but not a tlaudit review store (no "
                        f"'{_FORMAT}' format marker); move it aside or use another run folder"
                    )
                if meta.get("schema") != _SCHEMA_VERSION:
                    raise InputFileError(
                        f"{self.path} is a review store of schema {meta.get('schema')!r}; this "
                        f"tlaudit reads schema {_SCHEMA_VERSION!r} (a newer tlaudit wrote it?)"
                    )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (every event is already committed)."""
        self._db.close()

    # -- writing ----------------------------------------------------------------------------------

    def record(
        self,
        reviewer: str,
        field: Field | str,
        value: Any,
        *,
        study: str,
        image: str = "",
        box: str = "",
    ) -> Event:
        """Record one change by ``reviewer`` and commit it before returning.

        Parameters
        ----------
        reviewer
            The reviewer's name (1 to 64 characters).
        field, value
            What changes and its new value (see :class:`Field`); strings are coerced to enums.
            ``added`` and ``sample`` are recorded by :meth:`add_box` and :meth:`sample` only.
        study, image, box
            The study key, and for vertebra fields the image reference and the box id (empty
            for the study fields ``verdict`` and ``comment``).

        Returns
        -------
        Event
            The stored event, ``before`` holding the field's value before this change (None when
            it had none).

        Raises
        ------
        ReviewError
            When the reviewer, field, value or keys are not valid; nothing is recorded.
        """
        name = check_reviewer(reviewer)
        kind = coerce_field(field)
        if kind is Field.ADDED:
            raise ReviewError("a box is added with add_box(), not record('added', ...)")
        if kind is Field.SAMPLE:
            raise ReviewError("a sample is drawn with sample(), not record('sample', ...)")
        stored = check_value(kind, value)
        study = _key(study, "study", empty=False)
        if kind in _VERTEBRA_FIELDS:
            image = _key(image, "image", empty=False)
            box = _key(box, "box", empty=False)
            box_row_of(box)
        elif image or box:
            raise ReviewError(f"{kind.value} is a study field: give no image or box")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if box.startswith("new-") and not self._has(name, study, image, box, Field.ADDED):
                    raise ReviewError(
                        f"box {box!r} of image {image!r} was not added by {name!r}: add it with "
                        "add_box() first"
                    )
                event = self._append(name, kind, stored, study, image, box)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return event

    def add_box(
        self,
        reviewer: str,
        *,
        study: str,
        image: str,
        level: Level | str,
        xyxy: Sequence[float],
    ) -> Event:
        """Record a vertebra box the reviewer drew, under a new box id (``new-<12 hex>``).

        Returns
        -------
        Event
            The ``added`` event; its ``box`` is the new id and its value
            ``{"level": ..., "box": [x_min, y_min, x_max, y_max]}``.

        Raises
        ------
        ReviewError
            When the reviewer, keys, level or box are not valid.
        """
        name = check_reviewer(reviewer)
        stored = check_value(Field.ADDED, {"level": level, "box": xyxy})
        study = _key(study, "study", empty=False)
        image = _key(image, "image", empty=False)
        box = f"new-{secrets.token_hex(6)}"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                event = self._append(name, Field.ADDED, stored, study, image, box)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return event

    def sample(
        self, reviewer: str, candidates: Sequence[str], size: int, seed: int = 0
    ) -> tuple[str, ...]:
        """The reproducible random sample of ``size`` of ``candidates`` for ``reviewer``.

        The first call draws ``random.Random(seed).sample(sorted(candidates), min(size, n))`` and
        records it as a ``sample`` event; every later call for this reviewer returns the recorded
        sample, whatever it is asked (so the sample a miss rate is estimated on never changes).

        Raises
        ------
        ReviewError
            When the reviewer is not valid, ``size`` is negative or a candidate is not a study key.
        """
        name = check_reviewer(reviewer)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ReviewError(f"sample size {size!r} is not a whole number >= 0")
        pool = sorted({_key(c, "candidate study", empty=False) for c in candidates})
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                stored = self._current(name, "", "", "", Field.SAMPLE)
                if stored is not None:
                    self._db.execute("COMMIT")
                    if stored.get("size") != size or stored.get("seed") != seed:
                        logger.info(
                            "%s already has a sample of %d studies; returning it",
                            name,
                            len(stored["studies"]),
                        )
                    return tuple(str(study) for study in stored["studies"])
                drawn = random.Random(seed).sample(pool, min(size, len(pool)))
                value = {"seed": seed, "size": size, "candidates": len(pool), "studies": drawn}
                self._append(name, Field.SAMPLE, value, "", "", "")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return tuple(drawn)

    def _has(self, reviewer: str, study: str, image: str, box: str, field: Field) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM events WHERE reviewer = ? AND study = ? AND image = ? AND box = ? "
            "AND field = ? LIMIT 1",
            (reviewer, study, image, box, field.value),
        ).fetchone()
        return row is not None

    def _current(self, reviewer: str, study: str, image: str, box: str, field: Field) -> Any:
        row = self._db.execute(
            "SELECT value FROM events WHERE reviewer = ? AND study = ? AND image = ? AND box = ? "
            "AND field = ? ORDER BY id DESC LIMIT 1",
            (reviewer, study, image, box, field.value),
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def _append(
        self, reviewer: str, field: Field, value: Any, study: str, image: str, box: str
    ) -> Event:
        """Insert one event inside the caller's transaction."""
        before = self._current(reviewer, study, image, box, field)
        at = _now()
        cursor = self._db.execute(
            "INSERT INTO events (reviewer, at, study, image, box, field, value, before) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (reviewer, at, study, image, box, field.value, json.dumps(value), json.dumps(before)),
        )
        assert cursor.lastrowid is not None
        return Event(cursor.lastrowid, reviewer, at, study, image, box, field, value, before)

    # -- reading ----------------------------------------------------------------------------------

    def current(
        self, reviewer: str, field: Field | str, *, study: str, image: str = "", box: str = ""
    ) -> Any:
        """The JSON value ``field`` holds now for ``reviewer`` (None when never recorded)."""
        name = check_reviewer(reviewer)
        with self._lock:
            return self._current(name, study, image, box, coerce_field(field))

    def state(self, reviewer: str) -> ReviewState:
        """Everything ``reviewer`` has decided, as of the last committed event (an unknown
        reviewer has an empty state)."""
        name = check_reviewer(reviewer)
        with self._lock:
            rows = self._db.execute(
                "SELECT study, image, box, field, value FROM current_state WHERE reviewer = ? "
                "ORDER BY id",
                (name,),
            ).fetchall()
        vertebrae: dict[tuple[str, str, str], dict[str, Any]] = {}
        studies: dict[str, dict[str, Any]] = {}
        sample: tuple[str, ...] = ()
        for study, image, box, field_text, value_text in rows:
            field = Field(field_text)
            value = json.loads(value_text)
            if field is Field.SAMPLE:
                sample = tuple(str(s) for s in value["studies"])
            elif field in _STUDY_FIELDS:
                studies.setdefault(study, {})[field.value] = value
            else:
                vertebrae.setdefault((study, image, box), {})[field.value] = value
        return ReviewState(
            reviewer=name,
            vertebrae=MappingProxyType(
                {key: _vertebra_review(key, fields) for key, fields in vertebrae.items()}
            ),
            studies=MappingProxyType(
                {
                    study: StudyReview(
                        study=study,
                        verdict=None if f.get("verdict") is None else StudyVerdict(f["verdict"]),
                        comment=str(f.get("comment") or ""),
                    )
                    for study, f in studies.items()
                }
            ),
            sample=sample,
        )

    def reviewers(self) -> tuple[str, ...]:
        """Every reviewer who recorded anything, sorted."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT reviewer FROM events ORDER BY reviewer")
            return tuple(str(row[0]) for row in rows)

    def events(self, reviewer: str | None = None) -> tuple[Event, ...]:
        """Every event (of one reviewer, or of all), oldest first."""
        query = "SELECT id, reviewer, at, study, image, box, field, value, before FROM events"
        params: tuple[str, ...] = ()
        if reviewer is not None:
            query += " WHERE reviewer = ?"
            params = (check_reviewer(reviewer),)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", params).fetchall()
        return tuple(
            Event(
                id=int(row[0]),
                reviewer=row[1],
                at=row[2],
                study=row[3],
                image=row[4],
                box=row[5],
                field=Field(row[6]),
                value=json.loads(row[7]),
                before=json.loads(row[8]),
            )
            for row in rows
        )


def _vertebra_review(key: tuple[str, str, str], fields: Mapping[str, Any]) -> VertebraReview:
    study, image, box = key
    added = fields.get("added")
    xyxy = fields.get("box") or (added["box"] if added else None)
    level = fields.get("level") or (added["level"] if added else None)
    decision = fields.get("decision")
    return VertebraReview(
        study=study,
        image=image,
        box=box,
        decision=None if decision is None else VertebraDecision(decision),
        ao_type=str(fields.get("ao_type") or ""),
        genant_grade=fields.get("genant_grade"),
        xyxy=None if xyxy is None else (xyxy[0], xyxy[1], xyxy[2], xyxy[3]),
        level=None if level is None else Level(level),
        added=added is not None,
        deleted=bool(fields.get("deleted", False)),
    )
