"""Reports of ``tlaudit evaluate``: plots, JSON, CSV, Excel and a self-contained HTML page.

data (:class:`~auditor.training.evaluate.Evaluation`) -> context (this module) -> template
(``templates/evaluate.html.j2``, extending the scan reports' ``base.html.j2``; autoescape on) ->
files written atomically with the scan reports' helpers (:mod:`auditor.reports`), so both reports
look alike and share their spreadsheet-safety rules.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers without a display

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from openpyxl import Workbook
from PIL import Image, ImageDraw

from auditor.files import atomic_path, csv_safe, write_text_atomic, write_with
from auditor.reports.cells import write_table
from auditor.reports.html import template_environment
from auditor.reports.thumbnails import heatmap_overlay
from auditor.training.evaluate import STUDY_FIGURES, Evaluation, Example
from auditor.training.intervals import MIN_COUNT, TOO_FEW, Estimate
from auditor.training.metrics import format_pct, roc

EXAMPLE_PX = 160


def _figure_png(fig: Figure, target: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return data


def plot_roc(ev: Evaluation, target: Path) -> bytes:
    """ROC curve with AUC and the bundle's operating points marked; returns the PNG bytes."""
    fpr, tpr, _ = roc(ev.labels, ev.probs)
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    auc = ev.headline.auc
    ax.plot(fpr, tpr, color="#1f4e79", lw=2, label=f"{ev.bundle.card.name} (AUC {auc.value:.3f})")
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--")
    for name, m in ev.at_points.items():
        c = m.confusion
        ax.plot(1 - c.specificity, c.sensitivity, "o", ms=7, label=f"{name} point")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title("ROC curve")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _figure_png(fig, target)


def plot_confusion(ev: Evaluation, target: Path) -> bytes:
    """Confusion matrix at the evaluation's operating point (counts and shares)."""
    m = ev.headline.confusion.as_matrix()
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(m, cmap="Blues")
    total = max(int(m.sum()), 1)
    names = (("TN", "FP"), ("FN", "TP"))
    for r in range(2):
        for c in range(2):
            colour = "white" if m[r, c] > m.max() / 2 else "black"
            ax.text(
                c,
                r,
                f"{names[r][c]} {m[r, c]}\n{100 * m[r, c] / total:.1f}%",
                ha="center",
                va="center",
                color=colour,
                fontsize=11,
            )
    ax.set_xticks([0, 1], ["no fracture", "fracture"])
    ax.set_yticks([0, 1], ["no fracture", "fracture"])
    ax.set_xlabel("model")
    ax.set_ylabel("ground truth")
    op = ev.operating_point
    ax.set_title(f"Confusion matrix ({op.name}, P >= {op.threshold:.3f})")
    return _figure_png(fig, target)


