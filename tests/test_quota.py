"""Sandbox quotas: exactly quota_spans stored under racing clients on every transport, the rest rejected for good."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from conftest import make_settings, store_env
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from sqlalchemy import func, select

from loopkit_core.projects import promote
from loopkit_core.server import Running, in_thread
from loopkit_core.store.schema import counters, records

QUOTA = 1000
CLIENTS = 8
PER_CLIENT = 300
OVERFLOW = CLIENTS * PER_CLIENT - QUOTA
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
REASON = f"project quota of {QUOTA} records reached; see /contact.json for an uncapped project"
TRANSPORTS = ["records", "otlp-http-proto", "otlp-http-json", "otlp-grpc"]


def auth(key: str) -> dict[str, str]:
    """The authorization header for a key."""
    return {"authorization": f"Bearer {key}"}


def ids(client_no: int, i: int) -> tuple[str, str]:
    """A unique (trace_id, span_id) in hex for span i of one client."""
    return f"{client_no + 1:016x}{i + 1:016x}", f"{client_no + 1:08x}{i + 1:08x}"


@pytest.fixture
def quota_server(tmp_path: Path) -> Iterator[Running]:
    """A server whose sandboxes hold at most QUOTA records."""
    settings = make_settings(tmp_path / "data", sandbox_quota_spans=QUOTA, rate_limit_per_hour=100)
    with in_thread(settings) as running:
        yield running


@pytest.fixture
def sandbox(quota_server: Running) -> dict:
    """A signup project on the quota server."""
    with httpx.Client(base_url=quota_server.http_url, timeout=30) as client:
        response = client.post("/v1/signup", json={"project_name": "capped"})
    assert response.status_code == 201
    assert response.json()["quota_spans"] == QUOTA
    return response.json()


class Sender:
    """Sends spans (as (trace_id, span_id) pairs) over one transport; returns (status, accepted, rejected)."""

    def __init__(self, transport: str, server: Running, key: str) -> None:
        self.transport, self.key = transport, key
        self.http = httpx.Client(base_url=server.http_url, timeout=30)
        self.channel = grpc.insecure_channel(server.grpc_target) if transport == "otlp-grpc" else None
        self.responses: list[object] = []

    def close(self) -> None:
        """Release the connections."""
        self.http.close()
        if self.channel is not None:
            self.channel.close()

    def send(self, spans: list[tuple[str, str]]) -> tuple[object, int, int]:
        """One request with these spans."""
        now = time.time_ns()
        if self.transport == "records":
            records = [{"type": "event", "name": "op", "trace_id": t, "span_id": s} for t, s in spans]
            response = self.http.post("/v1/traces", json={"records": records}, headers=auth(self.key))
            if response.status_code != 200:
                return response.status_code, 0, 0
            body = response.json()
            self.responses.append(body)
            return 200, body["accepted"], body["rejected"]
        if self.transport == "otlp-http-json":
            otlp = {
                "resourceSpans": [
                    {
                        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "quota"}}]},
                        "scopeSpans": [
                            {
                                "spans": [
                                    {
                                        "traceId": t,
                                        "spanId": s,
                                        "name": "op",
                                        "startTimeUnixNano": str(now),
                                        "endTimeUnixNano": str(now + 1000),
                                    }
                                    for t, s in spans
                                ]
                            }
                        ],
                    }
                ]
            }
            response = self.http.post("/v1/traces", json=otlp, headers=auth(self.key))
            if response.status_code != 200:
                return response.status_code, 0, 0
            body = response.json()
            self.responses.append(body)
            rejected = int(body.get("partialSuccess", {}).get("rejectedSpans", "0"))
            return 200, len(spans) - rejected, rejected
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="quota"))
        scope_spans = resource_spans.scope_spans.add()
        for t, s in spans:
            scope_spans.spans.add(
                trace_id=bytes.fromhex(t),
                span_id=bytes.fromhex(s),
                name="op",
                start_time_unix_nano=now,
                end_time_unix_nano=now + 1000,
            )
        if self.transport == "otlp-http-proto":
            headers = {**auth(self.key), "content-type": "application/x-protobuf"}
            response = self.http.post("/v1/traces", content=request.SerializeToString(), headers=headers)
            if response.status_code != 200:
                return response.status_code, 0, 0
            answer = ExportTraceServiceResponse.FromString(response.content)
        else:
            export = self.channel.unary_unary(
                EXPORT,
                request_serializer=ExportTraceServiceRequest.SerializeToString,
                response_deserializer=ExportTraceServiceResponse.FromString,
            )
            try:
                answer = export(request, metadata=(("authorization", f"Bearer {self.key}"),), timeout=30)
            except grpc.RpcError as exc:
                return exc.code(), 0, 0
        self.responses.append(answer)
        rejected = answer.partial_success.rejected_spans
        return 200, len(spans) - rejected, rejected


def stored_in_file(server: Running, project_id: str) -> tuple[int, set[str], int]:
    """(row count, span IDs, accepted counter) straight from the project's store (SQLite file or schema)."""
    with server.app.store.project(project_id).connect() as db:
        count = db.execute(select(func.count()).select_from(records)).scalar()
        spans = set(db.execute(select(records.c.span_id)).scalars())
        counter = db.execute(select(counters.c.value).where(counters.c.name == "accepted_total")).scalar()
    return count, spans, counter


