"""Property-based fuzzing of every ingest decoder: a precise request error or a success, never a crash.

The property for each decoder: on any input it either raises one of the ingest errors (which the
receivers map to a precise 4xx / OTLP status) or returns records that the store can encode; and a
valid record next to bad ones in the same batch is never lost. Example counts are kept small so
the module runs in well under a minute; raise them locally with LOOPKIT_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import gzip
import os
import time
import zlib
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2

from loopkit_core.model import record_id_for_span
from loopkit_core.store.records import resource_rows, to_rows
from loopkit_core.store.schema import RECORD_COLUMNS
from loopkit_receivers import otlp_json, otlp_proto, records_shape
from loopkit_receivers.body import decompress
from loopkit_receivers.errors import BadRequest, IngestError, TooLarge

PROJECT = "fuzz-0000aaaa"
EXAMPLES = int(os.environ.get("LOOPKIT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None, derandomize=True
)
NOW = time.time_ns()


def valid_request() -> ExportTraceServiceRequest:
    """A realistic request: two spans with every kind of attribute, an exception event and a link."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "fuzz"
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "fuzz.scope"
    for i in range(2):
        span = scope_spans.spans.add(
            trace_id=bytes(range(1, 17)),
            span_id=bytes([i + 1]) * 8,
            parent_span_id=b"" if i == 0 else b"\x01" * 8,
            name=f"op-{i}",
            kind=trace_pb2.Span.SPAN_KIND_SERVER,
            start_time_unix_nano=NOW - 5_000_000,
            end_time_unix_nano=NOW,
        )
        span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
        span.status.message = "boom 42"
        span.attributes.add(key="s").value.string_value = "text"
        span.attributes.add(key="i").value.int_value = -7
        span.attributes.add(key="d").value.double_value = 1.5
        span.attributes.add(key="b").value.bool_value = True
        span.attributes.add(key="raw").value.bytes_value = b"\x00\xff"
        span.attributes.add(key="arr").value.array_value.values.add().string_value = "x"
        span.attributes.add(key="kv").value.kvlist_value.values.add(key="k").value.int_value = 1
        event = span.events.add(name="exception", time_unix_nano=NOW - 1_000_000)
        event.attributes.add(key="exception.type").value.string_value = "ValueError"
        event.attributes.add(key="exception.message").value.string_value = "bad value 17"
        span.links.add(trace_id=b"\x09" * 16, span_id=b"\x08" * 8)
    return request


VALID_PB = valid_request().SerializeToString()


def stored(records: list[Any]) -> None:
    """Encode records exactly as the writer will; must never raise."""
    rows = to_rows(records, NOW)
    assert len(rows) == len(records)
    column = RECORD_COLUMNS.index("resource_key")
    assert {row[column] for row in rows} == {key for key, _ in resource_rows(records)}


def decode_proto(body: bytes) -> None:
    """The protobuf path: a BadRequest, or records the store can encode."""
    try:
        decoded = otlp_proto.decode(otlp_proto.parse_request(body), PROJECT, NOW)
    except BadRequest:
        return
    stored(decoded.records)
    assert decoded.rejected >= 0


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_are_a_bad_request_or_spans(body):
    decode_proto(body)


@FUZZ
@given(st.data())
def test_mutated_valid_protobuf_is_a_bad_request_or_spans(data):
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


# --- OTLP/JSON ------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
json_trees = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
FIELD_NAMES = [
    "resourceSpans",
    "resource",
    "attributes",
    "scopeSpans",
    "scope",
    "name",
    "spans",
    "traceId",
    "spanId",
    "parentSpanId",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "kind",
    "status",
    "code",
    "message",
    "events",
    "timeUnixNano",
    "links",
    "key",
    "value",
    "stringValue",
    "intValue",
    "doubleValue",
    "boolValue",
    "arrayValue",
    "kvlistValue",
    "bytesValue",
    "values",
]


