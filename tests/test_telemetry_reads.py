"""GET /v1/telemetry and /v1/records/{id}: exact paging over 10,000 records, filters, windows and bad params."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from conftest import Project, make_settings, new_project
from sqlalchemy import func, select, text

from loopkit_core.server import Running, in_thread
from loopkit_core.store import day_tables
from loopkit_core.store.cursors import encode_cursor
from loopkit_core.store.records import WindowQuery
from loopkit_core.store.schema import records as schema_records
from loopkit_core.store.schema import resources

MINUTE_NS = 60 * 1_000_000_000
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
RECORD_ID = re.compile(r"^rec_[0-9a-f]{24}$")
SINCE_RANGE = "since_minutes must be greater than 0 and at most 5270400"
UNTIL_REASON = "until must be RFC 3339 (e.g. 2026-01-02T03:04:05Z) or unix nanoseconds"
CURSOR_REASON = "cursor is not valid: pass next_cursor from the previous page unchanged"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One LoopKit for the module; every test uses its own project."""
    with in_thread(make_settings(tmp_path_factory.mktemp("reads") / "data")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Running) -> Iterator[httpx.Client]:
    """An HTTP client for the module's server."""
    with httpx.Client(base_url=server.http_url, timeout=60) as c:
        yield c


def post(client: httpx.Client, project: Project, records: list[dict]) -> list[str]:
    """Post records (all must be accepted) and return their record IDs."""
    response = client.post("/v1/traces", json={"records": records}, headers=project.auth("producer"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rejected"] == 0, body["errors"][:3]
    return body["record_ids"]


def get(client: httpx.Client, project: Project, params: object) -> httpx.Response:
    """GET /v1/telemetry with the project's agent key."""
    return client.get("/v1/telemetry", params=params, headers=project.auth("agent"))


def ids_of(client: httpx.Client, project: Project, params: object) -> list[str]:
    """The record IDs of one page (which must be the last)."""
    response = get(client, project, params)
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return [r["record_id"] for r in response.json()["records"]]


def rfc3339(ns: int) -> str:
    """Unix nanoseconds as the API writes them (microseconds, UTC, Z)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"


# ---------------------------------------------------------------- paging


def test_paging_visits_each_of_10000_records_exactly_once(server, client):
    project = new_project(server, "paging")
    base = time.time_ns() - 50 * MINUTE_NS
    records = []
    for i in range(10_000):
        # 1,500 records on one instant (spans more than a page), then groups of 7 sharing an instant,
        # so that many pages end in the middle of a tie.
        ts = base if i < 1500 else base + (1 + (i - 1500) // 7) * 1000
        records.append({"type": "latency", "name": f"op-{i % 13}", "timestamp": ts, "duration_ms": i % 100})
    posted: list[str] = []
    for start in range(0, len(records), 2500):
        posted += post(client, project, records[start : start + 2500])
    assert len(set(posted)) == 10_000

    seen: list[str] = []
    keys: list[tuple[int, str]] = []
    params: dict[str, object] = {"limit": 1000}
    pages = 0
    window = None
    for _ in range(20):
        response = get(client, project, params)
        assert response.status_code == 200, response.text
        body = response.json()
        window = window or body["window"]
        assert body["window"] == window, "later pages read the same pinned window"
        pages += 1
        seen += [r["record_id"] for r in body["records"]]
        keys += [(r["timestamp_unix_nano"], r["record_id"]) for r in body["records"]]
        if body["next_cursor"] is None:
            break
        assert len(body["records"]) == 1000
        params = {"limit": 1000, "cursor": body["next_cursor"]}
        # New records arriving while paging are after the pinned window's end: never visited.
        post(client, project, [{"type": "event", "name": "late"}])
    assert pages == 10
    assert len(seen) == 10_000
    assert len(set(seen)) == 10_000
    assert set(seen) == set(posted)
    assert keys == sorted(keys, reverse=True), "newest first, ties broken by record ID"


def test_paging_with_a_filter_and_a_small_limit_is_exact(server, client):
    project = new_project(server, "small pages")
    now = time.time_ns()
    ids = post(
        client,
        project,
        [
            {"type": "error" if i % 3 else "event", "name": "n", "timestamp": now - MINUTE_NS - (i // 4)}
            for i in range(50)
        ],
    )
    errors = {rid for i, rid in enumerate(ids) if i % 3}
    seen: list[str] = []
    params: dict[str, object] = {"limit": 3, "type": "error"}
    for _ in range(100):
        body = get(client, project, params).json()
        assert len(body["records"]) <= 3
        seen += [r["record_id"] for r in body["records"]]
        if body["next_cursor"] is None:
            break
        params = {"limit": 3, "type": "error", "cursor": body["next_cursor"]}
    assert len(seen) == len(errors) == len(set(seen))
    assert set(seen) == errors


def test_a_page_that_ends_exactly_at_the_last_record_has_no_cursor(server, client):
    project = new_project(server, "exact page")
    ids = post(client, project, [{"type": "event", "name": f"e{i}"} for i in range(5)])
    body = get(client, project, {"limit": 5}).json()
    assert sorted(r["record_id"] for r in body["records"]) == sorted(ids)
    assert body["next_cursor"] is None
    first = get(client, project, {"limit": 4}).json()
    assert len(first["records"]) == 4 and first["next_cursor"]
    second = get(client, project, {"limit": 4, "cursor": first["next_cursor"]}).json()
    assert len(second["records"]) == 1 and second["next_cursor"] is None
    assert {r["record_id"] for r in first["records"] + second["records"]} == set(ids)


def test_default_limit_is_100(server, client):
    project = new_project(server, "default limit")
    post(client, project, [{"type": "event", "name": "e"} for _ in range(150)])
    body = get(client, project, {}).json()
    assert len(body["records"]) == 100
    assert body["next_cursor"]


# ---------------------------------------------------------------- filters

SERVICES = ("checkout", "search", "auth")
TYPES = ("error", "tool_failure", "latency", "user_signal", "event")


@pytest.fixture(scope="module")
def corpus(server: Running, client: httpx.Client) -> tuple[Project, list[dict]]:
    """A project with 60 varied records; returns the project and the records with their IDs."""
    project = new_project(server, "filters")
    now = time.time_ns()
    records = []
    for i in range(60):
        record = {
            "type": TYPES[i % 5],
            "name": f"op-{i % 4}",
            "service": SERVICES[i % 3],
            "timestamp": now - (i + 1) * 1_000_000_000,
        }
        if i % 2:
            record["session_id"] = f"s-{i % 6}"
        if i % 5 != 4:
            record["trace_id"] = f"{i % 7 + 1:032x}"
            record["span_id"] = f"{i + 1:016x}"
        records.append(record)
    ids = post(client, project, records)
    for record, rid in zip(records, ids, strict=True):
        record["record_id"] = rid
    return project, records


FILTER_CASES = [
    {"type": ["error"]},
    {"type": ["error", "latency"]},
    {"type": ["span"]},
    {"name": ["op-1"]},
    {"name": ["op-1", "op-3"]},
    {"service": ["search"]},
    {"service": ["search", "auth", "nope"]},
    {"trace_id": [f"{3:032x}"]},
    {"trace_id": [f"{3:032x}", f"{5:032x}"]},
    {"session_id": ["s-1"]},
    {"session_id": ["s-1", "s-3"]},
    {"type": ["error", "tool_failure"], "service": ["checkout"]},
    {"name": ["op-1"], "session_id": ["s-1", "s-3", "s-5"], "service": ["auth", "search"]},
    {"name": ["unknown"]},
]


@pytest.mark.parametrize("filters", FILTER_CASES, ids=[json.dumps(f, sort_keys=True) for f in FILTER_CASES])
def test_each_filter_returns_exactly_the_matching_records(client, corpus, filters):
    project, records = corpus
    expected = {r["record_id"] for r in records if all(r.get(field) in values for field, values in filters.items())}
    params = [("limit", "1000"), *[(field, value) for field, values in filters.items() for value in values]]
    got = ids_of(client, project, params)
    assert len(got) == len(set(got))
    assert set(got) == expected
    if filters != {"name": ["unknown"]} and filters != {"type": ["span"]}:
        assert expected, "the case must match something"


def test_record_id_filter_with_one_and_several_values(client, corpus):
    project, records = corpus
    picked = [records[0]["record_id"], records[17]["record_id"], records[42]["record_id"]]
    assert ids_of(client, project, {"record_id": picked[0]}) == [picked[0]]
    got = ids_of(client, project, [("record_id", rid) for rid in picked] + [("record_id", "rec_" + "0" * 24)])
    assert sorted(got) == sorted(picked)


def test_filters_are_exact_matches_not_patterns(client, corpus):
    project, _ = corpus
    assert ids_of(client, project, {"name": "op-%"}) == []
    assert ids_of(client, project, {"name": "op"}) == []
    assert ids_of(client, project, {"service": "CHECKOUT"}) == []


# ---------------------------------------------------------------- windows


def test_since_minutes_and_until_bound_the_window_exactly(server, client):
    project = new_project(server, "window")
    until = 1767322800_000_000_000  # 2026-01-02T03:00:00Z
    start = until - 10 * MINUTE_NS
    offsets = {
        "long before": start - 60 * MINUTE_NS,
        "just before start": start - 1,
        "at start": start,
        "after start": start + 1,
        "middle": start + 5 * MINUTE_NS,
        "just before end": until - 1,
        "at end": until,
        "after end": until + 1,
        "far future": until + 60 * MINUTE_NS,
    }
    ids = dict(
        zip(
            offsets,
            post(client, project, [{"type": "event", "name": k, "timestamp": v} for k, v in offsets.items()]),
            strict=True,
        )
    )
    inside = {ids[k] for k in ("at start", "after start", "middle", "just before end")}

    for until_param in ("2026-01-02T03:00:00Z", "2026-01-02T04:00:00+01:00", str(until)):
        response = get(client, project, {"since_minutes": 10, "until": until_param, "limit": 1000})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["window"] == {"start": "2026-01-02T02:50:00.000000Z", "end": "2026-01-02T03:00:00.000000Z"}
        assert {r["record_id"] for r in body["records"]} == inside
        assert len(body["records"]) == 4

    half = get(client, project, {"since_minutes": 0.5, "until": "2026-01-02T02:55:30Z"}).json()
    assert half["window"] == {"start": "2026-01-02T02:55:00.000000Z", "end": "2026-01-02T02:55:30.000000Z"}
    assert [r["record_id"] for r in half["records"]] == [ids["middle"]]

    wide = ids_of(client, project, {"since_minutes": 71, "until": "2026-01-02T03:00:00.000000001Z"})
    assert set(wide) == set(ids.values()) - {ids["after end"], ids["far future"]}


def test_the_default_window_is_the_last_60_minutes(server, client):
    project = new_project(server, "default window")
    now = time.time_ns()
    ids = post(
        client,
        project,
        [
            {"type": "event", "name": "61 min ago", "timestamp": now - 61 * MINUTE_NS},
            {"type": "event", "name": "59 min ago", "timestamp": now - 59 * MINUTE_NS},
            {"type": "event", "name": "now"},
            {"type": "event", "name": "in 10 min", "timestamp": now + 10 * MINUTE_NS},
        ],
    )
    before = time.time_ns()
    body = get(client, project, {}).json()
    after = time.time_ns()
    assert {r["record_id"] for r in body["records"]} == {ids[1], ids[2]}
    start = datetime.fromisoformat(body["window"]["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(body["window"]["end"].replace("Z", "+00:00"))
    assert RFC3339.match(body["window"]["start"]) and RFC3339.match(body["window"]["end"])
    assert (end - start).total_seconds() == 3600
    assert before // 1000 - 1 <= int(end.timestamp() * 1_000_000) <= after // 1000 + 1
    longer = ids_of(client, project, {"since_minutes": 120})
    assert set(longer) == {ids[0], ids[1], ids[2]}


# ---------------------------------------------------------------- bad parameters


def _cursor(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@dataclass(frozen=True)
class _Forged:
    """A cursor to sign with the server's own key for the test's project (known only once the server runs)."""

    start: int
    end: int
    ts: object
    rid: object

    def sign(self, server: Running, project: Project) -> str:
        key = server.app.store.cursor_key(project.project_id)
        return encode_cursor(WindowQuery(self.start, self.end), (self.ts, self.rid), key)  # type: ignore[arg-type]


def _forged(start: int, end: int, ts: object, rid: object) -> _Forged:
    return _Forged(start, end, ts, rid)


BAD_PARAMS = [
    ({"limit": "0"}, "limit must be between 1 and 1000"),
    ({"limit": "1001"}, "limit must be between 1 and 1000"),
    ({"limit": "-5"}, "limit must be between 1 and 1000"),
    ({"limit": "x"}, "limit must be an integer"),
    ({"limit": "1.5"}, "limit must be an integer"),
    ({"limit": ""}, "limit must be an integer"),
    ({"since_minutes": "-1"}, SINCE_RANGE),
    ({"since_minutes": "0"}, SINCE_RANGE),
    ({"since_minutes": "1e12"}, SINCE_RANGE),
    ({"since_minutes": "5270401"}, SINCE_RANGE),
    ({"since_minutes": "nan"}, "since_minutes must be a finite number"),
    ({"since_minutes": "inf"}, "since_minutes must be a finite number"),
    ({"since_minutes": "abc"}, "since_minutes must be a number"),
    ({"until": "yesterday"}, UNTIL_REASON),
    ({"until": "2026-01-02"}, UNTIL_REASON),
    ({"until": "2026-01-02T03:04:05"}, UNTIL_REASON),
    ({"until": "99999999999999999999"}, UNTIL_REASON),
    ({"until": "9999999999999999999"}, UNTIL_REASON),
    ({"until": "9999-12-31T23:59:59Z"}, UNTIL_REASON),
    ({"until": "1969-12-31T23:59:59Z"}, UNTIL_REASON),
    ({"until": "-5"}, UNTIL_REASON),
    ({"foo": "1"}, "unknown parameter(s) foo; allowed: "),
    ({"since": "60"}, "unknown parameter(s) since; allowed: "),
    ({"type": "x" * 1025}, "type: at most 50 values of at most 1024 characters"),
    ([("name", str(i)) for i in range(51)], "name: at most 50 values of at most 1024 characters"),
    ({"cursor": "not-a-cursor!!"}, CURSOR_REASON),
    ({"cursor": "eyJzIjo"}, CURSOR_REASON),
    ({"cursor": _cursor({"s": 0})}, CURSOR_REASON),
    ({"cursor": _cursor({"s": 0, "e": 1, "t": 1, "r": "rec_x"})}, CURSOR_REASON),
    ({"cursor": _cursor([1, 2, 3])}, CURSOR_REASON),
    # Cursors made (and signed) by LoopKit's own encoder, but with values no real page produces.
    ({"cursor": _forged(-1, 1, 1, "rec_x")}, CURSOR_REASON),
    ({"cursor": _forged(0, 2**63, 1, "rec_x")}, CURSOR_REASON),
    ({"cursor": _forged(10, 1, 1, "rec_x")}, CURSOR_REASON),
    ({"cursor": _forged(0, 1, True, "rec_x")}, CURSOR_REASON),
    ({"cursor": _forged(0, 1, 1, "r" * 41)}, CURSOR_REASON),
    ({"cursor": _forged(0, 1, 1, 5)}, CURSOR_REASON),
]


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS, ids=[str(i) for i in range(len(BAD_PARAMS))])
def test_bad_parameters_are_a_400_with_a_clear_message(server, client, params, message):
    project = read_project(server)
    if isinstance(params, dict) and isinstance(params.get("cursor"), _Forged):
        params = {**params, "cursor": params["cursor"].sign(server, project)}
    response = get(client, project, params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["ok"] is False
    assert body["error"]["code"] == "bad_request"
    assert body["error"]["message"].startswith(message), body["error"]["message"]


_READ_PROJECT: dict[int, Project] = {}


def read_project(server: Running) -> Project:
    """One project shared by the bad-parameter cases (nothing is written to it)."""
    if id(server) not in _READ_PROJECT:
        _READ_PROJECT[id(server)] = new_project(server, "bad params")
    return _READ_PROJECT[id(server)]


def test_a_tampered_real_cursor_is_refused(server, client):
    project = new_project(server, "tamper")
    post(client, project, [{"type": "event", "name": "e"} for _ in range(3)])
    cursor = get(client, project, {"limit": 1}).json()["next_cursor"]
    assert cursor
    flipped = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    digit = cursor[:20] + ("M" if cursor[20] != "M" else "N") + cursor[21:]
    for bad in (cursor[: len(cursor) // 2], cursor + "!", "x" + cursor, cursor[:5] + "%" + cursor[6:], flipped, digit):
        response = get(client, project, {"limit": 1, "cursor": bad})
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["message"] == CURSOR_REASON
    assert get(client, project, {"limit": 1, "cursor": cursor}).status_code == 200


def test_unknown_record_id_is_a_404_in_the_error_shape(server, client):
    project = read_project(server)
    for record_id in ("rec_" + "0" * 24, "nope", "x" * 2000):
        response = client.get(f"/v1/records/{record_id}", headers=project.auth("agent"))
        assert response.status_code == 404
        body = response.json()
        assert body["ok"] is False and body["error"]["code"] == "not_found"
        assert body["error"]["message"].startswith("no record ")


# ---------------------------------------------------------------- the record object

FIELDS = {
    "record_id": str,
    "type": str,
    "name": str,
    "service": str,
    "timestamp": str,
    "duration_ms": (int, float),
    "status": str,
    "message": str,
    "trace_id": (str, type(None)),
    "span_id": (str, type(None)),
    "parent_span_id": (str, type(None)),
    "session_id": (str, type(None)),
    "user_id": (str, type(None)),
    "attributes": dict,
    "resource": dict,
    "events": list,
    "fingerprint": (str, type(None)),
}


def check_record(record: dict) -> None:
    """Every field product.md names, with its type and format."""
    for field, kind in FIELDS.items():
        assert field in record, field
        assert isinstance(record[field], kind), (field, record[field])
    assert RECORD_ID.match(record["record_id"])
    assert record["type"] in ("error", "tool_failure", "latency", "user_signal", "event", "span")
    assert record["status"] in ("ok", "error", "unset")
    assert RFC3339.match(record["timestamp"])
    assert record["duration_ms"] >= 0
    for field, pattern in (("trace_id", HEX32), ("span_id", HEX16), ("parent_span_id", HEX16)):
        assert record[field] is None or pattern.match(record[field]), (field, record[field])


def test_a_plain_record_has_every_documented_field(server, client):
    project = new_project(server, "fields")
    ts = time.time_ns() - MINUTE_NS
    [rid] = post(
        client,
        project,
        [
            {
                "type": "user_signal",
                "name": "thumbs_down",
                "message": "wrong answer",
                "timestamp": ts,
                "duration_ms": 250,
                "status": "ok",
                "trace_id": "AB" * 16,
                "span_id": "CD" * 8,
                "session_id": "sess",
                "user_id": "u1",
                "service": "chat",
                "attributes": {"score": -1},
            }
        ],
    )
    listed = get(client, project, {"record_id": rid}).json()["records"]
    assert len(listed) == 1
    record = listed[0]
    check_record(record)
    single = client.get(f"/v1/records/{rid}", headers=project.auth("agent")).json()
    assert single == {"ok": True, "record": record}
    expected = {
        "record_id": rid,
        "type": "user_signal",
        "name": "thumbs_down",
        "service": "chat",
        "timestamp": rfc3339(ts),
        "duration_ms": 250,
        "status": "ok",
        "message": "wrong answer",
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "parent_span_id": None,
        "session_id": "sess",
        "user_id": "u1",
        "attributes": {"score": -1},
        "resource": {"service.name": "chat"},
        "events": [],
    }
    assert {k: record[k] for k in expected} == expected


def test_an_otlp_span_has_every_documented_field(server, client):
    project = new_project(server, "span fields")
    start = time.time_ns() - MINUTE_NS
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "parentSpanId": "eee19b7ec3c1b173",
        "name": "POST /checkout",
        "kind": 2,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 1_500_000),
        "attributes": [{"key": "session.id", "value": {"stringValue": "s-9"}}],
        "events": [
            {
                "name": "exception",
                "timeUnixNano": str(start + 1_000_000),
                "attributes": [
                    {"key": "exception.type", "value": {"stringValue": "ValueError"}},
                    {"key": "exception.message", "value": {"stringValue": "bad card"}},
                ],
            }
        ],
        "status": {"code": 2, "message": "failed"},
    }
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": [span]}],
            }
        ]
    }
    response = client.post("/v1/traces", json=doc, headers=project.auth("producer"))
    assert response.status_code == 200, response.text
    [record] = get(client, project, {}).json()["records"]
    check_record(record)
    assert record["type"] == "error"
    assert record["status"] == "error"
    assert record["message"] == "bad card"
    assert record["service"] == "shop"
    assert record["duration_ms"] == 1.5
    assert record["timestamp"] == rfc3339(start)
    assert (record["trace_id"], record["span_id"], record["parent_span_id"]) == (
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        "eee19b7ec3c1b173",
    )
    assert record["session_id"] == "s-9"
    assert record["resource"] == {"service.name": "shop"}
    assert len(record["events"]) == 1
    assert record["events"][0]["name"] == "exception"
    assert record["events"][0]["attributes"]["exception.type"] == "ValueError"


def test_each_resource_is_stored_once_and_every_record_reads_back_its_own(server, client):
    project = new_project(server, "resources")
    start = time.time_ns() - MINUTE_NS

    def resource_spans(service: str, host: str, first: int) -> dict:
        attributes = [{"key": k, "value": {"stringValue": v}} for k, v in (("service.name", service), ("host", host))]
        spans = [
            {
                "traceId": f"{first + n + 1:032x}",
                "spanId": f"{first + n + 1:016x}",
                "name": "op",
                "startTimeUnixNano": str(start + n),
                "endTimeUnixNano": str(start + n + 1000),
            }
            for n in range(50)
        ]
        return {"resource": {"attributes": attributes}, "scopeSpans": [{"spans": spans}]}

    # Three resources over two requests; one (api on h1) is in both.
    for body in (
        {"resourceSpans": [resource_spans("api", "h1", 0), resource_spans("api", "h2", 100)]},
        {"resourceSpans": [resource_spans("api", "h1", 200), resource_spans("worker", "h1", 300)]},
    ):
        assert client.post("/v1/traces", json=body, headers=project.auth("producer")).status_code == 200
    records = get(client, project, {"limit": 1000}).json()["records"]
    assert len(records) == 200
    by_resource = {}
    for record in records:
        by_resource.setdefault(json.dumps(record["resource"], sort_keys=True), set()).add(int(record["span_id"], 16))
    assert by_resource == {
        json.dumps({"host": "h1", "service.name": "api"}): set(range(1, 51)) | set(range(201, 251)),
        json.dumps({"host": "h2", "service.name": "api"}): set(range(101, 151)),
        json.dumps({"host": "h1", "service.name": "worker"}): set(range(301, 351)),
    }
    record_id = records[0]["record_id"]
    assert (
        client.get(f"/v1/records/{record_id}", headers=project.auth("agent")).json()["record"]["resource"]
        == (records[0]["resource"])
    )
    with server.app.store.project(project.project_id).connect() as conn:
        assert conn.execute(select(func.count()).select_from(resources)).scalar() == 3
        rows = conn.execute(select(schema_records.c.resource, schema_records.c.resource_key)).all()
    assert {resource for resource, _ in rows} == {""} and len({key for _, key in rows}) == 3


def test_a_page_writes_stored_json_exactly_as_a_single_record_read_parses_it(server, client):
    # The page splices the stored attributes, events and links into its answer unparsed; one record's read parses
    # them. Both must say the same, for values that JSON escapes, that PostgreSQL's text escapes, and for JSON
    # stored with other spacing than LoopKit writes today.
    project = new_project(server, "spliced")
    start = time.time_ns() - MINUTE_NS
    hostile = ["nul \x00 here", "\ufffe0 and \ufffe\ufffe", 'quote " back \\ slash', "tab\tnew\nline", "é 漢字 🚀"]
    attributes = [{"key": f"k{i}", "value": {"stringValue": v}} for i, v in enumerate(hostile)]
    attributes += [
        {"key": "big", "value": {"intValue": str(2**63 - 1)}},
        {"key": "neg", "value": {"doubleValue": -0.000123}},
        {"key": "list", "value": {"arrayValue": {"values": [{"boolValue": True}, {"stringValue": "\x00"}]}}},
        {"key": "map", "value": {"kvlistValue": {"values": [{"key": "in", "value": {"intValue": "-7"}}]}}},
    ]
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "op \x00",
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 1000),
        "attributes": attributes,
        "events": [{"name": "e\ufffe", "timeUnixNano": str(start + 10), "attributes": attributes[:3]}],
        "links": [{"traceId": "ab" * 16, "spanId": "cd" * 8, "attributes": attributes[3:5]}],
    }
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    assert client.post("/v1/traces", json=doc, headers=project.auth("producer")).status_code == 200
    [record] = get(client, project, {}).json()["records"]
    single = client.get(f"/v1/records/{record['record_id']}", headers=project.auth("agent")).json()["record"]
    assert record == single
    assert record["attributes"] == {
        **{f"k{i}": v for i, v in enumerate(hostile)},
        "big": 2**63 - 1,
        "neg": -0.000123,
        "list": [True, "\x00"],
        "map": {"in": -7},
    }
    assert [e["name"] for e in record["events"]] == ["e\ufffe"]
    assert record["events"][0]["attributes"] == {f"k{i}": v for i, v in enumerate(hostile[:3])}
    assert record["links"][0]["attributes"] == {"k3": hostile[3], "k4": hostile[4]}

    # JSON as an older writer may have stored it, spaced: still one valid answer, the same values.
    spaced = json.dumps({"a": [1, 2.5, None], "b": {"c": "\x00"}}, indent=2)
    with server.app.store.project(project.project_id).begin() as conn:
        values = {"attributes": spaced, "events": "[ ]", "links": " [] "}
        if conn.dialect.name == "postgresql":  # one partitioned table
            conn.execute(schema_records.update().values(**values))
        else:  # a table a day, each updated by name
            for table in day_tables.record_tables(conn.connection.driver_connection):
                sql = f'UPDATE "{table}" SET attributes = :attributes, events = :events, links = :links'
                conn.execute(text(sql), values)
    page = get(client, project, {})
    assert page.status_code == 200
    [record] = page.json()["records"]
    assert (record["attributes"], record["events"], record["links"]) == (
        {"a": [1, 2.5, None], "b": {"c": "\x00"}},
        [],
        [],
    )
    single = client.get(f"/v1/records/{record['record_id']}", headers=project.auth("agent")).json()["record"]
    assert record == single
