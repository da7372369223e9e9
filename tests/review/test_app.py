"""The workbench's HTTP surface: the security rules, the pages, the JSON API and the pictures.

Driven in-process with Starlette's TestClient against the scanned tiny world (2 flagged and 4
unflagged studies; study 0, unflagged, carries hostile header strings and a hostile read).
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 instead of httpx at import; httpx is what the extra installs.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from auditor.errors import ReviewError, UsageError
from auditor.records import OUT_OF_DISTRIBUTION, StudyFinding, StudyFlag, StudyStatus
from auditor.review.app import create_app
from auditor.review.guard import CONTENT_SECURITY_POLICY, TOKEN_HEADER, host_name
from auditor.review.images import heatmap_path
from auditor.review.run import load_run
from auditor.review.serve import (
    TOKEN_ENV,
    bind,
    is_loopback,
    session_token,
    workbench_url,
)
from auditor.review.store import ReviewStore
from tests.helpers.review_world import mark_out_of_domain

TOKEN = "test-token-0123456789-abcdefghij"
AUTH = {TOKEN_HEADER: TOKEN}
HOSTILE_STUDY = "1.2.826.0.1.3680043.99.0.1"  # study 0 of the scan world
HOSTILE_DESCRIPTION = '@SUM(A1) <b>脊椎</b> & "quotes"'
HOSTILE_IMPRESSION = "<img src=x onerror=alert(1)>"


def _client(run_dir: Path, reviewer: str = "alice", **kwargs: Any) -> TestClient:
    app = create_app(run_dir, reviewer, TOKEN, **kwargs)
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture
def client(fresh_run: Path) -> Iterator[TestClient]:
    """A workbench for alice over a private run folder, every unflagged study sampled."""
    with _client(fresh_run, sample_unflagged=10) as c:
        yield c


def _first_box(client: TestClient, study: str) -> tuple[str, str, dict[str, Any]]:
    case = client.get("/api/case", params={"study": study}, headers=AUTH).json()
    image = case["images"][0]
    return case["key"], image["ref"], image["vertebrae"][0]


def _flagged(client: TestClient) -> str:
    queue = client.get("/api/queue", headers=AUTH).json()
    return str(queue["studies"][0]["key"])


def _record(client: TestClient, **change: Any) -> Any:
    return client.post("/api/record", json=change, headers=AUTH)


# -- the token, the host, the headers ---------------------------------------------------------


def _routes(client: TestClient) -> list[tuple[str, str, dict[str, str]]]:
    study, ref, box = _first_box(client, _flagged(client))
    return [
        ("GET", "/", {}),
        ("GET", "/case", {"study": study}),
        ("GET", "/api/queue", {}),
        ("GET", "/api/case", {"study": study}),
        ("GET", "/image", {"ref": ref}),
        ("GET", "/heatmap", {"study": study, "ref": ref, "box": box["box"]}),
        ("GET", "/static/workbench.js", {}),
        ("GET", "/static/vendor/panzoom.min.js", {}),
        ("GET", "/no-such-route", {}),
        ("POST", "/api/record", {}),
        ("POST", "/api/add-box", {}),
    ]


@pytest.mark.parametrize("sent", [None, "wrong-token-0123456789-abcdefghij", TOKEN[:-1], ""])
def test_every_route_refuses_a_missing_or_wrong_token(client: TestClient, sent: str | None) -> None:
    for method, path, params in _routes(client):
        if sent is not None:
            by_header = client.request(method, path, params=params, headers={TOKEN_HEADER: sent})
            assert by_header.status_code == 403, (method, path)
            by_url = client.request(method, path, params={**params, "token": sent})
            assert by_url.status_code == 403, (method, path)
        else:
            refused = client.request(method, path, params=params)
            assert refused.status_code == 403, (method, path)
            assert "token" in refused.text


def test_get_routes_take_the_token_in_the_url_or_a_header(client: TestClient) -> None:
    for method, path, params in _routes(client):
        if method != "GET" or path == "/no-such-route":
            continue
        assert client.get(path, params={**params, "token": TOKEN}).status_code == 200, path
        assert client.get(path, params=params, headers=AUTH).status_code == 200, path


def test_a_post_with_the_token_only_in_the_url_is_refused(client: TestClient) -> None:
    study = _flagged(client)
    change = {"study": study, "field": "verdict", "value": "unsure"}
    refused = client.post("/api/record", params={"token": TOKEN}, json=change)
    assert refused.status_code == 403
    assert TOKEN_HEADER in refused.text
    case = client.get("/api/case", params={"study": study}, headers=AUTH).json()
    assert case["verdict"] is None
    assert client.post("/api/record", json=change, headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8123", True),
        ("localhost:8123", True),
        ("[::1]:8123", True),
        ("evil.example", False),
        ("evil.example:8123", False),
        ("127.0.0.1.evil.example", False),
        ("10.0.0.5:8123", False),
        ("", False),
    ],
)
def test_host_header_allowlist(client: TestClient, host: str, allowed: bool) -> None:
    answer = client.get("/api/queue", headers={**AUTH, "Host": host})
    assert (answer.status_code == 200) is allowed
    if not allowed:
        assert answer.status_code == 403
        assert "host" in answer.text


def test_the_bound_host_is_allowed_too(fresh_run: Path) -> None:
    with _client(fresh_run, hosts=("10.0.0.5",)) as c:
        assert c.get("/api/queue", headers={**AUTH, "Host": "10.0.0.5:9000"}).status_code == 200
        assert c.get("/api/queue", headers={**AUTH, "Host": "10.0.0.6"}).status_code == 403


def test_a_cross_origin_request_is_refused(client: TestClient) -> None:
    study = _flagged(client)
    change = {"study": study, "field": "verdict", "value": "unsure"}
    hostile = {**AUTH, "Origin": "http://evil.example"}
    assert client.post("/api/record", json=change, headers=hostile).status_code == 403
    same = {**AUTH, "Origin": "http://127.0.0.1:8123"}
    assert client.post("/api/record", json=change, headers=same).status_code == 200


def test_security_headers_on_every_response(client: TestClient) -> None:
    answers = [client.request(m, p, params=q, headers=AUTH) for m, p, q in _routes(client)]
    answers.append(client.get("/"))  # a refusal
    answers.append(client.get("/api/case", params={"study": "nope"}, headers=AUTH))  # a 404
    for answer in answers:
        headers = answer.headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert "cache-control" in headers
    policy = CONTENT_SECURITY_POLICY
    assert "http" not in policy and "unsafe-inline" not in policy and "*" not in policy
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_api_answers_are_not_cached(client: TestClient) -> None:
    study = _flagged(client)
    for path, params in (("/api/queue", {}), ("/api/case", {"study": study}), ("/", {})):
        assert client.get(path, params=params, headers=AUTH).headers["cache-control"] == "no-store"
    change = {"study": study, "field": "comment", "value": "x"}
    assert client.post("/api/record", json=change, headers=AUTH).headers["cache-control"] == (
        "no-store"
    )


# -- no request names a file ------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    ["0123456789abcdef0123456789abcdef", "", "../journal.sqlite", "/etc/passwd", "..%2f..%2fx"],
)
def test_an_unknown_or_path_like_ref_is_refused(client: TestClient, ref: str) -> None:
    answer = client.get("/image", params={"ref": ref}, headers=AUTH)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/json")


def test_a_path_like_heatmap_request_is_refused(client: TestClient) -> None:
    study, ref, box = _first_box(client, _flagged(client))
    for params in (
        {"study": study, "ref": ref, "box": "../cases.json"},
        {"study": study, "ref": ref, "box": box["box"] + "/../../x"},
        {"study": "../" + study, "ref": ref, "box": box["box"]},
        {"study": study, "ref": "../" + ref, "box": box["box"]},
        {"study": HOSTILE_STUDY, "ref": ref, "box": box["box"]},  # another study's image
    ):
        assert client.get("/heatmap", params=params, headers=AUTH).status_code == 404, params


def test_a_heatmap_leading_outside_the_thumbnails_is_refused(fresh_run: Path) -> None:
    cases = json.loads((fresh_run / "cases.json").read_text(encoding="utf-8"))
    vertebra = cases["studies"][0]["images"][0]["vertebrae"][0]
    vertebra["heatmap"] = "thumbnails/../journal.sqlite"
    (fresh_run / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    run = load_run(fresh_run)
    case = run.studies[0]
    with pytest.raises(UsageError, match="outside"):
        heatmap_path(run, case.key, case.images[0].ref, f"box-{vertebra['box_row']}")
    with _client(fresh_run) as c:
        params = {
            "study": case.key,
            "ref": case.images[0].ref,
            "box": f"box-{vertebra['box_row']}",
        }
        assert c.get("/heatmap", params=params, headers=AUTH).status_code == 403


# -- escaping ---------------------------------------------------------------------------------


class _Elements(HTMLParser):
    """Collects start tags and inline script bodies of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


