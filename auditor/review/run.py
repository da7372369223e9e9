"""A finished scan's run folder, opened for review: its cases and the way back to each image.

The scan writes ``cases.json`` (every classified study with its boxes, images named by a keyed
reference) and keeps ``journal.sqlite`` (the archive it scanned, the salt and every image it
classified). :func:`load_run` joins the two, so the workbench and ``export-annotations`` can open an
image by its reference and never take a path from a request or a user's file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import InputFileError, UsageError
from auditor.records import CaseImage, StudyCase
from auditor.reports.cases import CASES_NAME, read_cases
from auditor.reports.pseudonym import Pseudonymiser
from auditor.scan.journal import IMAGE_KEYS, JOURNAL_NAME


@dataclass(frozen=True)
class ReviewRun:
    """A run folder opened for review.

    ``studies`` are in queue order (flagged first, by rank, then the rest by key); ``sources``
    maps each image reference to its archive-relative path (POSIX separators);
    ``domain_banner`` is the scan's out-of-domain warning ("" when none was due).
    """

    run_dir: Path
    archive: Path
    threshold: float
    training_data: str
    domain_banner: str
    studies: tuple[StudyCase, ...]
    sources: Mapping[str, str]

    def study(self, key: str) -> StudyCase:
        """The study with this key.

        Raises
        ------
        KeyError
            When the run holds no such study.
        """
        for case in self.studies:
            if case.key == key:
                return case
        raise KeyError(key)

    def image(self, ref: str) -> tuple[StudyCase, CaseImage]:
        """The study and image an image reference names.

        Raises
        ------
        KeyError
            When no image of the run has this reference.
        """
        for case in self.studies:
            for image in case.images:
                if image.ref == ref:
                    return case, image
        raise KeyError(ref)

    def source(self, ref: str) -> str:
        """The archive-relative path of an image reference (KeyError when unknown)."""
        return self.sources[ref]

    def image_path(self, ref: str) -> Path:
        """The file of an image reference, checked to lie inside the archive.

        Raises
        ------
        KeyError
            When no image of the run has this reference.
        UsageError
            When the recorded path leads outside the archive (a link or a tampered journal).
        """
        relative = self.sources[ref]
        archive = self.archive.resolve()
        path = (archive / relative).resolve()
        if not path.is_relative_to(archive):
            raise UsageError(f"image {relative!r} leads outside the archive {archive}")
        return path


def load_run(run_dir: Path) -> ReviewRun:
    """Open a scan's run folder for review.

    Raises
    ------
    InputFileError
        When the folder holds no journal or no ``cases.json`` (not a finished scan), or either
        cannot be read.
    """
    run_dir = Path(run_dir)
    cases = read_cases(run_dir / CASES_NAME)
    journal = run_dir / JOURNAL_NAME
    if not journal.is_file():
        raise InputFileError(f"{run_dir} holds no {JOURNAL_NAME}: is it the run folder of a scan?")
    try:
        # read-only: review never changes what the scan recorded
        db = sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            images = [str(row[0]) for row in db.execute("SELECT image FROM images")]
        finally:
            db.close()
    except sqlite3.Error as err:
        raise InputFileError(f"{journal} cannot be read as a run journal: {err}") from err
    try:
        archive = Path(json.loads(meta["fingerprint"])["archive"])
        salt = str(meta["salt"])
    except (KeyError, TypeError, ValueError) as err:
        raise InputFileError(f"{journal} does not record the archive and salt: {err!r}") from err
    refs = Pseudonymiser(salt)
    if meta.get(IMAGE_KEYS) == "ref":
        # a pseudonymised run's journal names images by reference only: find them in the archive
        wanted = {image.ref for study in cases.studies for image in study.images}
        sources = _find_refs(archive, refs, wanted)
    else:
        sources = {refs.ref(image): image for image in images}
    return ReviewRun(
        run_dir=run_dir,
        archive=archive,
        threshold=cases.threshold,
        training_data=cases.training_data,
        domain_banner=cases.domain_banner,
        studies=cases.studies,
        sources=sources,
    )


def _find_refs(archive: Path, refs: Pseudonymiser, wanted: set[str]) -> dict[str, str]:
    """The archive-relative paths (POSIX) of the images whose references are ``wanted``, found
    by walking the archive (names only; no file is opened). Links are not followed."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(archive):
        dirs.sort()
        for name in sorted(files):
            relative = Path(folder, name).relative_to(archive).as_posix()
            ref = refs.ref(relative)
            if ref in wanted:
                found[ref] = relative
                if len(found) == len(wanted):
                    return found
    return found
