"""Connections that stall before their request head is complete are cut off; connection counts are bounded."""

from __future__ import annotations

import http.client
import select
import socket
import time

import grpc
import pytest
from conftest import make_settings, new_project
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2

from loopkit_core.server import in_thread

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
HOST = "127.0.0.1"


def open_stalled(port: int, count: int, first_bytes: bytes) -> list[socket.socket]:
    """`count` connections that each send `first_bytes` and then nothing."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((HOST, port), timeout=5)
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    return sockets


def wait_closed(sockets: list[socket.socket], within: float) -> dict[socket.socket, tuple[float, bytes]]:
    """For each socket the server closed within `within` seconds: (time.monotonic() it closed, bytes it sent)."""
    started = time.monotonic()
    received = {sock: b"" for sock in sockets}
    closed: dict[socket.socket, tuple[float, bytes]] = {}
    while len(closed) < len(sockets) and time.monotonic() - started < within:
        readable, _, _ = select.select([s for s in sockets if s not in closed], [], [], 0.05)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:  # reset by the server: closed as well
                data = b""
            if data:
                received[sock] += data
            else:
                closed[sock] = (time.monotonic(), received[sock])
    return closed


def get(port: int, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection, which is closed after the answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def quick(tmp_path):
    """A LoopKit that waits 2 s for a request head."""
    with in_thread(make_settings(tmp_path / "quick", header_timeout_seconds=2.0)) as running:
        yield running


def test_stalled_request_heads_are_cut_off_while_others_are_served(quick):
    project = new_project(quick)
    body = b'{"records": [{"type": "event", "name": "meanwhile"}]}'
    headers = {"content-type": "application/json", **project.auth()}
    # The project's first write is made before the clock starts: on PostgreSQL it also creates the day's partition,
    # and under the parallel suite's load a first write timed below once took 1.6 s. The bound is about the stalled
    # connections, not the project's set-up.
    assert get(quick.http_port, "/v1/traces", body, headers)[0] == 200
    partial = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    opened = time.monotonic()
    stalled = open_stalled(quick.http_port, 50, partial)
    silent = open_stalled(quick.http_port, 5, b"")  # connected, never a byte
    try:
        started = time.monotonic()
        # Meanwhile the server answers everyone else at once.
        assert get(quick.http_port, "/healthz")[0] == 200
        status, answer = get(quick.http_port, "/v1/traces", body, headers)
        assert status == 200, answer
        assert time.monotonic() - started < 1.5  # well before the stalled ones are cut off
        closed = wait_closed(stalled + silent, within=8.0)
        assert len(closed) == 55
        for sock in stalled:
            closed_at, sent = closed[sock]
            assert 1.9 < closed_at - opened < 6.0
            assert sent.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
            assert sent.endswith(b"\r\n\r\nrequest head did not arrive within 2 s")
        for sock in silent:
            assert closed[sock][1] == b""  # nothing was asked, so nothing is answered
        assert get(quick.http_port, "/healthz")[0] == 200
    finally:
        for sock in stalled + silent:
            sock.close()


def test_a_head_trickled_byte_by_byte_is_cut_off_at_the_deadline(quick):
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100 + b"\r\n\r\n"
    with socket.create_connection((HOST, quick.http_port), timeout=5) as sock:
        started = time.monotonic()
        sent = 0
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.05)  # about 6 s for the whole head, the deadline is 2 s
        except OSError:
            pass  # the server closed the connection
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert time.monotonic() - started < 5.0
    assert sent < len(head)
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_the_deadline_applies_again_after_a_kept_alive_response(quick):
    with socket.create_connection((HOST, quick.http_port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b"}"):  # the whole first answer: headers, then its JSON body
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the second head never ends
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert 1.9 < time.monotonic() - started < 6.0
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_head_over_1_mib_is_431_and_one_under_it_is_served(quick):
    def ask(padding: int) -> bytes:
        with socket.create_connection((HOST, quick.http_port), timeout=10) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * padding + b"\r\n\r\n")
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # refused and closed while still sending
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
            return answer

    assert ask(1000 * 1024).startswith(b"HTTP/1.1 200 ")
    # httptools read a 36 MB header whole before; now the head stops at 1 MiB.
    refused = ask(10 * 1024 * 1024)
    assert refused.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert refused.endswith(b"request head over 1048576 bytes")


def test_a_large_body_answered_early_is_not_taken_for_a_head(quick):
    # 401 comes before the body is read; the client still sends its 4 MiB, which uvicorn reads and drops. Those
    # bytes are a body, not a head over 1 MiB (they got 431 and a closed connection in a first version of this).
    body = b"\x00" * (4 * 1024 * 1024)
    head = f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection((HOST, quick.http_port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # the same connection
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert answer.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 200 " in answer
    assert b" 431 " not in answer


def test_past_the_connection_limit_requests_get_503_not_a_hang(tmp_path):
    with in_thread(make_settings(tmp_path / "few", max_http_connections=10, header_timeout_seconds=30.0)) as few:
        stalled = open_stalled(few.http_port, 8, b"GET /healthz HTTP/1.1\r\n")
        try:
            # 8 stalled + this one = 9 connections: under the limit of 10.
            assert get(few.http_port, "/healthz")[0] == 200
            stalled += open_stalled(few.http_port, 1, b"GET /healthz HTTP/1.1\r\n")
            time.sleep(0.2)  # the server has accepted the ninth stalled connection
            started = time.monotonic()
            status, body = get(few.http_port, "/healthz")
            assert (status, body) == (503, b"Service Unavailable")
            assert time.monotonic() - started < 2.0
        finally:
            for sock in stalled:
                sock.close()
        time.sleep(0.2)  # the server sees them go
        assert get(few.http_port, "/healthz")[0] == 200


def export(target: str, key: str, timeout: float = 5.0) -> bytes:
    """One OTLP/gRPC export of a single span on a new channel."""
    request = ExportTraceServiceRequest()
    now = time.time_ns()
    span = trace_pb2.Span(trace_id=b"\x6c" * 16, span_id=b"\x01" * 8, name="g", start_time_unix_nano=now - 1000,
                          end_time_unix_nano=now)  # fmt: skip
    request.resource_spans.add().scope_spans.add().spans.append(span)
    with grpc.insecure_channel(target) as channel:
        return channel.unary_unary(EXPORT)(
            request.SerializeToString(), metadata=(("authorization", f"Bearer {key}"),), timeout=timeout
        )


def test_grpc_connections_without_a_handshake_are_cut_off_while_exports_are_served(tmp_path):
    with in_thread(make_settings(tmp_path / "grpc", header_timeout_seconds=2.0)) as running:
        project = new_project(running)
        opened = time.monotonic()
        stalled = open_stalled(running.grpc_port, 50, b"PRI * HTTP/2.0\r\n")  # half an HTTP/2 preface
        try:
            started = time.monotonic()
            assert export(running.grpc_target, project.producer_key) == b""  # served meanwhile
            assert time.monotonic() - started < 1.5
            closed = wait_closed(stalled, within=8.0)
            assert len(closed) == 50
            assert all(1.9 < closed_at - opened < 6.0 for closed_at, _ in closed.values())
            # The GOAWAY says why (grpc core's words).
            why = b"Did not receive HTTP/2 settings before handshake timeout"
            assert all(why in sent for _, sent in closed.values())
            assert export(running.grpc_target, project.producer_key) == b""
        finally:
            for sock in stalled:
                sock.close()


def test_grpc_connections_past_the_limit_are_closed_at_once(tmp_path):
    settings = make_settings(tmp_path / "grpc", header_timeout_seconds=30.0, max_grpc_connections=20)
    with in_thread(settings) as running:
        project = new_project(running)
        stalled = open_stalled(running.grpc_port, 19, b"PRI * HTTP/2.0\r\n")
        try:
            assert export(running.grpc_target, project.producer_key) == b""  # the 20th connection
            time.sleep(0.2)  # the export's connection is gone
            stalled += open_stalled(running.grpc_port, 1, b"PRI * HTTP/2.0\r\n")  # the 20th again
            time.sleep(0.2)
            beyond = open_stalled(running.grpc_port, 3, b"")
            refused = wait_closed(beyond, within=1.0)
            assert len(refused) == 3 and all(sent == b"" for _, sent in refused.values())
            assert wait_closed(stalled, within=0.5) == {}  # the 20 are still open (30 s handshake timeout)
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as full:
                export(running.grpc_target, project.producer_key, timeout=10.0)
            # A retryable UNAVAILABLE ("Socket closed") at once, not a wait for the deadline.
            assert full.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 3.0
        finally:
            for sock in stalled:
                sock.close()
        time.sleep(0.2)
        assert export(running.grpc_target, project.producer_key) == b""
