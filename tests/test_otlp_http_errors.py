"""OTLP/HTTP error answers: exact status codes and google.rpc.Status bodies, limits, encodings, auth, dedup."""

from __future__ import annotations

import gzip
import itertools
import json
import time
import zlib

import httpx
import pytest
from conftest import make_settings, new_project
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1 import trace_pb2

from loopkit_core.server import in_thread

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
LIMIT = 64 * 1024  # max_body_bytes of the `small` server
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
# gRPC status codes carried in google.rpc.Status.code
INVALID_ARGUMENT, RESOURCE_EXHAUSTED, PERMISSION_DENIED, UNAVAILABLE, UNAUTHENTICATED = 3, 8, 7, 14, 16
_ids = itertools.count(1)


def new_span(name="op", trace_id=TRACE, span_id=None, **attributes):
    """A valid protobuf span (a fresh span ID unless given) that started a second ago."""
    start = time.time_ns() - 1_000_000_000
    span = trace_pb2.Span(
        trace_id=trace_id,
        span_id=next(_ids).to_bytes(8, "big") if span_id is None else span_id,
        name=name,
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start,
        end_time_unix_nano=start + 5_000_000,
    )
    for key, value in attributes.items():
        span.attributes.add(key=key).value.string_value = value
    return span


def pb_request(*spans):
    """An ExportTraceServiceRequest with one resource and one scope."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "http-errors"
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "tests"
    scope_spans.spans.extend(spans)
    return request


def sized_body(size):
    """A valid serialized request of exactly `size` bytes (one span, padded with an attribute)."""
    pad = size
    for _ in range(8):
        body = pb_request(new_span("sized", span_id=b"\x51" * 8, pad="x" * pad)).SerializeToString()
        if len(body) == size:
            return body
        pad -= len(body) - size
    raise AssertionError(f"could not build a request of {size} bytes")


def json_body(name):
    """One valid OTLP/JSON document with a single fresh span, encoded."""
    start = time.time_ns() - 1_000_000_000
    span = {
        "traceId": TRACE.hex(),
        "spanId": next(_ids).to_bytes(8, "big").hex(),
        "name": name,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 1_000_000),
    }
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def post(client, body, content_type=PROTOBUF, auth=None, **headers):
    """POST /v1/traces with a content type, an authorization header and extra headers (dashes as _)."""
    sent = {"content-type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}}
    if auth is not None:
        sent.update(auth)
    return client.post("/v1/traces", content=body, headers=sent)


def records(client, project):
    """Every record of the project in the last hour."""
    response = client.get("/v1/telemetry", params={"limit": 1000}, headers=project.auth("agent"))
    assert response.status_code == 200, response.text
    return response.json()["records"]


def proto_status(response, http_status, code):
    """Assert an OTLP error answer in protobuf; return its message."""
    assert response.status_code == http_status, response.content
    assert response.headers["content-type"] == PROTOBUF
    status = status_pb2.Status.FromString(response.content)
    assert status.code == code
    assert status.message
    assert list(status.details) == []
    return status.message


def json_status(response, http_status, code):
    """Assert an OTLP error answer in JSON; return its message."""
    assert response.status_code == http_status, response.content
    assert response.headers["content-type"] == JSON
    body = response.json()
    assert sorted(body) == ["code", "message"]
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body["message"]


def assert_still_serves(client, project, stored_before):
    """Nothing of the bad request was written, and a good request right after it is stored."""
    assert len(records(client, project)) == stored_before
    good = post(client, pb_request(new_span("after")).SerializeToString(), auth=project.auth())
    assert good.status_code == 200
    assert good.content == b""
    assert len(records(client, project)) == stored_before + 1


class Small:
    """A running server with a small body limit, an HTTP client and a project on it."""

    def __init__(self, server, client, project):
        self.server, self.client, self.project = server, client, project


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One LoopKit for the module; every test gets its own project, so tests stay independent."""
    with in_thread(make_settings(tmp_path_factory.mktemp("data"))) as running:
        yield running


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """A LoopKit with max_body_bytes = 64 KiB."""
    with in_thread(make_settings(tmp_path_factory.mktemp("small"), max_body_bytes=LIMIT)) as running:
        yield running


