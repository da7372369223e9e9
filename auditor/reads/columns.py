"""Which column of a reads export holds what: the study keys, the report text and the structured
fracture columns.

A column is recognised by its name, compared without case, accents, spaces and punctuation
(``Study Instance UID``, ``study_instance_uid`` and ``StudyInstanceUID`` are one name), against
the common export names of :data:`ALIASES` in English, German, French, Italian and Spanish. The
user names any column the export calls otherwise (``--reads-column text=Befundtext``, repeatable,
or a mapping file of such lines, :func:`read_mapping_file`); a role the user names is never
guessed. The roles:

``accession_number``, ``study_uid``, ``image``
    The study keys (at least one is needed); ``key`` names a key column whose kind is decided by
    its values (DICOM UIDs, digits and dots, are Study Instance UIDs, anything else accession
    numbers).
``patient_id``, ``study_date``
    Shown with the read; not used to match.
``text``
    The report text (several columns, such as findings and impression, are read as one text,
    each a paragraph). Without a user mapping the first matching name of :data:`ALIASES` wins.
``fracture_reported``, ``reported_levels``
    The structured columns: yes/no (:data:`YES`, :data:`NO`) and the levels, ``;``-separated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import InputFileError, UsageError
from auditor.reads.rules import fold

ROLES = (
    "accession_number",
    "study_uid",
    "image",
    "patient_id",
    "study_date",
    "text",
    "fracture_reported",
    "reported_levels",
)
KEY_ROLES = ("study_uid", "accession_number", "image")
#: Short names a user may give for a role (``--reads-column acc=AccNr``).
ROLE_SYNONYMS = {
    "accession": "accession_number",
    "acc": "accession_number",
    "uid": "study_uid",
    "study_instance_uid": "study_uid",
    "patient": "patient_id",
    "date": "study_date",
    "report": "text",
    "report_text": "text",
    "fracture": "fracture_reported",
    "levels": "reported_levels",
    "key": "key",
}


def _names(words: str) -> tuple[str, ...]:
    return tuple(words.split())


#: Export column names per role, most specific first, as :func:`normalise` leaves them.
ALIASES: Mapping[str, tuple[str, ...]] = {
    "accession_number": _names(
        "accessionnumber accession accessionno accessionnr accno acc 00080050 accessionid "
        "examnumber examid orderid ordernumber zugangsnummer auftragsnummer "
        "untersuchungsnummer anforderungsnummer numerodacces numeroacces nacces numerodexamen "
        "numerodiaccesso numeroaccesso numeroaccettazione nesame numerodeacceso numeroacceso "
        "nacceso numerodeestudio"
    ),
    "study_uid": _names(
        "studyinstanceuid studyuid studyinstance suid 0020000d studienuid studieninstanzuid "
        "uidetude uiddeletude uidstudio uiddellostudio uidestudio uiddelestudio"
    ),
    "image": _names("image imagepath imagefile bild bildpfad fichierimage"),
    "patient_id": _names(
        "patientid patid pid mrn patientnumber 00100020 patientenid patientennummer patnr "
        "idpatient ipp numeropatient idpaziente codicepaziente idpaciente nhc numerohistoria"
    ),
    "study_date": _names(
        "studydate examdate date 00080020 untersuchungsdatum datum studiendatum dateexamen "
        "datedelexamen dateetude dataesame data fecha fechaestudio fechaexamen"
    ),
    "text": _names(
        "report reporttext text fulltext reportbody findings impression conclusion result "
        "befundtext befund bericht beurteilung comptesrendu compterendu texte resultat "
        "referto testoreferto conclusione informe textoinforme hallazgos conclusiones"
    ),
    "fracture_reported": _names(
        "fracturereported fracture fractured fractureyn fraktur frakturjanein frattura "
        "fractura fracturereportedyesno"
    ),
    "reported_levels": _names(
        "reportedlevels fracturelevels fracturedlevels levels level frakturhohe hohe etage "
        "etages niveau niveaux livello livelli nivel niveles"
    ),
}

_UID = re.compile(r"\d+(?:\.\d+){2,}")


def normalise(name: str) -> str:
    """A column name without case, accents, spaces or punctuation."""
    return re.sub(r"[^0-9a-z]", "", fold(name).lower())


def role_name(text: str) -> str:
    """The role a user wrote (``text``, ``acc``, ``key``...), as :data:`ROLES` names it.

    Raises
    ------
    UsageError
        For a role tlaudit does not know.
    """
    key = text.strip().lower().replace("-", "_")
    key = ROLE_SYNONYMS.get(key, key)
    if key not in ROLES and key != "key":
        known = ", ".join((*ROLES, "key"))
        raise UsageError(f"unknown reads column role {text!r}; expected one of {known}")
    return key


def parse_mapping(items: Iterable[str], source: str = "--reads-column") -> dict[str, list[str]]:
    """``role=Column`` items as role -> column names (a role may be given several times).

    Raises
    ------
    UsageError
        For an item without ``=``, an unknown role or an empty column name.
    """
    mapping: dict[str, list[str]] = {}
    for item in items:
        role, sep, column = item.partition("=")
        if not sep or not column.strip():
            raise UsageError(f"{source}: expected role=Column, got {item!r}")
        mapping.setdefault(role_name(role), []).append(column.strip())
    return mapping


def read_mapping_file(path: Path) -> dict[str, list[str]]:
    """A mapping file: JSON ``{"text": "Befundtext", "accession_number": ["AccNr"]}`` or lines
    ``role=Column`` (blank lines and lines starting with ``#`` ignored).

    Raises
    ------
    InputFileError
        When the file is missing or unreadable, or holds an unknown role.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise InputFileError(f"reads column mapping {path} does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(f"reads column mapping {path} cannot be read: {err}") from err
    try:
        if text.lstrip().startswith("{"):
            document = json.loads(text)
            items = [
                f"{role}={column}"
                for role, value in document.items()
                for column in ([value] if isinstance(value, str) else value)
            ]
        else:
            items = [
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
        return parse_mapping(items, source=str(path))
    except (json.JSONDecodeError, AttributeError, TypeError, UsageError) as err:
        raise InputFileError(f"reads column mapping {path}: {err}") from err


@dataclass(frozen=True)
class ColumnMap:
    """Role -> indices of the header's columns, and how each was found (``user`` or
    ``recognised``)."""

    columns: Mapping[str, tuple[int, ...]]
    header: tuple[str, ...]
    found_by: Mapping[str, str]

    def __contains__(self, role: str) -> bool:
        return bool(self.columns.get(role))

    def first(self, role: str) -> int | None:
        indices = self.columns.get(role, ())
        return indices[0] if indices else None

    def describe(self) -> list[str]:
        """One line per mapped role: ``text <- Befundtext (user)``."""
        return [
            f"{role} <- {', '.join(self.header[k] for k in self.columns[role])} "
            f"({self.found_by[role]})"
            for role in ROLES
            if role in self
        ]


def map_columns(
    header: Sequence[str],
    user: Mapping[str, Sequence[str]] | None = None,
    key_values: Mapping[int, Sequence[str]] | None = None,
    path: Path | None = None,
) -> ColumnMap:
    """Decide which column holds each role.

    Parameters
    ----------
    header
        The export's column names as written.
    user
        Role -> column names the user gave (:func:`parse_mapping`); matched without case.
    key_values
        Some values of each column, by index, to decide a ``key`` column's kind.
    path
        The reads file, for messages.

    Raises
    ------
    InputFileError
        When a column the user named is not in the header.
    """
    where = f"reads file {path}" if path else "reads file"
    by_name = {normalise(name): k for k, name in enumerate(header) if name}
    by_exact = {name.strip().lower(): k for k, name in enumerate(header) if name}
    columns: dict[str, tuple[int, ...]] = {}
    found_by: dict[str, str] = {}
    taken: set[int] = set()
    for role, names in (user or {}).items():
        indices = []
        for name in names:
            k = by_exact.get(name.strip().lower(), by_name.get(normalise(name)))
            if k is None:
                raise InputFileError(
                    f"{where} has no column {name!r} (given for {role}); its columns are "
                    + ", ".join(repr(h) for h in header)
                )
            indices.append(k)
        if role == "key":
            values = [v for k in indices for v in (key_values or {}).get(k, ())]
            uid = bool(values) and all(_UID.fullmatch(v.strip()) for v in values if v.strip())
            role = "study_uid" if uid else "accession_number"
        columns[role] = (*columns.get(role, ()), *indices)
        found_by[role] = "user"
        taken.update(indices)
    for role in ROLES:
        if role in columns:
            continue
        for alias in ALIASES[role]:
            k = by_name.get(alias)
            if k is not None and k not in taken:
                columns[role] = (k,)
                found_by[role] = "recognised"
                taken.add(k)
                break
    return ColumnMap(columns, tuple(header), found_by)
