"""Locate the data files that ship beside the code: HTML templates and model bundles.

In a source checkout (or an editable install) they live at the top of the repository
(``templates/``, ``models/``); a wheel built by ``pip install .`` maps them to ``auditor/_data/``
(see ``pyproject.toml``). :func:`resource_path` is the one place that knows both layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from auditor.errors import TlauditError

ResourceKind = Literal["templates", "models"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(kind: ResourceKind) -> Path:
    """Return the directory holding shipped resources of ``kind``.

    Raises
    ------
    TlauditError
        When neither the installed nor the source-tree location exists.
    """
    for candidate in (_PACKAGE_DIR / "_data" / kind, _PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise TlauditError(
        f"cannot find the bundled {kind}/ directory (looked in {_PACKAGE_DIR / '_data' / kind} "
        f"and {_PACKAGE_DIR.parent / kind}); reinstall tlaudit"
    )


def resource_path(kind: ResourceKind, name: str, explicit: Path | None = None) -> Path:
    """Resolve a shipped resource, or an explicit user path that overrides it.

    Parameters
    ----------
    kind
        ``"templates"`` or ``"models"``.
    name
        File or folder name inside that resource directory (used when ``explicit`` is None).
    explicit
        A path the user gave; returned as is when it exists.

    Raises
    ------
    TlauditError
        When the explicit path or the shipped resource does not exist.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise TlauditError(f"{kind[:-1]} file {path} does not exist")
        return path
    path = resource_dir(kind) / name
    if not path.exists():
        raise TlauditError(f"bundled {kind[:-1]} {name!r} is missing from {resource_dir(kind)}")
    return path
