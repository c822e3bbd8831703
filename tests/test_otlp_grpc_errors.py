"""OTLP/gRPC error answers: exact status codes for bad bytes, auth, size limits (also gzip), partial success, dedup."""

from __future__ import annotations

import itertools
import time

import grpc
import httpx
import pytest
from conftest import make_settings, new_project
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.trace.v1 import trace_pb2

from loopkit_core.server import in_thread

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LIMIT = 64 * 1024  # max_body_bytes of the `small` server
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
TIMEOUT = 10
_ids = itertools.count(1)


def new_span(name="op", trace_id=TRACE, span_id=None, **attributes):
    """A valid protobuf span (a fresh span ID unless given) that started a second ago."""
    start = time.time_ns() - 1_000_000_000
    span = trace_pb2.Span(
        trace_id=trace_id,
        span_id=next(_ids).to_bytes(8, "big") if span_id is None else span_id,
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=start + 7_000_000,
    )
    for key, value in attributes.items():
        span.attributes.add(key=key).value.string_value = value
    return span


def pb_request(*spans):
    """An ExportTraceServiceRequest with one resource and one scope."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "grpc-errors"
    resource_spans.scope_spans.add().spans.extend(spans)
    return request


def sized_request(size):
    """A valid request that serializes to exactly `size` bytes (one span padded with an attribute)."""
    pad = size
    for _ in range(8):
        request = pb_request(new_span("sized", span_id=b"\x51" * 8, pad="x" * pad))
        if request.ByteSize() == size:
            return request
        pad -= request.ByteSize() - size
    raise AssertionError(f"could not build a request of {size} bytes")


def meta(key):
    """gRPC metadata with the bearer key (metadata keys are lowercase)."""
    return (("authorization", f"Bearer {key}"),)


def export(target, request, metadata, compression=None):
    """Export through the generated stub on a fresh loopback channel; return the response."""
    with grpc.insecure_channel(target, compression=compression) as channel:
        return TraceServiceStub(channel).Export(request, metadata=metadata, timeout=TIMEOUT)


def export_error(target, request, metadata, compression=None):
    """Export, expecting an error; return the grpc.RpcError."""
    with pytest.raises(grpc.RpcError) as caught:
        export(target, request, metadata, compression)
    return caught.value


def export_raw(target, body, metadata):
    """Send raw bytes as the Export request message (identity serializers)."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        return call(body, metadata=metadata, timeout=TIMEOUT)


