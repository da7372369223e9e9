"""Header-only triage: is a file a lateral thoracolumbar (TL) spine radiograph?

:func:`triage_header` decides from a :class:`~auditor.records.RadiographMeta` alone; pixels
are never decoded here. The checks run in this order and the first that fails gives the reason:

1. the object has pixel data, one frame, and is greyscale;
2. with an explicit files list (``TriageRules.files``), a listed file is a candidate;
3. Modality (0008,0060) is one of ``TriageRules.modalities``: CR and DX (digital radiography)
   and RG (digitised film, which older ER archives hold). RF (fluoroscopy: cine loops, mostly
   procedures), OT/SC (secondary captures of anything), CT/MR/US/... are not radiographs of the
   kind the classifier was trained on. When Modality is blank (public research sets strip it),
   a SOP Class UID (0008,0016) of CR or Digital X-Ray Image Storage stands for CR or DX
   (:data:`SOP_CLASS_MODALITIES`), and the row says so. PNG/JPEG/TIFF carry no modality and pass
   this check;
4. with ``include_all_radiographs``, every radiograph is a candidate;
5. body region: Body Part Examined (0018,0015) names the thoracic/lumbar spine, or a keyword for
   it appears in Body Part Examined, Series Description (0008,103E), Protocol Name (0018,1030) or
   Study Description (0008,1030). A generic spine value or word (SPINE, WIRBELSAEULE, COLONNA,
   RACHIS, COLUMNA...) counts unless only cervical words (CSPINE, HWS, CERVICAL...) are found.
   For PNG/JPEG/TIFF the folder and file names play the role of descriptions;
6. view: View Position (0018,5101) LL, RL, LAT(ERAL) accepts; AP/PA rejects as frontal; oblique
   and decubitus values reject. When View Position is blank, the descriptions decide (Series
   Description, then Protocol Name, then Study Description: the first naming only a lateral or
   only a frontal view wins); with nothing either way the file is skipped as "view not recorded"
   unless ``accept_blank_view``.

Text is compared after normalisation: upper case, umlauts spelled out (Ä -> AE), accents
dropped, split at anything not a letter or digit. A keyword matches a word, or two or three
adjacent words written together ("L-SPINE" and "L SPINE" match LSPINE); spine keywords of six or
more letters also match inside a compound ("LENDENWIRBELSAEULE" contains WIRBELSAEULE).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from auditor.errors import InputFileError
from auditor.records import RadiographMeta
from auditor.vocab import GREYSCALE_PHOTOMETRIC, FileStatus


class Reason(str, Enum):
    """Why a file got its status; the value is the label counted in summaries."""

    # candidates
    LATERAL_TL = "lateral thoracolumbar view"
    LATERAL_TL_BLANK_VIEW = "thoracolumbar, view not recorded (accepted)"
    TL_BLANK_BODY_PART = "lateral view, body part not recorded (accepted)"
    LISTED = "listed in the files list"
    ALL_RADIOGRAPHS = "radiograph (all radiographs included)"
    # skipped
    NOT_LISTED = "not in the files list"
    NOT_AN_IMAGE = "not an image"
    NO_PIXEL_DATA = "no pixel data"
    MULTI_FRAME = "multi-frame image"
    COLOUR = "colour image"
    NOT_RADIOGRAPH = "not a radiograph modality"
    OTHER_BODY_PART = "other body part"
    NO_BODY_PART = "body part not recorded"
    FRONTAL_VIEW = "frontal view"
    OTHER_VIEW = "oblique or other view"
    NO_VIEW = "view not recorded"
    SYMLINK_OUTSIDE = "symlink leaves the archive"
    SYMLINK_LOOP = "symlink loop"
    SYMLINK_ALIAS = "symlink to an entry inside the archive"
    BROKEN_SYMLINK = "broken symlink"
    SPECIAL_FILE = "not a regular file"
    # unreadable
    UNREADABLE_HEADER = "header unreadable"
    BROKEN_PIXEL_DATA = "pixel data broken"
    UNDECODABLE = "pixel data cannot be decoded"
    CANNOT_OPEN = "cannot open"
    UNEXPECTED_ERROR = "unexpected error (see log)"

    def __str__(self) -> str:
        return self.value


# Body Part Examined values (PS3.16 Annex L defined terms and common vendor spellings), compared
# with separators removed.
TL_BODY_PARTS = frozenset(
    {
        "TSPINE", "LSPINE", "TLSPINE", "LSSPINE", "THORACICSPINE", "LUMBARSPINE",
        "THORACOLUMBARSPINE", "THORACOLUMBAR", "DORSALSPINE", "LUMBOSACRALSPINE",
    }
)  # fmt: skip
GENERIC_SPINE_BODY_PARTS = frozenset({"SPINE", "WHOLESPINE", "ENTIRESPINE"})

# Thoracolumbar-specific words: English, German (LWS/BWS = Lenden-/Brustwirbelsaeule, LWK/BWK),
# French, Italian, Spanish, Portuguese, Dutch (LWK = lumbale wervelkolom).
TL_KEYWORDS = (
    "LSPINE", "TSPINE", "TLSPINE", "LSSPINE", "THORACICSPINE", "DORSALSPINE", "LUMBARSPINE",
    "LUMBAR", "LUMBOSACRAL", "THORACOLUMBAR",
    "LWS", "BWS", "LWK", "BWK", "BWSLWS", "LENDENWIRBEL", "BRUSTWIRBEL", "LUMBAL", "THORAKAL",
    "THORAKOLUMBAL",
    "LOMBAIRE", "DORSOLOMBAIRE", "RACHISDORSAL",
    "LOMBARE", "LOMBOSACRALE", "DORSOLOMBARE", "COLONNADORSALE", "RACHIDEDORSALE",
    "DORSOLUMBAR", "COLUMNADORSAL", "TORACOLUMBAR",
    "LOMBAR", "TORACOLOMBAR", "COLUNADORSAL",
    "LUMBALE", "THORACALE",
)  # fmt: skip
GENERIC_SPINE_KEYWORDS = (
    "SPINE", "WIRBELSAEULE", "WIRBELSAULE", "COLONNA", "RACHIS", "RACHIDE", "COLUMNA", "COLUNA",
    "WERVELKOLOM",
)  # fmt: skip
CERVICAL_KEYWORDS = (
    "CSPINE", "CERVICAL", "CERVICALE", "ZERVIKAL", "HWS", "HALSWIRBEL", "CERVICALSPINE",
)  # fmt: skip

LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT"})
FRONTAL_VIEWS = frozenset({"AP", "PA"})
# Oblique and decubitus (CID 4010); decubitus films are horizontal-beam frontal projections.
OTHER_VIEWS = frozenset({"LAO", "RAO", "LPO", "RPO", "LLO", "RLO", "OBL", "OBLIQUE", "LLD", "RLD"})
LATERAL_KEYWORDS = (
    "LAT", "LATERAL", "LATERALE", "LATERAAL", "LATEROLATERAL", "LATEROLATERALE", "LL", "RL",
    "LLAT", "RLAT", "SEITLICH", "SEITL", "PROFIL", "PERFIL",
)  # fmt: skip
FRONTAL_KEYWORDS = (
    "AP", "PA", "FRONTAL", "FRONTALE", "ANTEROPOSTERIOR", "POSTEROANTERIOR", "FACE",
)  # fmt: skip

DEFAULT_MODALITIES = frozenset({"CR", "DX", "RG"})

#: The modality a SOP Class UID (PS3.4 B.5) implies, with the class's name, for files whose
#: Modality is blank: Computed Radiography Image Storage and Digital X-Ray Image Storage (for
#: presentation and for processing).
SOP_CLASS_MODALITIES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "1.2.840.10008.5.1.4.1.1.1": ("CR", "Computed Radiography Image Storage"),
        "1.2.840.10008.5.1.4.1.1.1.1": ("DX", "Digital X-Ray Image Storage - For Presentation"),
        "1.2.840.10008.5.1.4.1.1.1.1.1": ("DX", "Digital X-Ray Image Storage - For Processing"),
    }
)

_SUBSTRING_MIN = 6  # keywords this long also match inside compound words


def normalise_words(text: str) -> tuple[str, ...]:
    """Upper-case words of ``text`` with umlauts spelled out and accents removed."""
    upper = text.upper()
    for umlaut, spelled in (("Ä", "AE"), ("Ö", "OE"), ("Ü", "UE")):
        upper = upper.replace(umlaut, spelled)
    plain = "".join(
        ch for ch in unicodedata.normalize("NFKD", upper) if not unicodedata.combining(ch)
    )
    return tuple(word for word in re.split(r"[^A-Z0-9]+", plain) if word)


def _compact(keyword: str) -> str:
    return "".join(normalise_words(keyword))


def find_keyword(text: str, keywords: Iterable[str], *, substrings: bool = False) -> str | None:
    """Return the first of ``keywords`` found in ``text`` (see the module docstring), or None."""
    words = normalise_words(text)
    if not words:
        return None
    joined = set(words)
    for size in (2, 3):
        joined.update("".join(words[i : i + size]) for i in range(len(words) - size + 1))
    for keyword in keywords:
        key = _compact(keyword)
        if not key:
            continue
        if key in joined:
            return keyword
        if substrings and len(key) >= _SUBSTRING_MIN and any(key in word for word in words):
            return keyword
    return None


@dataclass(frozen=True)
class TriageRules:
    """What counts as a candidate lateral TL-spine radiograph. Build variants with
    :func:`dataclasses.replace` or :meth:`widened`; the CLI builds one from its options.

    Attributes
    ----------
    modalities
        Accepted Modality values (upper case).
    tl_keywords, generic_spine_keywords, cervical_keywords
        Words that place the image on the thoracolumbar spine, on the spine in general, or on
        the cervical spine only.
    lateral_keywords, frontal_keywords
        Words in descriptions that decide the view when View Position is blank.
    accept_blank_view
        Accept a TL-spine image whose view is recorded nowhere.
    accept_blank_body_part
        Accept a lateral radiograph whose body region is recorded nowhere.
    include_all_radiographs
        Every single-frame greyscale radiograph of an accepted modality is a candidate.
    files
        When set, exactly these archive-relative POSIX paths are candidates (if they are
        readable single-frame greyscale images); every other file is skipped.
    """

    modalities: frozenset[str] = DEFAULT_MODALITIES
    tl_keywords: tuple[str, ...] = TL_KEYWORDS
    generic_spine_keywords: tuple[str, ...] = GENERIC_SPINE_KEYWORDS
    cervical_keywords: tuple[str, ...] = CERVICAL_KEYWORDS
    lateral_keywords: tuple[str, ...] = LATERAL_KEYWORDS
    frontal_keywords: tuple[str, ...] = FRONTAL_KEYWORDS
    accept_blank_view: bool = False
    accept_blank_body_part: bool = False
    include_all_radiographs: bool = False
    files: frozenset[str] | None = field(default=None)

    def __post_init__(self) -> None:
        # Coerce at the boundary so that comparisons never depend on the caller's spelling.
        object.__setattr__(
            self, "modalities", frozenset(m.strip().upper() for m in self.modalities)
        )
        if self.files is not None:
            object.__setattr__(self, "files", frozenset(normalise_relpath(p) for p in self.files))

    def widened(
        self, *, tl_keywords: Iterable[str] = (), lateral_keywords: Iterable[str] = ()
    ) -> TriageRules:
        """Return rules that also accept the given body-part and lateral keywords."""
        return replace(
            self,
            tl_keywords=self.tl_keywords + tuple(tl_keywords),
            lateral_keywords=self.lateral_keywords + tuple(lateral_keywords),
        )


@dataclass(frozen=True)
class TriageDecision:
    """Outcome of triage for one file: status, countable reason, and the detail a person reads."""

    status: FileStatus
    reason: Reason
    detail: str


def normalise_relpath(path: str) -> str:
    """Archive-relative path in the form the walk reports (POSIX, no leading ``./``)."""
    text = str(path).strip().replace("\\", "/")
    return PurePosixPath(text).as_posix().lstrip("/") if text else text


def load_file_list(path: Path) -> frozenset[str]:
    """Read an explicit list of archive-relative paths, one per line (``#`` starts a comment).

    Raises
    ------
    InputFileError
        When the list cannot be read or names no file.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(f"files list {path}: cannot read it ({err})") from err
    entries = {
        normalise_relpath(line.split("#", 1)[0])
        for line in text.splitlines()
        if line.split("#", 1)[0].strip()
    }
    if not entries:
        raise InputFileError(f"files list {path}: no paths in it; expected one path per line")
    return frozenset(entries)


def _skip(reason: Reason, detail: str) -> TriageDecision:
    return TriageDecision(FileStatus.SKIPPED, reason, detail)


def _candidate(reason: Reason, detail: str) -> TriageDecision:
    return TriageDecision(FileStatus.CANDIDATE, reason, detail)


def _image_problem(meta: RadiographMeta) -> TriageDecision | None:
    if not meta.has_pixels:
        return _skip(Reason.NO_PIXEL_DATA, f"no pixel data (modality {meta.modality or 'blank'})")
    if meta.pixel_data_error:
        return TriageDecision(
            FileStatus.UNREADABLE, Reason.BROKEN_PIXEL_DATA, meta.pixel_data_error
        )
    if meta.frames > 1:
        return _skip(Reason.MULTI_FRAME, f"{meta.frames} frames")
    if meta.samples_per_pixel != 1 or meta.photometric not in GREYSCALE_PHOTOMETRIC:
        return _skip(
            Reason.COLOUR, f"{meta.photometric or 'blank'}, {meta.samples_per_pixel} samples/pixel"
        )
    return None


def _texts(meta: RadiographMeta, relpath: str) -> list[tuple[str, str]]:
    """(field name, text) pairs the keyword rules read, most specific first."""
    if meta.file_format != "dicom":
        return [("path", " ".join(PurePosixPath(relpath).with_suffix("").parts))]
    return [
        ("series description", meta.series_description),
        ("protocol name", meta.protocol_name),
        ("study description", meta.study_description),
    ]


def _body_region(
    meta: RadiographMeta, texts: list[tuple[str, str]], rules: TriageRules
) -> TriageDecision | None:
    """None when the image shows the TL spine, else the skip decision."""
    body_part = meta.body_part
    compact = _compact(body_part)
    if compact in TL_BODY_PARTS:
        return None
    sources = [("body part", body_part), *texts]
    if any(find_keyword(text, rules.tl_keywords, substrings=True) for _, text in sources):
        return None
    generic = compact in GENERIC_SPINE_BODY_PARTS or any(
        find_keyword(text, rules.generic_spine_keywords, substrings=True) for _, text in sources
    )
    cervical = next(
        (
            f"{name} {text!r}"
            for name, text in sources
            if find_keyword(text, rules.cervical_keywords, substrings=True)
        ),
        None,
    )
    if generic and not cervical:
        return None
    if cervical:
        return _skip(Reason.OTHER_BODY_PART, f"cervical spine ({cervical})")
    paired = f"; Image Laterality {meta.laterality}" if meta.laterality in ("L", "R") else ""
    if body_part:
        return _skip(Reason.OTHER_BODY_PART, f"body part {body_part!r}{paired}")
    described = "; ".join(f"{name} {text!r}" for name, text in texts if text)
    if rules.accept_blank_body_part:
        return None
    return _skip(
        Reason.NO_BODY_PART,
        f"no thoracolumbar spine in the header ({described or 'no descriptions'}){paired}",
    )


def _view(
    meta: RadiographMeta, texts: list[tuple[str, str]], rules: TriageRules
) -> tuple[bool | None, str]:
    """(True lateral / False rejected / None unknown, detail)."""
    view = _compact(meta.view_position)
    if view in LATERAL_VIEWS:
        return True, f"view position {meta.view_position}"
    if view in FRONTAL_VIEWS:
        return False, f"frontal: view position {meta.view_position}"
    if view:
        if view in OTHER_VIEWS:
            return False, f"view position {meta.view_position}"
        if any(find_keyword(text, rules.lateral_keywords) for _, text in texts):
            return True, f"view position {meta.view_position!r}, lateral keyword in descriptions"
        return False, f"view position {meta.view_position!r}"
    for name, text in texts:
        lateral = find_keyword(text, rules.lateral_keywords)
        frontal = find_keyword(text, rules.frontal_keywords)
        if lateral and not frontal:
            return True, f"{name} {text!r} ({lateral})"
        if frontal and not lateral:
            return False, f"frontal: {name} {text!r} ({frontal})"
    return None, "no view position, no lateral or frontal keyword"


def triage_header(meta: RadiographMeta, relpath: str, rules: TriageRules) -> TriageDecision:
    """Decide from header fields alone whether a file is a candidate lateral TL-spine view.

    Parameters
    ----------
    meta
        Header of the file (:func:`auditor.io.radiograph.read_header`).
    relpath
        Archive-relative POSIX path (used by the files list and, for PNG/JPEG/TIFF, as text).
    rules
        The triage rules.

    Returns
    -------
    TriageDecision
        Status, reason and a detail naming the header values that decided.
    """
    problem = _image_problem(meta)
    if problem is not None:
        return problem
    if rules.files is not None:
        if normalise_relpath(relpath) in rules.files:
            return _candidate(Reason.LISTED, "listed")
        return _skip(Reason.NOT_LISTED, "not listed")
    is_dicom = meta.file_format == "dicom"
    modality, implied = meta.modality.strip(), ""
    if is_dicom and not modality and meta.sop_class_uid in SOP_CLASS_MODALITIES:
        modality, sop_class = SOP_CLASS_MODALITIES[meta.sop_class_uid]
        implied = f"; modality blank, {modality} from the SOP Class ({sop_class})"
    if is_dicom and modality not in rules.modalities:
        accepted = ", ".join(sorted(rules.modalities))
        return _skip(
            Reason.NOT_RADIOGRAPH, f"modality {modality or 'blank'!s} (accepted: {accepted})"
        )
    decision = _triage_region_and_view(meta, relpath, rules, modality)
    return replace(decision, detail=decision.detail + implied) if implied else decision


def _triage_region_and_view(
    meta: RadiographMeta, relpath: str, rules: TriageRules, modality: str
) -> TriageDecision:
    """Checks 4 to 6 of the module docstring, for a radiograph of an accepted modality."""
    if rules.include_all_radiographs:
        return _candidate(Reason.ALL_RADIOGRAPHS, f"modality {modality or meta.file_format}")
    texts = _texts(meta, relpath)
    region = _body_region(meta, texts, rules)
    if region is not None:
        return region
    lateral, view_detail = _view(meta, texts, rules)
    where = f"body part {meta.body_part!r}" if meta.body_part else "descriptions"
    if lateral is True:
        reason = Reason.LATERAL_TL
        if not meta.body_part and not any(
            find_keyword(t, rules.tl_keywords + rules.generic_spine_keywords, substrings=True)
            for _, t in texts
        ):
            reason = Reason.TL_BLANK_BODY_PART
        return _candidate(reason, f"{where}; {view_detail}")
    if lateral is False:
        frontal = view_detail.startswith("frontal")
        return _skip(Reason.FRONTAL_VIEW if frontal else Reason.OTHER_VIEW, view_detail)
    if rules.accept_blank_view:
        return _candidate(Reason.LATERAL_TL_BLANK_VIEW, f"{where}; {view_detail}")
    return _skip(Reason.NO_VIEW, view_detail)
