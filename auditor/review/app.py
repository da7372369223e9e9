"""The review workbench: a Starlette application over one run folder and its review store.

Pages (HTML, rendered from ``templates/review/`` with autoescape):

- ``GET /``: the queue, flagged studies in priority order, then the unflagged sample;
- ``GET /case?study=KEY``: one case (drawn by ``static/workbench.js`` from the JSON below).

Every page carries the scan's banners at the top: the synthetic-model one when the card says so,
and the domain guards' when the archive was out of the model's domain (``cases.json``'s
``domain_banner``, as the reports show it); the case marks each call the scan marked out of
distribution, and the study's status in the queue and the case says how many it holds, in the
reports' words (:func:`status_text`).

JSON API (every answer is the reviewer's own view; ``<``, ``>`` and ``&`` are escaped as
``\\u003c`` etc. so that no answer can be sniffed into markup):

- ``GET /api/queue``: the queue with each study's status (also as the reports word it, with the
  number of its vertebrae out of distribution), levels, top probability and verdict;
- ``GET /api/case?study=KEY``: one case with its boxes as this reviewer left them;
- ``POST /api/record`` ``{study, image?, box?, field, value}``: one change
  (:meth:`~auditor.review.store.ReviewStore.record`), answered with the case after it;
- ``POST /api/add-box`` ``{study, image, level, xyxy}``: a box the reviewer drew.

Pictures: ``GET /image?ref=REF`` (PNG) and ``GET /heatmap?study=&ref=&box=`` (JPEG); static files
under ``/static/``. A POST is answered only after the store has committed the change. The
token, Host and header rules are :mod:`auditor.review.guard`'s.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from auditor.crops import crop_window
from auditor.errors import READ_FAILURES, TlauditError, UsageError
from auditor.records import (
    OUT_OF_DISTRIBUTION,
    CaseImage,
    LevelMention,
    StudyCase,
    study_status_text,
)
from auditor.resources import resource_dir
from auditor.review.decisions import ReviewedVertebra, propose_verdict, reviewed_vertebrae
from auditor.review.guard import TOKEN_PARAM, Guard
from auditor.review.images import ImageCache, ImageFetch, ImageGone, heatmap_path
from auditor.review.run import ReviewRun, load_run
from auditor.review.store import (
    AO_TYPES,
    MAX_COMMENT_CHARS,
    ReviewState,
    ReviewStore,
    box_id,
    check_reviewer,
)
from auditor.vocab import GENANT_GRADES, LEVEL_ORDER, SPINE_LEVELS, STUDY_WIDE, StudyVerdict

logger = logging.getLogger(__name__)

#: Crop margin of the bundled model, used to place a heatmap thumbnail over its box until
#: ``cases.json`` records the margin of the model that drew it.
DEFAULT_CROP_MARGIN = 0.15
#: Largest JSON body a POST may carry (a comment is at most a few kB).
MAX_BODY_BYTES = 64 * 1024
#: Pictures do not change while a workbench runs; the browser may keep them for an hour.
IMAGE_CACHE_CONTROL = "private, max-age=3600"


class SafeJSONResponse(JSONResponse):
    """JSON with ``<``, ``>`` and ``&`` escaped, so that no answer reads as markup if sniffed."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        return text.encode("utf-8")


def _error(status: int, message: str) -> SafeJSONResponse:
    return SafeJSONResponse({"error": message}, status_code=status)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def out_of_distribution_count(case: StudyCase) -> int:
    """How many of the study's vertebrae the scan marked out of distribution (counted as the
    reports count :attr:`auditor.records.StudyFinding.out_of_distribution`)."""
    return sum(v.out_of_distribution for image in case.images for v in image.vertebrae)


def status_text(case: StudyCase) -> str:
    """The study's status as the reports word it (:func:`auditor.records.study_status_text`)."""
    return study_status_text(case.status, out_of_distribution_count(case))


