"""OTLP logs: the Python SDK's log exporters (HTTP and gRPC) through the `logging` bridge, error logs as issues,
verification on logs, the trace receivers' semantics on /v1/logs and LogsService, and the refusal of metrics."""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import Project, make_settings, new_project
from google.rpc import status_pb2
from loopdata import MINUTE_NS, NOW_NS, Clock, Spans, checkout_calls
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from loopkit_core.server import Running, in_thread

PROTOBUF = {"content-type": "application/x-protobuf"}
LOGGER = "billing.worker"


def telemetry(server: Running, project: Project, **params: object) -> list[dict]:
    """Every record the agent key reads back (one page is enough here)."""
    answer = httpx.get(
        f"{server.http_url}/v1/telemetry",
        params={"since_minutes": 60 * 24 * 365 * 5, "limit": 1000, **params},
        headers=project.auth("agent"),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["records"]


def sdk_logger(exporter: object, name: str = LOGGER) -> tuple[logging.Logger, LoggerProvider]:
    """A `logging` logger bridged to the SDK's LoggerProvider with `exporter` (exported at once)."""
    provider = LoggerProvider(resource=Resource.create({"service.name": "billing", "service.version": "3.1.0"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger(f"{name}")
    logger.handlers = [LoggingHandler(level=logging.INFO, logger_provider=provider)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, provider


@pytest.mark.parametrize("transport", ["http-protobuf", "http-protobuf-gzip", "grpc", "grpc-gzip"])
def test_the_sdk_logging_bridge_exports_logs_and_an_exception_lands_in_its_trace(
    server: Running, project: Project, transport: str
):
    if transport.startswith("grpc"):
        compression = grpc.Compression.Gzip if transport == "grpc-gzip" else grpc.Compression.NoCompression
        exporter: object = GrpcLogExporter(
            endpoint=server.grpc_target, insecure=True, headers=project.auth(), timeout=10, compression=compression
        )
    else:
        compression = Compression.Gzip if transport.endswith("gzip") else Compression.NoCompression
        exporter = HttpLogExporter(
            endpoint=f"{server.http_url}/v1/logs", headers=project.auth(), timeout=10, compression=compression
        )
    logger, provider = sdk_logger(exporter, f"{LOGGER}.{transport}")
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(HttpSpanExporter(endpoint=f"{server.http_url}/v1/traces", headers=project.auth()))
    )
    logger.info("worker started with %d threads", 4)
    logger.warning("retrying charge, attempt %d", 2)
    logger.info({"event": "cart", "items": 3})
    with tracer_provider.get_tracer("billing").start_as_current_span("charge card") as span:
        try:
            raise ConnectionError("gateway refused the connection")
        except ConnectionError:
            logger.exception("charge failed for order %s", 1042)
        context = span.get_span_context()
    provider.force_flush()
    provider.shutdown()
    tracer_provider.shutdown()

    logs = telemetry(server, project, type="log")
    assert sorted(r["message"] for r in logs) == [
        "retrying charge, attempt 2",
        "worker started with 4 threads",
        '{"event":"cart","items":3}',
    ]
    assert {r["name"] for r in logs} == {f"{LOGGER}.{transport}"}
    assert {r["service"] for r in logs} == {"billing"}
    assert {r["status"] for r in logs} == {"unset"}
    warning = next(r for r in logs if r["message"].startswith("retrying"))
    assert warning["attributes"]["log.severity_number"] == 13
    assert warning["attributes"]["log.severity_text"] == "WARN"
    assert warning["trace_id"] is None and warning["parent_span_id"] is None

    [error] = telemetry(server, project, type="error")
    assert error["message"] == "charge failed for order 1042"
    assert error["exception_type"] == "ConnectionError"
    assert error["attributes"]["exception.message"] == "gateway refused the connection"
    assert error["attributes"]["log.severity_number"] == 17
    assert error["signature"] is not None and error["status"] == "error"
    # Correlated: in the span's trace, under the span it was logged in.
    trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    assert error["trace_id"] == trace_id and error["parent_span_id"] == span_id and error["span_id"] is None
    in_trace = telemetry(server, project, trace_id=trace_id)
    assert sorted((r["type"], r["name"]) for r in in_trace) == [
        ("error", f"{LOGGER}.{transport}"),
        ("span", "charge card"),
    ]


def log_record(message: str, ts_ns: int, severity: int = 9, **attributes: str | int) -> LogRecord:
    """One protobuf LogRecord with a string body."""
    record = LogRecord(
        time_unix_nano=ts_ns,
        observed_time_unix_nano=ts_ns + 1000,
        severity_number=severity,
        severity_text={9: "INFO", 13: "WARN", 17: "ERROR"}.get(severity, ""),
        body=AnyValue(string_value=message),
    )
    for key, value in attributes.items():
        value_pb = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
        record.attributes.append(KeyValue(key=key, value=value_pb))
    return record


def logs_request(records: list[LogRecord], service: str = "billing", scope: str = LOGGER) -> bytes:
    """An ExportLogsServiceRequest of one resource and one scope."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = scope
    scope_logs.log_records.extend(records)
    return request.SerializeToString()


def post_logs(server: Running, project: Project, body: bytes, **headers: str) -> httpx.Response:
    """POST /v1/logs as protobuf with the producer key."""
    return httpx.post(
        f"{server.http_url}/v1/logs", content=body, headers={**PROTOBUF, **project.auth(), **headers}, timeout=30
    )


def traffic(start_ns: int, end_ns: int, logs: int, errors: int, first_order: int) -> list[LogRecord]:
    """`logs` log records of LOGGER spread over [start_ns, end_ns), `errors` of them the same failure."""
    step = (end_ns - start_ns) // logs
    failing = {round(i * logs / errors) for i in range(errors)} if errors else set()
    out = []
    for i in range(logs):
        ts = start_ns + i * step
        if i in failing:
            out.append(
                log_record(
                    f"payment gateway timed out after 3000 ms (order {first_order + i})",
                    ts,
                    17,
                    **{"exception.type": "TimeoutError"},
                )
            )
        else:
            out.append(log_record(f"charged order {first_order + i}", ts))
    return out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    """conftest's server, keeping records forever: many records here are stamped loopdata.NOW_NS (March 2026), and
    the retention pass a server starts with could delete them between a test's write and its read."""
    with in_thread(make_settings(tmp_path / "data", retention_days=0)) as running:
        yield running


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[tuple[Running, Project, Clock]]:
    """A server whose clock the test sets (diagnosis and approval times), and a project on it."""
    clock = Clock()
    with in_thread(make_settings(tmp_path / "data"), clock=clock) as running:
        yield running, new_project(running), clock


def diagnose(server: Running, project: Project) -> dict:
    answer = httpx.post(
        f"{server.http_url}/v1/runs/diagnose", json={"since_minutes": 60}, headers=project.auth("agent"), timeout=60
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["packet"]


@pytest.mark.parametrize("after_errors, verdict, status", [(0, "held", "verified"), (8, "regressed", "regressed")])
def test_recurring_error_logs_are_one_issue_and_verification_works_on_logs(
    clocked: tuple[Running, Project, Clock], after_errors: int, verdict: str, status: str
):
    server, project, clock = clocked
    # Before: 100 log records of the worker in the hour, 10 of them the same timeout (orders differ).
    before = traffic(NOW_NS - 60 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 100, 10, 10_000)
    assert post_logs(server, project, logs_request(before)).status_code == 200
    packet = diagnose(server, project)
    errors = [i for i in packet["issues"] if i["signal_type"] == "error"]
    assert len(errors) == 1, packet["issues"]
    issue = errors[0]
    assert issue["count"] == 10
    assert issue["stats"]["service"] == "billing"
    assert issue["stats"]["operation"] == LOGGER
    listed = httpx.get(server.http_url + issue["records_url"], headers=project.auth("agent"), timeout=30)
    listed = listed.json()["records"]
    assert len(listed) == 10 and {r["type"] for r in listed} == {"error"}

    clock.set(NOW_NS + 5 * MINUTE_NS)
    approved = httpx.post(
        f"{server.http_url}/v1/packets/{packet['packet_id']}/approve",
        json={"note": "retry the gateway"},
        headers=project.auth("dashboard"),
        timeout=30,
    )
    assert approved.status_code == 200, approved.text
    # After: 80 log records of the same logger; the old rate (0.1 a log record) predicts 8 failures.
    after = traffic(NOW_NS + 5 * MINUTE_NS, NOW_NS + 35 * MINUTE_NS, 80, after_errors, 20_000)
    assert post_logs(server, project, logs_request(after)).status_code == 200
    clock.set(NOW_NS + 40 * MINUTE_NS)
    answer = httpx.post(
        f"{server.http_url}/v1/runs/verify",
        json={"packet_id": packet["packet_id"]},
        headers=project.auth("agent"),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    [result] = [v for v in answer.json()["verification"]["verdicts"] if v["issue_id"] == issue["issue_id"]]
    assert result["verdict"] == verdict, result
    assert result["before"] == {"count": 10, "calls": 100, "rate": 0.1}
    assert result["after"]["count"] == after_errors and result["after"]["calls"] == 80
    assert result["after"]["expected_at_old_rate"] == 8.0
    packet_now = httpx.get(
        f"{server.http_url}/v1/packets/{packet['packet_id']}", headers=project.auth("agent"), timeout=30
    ).json()["packet"]
    assert {i["issue_id"]: i["status"] for i in packet_now["issues"]}[issue["issue_id"]] == status


def test_a_resent_batch_is_stored_once_and_bad_ids_are_rejected_alone(server: Running, project: Project):
    good = [log_record("queue drained", NOW_NS + i, 9) for i in range(3)]
    bad = LogRecord(time_unix_nano=NOW_NS, body=AnyValue(string_value="x"), trace_id=b"\x01" * 5)
    body = logs_request([*good, bad])
    for _ in range(2):
        answer = post_logs(server, project, body)
        assert answer.status_code == 200
        message = ExportLogsServiceResponse.FromString(answer.content)
        assert message.partial_success.rejected_log_records == 1
        assert message.partial_success.error_message == (
            "1 log record(s) rejected: log record of 'billing.worker': trace_id must be empty or 16 bytes"
        )
    assert len(telemetry(server, project, type="log")) == 3
    # The same three through OTLP/JSON (another encoding of the same fields) are the same records.
    doc = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "billing"}}]},
                "scopeLogs": [
                    {
                        "scope": {"name": LOGGER},
                        "logRecords": [
                            {
                                "timeUnixNano": str(NOW_NS + i),
                                "observedTimeUnixNano": str(NOW_NS + i + 1000),
                                "severityNumber": "SEVERITY_NUMBER_INFO",
                                "severityText": "INFO",
                                "body": {"stringValue": "queue drained"},
                            }
                            for i in range(3)
                        ],
                    }
                ],
            }
        ]
    }
    answer = httpx.post(f"{server.http_url}/v1/logs", json=doc, headers=project.auth(), timeout=30)
    assert answer.status_code == 200 and answer.json() == {}
    assert len(telemetry(server, project, type="log")) == 3
    # A log with neither time nor observed time cannot be told from a new one: each send is kept.
    untimed = logs_request([LogRecord(body=AnyValue(string_value="heartbeat"))])
    for _ in range(2):
        assert post_logs(server, project, untimed).status_code == 200
    assert [r["message"] for r in telemetry(server, project, type="log")].count("heartbeat") == 2


