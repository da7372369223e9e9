"""The scan's self-contained HTML report, ``audit.html``.

data (:class:`~auditor.records.AuditReport`) -> context (this module) -> template
(``templates/audit.html.j2`` extending ``base.html.j2``, autoescape on) -> one file written
atomically. The page works offline: CSS and JavaScript are inline, images are base64 data URIs, and
its Content-Security-Policy forbids any fetch.

It stays openable for a big archive: images are embedded only for the first ``embed_limit`` studies
of the flagged queue (later ones link to the JPEG files in ``thumbnails/`` beside the report), and
the vertebra, file and error tables show at most ``table_limit`` rows each (the most suspicious
vertebrae first), with a note pointing at ``audit.xlsx`` and ``findings.csv`` for the rest.

The page opens on the flagged queue (the run summary follows it), fits a 1,024 px window (long
UIDs and paths wrap inside fixed-layout tables), gives each case an anchor ``#case-<rank>`` and
moves between cases with the j / k (or n / p) keys. A banner above the queue, when given, warns
that the model is not validated on patients (see :func:`model_banner`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from auditor.files import strip_bidi, write_text_atomic
from auditor.records import (
    OUT_OF_DISTRIBUTION,
    AuditReport,
    StudyFinding,
    StudyStatus,
    VertebraFinding,
)
from auditor.reports.limits import DEFAULT_EMBED_LIMIT, DEFAULT_TABLE_LIMIT
from auditor.resources import resource_dir
from auditor.vocab import Level

#: The banner for a model whose card says ``training_data: "synthetic"``.
SYNTHETIC_MODEL_BANNER = (
    "This model was trained on synthetic radiographs only and is not validated on patients: "
    "treat every flag as a prompt for review, not a finding."
)


def model_banner(training_data: str) -> str:
    """The warning banner for a model card's ``training_data`` ("" when none is needed).

    Parameters
    ----------
    training_data
        :attr:`~auditor.model.bundle.ModelCard.training_data`: "synthetic", "clinical" or "".

    Returns
    -------
    str
        :data:`SYNTHETIC_MODEL_BANNER` for "synthetic", otherwise "".
    """
    return SYNTHETIC_MODEL_BANNER if training_data == "synthetic" else ""


@dataclass(frozen=True)
class _StatusLabel:
    label: str
    css: str


def _shown(value: Any) -> Any:
    """Every value a template prints, as it is stored: no bidirectional control can reorder it
    on screen (:func:`auditor.files.strip_bidi`); markup a writer built stays markup."""
    if isinstance(value, Markup):
        return Markup(strip_bidi(str(value)))
    if isinstance(value, str):
        return strip_bidi(value)
    return value


def template_environment(templates: Path | None = None) -> Environment:
    """A Jinja environment over the shipped templates, with autoescape always on and every
    printed value stripped of bidirectional controls."""
    folder = templates if templates is not None else resource_dir("templates")
    return Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_shown,
    )


def _css(status: StudyStatus) -> str:
    return "status-" + "".join(c if c.isalnum() else "-" for c in status.value).replace("--", "-")


def _data_uri(path: Path) -> str:
    if not path.is_file():
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _queue_row(rank: int, study: StudyFinding, run_dir: Path, embed: bool) -> dict[str, Any]:
    heatmaps = []
    for lv in study.levels:
        if not lv.heatmap:
            continue
        heatmaps.append(
            {
                "level": lv.level.value,
                "probability": lv.probability,
                "src": _data_uri(run_dir / lv.heatmap) if embed else "",
                "link": "" if embed else lv.heatmap,
            }
        )
    radiograph = study.radiograph
    return {
        "rank": rank,
        "status": study.status.value,
        "status_text": study.status_text,
        "status_rank": study.status.rank,
        "status_class": _css(study.status),
        "priority": study.flag.priority,
        "max_probability": study.max_probability,
        "levels": " ".join(level.value for level in study.flag.positive_levels),
        "unreported": ", ".join(level.value for level in study.flag.unreported_levels),
        "level_probs": [
            {"level": lv.level.value, "probability": lv.probability, "positive": lv.positive}
            for lv in study.levels
        ],
        "read": study.read_text,
        "impression": study.read.impression if study.read else "",
        "patient_id": study.patient_id,
        "patient_name": study.patient_name,
        "accession": study.accession_number,
        "study_date": study.study_date,
        "key": study.key,
        "description": study.description,
        "image": study.images[0] if study.images else "",
        # the PACS viewer's URL for the study (scan --viewer-url), "" without one
        "viewer": study.image_path if study.image_path.startswith(("http://", "https://")) else "",
        "radiograph_src": _data_uri(run_dir / radiograph) if (embed and radiograph) else "",
        "radiograph_link": "" if embed else radiograph,
        "heatmaps": heatmaps,
    }


def _vertebra_row(v: VertebraFinding) -> dict[str, Any]:
    if v.probability is None:
        call, probability, prob_sort = "error", "", "-1"
    else:
        call = "positive" if v.positive else "negative"
        probability, prob_sort = f"{v.probability:.3f}", f"{v.probability:.6f}"
    shown = f"{call}; {OUT_OF_DISTRIBUTION}" if v.out_of_distribution else call
    return {
        "study": v.study,
        "image": v.image,
        "level": v.level.value,
        "probability": probability,
        "prob_sort": prob_sort,
        "call": call,
        "call_shown": shown,
        "status": v.study_status.value,
        "reported": {None: "", True: "yes", False: "no"}[v.reported],
        "box": "({:.0f}, {:.0f})-({:.0f}, {:.0f})".format(*v.box),
        "source": v.box_source + ("" if v.box_confidence is None else f" ({v.box_confidence:.2f})"),
        "error": v.error,
    }


def _cap_note(shown: int, total: int, where: str) -> str:
    if shown >= total:
        return ""
    return f"Showing {shown} of {total} rows; the full table is in {where}."


def build_context(
    report: AuditReport,
    run_dir: Path,
    embed_limit: int = DEFAULT_EMBED_LIMIT,
    table_limit: int = DEFAULT_TABLE_LIMIT,
    *,
    banner: str = "",
    validation: str = "",
) -> dict[str, Any]:
    """Turn the report into the template's context (plain values; the template escapes them).

    ``banner`` is shown, escaped, above the flagged queue when non-empty; ``validation`` (the
    model's validation status) ends the header's subtitle.
    """
    queue = [
        _queue_row(rank, study, run_dir, embed=rank <= embed_limit)
        for rank, study in enumerate(report.studies, start=1)
    ]
    # The most suspicious vertebrae first, so a capped table still shows what matters.
    ranked = sorted(
        report.vertebrae,
        key=lambda v: (
            -(v.probability if v.probability is not None else 2.0),
            v.study,
            v.image,
            v.level.order,
        ),
    )
    n_embedded = min(embed_limit, len(report.studies))
    queue_note = ""
    if n_embedded < len(report.studies):
        queue_note = (
            f"Images are embedded for the first {n_embedded} studies; the others link to the "
            "files in thumbnails/ beside this report (keep the folder with the report)."
        )
    return {
        "title": report.title,
        "banner": banner,
        "reads_banner": report.reads_check.banner() if report.reads_check else "",
        "domain_banner": report.domain.banner() if report.domain else "",
        "subtitle": f"{len(report.studies)} flagged studies; {len(report.vertebrae)} vertebrae"
        + (f"; model {validation}" if validation else ""),
        "summary": list(report.summary),
        "status_counts": [
            (_StatusLabel(status.value, _css(status)), count)
            for status, count in report.status_counts
        ],
        "threshold": report.threshold,
        "queue": queue,
        "queue_note": queue_note,
        "flag_statuses": [status.value for status in StudyStatus if status.flagged],
        "all_statuses": [status.value for status in StudyStatus],
        "levels": [level.value for level in Level],
        "vertebrae": [_vertebra_row(v) for v in ranked[:table_limit]],
        "n_vertebrae": len(report.vertebrae),
        "vertebra_note": _cap_note(
            min(table_limit, len(ranked)), len(ranked), "audit.xlsx (Vertebrae) and findings.csv"
        ),
        "files": list(report.files[:table_limit]),
        "n_files": len(report.files),
        "file_note": _cap_note(
            min(table_limit, len(report.files)), len(report.files), "audit.xlsx (Files)"
        ),
        "errors": list(report.errors[:table_limit]),
        "n_errors": len(report.errors),
        "error_note": _cap_note(
            min(table_limit, len(report.errors)), len(report.errors), "audit.xlsx (Errors)"
        ),
    }


def write_html(
    report: AuditReport,
    run_dir: Path,
    target: Path,
    embed_limit: int = DEFAULT_EMBED_LIMIT,
    table_limit: int = DEFAULT_TABLE_LIMIT,
    *,
    banner: str = "",
    validation: str = "",
) -> None:
    """Render ``audit.html.j2`` for ``report`` and write it atomically to ``target``.

    Parameters
    ----------
    report
        The scan's findings.
    run_dir
        Run directory; thumbnail paths in ``report`` are relative to it.
    target
        Path of the HTML file (normally ``run_dir / "audit.html"``).
    embed_limit
        Number of flagged studies whose images are embedded.
    table_limit
        Most rows shown in each of the vertebra, file and error tables.
    banner
        Warning shown at the top of the page, e.g. ``model_banner(card.training_data)``; none
        when empty.
    validation
        The model card's validation status (:meth:`~auditor.model.bundle.ModelCard.
        validation_status`), shown in the page's header; none when empty.
    """
    context = build_context(
        report, run_dir, embed_limit, table_limit, banner=banner, validation=validation
    )
    html = template_environment().get_template("audit.html.j2").render(**context)
    write_text_atomic(target, html)
