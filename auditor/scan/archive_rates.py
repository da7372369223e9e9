"""How often the archive rules mark an archive drawn from scanned studies
(``tlaudit guard-rates --runs``).

A site adapting tlaudit scans an archive it knows is like the model's training data (and, when it
has one, an archive it knows is not), then asks how often the archive rules (``DomainCheck`` in
:mod:`auditor.records`: the share rule and the count rule) would mark an archive of N studies
drawn from it: a false banner on the first, a true one on the second.

:func:`read_run` reads a scan's run folder: ``findings.csv`` (per crop its study, its image, its
probability and its domain distance) and, when the scan ran the image check, ``image_check.csv``
(the images it refused). Each crop's verdict is the scan's
(:func:`auditor.records.crop_domain_verdict` with the bundle guard's threshold), grouped by study
as the scan groups them (the ``study`` column). The run journal's fingerprint must name the
bundle's model and guard (:func:`check_scanned_with`).

:func:`draw_rates` draws archives of each size with replacement from whole studies (never crops),
with one seeded :class:`numpy.random.Generator` over the pools and sizes in order, and judges each
with :func:`auditor.scan.pipeline.domain_check`, the scan's own judgement.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from auditor.errors import InputFileError, UsageError
from auditor.records import crop_domain_verdict
from auditor.scan.image_check import IMAGE_CHECK, IMAGE_CHECK_COLUMNS
from auditor.scan.journal import stored_meta

if TYPE_CHECKING:  # torch: the command line imports this module for its defaults
    from auditor.model.bundle import ModelBundle
    from auditor.model.stage_guard import DomainGuard

logger = logging.getLogger(__name__)

FINDINGS = "findings.csv"
"""The scan's table of classified vertebrae in a run folder (:mod:`auditor.reports.findings`)."""
#: Columns of ``findings.csv`` the measure reads.
FINDINGS_READ = ("study", "image", "probability", "domain_distance")
#: Archive sizes (studies) drawn by default.
DEFAULT_SIZES = (1, 3, 5, 10, 20, 40, 100, 200)
#: Archives drawn per pool and size by default.
DEFAULT_DRAWS = 4000


@dataclass(frozen=True)
class StudyPool:
    """Scanned studies to draw archives from: per study (arrays of one length), its classified
    crops with a domain verdict, those out of distribution, the images the image check measured
    and those it refused. Only studies with at least one crop with a verdict are kept."""

    name: str
    foreign: bool
    runs: tuple[Path, ...]
    crops: npt.NDArray[np.int64]
    crops_out: npt.NDArray[np.int64]
    images: npt.NDArray[np.int64]
    images_out: npt.NDArray[np.int64]

    @property
    def studies(self) -> int:
        return len(self.crops)

    @property
    def out_rate(self) -> float:
        """Share of the pool's crops out of distribution."""
        total = int(self.crops.sum())
        return int(self.crops_out.sum()) / total if total else 0.0

    def describe(self) -> dict[str, object]:
        """The pool's counts, for the JSON figures."""
        return {
            "name": self.name,
            "foreign": self.foreign,
            "runs": [str(p) for p in self.runs],
            "studies": self.studies,
            "studies_with_a_crop_out": int((self.crops_out > 0).sum()),
            "crops": int(self.crops.sum()),
            "crops_out": int(self.crops_out.sum()),
            "out_rate": self.out_rate,
            "images_checked": int(self.images.sum()),
            "images_refused": int(self.images_out.sum()),
        }


@dataclass(frozen=True)
class SizeRates:
    """Of ``draws`` archives of ``size`` studies, the share each rule marked, and either."""

    size: int
    draws: int
    share_rule: float
    count_rule: float
    either: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "size": self.size,
            "draws": self.draws,
            "share_rule": self.share_rule,
            "count_rule": self.count_rule,
            "either": self.either,
        }


