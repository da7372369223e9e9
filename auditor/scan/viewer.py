"""Links from the reports to a PACS viewer (``scan --viewer-url``).

A QA team reviews in its PACS viewer, not in files on the machine that ran the scan. A template
such as ``https://pacs.example/ohif/viewer?StudyInstanceUIDs={study_uid}`` (OHIF) or
``https://pacs.example/ui/app/#/filtered-studies?StudyInstanceUID={study_uid}`` (Orthanc Explorer
2) is filled with each study's Study Instance UID, URL-encoded, and the workbook's image link
points there. Only http and https URLs with exactly the one field are accepted; a pseudonymised
scan refuses a template, because the link would carry the study's real UID.
"""

from __future__ import annotations

import string
from urllib.parse import quote, urlsplit

from auditor.errors import UsageError

FIELD = "study_uid"


def check_viewer_url(template: str, pseudonymise: bool) -> None:
    """Refuse a template tlaudit would not fill safely.

    Raises
    ------
    UsageError
        When ``template`` is not an http(s) URL, has a field other than ``{study_uid}`` (or not
        that one), or the scan is pseudonymised.
    """
    if not template:
        return
    if pseudonymise:
        raise UsageError(
            "--viewer-url with --pseudonymise: the links would carry each study's real Study "
            "Instance UID, which pseudonymised reports hide"
        )
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise UsageError(f"--viewer-url {template!r}: {err}") from None
    scheme = urlsplit(template.replace("{" + FIELD + "}", "x")).scheme
    if scheme not in ("http", "https") or fields != {FIELD}:
        raise UsageError(
            f"--viewer-url {template!r}: expected an http(s) URL with {{{FIELD}}} and no other "
            "field, e.g. https://pacs.example/ohif/viewer?StudyInstanceUIDs={study_uid}"
        )


def viewer_link(template: str, study_uid: str) -> str:
    """``template`` with the study's UID, URL-encoded (a hostile header stays inside its
    parameter)."""
    return template.replace("{" + FIELD + "}", quote(study_uid, safe=""))