@dataclass(frozen=True)
class QueueRow:
    """One study of the queue as the queue page and ``/api/queue`` show it."""

    key: str
    section: str  # "flagged" or "sample"
    rank: int
    status: str
    status_slug: str
    status_text: str  # the status as the reports show it (status_text)
    out_of_distribution: int  # the study's vertebrae marked out of distribution
    study_uid: str
    accession_number: str
    study_date: str
    description: str
    levels: tuple[str, ...]  # the levels behind the flag: positive or reported
    max_probability: float | None
    verdict: str | None
    href: str

    def json(self) -> dict[str, Any]:
        """The row as ``/api/queue`` answers it."""
        return {
            "key": self.key,
            "section": self.section,
            "rank": self.rank,
            "status": self.status,
            "status_text": self.status_text,
            "out_of_distribution": self.out_of_distribution,
            "study_date": self.study_date,
            "accession_number": self.accession_number,
            "levels": list(self.levels),
            "max_probability": self.max_probability,
            "verdict": self.verdict,
        }


class Workbench:
    """The routes of one workbench: a run, its store, one reviewer and the session token."""

    def __init__(
        self,
        run: ReviewRun,
        store: ReviewStore,
        reviewer: str,
        token: str,
        sample: Sequence[str],
        sample_size: int,
        seed: int,
        fetch: ImageFetch | None = None,
    ) -> None:
        self.run = run
        self.store = store
        self.reviewer = reviewer
        self.token = token
        sampled = set(sample)
        self.flagged = tuple(c for c in run.studies if c.queue_rank is not None)
        self.sample = tuple(c for c in run.studies if c.key in sampled and c.queue_rank is None)
        self.sample_size = sample_size
        self.seed = seed
        self.by_key = {case.key: case for case in run.studies}
        self.images = ImageCache(run, fetch=fetch)
        self.pages = jinja2.Environment(
            loader=jinja2.FileSystemLoader(resource_dir("templates") / "review"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    # -- helpers ----------------------------------------------------------------------------------

    def url(self, path: str, **params: str) -> str:
        """A URL of this workbench carrying the token (for GET navigation and images)."""
        return f"{path}?{urlencode({**params, TOKEN_PARAM: self.token})}"

    def queue(self) -> tuple[StudyCase, ...]:
        return self.flagged + self.sample

    def progress(self, state: ReviewState) -> dict[str, int]:
        queue = self.queue()
        done = sum(1 for c in queue if _verdict(state, c.key) is not None)
        return {"reviewed": done, "total": len(queue)}

    def rows(self, state: ReviewState) -> list[QueueRow]:
        rows = []
        for section, cases in (("flagged", self.flagged), ("sample", self.sample)):
            for rank, case in enumerate(cases, start=1):
                probabilities = [
                    v.probability
                    for image in case.images
                    for v in image.vertebrae
                    if v.probability is not None
                ]
                levels = {v.level for image in case.images for v in image.vertebrae if v.positive}
                if case.read is not None:
                    levels.update(case.read.reported_levels)
                verdict = _verdict(state, case.key)
                rows.append(
                    QueueRow(
                        key=case.key,
                        section=section,
                        rank=case.queue_rank or rank,
                        status=case.status.value,
                        status_slug=_slug(case.status.value),
                        status_text=status_text(case),
                        out_of_distribution=out_of_distribution_count(case),
                        study_uid=case.study_uid,
                        accession_number=case.accession_number,
                        study_date=case.study_date,
                        description=case.description,
                        levels=tuple(lv.value for lv in LEVEL_ORDER if lv in levels),
                        max_probability=max(probabilities) if probabilities else None,
                        verdict=None if verdict is None else verdict.value,
                        href=self.url("/case", study=case.key),
                    )
                )
        return rows

    def case_json(self, case: StudyCase, state: ReviewState) -> dict[str, Any]:
        """One case as the case page draws it, with this reviewer's decisions."""
        vertebrae = reviewed_vertebrae(case, state)
        study = state.studies.get(case.key)
        verdict = study.verdict if study is not None else None
        proposed = propose_verdict(case, vertebrae)
        read = case.read
        section = "flagged" if case.queue_rank is not None else ""
        if any(c.key == case.key for c in self.sample):
            section = "sample"
        return {
            "key": case.key,
            "status": case.status.value,
            "status_slug": _slug(case.status.value),
            "status_text": status_text(case),
            "queue_rank": case.queue_rank,
            "section": section,
            "study_uid": case.study_uid,
            "accession_number": case.accession_number,
            "study_date": case.study_date,
            "description": case.description,
            "read": None
            if read is None
            else {
                "impression": read.impression,
                "fracture_reported": read.fracture_reported,
                "reported_levels": [level.value for level in read.reported_levels],
                # what the report's text says per level (auditor.reads), in reading order
                "mentions": [
                    {"level": m.level, "mention": m.mention.value, "sentence": m.sentence}
                    for m in _in_level_order(read.mentions)
                ],
                "disagreement": read.disagreement,
            },
            "images": [_image_json(image, vertebrae) for image in case.images],
            "verdict": None if verdict is None else verdict.value,
            "proposed": None if proposed is None else proposed.value,
            "comment": "" if study is None else study.comment,
            "progress": self.progress(state),
        }

    def page(self, name: str, state: ReviewState, **context: Any) -> HTMLResponse:
        html = self.pages.get_template(name).render(
            token=self.token,
            reviewer=self.reviewer,
            synthetic=self.run.training_data == "synthetic",
            domain_banner=self.run.domain_banner,
            progress=self.progress(state),
            queue_url=self.url("/"),
            static_url=lambda path: self.url(f"/static/{path}"),
            **context,
        )
        return HTMLResponse(html)

    def find_case(self, key: str | None) -> StudyCase | None:
        return None if key is None else self.by_key.get(key)

    # -- pages ------------------------------------------------------------------------------------

    async def queue_page(self, request: Request) -> Response:
        state = await run_in_threadpool(self.store.state, self.reviewer)
        rows = self.rows(state)
        flagged = [r for r in rows if r.section == "flagged"]
        sample = [r for r in rows if r.section == "sample"]
        sections = [
            {
                "name": "flagged",
                "title": "Flagged queue",
                "note": f"{len(flagged)} studies, highest priority first",
                "rows": flagged,
                "empty": "The scan flagged no study.",
            }
        ]
        if self.sample or self.sample_size:
            candidates = sum(1 for c in self.run.studies if c.queue_rank is None)
            sections.append(
                {
                    "name": "sample",
                    "title": "Random sample of unflagged studies",
                    "note": (
                        f"{len(sample)} of {candidates} unflagged studies, drawn once for "
                        f"{self.reviewer} (seed {self.seed}): what the scan may have missed"
                    ),
                    "rows": sample,
                    "empty": "No unflagged study to sample.",
                }
            )
        statuses = sorted({r.status for r in rows})
        return self.page(
            "queue.html.j2",
            state,
            title="Queue",
            page="queue",
            run_dir=str(self.run.run_dir),
            run_name=Path(self.run.run_dir).resolve().name,
            sections=sections,
            statuses=statuses,
            levels=[level.value for level in LEVEL_ORDER],
        )

    async def case_page(self, request: Request) -> Response:
        case = self.find_case(request.query_params.get("study"))
        if case is None:
            return HTMLResponse("no such study in this run", status_code=404)
        state = await run_in_threadpool(self.store.state, self.reviewer)
        return self.page(
            "case.html.j2",
            state,
            title=f"{case.study_date} {case.accession_number}",
            page="case",
            study=case.key,
            levels=[level.value for level in LEVEL_ORDER],
            out_of_distribution=OUT_OF_DISTRIBUTION,
            ao_types=AO_TYPES,
            genant_grades=GENANT_GRADES,
            verdicts=list(StudyVerdict),
            max_comment=MAX_COMMENT_CHARS,
        )

    # -- JSON -------------------------------------------------------------------------------------

    async def queue_api(self, request: Request) -> Response:
        state = await run_in_threadpool(self.store.state, self.reviewer)
        return SafeJSONResponse(
            {
                "reviewer": self.reviewer,
                "progress": self.progress(state),
                "studies": [row.json() for row in self.rows(state)],
            }
        )

    async def case_api(self, request: Request) -> Response:
        case = self.find_case(request.query_params.get("study"))
        if case is None:
            return _error(404, "no such study in this run")
        state = await run_in_threadpool(self.store.state, self.reviewer)
        return SafeJSONResponse(self.case_json(case, state))

    async def record_api(self, request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        case = self.find_case(_text(body.get("study")))
        if case is None:
            return _error(404, "no such study in this run")
        image_ref = _text(body.get("image")) or ""
        box = _text(body.get("box")) or ""
        if image_ref or box:
            problem = _check_box(case, image_ref, box)
            if problem:
                return _error(404, problem)
        field = body.get("field")
        if not isinstance(field, str):
            return _error(400, "field must be a field name")

        def write() -> dict[str, Any]:
            event = self.store.record(
                self.reviewer, field, body.get("value"), study=case.key, image=image_ref, box=box
            )
            state = self.store.state(self.reviewer)
            return {
                "ok": True,
                "event": event.id,
                "box": event.box,
                "case": self.case_json(case, state),
            }

        return await self._write(write)

    async def add_box_api(self, request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        case = self.find_case(_text(body.get("study")))
        if case is None:
            return _error(404, "no such study in this run")
        image_ref = _text(body.get("image")) or ""
        if not any(image.ref == image_ref for image in case.images):
            return _error(404, "no such image in this study")
        xyxy = body.get("xyxy")
        if not isinstance(xyxy, list):
            return _error(400, f"xyxy must be [x_min, y_min, x_max, y_max], got {xyxy!r}")

        def write() -> dict[str, Any]:
            event = self.store.add_box(
                self.reviewer,
                study=case.key,
                image=image_ref,
                level=str(body.get("level", "")),
                xyxy=xyxy,
            )
            state = self.store.state(self.reviewer)
            return {
                "ok": True,
                "event": event.id,
                "box": event.box,
                "case": self.case_json(case, state),
            }

        return await self._write(write)

    async def _write(self, write: Any) -> Response:
        try:
            answer = await run_in_threadpool(write)
        except UsageError as err:
            return _error(400, str(err))
        except TlauditError as err:
            logger.warning("review change not recorded: %s", err)
            return _error(500, str(err))
        return SafeJSONResponse(answer)

    # -- pictures ---------------------------------------------------------------------------------

    async def image(self, request: Request) -> Response:
        ref = request.query_params.get("ref", "")
        try:
            data = await run_in_threadpool(self.images.png, ref)
        except KeyError:
            return _error(404, "no such image in this run")
        except UsageError as err:
            return _error(403, str(err))
        except ImageGone as err:
            logger.warning("cannot serve image %s: %s", ref, err.reason)
            return _error(422, f"the image cannot be read: {err.reason}")
        except READ_FAILURES as err:
            logger.warning("cannot serve image %s: %s", ref, err)
            return _error(422, "the image cannot be read")
        return Response(
            data, media_type="image/png", headers={"Cache-Control": IMAGE_CACHE_CONTROL}
        )

    async def heatmap(self, request: Request) -> Response:
        params = request.query_params
        try:
            path = heatmap_path(
                self.run, params.get("study", ""), params.get("ref", ""), params.get("box", "")
            )
        except KeyError:
            return _error(404, "no such heatmap in this run")
        except UsageError as err:
            return _error(403, str(err))
        return FileResponse(
            path, media_type="image/jpeg", headers={"Cache-Control": IMAGE_CACHE_CONTROL}
        )


def _verdict(state: ReviewState, key: str) -> StudyVerdict | None:
    study = state.studies.get(key)
    return None if study is None else study.verdict


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _check_box(case: StudyCase, image_ref: str, box: str) -> str:
    """Why (image, box) names no box of ``case`` ("" when it does; an added box is the store's
    to check)."""
    image = next((i for i in case.images if i.ref == image_ref), None)
    if image is None:
        return "no such image in this study"
    if box.startswith("new-"):
        return ""
    if not any(box_id(v.box_row) == box for v in image.vertebrae):
        return "no such box on this image"
    return ""


def _image_json(image: CaseImage, vertebrae: Sequence[ReviewedVertebra]) -> dict[str, Any]:
    boxes = [v for v in vertebrae if v.image == image.ref]
    # top to bottom as on the film, so the table reads cranial to caudal
    boxes.sort(key=lambda v: ((v.xyxy[1] + v.xyxy[3]) / 2, v.box))
    return {
        "ref": image.ref,
        "image": image.image,
        "vertebrae": [_vertebra_json(v) for v in boxes],
    }


def _vertebra_json(v: ReviewedVertebra) -> dict[str, Any]:
    original = v.original
    window = None
    if original is not None and original.heatmap:
        crop = crop_window(original.box, DEFAULT_CROP_MARGIN, 1)
        window = [crop.x0, crop.y0, crop.side]
    return {
        "box": v.box,
        "level": v.level.value,
        "scan_level": None if original is None else original.level.value,
        "xyxy": [round(c, 2) for c in v.xyxy],
        "probability": v.probability,
        "positive": bool(original is not None and original.positive),
        # the scan's call on a crop unlike the training data means little (the reports mark it)
        "out_of_distribution": bool(original is not None and original.out_of_distribution),
        "heatmap": window is not None,
        "window": window,
        "decision": None if v.decision is None else v.decision.value,
        "ao_type": v.ao_type,
        "genant_grade": v.genant_grade,
        "moved": v.moved,
        "added": v.added,
        "deleted": v.deleted,
    }


async def _json_body(request: Request) -> dict[str, Any] | Response:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return _error(415, "send the change as application/json")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        return _error(413, f"the request body is over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return _error(400, "the request body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "the request body must be a JSON object")
    return body


def create_app(
    run_dir: Path,
    reviewer: str,
    token: str,
    sample_unflagged: int = 0,
    seed: int = 0,
    *,
    hosts: Sequence[str] = (),
    fetch: ImageFetch | None = None,
) -> Starlette:
    """Build the workbench for one run folder and one reviewer.

    Parameters
    ----------
    run_dir
        A scan's run folder (``cases.json``, ``journal.sqlite``); the review store
        ``review.sqlite`` is created there on first use.
    reviewer
        The name decisions are recorded under; the workbench shows only this reviewer's.
    token
        The session token every request must carry (see :mod:`auditor.review.guard`).
    sample_unflagged, seed
        Size and seed of the random sample of unflagged studies shown after the flagged queue.
        It is drawn once per reviewer and recorded; later sessions show the recorded sample.
    hosts
        Host names the server answers to besides the loopback names (the bound host).
    fetch
        Retrieves an image whose file is gone (a PACS run, :mod:`auditor.review.images`).

    Raises
    ------
    InputFileError
        When the folder is not a finished scan's, or its review store is not ours.
    ReviewError
        When the reviewer name is not valid or the sample size is negative.
    """
    reviewer = check_reviewer(reviewer)
    run = load_run(run_dir)
    store = ReviewStore(run.run_dir)
    try:
        if sample_unflagged:
            unflagged = [c.key for c in run.studies if c.queue_rank is None]
            sample: Sequence[str] = store.sample(reviewer, unflagged, sample_unflagged, seed)
        else:
            sample = store.state(reviewer).sample
    except BaseException:
        store.close()
        raise
    bench = Workbench(run, store, reviewer, token, sample, sample_unflagged, seed, fetch)

    # the first cases' radiographs, read and encoded before the reviewer asks for them
    first_images = [case.images[0].ref for case in bench.queue() if case.images]
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        warm = threading.Thread(
            target=bench.images.warm, args=(first_images, stop), name="review-warm", daemon=True
        )
        warm.start()
        try:
            yield
        finally:
            stop.set()
            warm.join(timeout=10)
            store.close()

    routes = [
        Route("/", bench.queue_page),
        Route("/case", bench.case_page),
        Route("/api/queue", bench.queue_api),
        Route("/api/case", bench.case_api),
        Route("/api/record", bench.record_api, methods=["POST"]),
        Route("/api/add-box", bench.add_box_api, methods=["POST"]),
        Route("/image", bench.image),
        Route("/heatmap", bench.heatmap),
        Mount("/static", StaticFiles(directory=resource_dir("templates") / "review" / "static")),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=token, hosts=hosts)],
        lifespan=lifespan,
    )
    app.state.workbench = bench
    return app


def _in_level_order(mentions: Iterable[LevelMention]) -> list[LevelMention]:
    """Mentions cranial to caudal, the study-wide one first."""
    order = {level: k for k, level in enumerate((STUDY_WIDE, *SPINE_LEVELS))}
    return sorted(mentions, key=lambda m: order.get(m.level, len(order)))