def test_types_names_and_messages_from_severity_body_and_attributes(server: Running, project: Project):
    structured = LogRecord(
        time_unix_nano=NOW_NS,
        severity_number=21,
        body=AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="b", value=AnyValue(int_value=2))])),
        event_name="billing.crash",
    )
    text_only = LogRecord(time_unix_nano=NOW_NS + 1, severity_text="error", body=AnyValue(string_value="disk full"))
    explicit = log_record("thumbs down", NOW_NS + 2, 9, **{"loopkit.signal": "user_signal"})
    exception_info = log_record("swallowed", NOW_NS + 3, 13, **{"exception.type": "KeyError"})
    debug = LogRecord(time_unix_nano=NOW_NS + 4, severity_number=5)
    body = logs_request([structured, text_only, explicit, exception_info, debug], scope="")
    assert post_logs(server, project, gzip.compress(body), **{"content-encoding": "gzip"}).status_code == 200
    by_time = {r["timestamp_unix_nano"] - NOW_NS: r for r in telemetry(server, project)}
    assert [(by_time[i]["type"], by_time[i]["name"], by_time[i]["message"]) for i in range(5)] == [
        ("error", "billing.crash", '{"b":2}'),
        ("error", "log", "disk full"),
        ("user_signal", "log", "thumbs down"),
        ("error", "log", "swallowed"),
        ("log", "log", ""),
    ]
    assert by_time[3]["exception_type"] == "KeyError"


