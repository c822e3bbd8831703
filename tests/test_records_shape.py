"""The plain records shape on POST /v1/traces: exact answers, per-record validation, dedup and hostile input."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import Project, make_settings, new_project

from loopkit_core.model import rfc3339
from loopkit_core.server import Running, in_thread

RECORD_ID = re.compile(r"^rec_[0-9a-f]{24}$")
TYPES_REASON = "type must be one of error, event, latency, log, tool_failure, user_signal"
TIMESTAMP_REASON = "timestamp must be RFC 3339 (e.g. 2026-01-02T03:04:05Z) or unix nanoseconds"
GOOD = {"type": "event", "name": "good"}
NESTED_REASON = "attributes.a must be a string, number, boolean, null or a list of them"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One LoopKit for the module (the validation cases are many and independent)."""
    with in_thread(make_settings(tmp_path_factory.mktemp("records") / "data")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Running) -> Iterator[httpx.Client]:
    """An HTTP client for the module's server."""
    with httpx.Client(base_url=server.http_url, timeout=30) as c:
        yield c


@pytest.fixture
def project(server: Running) -> Project:
    """A fresh project per test, so counts read back are exact."""
    return new_project(server, "records shape")


def post(client: httpx.Client, project: Project, records: object) -> httpx.Response:
    """POST a records body with the project's producer key."""
    return client.post("/v1/traces", json={"records": records}, headers=project.auth("producer"))


def post_raw(client: httpx.Client, project: Project, body: bytes) -> httpx.Response:
    """POST raw JSON bytes (for bodies json.dumps would refuse to write)."""
    headers = {**project.auth("producer"), "content-type": "application/json"}
    return client.post("/v1/traces", content=body, headers=headers)


def stored_ids(client: httpx.Client, project: Project) -> list[str]:
    """Every record ID of the project in a wide window (one page is enough for these tests)."""
    response = client.get(
        "/v1/telemetry", params={"since_minutes": 10 * 365 * 24 * 60, "limit": 1000}, headers=project.auth("agent")
    )
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return [r["record_id"] for r in response.json()["records"]]


def read(client: httpx.Client, project: Project, record_id: str) -> dict:
    """One record through GET /v1/records/{id}."""
    response = client.get(f"/v1/records/{record_id}", headers=project.auth("agent"))
    assert response.status_code == 200, response.text
    return response.json()["record"]


def assert_alive(client: httpx.Client, project: Project) -> None:
    """The server still answers health checks and stores a good record."""
    assert client.get("/healthz").status_code == 200
    response = post(client, project, [GOOD])
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1


def test_answer_is_exact_and_ids_line_up_with_the_posted_records(client, project):
    response = post(client, project, [{"type": "error", "name": "a"}, {"type": "nope", "name": "b"}, GOOD])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    ids = body["record_ids"]
    assert len(ids) == 3
    assert RECORD_ID.match(ids[0]) and RECORD_ID.match(ids[2]) and ids[0] != ids[2]
    assert body == {
        "ok": True,
        "accepted": 2,
        "rejected": 1,
        "record_ids": [ids[0], None, ids[2]],
        "errors": [{"index": 1, "reason": TYPES_REASON}],
    }
    assert sorted(stored_ids(client, project)) == sorted([ids[0], ids[2]])
    assert read(client, project, ids[0])["name"] == "a"
    assert read(client, project, ids[2])["name"] == "good"


def test_empty_records_list_is_a_success_with_nothing_stored(client, project):
    response = post(client, project, [])
    assert response.status_code == 200
    assert response.json() == {"ok": True, "accepted": 0, "rejected": 0, "record_ids": [], "errors": []}
    assert stored_ids(client, project) == []