def test_hostile_strings_are_escaped_in_the_queue_page(client: TestClient) -> None:
    page = client.get("/", headers=AUTH)
    assert page.status_code == 200
    assert "<b>脊椎</b>" not in page.text
    assert "&lt;b&gt;脊椎&lt;/b&gt;" in page.text
    parsed = _Elements()
    parsed.feed(page.text)
    assert not [t for t, _ in parsed.tags if t == "b"]
    scripts = [a for t, a in parsed.tags if t == "script"]
    assert scripts and all((a.get("src") or "").startswith("/static/") for a in scripts)
    assert not [a for _, a in parsed.tags if any(k.startswith("on") for k in a)]
    assert any(HOSTILE_DESCRIPTION in text for text in parsed.texts)
    rows = [a for t, a in parsed.tags if a.get("data-testid") == "queue-row"]
    assert HOSTILE_STUDY in {a["data-study"] for a in rows}


def test_hostile_strings_are_escaped_in_the_case_page_and_json(client: TestClient) -> None:
    page = client.get("/case", params={"study": HOSTILE_STUDY}, headers=AUTH)
    assert page.status_code == 200
    parsed = _Elements()
    parsed.feed(page.text)
    assert not [t for t, _ in parsed.tags if t == "b"]
    images = [a for t, a in parsed.tags if t == "img"]
    assert [a.get("data-testid") for a in images] == ["radiograph"]
    assert not [a for _, a in parsed.tags if any(k.startswith("on") for k in a)]
    answer = client.get("/api/case", params={"study": HOSTILE_STUDY}, headers=AUTH)
    assert answer.headers["content-type"].startswith("application/json")
    assert "<" not in answer.text and ">" not in answer.text and "&" not in answer.text
    case = answer.json()
    assert case["description"] == HOSTILE_DESCRIPTION
    assert HOSTILE_IMPRESSION in case["read"]["impression"]
    queue = client.get("/api/queue", headers=AUTH)
    assert "<" not in queue.text
    hostile_comment = "</textarea><script>alert(1)</script>"
    saved = _record(client, study=HOSTILE_STUDY, field="comment", value=hostile_comment)
    assert saved.status_code == 200 and "<" not in saved.text
    assert saved.json()["case"]["comment"] == hostile_comment


