"""Hostile input, explicitly: deep nesting, huge attributes (cut with a marker), invalid UTF-8, NaN/Infinity,
far-future and far-past timestamps, and slow clients. Each answer is precise, and the server keeps serving."""

from __future__ import annotations

import random
import socket
import threading
import time

import grpc
import httpx
import pytest
from conftest import make_settings, new_project
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from loopkit_core.server import in_thread

PROTOBUF = {"content-type": "application/x-protobuf"}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
INVALID_ARGUMENT = 3
MAX_NS = 2**63 - 1
WIDE = {"since_minutes": 10 * 366 * 24 * 60, "limit": 1000}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One LoopKit for the module, with a short body timeout for the slow-client tests."""
    with in_thread(make_settings(tmp_path_factory.mktemp("hostile"), request_body_timeout_seconds=1.5)) as running:
        yield running


@pytest.fixture
def project(server):
    return new_project(server, "hostile")


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.http_url, timeout=30) as c:
        yield c


def span(name: str, span_byte: int = 1, start: int | None = None, end: int | None = None) -> trace_pb2.Span:
    """A valid protobuf span."""
    now = time.time_ns()
    return trace_pb2.Span(
        trace_id=b"\x5a" * 16,
        span_id=bytes([span_byte]) * 8,
        name=name,
        start_time_unix_nano=now - 1_000_000 if start is None else start,
        end_time_unix_nano=now if end is None else end,
    )


def request_of(*spans: trace_pb2.Span) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "hostile"
    resource_spans.scope_spans.add().spans.extend(spans)
    return request


def records_of(client, project) -> dict[str, dict]:  # noqa: ANN001
    """Every record of the project in a ten-year window, by name."""
    response = client.get("/v1/telemetry", params=WIDE, headers=project.auth("agent"))
    assert response.status_code == 200, response.text
    return {r["name"]: r for r in response.json()["records"]}


def assert_alive(client, project) -> None:  # noqa: ANN001
    """The server still ingests and answers after the hostile request."""
    doc = {"records": [{"type": "event", "name": "still alive"}]}
    response = client.post("/v1/traces", json=doc, headers=project.auth())
    assert response.status_code == 200 and response.json()["accepted"] == 1


# --- deep nesting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["records", "otlp", "array"])
def test_json_nested_100k_levels_deep_is_a_400_not_a_recursion_error(client, project, shape):
    deep = "[" * 100_000 + "]" * 100_000
    body = {
        "records": f'{{"records": [{{"type": "event", "name": "n", "attributes": {{"a": {deep}}}}}]}}',
        "otlp": f'{{"resourceSpans": {deep}}}',
        "array": deep,
    }[shape]
    response = client.post("/v1/traces", content=body, headers={**project.auth(), "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["code"] == INVALID_ARGUMENT
    assert "depth limit exceeded" in response.json()["message"]
    assert_alive(client, project)


def test_deeply_nested_json_in_a_run_body_is_a_400(client, project):
    deep = '{"since_minutes": ' + "[" * 100_000 + "]" * 100_000 + "}"
    headers = {**project.auth("agent"), "content-type": "application/json"}
    response = client.post("/v1/runs/diagnose", content=deep, headers=headers)
    # Either refused for its size before parsing or for its depth when parsed; never a 500.
    assert response.status_code in (400, 413)
    assert response.json()["ok"] is False
    shallow = '{"since_minutes": ' + "[" * 5000 + "]" * 5000 + "}"
    response = client.post("/v1/runs/diagnose", content=shallow, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert_alive(client, project)


def test_otlp_any_value_nested_past_the_limit_is_a_400(client, project):
    value: dict = {"stringValue": "leaf"}
    for _ in range(40):
        value = {"arrayValue": {"values": [value]}}
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5a" * 16,
                                "spanId": "01" * 8,
                                "name": "deep",
                                "attributes": [{"key": "deep", "value": value}],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    response = client.post("/v1/traces", json=doc, headers=project.auth())
    assert response.status_code == 400
    assert "nests deeper than 32 levels" in response.json()["message"]
    assert_alive(client, project)


# --- huge attribute values and counts -------------------------------------------------------------


def test_huge_attribute_values_and_counts_are_cut_with_a_marker_never_rejected(client, project):
    big = "y" * 100_000
    huge = span("huge", 1)
    huge.attributes.add(key="blob").value.string_value = big
    huge.attributes.add(key="list").value.array_value.values.add().string_value = big
    huge.attributes.add(key="small").value.string_value = "kept as is"
    many = span("many", 2)
    for i in range(1000):
        many.attributes.add(key=f"k{i:04d}").value.int_value = i
    for i in range(300):
        many.events.add(name=f"e{i}", time_unix_nano=time.time_ns())
        many.links.add(trace_id=b"\x01" * 16, span_id=(i + 1).to_bytes(8, "big"))
    neighbour = span("neighbour", 3)
    body = request_of(huge, many, neighbour).SerializeToString()
    response = client.post("/v1/traces", content=body, headers={**project.auth(), **PROTOBUF})
    assert response.status_code == 200
    assert response.content == b""  # no partial success: nothing was rejected
    stored = records_of(client, project)
    assert stored["huge"]["attributes"] == {
        "blob": "y" * 16384,
        "list": ["y" * 16384],
        "small": "kept as is",
        "loopkit.truncated_attributes": ["blob", "list"],
    }
    attributes = stored["many"]["attributes"]
    assert [k for k in attributes if k.startswith("k")] == [f"k{i:04d}" for i in range(256)]
    assert attributes["loopkit.dropped_attributes_count"] == 1000 - 256
    assert attributes["loopkit.dropped_events_count"] == 300 - 256
    assert attributes["loopkit.dropped_links_count"] == 300 - 256
    assert [e["name"] for e in stored["many"]["events"]] == [f"e{i}" for i in range(256)]
    assert len(stored["many"]["links"]) == 256
    assert stored["neighbour"]["attributes"] == {}


def test_a_huge_span_name_and_status_message_are_cut_with_a_marker(client, project):
    long_name = span("n" * 5000, 4)
    long_name.status.code = 2
    long_name.status.message = "m" * 100_000
    body = request_of(long_name, span("neighbour", 5)).SerializeToString()
    response = client.post("/v1/traces", content=body, headers={**project.auth(), **PROTOBUF})
    assert response.status_code == 200 and response.content == b""
    stored = records_of(client, project)
    record = stored["n" * 1024]
    assert record["message"] == "m" * 65536
    assert record["attributes"] == {"loopkit.truncated_fields": ["name", "message"]}
    assert stored["neighbour"]["attributes"] == {}


def test_records_shape_attributes_are_cut_the_same_way(client, project):
    attributes = {f"a{i:04d}": "v" for i in range(300)} | {"long": "z" * 20_000}
    doc = {"records": [{"type": "error", "name": "big", "message": "boom", "attributes": attributes}]}
    response = client.post("/v1/traces", json=doc, headers=project.auth())
    assert response.status_code == 200 and response.json()["accepted"] == 1
    (record_id,) = response.json()["record_ids"]
    stored = client.get(f"/v1/records/{record_id}", headers=project.auth("agent")).json()["record"]["attributes"]
    # The first 256 attributes in the order sent; `long` was the 301st, so it was dropped, not cut.
    assert list(stored) == [f"a{i:04d}" for i in range(256)] + ["loopkit.dropped_attributes_count"]
    assert stored["loopkit.dropped_attributes_count"] == 45


def test_the_limits_are_settings(tmp_path):
    settings = make_settings(
        tmp_path / "limits",
        max_attribute_value_length=5,
        max_attributes_per_span=2,
        max_events_per_span=1,
        max_links_per_span=0,
    )
    with in_thread(settings) as running, httpx.Client(base_url=running.http_url, timeout=30) as client:
        project = new_project(running)
        one = span("limited", 1)
        for key in ("a", "b", "c"):
            one.attributes.add(key=key).value.string_value = "123456789"
        one.events.add(name="first").attributes.add(key="x").value.string_value = "abcdefgh"
        one.events.add(name="second")
        one.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
        response = client.post(
            "/v1/traces", content=request_of(one).SerializeToString(), headers={**project.auth(), **PROTOBUF}
        )
        assert response.status_code == 200
        (record,) = records_of(client, project).values()
        assert record["attributes"] == {
            "a": "12345",
            "b": "12345",
            "loopkit.dropped_attributes_count": 1,
            "loopkit.truncated_attributes": ["a", "b"],
            "loopkit.dropped_events_count": 1,
            "loopkit.dropped_links_count": 1,
        }
        assert record["events"][0]["attributes"] == {"x": "abcde", "loopkit.truncated_attributes": ["x"]}
        assert record["links"] == []


def test_fields_derived_from_attributes_resource_and_scope_are_cut_with_a_marker(client, project):
    # These fields were computed before the limits applied: a 300,000-character service, scope, session, user,
    # exception type or event name was stored whole in every span's row (a 1 MB service.name on 100 spans: 400 MB).
    huge = {c: c * 300_000 for c in "sciute"}
    attributes = [
        {"key": "session.id", "value": {"stringValue": huge["i"]}},
        {"key": "user.id", "value": {"stringValue": huge["u"]}},
    ]
    exception = [{"key": "exception.type", "value": {"stringValue": huge["t"]}}]
    span = {
        "traceId": "7d" * 16,
        "spanId": "01" * 8,
        "name": "derived",
        "status": {"code": 2},
        "attributes": attributes,
        "events": [
            {"name": "exception", "timeUnixNano": "1", "attributes": exception},
            {"name": huge["e"], "timeUnixNano": "1"},
        ],
        "links": [{"traceId": "ab" * 100_000, "spanId": "cd" * 100_000}],
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": huge["s"]}}]}
    scope_spans = [{"scope": {"name": huge["c"]}, "spans": [span]}]
    doc = {"resourceSpans": [{"resource": resource, "scopeSpans": scope_spans}]}
    response = client.post("/v1/traces", json=doc, headers=project.auth())
    assert response.status_code == 200 and response.json() == {}, response.text  # nothing rejected
    (record_id,) = [r["record_id"] for r in records_of(client, project).values() if r["trace_id"] == "7d" * 16]
    record = client.get(f"/v1/records/{record_id}", headers=project.auth("agent")).json()["record"]
    assert (record["service"], record["scope"]) == ("s" * 1024, "c" * 1024)
    assert (record["session_id"], record["user_id"], record["exception_type"]) == ("i" * 1024, "u" * 1024, "t" * 1024)
    assert record["attributes"] == {
        "session.id": "i" * 16384,
        "user.id": "u" * 16384,
        "loopkit.truncated_attributes": ["session.id", "user.id"],
        "loopkit.truncated_fields": ["service", "scope", "session_id", "user_id", "exception_type"],
    }
    assert record["events"][0]["attributes"] == {
        "exception.type": "t" * 16384,
        "loopkit.truncated_attributes": ["exception.type"],
    }
    assert record["events"][1]["name"] == "e" * 1024
    assert record["events"][1]["attributes"] == {"loopkit.truncated_fields": ["name"]}
    assert record["links"] == [
        {
            "trace_id": "ab" * 16,
            "span_id": "cd" * 8,
            "attributes": {"loopkit.truncated_fields": ["trace_id", "span_id"]},
        }
    ]
    # The resource, stored once, is cut like any attributes.
    assert record["resource"] == {"service.name": "s" * 16384, "loopkit.truncated_attributes": ["service.name"]}


def random_text(seed: int, length: int, low: int, high: int) -> str:
    """`length` random characters from [low, high): incompressible, so PostgreSQL cannot shrink an index entry."""
    rng = random.Random(seed)
    return "".join(chr(rng.randrange(low, high)) for _ in range(length))


def test_indexed_fields_are_cut_to_1280_stored_bytes_on_every_backend(client, project):
    # Within the records shape's 1,024 characters, but 4,096 UTF-8 bytes: PostgreSQL refused the whole request
    # ("index row size exceeds btree maximum 2704") with a retryable 503, losing the good records beside it.
    four = random_text(1, 1024, 0x10000, 0x10FFFF)  # 4 UTF-8 bytes each: 320 fit in 1,280
    cjk = random_text(2, 1024, 0x4E00, 0xA000)  # 3 bytes each: 426 fit
    # U+FFFE is stored escaped on PostgreSQL (6 bytes); a pair with a CJK character is 9 bytes: 142 pairs fit
    # (1,278 bytes), one more CJK character would make 1,281.
    escaped = "".join(c + "\ufffe" for c in random_text(3, 500, 0x4E00, 0xA000))
    records = [
        {"type": "event", "name": four},
        {"type": "event", "name": "svc", "service": cjk},
        {"type": "event", "name": "session", "session_id": escaped[:1024]},
        {"type": "event", "name": cjk, "service": four},  # both at their limit in one index entry
        {"type": "event", "name": "good"},
    ]
    response = client.post("/v1/traces", json={"records": records}, headers=project.auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"], body["errors"]) == (5, 0, [])
    stored = [
        client.get(f"/v1/records/{rid}", headers=project.auth("agent")).json()["record"] for rid in body["record_ids"]
    ]
    assert stored[0]["name"] == four[:320]
    assert stored[0]["attributes"] == {"loopkit.truncated_fields": ["name"]}
    assert stored[1]["service"] == cjk[:426]
    assert stored[1]["attributes"] == {"loopkit.truncated_fields": ["service"]}
    assert stored[2]["session_id"] == escaped[:284]
    assert stored[2]["attributes"] == {"loopkit.truncated_fields": ["session_id"]}
    assert (stored[3]["name"], stored[3]["service"]) == (cjk[:426], four[:320])
    assert stored[3]["attributes"] == {"loopkit.truncated_fields": ["name", "service"]}
    assert stored[4]["attributes"] == {}
    # Over OTLP a random 8 KB service.name (incompressible) is cut the same way, on every span of its resource.
    service = random_text(4, 8192, 0x4E00, 0xA000)
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {"traceId": "7e" * 16, "spanId": f"{i:016x}", "name": f"random service {i}"} for i in (1, 2)
                        ]
                    }
                ],
            }
        ]
    }
    response = client.post("/v1/traces", json=doc, headers=project.auth())
    assert response.status_code == 200 and response.json() == {}, response.text
    by_name = records_of(client, project)
    for i in (1, 2):
        assert by_name[f"random service {i}"]["service"] == service[:426]
        assert by_name[f"random service {i}"]["attributes"] == {"loopkit.truncated_fields": ["service"]}


def any_value_list(*values: str) -> AnyValue:
    """An AnyValue holding a list of strings."""
    value = AnyValue()
    value.array_value.values.extend(AnyValue(string_value=v) for v in values)
    return value


def test_nested_values_and_keys_are_cut_with_a_marker(client, project):
    # A 500,000-key map, a 2 MB key and a 200,000-element list were stored whole, with no marker.
    one = span("nested", 9)
    wide = one.attributes.add(key="wide_map").value.kvlist_value
    wide.values.extend(KeyValue(key=f"k{i}", value=AnyValue(int_value=i)) for i in range(500_000))
    one.attributes.add(key="long_list").value.array_value.values.extend(AnyValue(int_value=i) for i in range(200_000))
    one.attributes.add(key="K" * 2_000_000).value.string_value = "v"
    inner = one.attributes.add(key="inner_key").value.kvlist_value
    inner.values.add(key="q" * 5000).value.string_value = "x"
    deep = AnyValue(string_value="leaf")
    for _ in range(40):  # OTLP/JSON refuses this (400); protobuf parses it
        deep = AnyValue(array_value=ArrayValue(values=[deep]))
    one.attributes.add(key="deep").value.CopyFrom(deep)
    one.attributes.add(key="fine").value.CopyFrom(any_value_list("a", "b"))
    body = request_of(one, span("beside", 10)).SerializeToString()
    response = client.post("/v1/traces", content=body, headers={**project.auth(), **PROTOBUF})
    assert response.status_code == 200 and response.content == b""
    stored = records_of(client, project)
    record = client.get(f"/v1/records/{stored['nested']['record_id']}", headers=project.auth("agent"))
    attributes = record.json()["record"]["attributes"]
    assert attributes.pop("wide_map") == {f"k{i}": i for i in range(1024)}
    assert attributes.pop("long_list") == list(range(1024))
    assert attributes.pop("K" * 1024) == "v"
    assert attributes.pop("inner_key") == {"q" * 1024: "x"}
    deep_value = attributes.pop("deep")
    for _ in range(33):  # the lists inside 32 others are kept; the one inside 33 became null
        assert isinstance(deep_value, list) and len(deep_value) == 1
        deep_value = deep_value[0]
    assert deep_value is None
    assert attributes == {
        "fine": ["a", "b"],
        "loopkit.truncated_attributes": ["wide_map", "long_list", "inner_key", "deep"],
        "loopkit.truncated_attribute_keys": ["K" * 1024],
    }
    assert stored["beside"]["attributes"] == {}


# --- invalid UTF-8, NaN and Infinity --------------------------------------------------------------


def test_invalid_utf8_in_a_protobuf_string_is_invalid_argument_on_both_transports(server, client, project):
    good = request_of(span("AAAA", 1), span("good", 2)).SerializeToString()
    body = good.replace(b"AAAA", b"A\xffAA")
    response = client.post("/v1/traces", content=body, headers={**project.auth(), **PROTOBUF})
    assert response.status_code == 400
    status = status_pb2.Status.FromString(response.content)
    assert status.code == INVALID_ARGUMENT and "UTF-8" in status.message
    with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError) as error:
        channel.unary_unary(EXPORT)(body, metadata=(("authorization", f"Bearer {project.producer_key}"),))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # proto3 strings must be UTF-8: the message as a whole does not parse, so none of it is stored.
    assert records_of(client, project) == {}
    assert_alive(client, project)


@pytest.mark.parametrize(
    "body",
    [
        b'{"records": [{"type": "event", "name": "n", "duration_ms": NaN}]}',
        b'{"records": [{"type": "event", "name": "n", "duration_ms": Infinity}]}',
        b'{"records": [{"type": "event", "name": "n", "duration_ms": -Infinity}]}',
        b'{"records": [{"type": "event", "name": "n", "duration_ms": 1e999}]}',
        b'{"records": [{"type": "event", "name": "n\\ud800"}]}',
        b'{"records": [{"type": "event", "name": "\xff"}]}',
    ],
    ids=["nan", "infinity", "minus-infinity", "overflow", "lone-surrogate", "invalid-utf8"],
)
def test_json_that_is_not_strict_json_is_a_400(client, project, body):
    response = client.post("/v1/traces", content=body, headers={**project.auth(), "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["message"].startswith("body is not valid JSON")
    assert_alive(client, project)


def test_special_doubles_in_otlp_json_are_stored_as_null_beside_good_values(client, project):
    attributes = [
        {"key": name, "value": {"doubleValue": value}}
        for name, value in (("nan", "NaN"), ("inf", "Infinity"), ("ninf", "-Infinity"), ("ok", 2.5))
    ]
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {"spans": [{"traceId": "5a" * 16, "spanId": "07" * 8, "name": "d", "attributes": attributes}]}
                ]
            }
        ]
    }
    assert client.post("/v1/traces", json=doc, headers=project.auth()).status_code == 200
    assert records_of(client, project)["d"]["attributes"] == {"nan": None, "inf": None, "ninf": None, "ok": 2.5}


# Characters that need care in storage: the PostgreSQL NUL escape (U+FFFE), its neighbour, NUL, line separators.
ODD_STRINGS = [
    "a\ufffeb",
    "\ufffe",
    "\ufffe0",
    "\ufffe\ufffe",
    "x\uffffy",
    "nul\x00byte",
    "\x00\ufffe\x00",
    "l\u2028p\u2029",
]


def test_odd_characters_round_trip_exactly_in_every_stored_field(client, project):
    # PostgreSQL escaped U+FFFE in the JSON columns on write and never unescaped them: a\ufffeb read back doubled.
    for i, text in enumerate(ODD_STRINGS):
        attributes = [
            {"key": "value", "value": {"stringValue": text}},
            {"key": text, "value": {"arrayValue": {"values": [{"stringValue": text}]}}},
            {"key": "session.id", "value": {"stringValue": text}},
        ]
        event = {"name": text, "timeUnixNano": str(time.time_ns()), "attributes": attributes[:1]}
        resource = {"attributes": [{"key": "service.name", "value": {"stringValue": text}}, *attributes[:2]]}
        spans = [
            {
                "traceId": "6b" * 16,
                "spanId": f"{i + 1:016x}",
                "name": f"odd {i} {text}",
                "status": {"code": 2, "message": text},
                "attributes": attributes,
                "events": [event],
            }
        ]
        doc = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": text}, "spans": spans}]}]}
        response = client.post("/v1/traces", json=doc, headers=project.auth())
        assert response.status_code == 200 and response.json() == {}, response.text  # no partial success
    stored = records_of(client, project)
    for i, text in enumerate(ODD_STRINGS):
        record = client.get(f"/v1/records/{stored[f'odd {i} {text}']['record_id']}", headers=project.auth("agent"))
        record = record.json()["record"]
        assert record["attributes"] == {"value": text, text: [text], "session.id": text}
        assert (record["service"], record["message"], record["session_id"], record["scope"]) == (text,) * 4
        assert record["events"][0]["name"] == text and record["events"][0]["attributes"] == {"value": text}
        assert record["resource"] == {"service.name": text, "value": text, text: [text]}
    # A lone surrogate cannot be stored as text at all: strict JSON refuses it (see the test above), over OTLP too.
    lone = b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "' + b"6c" * 16
    lone += b'", "spanId": "' + b"01" * 8 + b'", "name": "lone \\udc00"}]}]}]}'
    response = client.post("/v1/traces", content=lone, headers={**project.auth(), "content-type": "application/json"})
    assert response.status_code == 400 and response.json()["message"].startswith("body is not valid JSON")


# --- far-future and far-past timestamps -----------------------------------------------------------


def test_far_future_and_far_past_timestamps_are_stored_as_given_and_do_not_break_windows(client, project):
    far_past, far_future = 1, MAX_NS
    body = request_of(
        span("past", 1, start=far_past, end=far_past + 1_000_000),
        span("future", 2, start=far_future - 1_000_000, end=far_future),
        span("now", 3),
    ).SerializeToString()
    assert client.post("/v1/traces", content=body, headers={**project.auth(), **PROTOBUF}).status_code == 200
    records = [
        {"type": "error", "name": "rec-future", "message": "x", "timestamp": "2200-01-01T00:00:00Z"},
        {"type": "error", "name": "rec-past", "message": "x", "timestamp": "1971-01-01T00:00:00Z"},
        {"type": "error", "name": "rec-beyond", "message": "x", "timestamp": "9999-12-31T23:59:59Z"},
    ]
    answer = client.post("/v1/traces", json={"records": records}, headers=project.auth()).json()
    assert answer["accepted"] == 2
    assert answer["errors"] == [{"index": 2, "reason": "timestamp is out of range"}]

    agent = project.auth("agent")
    # The default window (the last hour) holds only the present; the others are still readable by ID.
    recent = client.get("/v1/telemetry", headers=agent).json()
    assert [r["name"] for r in recent["records"]] == ["now"]
    old = client.get("/v1/telemetry", params={**WIDE, "until": "1980-01-01T00:00:00Z"}, headers=agent).json()
    assert {r["name"]: r["timestamp"] for r in old["records"]} == {
        "past": "1970-01-01T00:00:00.000000Z",
        "rec-past": "1971-01-01T00:00:00.000000Z",
    }
    future = client.get("/v1/telemetry", params={"until": str(MAX_NS), "since_minutes": 60}, headers=agent).json()
    assert [r["name"] for r in future["records"]] == ["future"]
    assert future["records"][0]["timestamp"] == "2262-04-11T23:47:16.853775Z"
    rec_future = answer["record_ids"][0]
    read = client.get(f"/v1/records/{rec_future}", headers=agent).json()["record"]
    assert read["timestamp"] == "2200-01-01T00:00:00.000000Z"
    # Runs over windows that hold (or border) them work.
    diagnosed = client.post("/v1/runs/diagnose", json={"since_minutes": 10 * 366 * 24 * 60}, headers=agent)
    assert diagnosed.status_code == 200
    assert diagnosed.json()["packet"]["telemetry_read"] == 1  # "now": the others are decades away
    assert client.post("/v1/runs/diagnose", json={}, headers=agent).status_code == 200


# --- slow clients ---------------------------------------------------------------------------------


def test_a_client_trickling_its_body_blocks_no_one_and_is_cut_off(server, client, project):
    body = b'{"records": [{"type": "event", "name": "slow"}]}'
    head = (
        f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {project.producer_key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer: dict[str, bytes] = {}

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
            sock.sendall(head)
            try:
                for byte in body:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.1)  # 4.8 s in all: far past the 1.5 s body timeout
            except OSError:
                pass  # the server answered and closed
            answer["response"] = sock.recv(65536)

    slow = threading.Thread(target=trickle, daemon=True)
    slow.start()
    time.sleep(0.3)
    # Meanwhile every other client is served at once.
    for i in range(5):
        started = time.monotonic()
        doc = {"records": [{"type": "event", "name": f"fast-{i}"}]}
        response = client.post("/v1/traces", json=doc, headers=project.auth())
        assert response.status_code == 200
        assert time.monotonic() - started < 1.0
    slow.join(timeout=15)
    assert not slow.is_alive()
    assert answer["response"].startswith(b"HTTP/1.1 408 ")
    assert b"the request body did not arrive in time" in answer["response"]
    assert "slow" not in records_of(client, project)


def stalled_post(server, path: str, headers: str, body: bytes) -> bytes:  # noqa: ANN001
    """POST half of `body`, then stall; the raw answer the server sends (within 10 s)."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(head + body[: len(body) // 2])
        answer = b""
        while chunk := sock.recv(65536):  # the server answers, then closes: recv returns b""
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "path, kind, content_type, body",
    [
        ("/v1/runs/diagnose", "agent", "application/json", b'{"since_minutes": 60}'),
        ("/v1/packets/pkt_0/approve", "dashboard", "application/json", b'{"note": "looks right to me"}'),
        ("/v1/dashboard/login", None, "application/x-www-form-urlencoded", b"key=lk_dash_0123456789abcdef"),
    ],
)
def test_a_stalled_body_on_the_other_routes_is_408_and_the_connection_closed(
    server, client, project, path, kind, content_type, body
):
    auth = f"Authorization: Bearer {getattr(project, kind + '_key')}\r\n" if kind else ""
    started = time.monotonic()
    answer = stalled_post(server, path, f"{auth}Content-Type: {content_type}\r\nSec-Fetch-Site: same-origin\r\n", body)
    assert 1.4 < time.monotonic() - started < 8  # the module's server waits 1.5 s for a body
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert b"did not arrive within 1.5 s" in answer
    assert client.get("/healthz").status_code == 200


def test_a_stalled_grpc_connection_blocks_no_export(server, project):
    # A client that opens the HTTP/2 connection, sends half a preface and then nothing.
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as stalled:
        stalled.sendall(b"PRI * HTTP/2.0\r\n")
        with grpc.insecure_channel(server.grpc_target) as channel:
            started = time.monotonic()
            answer = channel.unary_unary(EXPORT)(
                request_of(span("over grpc", 9)).SerializeToString(),
                metadata=(("authorization", f"Bearer {project.producer_key}"),),
                timeout=10,
            )
            assert time.monotonic() - started < 2.0
    assert answer == b""
