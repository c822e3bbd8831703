"""Property-based fuzzing of the OTLP logs decoders (protobuf and OTLP/JSON): a precise request error or log
records the store can encode, never a crash; plus hostile requests to a running server's /v1/logs and LogsService
(bombs, huge and deep bodies, invalid UTF-8, too many log records) with 0 server errors."""

from __future__ import annotations

import gzip
from typing import Any

import grpc
import httpx
import orjson
import pytest
from google.rpc import status_pb2
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from test_fuzz_decoders import FUZZ, NOW, PROJECT, _paths, json_trees, stored

from loopkit_receivers import otlp_logs_json, otlp_logs_proto
from loopkit_receivers.errors import BadRequest
from loopkit_receivers.limits import MARKERS, TRUNCATED
from loopkit_receivers.limits import apply as apply_limits

LOG_FIELDS = [
    "resourceLogs", "resource", "attributes", "scopeLogs", "scope", "name", "logRecords", "timeUnixNano",
    "observedTimeUnixNano", "severityNumber", "severityText", "body", "traceId", "spanId", "eventName", "flags",
    "key", "value", "stringValue", "intValue", "doubleValue", "boolValue", "arrayValue", "kvlistValue", "values",
]  # fmt: skip


def valid_request() -> ExportLogsServiceRequest:
    """Two log records with every kind of body and attribute, one correlated to a span, one an exception."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.add(key="service.name").value.string_value = "fuzz"
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "fuzz.logger"
    first = scope_logs.log_records.add(
        time_unix_nano=NOW, severity_number=17, severity_text="ERROR", trace_id=bytes(range(1, 17)), span_id=b"\x02" * 8
    )
    first.body.string_value = "boom 42"
    first.attributes.add(key="exception.type").value.string_value = "ValueError"
    first.attributes.add(key="raw").value.bytes_value = b"\x00\xff"
    second = scope_logs.log_records.add(observed_time_unix_nano=NOW, severity_number=9, event_name="fuzz.event")
    second.body.kvlist_value.values.add(key="k").value.array_value.values.add().double_value = 1.5
    second.attributes.add(key="i").value.int_value = -7
    return request


VALID_PB = valid_request().SerializeToString()


def decode_proto(body: bytes) -> None:
    """BadRequest, or log records the store can encode (after the limits, as the receiver applies them)."""
    try:
        decoded = otlp_logs_proto.decode(otlp_logs_proto.parse_request(body), PROJECT, NOW)
    except BadRequest:
        return
    apply_limits(decoded.records)
    stored(decoded.records)


def test_the_valid_request_decodes_to_two_records():
    decoded = otlp_logs_proto.decode(otlp_logs_proto.parse_request(VALID_PB), PROJECT, NOW)
    assert [(r.type, r.name, r.message) for r in decoded.records] == [
        ("error", "fuzz.logger", "boom 42"),
        ("log", "fuzz.event", '{"k":[1.5]}'),
    ]
    assert decoded.records[0].parent_span_id == "02" * 8 and decoded.records[0].trace_id == bytes(range(1, 17)).hex()


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_are_a_bad_request_or_log_records(body):
    decode_proto(body)


@FUZZ
@given(st.data())
def test_mutated_valid_protobuf_is_a_bad_request_or_log_records(data):
    body = bytearray(VALID_PB)
    for _ in range(data.draw(st.integers(1, 8), label="mutations")):
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]), label="action")
        at = data.draw(st.integers(0, max(0, len(body) - 1)), label="at")
        if action == "flip" and body:
            body[at] ^= data.draw(st.integers(1, 255), label="mask")
        elif action == "insert":
            body[at:at] = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
        elif action == "delete" and body:
            del body[at : at + data.draw(st.integers(1, 16), label="length")]
        elif action == "truncate":
            del body[at:]
    decode_proto(bytes(body))


def valid_json_doc() -> dict[str, Any]:
    """The OTLP/JSON form of a small valid logs request."""
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "fuzz"}}]},
                "scopeLogs": [
                    {
                        "scope": {"name": "fuzz"},
                        "logRecords": [
                            {
                                "timeUnixNano": str(NOW + i),
                                "severityNumber": "SEVERITY_NUMBER_ERROR" if i else 9,
                                "severityText": "ERROR",
                                "traceId": "0102030405060708090a0b0c0d0e0f10",
                                "spanId": f"{i + 1:016x}",
                                "body": {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "5"}}]}},
                                "attributes": [{"key": "l", "value": {"arrayValue": {"values": [{"doubleValue": 1}]}}}],
                            }
                            for i in range(2)
                        ],
                    }
                ],
            }
        ]
    }


def decode_json_doc(doc: Any) -> None:
    try:
        decoded = otlp_logs_json.decode(doc, PROJECT, NOW)
    except BadRequest:
        return
    apply_limits(decoded.records)
    stored(decoded.records)


def test_the_valid_json_doc_decodes_to_two_records():
    decoded = otlp_logs_json.decode(valid_json_doc(), PROJECT, NOW)
    assert [(r.type, r.message) for r in decoded.records] == [("log", '{"a":5}'), ("error", '{"a":5}')]


@FUZZ
@given(json_trees)
def test_random_json_trees_are_a_bad_request_or_log_records(doc):
    decode_json_doc(doc)
    decode_json_doc({"resourceLogs": [doc]})
    decode_json_doc({"resourceLogs": [{"scopeLogs": [{"logRecords": [doc]}]}]})


@FUZZ
@given(st.data())
def test_valid_json_with_wrong_types_is_a_bad_request_or_log_records(data):
    doc = valid_json_doc()
    paths = _paths(doc)[1:]
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        path = data.draw(st.sampled_from(paths), label="path")
        parent = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
            if data.draw(st.booleans(), label="replace"):
                parent[path[-1]] = data.draw(json_trees, label="value")
            elif isinstance(parent, dict):
                parent[data.draw(st.sampled_from(LOG_FIELDS), label="field")] = data.draw(json_trees, label="value")
        except (KeyError, IndexError, TypeError):
            continue
    decode_json_doc(doc)


# --- hostile requests to a running server ------------------------------------------------------------------------


def _post(server, project, body: bytes, media: str = "application/x-protobuf", **headers: str) -> httpx.Response:  # noqa: ANN001
    return httpx.post(
        f"{server.http_url}/v1/logs",
        content=body,
        headers={"content-type": media, **project.auth(), **headers},
        timeout=60,
    )


def test_hostile_log_requests_get_precise_4xx_and_nothing_half_written(server, project):  # noqa: ANN001
    answers = []
    limit = server.settings.max_body_bytes
    # A gzip bomb (past max_body_bytes once inflated), a body over the limit, JSON 100,000 levels deep.
    answers.append(_post(server, project, gzip.compress(b"\x00" * (limit + 1)), **{"content-encoding": "gzip"}))
    answers.append(_post(server, project, b"\x0a" * (limit + 1)))
    deep = b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}]}]}"
    answers.append(_post(server, project, deep, "application/json"))
    # More log records than one request may hold: refused before one is built.
    many = ExportLogsServiceRequest()
    many.resource_logs.add().scope_logs.add().log_records.extend(
        [type(valid_request().resource_logs[0].scope_logs[0].log_records[0])()] * 100_001
    )
    answers.append(_post(server, project, many.SerializeToString()))
    # Invalid UTF-8 in a protobuf string field (the body), a body nested past the AnyValue limit in JSON.
    bad_utf8 = bytearray(VALID_PB)
    at = bad_utf8.index(b"boom 42")
    bad_utf8[at : at + 2] = b"\xff\xfe"
    answers.append(_post(server, project, bytes(bad_utf8)))
    nested: dict[str, Any] = {"stringValue": "x"}
    for _ in range(40):
        nested = {"arrayValue": {"values": [nested]}}
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": nested}]}]}]}
    answers.append(_post(server, project, orjson.dumps(doc), "application/json"))
    assert [a.status_code for a in answers] == [413, 413, 400, 413, 400, 400]
    assert status_pb2.Status.FromString(answers[3].content).message == (
        "request holds 100001 spans or records; at most 100000 are accepted per request"
    )
    channel = grpc.insecure_channel(server.grpc_target)
    export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
    with pytest.raises(grpc.RpcError) as raised:
        export(bytes(bad_utf8), metadata=[("authorization", f"Bearer {project.producer_key}")], timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()
    listed = httpx.get(f"{server.http_url}/v1/telemetry", headers=project.auth("agent"), timeout=30).json()
    assert listed["records"] == []


def test_huge_log_bodies_and_attributes_are_cut_with_a_marker(server, project):  # noqa: ANN001
    request = valid_request()
    log = request.resource_logs[0].scope_logs[0].log_records[0]
    log.body.CopyFrom(AnyValue(string_value="x" * 200_000))
    log.attributes.add(key="big").value.string_value = "y" * 100_000
    answer = _post(server, project, request.SerializeToString())
    assert answer.status_code == 200 and answer.content == b""
    [error] = httpx.get(
        f"{server.http_url}/v1/telemetry", params={"type": "error"}, headers=project.auth("agent"), timeout=30
    ).json()["records"]
    assert len(error["message"]) == 64 * 1024
    assert error["attributes"]["loopkit.truncated_fields"] == ["message"]
    assert len(error["attributes"]["big"]) == 16 * 1024 and error["attributes"][TRUNCATED] == ["big"]
    assert TRUNCATED in MARKERS