def test_the_javascript_never_assigns_markup() -> None:
    from auditor.resources import resource_dir

    script = (resource_dir("templates") / "review" / "static" / "workbench.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script.replace("never assigns innerHTML", "")


# -- pages and the queue ----------------------------------------------------------------------


def test_queue_flagged_first_then_a_reproducible_sample(fresh_run: Path) -> None:
    run = load_run(fresh_run)
    flagged = [c.key for c in run.studies if c.queue_rank is not None]
    with _client(fresh_run, sample_unflagged=2, seed=7) as c:
        studies = c.get("/api/queue", headers=AUTH).json()["studies"]
        page = c.get("/", headers=AUTH).text
    assert [s["key"] for s in studies[: len(flagged)]] == flagged
    assert [s["section"] for s in studies] == ["flagged"] * len(flagged) + ["sample"] * 2
    sample = [s["key"] for s in studies if s["section"] == "sample"]
    assert 'data-testid="queue-section-sample"' in page
    assert page.index('data-testid="queue-section-flagged"') < page.index("queue-section-sample")
    # a second session (any size or seed asked) shows the sample drawn the first time
    with _client(fresh_run, sample_unflagged=3, seed=1) as c:
        again = c.get("/api/queue", headers=AUTH).json()["studies"]
    assert [s["key"] for s in again if s["section"] == "sample"] == sample
    # another reviewer with the same seed and size draws the same sample
    with _client(fresh_run, reviewer="bob", sample_unflagged=2, seed=7) as c:
        bobs = c.get("/api/queue", headers=AUTH).json()["studies"]
    assert [s["key"] for s in bobs if s["section"] == "sample"] == sample


def test_without_a_sample_the_queue_is_the_flagged_studies(scanned: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(scanned, run_dir)
    with _client(run_dir) as c:
        queue = c.get("/api/queue", headers=AUTH).json()
        page = c.get("/", headers=AUTH).text
    assert {s["section"] for s in queue["studies"]} == {"flagged"}
    assert "queue-section-sample" not in page
    assert queue["progress"] == {"reviewed": 0, "total": 2}


def test_progress_counts_study_verdicts(client: TestClient) -> None:
    queue = client.get("/api/queue", headers=AUTH).json()
    total = len(queue["studies"])
    assert f"0 of {total} reviewed" in client.get("/", headers=AUTH).text
    study, ref, box = _first_box(client, _flagged(client))
    _record(client, study=study, image=ref, box=box["box"], field="decision", value="fracture")
    assert f"0 of {total} reviewed" in client.get("/", headers=AUTH).text
    answer = _record(client, study=study, field="verdict", value="confirmed miss").json()
    assert answer["case"]["progress"] == {"reviewed": 1, "total": total}
    page = client.get("/", headers=AUTH).text
    assert f"1 of {total} reviewed" in page
    assert 'data-reviewed="yes"' in page


def test_synthetic_banner_follows_the_model_card(fresh_run: Path) -> None:
    with _client(fresh_run) as c:
        assert 'data-testid="banner"' not in c.get("/", headers=AUTH).text
    cases = json.loads((fresh_run / "cases.json").read_text(encoding="utf-8"))
    cases["training_data"] = "synthetic"
    (fresh_run / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    with _client(fresh_run) as c:
        for path, params in (("/", {}), ("/case", {"study": _flagged(c)})):
            page = c.get(path, params=params, headers=AUTH).text
            assert 'data-testid="banner"' in page
            assert "synthetic data only, not validated on patients" in page


HOSTILE_BANNER = 'Out of distribution: <script>alert(1)</script> <b>x</b> & "q" {{ 7*7 }}'


class _Alerts(HTMLParser):
    """The text of each role="alert" element of a page, by data-testid (a banner holds text
    only: markup in it would end the text early and show up as a tag)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.alerts: dict[str, str] = {}
        self.tags: list[str] = []
        self._open: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._open is not None:
            self.tags.append(tag)
        if dict(attrs).get("role") == "alert":
            self._open = str(dict(attrs).get("data-testid"))
            self.alerts[self._open] = ""

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.alerts[self._open] += data


def test_domain_banner_follows_cases_json(fresh_run: Path) -> None:
    with _client(fresh_run) as c:
        for path, params in (("/", {}), ("/case", {"study": _flagged(c)})):
            page = c.get(path, params=params, headers=AUTH).text
            assert "domain-banner" not in page and "Out of distribution" not in page
    mark_out_of_domain(fresh_run, "Out of distribution: 40 of 40 vertebra crops (100%) ...")
    with _client(fresh_run) as c:
        for path, params in (("/", {}), ("/case", {"study": _flagged(c)})):
            page = c.get(path, params=params, headers=AUTH).text
            alerts = _Alerts(page).alerts
            banner = "Out of distribution: 40 of 40 vertebra crops (100%) ..."
            assert alerts["domain-banner"].strip() == banner, path
            # at the top: before the page's own content
            assert page.index('data-testid="domain-banner"') < page.index("<main"), path


def test_a_hostile_domain_banner_stays_escaped(fresh_run: Path) -> None:
    mark_out_of_domain(fresh_run, HOSTILE_BANNER)
    with _client(fresh_run) as c:
        for path, params in (("/", {}), ("/case", {"study": _flagged(c)})):
            page = c.get(path, params=params, headers=AUTH).text
            assert "<script>alert" not in page and "<b>x</b>" not in page, path
            assert "&lt;script&gt;alert(1)&lt;/script&gt; &lt;b&gt;x&lt;/b&gt; &amp;" in page, path
            alerts = _Alerts(page)
            # the whole string, as text, in the banner: no tag opened, no template evaluated
            assert alerts.alerts["domain-banner"].strip() == HOSTILE_BANNER, path
            assert alerts.tags == [], path


def test_the_case_marks_out_of_distribution_calls_in_the_reports_words(fresh_run: Path) -> None:
    with _client(fresh_run) as c:
        study = _flagged(c)
        case = c.get("/api/case", params={"study": study}, headers=AUTH).json()
        assert not any(v["out_of_distribution"] for v in case["images"][0]["vertebrae"])
    mark_out_of_domain(fresh_run, "Out of distribution: banner")
    with _client(fresh_run) as c:
        page = c.get("/case", params={"study": study}, headers=AUTH).text
        assert f'data-out-of-distribution="{OUT_OF_DISTRIBUTION}"' in page
        case = c.get("/api/case", params={"study": study}, headers=AUTH).json()
    vertebrae = case["images"][0]["vertebrae"]
    assert vertebrae and all(v["out_of_distribution"] is True for v in vertebrae)


def _reports_status(status: str, out_of_distribution: int) -> str:
    """The status the HTML report and the workbook give a study with this many vertebrae out
    of distribution (:attr:`auditor.records.StudyFinding.status_text`)."""
    finding = StudyFinding(
        key="k",
        study_uid="",
        accession_number="",
        patient_id="",
        patient_name="",
        study_date="",
        description="",
        images=(),
        image_path="",
        flag=StudyFlag(StudyStatus(status), 0.0, (), ()),
        read=None,
        levels=(),
        radiograph="",
        out_of_distribution=out_of_distribution,
    )
    return finding.status_text


class _QueueStatuses(HTMLParser):
    """The text of each queue row's status badge, by the row's study key."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.statuses: dict[str, str] = {}
        self.tags: list[str] = []
        self._study = ""
        self._open = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if self._open:
            self.tags.append(tag)
        if found.get("data-testid") == "queue-row":
            self._study = str(found["data-study"])
        elif found.get("data-testid") == "queue-status":
            self._open = True
            self.statuses[self._study] = ""

    def handle_endtag(self, tag: str) -> None:
        self._open = False

    def handle_data(self, data: str) -> None:
        if self._open:
            self.statuses[self._study] += data


def _mark_first_vertebra(run_dir: Path) -> None:
    """Rewrite ``cases.json`` with one vertebra of the first flagged study out of distribution."""
    path = run_dir / "cases.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    vertebra = document["studies"][0]["images"][0]["vertebrae"][0]
    vertebra["distance"], vertebra["out_of_distribution"] = 9.5, True
    path.write_text(json.dumps(document), encoding="utf-8")


@pytest.mark.parametrize("marked", ["none", "one", "all"])
def test_the_queue_status_counts_vertebrae_out_of_distribution_as_the_reports_do(
    fresh_run: Path, marked: str
) -> None:
    """The queue (page and JSON) and the case give each study's status in the reports' words:
    "read positive, model negative; 4 vertebrae out of distribution", "...; 1 vertebra ...",
    or the bare status when none is marked."""
    if marked == "one":
        _mark_first_vertebra(fresh_run)
    elif marked == "all":
        mark_out_of_domain(fresh_run, "Out of distribution: banner")
    run = load_run(fresh_run)
    counts = {
        case.key: sum(v.out_of_distribution for i in case.images for v in i.vertebrae)
        for case in run.studies
    }
    with _client(fresh_run, sample_unflagged=10) as c:
        queue = c.get("/api/queue", headers=AUTH).json()["studies"]
        page = c.get("/", headers=AUTH).text
        first = c.get("/api/case", params={"study": queue[0]["key"]}, headers=AUTH).json()
    shown = _QueueStatuses(page)
    assert len(queue) == len(run.studies) == len(shown.statuses)
    for row in queue:
        expected = _reports_status(row["status"], counts[row["key"]])
        assert row["out_of_distribution"] == counts[row["key"]]
        assert row["status_text"] == expected
        assert shown.statuses[row["key"]] == expected
        assert f'data-out-of-distribution="{counts[row["key"]]}"' in page
    assert first["status_text"] == queue[0]["status_text"]
    assert not shown.tags  # text only in the badges
    texts = [row["status_text"] for row in queue]
    if marked == "none":
        assert all(OUT_OF_DISTRIBUTION not in text for text in texts)
    elif marked == "one":
        assert texts[0] == f"{queue[0]['status']}; 1 vertebra {OUT_OF_DISTRIBUTION}"
        assert all(OUT_OF_DISTRIBUTION not in text for text in texts[1:])
    else:
        assert all(text.endswith(f" vertebrae {OUT_OF_DISTRIBUTION}") for text in texts)
    # the status filter still matches on the status itself
    assert {row["status"] for row in queue} <= {status.value for status in StudyStatus}


def test_case_page_and_json(client: TestClient) -> None:
    study = _flagged(client)
    page = client.get("/case", params={"study": study}, headers=AUTH)
    assert 'data-testid="case"' in page.text and f'data-study="{study}"' in page.text
    for testid in ("add-box", "comment", "save-state", "verdict-confirmed_miss", "verdict-unsure"):
        assert f'data-testid="{testid}"' in page.text
    case = client.get("/api/case", params={"study": study}, headers=AUTH).json()
    assert case["key"] == study and case["section"] == "flagged"
    assert case["read"]["reported_levels"] == ["L1"]
    vertebra = case["images"][0]["vertebrae"][0]
    assert set(vertebra) >= {"box", "level", "xyxy", "probability", "decision", "heatmap"}
    assert vertebra["box"].startswith("box-") and vertebra["heatmap"]
    assert client.get("/case", params={"study": "nope"}, headers=AUTH).status_code == 404
    assert client.get("/api/case", headers=AUTH).status_code == 404


# -- decisions --------------------------------------------------------------------------------


def test_every_kind_of_change_round_trips(client: TestClient) -> None:
    study, ref, box = _first_box(client, _flagged(client))
    bid = box["box"]
    changes: list[dict[str, Any]] = [
        {"field": "decision", "value": "fracture"},
        {"field": "ao_type", "value": "A1"},
        {"field": "genant_grade", "value": 2},
        {"field": "level", "value": "T11"},
        {"field": "box", "value": [30.0, 10.0, 71.5, 41.0]},
    ]
    for change in changes:
        answer = _record(client, study=study, image=ref, box=bid, **change)
        assert answer.status_code == 200, answer.text
    case = client.get("/api/case", params={"study": study}, headers=AUTH).json()
    got = next(v for v in case["images"][0]["vertebrae"] if v["box"] == bid)
    assert got["decision"] == "fracture" and got["ao_type"] == "A1" and got["genant_grade"] == 2
    assert got["level"] == "T11" and got["scan_level"] == box["level"]
    assert got["xyxy"] == [30.0, 10.0, 71.5, 41.0] and got["moved"]
    added = client.post(
        "/api/add-box",
        json={"study": study, "image": ref, "level": "L3", "xyxy": [20, 100, 60, 130]},
        headers=AUTH,
    )
    assert added.status_code == 200, added.text
    new_id = added.json()["box"]
    assert new_id.startswith("new-")
    _record(client, study=study, image=ref, box=new_id, field="decision", value="no_fracture")
    _record(client, study=study, image=ref, box=bid, field="deleted", value=True)
    case = client.get("/api/case", params={"study": study}, headers=AUTH).json()
    by_id = {v["box"]: v for v in case["images"][0]["vertebrae"]}
    assert by_id[new_id]["added"] and by_id[new_id]["level"] == "L3"
    assert by_id[new_id]["decision"] == "no_fracture" and by_id[bid]["deleted"]
    with ReviewStore(client.app.state.workbench.run.run_dir) as store:  # type: ignore[attr-defined]
        fields = [e.field.value for e in store.events("alice")]
    assert fields.count("decision") == 2 and "added" in fields and "deleted" in fields


def test_the_verdict_is_proposed_until_one_is_set(client: TestClient) -> None:
    study = _flagged(client)
    case = client.get("/api/case", params={"study": study}, headers=AUTH).json()
    assert case["verdict"] is None and case["proposed"] is None
    ref = case["images"][0]["ref"]
    for v in case["images"][0]["vertebrae"]:
        value = "fracture" if v["level"] == "L2" else "no_fracture"
        _record(client, study=study, image=ref, box=v["box"], field="decision", value=value)
    case = client.get("/api/case", params={"study": study}, headers=AUTH).json()
    # the read reported L1 only: a fracture at L2 is a confirmed miss
    assert case["proposed"] == "confirmed miss" and case["verdict"] is None
    answer = _record(client, study=study, field="verdict", value="already known").json()
    assert answer["case"]["verdict"] == "already known"


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"field": "decision", "value": "maybe"}, 400, "decision"),
        ({"field": "genant_grade", "value": 7}, 400, "Genant"),
        ({"field": "ao_type", "value": "Z9"}, 400, "AO"),
        ({"field": "box", "value": [10, 10, 5, 5]}, 400, "box"),
        ({"field": "level", "value": "C5"}, 400, "level"),
        ({"field": "nonsense", "value": 1}, 400, "field"),
        ({"field": "added", "value": {"level": "L1", "box": [0, 0, 1, 1]}}, 400, "add_box"),
        ({"field": "decision", "value": "fracture", "box": "box-99999"}, 404, "box"),
        ({"field": "decision", "value": "fracture", "box": "new-0123456789ab"}, 400, "add"),
        ({"field": "decision", "value": "fracture", "image": "0" * 32}, 404, "image"),
        ({"field": "decision", "value": "fracture", "study": "nope"}, 404, "study"),
        ({"field": "verdict", "value": "maybe"}, 400, "verdict"),
    ],
)
def test_a_bad_change_is_refused_with_a_message(
    client: TestClient, change: dict[str, Any], status: int, message: str
) -> None:
    study, ref, box = _first_box(client, _flagged(client))
    body = {"study": study, "image": ref, "box": box["box"], **change}
    if change["field"] in {"verdict"}:
        body = {"study": study, **change}
    answer = _record(client, **body)
    assert answer.status_code == status, answer.text
    assert message.lower() in answer.json()["error"].lower()