def stored_via_api(server: Running, agent_key: str) -> list[dict]:
    """Every record of the project in the last hour, following next_cursor (bounded)."""
    records: list[dict] = []
    params: dict[str, object] = {"limit": 1000}
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        for _ in range(20):
            response = client.get("/v1/telemetry", params=params, headers=auth(agent_key))
            assert response.status_code == 200, response.text
            body = response.json()
            records += body["records"]
            if body["next_cursor"] is None:
                return records
            params = {"limit": 1000, "cursor": body["next_cursor"]}
    raise AssertionError("paging did not end")


def race(senders: list[Sender], batches: Callable[[int], list[list[tuple[str, str]]]]) -> list[list[tuple]]:
    """Every sender sends its batches, all starting together; the results per sender."""
    barrier = threading.Barrier(len(senders), timeout=10)
    results: list[list[tuple]] = [[] for _ in senders]

    def run(n: int) -> None:
        barrier.wait()
        for batch in batches(n):
            results[n].append(senders[n].send(batch))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(senders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return results


@pytest.mark.parametrize("batch_size", [PER_CLIENT, 37])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_racing_clients_store_exactly_the_quota(quota_server: Running, sandbox: dict, transport: str, batch_size):
    senders = [Sender(transport, quota_server, sandbox["producer_key"]) for _ in range(CLIENTS)]
    try:
        # Each client opens its connection first, so the race is on the quota, not on connecting.
        for sender in senders:
            if sender.channel is not None:
                grpc.channel_ready_future(sender.channel).result(timeout=10)
            else:
                sender.http.get("/healthz")
        spans = {n: [ids(n, i) for i in range(PER_CLIENT)] for n in range(CLIENTS)}
        results = race(senders, lambda n: [spans[n][i : i + batch_size] for i in range(0, PER_CLIENT, batch_size)])
    finally:
        for sender in senders:
            sender.close()
    flat = [r for per_sender in results for r in per_sender]
    # A quota refusal is final: never 429/503/UNAVAILABLE, always a success with rejections in it.
    assert {status for status, _, _ in flat} == {200}
    assert sum(accepted for _, accepted, _ in flat) == QUOTA
    assert sum(rejected for _, _, rejected in flat) == OVERFLOW
    count, stored_spans, counter = stored_in_file(quota_server, sandbox["project_id"])
    assert (count, len(stored_spans), counter) == (QUOTA, QUOTA, QUOTA)
    assert stored_spans <= {s for n in spans for _, s in spans[n]}
    via_api = stored_via_api(quota_server, sandbox["agent_key"])
    assert len(via_api) == QUOTA
    assert {r["span_id"] for r in via_api} == stored_spans

    if transport == "records":
        accepted_ids = set()
        for sender in senders:
            for body in sender.responses:
                for index, record_id in enumerate(body["record_ids"]):
                    if record_id is None:
                        assert {"index": index, "reason": REASON} in body["errors"]
                    else:
                        accepted_ids.add(record_id)
                assert [e["index"] for e in body["errors"]] == [
                    i for i, record_id in enumerate(body["record_ids"]) if record_id is None
                ]
                assert body["rejected"] == len(body["errors"])
        assert accepted_ids == {r["record_id"] for r in via_api}
    else:
        for sender in senders:
            for answer in sender.responses:
                if transport == "otlp-http-json":
                    partial = answer.get("partialSuccess")
                    if partial is not None:
                        assert partial["errorMessage"].startswith(f"{partial['rejectedSpans']} span(s) rejected: ")
                        assert "quota" in partial["errorMessage"]
                elif answer.partial_success.rejected_spans:
                    assert "quota of 1000 records reached" in answer.partial_success.error_message
                else:
                    assert not answer.HasField("partial_success")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_resending_stored_spans_after_the_cap_is_not_rejected(quota_server: Running, sandbox: dict, transport):
    sender = Sender(transport, quota_server, sandbox["producer_key"])
    try:
        first = [ids(0, i) for i in range(QUOTA)]
        assert sender.send(first) == (200, QUOTA, 0)
        assert sender.send([ids(1, 0)]) == (200, 0, 1)
        # OTLP clients retry: the stored spans again are accepted (deduplicated), not refused.
        assert sender.send(first[:300]) == (200, 300, 0)
        # A retry mixing stored and new spans: only the new ones are refused.
        mixed = [first[500], ids(2, 0), first[501], ids(2, 1), ids(2, 2), first[999]]
        assert sender.send(mixed) == (200, 3, 3)
    finally:
        sender.close()
    if transport == "records":
        last = sender.responses[-1]
        assert [record_id is None for record_id in last["record_ids"]] == [False, True, False, True, True, False]
        assert last["errors"] == [{"index": i, "reason": REASON} for i in (1, 3, 4)]
        resent = sender.responses[2]
        assert resent["record_ids"] == sender.responses[0]["record_ids"][:300]
    count, _, counter = stored_in_file(quota_server, sandbox["project_id"])
    assert (count, counter) == (QUOTA, QUOTA)


def test_one_request_over_the_cap_is_cut_exactly(quota_server: Running, sandbox: dict):
    with httpx.Client(base_url=quota_server.http_url, timeout=30) as client:
        records = [{"type": "latency", "name": f"op-{i}", "duration_ms": i} for i in range(QUOTA + 1)]
        body = client.post("/v1/traces", json={"records": records}, headers=auth(sandbox["producer_key"])).json()
        assert (body["accepted"], body["rejected"]) == (QUOTA, 1)
        assert body["record_ids"][-1] is None and None not in body["record_ids"][:-1]
        assert body["errors"] == [{"index": QUOTA, "reason": REASON}]
        # Malformed records and quota refusals side by side, each reported at its own index.
        mixed = [{"type": "nope", "name": "bad"}, {"type": "event", "name": "late"}, {"name": "no type"}]
        body = client.post("/v1/traces", json={"records": mixed}, headers=auth(sandbox["producer_key"])).json()
        assert (body["accepted"], body["rejected"]) == (0, 3)
        assert body["record_ids"] == [None, None, None]
        assert [e["index"] for e in body["errors"]] == [0, 1, 2]
        assert body["errors"][1] == {"index": 1, "reason": REASON}
        assert "type must be one of" in body["errors"][0]["reason"]
    assert stored_in_file(quota_server, sandbox["project_id"])[0] == QUOTA


def test_quota_counts_records_ever_accepted_not_rows_left(quota_server: Running, sandbox: dict):
    # The cap is on records ever accepted: a project cannot make room by any means of its own.
    with httpx.Client(base_url=quota_server.http_url, timeout=30) as client:
        records = [{"type": "event", "name": "x"} for _ in range(QUOTA - 1)]
        assert (
            client.post("/v1/traces", json={"records": records}, headers=auth(sandbox["producer_key"])).json()[
                "accepted"
            ]
            == QUOTA - 1
        )
        two = {"records": [{"type": "event", "name": "a"}, {"type": "event", "name": "b"}]}
        body = client.post("/v1/traces", json=two, headers=auth(sandbox["producer_key"])).json()
        assert (body["accepted"], body["rejected"]) == (1, 1)
        assert body["record_ids"][0] is not None and body["record_ids"][1] is None


@pytest.mark.parametrize("how", ["cli", "function"])
def test_promote_lifts_the_cap_at_once(quota_server: Running, sandbox: dict, how: str):
    sender = Sender("records", quota_server, sandbox["producer_key"])
    try:
        assert sender.send([ids(0, i) for i in range(QUOTA)]) == (200, QUOTA, 0)
        assert sender.send([ids(1, i) for i in range(10)]) == (200, 0, 10)
        if how == "cli":
            env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
            env.update(store_env(quota_server.settings.data_dir))
            done = subprocess.run(
                [sys.executable, "-m", "loopkit_core.cli", "projects", "promote", sandbox["project_id"], "--json"]
                + ["--data-dir", str(quota_server.settings.data_dir)],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )
            assert done.returncode == 0, done.stderr
            project = orjson.loads(done.stdout)["project"]
        else:
            project = promote(quota_server.app.store.control, sandbox["project_id"])
        assert (project["kind"], project["quota_spans"], project["expires_at"]) == ("permanent", None, None)
        # The running server sees it on the next request; the same keys go on working.
        assert sender.send([ids(1, i) for i in range(10)]) == (200, 10, 0)
        assert sender.send([ids(2, i) for i in range(500)]) == (200, 500, 0)
    finally:
        sender.close()
    assert stored_in_file(quota_server, sandbox["project_id"])[:1] == (QUOTA + 510,)
    assert len(stored_via_api(quota_server, sandbox["agent_key"])) == QUOTA + 510


def test_a_quota_of_one_then_final_refusals_on_every_transport(tmp_path: Path):
    settings = make_settings(tmp_path / "data", sandbox_quota_spans=1)
    with in_thread(settings) as running, httpx.Client(base_url=running.http_url, timeout=30) as client:
        sandbox = client.post("/v1/signup", json={}).json()
        assert sandbox["quota_spans"] == 1
        expected = {"records": (200, 1, 2), "otlp-http-proto": (200, 0, 3), "otlp-grpc": (200, 0, 3)}
        for n, transport in enumerate(expected):
            sender = Sender(transport, running, sandbox["producer_key"])
            try:
                assert sender.send([ids(n, 0), ids(n, 1), ids(n, 2)]) == expected[transport]
            finally:
                sender.close()
        assert stored_in_file(running, sandbox["project_id"])[0] == 1


def test_permanent_projects_are_uncapped(quota_server: Running):
    with httpx.Client(base_url=quota_server.http_url, timeout=30) as client:
        minted = client.post("/v1/provision", json={"project_name": "big"}).json()
        assert minted["quota_spans"] is None
        records = [{"type": "event", "name": f"r{i}"} for i in range(QUOTA + 200)]
        body = client.post("/v1/traces", json={"records": records}, headers=auth(minted["producer_key"])).json()
        assert (body["accepted"], body["rejected"]) == (QUOTA + 200, 0)
        # Uncapped, the count is added to after the inserts: it still counts every record accepted, and only once.
        again = client.post("/v1/traces", json={"records": records[:10]}, headers=auth(minted["producer_key"]))
        assert again.status_code == 200, again.text
    count, _, counter = stored_in_file(quota_server, minted["project_id"])
    assert count == counter == QUOTA + 200 + 10  # records without a span or a time are new each time they are sent