INVALID = [
    ("not an object", "x", "record must be a JSON object"),
    ("null record", None, "record must be a JSON object"),
    ("list record", [GOOD], "record must be a JSON object"),
    ("type missing", {"name": "n"}, TYPES_REASON),
    ("type wrong case", {"type": "ERROR", "name": "n"}, TYPES_REASON),
    ("type span is not explicit", {"type": "span", "name": "n"}, TYPES_REASON),
    ("type number", {"type": 1, "name": "n"}, TYPES_REASON),
    ("name missing", {"type": "event"}, "name must be a non-empty string"),
    ("name empty", {"type": "event", "name": ""}, "name must be a non-empty string"),
    ("name blank", {"type": "event", "name": "   "}, "name must be a non-empty string"),
    ("name number", {"type": "event", "name": 5}, "name must be a non-empty string"),
    ("name too long", {"type": "event", "name": "n" * 1025}, "name must be at most 1024 characters"),
    ("message number", {"type": "event", "name": "n", "message": 5}, "message must be a string"),
    ("message object", {"type": "event", "name": "n", "message": {"a": 1}}, "message must be a string"),
    (
        "message too long",
        {"type": "event", "name": "n", "message": "m" * (64 * 1024 + 1)},
        "message must be at most 65536 characters",
    ),
    ("timestamp words", {"type": "event", "name": "n", "timestamp": "yesterday"}, TIMESTAMP_REASON),
    ("timestamp date only", {"type": "event", "name": "n", "timestamp": "2026-01-02"}, TIMESTAMP_REASON),
    ("timestamp no offset", {"type": "event", "name": "n", "timestamp": "2026-01-02T03:04:05"}, TIMESTAMP_REASON),
    ("timestamp basic format", {"type": "event", "name": "n", "timestamp": "20260102T030405Z"}, TIMESTAMP_REASON),
    ("timestamp trailing junk", {"type": "event", "name": "n", "timestamp": "2026-01-02T03:04:05Zx"}, TIMESTAMP_REASON),
    ("timestamp bad day", {"type": "event", "name": "n", "timestamp": "2026-02-30T00:00:00Z"}, TIMESTAMP_REASON),
    ("timestamp float", {"type": "event", "name": "n", "timestamp": 1.5e18}, TIMESTAMP_REASON),
    ("timestamp bool", {"type": "event", "name": "n", "timestamp": True}, TIMESTAMP_REASON),
    ("timestamp zero", {"type": "event", "name": "n", "timestamp": 0}, "timestamp is out of range"),
    ("timestamp negative", {"type": "event", "name": "n", "timestamp": -1}, "timestamp is out of range"),
    ("timestamp past int64", {"type": "event", "name": "n", "timestamp": 2**63}, "timestamp is out of range"),
    (
        "timestamp before 1970",
        {"type": "event", "name": "n", "timestamp": "1969-12-31T23:59:59Z"},
        "timestamp is out of range",
    ),
    ("duration string", {"type": "latency", "name": "n", "duration_ms": "5"}, "duration_ms must be a finite number"),
    ("duration bool", {"type": "latency", "name": "n", "duration_ms": True}, "duration_ms must be a finite number"),
    ("duration negative", {"type": "latency", "name": "n", "duration_ms": -1}, "duration_ms must not be negative"),
    ("duration huge", {"type": "latency", "name": "n", "duration_ms": 1e308}, "duration_ms is out of range"),
    ("status unknown", {"type": "event", "name": "n", "status": "failed"}, "status must be one of ok, error, unset"),
    ("status number", {"type": "event", "name": "n", "status": 2}, "status must be one of ok, error, unset"),
    ("trace_id not hex", {"type": "event", "name": "n", "trace_id": "z" * 32}, "trace_id must be 32 hex characters"),
    ("trace_id short", {"type": "event", "name": "n", "trace_id": "a" * 31}, "trace_id must be 32 hex characters"),
    ("trace_id long", {"type": "event", "name": "n", "trace_id": "a" * 33}, "trace_id must be 32 hex characters"),
    ("trace_id zero", {"type": "event", "name": "n", "trace_id": "0" * 32}, "trace_id must be 32 hex characters"),
    # re.match with "$" let a final newline through: the span was stored once per spelling.
    ("trace_id newline", {"type": "event", "name": "n", "trace_id": "ab" * 16 + "\n"}, "trace_id must be 32 hex"),
    ("span_id newline", {"type": "event", "name": "n", "span_id": "cd" * 8 + "\n"}, "span_id must be 16 hex"),
    ("trace_id number", {"type": "event", "name": "n", "trace_id": 12}, "trace_id must be 32 hex characters"),
    ("span_id short", {"type": "event", "name": "n", "span_id": "a" * 15}, "span_id must be 16 hex characters"),
    ("span_id zero", {"type": "event", "name": "n", "span_id": "0" * 16}, "span_id must be 16 hex characters"),
    ("session_id number", {"type": "event", "name": "n", "session_id": 5}, "session_id must be a string"),
    ("user_id list", {"type": "event", "name": "n", "user_id": ["u"]}, "user_id must be a string"),
    ("service object", {"type": "event", "name": "n", "service": {}}, "service must be a string"),
    ("service too long", {"type": "event", "name": "n", "service": "s" * 1025}, "service must be at most 1024"),
    ("attributes nested object", {"type": "event", "name": "n", "attributes": {"a": {"b": 1}}}, NESTED_REASON),
    ("attributes list of objects", {"type": "event", "name": "n", "attributes": {"a": [{"b": 1}]}}, NESTED_REASON),
    ("attributes list of lists", {"type": "event", "name": "n", "attributes": {"a": [[1]]}}, NESTED_REASON),
    ("attributes string", {"type": "event", "name": "n", "attributes": "a=1"}, "attributes must be a flat JSON object"),
    ("attributes list", {"type": "event", "name": "n", "attributes": []}, "attributes must be a flat JSON object"),
    ("attributes false", {"type": "event", "name": "n", "attributes": False}, "attributes must be a flat JSON object"),
]


