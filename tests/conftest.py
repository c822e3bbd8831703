"""Shared fixtures: a real LoopKit (HTTP + gRPC) on free loopback ports over real SQLite files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from loopkit_core.projects import create_project
from loopkit_core.server import Running, in_thread
from loopkit_core.settings import Settings

# tests/data holds fixtures, e.g. the example third-party plugin package and its own tests (run by test_plugins.py
# in a subprocess against a throwaway distribution), never collected as LoopKit tests.
collect_ignore = ["data"]


@dataclass
class Project:
    """A project created through the real control store, with its secrets."""

    project_id: str
    producer_key: str
    agent_key: str
    dashboard_key: str
    recovery_code: str

    def auth(self, kind: str = "producer") -> dict[str, str]:
        """The authorization header for one of the project's keys."""
        return {"authorization": f"Bearer {getattr(self, kind + '_key')}"}


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test server: loopback only, ports chosen by the OS."""
    return Settings.from_env(
        {},
        data_dir=data_dir,
        host="127.0.0.1",
        http_port=0,
        grpc_port=0,
        log_level="warning",
        shutdown_grace_seconds=5.0,
        **overrides,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    """A running LoopKit with its own data dir; stopped (and drained) after the test."""
    with in_thread(make_settings(tmp_path / "data")) as running:
        yield running


def new_project(running: Running, name: str = "test app") -> Project:
    """Create a project on a running server's control store."""
    created = create_project(running.app.store.control, name)
    return Project(**{k: created[k] for k in Project.__dataclass_fields__})


@pytest.fixture
def project(server: Running) -> Project:
    """A fresh project on `server`."""
    return new_project(server)


@pytest.fixture
def client(server: Running) -> Iterator[httpx.Client]:
    """An HTTP client for `server`."""
    with httpx.Client(base_url=server.http_url, timeout=30) as c:
        yield c
