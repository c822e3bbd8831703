"""Several `loopkit serve` processes on one PostgreSQL database: dedup, exact quota, diagnose/verify anywhere.

Two servers ingest concurrently into the same projects (every span of the permanent project is sent to both;
a sandbox's 7000 distinct spans are split between them against a quota of 5000); a third process diagnoses
and verifies, and what each process reads is exact.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import PG_URL, store_env

pytestmark = pytest.mark.skipif(PG_URL is None, reason="needs LOOPKIT_TEST_DATABASE_URL (PostgreSQL)")

QUOTA = 5000
SANDBOX_SPANS = 7000
SPANS = 4000
ERROR_EVERY = 10  # every 10th span of the permanent project fails the same way: one issue of 400
BATCH = 250
NOW_NS = time.time_ns()


def free_port() -> int:
    """A port the OS says is free on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `loopkit serve` subprocess on the shared database."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log = log
        args = ["serve", "--host", "127.0.0.1", "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)]
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "loopkit_core.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 60) -> None:
        """Poll /healthz until it answers (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server did not start: {self.log.read_text()}")

    def stop(self) -> None:
        """SIGTERM, then wait (bounded)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def servers(env: dict[str, str], tmp_path: Path, count: int) -> Iterator[list[Server]]:
    """`count` servers on the same database, started together and stopped after the block."""
    with ExitStack() as stack:
        started = [Server(env, tmp_path / f"serve{i}.log") for i in range(count)]
        for server in started:
            stack.callback(server.stop)
        for server in started:
            server.wait_ready()
        yield started


def otlp(spans: list[tuple[str, str, bool]]) -> bytes:
    """An OTLP/JSON export of (trace_id, span_id, failed) spans, one minute before NOW."""
    start = NOW_NS - 60_000_000_000
    items = []
    for trace_id, span_id, failed in spans:
        span = {
            "traceId": trace_id,
            "spanId": span_id,
            "name": "checkout",
            "kind": 2,
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + 5_000_000),
        }
        if failed:
            span["status"] = {"code": 2, "message": "card declined by issuer 4711"}
        items.append(span)
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]}
    return orjson.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": items}]}]})


def send_all(url: str, key: str, spans: list[tuple[str, str, bool]]) -> tuple[int, int]:
    """Send spans in batches; returns (accepted, rejected) as the server's partial success says."""
    accepted = rejected = 0
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(0, len(spans), BATCH):
            batch = spans[i : i + BATCH]
            response = client.post("/v1/traces", content=otlp(batch), headers=headers)
            assert response.status_code == 200, response.text
            refused = int(response.json().get("partialSuccess", {}).get("rejectedSpans", "0"))
            accepted += len(batch) - refused
            rejected += refused
    return accepted, rejected


def count_records(url: str, key: str) -> int:
    """Every record of the project in the last two hours, paging through /v1/telemetry (bounded)."""
    total, params = 0, {"limit": 1000, "since_minutes": 120}
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(50):
            body = client.get("/v1/telemetry", params=params, headers={"authorization": f"Bearer {key}"}).json()
            total += len(body["records"])
            if not body.get("next_cursor"):
                return total
            params = {"limit": 1000, "cursor": body["next_cursor"]}
    raise AssertionError("more pages than expected")


def test_two_servers_ingest_one_diagnoses(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
    env.update(store_env(tmp_path / "data"), LOOPKIT_SANDBOX_QUOTA_SPANS=str(QUOTA), LOOPKIT_LOG_LEVEL="warning")
    created = subprocess.run(
        [sys.executable, "-m", "loopkit_core.cli", "projects", "create", "shop", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    shop = orjson.loads(created.stdout)
    shop = shop.get("project", shop)
    spans = [(f"{1:016x}{i + 1:016x}", f"{i + 1:016x}", i % ERROR_EVERY == 0) for i in range(SPANS)]
    sandbox_spans = [(f"{2:016x}{i + 1:016x}", f"{i + 1:016x}", False) for i in range(SANDBOX_SPANS)]

    with servers(env, tmp_path, 2) as (a, b):
        signup = httpx.post(a.url + "/v1/signup", json={"project_name": "capped"}, timeout=30)
        assert signup.status_code == 201 and signup.json()["quota_spans"] == QUOTA
        sandbox = signup.json()
        jobs = {
            # The same spans through both servers at once: each is stored once.
            "shop-a": (a.url, shop["producer_key"], spans),
            "shop-b": (b.url, shop["producer_key"], spans),
            # Distinct spans split across both: exactly the quota is accepted, the rest refused.
            "sandbox-a": (a.url, sandbox["producer_key"], sandbox_spans[: SANDBOX_SPANS // 2]),
            "sandbox-b": (b.url, sandbox["producer_key"], sandbox_spans[SANDBOX_SPANS // 2 :]),
        }
        results: dict[str, tuple[int, int] | BaseException] = {}

        def run(name: str) -> None:
            try:
                results[name] = send_all(*jobs[name])
            except BaseException as exc:  # noqa: BLE001 (reported below)
                results[name] = exc

        threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert all(isinstance(r, tuple) for r in results.values()), results
        # Every copy of a resent span is acknowledged as accepted (dedup is silent); none refused.
        assert results["shop-a"] == results["shop-b"] == (SPANS, 0)
        sandbox_accepted = results["sandbox-a"][0] + results["sandbox-b"][0]
        sandbox_rejected = results["sandbox-a"][1] + results["sandbox-b"][1]
        assert (sandbox_accepted, sandbox_rejected) == (QUOTA, SANDBOX_SPANS - QUOTA)

    # A third process, started afterwards, reads, diagnoses and verifies what the other two stored.
    with servers(env, tmp_path, 1) as (c,):
        assert count_records(c.url, shop["agent_key"]) == SPANS
        assert count_records(c.url, sandbox["agent_key"]) == QUOTA
        agent = {"authorization": f"Bearer {shop['agent_key']}"}
        diagnosed = httpx.post(
            c.url + "/v1/runs/diagnose", json={"since_minutes": 120}, headers=agent, timeout=120
        ).json()
        packet = diagnosed["packet"]
        [issue] = [i for i in packet["issues"] if i["signal_type"] == "error"]
        assert issue["count"] == SPANS // ERROR_EVERY
        verified = httpx.post(
            c.url + "/v1/runs/verify", json={"packet_id": packet["packet_id"]}, headers=agent, timeout=120
        )
        assert verified.status_code == 200, verified.text
        verification = verified.json()["verification"]
        with servers(env, tmp_path, 1) as (d,):
            # Any other process sees the packet and its verification.
            stored = httpx.get(d.url + f"/v1/packets/{packet['packet_id']}", headers=agent, timeout=30).json()["packet"]
        assert [v["verification_id"] for v in stored["verifications"]] == [verification["verification_id"]]
        assert [i["count"] for i in stored["issues"] if i["signal_type"] == "error"] == [SPANS // ERROR_EVERY]
