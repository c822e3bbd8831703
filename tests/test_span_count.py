"""Spans per request are bounded before any record is built: 413 / RESOURCE_EXHAUSTED past the bound."""

from __future__ import annotations

import time

import grpc
import httpx
import orjson
import pytest
from conftest import make_settings, new_project
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from loopkit_core.server import in_thread
from loopkit_receivers import otlp_json, otlp_proto, records_shape, span_count
from loopkit_receivers.errors import TooLarge

BOUND = span_count.MAX_SPANS_PER_REQUEST
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TRACE = b"\x5b" * 16


def proto_request(spans_per_scope: list[int], valid: bool = True) -> ExportTraceServiceRequest:
    """Spans spread over scopes of two resources; invalid ones (no span ID) are rejected alone, never stored."""
    request = ExportTraceServiceRequest()
    resources = [request.resource_spans.add(), request.resource_spans.add()]
    n = 0
    for i, count in enumerate(spans_per_scope):
        scope = resources[i % 2].scope_spans.add()
        for _ in range(count):
            n += 1
            span_id = n.to_bytes(8, "big") if valid else b""
            scope.spans.add(trace_id=TRACE, span_id=span_id, name="s", start_time_unix_nano=1, end_time_unix_nano=2)
    return request


def json_doc(spans_per_scope: list[int], valid: bool = True) -> dict:
    """The OTLP/JSON twin of proto_request (camelCase and snake_case field names mixed, as parsers accept)."""
    scopes = []
    n = 0
    for count in spans_per_scope:
        spans = []
        for _ in range(count):
            n += 1
            spans.append({"traceId": TRACE.hex(), "spanId": f"{n:016x}" if valid else "", "name": "s"})
        scopes.append({"spans": spans})
    return {"resourceSpans": [{"scopeSpans": scopes[:1]}, {"scope_spans": scopes[1:]}]}


# --- the decoders, at a small bound ---------------------------------------------------------------


def test_proto_decoder_accepts_exactly_the_bound_and_refuses_one_more():
    decoded = otlp_proto.decode(proto_request([3, 4, 3]), "p", 1, max_spans=10)
    assert len(decoded.records) == 10 and decoded.rejected == 0
    with pytest.raises(TooLarge) as refused:
        otlp_proto.decode(proto_request([3, 4, 4]), "p", 1, max_spans=10)
    assert refused.value.message == "request holds 11 spans or records; at most 10 are accepted per request"
    assert refused.value.http_status == 413 and refused.value.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_json_decoder_accepts_exactly_the_bound_and_refuses_one_more():
    decoded = otlp_json.decode(json_doc([3, 4, 3]), "p", 1, max_spans=10)
    assert len(decoded.records) == 10 and decoded.rejected == 0
    with pytest.raises(TooLarge, match="request holds 11 spans or records; at most 10 "):
        otlp_json.decode(json_doc([3, 4, 4]), "p", 1, max_spans=10)


def test_records_decoder_accepts_exactly_the_bound_and_refuses_one_more():
    items = [{"type": "event", "name": f"r{i}"} for i in range(11)]
    batch = records_shape.decode({"records": items[:10]}, "p", 1, max_records=10)
    assert len(batch.records) == 10 and batch.errors == []
    with pytest.raises(TooLarge, match="request holds 11 spans or records; at most 10 "):
        records_shape.decode({"records": items}, "p", 1, max_records=10)


def test_json_count_reads_fields_as_the_decoder_does():
    # A null camelCase field falls back to the snake_case one in the decoder, so it must in the count too.
    doc = {"resourceSpans": None, "resource_spans": [{"scopeSpans": None, "scope_spans": [{"spans": [{}] * 7}]}]}
    assert span_count.in_json(doc) == 7
    assert span_count.in_json({"resourceSpans": [5, {"scopeSpans": "x"}, {"scopeSpans": [{"spans": {}}]}]}) == 0


# --- over the wire, at the default bound ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with in_thread(make_settings(tmp_path_factory.mktemp("spans"))) as running:
        yield running


@pytest.fixture(scope="module")
def project(server):
    return new_project(server, "many spans")


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.http_url, timeout=120) as c:
        yield c


def test_the_default_bound_is_100k():
    assert BOUND == 100_000