def check_scanned_with(run_dir: Path, bundle: ModelBundle) -> bool:
    """Whether the run journal of ``run_dir`` records this bundle's model and domain guard;
    False when there is no journal to ask (nothing is checked then).

    Raises
    ------
    UsageError
        When the journal's fingerprint names another model or another guard, with both hashes.
    InputFileError
        When the journal's fingerprint is not JSON of ours.
    """
    stored = stored_meta(run_dir, "fingerprint")
    if stored is None:
        return False
    try:
        fingerprint = json.loads(stored)
    except json.JSONDecodeError as err:
        raise InputFileError(f"{run_dir}: the run journal's fingerprint is not JSON") from err
    if not isinstance(fingerprint, dict):
        raise InputFileError(f"{run_dir}: the run journal's fingerprint is not an object")
    guard = bundle.card.guard
    for what, theirs, ours in (
        ("model", fingerprint.get("model_sha256"), bundle.sha256),
        ("domain guard", fingerprint.get("guard_sha256"), guard.sha256 if guard else None),
    ):
        if theirs != ours:
            raise UsageError(
                f"{run_dir} was scanned with another {what} (SHA-256 {theirs or 'none'}) than "
                f"the bundle {bundle.path} has (SHA-256 {ours or 'none'}): scan the archive "
                "again with this bundle, or measure with the bundle it was scanned with"
            )
    return True