def test_a_log_with_a_session_is_listed_in_that_session(server: Running, project: Project):
    record = log_record("thumbs down on the answer", NOW_NS, 9, **{"session.id": "sess-9", "user.id": "u-3"})
    assert post_logs(server, project, logs_request([record])).status_code == 200
    [stored] = telemetry(server, project, session_id="sess-9")
    assert (stored["type"], stored["session_id"], stored["user_id"]) == ("log", "sess-9", "u-3")


def test_logs_share_the_trace_receivers_errors(server: Running, project: Project):
    url = f"{server.http_url}/v1/logs"
    assert httpx.post(url, content=b"x", headers=PROTOBUF, timeout=30).status_code == 401
    answer = httpx.post(url, content=b"x", headers={"content-type": "text/plain", **project.auth()}, timeout=30)
    assert answer.status_code == 415
    answer = post_logs(server, project, b"\xff\xff\xff")
    assert answer.status_code == 400
    assert status_pb2.Status.FromString(answer.content).message.startswith(
        "body is not a valid ExportLogsServiceRequest"
    )
    answer = httpx.post(url, content=b"[1", headers={"content-type": "application/json", **project.auth()})
    assert answer.status_code == 400 and answer.json()["message"].startswith("body is not valid JSON")
    answer = httpx.post(url, json={"resourceLogs": {}}, headers=project.auth(), timeout=30)
    assert answer.status_code == 400 and answer.json()["message"] == "resourceLogs must be a JSON array"
    bomb = gzip.compress(b"\x00" * (server.settings.max_body_bytes + 1))
    assert post_logs(server, project, bomb, **{"content-encoding": "gzip"}).status_code == 413
    channel = grpc.insecure_channel(server.grpc_target)
    export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
    with pytest.raises(grpc.RpcError) as raised:
        export(logs_request([log_record("x", NOW_NS)]), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as raised:
        export(b"\xff\xff\xff", metadata=[("authorization", f"Bearer {project.producer_key}")], timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()
    assert telemetry(server, project) == []


def test_metrics_are_refused_for_good(server: Running, project: Project):
    answer = httpx.post(f"{server.http_url}/v1/metrics", content=b"", headers={**PROTOBUF, **project.auth()})
    assert answer.status_code == 501
    status = status_pb2.Status.FromString(answer.content)
    assert status.code == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert status.message.startswith("LoopKit does not store metrics")
    answer = httpx.post(f"{server.http_url}/v1/metrics", json={}, headers=project.auth())
    assert answer.status_code == 501 and answer.json()["code"] == 12
    channel = grpc.insecure_channel(server.grpc_target)
    export = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
    with pytest.raises(grpc.RpcError) as raised:
        export(b"", metadata=[("authorization", f"Bearer {project.producer_key}")], timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert raised.value.details().startswith("LoopKit does not store metrics")
    channel.close()
    # The SDK's exporter gives up at once (a retryable answer would have it back off for its 10 s timeout).
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "billing"}))
    provider.get_meter("billing").create_counter("charges").add(1)
    data = reader.get_metrics_data()
    exporter = HttpMetricExporter(endpoint=f"{server.http_url}/v1/metrics", headers=project.auth(), timeout=10)
    started = time.monotonic()
    assert exporter.export(data) == MetricExportResult.FAILURE
    assert time.monotonic() - started < 1.0
    provider.shutdown()