def test_a_body_that_is_not_a_json_object_is_refused(client: TestClient) -> None:
    for content, kind, status in (
        (b"field=verdict", "application/x-www-form-urlencoded", 415),
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b" " * 70_000, "application/json", 413),
    ):
        headers = {**AUTH, "Content-Type": kind}
        answer = client.post("/api/record", content=content, headers=headers)
        assert answer.status_code == status


def test_each_reviewer_sees_only_their_own_decisions(fresh_run: Path) -> None:
    with _client(fresh_run) as alice:
        study, ref, box = _first_box(alice, _flagged(alice))
        _record(alice, study=study, image=ref, box=box["box"], field="decision", value="fracture")
        _record(alice, study=study, field="verdict", value="confirmed miss")
    with _client(fresh_run, reviewer="bob") as bob:
        case = bob.get("/api/case", params={"study": study}, headers=AUTH).json()
        assert case["verdict"] is None
        assert all(v["decision"] is None for v in case["images"][0]["vertebrae"])
        assert bob.get("/api/queue", headers=AUTH).json()["progress"]["reviewed"] == 0
    with _client(fresh_run) as alice:
        case = alice.get("/api/case", params={"study": study}, headers=AUTH).json()
        assert case["verdict"] == "confirmed miss"


def test_a_bad_reviewer_name_is_refused(fresh_run: Path) -> None:
    with pytest.raises(ReviewError, match="reviewer"):
        create_app(fresh_run, "  ", TOKEN)