def test_http_protobuf_at_the_bound_passes_and_one_more_is_413(client, project):
    headers = {"content-type": "application/x-protobuf", **project.auth()}
    # Spans without IDs are rejected alone: the answer proves the request passed the bound without storing 100k rows.
    at_bound = proto_request([BOUND // 2, BOUND // 2], valid=False).SerializeToString()
    response = client.post("/v1/traces", content=at_bound, headers=headers)
    assert response.status_code == 200
    assert ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans == BOUND
    over = proto_request([BOUND // 2, BOUND // 2, 1]).SerializeToString()
    started = time.monotonic()
    response = client.post("/v1/traces", content=over, headers=headers)
    assert time.monotonic() - started < 10
    assert response.status_code == 413
    status = status_pb2.Status.FromString(response.content)
    assert status.code == 8  # RESOURCE_EXHAUSTED
    assert status.message == "request holds 100001 spans or records; at most 100000 are accepted per request"


def test_http_json_and_records_one_past_the_bound_are_413(client, project):
    headers = {"content-type": "application/json", **project.auth()}
    at_bound = client.post("/v1/traces", content=orjson.dumps(json_doc([BOUND], valid=False)), headers=headers)
    assert at_bound.status_code == 200 and at_bound.json()["partialSuccess"]["rejectedSpans"] == str(BOUND)
    over = client.post("/v1/traces", content=orjson.dumps(json_doc([BOUND, 1])), headers=headers)
    assert over.status_code == 413
    assert over.json() == {
        "code": 8,
        "message": "request holds 100001 spans or records; at most 100000 are accepted per request",
    }
    records = {"records": [{"type": "event", "name": "r"}] * (BOUND + 1)}
    over = client.post("/v1/traces", content=orjson.dumps(records), headers=headers)
    assert over.status_code == 413 and over.json()["code"] == 8
    assert "holds 100001 spans or records" in over.json()["message"]
    # Nothing of the refused requests was stored.
    listed = client.get("/v1/telemetry", params={"since_minutes": 10 * 366 * 24 * 60}, headers=project.auth("agent"))
    assert listed.status_code == 200 and listed.json()["records"] == []


def test_grpc_at_the_bound_passes_and_one_more_is_resource_exhausted(server, project):
    metadata = (("authorization", f"Bearer {project.producer_key}"),)
    with grpc.insecure_channel(server.grpc_target) as channel:
        export = channel.unary_unary(EXPORT)
        answer = export(proto_request([BOUND], valid=False).SerializeToString(), metadata=metadata, timeout=60)
        assert ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == BOUND
        with pytest.raises(grpc.RpcError) as refused:
            export(proto_request([1, BOUND]).SerializeToString(), metadata=metadata, timeout=60)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == "request holds 100001 spans or records; at most 100000 are accepted per request"


def test_the_bound_is_the_max_spans_per_request_setting_on_every_wire(tmp_path):
    """LOOPKIT_MAX_SPANS_PER_REQUEST reaches every decoder: 10 accepted, 11 refused over HTTP, gRPC and records."""
    with in_thread(make_settings(tmp_path / "data", max_spans_per_request=10)) as running:
        project = new_project(running)
        auth = {"authorization": f"Bearer {project.producer_key}"}
        with httpx.Client(base_url=running.http_url, timeout=30) as client:
            for spans, status in ((10, 200), (11, 413)):
                body = proto_request([spans]).SerializeToString()
                headers = {**auth, "content-type": "application/x-protobuf"}
                assert client.post("/v1/traces", content=body, headers=headers).status_code == status
                answer = client.post("/v1/traces", json=json_doc([spans]), headers=auth)
                assert answer.status_code == status
                records = [{"type": "event", "name": f"r{i}"} for i in range(spans)]
                answer = client.post("/v1/traces", json={"records": records}, headers=auth)
                assert answer.status_code == status
            assert answer.json() == {
                "code": 8,
                "message": "request holds 11 spans or records; at most 10 are accepted per request",
            }
        with grpc.insecure_channel(running.grpc_target) as channel:
            export = channel.unary_unary(EXPORT, response_deserializer=ExportTraceServiceResponse.FromString)
            metadata = (("authorization", f"Bearer {project.producer_key}"),)
            export(proto_request([10]).SerializeToString(), metadata=metadata, timeout=30)
            with pytest.raises(grpc.RpcError) as refused:
                export(proto_request([11]).SerializeToString(), metadata=metadata, timeout=30)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