def test_the_dashboard_shows_a_log_record_with_its_span_and_severity(server: Running, project: Project):
    record = log_record("card declined", NOW_NS, 17, **{"exception.type": "CardError"})
    record.trace_id, record.span_id = bytes(range(1, 17)), b"\x07" * 8
    assert post_logs(server, project, logs_request([record])).status_code == 200
    [stored] = telemetry(server, project, type="error")
    page = httpx.get(
        f"{server.http_url}/v1/dashboard/records/{stored['record_id']}", headers=project.auth("dashboard"), timeout=30
    )
    assert page.status_code == 200
    assert '<dt>Logged in span</dt><dd class="mono">0707070707070707</dd>' in page.text
    assert "<dt>Severity</dt><dd>ERROR (17)</dd>" in page.text
    assert "error · billing.worker" in page.text


def test_log_records_count_toward_a_sandbox_quota(tmp_path: Path):
    with in_thread(make_settings(tmp_path / "data", sandbox_quota_spans=5, rate_limit_per_hour=100)) as running:
        signup = httpx.post(f"{running.http_url}/v1/signup", json={"project_name": "logs quota"}, timeout=30).json()
        key = {"authorization": f"Bearer {signup['producer_key']}", **PROTOBUF}
        body = logs_request([log_record(f"line {i}", NOW_NS + i) for i in range(8)])
        answer = httpx.post(f"{running.http_url}/v1/logs", content=body, headers=key, timeout=30)
        assert answer.status_code == 200
        partial = ExportLogsServiceResponse.FromString(answer.content).partial_success
        assert partial.rejected_log_records == 3
        assert "project quota of 5 records reached" in partial.error_message