# -- pictures ---------------------------------------------------------------------------------


def test_the_radiograph_is_a_full_resolution_png(client: TestClient) -> None:
    from auditor.io.radiograph import read_radiograph

    _, ref, _ = _first_box(client, _flagged(client))
    answer = client.get("/image", params={"ref": ref}, headers=AUTH)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.headers["cache-control"].startswith("private")
    picture = Image.open(io.BytesIO(answer.content))
    run = client.app.state.workbench.run  # type: ignore[attr-defined]
    pixels = read_radiograph(run.image_path(ref)).pixels
    assert picture.mode == "L" and picture.size == (pixels.shape[1], pixels.shape[0])
    again = client.get("/image", params={"ref": ref}, headers=AUTH)
    assert again.content == answer.content


def test_heatmaps_are_served_by_study_ref_and_box(client: TestClient) -> None:
    study, ref, box = _first_box(client, _flagged(client))
    params = {"study": study, "ref": ref, "box": box["box"]}
    answer = client.get("/heatmap", params=params, headers=AUTH)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(answer.content)).format == "JPEG"


def test_static_files_and_the_vendored_library_licence(client: TestClient) -> None:
    from auditor.resources import resource_dir

    vendor = resource_dir("templates") / "review" / "static" / "vendor"
    assert "Permission is hereby granted" in (vendor / "panzoom.LICENSE.txt").read_text()
    js = client.get("/static/vendor/panzoom.min.js", headers=AUTH)
    assert js.status_code == 200 and "Panzoom" in js.text
    assert client.get("/static/../app.py", headers=AUTH).status_code == 404


