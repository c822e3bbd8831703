"""Crash safety: SIGKILL `loopkit serve` mid-ingest; every acknowledged span is there after a restart, once.

Each protobuf batch's spans start on three different UTC days, so on PostgreSQL every commit writes across
partition boundaries and the first ones make day partitions while the other clients' commits run. On SQLite a
second run bounds each day table at 1,000 records, so today's records also cross the bounds between its tables,
made by the writer while the clients send.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import PG_URL, make_settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2
from sqlalchemy import distinct, func, select
from test_lifecycle import all_record_ids, clean_env, cli_create, serving

from loopkit_core.model import DAY_NS, record_id_for_span
from loopkit_core.store import day_tables, partitions
from loopkit_core.store.engines import Store
from loopkit_core.store.schema import records

SEED = 20261129
BATCH = 40
CLIENTS = {"records": 3, "protobuf": 3}


# Each sent span as (trace ID, span ID, start time in the ID: 0 for records sent without a timestamp).
SpanKey = tuple[str, str, int]


def _records_body(worker: int, batch: int) -> tuple[dict, list[SpanKey]]:
    ids = [(f"{worker + 1:08x}{batch + 1:024x}", f"{n + 1:016x}", 0) for n in range(BATCH)]
    records = [
        {"type": "latency", "name": f"records-{worker}", "duration_ms": n, "trace_id": t, "span_id": s}
        for n, (t, s, _) in enumerate(ids)
    ]
    return {"records": records}, ids


def _protobuf_body(worker: int, batch: int) -> tuple[bytes, list[SpanKey]]:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "crash"
    spans = resource_spans.scope_spans.add().spans
    now = time.time_ns()
    ids = []
    for n in range(BATCH):
        start = now - 2_000_000 - ((batch + n) % 3) * DAY_NS  # today, yesterday, the day before
        # Trace IDs of the protobuf clients start at 0x1000 so they never collide with the records clients'.
        trace_id = (0x1000 + worker).to_bytes(4, "big") + (batch + 1).to_bytes(12, "big")
        span_id = (n + 1).to_bytes(8, "big")
        spans.append(
            trace_pb2.Span(
                trace_id=trace_id,
                span_id=span_id,
                name=f"proto-{worker}",
                start_time_unix_nano=start,
                end_time_unix_nano=start + 2_000_000,
            )
        )
        ids.append((trace_id.hex(), span_id.hex(), start))
    return request.SerializeToString(), ids


class Traffic:
    """Client threads that ingest until the server goes away, remembering what was acknowledged."""

    def __init__(self, url: str, project_id: str, producer_key: str) -> None:
        self.url, self.project_id = url, project_id
        self.headers = {"authorization": f"Bearer {producer_key}"}
        self.lock = threading.Lock()
        self.attempted: list[set[str]] = []
        self.acknowledged: set[str] = set()
        self.successes = 0
        self.unexpected: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, args=(shape, worker), daemon=True)
            for shape, count in CLIENTS.items()
            for worker in range(count)
        ]

    def start(self) -> None:
        """Start every client thread."""
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        """Wait (bounded) for every client to notice the server is gone."""
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a client thread did not stop"

    def _run(self, shape: str, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for batch in range(100_000):
                if shape == "records":
                    doc, ids = _records_body(worker, batch)
                    send = {"json": doc}
                else:
                    body, ids = _protobuf_body(worker, batch)
                    send = {"content": body, "headers": {**self.headers, "content-type": "application/x-protobuf"}}
                record_ids = {record_id_for_span(self.project_id, *key) for key in ids}
                with self.lock:
                    self.attempted.append(record_ids)
                try:
                    response = client.post("/v1/traces", **({"headers": self.headers} | send))
                except httpx.TransportError:
                    return  # killed: this request's fate is unknown, and it was not acknowledged
                if response.status_code != 200:
                    with self.lock:
                        self.unexpected.append(f"{response.status_code} {response.text[:200]}")
                    return
                if shape == "records":
                    assert response.json()["accepted"] == BATCH
                    assert set(response.json()["record_ids"]) == record_ids
                with self.lock:
                    self.acknowledged |= record_ids
                    self.successes += 1


def stored_counts(data_dir: Path, project_id: str) -> tuple[int, int, dict]:
    """(records, distinct spans, layout) straight from the store, on either backend."""
    store = Store(make_settings(data_dir))
    try:
        engine = store.project(project_id)
        with engine.connect() as conn:
            span_key = records.c.trace_id + "/" + records.c.span_id
            total, spans = conn.execute(select(func.count(), func.count(distinct(span_key)))).one()
        return total, spans, (partitions.layout(engine) if PG_URL else day_tables.layout(engine))
    finally:
        store.close()


@pytest.mark.parametrize(
    "table_rows",
    [None, pytest.param(1000, marks=pytest.mark.skipif(PG_URL is not None, reason="SQLite's day tables"))],
)
def test_sigkill_mid_ingest_loses_no_acknowledged_span_and_stores_none_twice(tmp_path, table_rows):
    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    created = cli_create(data_dir, "crash")
    project_id = created["project_id"]
    env = None if table_rows is None else clean_env(LOOPKIT_SQLITE_TABLE_ROWS=str(table_rows))

    with serving(data_dir, tmp_path / "serve.log", env) as server:
        traffic = Traffic(server.url, project_id, created["producer_key"])
        traffic.start()
        # A seeded random moment, after real traffic has been acknowledged by every kind of client (with bounded
        # tables, enough of it that today's records fill one: two thirds of the spans start today).
        min_successes = rng.randint(20, 60) + (0 if table_rows is None else 60)
        kill_after = rng.uniform(0.2, 1.5)
        deadline = time.monotonic() + 20
        while traffic.successes < min_successes:
            assert time.monotonic() < deadline, f"ingest did not make progress:\n{server.output()}"
            time.sleep(0.01)
        time.sleep(kill_after)
        server.process.send_signal(signal.SIGKILL)
        assert server.process.wait(timeout=10) == -signal.SIGKILL
        traffic.join()

    assert traffic.unexpected == [], traffic.unexpected
    acknowledged = traffic.acknowledged
    assert len(acknowledged) >= min_successes * BATCH

    if PG_URL is None:
        # The files themselves are sound after the crash (SQLite replays or discards the WAL's tail).
        with sqlite3.connect(data_dir / "projects" / f"{project_id}.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    total, distinct_spans, layout = stored_counts(data_dir, project_id)
    assert total == distinct_spans, "a span is stored twice"
    # The commits crossed day partitions (PostgreSQL) or day tables (SQLite), made by the writer while the clients
    # sent: every day an acknowledged span started on (the milliseconds that begin its record ID; 0 for records
    # sent without a time) has one.
    days = {int(rid[4:15], 16) * 10**6 // DAY_NS for rid in acknowledged if int(rid[4:15], 16)}
    assert len(days) >= 3 and days <= set(layout["days"]), (days, layout)
    if table_rows is not None:
        assert layout["tables"] > len(layout["days"]), layout  # today's records went to more than one table

    with serving(data_dir, tmp_path / "restart.log") as again:
        stored = all_record_ids(again.url, created["agent_key"])
        assert len(stored) == len(set(stored)) == total
        missing = acknowledged - set(stored)
        assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged spans were lost"
        # Nothing that was never sent is there, and each request was committed whole or not at all.
        attempted = set().union(*traffic.attempted)
        assert set(stored) <= attempted
        for ids in traffic.attempted:
            assert ids <= set(stored) or not ids & set(stored)
        # The restarted server accepts more, including a resend of an acknowledged batch (stored once).
        doc, ids = _records_body(0, 0)
        headers = {"authorization": f"Bearer {created['producer_key']}"}
        resent = httpx.post(f"{again.url}/v1/traces", json=doc, headers=headers, timeout=30)
        assert resent.status_code == 200 and resent.json()["accepted"] == BATCH
        fresh, fresh_ids = _records_body(99, 0)
        posted = httpx.post(f"{again.url}/v1/traces", json=fresh, headers=headers, timeout=30)
        assert posted.status_code == 200 and posted.json()["accepted"] == BATCH
        after = all_record_ids(again.url, created["agent_key"])
        expected_new = {record_id_for_span(project_id, *key) for key in fresh_ids}
        first_batch = {record_id_for_span(project_id, *key) for key in ids}
        assert set(after) == set(stored) | expected_new | first_batch
        assert len(after) == len(set(after))