@pytest.fixture
def small(small_server):
    with httpx.Client(base_url=small_server.http_url, timeout=30) as client:
        yield Small(small_server, client, new_project(small_server, "small limits"))


# --- malformed bodies ---------------------------------------------------------------------------

MALFORMED_PROTOBUF = [
    b"\xff",
    b"garbage that is not protobuf",
    b"\x0a\x05abc",  # resource_spans claims 5 bytes, 3 follow
    b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end
    b"\x0a\x02\x0a\x80",  # a truncated nested message
]
MALFORMED_JSON = [
    b"{",
    b"not json at all",
    b"\xff\xfe{}",
    b"[]",
    b'"resourceSpans"',
    b'{"resourceSpans": 5}',
    b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}',
    b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
]


def test_malformed_protobuf_is_400(client, project):
    for stored, body in enumerate(MALFORMED_PROTOBUF):
        message = proto_status(post(client, body, auth=project.auth()), 400, INVALID_ARGUMENT)
        assert "ExportTraceServiceRequest" in message, body
        assert_still_serves(client, project, stored)


def test_malformed_json_is_400(client, project):
    for stored, body in enumerate(MALFORMED_JSON):
        json_status(post(client, body, JSON, auth=project.auth()), 400, INVALID_ARGUMENT)
        assert_still_serves(client, project, stored)


# --- content type and encoding ------------------------------------------------------------------


def test_wrong_content_type_is_415(client, project):
    body = pb_request(new_span()).SerializeToString()
    content_types = ["text/plain", "application/protobuf", "application/x-www-form-urlencoded", "application/jsonl", ""]
    for stored, content_type in enumerate(content_types):
        message = json_status(post(client, body, content_type, auth=project.auth()), 415, INVALID_ARGUMENT)
        assert "application/x-protobuf" in message, content_type
        assert_still_serves(client, project, stored)


def test_unsupported_content_encoding_is_415(client, project):
    body = pb_request(new_span()).SerializeToString()
    for stored, encoding in enumerate(["br", "zstd", "compress", "gzip, br"]):
        response = post(client, body, auth=project.auth(), content_encoding=encoding)
        assert "Content-Encoding" in proto_status(response, 415, INVALID_ARGUMENT), encoding
        response = post(client, b'{"resourceSpans": []}', JSON, auth=project.auth(), content_encoding=encoding)
        json_status(response, 415, INVALID_ARGUMENT)
        assert_still_serves(client, project, stored)


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("GZIP", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),  # RFC 9110 deflate: zlib-wrapped
        ("deflate", lambda data: zlib.compress(data, wbits=-15)),  # raw deflate, as some clients send it
        ("identity", lambda data: data),
        ("", lambda data: data),
    ],
)
def test_supported_encodings_are_decoded(client, project, encoding, compress):
    span = new_span("compressed", token="value")
    response = post(
        client, compress(pb_request(span).SerializeToString()), auth=project.auth(), content_encoding=encoding
    )
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-type"] == PROTOBUF
    (record,) = records(client, project)
    assert (record["name"], record["span_id"], record["attributes"]) == (
        "compressed",
        span.span_id.hex(),
        {"token": "value"},
    )


def test_concatenated_gzip_members_are_one_body(client, project):
    body = pb_request(new_span("one"), new_span("two")).SerializeToString()
    half = len(body) // 2
    response = post(
        client, gzip.compress(body[:half]) + gzip.compress(body[half:]), auth=project.auth(), content_encoding="gzip"
    )
    assert (response.status_code, response.content) == (200, b"")
    assert sorted(r["name"] for r in records(client, project)) == ["one", "two"]