# -- serving helpers --------------------------------------------------------------------------


def test_session_token() -> None:
    first, second = session_token({}), session_token({})
    assert first != second and len(first) >= 40
    fixed = "a-fixed-token_0123456789"
    assert session_token({TOKEN_ENV: fixed}) == fixed
    for bad in ("short", "has spaces in it 0123456789", "ünïcødé-0123456789-0123"):
        with pytest.raises(UsageError, match=TOKEN_ENV):
            session_token({TOKEN_ENV: bad})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_bind_picks_a_free_port_and_the_url_names_it() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert port > 0
        assert workbench_url("127.0.0.1", port, "tok") == f"http://127.0.0.1:{port}/?token=tok"
        with pytest.raises(UsageError, match="cannot listen"):
            bind("127.0.0.1", port)
    finally:
        sock.close()
    assert workbench_url("::1", 80, "t") == "http://[::1]:80/?token=t"
    assert host_name("[::1]:80") == "::1" and host_name("LocalHost:1") == "localhost"


def test_the_case_carries_what_the_reports_text_says_per_level(client: TestClient) -> None:
    """Study 1's read says "L1 wedge. ..." in its text: the case lists L1 as affirmed with the
    sentence it came from, for the workbench to show beside the impression."""
    case = client.get("/api/case", params={"study": "1.2.826.0.1.3680043.99.1.1"}, headers=AUTH)
    mentions = case.json()["read"]["mentions"]
    assert {"level": "L1", "mention": "affirmed", "sentence": "L1 wedge."} in mentions
    assert all(set(m) == {"level", "mention", "sentence"} for m in mentions)