def read_run(run_dir: Path, guard: DomainGuard) -> dict[str, tuple[int, int, int, int]]:
    """Per study of a scan's run folder (the ``study`` column of ``findings.csv``, in the
    file's order): its classified crops with a domain verdict, those out of distribution, the
    images the image check measured (``image_check.csv``, when the scan wrote one) and those it
    refused. Every crop of a refused image counts out, as in the scan; an image the image check
    measured but that has no row in ``findings.csv`` belongs to no study and is left out. Of a
    scan without a box file the localizer guard's verdicts (``localizer_boxes.images.csv``) are
    not read: an image it refused has no boxes, so no row to give its study, and the image share
    of the share rule then counts no image (the scan's counts them all).

    Raises
    ------
    InputFileError
        When the folder, or its ``findings.csv``, is missing, a file lacks a column, or a row
        holds a value that is not what the scan writes (named by file and line).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputFileError(
            f"{run_dir}: no such run folder; give the --out folder of a finished tlaudit scan"
        )
    refused, measured = _read_image_check(run_dir / IMAGE_CHECK)
    path = run_dir / FINDINGS
    if not path.is_file():
        raise InputFileError(
            f"{path} is missing: give the --out folder of a finished tlaudit scan (it writes "
            f"{FINDINGS} at its end; a killed scan finishes with --resume)"
        )
    crops: dict[str, list[int]] = {}
    image_study: dict[str, str] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            _require_columns(path, reader.fieldnames, FINDINGS_READ)
            for row in reader:
                study, image = row["study"], row["image"]
                if not study or not image:
                    raise InputFileError(
                        f"{path}, line {reader.line_num}: a row without its study or image; "
                        "expected the findings.csv a scan writes"
                    )
                probability = _number(path, reader.line_num, row, "probability")
                distance = _number(path, reader.line_num, row, "domain_distance")
                image_study.setdefault(image, study)
                counts = crops.setdefault(study, [0, 0])
                verdict = crop_domain_verdict(
                    probability, distance, image in refused, guard.threshold
                )
                if verdict is not None:
                    counts[0] += 1
                    counts[1] += verdict
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputFileError(
            f"{path}: not the findings.csv of a tlaudit scan ({type(err).__name__}: {err})"
        ) from err
    images: dict[str, list[int]] = {study: [0, 0] for study in crops}
    for image, study in image_study.items():
        if image in measured:
            images[study][0] += 1
            images[study][1] += image in refused
    return {
        study: (c, k, images[study][0], images[study][1])
        for study, (c, k) in crops.items()
        if c > 0
    }


def load_pool(name: str, runs: Sequence[Path], bundle: ModelBundle, foreign: bool) -> StudyPool:
    """The studies of ``runs`` pooled (each run's studies its own: two runs never share one),
    each run checked against ``bundle`` (:func:`check_scanned_with`).

    Raises
    ------
    UsageError
        When the bundle has no domain guard, a run was scanned with another model or guard, or
        the runs hold no study with a crop with a domain verdict.
    InputFileError
        As :func:`read_run`.
    """
    guard = bundle.card.guard
    if guard is None:
        raise UsageError(f"{bundle.path} has no domain guard; fit one with tlaudit guard")
    rows: list[tuple[int, int, int, int]] = []
    for run in runs:
        if not check_scanned_with(run, bundle):
            logger.warning(
                "%s has no run journal: cannot check it was scanned with %s", run, bundle.path
            )
        rows += read_run(run, guard).values()
    if not rows:
        where = ", ".join(str(p) for p in runs)
        raise UsageError(
            f"{name} ({where}): no study has a classified vertebra with a domain verdict; "
            "give run folders of scans with this guarded bundle"
        )
    table = np.array(rows, dtype=np.int64)
    return StudyPool(name, foreign, tuple(runs), table[:, 0], table[:, 1], table[:, 2], table[:, 3])


def draw_rates(
    pools: Sequence[StudyPool],
    guard: DomainGuard,
    sizes: Sequence[int],
    draws: int,
    seed: int,
) -> list[list[SizeRates]]:
    """Per pool, per size: the share of ``draws`` archives of that many studies, drawn with
    replacement from the pool's whole studies, that each archive rule marks.

    One :func:`numpy.random.default_rng` of ``seed`` draws every archive, pool after pool and
    size after size (``integers(0, studies, (draws, size))``), so a seed gives the same archives
    for the same pools in the same order. Each archive is judged by
    :func:`auditor.scan.pipeline.domain_check` with ``guard`` (the same archive drawn twice is
    judged once).
    """
    from auditor.scan.pipeline import domain_check  # torch, with the scan

    rng = np.random.default_rng(seed)
    result: list[list[SizeRates]] = []
    for pool in pools:
        table = np.stack([pool.crops, pool.crops_out, pool.images, pool.images_out], axis=1)
        verdicts: dict[tuple[int, ...], tuple[bool, bool, bool]] = {}
        per_size: list[SizeRates] = []
        for size in sizes:
            picks = rng.integers(0, pool.studies, (draws, size))
            marked = np.zeros((draws, 3), dtype=bool)
            for i, row in enumerate(picks):
                key = tuple(sorted(row.tolist()))
                if key not in verdicts:
                    drawn = table[row]
                    check = domain_check(
                        guard,
                        zip(drawn[:, 0].tolist(), drawn[:, 1].tolist(), strict=True),
                        int(drawn[:, 2].sum()),
                        int(drawn[:, 3].sum()),
                    )
                    verdicts[key] = (check.share_rule, check.count_rule, check.out_of_domain)
                marked[i] = verdicts[key]
            share, count, either = marked.mean(axis=0).tolist()
            per_size.append(SizeRates(size, draws, share, count, either))
        result.append(per_size)
    return result


def parse_sizes(text: str) -> tuple[int, ...]:
    """Archive sizes from ``"1,3,5"``: positive whole numbers, comma-separated.

    Raises
    ------
    UsageError
        When an entry is not a positive whole number, or there is none.
    """
    sizes: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise UsageError(
                f"--sizes {text!r}: {part!r} is not a positive whole number; expected sizes "
                "such as 1,3,5,10"
            )
        sizes.append(int(part))
    return tuple(sizes)


def _read_image_check(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """The images ``image_check.csv`` refused and those it measured (none without the file)."""
    if not path.is_file():
        return frozenset(), frozenset()
    refused: set[str] = set()
    measured: set[str] = set()
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            _require_columns(path, reader.fieldnames, IMAGE_CHECK_COLUMNS)
            for row in reader:
                _number(path, reader.line_num, row, "distance", required=True)
                flag = row["out_of_distribution"]
                if flag not in ("", "yes"):
                    raise InputFileError(
                        f"{path}, line {reader.line_num}: out_of_distribution {flag!r}; expected "
                        "'yes' or empty, as the scan writes"
                    )
                measured.add(row["image"])
                if flag == "yes":
                    refused.add(row["image"])
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputFileError(
            f"{path}: not the image_check.csv of a tlaudit scan ({type(err).__name__}: {err})"
        ) from err
    return frozenset(refused), frozenset(measured)


def _require_columns(path: Path, found: Sequence[str] | None, wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in (found or ())]
    if missing:
        raise InputFileError(
            f"{path}: no column {', '.join(missing)}; expected the file a tlaudit scan writes "
            "(scan the archive again with this version)"
        )


def _number(
    path: Path, line: int, row: dict[str, str | None], column: str, required: bool = False
) -> float | None:
    """A row's number in ``column`` (None when empty and not ``required``)."""
    text = row.get(column)
    if text is None:
        raise InputFileError(f"{path}, line {line}: the row is shorter than the header")
    if text == "" and not required:
        return None
    try:
        value = float(text)
    except ValueError as err:
        raise InputFileError(
            f"{path}, line {line}: {column} {text!r} is not a number; expected the file a "
            "tlaudit scan writes"
        ) from err
    if not math.isfinite(value):
        raise InputFileError(f"{path}, line {line}: {column} {text!r} is not a finite number")
    return value