def test_truncated_or_corrupt_gzip_is_400(client, project):
    compressed = gzip.compress(pb_request(new_span()).SerializeToString())
    bodies = [
        compressed[:-12],  # cut inside the deflate stream
        compressed[:15],
        b"\x1f\x8b\x08\x00garbage",
        b"plainly not gzip",
    ]
    for stored, body in enumerate(bodies):
        proto_status(post(client, body, auth=project.auth(), content_encoding="gzip"), 400, INVALID_ARGUMENT)
        assert_still_serves(client, project, stored)


def test_truncated_deflate_is_400(client, project):
    body = zlib.compress(pb_request(new_span()).SerializeToString())[:-6]
    proto_status(post(client, body, auth=project.auth(), content_encoding="deflate"), 400, INVALID_ARGUMENT)
    assert_still_serves(client, project, 0)


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        ("Application/JSON; charset=utf-8", "json"),
        ("APPLICATION/JSON", "json"),
        ("application/json ; charset=UTF-8", "json"),
        ("Application/X-Protobuf; proto=opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest", "proto"),
        ("application/x-protobuf;charset=binary", "proto"),
    ],
)
def test_content_type_parameters_and_case_are_accepted(client, project, content_type, encoding):
    if encoding == "json":
        response = post(client, json_body("typed"), content_type, project.auth())
        assert (response.status_code, response.content) == (200, b"{}")
        assert response.headers["content-type"] == JSON
    else:
        response = post(client, pb_request(new_span("typed")).SerializeToString(), content_type, project.auth())
        assert (response.status_code, response.content) == (200, b"")
        assert response.headers["content-type"] == PROTOBUF
    assert [r["name"] for r in records(client, project)] == ["typed"]


# --- size limits (a server with max_body_bytes = 64 KiB) ----------------------------------------


def test_body_at_the_limit_is_accepted_and_one_byte_over_is_413(small):
    at_limit = sized_body(LIMIT)
    response = post(small.client, at_limit, auth=small.project.auth())
    assert (response.status_code, response.content) == (200, b"")
    over = sized_body(LIMIT + 1)
    message = proto_status(post(small.client, over, auth=small.project.auth()), 413, RESOURCE_EXHAUSTED)
    assert str(LIMIT) in message
    assert_still_serves(small.client, small.project, 1)


def test_json_body_over_the_limit_is_413_in_json(small):
    body = json_body("big")
    body += b" " * (LIMIT + 1 - len(body))
    json_status(post(small.client, body, JSON, auth=small.project.auth()), 413, RESOURCE_EXHAUSTED)
    ok = post(small.client, body[:LIMIT], JSON, auth=small.project.auth())  # the same document, within the limit
    assert (ok.status_code, ok.content) == (200, b"{}")
    assert [r["name"] for r in records(small.client, small.project)] == ["big"]


def test_body_far_over_the_limit_by_content_length_is_413(small):
    response = post(small.client, b"\x00" * (4 * 1024 * 1024), auth=small.project.auth())
    proto_status(response, 413, RESOURCE_EXHAUSTED)
    assert_still_serves(small.client, small.project, 0)