def plot_reliability(ev: Evaluation, target: Path) -> bytes:
    """Reliability diagram: observed share of fractures against mean P(fracture) per bin, with
    each bin's crop count, and the expected calibration error in the title."""
    rel = ev.reliability
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--", label="perfectly calibrated")
    xs = [b.mean_predicted for b in rel.bins]
    ys = [b.observed for b in rel.bins]
    ax.plot(xs, ys, "o-", color="#1f4e79", lw=2, label="this model")
    for b in rel.bins:
        ax.annotate(
            str(b.n),
            (b.mean_predicted, b.observed),
            fontsize=7,
            xytext=(3, -9),
            textcoords="offset points",
        )
    ax.set_xlabel("mean P(fracture) in the bin")
    ax.set_ylabel("share of fractures in the bin")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(f"Reliability (ECE {rel.ece.decimal()})", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _figure_png(fig, target)


def example_image(example: Example) -> Image.Image:
    """Crop with its heatmap overlaid and the ground-truth fracture zone outlined."""
    crop = np.clip(np.round(example.crop * 255.0), 0, 255).astype(np.uint8)
    img = heatmap_overlay(crop, example.cam).resize((EXAMPLE_PX, EXAMPLE_PX))
    if example.zone is not None:
        scale = EXAMPLE_PX / crop.shape[0]
        pts = [(float(x) * scale, float(y) * scale) for x, y in example.zone]
        ImageDraw.Draw(img).polygon(pts, outline=(255, 255, 255))
    return img


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _headline_rows(ev: Evaluation) -> list[dict[str, str]]:
    study = STUDY_FIGURES.get(ev.bundle.card.architecture, {})
    h = ev.headline
    rows = []
    for key, label, est in (
        ("accuracy", "Accuracy", h.accuracy),
        ("sensitivity", "Sensitivity", h.sensitivity),
        ("specificity", "Specificity", h.specificity),
        ("ppv", "PPV (fractures among positive calls)", h.ppv),
        ("npv", "NPV (intact among negative calls)", h.npv),
        ("auc", "AUC", h.auc),
    ):
        ref = study.get(key)
        ref_text = "" if ref is None else (f"{ref:.2f}" if key == "auc" else format_pct(ref, 0))
        value = est.decimal() if key == "auc" else est.percent()
        rows.append({"metric": label, "value": value, "study": ref_text, "method": est.method})
    if ev.localisation is not None:
        loc = ev.localisation
        rows.append(
            {
                "metric": f"Heatmap localisation ({ev.heatmap_method})",
                "value": f"{format_pct(loc.score)} ({loc.hits} of {loc.total} true positives)",
                "study": "81% (judged by surgeons)",
                "method": "",
            }
        )
        rows.append(
            {
                "metric": "Heatmap mass in the fracture zone (mean)",
                "value": f"{format_pct(loc.energy)} (the zone is {format_pct(loc.zone_share)} "
                "of the crop)",
                "study": "",
                "method": "",
            }
        )
    return rows


def _study_rows(ev: Evaluation) -> list[dict[str, str]]:
    """Per operating point: study-level figures and the QA workload, as text with intervals."""
    rows = []
    for name, st in ev.studies.items():
        rows.append(
            {
                "name": name,
                "threshold": f"{st.threshold:.4f}",
                "sensitivity": st.sensitivity.percent(),
                "specificity": st.specificity.percent(),
                "flags": st.flags_per_1000.decimal(0),
                "confirmed": st.confirmed_per_100_flags.decimal(1),
                "false_flags": st.false_flags_per_1000_clear.decimal(0),
            }
        )
    return rows


def _methods_note(ev: Evaluation) -> str:
    """One sentence naming the interval methods and the minimum-count rule."""
    return (
        "95% confidence intervals: exact (Clopper-Pearson) for proportions, at the effective "
        "sample size where several vertebrae share a patient (design effect); DeLong for the AUC "
        "(clustered by patient, logit scale); a patient bootstrap for the calibration error "
        f"({ev.reliability.n_bootstrap} resamples). A figure resting on fewer than {MIN_COUNT} "
        f"cases (its denominator, or either class for accuracy and AUC) is marked "
        f'"{TOO_FEW}".'
    )


def _group_rows(groups: dict[str, dict[str, float | int]]) -> list[dict[str, Any]]:
    """Sensitivity-by-group rows (level, AO type, grade) for the HTML template."""
    return [
        {
            "key": key,
            "detected": v["detected"],
            "total": v["total"],
            "sens": format_pct(v["sensitivity"]),
        }
        for key, v in groups.items()
    ]


def build_context(
    ev: Evaluation, roc_png: bytes, confusion_png: bytes, reliability_png: bytes
) -> dict[str, Any]:
    """Everything the HTML template shows (plain values; the template escapes them)."""
    card = ev.bundle.card
    summary = ev.data.summary()
    return {
        "title": f"tlaudit evaluation: {card.name}",
        "subtitle": (
            f"{summary['n_crops']} vertebrae from {summary['n_images']} images "
            f"({summary['n_groups']} patients/studies) in {ev.archive.name}; "
            f"operating point {ev.operating_point.name} (P >= {ev.operating_point.threshold:.3f})"
        ),
        "card_headline": card.headline(),
        "sha256": ev.bundle.sha256,
        "device": ev.device,
        "seconds": f"{ev.seconds:.1f}",
        "methods_note": _methods_note(ev),
        "headline": _headline_rows(ev),
        "confusion": ev.headline.confusion,
        "points": [
            {
                "name": name,
                "threshold": f"{card.operating_points[name].threshold:.4f}",
                "accuracy": m.accuracy.percent(),
                "sensitivity": m.sensitivity.percent(),
                "specificity": m.specificity.percent(),
                "ppv": m.ppv.percent(),
                "npv": m.npv.percent(),
                "counts": f"TN {m.confusion.tn} / FP {m.confusion.fp} / FN {m.confusion.fn} "
                f"/ TP {m.confusion.tp}",
            }
            for name, m in ev.at_points.items()
        ],
        "studies": _study_rows(ev),
        "n_studies": next(iter(ev.studies.values())).n_studies if ev.studies else 0,
        "n_fractured_studies": (next(iter(ev.studies.values())).n_fractured if ev.studies else 0),
        "ece": ev.reliability.ece.decimal(),
        "reliability_uri": _data_uri(reliability_png),
        "by_level": _group_rows(ev.by_level),
        "by_ao": _group_rows(ev.by_ao_type),
        "by_grade": _group_rows(ev.by_genant_grade),
        "roc_uri": _data_uri(roc_png),
        "confusion_uri": _data_uri(confusion_png),
        "examples": [
            {
                "kind": e.kind,
                "caption": f"{e.image} {e.level}: P = {e.prob:.3f}",
                "uri": _data_uri(_png(example_image(e))),
            }
            for e in ev.examples
        ],
        "skipped": [str(e) for e in ev.data.skipped[:200]],
        "n_skipped": len(ev.data.skipped),
    }


def _write_predictions(ev: Evaluation, target: Path) -> None:
    fields = (
        "image",
        "level",
        "label",
        "p_fracture",
        "predicted",
        "ao_type",
        "genant_grade",
        "cam_peak_in_zone",
    )
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(fields)
    for r, p, pred, zone in zip(
        ev.data.records, ev.probs, ev.predicted, ev.cam_peak_in_zone, strict=True
    ):
        writer.writerow(
            [
                csv_safe(r.image),
                r.level,
                r.label,
                f"{float(p):.6f}",
                int(pred),
                csv_safe(r.ao_type),
                "" if r.genant_grade is None else r.genant_grade,
                "" if zone is None else int(zone),
            ]
        )
    write_text_atomic(target, buf.getvalue())


_ESTIMATE_COLUMNS = (
    "Value",
    "95% CI low",
    "95% CI high",
    "Count",
    "Of",
    "Too few to estimate",
    "Interval method",
)
_PERCENT_FORMATS = {"Value": "0.0%", "95% CI low": "0.0%", "95% CI high": "0.0%"}


def _estimate_cells(est: Estimate) -> tuple[Any, ...]:
    """An estimate as workbook cells: numbers (None where not measured), its counts, its mark."""

    def number(v: float) -> float | None:
        return v if math.isfinite(v) else None

    return (
        number(est.value),
        number(est.low),
        number(est.high),
        est.count,
        est.total,
        TOO_FEW if est.too_few else "",
        est.method,
    )


def _write_excel(ev: Evaluation, target: Path) -> None:
    card = ev.bundle.card
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Summary"
    summary_rows = [
        ("Model", card.name),
        ("Architecture", card.architecture),
        ("Bundle SHA-256", ev.bundle.sha256),
        ("Archive", str(ev.archive)),
        ("Annotations", str(ev.annotations)),
        ("Annotations SHA-256", ev.annotations_sha256),
        ("Device", ev.device),
        ("Operating point", f"{ev.operating_point.name} (P >= {ev.operating_point.threshold:.4f})"),
        ("Confidence intervals", _methods_note(ev)),
        ("Skipped annotation rows", len(ev.data.skipped)),
    ]
    write_table(ws, ("Field", "Value"), summary_rows)
    start = len(summary_rows) + 3
    rows = [(r["metric"], r["value"], r["study"], r["method"]) for r in _headline_rows(ev)]
    write_table(
        ws,
        ("Metric", "This model (95% CI)", "Source study", "Interval method"),
        rows,
        start_row=start,
    )
    ws.freeze_panes = "A2"

    wp = wb.create_sheet("Operating points")
    rows_p: list[tuple[Any, ...]] = []
    for name, m in ev.at_points.items():
        threshold = card.operating_points[name].threshold
        c = m.confusion
        for metric, est in (
            ("accuracy", m.accuracy),
            ("sensitivity", m.sensitivity),
            ("specificity", m.specificity),
            ("PPV", m.ppv),
            ("NPV", m.npv),
        ):
            rows_p.append((name, threshold, metric, *_estimate_cells(est), c.tn, c.fp, c.fn, c.tp))
    write_table(
        wp,
        ("Operating point", "Threshold", "Metric", *_ESTIMATE_COLUMNS, "TN", "FP", "FN", "TP"),
        rows_p,
        number_formats={"Threshold": "0.0000"} | _PERCENT_FORMATS,
    )
    ww = wb.create_sheet("Studies and workload")
    rows_w: list[tuple[Any, ...]] = []
    for name, st in ev.studies.items():
        for metric, est in (
            ("study-level sensitivity", st.sensitivity),
            ("study-level specificity", st.specificity),
            ("flags per 1,000 studies", st.flags_per_1000),
            ("confirmed flags per 100 flags", st.confirmed_per_100_flags),
            ("false flags per 1,000 fracture-free studies", st.false_flags_per_1000_clear),
        ):
            rows_w.append((name, st.threshold, metric, *_estimate_cells(est)))
    write_table(
        ww,
        ("Operating point", "Threshold", "Metric", *_ESTIMATE_COLUMNS),
        rows_w,
        number_formats={"Threshold": "0.0000"},
    )
    wr = wb.create_sheet("Reliability")
    write_table(
        wr,
        ("Bin from", "Bin to", "Vertebrae", "Mean P(fracture)", "Share of fractures"),
        [(b.low, b.high, b.n, b.mean_predicted, b.observed) for b in ev.reliability.bins],
        number_formats={"Mean P(fracture)": "0.000", "Share of fractures": "0.000"},
    )
    write_table(
        wr,
        ("Metric", *_ESTIMATE_COLUMNS),
        [("expected calibration error", *_estimate_cells(ev.reliability.ece))],
        start_row=len(ev.reliability.bins) + 4,
    )
    wl = wb.create_sheet("Sensitivity by group")
    rows2 = [
        ("level", k, v["detected"], v["total"], v["sensitivity"]) for k, v in ev.by_level.items()
    ]
    rows2 += [
        ("AO type", k, v["detected"], v["total"], v["sensitivity"])
        for k, v in ev.by_ao_type.items()
    ]
    rows2 += [
        ("Genant grade", k, v["detected"], v["total"], v["sensitivity"])
        for k, v in ev.by_genant_grade.items()
    ]
    write_table(
        wl,
        ("Grouping", "Group", "Detected", "Fractures", "Sensitivity"),
        rows2,
        number_formats={"Sensitivity": "0.0%"},
    )

    wv = wb.create_sheet("Vertebrae")
    write_table(
        wv,
        (
            "Image",
            "Level",
            "Label",
            "P(fracture)",
            "Model positive",
            "AO type",
            "Genant grade",
            "Heatmap peak in zone",
        ),
        [
            (
                r.image,
                r.level,
                "fracture" if r.label else "no_fracture",
                float(p),
                bool(pred),
                r.ao_type,
                r.genant_grade,
                zone,
            )
            for r, p, pred, zone in zip(
                ev.data.records, ev.probs, ev.predicted, ev.cam_peak_in_zone, strict=True
            )
        ],
        number_formats={"P(fracture)": "0.000"},
    )
    if ev.data.skipped:
        we = wb.create_sheet("Skipped rows")
        write_table(
            we,
            ("Row", "Image", "Level", "Reason"),
            [(e.row, e.image, e.level, e.reason) for e in ev.data.skipped],
        )
    write_with(target, lambda tmp: wb.save(tmp))


def write_evaluation_reports(ev: Evaluation, out: Path) -> dict[str, Path]:
    """Write every evaluation report into ``out``; return their paths by kind.

    Files: ``evaluation.json``, ``predictions.csv``, ``roc.png``, ``confusion.png``,
    ``reliability.png``, ``evaluation.xlsx`` and ``evaluation.html`` (self-contained; images
    embedded).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "evaluation.json",
        "csv": out / "predictions.csv",
        "roc": out / "roc.png",
        "confusion": out / "confusion.png",
        "reliability": out / "reliability.png",
        "xlsx": out / "evaluation.xlsx",
        "html": out / "evaluation.html",
    }
    write_text_atomic(paths["json"], json.dumps(_json_ready(ev.as_dict()), indent=2) + "\n")
    _write_predictions(ev, paths["csv"])
    roc_png = plot_roc(ev, paths["roc"])
    confusion_png = plot_confusion(ev, paths["confusion"])
    reliability_png = plot_reliability(ev, paths["reliability"])
    _write_excel(ev, paths["xlsx"])
    html = (
        template_environment()
        .get_template("evaluate.html.j2")
        .render(**build_context(ev, roc_png, confusion_png, reliability_png))
    )
    write_text_atomic(paths["html"], html)
    return paths


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    return value