def test_logs_decode_in_worker_processes_too(tmp_path: Path):
    with in_thread(make_settings(tmp_path / "data", decode_workers=1)) as running:
        project = new_project(running)
        assert running.app.decoder.workers == 1
        body = logs_request(traffic(NOW_NS, NOW_NS + MINUTE_NS, 20, 4, 1))
        assert post_logs(running, project, body).status_code == 200
        records = telemetry(running, project)
        assert sorted(r["type"] for r in records) == ["error"] * 4 + ["log"] * 16
        assert all(r["signature"] for r in records if r["type"] == "error")


def test_a_packet_holds_issues_from_failed_spans_and_from_error_logs(clocked: tuple[Running, Project, Clock]):
    server, project, _ = clocked
    spans = Spans()
    checkout_calls(spans, "checkout", NOW_NS - 60 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 60, 6)
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        spans.send(client, project)
    logs = traffic(NOW_NS - 60 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 100, 10, 10_000)
    assert post_logs(server, project, logs_request(logs)).status_code == 200
    packet = diagnose(server, project)
    failures = sorted(
        (i["stats"]["service"], i["stats"]["operation"], i["count"])
        for i in packet["issues"]
        if i["signal_type"] == "error"
    )
    assert failures == [("billing", LOGGER, 10), ("checkout", "/checkout", 6)]


def test_several_logs_in_one_span_are_all_stored_beside_the_span(server: Running, project: Project):
    trace_id, span_id = bytes(range(1, 17)), b"\x05" * 8
    records = [log_record(f"step {i}", NOW_NS + i, 9) for i in range(3)]
    for record in records:
        record.trace_id, record.span_id = trace_id, span_id
    assert post_logs(server, project, logs_request(records)).status_code == 200
    span = {"traceId": trace_id.hex(), "spanId": span_id.hex(), "name": "job", "startTimeUnixNano": str(NOW_NS)}
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    assert httpx.post(f"{server.http_url}/v1/traces", json=doc, headers=project.auth(), timeout=30).json() == {}
    in_trace = telemetry(server, project, trace_id=trace_id.hex())
    assert sorted((r["type"], r["span_id"], r["parent_span_id"], r["message"]) for r in in_trace) == [
        ("log", None, span_id.hex(), "step 0"),
        ("log", None, span_id.hex(), "step 1"),
        ("log", None, span_id.hex(), "step 2"),
        ("span", span_id.hex(), None, ""),
    ]


def test_otlp_json_partial_success_names_log_records(server: Running, project: Project):
    logs = [
        {"timeUnixNano": str(NOW_NS), "body": {"stringValue": "kept"}},
        {"timeUnixNano": str(NOW_NS + 1), "body": {"stringValue": "bad"}, "traceId": "AQIDBA=="},  # base64, not hex
    ]
    doc = {"resourceLogs": [{"scopeLogs": [{"scope": {"name": LOGGER}, "logRecords": logs}]}]}
    answer = httpx.post(f"{server.http_url}/v1/logs", json=doc, headers=project.auth(), timeout=30)
    assert answer.status_code == 200
    assert answer.json() == {
        "partialSuccess": {
            "rejectedLogRecords": "1",
            "errorMessage": "1 log record(s) rejected: log record of 'billing.worker': "
            "resourceLogs[0].scopeLogs[0].logRecords[1].traceId is not hex (OTLP/JSON IDs are hex, not base64)",
        }
    }
    assert [r["message"] for r in telemetry(server, project)] == ["kept"]
