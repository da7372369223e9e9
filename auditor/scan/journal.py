"""The run journal: an SQLite file in the run directory that makes a scan resumable.

Each batch's results are committed in one transaction as soon as the batch is classified, so a scan
that is killed loses at most the batch in flight. ``scan --resume`` opens the journal, checks that
the run's inputs are the same (the *fingerprint*: archive, box file or localizer bundle, model
hash, threshold and everything else that changes a result), and classifies only the images the
journal does not hold. Reports are always built from the journal, so a resumed run and an
uninterrupted one write the same findings.

Tables: ``meta`` (key/value: schema version, fingerprint, pseudonym salt), ``images`` (one row per
finished image: status and reason), ``vertebrae`` (one row per box of a finished image: probability,
domain-guard distance, heatmap file, or the reason it could not be classified), ``image_check``
(one row per finished image the image check measured: the localizer guard's distance of the whole
image, :mod:`auditor.scan.image_check`), committed in the same transaction as the image's results,
so a killed scan keeps the verdict of every image it journaled and ``--resume`` reads them here.

Schema 2 added the ``distance`` column (the crop's distance to the model's training data,
:mod:`auditor.model.guard`; NULL when the bundle has no guard). A journal of another schema is not
resumed: ``--resume`` says so and asks for a new ``--out`` directory. The ``image_check`` table
came later within schema 2: a journal without it gets it, empty, when opened (its images then
have no verdict, and the scan measures them again).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from auditor.errors import TlauditError, UsageError
from auditor.vocab import Level

logger = logging.getLogger(__name__)

JOURNAL_NAME = "journal.sqlite"
#: The ``meta`` key saying how the journal names images: "path" (archive-relative paths) or
#: "ref" (keyed references, with ``--pseudonymise``: the journal then holds no path).
IMAGE_KEYS = "image_keys"
_SCHEMA_VERSION = "2"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    image TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vertebrae (
    image TEXT NOT NULL,
    box_row INTEGER NOT NULL,
    level TEXT NOT NULL,
    probability REAL,
    distance REAL,
    heatmap TEXT NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (image, box_row)
);
CREATE TABLE IF NOT EXISTS image_check (image TEXT PRIMARY KEY, distance REAL NOT NULL);
"""


@dataclass(frozen=True)
class VertebraOutcome:
    """The classification of one box: a probability, or the reason there is none, and the
    crop's domain-guard distance (None without a guard or without a crop)."""

    box_row: int
    level: Level
    probability: float | None
    heatmap: str = ""  # run-relative path of the overlay thumbnail, "" when none was drawn
    error: str = ""
    distance: float | None = None


@dataclass(frozen=True)
class ImageOutcome:
    """What happened to one candidate image with boxes."""

    image: str
    status: str  # "classified" or "failed"
    reason: str
    vertebrae: tuple[VertebraOutcome, ...] = ()


def run_in_use(run_dir: Path) -> UsageError:
    """The error for starting a new scan in a directory that already holds one."""
    return UsageError(
        f"{run_dir} already holds a scan; pass --resume to continue it, or choose a new "
        "--out directory"
    )


def stored_meta(run_dir: Path, key: str) -> str | None:
    """A ``meta`` value of the journal in ``run_dir``, read before the run is opened (a resumed
    scan needs its pseudonym salt before the journal's fingerprint is known); None when there is
    no journal, no such value, or the file is not a journal (opening the run then says so)."""
    path = Path(run_dir) / JOURNAL_NAME
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(path)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


