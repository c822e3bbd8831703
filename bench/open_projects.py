"""File descriptors of a server that touches many projects, with and without the max_open_projects bound.

    python bench/open_projects.py BOUND PROJECTS

Starts an embedded server (SQLite in a temporary directory, loopback, free ports), creates PROJECTS projects,
writes one record to each and reads it back, and prints this process's open file descriptors before and after.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import httpx

from loopkit_core.projects import create_project
from loopkit_core.server import in_thread
from loopkit_core.settings import Settings


def open_fds() -> int:
    """File descriptors open in this process."""
    return len(os.listdir("/proc/self/fd"))


def main(bound: int, count: int) -> None:
    """Touch `count` projects under `max_open_projects=bound` and print the descriptor counts."""
    with tempfile.TemporaryDirectory() as tmp:
        loopback = {"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "log_level": "warning"}
        settings = Settings.from_env({}, data_dir=Path(tmp), max_open_projects=bound, **loopback)
        with in_thread(settings) as running, httpx.Client(base_url=running.http_url, timeout=30) as client:
            before = open_fds()
            for i in range(count):
                keys = create_project(running.app.store.control, f"p{i}")
                record = {"records": [{"type": "event", "name": "x"}]}
                sent = client.post(
                    "/v1/traces", json=record, headers={"authorization": f"Bearer {keys['producer_key']}"}
                )
                read = client.get("/v1/telemetry", headers={"authorization": f"Bearer {keys['agent_key']}"})
                assert sent.status_code == 200 and len(read.json()["records"]) == 1
            after = open_fds()
            print(
                f"max_open_projects={bound} projects={count}: fds {before} -> {after} (+{after - before}), "
                f"open engines {running.app.store.open_projects()}"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
