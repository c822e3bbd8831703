"""OTLP/JSON over HTTP: the spec's example document, hex IDs, int64 and enum spellings, partial success."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings

from loopkit_core.server import in_thread

EXAMPLE = Path(__file__).parent / "data" / "otlp_trace_example.json"
JSON_HEADERS = {"content-type": "application/json"}
TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACE_B = "4bf92f3577b34da6a3ce929d0e0e4736"
NOW_NS = (time.time_ns() // 1_000_000 - 60_000) * 1_000_000  # a whole millisecond, a minute ago


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One LoopKit for the module; every test gets its own project, so tests stay independent."""
    with in_thread(make_settings(tmp_path_factory.mktemp("data"))) as running:
        yield running


def post(client, project, doc, headers=None):
    """POST an OTLP/JSON document (a dict, or raw bytes sent as they are)."""
    content = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return client.post("/v1/traces", content=content, headers={**JSON_HEADERS, **project.auth(), **(headers or {})})


def read(client, project, **params):
    """The project's records in a window (default: the last hour), through the agent API."""
    response = client.get("/v1/telemetry", params={"limit": 1000, **params}, headers=project.auth("agent"))
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return response.json()["records"]


def ns_of(text):
    """RFC 3339 text as unix nanoseconds (microsecond precision)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def by_name(records):
    named = {r["name"]: r for r in records}
    assert len(named) == len(records)
    return named


def span(name, span_id, trace_id=TRACE, **fields):
    """A minimal valid OTLP/JSON span starting a minute ago and lasting 250 ms."""
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "startTimeUnixNano": str(NOW_NS),
        "endTimeUnixNano": str(NOW_NS + 250_000_000),
        **fields,
    }


def request(*spans, service="json-svc", **resource_fields):
    """An ExportTraceServiceRequest document with one resource and one scope."""
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}],
                    **resource_fields,
                },
                "scopeSpans": [{"scope": {"name": "json.scope", "version": "0.1"}, "spans": list(spans)}],
            }
        ]
    }


def assert_empty_success(response):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.content == b"{}"


def test_spec_example_document_round_trips_with_hex_ids(client, project):
    raw = EXAMPLE.read_bytes()
    assert b'"traceId": "5B8EFFF798038103D269B633813FC60C"' in raw  # the file is the spec's, untouched
    assert_empty_success(post(client, project, raw))

    # The example's span is from 2018-12-13T14:51:00Z: read a one-minute window ending just after it.
    records = read(client, project, until="2018-12-13T14:51:30Z", since_minutes=1)
    assert len(records) == 1
    record = records[0]
    # Hex, lowercased -- not the 24 bytes a base64 decoder would make of the same text.
    assert record["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert record["span_id"] == "eee19b7ec3c1b174"
    assert record["parent_span_id"] == "eee19b7ec3c1b173"
    assert record["name"] == "I'm a server span"
    assert record["kind"] == "server"
    assert record["service"] == "my.service"
    assert record["scope"] == "my.library"
    assert record["resource"] == {"service.name": "my.service"}
    assert record["attributes"] == {"my.span.attr": "some value"}
    assert record["timestamp"] == "2018-12-13T14:51:00.000000Z"
    assert record["end_timestamp"] == "2018-12-13T14:51:01.000000Z"
    assert record["timestamp_unix_nano"] == 1544712660000000000
    assert record["duration_ms"] == 1000.0
    assert (record["status"], record["type"], record["message"]) == ("unset", "span", "")
    assert (record["events"], record["links"]) == ([], [])
    assert re.fullmatch(r"rec_[0-9a-f]{24}", record["record_id"])

    # The same document again: stored once, same record ID.
    assert_empty_success(post(client, project, raw))
    again = read(client, project, until="2018-12-13T14:51:30Z", since_minutes=1)
    assert [r["record_id"] for r in again] == [record["record_id"]]


def test_uppercase_and_lowercase_hex_are_the_same_span(client, project):
    upper = span("upper", "00F067AA0BA902B7", trace_id=TRACE.upper())
    assert_empty_success(post(client, project, request(upper)))
    lower = span("lower", "00f067aa0ba902b7")
    assert_empty_success(post(client, project, request(lower)))
    records = read(client, project)
    assert [(r["name"], r["trace_id"], r["span_id"]) for r in records] == [("upper", TRACE, "00f067aa0ba902b7")]


def test_int64_as_strings_and_as_numbers(client, project):
    as_strings = span(
        "strings",
        "1111111111111111",
        startTimeUnixNano=str(NOW_NS),
        endTimeUnixNano=str(NOW_NS + 1_500_000),
        attributes=[
            {"key": "small", "value": {"intValue": "42"}},
            {"key": "negative", "value": {"intValue": "-7"}},
            # Beyond 2**53: only a string keeps it exact through JavaScript-style JSON.
            {"key": "huge", "value": {"intValue": "9007199254740993"}},
            {"key": "max", "value": {"intValue": str(2**63 - 1)}},
        ],
        events=[{"timeUnixNano": str(NOW_NS + 1_000_000), "name": "checkpoint"}],
    )
    as_numbers = span(
        "numbers",
        "2222222222222222",
        startTimeUnixNano=NOW_NS,
        endTimeUnixNano=NOW_NS + 2_000_000,
        attributes=[
            {"key": "small", "value": {"intValue": 42}},
            {"key": "negative", "value": {"intValue": -7}},
            {"key": "huge", "value": {"intValue": 9007199254740993}},
        ],
        events=[{"timeUnixNano": NOW_NS + 1_000_000, "name": "checkpoint"}],
    )
    assert_empty_success(post(client, project, request(as_strings, as_numbers)))
    records = by_name(read(client, project))
    assert records["strings"]["attributes"] == {
        "small": 42,
        "negative": -7,
        "huge": 9007199254740993,
        "max": 2**63 - 1,
    }
    assert records["numbers"]["attributes"] == {"small": 42, "negative": -7, "huge": 9007199254740993}
    assert records["strings"]["timestamp_unix_nano"] == NOW_NS
    assert records["numbers"]["timestamp_unix_nano"] == NOW_NS
    assert records["strings"]["duration_ms"] == 1.5
    assert records["numbers"]["duration_ms"] == 2.0
    for name in ("strings", "numbers"):
        (event,) = records[name]["events"]
        assert (event["name"], event["attributes"]) == ("checkpoint", {})
        assert ns_of(event["timestamp"]) == NOW_NS + 1_000_000
        assert ns_of(records[name]["timestamp"]) == NOW_NS


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        (1, {"code": 0}, ("internal", "unset", "span")),
        (2, {"code": 1}, ("server", "ok", "span")),
        (3, {"code": 2, "message": "upstream 502"}, ("client", "error", "error")),
        (4, {}, ("producer", "unset", "span")),
        (5, {"code": 2}, ("consumer", "error", "error")),
        (0, {"code": 0}, (None, "unset", "span")),
        # Proto3 JSON parsers also accept the enum value names.
        ("SPAN_KIND_CLIENT", {"code": "STATUS_CODE_ERROR"}, ("client", "error", "error")),
    ],
)
def test_enum_values_as_integers(client, project, kind, status, expected):
    assert_empty_success(post(client, project, request(span("op", "3333333333333333", kind=kind, status=status))))
    (record,) = read(client, project)
    assert (record["kind"], record["status"], record["type"]) == expected
    assert record["message"] == status.get("message", "")


def test_unknown_fields_are_ignored(client, project):
    the_span = span(
        "with extras",
        "4444444444444444",
        parentSpanId="5555555555555555",
        traceState="vendor=1",
        flags=257,
        droppedAttributesCount=3,
        droppedEventsCount=0,
        somethingFromTheFuture={"nested": [1, 2, {"deep": True}]},
        status={"code": 2, "message": "boom", "futureStatusField": "x"},
        attributes=[{"key": "a", "value": {"stringValue": "b"}, "futureKeyValueField": 1}],
        events=[{"timeUnixNano": str(NOW_NS), "name": "exception", "droppedAttributesCount": 1, "extra": "x"}],
    )
    doc = request(the_span, droppedAttributesCount=2, futureResourceField="x")
    doc["resourceSpans"][0]["schemaUrl"] = "https://opentelemetry.io/schemas/1.26.0"
    doc["resourceSpans"][0]["futureResourceSpansField"] = {"x": 1}
    doc["resourceSpans"][0]["scopeSpans"][0]["schemaUrl"] = "https://opentelemetry.io/schemas/1.26.0"
    doc["resourceSpans"][0]["scopeSpans"][0]["scope"]["futureScopeField"] = [1]
    doc["futureTopLevelField"] = "ignored"
    assert_empty_success(post(client, project, doc))
    (record,) = read(client, project)
    assert (record["name"], record["span_id"], record["parent_span_id"]) == (
        "with extras",
        "4444444444444444",
        "5555555555555555",
    )
    assert (record["status"], record["message"], record["type"]) == ("error", "boom", "error")
    assert record["attributes"] == {"a": "b"}
    assert [e["name"] for e in record["events"]] == ["exception"]
    assert record["resource"] == {"service.name": "json-svc"}
    assert record["scope"] == "json.scope"


def test_snake_case_field_names_are_accepted(client, project):
    doc = {
        "resource_spans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"string_value": "snake-svc"}}]},
                "scope_spans": [
                    {
                        "scope": {"name": "snake.scope"},
                        "spans": [
                            {
                                "trace_id": TRACE,
                                "span_id": "6666666666666666",
                                "parent_span_id": "7777777777777777",
                                "name": "snake",
                                "kind": 3,
                                "start_time_unix_nano": str(NOW_NS),
                                "end_time_unix_nano": str(NOW_NS + 3_000_000),
                                "attributes": [
                                    {"key": "n", "value": {"int_value": "5"}},
                                    {"key": "d", "value": {"double_value": 0.25}},
                                    {"key": "b", "value": {"bool_value": True}},
                                    {"key": "l", "value": {"array_value": {"values": [{"string_value": "x"}]}}},
                                ],
                                "events": [{"time_unix_nano": str(NOW_NS), "name": "ev"}],
                                "links": [{"trace_id": TRACE_B.upper(), "span_id": "8888888888888888"}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    assert_empty_success(post(client, project, doc))
    (record,) = read(client, project)
    assert (record["trace_id"], record["span_id"], record["parent_span_id"]) == (
        TRACE,
        "6666666666666666",
        "7777777777777777",
    )
    assert (record["service"], record["scope"], record["kind"], record["duration_ms"]) == (
        "snake-svc",
        "snake.scope",
        "client",
        3.0,
    )
    assert record["attributes"] == {"n": 5, "d": 0.25, "b": True, "l": ["x"]}
    assert [e["name"] for e in record["events"]] == ["ev"]
    assert [(link["trace_id"], link["span_id"]) for link in record["links"]] == [(TRACE_B, "8888888888888888")]


def test_every_any_value_type(client, project):
    attributes = [
        {"key": "s", "value": {"stringValue": "text"}},
        {"key": "b", "value": {"boolValue": False}},
        {"key": "i", "value": {"intValue": "12"}},
        {"key": "d", "value": {"doubleValue": 1.5}},
        {"key": "d_int", "value": {"doubleValue": 3}},
        {"key": "d_nan", "value": {"doubleValue": "NaN"}},
        {"key": "bytes", "value": {"bytesValue": "AAEC"}},
        {"key": "arr", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "two"}]}}},
        {
            "key": "kv",
            "value": {"kvlistValue": {"values": [{"key": "inner", "value": {"boolValue": True}}]}},
        },
        {"key": "empty", "value": {}},
    ]
    assert_empty_success(post(client, project, request(span("values", "9999999999999999", attributes=attributes))))
    (record,) = read(client, project)
    assert record["attributes"] == {
        "s": "text",
        "b": False,
        "i": 12,
        "d": 1.5,
        "d_int": 3.0,
        "d_nan": None,
        "bytes": "AAEC",
        "arr": [1, "two"],
        "kv": {"inner": True},
        "empty": None,
    }


def test_partial_success_rejects_exactly_the_invalid_spans(client, project):
    good = [span("good one", "a000000000000001"), span("good two", "a000000000000002", trace_id=TRACE_B)]
    bad = [
        span("zero trace", "b000000000000001", trace_id="0" * 32),
        span("short span id", "b00000000001"),  # 6 bytes
        # The base64 spelling of a valid 16-byte trace ID: the JSON hex-ID trap, rejected.
        span("base64 trace", "b000000000000003", trace_id="W47/95gDgQPSabYzgT/GDA=="),
        span("odd hex", "b00000000000004"),
        span("zero span", "0" * 16),
    ]
    response = post(client, project, request(good[0], *bad, good[1]))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["partialSuccess"]
    partial = body["partialSuccess"]
    assert partial["rejectedSpans"] == "5"  # int64 in proto3 JSON is a decimal string
    assert partial["errorMessage"].startswith("5 span(s) rejected")
    for rejected in bad:
        assert repr(rejected["name"]) in partial["errorMessage"]

    records = read(client, project)
    assert sorted((r["name"], r["trace_id"], r["span_id"]) for r in records) == [
        ("good one", TRACE, "a000000000000001"),
        ("good two", TRACE_B, "a000000000000002"),
    ]


def test_a_request_of_only_invalid_spans_is_still_a_success(client, project):
    response = post(client, project, request(span("zero", "c000000000000001", trace_id="0" * 32)))
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert partial["errorMessage"] == "1 span(s) rejected: span 'zero': trace_id must be 16 bytes and not all zero"
    assert read(client, project) == []


@pytest.mark.parametrize(
    "doc",
    [{}, {"resourceSpans": []}, {"resourceSpans": [{"scopeSpans": []}]}, {"resourceSpans": [{"scopeSpans": [{}]}]}],
)
def test_empty_requests_succeed(client, project, doc):
    assert_empty_success(post(client, project, doc))
    assert read(client, project) == []


def test_charset_and_case_in_content_type_are_accepted(client, project):
    response = post(
        client,
        project,
        request(span("charset", "d000000000000001")),
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert_empty_success(response)
    assert [r["name"] for r in read(client, project)] == ["charset"]


MALFORMED_IDS = [
    ("traceId", "W47/95gDgQPSabYzgT/GDA=="),  # base64 of a valid ID
    ("traceId", "0af76519 16cd43dd 8448eb21 1c80319c"),  # hex with spaces
    ("traceId", " 0af7651916cd43dd8448eb211c80319c"),
    ("traceId", "0x0af7651916cd43dd8448eb211c80319c"),
    ("traceId", "0af7651916cd43dd8448eb211c80319c00"),  # 17 bytes
    ("spanId", "00f067aa0ba902b7\n"),
    ("spanId", "00f067aa0ba902g7"),
    ("spanId", "00f067aa0ba902b"),
    ("parentSpanId", "00f067aa0ba9"),  # 6 bytes
    ("parentSpanId", "00f0 67aa 0ba9 02b7"),
]


def test_each_malformed_id_is_rejected_alone(client, project):
    for n, (field, value) in enumerate(MALFORMED_IDS):
        good_id = f"e{n:015x}"
        bad = span("bad", "f000000000000001", **{field: value})
        response = post(client, project, request(span("good", good_id), bad))
        assert response.status_code == 200, response.text
        partial = response.json()["partialSuccess"]
        assert partial["rejectedSpans"] == "1", (field, value)
        assert partial["errorMessage"].startswith("1 span(s) rejected: span 'bad': ")
        stored = read(client, project)
        assert sorted(r["span_id"] for r in stored) == [f"e{i:015x}" for i in range(n + 1)]
        assert {r["name"] for r in stored} == {"good"}


def test_an_all_zero_parent_span_id_means_a_root_span(client, project):
    assert_empty_success(post(client, project, request(span("root", "6666666666666666", parentSpanId="0" * 16))))
    (record,) = read(client, project)
    assert (record["span_id"], record["parent_span_id"]) == ("6666666666666666", None)


@pytest.mark.parametrize(
    "value",
    ["²", "１２３", "9" * 5000, "12a", "-5"],
    ids=["superscript", "fullwidth", "5000 digits", "hex", "negative"],
)
def test_a_time_that_is_not_ascii_decimal_digits_is_a_400_and_the_server_keeps_serving(client, project, value):
    response = post(client, project, request(span("odd time", "a100000000000001", startTimeUnixNano=value)))
    assert response.status_code == 400, response.text
    assert "startTimeUnixNano must be an unsigned integer" in response.json()["message"]
    assert_empty_success(post(client, project, request(span("after", "a100000000000002"))))
    assert [r["name"] for r in read(client, project)] == ["after"]
