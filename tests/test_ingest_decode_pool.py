"""Decoding in worker processes (decode_workers): the same records, answers and quotas as decoding in-process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from conftest import make_settings, new_project
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1 import trace_pb2

from loopkit_core.server import Running, in_thread

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
START = time.time_ns() - 5_000_000_000


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A server that decodes in one worker process, with a quota of 10 records for sandboxes."""
    settings = make_settings(tmp_path_factory.mktemp("pooled"), decode_workers=1, sandbox_quota_spans=10)
    with in_thread(settings) as running:
        assert running.app.decoder.workers == 1
        yield running


@pytest.fixture(scope="module")
def inline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The same server decoding on its own threads."""
    settings = make_settings(tmp_path_factory.mktemp("inline"), decode_workers=0)
    with in_thread(settings) as running:
        assert running.app.decoder.workers == 0
        yield running


def span(n: int, *, error: bool = False, span_id: bytes | None = None) -> trace_pb2.Span:
    """Span n of trace n // 4, with attributes, and an exception event when it failed."""
    s = trace_pb2.Span(
        trace_id=(n // 4 + 1).to_bytes(16, "big"),
        span_id=(n + 1).to_bytes(8, "big") if span_id is None else span_id,
        name=f"GET /items/{n % 3}",
        kind=2,
        start_time_unix_nano=START + n * 1_000_000,
        end_time_unix_nano=START + n * 1_000_000 + 2_500_000,
    )
    s.attributes.add(key="http.route").value.string_value = f"/items/{n % 3}"
    s.attributes.add(key="http.status_code").value.int_value = 500 if error else 200
    s.attributes.add(key="session.id").value.string_value = f"sess-{n % 2}"
    if error:
        s.status.code = 2
        event = s.events.add(name="exception", time_unix_nano=START + n * 1_000_000 + 1_000_000)
        event.attributes.add(key="exception.type").value.string_value = "TimeoutError"
        message = f"upstream 10.0.0.{n} timed out after {n * 7} ms"
        event.attributes.add(key="exception.message").value.string_value = message
    return s


def request(spans: list[trace_pb2.Span]) -> bytes:
    """An ExportTraceServiceRequest of one resource holding `spans`."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "shop"
    rs.scope_spans.add(scope={"name": "tests"}).spans.extend(spans)
    return req.SerializeToString()


def post(server: Running, key: str, body: bytes, content_type: str = "application/x-protobuf") -> httpx.Response:
    """POST /v1/traces."""
    headers = {"authorization": f"Bearer {key}", "content-type": content_type}
    return httpx.post(f"{server.http_url}/v1/traces", content=body, headers=headers, timeout=30)


def stored(server: Running, key: str) -> list[dict]:
    """Every record of the project (agent key), without the time the server received it."""
    response = httpx.get(
        f"{server.http_url}/v1/telemetry",
        params={"limit": 1000, "since_minutes": 60},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return [{k: v for k, v in r.items() if k != "received_at"} for r in response.json()["records"]]


def test_workers_store_exactly_what_in_process_decoding_stores(pooled: Running, inline: Running) -> None:
    spans = [span(n, error=n % 5 == 0) for n in range(40)] + [span(99, span_id=bytes(8))]  # the last is invalid
    results = []
    for server in (pooled, inline):
        project = new_project(server)
        response = post(server, project.producer_key, request(spans))
        assert response.status_code == 200
        answer = ExportTraceServiceResponse.FromString(response.content)
        assert answer.partial_success.rejected_spans == 1
        assert "span_id must be 8 bytes and not all zero" in answer.partial_success.error_message
        # Record IDs hash the project ID, so compare everything else.
        results.append(sorted((({**r, "record_id": None}) for r in stored(server, project.agent_key)), key=str))
    pooled_records, inline_records = results
    assert len(pooled_records) == 40
    assert pooled_records == inline_records
    failed = [r for r in pooled_records if r["status"] == "error"]
    assert len(failed) == 8
    assert all(r["signature"] and r["exception_type"] == "TimeoutError" for r in failed)


def test_grpc_through_the_workers(pooled: Running) -> None:
    project = new_project(pooled)
    with grpc.insecure_channel(f"127.0.0.1:{pooled.grpc_port}") as channel:
        export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        metadata = (("authorization", f"Bearer {project.producer_key}"),)
        assert export(request([span(n) for n in range(6)]), metadata=metadata, timeout=30) == b""
        with pytest.raises(grpc.RpcError) as caught:
            export(b"\xff\xff\xff not protobuf", metadata=metadata, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ExportTraceServiceRequest" in caught.value.details()
    assert len(stored(pooled, project.agent_key)) == 6


def test_errors_raised_in_a_worker_keep_their_status(pooled: Running) -> None:
    project = new_project(pooled)
    bad = post(pooled, project.producer_key, b"\x0a\xff\xff garbage")
    assert bad.status_code == 400
    assert "not a valid ExportTraceServiceRequest" in bad.text
    not_json = post(pooled, project.producer_key, b"{nope", "application/json")
    assert not_json.status_code == 400
    assert not_json.json()["message"].startswith("body is not valid JSON")
    assert stored(pooled, project.agent_key) == []


def test_records_shape_answers_per_record_and_quota_is_exact(pooled: Running) -> None:
    signup = httpx.post(f"{pooled.http_url}/v1/signup", json={"project_name": "capped"}, timeout=30)
    assert signup.status_code in (200, 201), signup.text
    keys = signup.json()
    producer, agent = keys["producer_key"], keys["agent_key"]
    posted = [{"type": "event", "name": f"step {i}", "message": "ok", "timestamp": START + i} for i in range(8)]
    posted.insert(3, {"type": "nonsense", "name": "bad"})
    first = post(pooled, producer, orjson.dumps({"records": posted}), "application/json").json()
    assert (first["accepted"], first["rejected"]) == (8, 1)
    assert first["errors"][0]["index"] == 3
    more = [{"type": "event", "name": f"more {i}", "message": "ok", "timestamp": START + 100 + i} for i in range(5)]
    second = post(pooled, producer, orjson.dumps({"records": more}), "application/json").json()
    # Quota 10: two more fit, the other three are refused with the quota reason, by index.
    assert (second["accepted"], second["rejected"]) == (2, 3)
    assert [e["index"] for e in second["errors"]] == [2, 3, 4]
    assert all("quota of 10 records reached" in e["reason"] for e in second["errors"])
    assert len(stored(pooled, agent)) == 10


def test_a_dead_worker_does_not_stop_ingest(tmp_path: Path) -> None:
    with in_thread(make_settings(tmp_path / "data", decode_workers=1)) as server:
        project = new_project(server)
        assert post(server, project.producer_key, request([span(1)])).status_code == 200
        pool = server.app.decoder._pool
        assert pool is not None
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        codes = []
        # The pool notices the death on its next use; every request is answered 200 and stored all the same.
        while time.monotonic() < deadline and server.app.decoder.workers:
            codes.append(post(server, project.producer_key, request([span(10 + len(codes))])).status_code)
            time.sleep(0.05)
        assert server.app.decoder.workers == 0
        codes.append(post(server, project.producer_key, request([span(10 + len(codes))])).status_code)
        assert set(codes) == {200}
        assert len(stored(server, project.agent_key)) == 1 + len(codes)


def _children(pid: int) -> list[int]:
    """Live child processes of a process (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_decode_workers_end_with_the_server(tmp_path: Path, sig: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
    args = [sys.executable, "-m", "loopkit_core.cli", "serve", "--data-dir", str(tmp_path / "data"),
            "--http-port", "0", "--grpc-port", "0", "--log-level", "warning"]  # fmt: skip
    with (tmp_path / "server.log").open("wb") as out:
        server = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**env, "LOOPKIT_DECODE_WORKERS": "1"}, cwd=tmp_path
        )
    try:
        deadline = time.monotonic() + 30
        while b"LoopKit serving" not in (tmp_path / "server.log").read_bytes() and time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.05)
        workers = _children(server.pid)
        assert workers, "loopkit serve started no decode worker"
        server.send_signal(sig)
        server.wait(30)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