@pytest.mark.parametrize(("record", "reason"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_an_invalid_record_is_rejected_alone_with_its_index_and_reason(client, project, record, reason):
    response = post(client, project, [GOOD, record, GOOD])
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert body["record_ids"][1] is None
    assert all(RECORD_ID.match(body["record_ids"][i]) for i in (0, 2))
    assert len(body["errors"]) == 1
    assert body["errors"][0]["index"] == 1
    assert body["errors"][0]["reason"].startswith(reason), body["errors"][0]["reason"]
    assert sorted(stored_ids(client, project)) == sorted([body["record_ids"][0], body["record_ids"][2]])


def test_many_bad_records_among_good_ones_are_counted_exactly(client, project):
    records = [case[1] if i % 2 else {"type": "event", "name": f"good-{i}"} for i, case in enumerate(INVALID)]
    response = post(client, project, records)
    assert response.status_code == 200
    body = response.json()
    bad = [i for i in range(len(INVALID)) if i % 2]
    assert body["rejected"] == len(bad)
    assert body["accepted"] == len(INVALID) - len(bad)
    assert [e["index"] for e in body["errors"]] == bad
    assert [i for i, rid in enumerate(body["record_ids"]) if rid is None] == bad
    good_ids = [rid for rid in body["record_ids"] if rid is not None]
    assert len(set(good_ids)) == len(good_ids)
    assert sorted(stored_ids(client, project)) == sorted(good_ids)
    assert {read(client, project, rid)["name"] for rid in good_ids} == {
        f"good-{i}" for i in range(len(INVALID)) if i % 2 == 0
    }


def test_every_valid_field_is_stored_as_sent(client, project):
    record = {
        "type": "tool_failure",
        "name": "search_flights",
        "message": "upstream timed out after 3 tries",
        "timestamp": "2026-01-02T03:04:05.123456789Z",
        "duration_ms": 12.5,
        "status": "ERROR",
        "trace_id": "0123456789ABCDEF0123456789ABCDEF",
        "span_id": "0123456789ABCDEF",
        "session_id": "sess-1",
        "user_id": "user-7",
        "service": "travel-agent",
        "attributes": {"s": "x", "i": 3, "f": 1.5, "b": True, "n": None, "l": [1, "two", False], "exception.type": "E"},
    }
    response = post(client, project, [record])
    assert response.status_code == 200
    record_id = response.json()["record_ids"][0]
    stored = read(client, project, record_id)
    assert stored["record_id"] == record_id
    assert stored["type"] == "tool_failure"
    assert stored["name"] == "search_flights"
    assert stored["message"] == "upstream timed out after 3 tries"
    assert stored["timestamp"] == "2026-01-02T03:04:05.123456Z"
    assert stored["timestamp_unix_nano"] == 1767323045123456789
    assert stored["duration_ms"] == 12.5
    assert stored["end_timestamp"] == "2026-01-02T03:04:05.135956Z"
    assert stored["status"] == "error"
    assert stored["trace_id"] == "0123456789abcdef0123456789abcdef"
    assert stored["span_id"] == "0123456789abcdef"
    assert stored["parent_span_id"] is None
    assert stored["session_id"] == "sess-1"
    assert stored["user_id"] == "user-7"
    assert stored["service"] == "travel-agent"
    assert stored["exception_type"] == "E"
    assert stored["attributes"] == record["attributes"]
    assert stored["resource"] == {"service.name": "travel-agent"}
    assert stored["events"] == []


def test_defaults_for_optional_fields(client, project):
    before = time.time_ns()
    response = post(client, project, [{"type": "error", "name": "a"}, {"type": "latency", "name": "b"}])
    after = time.time_ns()
    first, second = (read(client, project, rid) for rid in response.json()["record_ids"])
    for stored in (first, second):
        assert before <= stored["timestamp_unix_nano"] <= after
        assert stored["message"] == ""
        assert stored["duration_ms"] == 0
        assert stored["service"] == "unknown_service"
        assert stored["attributes"] == {}
        assert (stored["trace_id"], stored["span_id"], stored["session_id"], stored["user_id"]) == (None,) * 4
    # An error or tool failure without a status is an error; anything else is unset.
    assert (first["status"], second["status"]) == ("error", "unset")


@pytest.mark.parametrize(
    ("timestamp", "unix_nano"),
    [
        ("2026-01-02T03:04:05Z", 1767323045000000000),
        ("2026-01-02t03:04:05.5z", 1767323045500000000),
        ("2026-01-02 03:04:05+01:00", 1767319445000000000),
        ("2026-01-02T08:34:05.000000001+05:30", 1767323045000000001),
        (1767323045999999999, 1767323045999999999),
        ("1767323045999999999", 1767323045999999999),  # unix ns as a string, as JavaScript clients send it
    ],
)
def test_timestamps_in_rfc3339_or_unix_nanoseconds(client, project, timestamp, unix_nano):
    response = post(client, project, [{"type": "event", "name": "t", "timestamp": timestamp}])
    assert response.json()["accepted"] == 1, response.text
    stored = read(client, project, response.json()["record_ids"][0])
    assert stored["timestamp_unix_nano"] == unix_nano
    seconds, nanos = divmod(unix_nano, 1_000_000_000)
    assert stored["timestamp"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"


def test_a_record_with_trace_and_span_id_resent_is_stored_once_with_the_same_id(client, project):
    trace, span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    first = post(
        client, project, [{"type": "error", "name": "pay", "message": "first", "trace_id": trace, "span_id": span}]
    )
    again = post(
        client,
        project,
        [
            {"type": "error", "name": "pay", "message": "second", "trace_id": trace, "span_id": span},
            {"type": "error", "name": "pay", "message": "third", "trace_id": trace.upper(), "span_id": span.upper()},
        ],
    )
    record_id = first.json()["record_ids"][0]
    assert RECORD_ID.match(record_id)
    assert again.json()["record_ids"] == [record_id, record_id]
    assert again.json()["accepted"] == 2
    assert stored_ids(client, project) == [record_id]
    # The first copy wins.
    assert read(client, project, record_id)["message"] == "first"
    filtered = client.get("/v1/telemetry", params={"trace_id": trace}, headers=project.auth("agent")).json()
    assert [r["record_id"] for r in filtered["records"]] == [record_id]


def test_a_span_resent_with_another_timestamp_is_still_stored_once_and_answered_with_its_stored_id(client, project):
    trace, span = "5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7"
    record = {"type": "error", "name": "pay", "trace_id": trace, "span_id": span}
    # Milliseconds apart, near now: on PostgreSQL a resend is recognised on the same UTC day (docs/records.md).
    at = time.time_ns()
    first = post(client, project, [{**record, "message": "first", "timestamp": rfc3339(at)}])
    record_id = first.json()["record_ids"][0]
    # Retries with another timestamp, with none (the server's clock) and twice in one POST: one record, one ID.
    again = post(
        client,
        project,
        [
            {**record, "message": "later", "timestamp": rfc3339(at + 5 * 10**6)},
            {**record, "message": "no timestamp"},
            GOOD,
            {**record, "message": "earlier", "timestamp": rfc3339(at - 5 * 10**6)},
        ],
    )
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["record_ids"][:2] == [record_id, record_id] and body["record_ids"][3] == record_id
    assert body["record_ids"][2] != record_id and (body["accepted"], body["rejected"]) == (4, 0)
    assert sorted(stored_ids(client, project)) == sorted([record_id, body["record_ids"][2]])
    assert read(client, project, record_id)["message"] == "first"


def test_record_ids_sort_by_time(client, project):
    times = ["2026-11-29T10:00:00Z", "2026-11-29T10:00:00.002Z", "2026-11-29T11:00:00Z", "2027-01-01T00:00:00Z"]
    records = [{"type": "event", "name": "tick", "timestamp": t} for t in reversed(times)]
    records += [{**r, "trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}"} for i, r in enumerate(records)]
    ids = post(client, project, records).json()["record_ids"]
    assert all(RECORD_ID.match(i) for i in ids)
    # Newer records get greater IDs (millisecond prefix), with or without a span identity.
    assert ids[:4] == sorted(ids[:4], reverse=True) and ids[4:] == sorted(ids[4:], reverse=True)
    assert [i[:15] for i in ids[:4]] == [i[:15] for i in ids[4:]]


def test_records_without_span_identity_are_never_merged(client, project):
    response = post(client, project, [GOOD, GOOD])
    ids = response.json()["record_ids"]
    assert ids[0] != ids[1]
    assert sorted(stored_ids(client, project)) == sorted(ids)


@pytest.mark.parametrize("records", [{}, "x", None, 5, {"0": GOOD}], ids=["object", "string", "null", "number", "map"])
def test_records_that_is_not_a_list_is_a_400(client, project, records):
    response = post(client, project, records)
    assert response.status_code == 400
    assert response.json() == {"code": 3, "message": "records must be a JSON array"}
    assert stored_ids(client, project) == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"records": [{"type": "latency", "name": "x", "duration_ms": NaN}]}',
        b'{"records": [{"type": "latency", "name": "x", "duration_ms": Infinity}]}',
        b'{"records": [{"type": "latency", "name": "x", "duration_ms": 1e999}]}',
        b'{"records": [{"type": "event", "name": "\\ud800"}]}',
        b'{"records": [{"type": "event", "name": "x"}',
        b'{"records": [{"type": "event", "name": "x"}]} trailing',
        b"\xff\xfe{}",
        b"",
        b'{"records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["nan", "infinity", "overflow", "lone-surrogate", "truncated", "trailing", "not-utf8", "empty", "deep"],
)
def test_malformed_json_is_a_clear_400_and_stores_nothing(client, project, body):
    response = post_raw(client, project, body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == 3
    assert answer["message"].startswith("body is not valid JSON"), answer["message"]
    assert stored_ids(client, project) == []
    assert_alive(client, project)


def test_deeply_nested_attributes_are_rejected_per_record(client, project):
    nested: object = 1
    for _ in range(500):
        nested = {"a": nested}
    response = post(client, project, [{"type": "event", "name": "deep", "attributes": nested}, GOOD])
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["errors"] == [{"index": 0, "reason": NESTED_REASON}]
    assert_alive(client, project)


def test_huge_and_odd_strings_never_cause_a_500(client, project):
    big = "x" * (2 * 1024 * 1024)
    response = post(
        client,
        project,
        [
            {"type": "event", "name": big},
            {"type": "event", "name": "n", "message": big},
            {"type": "event", "name": "n", "session_id": big},
            {"type": "event", "name": "attr", "attributes": {"blob": big}},
            {"type": "event", "name": "nul\u0000byte", "message": "emoji \U0001f600 and \u202e rtl"},
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [e["index"] for e in body["errors"]] == [0, 1, 2]
    assert (body["accepted"], body["rejected"]) == (2, 3)
    attr = read(client, project, body["record_ids"][3])
    # Over max_attribute_value_length (16 KiB): cut, with a marker, never rejected (docs/records.md).
    assert attr["attributes"] == {"blob": "x" * 16384, "loopkit.truncated_attributes": ["blob"]}
    odd = read(client, project, body["record_ids"][4])
    assert (odd["name"], odd["message"]) == ("nul\u0000byte", "emoji \U0001f600 and \u202e rtl")
    assert_alive(client, project)


@pytest.mark.parametrize(
    "body",
    [b"[]", b'"records"', b"5", b"null", b'{"resourceSpans": 5}'],
    ids=["array", "string", "number", "null", "bad-otlp"],
)
def test_json_that_is_neither_shape_is_a_400(client, project, body):
    response = post_raw(client, project, body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 3
    assert_alive(client, project)


def test_unknown_fields_are_ignored_and_cannot_set_the_record_id(client, project):
    response = post(client, project, [{"type": "event", "name": "n", "record_id": "rec_chosen", "extra": {"x": 1}}])
    assert response.status_code == 200
    record_id = response.json()["record_ids"][0]
    assert record_id != "rec_chosen" and RECORD_ID.match(record_id)
    assert stored_ids(client, project) == [record_id]
    missing = client.get("/v1/records/rec_chosen", headers=project.auth("agent"))
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "1970-01-01T00:00:00.000000Z"),
        (999, "1970-01-01T00:00:00.000000Z"),  # below a microsecond: truncated, never rounded
        (999_999_999, "1970-01-01T00:00:00.999999Z"),
        (1_000_000_000, "1970-01-01T00:00:01.000000Z"),
        (1767323045999999999, "2026-01-02T03:04:05.999999Z"),
        (1767323046000000000, "2026-01-02T03:04:06.000000Z"),  # the next second: its own cached prefix
        (253402300799999999999, "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_rfc3339_is_exact_at_second_boundaries(ns, text):
    assert rfc3339(ns) == text
    assert rfc3339(ns) == text  # and again, from the per-second cache
