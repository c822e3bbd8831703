"""`loopkit serve` as a real process: live project pickup, SIGTERM drain, env configuration, port clashes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import sqlite_only, store_env

from loopkit_core.model import record_id_for_span

WIDE = {"since_minutes": 10 * 365 * 24 * 60, "limit": 1000}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without LOOPKIT_* variables, plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}, **extra}


@dataclass
class Server:
    """A `loopkit serve` child process and where it listens."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    log: Path

    @property
    def url(self) -> str:
        """Base URL of its HTTP listener."""
        return f"http://127.0.0.1:{self.http_port}"

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace")


def wait_healthy(server: Server, timeout: float = 20.0) -> None:
    """Poll /healthz until it answers 200, the process dies, or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"loopkit serve exited with {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"loopkit serve did not become healthy in {timeout}s:\n{server.output()}")


def stop(process: subprocess.Popen) -> None:
    """Kill a child process if it is still running and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


@contextmanager
def serving(data_dir: Path | None, log: Path, env: dict[str, str] | None = None, **ports: int) -> Iterator[Server]:
    """Run `loopkit serve` (flags for the data dir and ports unless None) until it is healthy; kill it after."""
    http_port = ports.get("http_port", free_port())
    grpc_port = ports.get("grpc_port", free_port())
    args = [sys.executable, "-m", "loopkit_core.cli", "serve", "--log-level", "warning"]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir), "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
        env = {**(env or clean_env()), **store_env(data_dir)}  # on a PostgreSQL run, that data_dir's schemas
    with log.open("ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env or clean_env(), cwd=log.parent)
    server = Server(process, http_port, grpc_port, log)
    try:
        wait_healthy(server)
        yield server
    finally:
        stop(process)


def cli_create(data_dir: Path, name: str) -> dict:
    """`loopkit projects create NAME --json` in its own process."""
    result = subprocess.run(
        [sys.executable, "-m", "loopkit_core.cli", "projects", "create", name, "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(**store_env(data_dir)),
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def all_record_ids(url: str, agent_key: str) -> list[str]:
    """Every record ID of a project, paging with next_cursor (bounded)."""
    ids: list[str] = []
    params: dict[str, object] = dict(WIDE)
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(1000):
            response = client.get("/v1/telemetry", params=params, headers={"authorization": f"Bearer {agent_key}"})
            assert response.status_code == 200, response.text
            body = response.json()
            ids += [r["record_id"] for r in body["records"]]
            if not body["next_cursor"]:
                return ids
            params = {"limit": 1000, "cursor": body["next_cursor"]}
    raise AssertionError("paging did not end")


def test_a_project_created_by_the_cli_works_at_once_without_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    with serving(data_dir, tmp_path / "serve.log") as server:
        created = cli_create(data_dir, "late arrival")
        with httpx.Client(base_url=server.url, timeout=30) as client:
            posted = client.post(
                "/v1/traces",
                json={"records": [{"type": "error", "name": "checkout", "message": "boom"}]},
                headers={"authorization": f"Bearer {created['producer_key']}"},
            )
            assert posted.status_code == 200, posted.text
            assert posted.json()["accepted"] == 1
            record_id = posted.json()["record_ids"][0]
            read = client.get(f"/v1/records/{record_id}", headers={"authorization": f"Bearer {created['agent_key']}"})
            assert read.status_code == 200
            assert read.json()["record"]["message"] == "boom"
        # A second project created while serving is also isolated from the first.
        other = cli_create(data_dir, "second")
        assert all_record_ids(server.url, other["agent_key"]) == []
        assert all_record_ids(server.url, created["agent_key"]) == [record_id]
        # Keys rotated by the CLI: the old ones stop working at once, the new ones work at once.
        rotated = subprocess.run(
            [sys.executable, "-m", "loopkit_core.cli", "projects", "rotate-keys", created["project_id"]]
            + ["--data-dir", str(data_dir), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(**store_env(data_dir)),
        )
        assert rotated.returncode == 0, rotated.stderr
        new_keys = json.loads(rotated.stdout)
        old_read = httpx.get(
            f"{server.url}/v1/telemetry", headers={"authorization": f"Bearer {created['agent_key']}"}, timeout=30
        )
        assert old_read.status_code == 401
        assert all_record_ids(server.url, new_keys["agent_key"]) == [record_id]


def test_sigterm_drains_and_every_acknowledged_record_survives_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    created = cli_create(data_dir, "drain")
    producer = {"authorization": f"Bearer {created['producer_key']}"}
    attempted: list[set[str]] = []  # the record IDs of every request sent, acknowledged or not
    acknowledged: set[str] = set()
    lock = threading.Lock()
    stop_sending = threading.Event()
    successes = threading.Semaphore(0)

    def send(worker: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for batch in range(10_000):
                if stop_sending.is_set():
                    return
                records = [
                    {
                        "type": "latency",
                        "name": f"w{worker}",
                        "duration_ms": n,
                        "trace_id": f"{worker + 1:08x}{batch:024x}",
                        "span_id": f"{n + 1:016x}",
                    }
                    for n in range(50)
                ]
                ids = {record_id_for_span(created["project_id"], r["trace_id"], r["span_id"]) for r in records}
                with lock:
                    attempted.append(ids)
                try:
                    response = client.post("/v1/traces", json={"records": records}, headers=producer)
                except httpx.TransportError:
                    return  # the server has stopped listening
                if response.status_code != 200:
                    assert response.status_code == 503, response.text
                    return
                body = response.json()
                assert body["accepted"] == 50
                assert set(body["record_ids"]) == ids
                with lock:
                    acknowledged.update(ids)
                successes.release()

    with serving(data_dir, tmp_path / "serve.log") as server:
        threads = [threading.Thread(target=send, args=(i, server.url), daemon=True) for i in range(8)]
        for thread in threads:
            thread.start()
        # Let real traffic flow (at least 40 acknowledged requests), then stop the server mid-stream.
        for _ in range(40):
            assert successes.acquire(timeout=20), "ingest did not make progress"
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        returncode = server.process.wait(timeout=20)
        stopped_in = time.monotonic() - started
        stop_sending.set()
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive()
    assert returncode == 0, server.output()
    assert stopped_in < 8, f"shutdown took {stopped_in:.1f}s"
    assert "Traceback" not in server.output(), server.output()
    assert len(acknowledged) >= 40 * 50

    with serving(data_dir, tmp_path / "restart.log") as again:
        stored = all_record_ids(again.url, created["agent_key"])
    assert len(stored) == len(set(stored))
    missing = acknowledged - set(stored)
    assert not missing, f"{len(missing)} acknowledged records were lost"
    # Nothing else is there, and a request that was not acknowledged was stored whole or not at all.
    assert set(stored) <= set().union(*attempted)
    for ids in attempted:
        assert ids <= set(stored) or not ids & set(stored)


@sqlite_only("checks that LOOPKIT_DATA_DIR is where the files are created")
def test_loopkit_environment_variables_configure_serve(tmp_path):
    data_dir = tmp_path / "env-data"
    http_port, grpc_port = free_port(), free_port()
    env = clean_env(LOOPKIT_DATA_DIR=str(data_dir), LOOPKIT_HTTP_PORT=str(http_port), LOOPKIT_GRPC_PORT=str(grpc_port))
    with serving(None, tmp_path / "serve.log", env=env, http_port=http_port, grpc_port=grpc_port) as server:
        assert f"127.0.0.1:{http_port}" in server.output()
        assert (data_dir / "control.db").is_file()
        assert not (tmp_path / "loopkit-data").exists()
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
        created = cli_create(data_dir, "env project")
        response = httpx.post(
            f"{server.url}/v1/traces",
            json={"records": [{"type": "event", "name": "configured"}]},
            headers={"authorization": f"Bearer {created['producer_key']}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert len(list((data_dir / "projects").glob(f"{created['project_id']}.db"))) == 1


@sqlite_only("checks which data_dir the files are created in")
def test_flags_win_over_environment_variables(tmp_path):
    flag_dir, env_dir = tmp_path / "flag-data", tmp_path / "env-data"
    env = clean_env(LOOPKIT_DATA_DIR=str(env_dir), LOOPKIT_HTTP_PORT=str(free_port()))
    with serving(flag_dir, tmp_path / "serve.log", env=env) as server:
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        assert (flag_dir / "control.db").is_file()
        assert not env_dir.exists()


def run_serve(args: list[str], env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run `loopkit serve` expecting it to exit by itself; kill it if it does not."""
    process = subprocess.Popen(
        [sys.executable, "-m", "loopkit_core.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or clean_env(),
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        stop(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("which", ["http", "grpc"])
def test_a_port_in_use_is_a_clear_error_and_a_non_zero_exit(tmp_path, which):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {"http": free_port(), "grpc": free_port(), which: busy}
        result = run_serve(
            [
                "--data-dir",
                str(tmp_path / "data"),
                "--http-port",
                str(ports["http"]),
                "--grpc-port",
                str(ports["grpc"]),
            ]
        )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    label = "HTTP" if which == "http" else "OTLP/gRPC"
    assert f"loopkit: error: could not bind {label} to 127.0.0.1:{busy}" in result.stderr, result.stderr


def test_a_second_server_on_the_same_ports_refuses_to_start(tmp_path):
    with serving(tmp_path / "data", tmp_path / "first.log") as first:
        result = run_serve(
            [
                "--data-dir",
                str(tmp_path / "data2"),
                "--http-port",
                str(first.http_port),
                "--grpc-port",
                str(first.grpc_port),
            ]
        )
        assert result.returncode != 0
        assert "Traceback" not in result.stderr, result.stderr
        assert f"could not bind HTTP to 127.0.0.1:{first.http_port}" in result.stderr
        assert httpx.get(f"{first.url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOOPKIT_HTTP_PORT": "abc"}, "LOOPKIT_HTTP_PORT: 'abc' is not a valid int"),
        ({"LOOPKIT_GRPC_PORT": "70000"}, "grpc_port must be between 0 and 65535, got 70000"),
    ],
)
def test_bad_environment_values_are_a_clear_error(tmp_path, env, message):
    result = run_serve(["--data-dir", str(tmp_path / "data")], env=clean_env(**env))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr, result.stderr
    assert f"loopkit: error: {message}" in result.stderr


def test_a_second_server_on_the_same_grpc_port_refuses_to_start(tmp_path):
    # grpcio binds with SO_REUSEPORT unless told otherwise: a second server would silently share the port.
    with serving(tmp_path / "data", tmp_path / "first.log") as first:
        result = run_serve(
            [
                "--data-dir",
                str(tmp_path / "data2"),
                "--http-port",
                str(free_port()),
                "--grpc-port",
                str(first.grpc_port),
            ]
        )
        assert result.returncode != 0, result.stdout
        assert "Traceback" not in result.stderr, result.stderr
        assert f"could not bind OTLP/gRPC to 127.0.0.1:{first.grpc_port}" in result.stderr
        with grpc.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
