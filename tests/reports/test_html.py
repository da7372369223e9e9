"""The HTML report on its own: autoescape, caps for big runs, embedded versus linked images."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from auditor.records import (
    AuditReport,
    ErrorRow,
    FileRow,
    LevelEvidence,
    StudyFinding,
    StudyFlag,
    StudyStatus,
    VertebraFinding,
)
from auditor.reports.html import (
    SYNTHETIC_MODEL_BANNER,
    build_context,
    model_banner,
    template_environment,
    write_html,
)
from auditor.vocab import Level

EVIL = "<script>alert(1)</script>"


class _Page(HTMLParser):
    """Ids in document order, the queue rows' attributes, and the banner's text."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.cases: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.banner: list[str] = []
        self._in_banner = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.append(attributes["id"] or "")
        if tag == "tr" and "case" in (attributes.get("class") or "").split():
            self.cases.append(attributes)
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"] or "")
        self._in_banner = attributes.get("class") == "banner"

    def handle_endtag(self, tag: str) -> None:
        self._in_banner = False

    def handle_data(self, data: str) -> None:
        if self._in_banner:
            self.banner.append(data)


def _page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _report(run_dir: Path, n_studies: int) -> AuditReport:
    heat = "thumbnails/heatmaps/h.jpg"
    (run_dir / "thumbnails/heatmaps").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(run_dir / heat)
    flag = StudyFlag(StudyStatus.LIKELY_MISSED, 0.9, (Level.L1,), (Level.L1,))
    studies = tuple(
        StudyFinding(
            key=f"study{i}",
            study_uid="",
            accession_number=EVIL,
            patient_id="=1+1",
            patient_name=EVIL,
            study_date="",
            description=EVIL,
            images=(f"s{i}.dcm",),
            image_path="",
            flag=flag,
            read=None,
            levels=(LevelEvidence(Level.L1, 0.9, True, False, heat, f"s{i}.dcm"),),
            radiograph="",
        )
        for i in range(n_studies)
    )
    vertebrae = tuple(
        VertebraFinding(
            study=f"study{i}",
            image=f"s{i}.dcm",
            level=Level.L1,
            box_row=i,
            box=(0, 0, 9, 9),
            box_source="file",
            box_confidence=None,
            probability=i / (3 * n_studies),
            positive=True,
            reference_label=None,
            heatmap="",
            error="",
            study_status=StudyStatus.LIKELY_MISSED,
            reported=None,
        )
        for i in range(3 * n_studies)
    )
    files = tuple(
        FileRow(f"{EVIL}{i}.dcm", 1, "candidate", "", "", "DX", "", "", EVIL)
        for i in range(n_studies)
    )
    return AuditReport(
        title=EVIL,
        summary=(("Archive", EVIL),),
        status_counts=((StudyStatus.LIKELY_MISSED, 1),),
        threshold=0.5,
        studies=studies,
        vertebrae=vertebrae,
        files=files,
        errors=(ErrorRow("box file", 3, EVIL, EVIL),),
    )


def test_autoescape_is_on() -> None:
    env = template_environment()
    assert env.from_string("{{ x }}").render(x=EVIL) == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_everything_is_escaped(tmp_path: Path) -> None:
    write_html(_report(tmp_path, 3), tmp_path, tmp_path / "audit.html")
    html = (tmp_path / "audit.html").read_text(encoding="utf-8")
    assert EVIL not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 10
    assert html.count("<script>") == 1  # ours, inline
    assert "http://" not in html and "https://" not in html  # nothing fetched from anywhere


def test_big_run_is_capped_and_links_images(tmp_path: Path) -> None:
    report = _report(tmp_path, 50)
    context = build_context(report, tmp_path, embed_limit=10, table_limit=40)
    queue = context["queue"]
    assert len(queue) == 50  # the queue is never cut
    assert all(
        h["src"].startswith("data:image/jpeg;base64,") for r in queue[:10] for h in r["heatmaps"]
    )
    assert all(h["src"] == "" and h["link"] for r in queue[10:] for h in r["heatmaps"])
    assert "first 10 studies" in context["queue_note"]
    assert len(context["vertebrae"]) == 40 and context["n_vertebrae"] == 150
    assert "Showing 40 of 150" in context["vertebra_note"]
    probabilities = [float(v["prob_sort"]) for v in context["vertebrae"]]
    assert probabilities == sorted(probabilities, reverse=True)  # most suspicious first
    assert len(context["files"]) == 40 and "Showing 40 of 50" in context["file_note"]


def test_ten_thousand_study_report_stays_small(tmp_path: Path) -> None:
    write_html(_report(tmp_path, 10_000), tmp_path, tmp_path / "audit.html")
    size = (tmp_path / "audit.html").stat().st_size
    assert size < 25_000_000, size  # capped tables; images only for the first 200 studies


def test_page_opens_on_the_queue_and_the_summary_follows_it(tmp_path: Path) -> None:
    write_html(_report(tmp_path, 3), tmp_path, tmp_path / "audit.html")
    ids = _page(tmp_path / "audit.html").ids
    assert ids.index("queue") < ids.index("queue-table") < ids.index("summary")
    assert ids.index("summary") < ids.index("status-counts") < ids.index("vertebrae")
    assert ids[0] == "queue"  # nothing with an id (no banner asked for) comes before the queue


def test_banner_is_shown_escaped_only_when_asked(tmp_path: Path) -> None:
    report = _report(tmp_path, 2)
    write_html(report, tmp_path, tmp_path / "plain.html")
    plain = _page(tmp_path / "plain.html")
    assert "banner" not in plain.ids and plain.banner == []

    write_html(report, tmp_path, tmp_path / "warned.html", banner=SYNTHETIC_MODEL_BANNER + EVIL)
    warned = _page(tmp_path / "warned.html")
    assert warned.ids[:2] == ["banner", "queue"]  # above the queue, at the top of the page
    assert "".join(warned.banner) == SYNTHETIC_MODEL_BANNER + EVIL  # text, not markup
    assert EVIL not in (tmp_path / "warned.html").read_text(encoding="utf-8")


def test_model_banner_follows_the_cards_training_data() -> None:
    assert model_banner("synthetic") == SYNTHETIC_MODEL_BANNER
    assert "not validated on patients" in SYNTHETIC_MODEL_BANNER
    assert model_banner("clinical") == "" and model_banner("") == ""


def test_every_case_has_an_anchor_and_a_link_to_it(tmp_path: Path) -> None:
    write_html(_report(tmp_path, 4), tmp_path, tmp_path / "audit.html")
    page = _page(tmp_path / "audit.html")
    assert [c["id"] for c in page.cases] == ["case-1", "case-2", "case-3", "case-4"]
    assert all(c["tabindex"] == "-1" for c in page.cases)  # focusable by the j / k keys
    assert {f"#case-{rank}" for rank in range(1, 5)} <= set(page.links)
    html = (tmp_path / "audit.html").read_text(encoding="utf-8")
    assert 'addEventListener("keydown"' in html and "tr.case" in html


def test_wide_tables_have_fixed_layout(tmp_path: Path) -> None:
    # Weak on its own: the measured scrollWidth at 1,024 px (see the issue) is the evidence.
    write_html(_report(tmp_path, 2), tmp_path, tmp_path / "audit.html")
    html = (tmp_path / "audit.html").read_text(encoding="utf-8")
    for table in ("queue-table", "vertebra-table", "file-table", "error-table"):
        assert f'class="sortable fixed" id="{table}"' in html
    assert "table.fixed { table-layout: fixed; }" in html and "overflow-wrap: anywhere" in html