def records(server, project):
    """Every record of the project in the last hour, read over HTTP with the agent key."""
    response = httpx.get(
        f"{server.http_url}/v1/telemetry", params={"limit": 1000}, headers=project.auth("agent"), timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()["records"]


def assert_still_serves(server, project, stored_before):
    """Nothing of the bad call was written, and a good call right after it is stored."""
    assert len(records(server, project)) == stored_before
    response = export(server.grpc_target, pb_request(new_span("after")), meta(project.producer_key))
    assert response == ExportTraceServiceResponse()
    assert len(records(server, project)) == stored_before + 1


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One LoopKit for the module; every test gets its own project, so tests stay independent."""
    with in_thread(make_settings(tmp_path_factory.mktemp("data"))) as running:
        yield running


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A LoopKit with max_body_bytes = 64 KiB."""
    with in_thread(make_settings(tmp_path_factory.mktemp("small"), max_body_bytes=LIMIT)) as running:
        yield running


@pytest.fixture
def small_project(small):
    return new_project(small, "small limits")


# --- the good path ------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_export_stores_spans_and_answers_an_empty_response(server, project, compression):
    parent = new_span("parent", http_route="/pay")
    child = new_span("child")
    child.parent_span_id = parent.span_id
    child.status.code = trace_pb2.Status.STATUS_CODE_ERROR
    child.status.message = "card declined"
    response = export(server.grpc_target, pb_request(parent, child), meta(project.producer_key), compression)
    assert response == ExportTraceServiceResponse()
    assert not response.HasField("partial_success")
    stored = {r["name"]: r for r in records(server, project)}
    assert sorted(stored) == ["child", "parent"]
    assert (stored["parent"]["span_id"], stored["parent"]["attributes"]) == (
        parent.span_id.hex(),
        {"http_route": "/pay"},
    )
    assert (stored["child"]["parent_span_id"], stored["child"]["trace_id"]) == (parent.span_id.hex(), TRACE.hex())
    assert (stored["child"]["type"], stored["child"]["status"], stored["child"]["message"]) == (
        "error",
        "error",
        "card declined",
    )
    assert stored["child"]["duration_ms"] == 7.0


def test_empty_request_is_ok(server, project):
    assert export(server.grpc_target, ExportTraceServiceRequest(), meta(project.producer_key)) == (
        ExportTraceServiceResponse()
    )
    assert export_raw(server.grpc_target, b"", meta(project.producer_key)) == b""
    assert records(server, project) == []


# --- malformed, auth ----------------------------------------------------------------------------


def test_malformed_bytes_are_invalid_argument(server, project):
    bodies = [
        b"\xff",
        b"garbage that is not protobuf",
        b"\x0a\x05abc",
        b"\x0a\xff\xff\xff\xff\x0f",
        b"\x0a\x02\x0a\x80",
    ]
    for stored, body in enumerate(bodies):
        with pytest.raises(grpc.RpcError) as caught:
            export_raw(server.grpc_target, body, meta(project.producer_key))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, body
        assert "ExportTraceServiceRequest" in caught.value.details()
        assert_still_serves(server, project, stored)


def test_missing_or_unknown_key_is_unauthenticated(server, project):
    metadatas = [
        (),
        (("authorization", ""),),
        (("authorization", "Bearer"),),
        (("authorization", "Bearer lk_ingest_not-a-real-key"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("x-api-key", project.producer_key),),
    ]
    for stored, metadata in enumerate(metadatas):
        error = export_error(server.grpc_target, pb_request(new_span()), metadata)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        assert error.details()
        assert_still_serves(server, project, stored)


@pytest.mark.parametrize("kind", ["agent", "dashboard"])
def test_key_without_the_write_scope_is_permission_denied(server, project, kind):
    error = export_error(server.grpc_target, pb_request(new_span()), meta(getattr(project, f"{kind}_key")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "telemetry:write" in error.details()
    assert_still_serves(server, project, 0)


def test_auth_is_checked_before_the_body_is_decoded(server, project):
    with pytest.raises(grpc.RpcError) as caught:
        export_raw(server.grpc_target, b"\xff", ())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- size limits (a server with max_body_bytes = 64 KiB) ----------------------------------------


def test_message_at_the_limit_is_ok_and_one_byte_over_is_resource_exhausted(small, small_project):
    assert export(small.grpc_target, sized_request(LIMIT), meta(small_project.producer_key)) == (
        ExportTraceServiceResponse()
    )
    error = export_error(small.grpc_target, sized_request(LIMIT + 1), meta(small_project.producer_key))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_serves(small, small_project, 1)


def test_message_far_over_the_limit_is_resource_exhausted(small, small_project):
    spans = [new_span(f"s{i}", blob="z" * 1000) for i in range(300)]
    error = export_error(small.grpc_target, pb_request(*spans), meta(small_project.producer_key))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_serves(small, small_project, 0)


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_compressed_message_that_inflates_past_the_limit_is_resource_exhausted(
    server, project, small, small_project, compression
):
    # 5 MB of one repeated byte compresses to about 5 KB: under the limit on the wire, far over it inflated.
    bomb = sized_request(5 * 1024 * 1024)
    error = export_error(small.grpc_target, bomb, meta(small_project.producer_key), compression)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # grpcio's own wording (1.85): its decompressor stops at the receive limit, so the message did travel
    # compressed and the zip bomb was caught while inflating.
    assert "Decompressed message larger than max" in error.details()
    # Just over the limit once inflated is refused too; at the limit passes.
    error = export_error(small.grpc_target, sized_request(LIMIT + 1), meta(small_project.producer_key), compression)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_serves(small, small_project, 0)
    at_limit = export(small.grpc_target, sized_request(LIMIT), meta(small_project.producer_key), compression)
    assert at_limit == ExportTraceServiceResponse()
    # The refusal comes from the server's limit, not the client: a server with the default 64 MiB takes it.
    assert export(server.grpc_target, bomb, meta(project.producer_key), compression) == ExportTraceServiceResponse()
    assert [r["name"] for r in records(server, project)] == ["sized"]


# --- partial success, dedup, overload -----------------------------------------------------------


def test_partial_success_counts_exactly_the_invalid_spans(server, project):
    good = [new_span("good one"), new_span("good two", trace_id=b"\x09" * 16)]
    bad = [
        new_span("zero trace", trace_id=bytes(16)),
        new_span("short trace", trace_id=b"\x01" * 8),
        new_span("zero span", span_id=bytes(8)),
        new_span("long span", span_id=b"\x02" * 16),
    ]
    response = export(server.grpc_target, pb_request(bad[0], good[0], *bad[1:], good[1]), meta(project.producer_key))
    assert response.HasField("partial_success")
    assert response.partial_success.rejected_spans == 4
    message = response.partial_success.error_message
    assert message.startswith("4 span(s) rejected: ")
    for span in bad:
        assert repr(span.name) in message
    stored = records(server, project)
    assert sorted((r["name"], r["trace_id"], r["span_id"]) for r in stored) == sorted(
        (s.name, s.trace_id.hex(), s.span_id.hex()) for s in good
    )


def test_resent_request_stores_each_span_once(server, project):
    request = pb_request(new_span("a"), new_span("b"), new_span("c"))
    assert export(server.grpc_target, request, meta(project.producer_key)) == ExportTraceServiceResponse()
    first = {r["span_id"]: r["record_id"] for r in records(server, project)}
    assert len(first) == 3
    assert export(server.grpc_target, request, meta(project.producer_key)) == ExportTraceServiceResponse()
    assert export(server.grpc_target, request, meta(project.producer_key), grpc.Compression.Gzip) == (
        ExportTraceServiceResponse()
    )
    assert {r["span_id"]: r["record_id"] for r in records(server, project)} == first
    # The same span over OTLP/HTTP is the same record too.
    response = httpx.post(
        f"{server.http_url}/v1/traces",
        content=request.SerializeToString(),
        headers={"content-type": "application/x-protobuf", **project.auth()},
        timeout=30,
    )
    assert response.status_code == 200
    assert {r["span_id"]: r["record_id"] for r in records(server, project)} == first


def test_unavailable_carries_retry_info_in_both_places(tmp_path):
    with in_thread(make_settings(tmp_path / "closing")) as running:
        project = new_project(running)
        # A writer that is shutting down refuses new work: the client must retry, told when.
        running.app.writer.close(timeout=10)
        error = export_error(running.grpc_target, pb_request(new_span()), meta(project.producer_key))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        trailers = dict(error.trailing_metadata())
        retry = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (1, 0)
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert status.message == error.details()
        (detail,) = status.details
        unpacked = error_details_pb2.RetryInfo()
        assert detail.Unpack(unpacked)
        assert unpacked == retry
        assert records(running, project) == []
