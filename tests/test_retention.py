"""Retention: records older than the project's period are deleted in the background, in small batches, without
blocking ingest; packets whose evidence was purged still render."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import make_settings, new_project, store_env
from test_lifecycle import clean_env

from loopkit_core.retention import purge_expired_records, retention_days, set_retention
from loopkit_core.server import in_thread

DAY_NS = 86_400 * 10**9
WIDE = {"since_minutes": 366 * 24 * 60, "limit": 1000}


def post_records(client: httpx.Client, project, name: str, ages_days: list[float], kind: str = "event") -> list[str]:  # noqa: ANN001
    """Records `ages_days` old (by timestamp); returns their IDs."""
    now = time.time_ns()
    records = [
        {"type": kind, "name": name, "message": f"{name} failed: code 42", "timestamp": str(now - int(age * DAY_NS))}
        for age in ages_days
    ]
    response = client.post("/v1/traces", json={"records": records}, headers=project.auth())
    assert response.status_code == 200 and response.json()["accepted"] == len(records), response.text
    return response.json()["record_ids"]


def stored_ids(client: httpx.Client, project) -> set[str]:  # noqa: ANN001
    """Every record ID of the project from the last year (paged)."""
    ids: set[str] = set()
    params: dict = dict(WIDE)
    for _ in range(1000):
        body = client.get("/v1/telemetry", params=params, headers=project.auth("agent")).json()
        ids |= {r["record_id"] for r in body["records"]}
        if not body["next_cursor"]:
            return ids
        params = {"limit": 1000, "cursor": body["next_cursor"]}
    raise AssertionError("paging did not end")


def wait_for(condition, what: str, timeout: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def cli(*args: str) -> subprocess.CompletedProcess:
    """`loopkit ...` in its own process, on the store of the data dir it names (SQLite or the test PostgreSQL)."""
    data_dir = args[args.index("--data-dir") + 1]
    return subprocess.run(
        [sys.executable, "-m", "loopkit_core.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(**store_env(data_dir)),
    )


def test_the_background_purge_drops_old_records_keeps_new_ones_and_honours_project_overrides(tmp_path):
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir, retention_days=30.0, purge_interval_seconds=0.2)
    with in_thread(settings) as server, httpx.Client(base_url=server.http_url, timeout=30) as client:
        default, short, forever = (new_project(server, n) for n in ("default", "short", "forever"))
        # The operator's CLI sets overrides on the data dir while the server runs; it applies them next pass.
        assert cli("projects", "set-retention", short.project_id, "2", "--data-dir", str(data_dir)).returncode == 0
        assert cli("projects", "set-retention", forever.project_id, "0", "--data-dir", str(data_dir)).returncode == 0
        shown = json.loads(cli("projects", "show", short.project_id, "--data-dir", str(data_dir), "--json").stdout)
        assert (shown["project"]["retention_days"], shown["project"]["retention_source"]) == (2.0, "project")
        shown = json.loads(cli("projects", "show", default.project_id, "--data-dir", str(data_dir), "--json").stdout)
        assert (shown["project"]["retention_days"], shown["project"]["retention_source"]) == (30.0, "server default")

        ages = [400, 45, 31, 29, 3, 1, 0]
        ids = {p.project_id: post_records(client, p, "op", ages) for p in (default, short, forever)}
        expected = {
            default.project_id: {i for i, age in zip(ids[default.project_id], ages, strict=True) if age < 30},
            short.project_id: {i for i, age in zip(ids[short.project_id], ages, strict=True) if age < 2},
            forever.project_id: set(ids[forever.project_id]) - {ids[forever.project_id][0]},  # 400 days: not read
        }
        for project in (default, short, forever):
            wait_for(lambda p=project: stored_ids(client, p) == expected[p.project_id], f"{project.project_id}")
        # Every record of `forever` is still there, the 400-day-old one included.
        response = client.get(f"/v1/records/{ids[forever.project_id][0]}", headers=forever.auth("agent"))
        assert response.status_code == 200
        # Back to the default: `short` now keeps 30 days (nothing purged comes back, nothing more goes).
        assert (
            cli("projects", "set-retention", short.project_id, "default", "--data-dir", str(data_dir)).returncode == 0
        )
        assert retention_days(server.app.store.control, short.project_id, 30.0) == 30.0


def test_set_retention_refuses_bad_values_and_unknown_projects(tmp_path):
    data_dir = tmp_path / "data"
    with in_thread(make_settings(data_dir)) as server:
        project = new_project(server)
        with pytest.raises(ValueError):
            set_retention(server.app.store.control, project.project_id, -1)
        with pytest.raises(LookupError):
            set_retention(server.app.store.control, "no-such-project-00000000", 5)
    bad = cli("projects", "set-retention", project.project_id, "soon", "--data-dir", str(data_dir))
    assert bad.returncode == 2 and "DAYS must be a number" in bad.stderr
    missing = cli("projects", "set-retention", "nope-00000000", "3", "--data-dir", str(data_dir))
    assert missing.returncode == 1 and "no project" in missing.stderr


def test_a_large_purge_runs_in_small_batches_while_ingest_carries_on(tmp_path):
    settings = make_settings(tmp_path / "data", retention_days=30.0, retention_batch_rows=100)
    with in_thread(settings) as server, httpx.Client(base_url=server.http_url, timeout=30) as client:
        project = new_project(server)
        for _ in range(6):
            post_records(client, project, "old", [60.0] * 5000)
        fresh = post_records(client, project, "fresh", [0.5] * 10)

        purged: list = []
        purge = threading.Thread(target=lambda: purged.extend(purge_expired_records(server.app.store, time.time())))
        during: list[str] = []
        purge.start()
        # Ingest while the purge runs: each request is answered (after its commit) between two batches.
        for i in range(10_000):
            if not purge.is_alive():
                break
            during += post_records(client, project, f"during-{i}", [0.0])
        purge.join(timeout=120)
        assert not purge.is_alive()

        (result,) = [r for r in purged if r.project_id == project.project_id]
        assert result.deleted == 30_000
        assert result.batches == 30_000 // 100 + 1  # the last batch finds nothing left
        assert len(during) >= 3, "ingest did not get through while the purge ran"
        assert stored_ids(client, project) == set(fresh) | set(during)


def test_a_packet_whose_evidence_was_purged_still_renders_and_its_records_are_404(tmp_path):
    settings = make_settings(tmp_path / "data", retention_days=30.0)
    with in_thread(settings) as server, httpx.Client(base_url=server.http_url, timeout=30) as client:
        project = new_project(server)
        agent, dashboard = project.auth("agent"), project.auth("dashboard")
        old = post_records(client, project, "checkout", [40.0, 40.1, 40.2, 40.3, 40.4], kind="error")
        diagnosed = client.post("/v1/runs/diagnose", json={"since_minutes": 41 * 24 * 60}, headers=agent)
        assert diagnosed.status_code == 200
        packet = diagnosed.json()["packet"]
        (issue,) = packet["issues"]
        assert set(issue["evidence"]) == set(old)

        (result,) = purge_expired_records(server.app.store, time.time())
        assert result.deleted == 5
        for record_id in old:
            response = client.get(f"/v1/records/{record_id}", headers=agent)
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"
        again = client.get(f"/v1/packets/{packet['packet_id']}", headers=agent)
        assert again.status_code == 200
        assert again.json()["packet"]["issues"][0]["evidence"] == issue["evidence"]
        for fmt in ("json", "markdown", "prompt"):
            handoff = client.get(f"/v1/packets/{packet['packet_id']}/handoff", params={"format": fmt}, headers=agent)
            assert handoff.status_code == 200, handoff.text
        approved = client.post(
            f"/v1/packets/{packet['packet_id']}/approve", json={"note": "evidence was purged"}, headers=dashboard
        )
        assert approved.status_code == 200
        verified = client.post("/v1/runs/verify", json={"packet_id": packet["packet_id"]}, headers=agent)
        assert verified.status_code == 200, verified.text
        assert verified.json()["verification"]["verdicts"][0]["verdict"] == "insufficient_data"