class RunJournal:
    """Open (or create) the journal of a run directory.

    Parameters
    ----------
    run_dir
        The scan's ``--out`` directory.
    fingerprint
        JSON-serialisable description of everything that changes a result.
    resume
        True to continue a run in the journal; False to start one (refused when the directory
        already holds a journal with results).
    on_record
        Called with the images of each batch once it is committed (a streamed archive then
        removes their files, :mod:`auditor.scan.feed`).

    Raises
    ------
    UsageError
        When a finished or partial run is in the way without ``resume``, or ``resume`` is asked
        for a journal whose fingerprint differs or that an older tlaudit wrote (another schema).
    TlauditError
        When the journal file is not an SQLite database of ours.
    """

    def __init__(
        self,
        run_dir: Path,
        fingerprint: Mapping[str, Any],
        resume: bool,
        on_record: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self.path = Path(run_dir) / JOURNAL_NAME
        self._on_record = on_record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise TlauditError(f"{self.path} is not a tlaudit run journal: {err}") from err
        wanted = json.dumps(dict(fingerprint), sort_keys=True)
        stored = self.get_meta("fingerprint")
        schema = self.get_meta("schema")
        if existed and schema not in (None, _SCHEMA_VERSION):
            self.close()
            raise UsageError(
                f"cannot resume the scan in {self.path.parent}: its journal has schema {schema} "
                f"(written by an older tlaudit) and this tlaudit writes schema {_SCHEMA_VERSION}, "
                "which records each crop's domain-guard distance; scan again into a new --out "
                "directory"
            )
        if existed and stored is not None:
            if not resume:
                self.close()
                raise run_in_use(self.path.parent)
            if stored != wanted:
                changed = _changed_keys(json.loads(stored), json.loads(wanted))
                self.close()
                raise _inputs_differ(self.path.parent, changed)
        else:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (_SCHEMA_VERSION,)
                )
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (wanted,))

    def __enter__(self) -> RunJournal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def get_meta(self, key: str) -> str | None:
        """Return a stored meta value, or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store a meta value (committed at once)."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def finished_images(self) -> set[str]:
        """Archive-relative paths of the images whose results are committed."""
        return {str(row[0]) for row in self._db.execute("SELECT image FROM images")}

    def record(
        self, outcomes: Iterable[ImageOutcome], distances: Mapping[str, float] | None = None
    ) -> None:
        """Commit the outcomes of one batch in a single transaction, with the image check's
        ``distances`` of its images (image: distance; :meth:`record_distances`)."""
        images: list[str] = []
        with self._db:
            self._insert_distances(distances or {})
            for outcome in outcomes:
                images.append(outcome.image)
                self._db.execute(
                    "INSERT OR REPLACE INTO images VALUES (?, ?, ?)",
                    (outcome.image, outcome.status, outcome.reason),
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO vertebrae VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            outcome.image,
                            v.box_row,
                            v.level.value,
                            v.probability,
                            v.distance,
                            v.heatmap,
                            v.error,
                        )
                        for v in outcome.vertebrae
                    ],
                )
        if self._on_record is not None:
            self._on_record(images)

    def record_distances(self, distances: Mapping[str, float]) -> None:
        """Commit image-check distances (image: the localizer guard's distance of the whole
        image) of images already journaled, in one transaction."""
        with self._db:
            self._insert_distances(distances)

    def _insert_distances(self, distances: Mapping[str, float]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO image_check VALUES (?, ?)",
            [(image, float(distance)) for image, distance in distances.items()],
        )

    def image_distances(self) -> dict[str, float]:
        """The image check's distance of every journaled image it measured, keyed by image."""
        return {
            str(image): float(distance)
            for image, distance in self._db.execute("SELECT image, distance FROM image_check")
        }

    def forget(self, images: Iterable[str]) -> None:
        """Remove these images' outcomes, so that ``--resume`` classifies them again (a
        streamed image whose file never arrived, :mod:`auditor.scan.feed`)."""
        keys = [(image,) for image in images]
        with self._db:
            self._db.executemany("DELETE FROM vertebrae WHERE image = ?", keys)
            self._db.executemany("DELETE FROM image_check WHERE image = ?", keys)
            self._db.executemany("DELETE FROM images WHERE image = ?", keys)

    def outcomes(self) -> dict[str, ImageOutcome]:
        """Every committed image outcome, keyed by image, vertebrae in box-row order."""
        vertebrae: dict[str, list[VertebraOutcome]] = {}
        for image, box_row, level, probability, distance, heatmap, error in self._db.execute(
            "SELECT image, box_row, level, probability, distance, heatmap, error FROM vertebrae "
            "ORDER BY image, box_row"
        ):
            vertebrae.setdefault(image, []).append(
                VertebraOutcome(
                    int(box_row),
                    Level(level),
                    None if probability is None else float(probability),
                    heatmap,
                    error,
                    None if distance is None else float(distance),
                )
            )
        return {
            image: ImageOutcome(image, status, reason, tuple(vertebrae.get(image, ())))
            for image, status, reason in self._db.execute(
                "SELECT image, status, reason FROM images ORDER BY image"
            )
        }


def check_resumable(run_dir: Path, fingerprint: Mapping[str, Any]) -> None:
    """Refuse, before any work, a ``--resume`` whose inputs differ from the journal's, as
    :class:`RunJournal` would when it opens. A run folder without a journal passes.

    Raises
    ------
    UsageError
        As :class:`RunJournal` would, naming the inputs that differ.
    """
    stored = stored_meta(run_dir, "fingerprint")
    if stored is None:
        return
    try:
        old = json.loads(stored)
    except ValueError:
        return  # not a fingerprint of ours: opening the journal says so
    old = old if isinstance(old, dict) else {}
    new = json.loads(json.dumps(dict(fingerprint)))  # as the journal stores it: lists, not tuples
    if old != new:
        raise _inputs_differ(Path(run_dir), _changed_keys(old, new))


def _inputs_differ(run_dir: Path, changed: list[str]) -> UsageError:
    return UsageError(
        f"cannot resume the scan in {run_dir}: its inputs differ from this command's "
        f"({', '.join(changed)}); use a new --out directory"
    )


def _changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [key for key in keys if old.get(key) != new.get(key)] or ["unknown"]