def chunks(data, size=8 * 1024):
    """A generator body: httpx sends it chunked, without Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_chunked_body_under_the_limit_is_stored(small):
    spans = [new_span(f"chunked {i}", blob="y" * 1000) for i in range(40)]
    body = pb_request(*spans).SerializeToString()
    assert 40_000 < len(body) < LIMIT
    response = post(small.client, chunks(body), auth=small.project.auth())
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert (response.status_code, response.content) == (200, b"")
    stored = records(small.client, small.project)
    assert sorted(r["span_id"] for r in stored) == sorted(s.span_id.hex() for s in spans)


@pytest.mark.parametrize("total", [LIMIT + 1, 3 * LIMIT])
def test_chunked_body_over_the_limit_is_413(small, total):
    body = sized_body(total)
    response = post(small.client, chunks(body), auth=small.project.auth())
    assert "content-length" not in response.request.headers
    proto_status(response, 413, RESOURCE_EXHAUSTED)
    assert_still_serves(small.client, small.project, 0)


def test_gzip_zip_bomb_is_413(small):
    bomb = gzip.compress(bytes(20 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < LIMIT  # the compressed body itself passes the Content-Length check
    started = time.monotonic()
    response = post(small.client, bomb, auth=small.project.auth(), content_encoding="gzip")
    message = proto_status(response, 413, RESOURCE_EXHAUSTED)
    assert "decompressed" in message
    assert time.monotonic() - started < 5
    json_status(
        post(small.client, bomb, JSON, auth=small.project.auth(), content_encoding="gzip"), 413, RESOURCE_EXHAUSTED
    )
    assert_still_serves(small.client, small.project, 0)


def test_deflate_zip_bomb_is_413(small):
    for bomb in (zlib.compress(bytes(20 * 1024 * 1024), 9), zlib.compress(bytes(20 * 1024 * 1024), 9, wbits=-15)):
        assert len(bomb) < LIMIT
        response = post(small.client, bomb, auth=small.project.auth(), content_encoding="deflate")
        proto_status(response, 413, RESOURCE_EXHAUSTED)
    assert_still_serves(small.client, small.project, 0)


def test_decompressed_size_limit_is_exact(small):
    at_limit = gzip.compress(sized_body(LIMIT))
    response = post(small.client, at_limit, auth=small.project.auth(), content_encoding="gzip")
    assert (response.status_code, response.content) == (200, b"")
    over = gzip.compress(sized_body(LIMIT + 1))
    proto_status(post(small.client, over, auth=small.project.auth(), content_encoding="gzip"), 413, RESOURCE_EXHAUSTED)
    assert len(records(small.client, small.project)) == 1


def test_chunked_gzip_bomb_is_413(small):
    bomb = gzip.compress(bytes(20 * 1024 * 1024), compresslevel=9)
    response = post(small.client, chunks(bomb, 1024), auth=small.project.auth(), content_encoding="gzip")
    assert "content-length" not in response.request.headers
    proto_status(response, 413, RESOURCE_EXHAUSTED)
    assert_still_serves(small.client, small.project, 0)


# --- auth ---------------------------------------------------------------------------------------


def test_missing_or_unknown_key_is_401(client, project):
    body = pb_request(new_span()).SerializeToString()
    document = json_body("x")
    auths = [
        None,
        {"authorization": ""},
        {"authorization": "Bearer"},
        {"authorization": "Bearer lk_ingest_not-a-real-key"},
        {"authorization": "Basic dXNlcjpwYXNz"},
        {"x-api-key": project.producer_key},
    ]
    for stored, auth in enumerate(auths):
        proto_status(post(client, body, auth=auth), 401, UNAUTHENTICATED)
        json_status(post(client, document, JSON, auth), 401, UNAUTHENTICATED)
        assert_still_serves(client, project, stored)


def test_producer_key_of_the_bearer_scheme_is_case_insensitive(client, project):
    auth = {"authorization": f"bearer {project.producer_key}"}
    response = post(client, pb_request(new_span("lower scheme")).SerializeToString(), auth=auth)
    assert (response.status_code, response.content) == (200, b"")
    assert [r["name"] for r in records(client, project)] == ["lower scheme"]


@pytest.mark.parametrize("kind", ["agent", "dashboard"])
def test_key_without_the_write_scope_is_403(client, project, kind):
    body = pb_request(new_span()).SerializeToString()
    message = proto_status(post(client, body, auth=project.auth(kind)), 403, PERMISSION_DENIED)
    assert "telemetry:write" in message
    document = json_body("x")
    json_status(post(client, document, JSON, auth=project.auth(kind)), 403, PERMISSION_DENIED)
    assert_still_serves(client, project, 0)


def test_a_key_writes_only_to_its_own_project(server, client, project):
    other = new_project(server, "other app")
    span = new_span("mine")
    response = post(client, pb_request(span).SerializeToString(), auth=other.auth())
    assert response.status_code == 200
    assert records(client, project) == []
    assert [r["span_id"] for r in records(client, other)] == [span.span_id.hex()]


# --- success shapes, partial success, dedup -----------------------------------------------------


def test_empty_request_is_200_with_an_empty_body(client, project):
    for body in (b"", ExportTraceServiceRequest().SerializeToString(), pb_request().SerializeToString()):
        response = post(client, body, auth=project.auth())
        assert (response.status_code, response.content) == (200, b"")
        assert response.headers["content-type"] == PROTOBUF
    response = post(client, b"{}", JSON, auth=project.auth())
    assert (response.status_code, response.content, response.headers["content-type"]) == (200, b"{}", JSON)
    assert records(client, project) == []


def test_protobuf_partial_success_counts_exactly_the_invalid_spans(client, project):
    good = [new_span("good one"), new_span("good two", trace_id=b"\x07" * 16)]
    bad = [
        new_span("zero trace", trace_id=bytes(16)),
        new_span("short trace", trace_id=b"\x01" * 15),
        new_span("zero span", span_id=bytes(8)),
        new_span("long span", span_id=b"\x02" * 9),
        new_span("no span id", span_id=b""),
    ]
    bad_parent = new_span("bad parent")
    bad_parent.parent_span_id = b"\x03" * 4
    response = post(client, pb_request(good[0], *bad, bad_parent, good[1]).SerializeToString(), auth=project.auth())
    assert response.status_code == 200
    assert response.headers["content-type"] == PROTOBUF
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.HasField("partial_success")
    assert answer.partial_success.rejected_spans == 6
    assert answer.partial_success.error_message.startswith("6 span(s) rejected: ")
    assert "'zero trace'" in answer.partial_success.error_message
    stored = records(client, project)
    assert sorted((r["name"], r["trace_id"], r["span_id"]) for r in stored) == sorted(
        (s.name, s.trace_id.hex(), s.span_id.hex()) for s in good
    )


def test_same_request_twice_stores_each_span_once(client, project):
    spans = [new_span("first"), new_span("second"), new_span("third")]
    body = pb_request(*spans).SerializeToString()
    assert post(client, body, auth=project.auth()).status_code == 200
    first = {r["span_id"]: r["record_id"] for r in records(client, project)}
    assert len(first) == 3
    # Retried compressed, then plain again: still the same spans, the same record IDs.
    assert post(client, gzip.compress(body), auth=project.auth(), content_encoding="gzip").status_code == 200
    assert post(client, body, auth=project.auth()).status_code == 200
    again = {r["span_id"]: r["record_id"] for r in records(client, project)}
    assert again == first
    assert len(set(first.values())) == 3


def test_the_same_span_twice_in_one_request_is_stored_once(client, project):
    span = new_span("duplicate")
    response = post(client, pb_request(span, span).SerializeToString(), auth=project.auth())
    assert (response.status_code, response.content) == (200, b"")
    assert [r["span_id"] for r in records(client, project)] == [span.span_id.hex()]


def test_the_same_span_in_two_projects_is_two_records(server, client, project):
    other = new_project(server, "other app")
    body = pb_request(new_span("shared", span_id=b"\x42" * 8)).SerializeToString()
    assert post(client, body, auth=project.auth()).status_code == 200
    assert post(client, body, auth=other.auth()).status_code == 200
    (mine,) = records(client, project)
    (theirs,) = records(client, other)
    assert mine["span_id"] == theirs["span_id"] == "42" * 8
    assert mine["record_id"] != theirs["record_id"]


# --- overload -----------------------------------------------------------------------------------


def test_writer_unavailable_is_503_with_retry_after(tmp_path):
    with in_thread(make_settings(tmp_path / "closing")) as server, httpx.Client(base_url=server.http_url) as client:
        project = new_project(server)
        # A writer that is shutting down refuses new work: the client must retry, told when.
        server.app.writer.close(timeout=10)
        response = post(client, pb_request(new_span()).SerializeToString(), auth=project.auth())
        proto_status(response, 503, UNAVAILABLE)
        assert response.headers["retry-after"] == "1"
        response = post(client, json_body("x"), JSON, auth=project.auth())
        json_status(response, 503, UNAVAILABLE)
        assert response.headers["retry-after"] == "1"
        assert records(client, project) == []