def valid_json_doc() -> dict[str, Any]:
    """The OTLP/JSON form of a small valid request."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "fuzz"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "fuzz"},
                        "spans": [
                            {
                                "traceId": "0102030405060708090a0b0c0d0e0f10",
                                "spanId": f"{i + 1:016x}",
                                "name": f"op-{i}",
                                "kind": 2,
                                "startTimeUnixNano": str(NOW - 5_000_000),
                                "endTimeUnixNano": str(NOW),
                                "status": {"code": 2, "message": "boom"},
                                "attributes": [
                                    {"key": "a", "value": {"intValue": "5"}},
                                    {"key": "l", "value": {"arrayValue": {"values": [{"doubleValue": 1.5}]}}},
                                ],
                                "events": [{"name": "exception", "timeUnixNano": str(NOW), "attributes": []}],
                                "links": [{"traceId": "09" * 16, "spanId": "08" * 8}],
                            }
                            for i in range(2)
                        ],
                    }
                ],
            }
        ]
    }


def decode_json_doc(doc: Any) -> None:
    """The OTLP/JSON path on a parsed document: BadRequest, or records the store can encode."""
    try:
        decoded = otlp_json.decode(doc, PROJECT, NOW)
    except BadRequest:
        return
    stored(decoded.records)


@FUZZ
@given(json_trees)
def test_random_json_trees_are_a_bad_request_or_spans(doc):
    decode_json_doc(doc)
    decode_json_doc({"resourceSpans": [doc]})


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@FUZZ
@given(st.data())
def test_valid_json_with_wrong_types_is_a_bad_request_or_spans(data):
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
                parent[data.draw(st.sampled_from(FIELD_NAMES), label="field")] = data.draw(json_trees, label="value")
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced this branch
    decode_json_doc(doc)


# --- gzip / deflate -----------------------------------------------------------------------------

LIMIT = 64 * 1024


@FUZZ
@given(st.binary(max_size=1024), st.sampled_from(["gzip", "deflate", "x-gzip"]))
def test_random_compressed_bodies_are_a_bad_request_or_bytes(body, encoding):
    try:
        out = decompress(body, encoding, LIMIT)
    except (BadRequest, TooLarge):
        return
    assert len(out) <= LIMIT


@FUZZ
@given(st.binary(min_size=1, max_size=4096), st.sampled_from(["gzip", "deflate", "raw-deflate"]), st.data())
def test_truncated_compressed_streams_are_a_bad_request(payload, kind, data):
    if kind == "gzip":
        whole = gzip.compress(payload)
    elif kind == "deflate":
        whole = zlib.compress(payload)
    else:
        packer = zlib.compressobj(wbits=-15)
        whole = packer.compress(payload) + packer.flush()
    encoding = "gzip" if kind == "gzip" else "deflate"
    assert decompress(whole, encoding, LIMIT) == payload
    cut = data.draw(st.integers(0, len(whole) - 1), label="cut")
    try:
        out = decompress(whole[:cut], encoding, LIMIT)
    except BadRequest:
        return
    # Only a cut that leaves a complete stream (e.g. before gzip's trailer of a raw deflate) may decode;
    # it never yields bytes that were not sent.
    assert payload.startswith(out)
    assert kind != "gzip", "a truncated gzip member was accepted"


# --- the records shape --------------------------------------------------------------------------

GOOD_RECORD = {
    "type": "error",
    "name": "checkout",
    "message": "card declined",
    "trace_id": "ab" * 16,
    "span_id": "cd" * 8,
    "attributes": {"k": "v"},
}
record_fields = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["error", "tool_failure", "latency", "user_signal", "event", "span", ""]) | json_trees,
        "name": st.text(max_size=30) | json_trees,
        "message": st.text(max_size=30) | json_trees,
        "timestamp": st.integers(-(2**65), 2**65) | st.text(max_size=30) | st.floats() | json_trees,
        "duration_ms": st.floats() | st.integers(-(2**65), 2**65) | json_trees,
        "status": st.sampled_from(["ok", "error", "unset", "OK", "bad"]) | json_trees,
        "trace_id": st.text(alphabet="0123456789abcdefABCDEFxz", max_size=34) | json_trees,
        "span_id": st.text(alphabet="0123456789abcdef", max_size=18) | json_trees,
        "session_id": st.text(max_size=10) | json_trees,
        "user_id": st.text(max_size=10) | json_trees,
        "service": st.text(max_size=10) | json_trees,
        "attributes": st.dictionaries(st.text(max_size=8), json_trees, max_size=5) | json_trees,
    },
)


@FUZZ
@given(st.lists(record_fields | json_trees, max_size=6), st.integers(0, 6))
def test_random_records_never_crash_and_the_good_record_is_kept(items, at):
    at = min(at, len(items))
    items = [*items[:at], dict(GOOD_RECORD), *items[at:]]
    # Through orjson, as the server parses it (floats like NaN cannot be sent as JSON at all).
    try:
        doc = orjson.loads(orjson.dumps({"records": items}))
    except orjson.JSONEncodeError:
        return
    batch = records_shape.decode(doc, PROJECT, NOW)
    assert len(batch.record_ids) == len(items)
    assert batch.record_ids[at] == record_id_for_span(PROJECT, "ab" * 16, "cd" * 8)
    assert sum(r is not None for r in batch.record_ids) == len(batch.records)
    assert {e["index"] for e in batch.errors} == {i for i, r in enumerate(batch.record_ids) if r is None}
    stored(batch.records)
    orjson.dumps(records_shape.response(batch))


@FUZZ
@given(json_trees)
def test_any_records_value_is_a_bad_request_or_a_batch(value):
    try:
        batch = records_shape.decode({"records": value}, PROJECT, NOW)
    except IngestError as exc:
        assert exc.http_status == 400
        return
    stored(batch.records)
