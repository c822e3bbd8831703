"""Telemetry cursors are signed with a per-installation secret and bound to their project: edits are refused."""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path

import httpx
import orjson
from conftest import Project, make_settings, new_project

from loopkit_core.server import Running, in_thread
from loopkit_core.settings import Settings
from loopkit_core.store.cursors import encode_cursor
from loopkit_core.store.engines import Store
from loopkit_core.store.records import WindowQuery
from loopkit_core.store.schema import server_secrets

CURSOR_REASON = "cursor is not valid: pass next_cursor from the previous page unchanged"


def post(client: httpx.Client, project: Project, names: list[str]) -> None:
    """Ingest one event per name."""
    records = [{"type": "event", "name": name} for name in names]
    response = client.post("/v1/traces", json={"records": records}, headers=project.auth("producer"))
    assert response.status_code == 200 and response.json()["accepted"] == len(names), response.text


def page(client: httpx.Client, project: Project, **params: object) -> httpx.Response:
    """One page of the project's records."""
    return client.get("/v1/telemetry", params={"limit": 2, **params}, headers=project.auth("agent"))


def all_names(client: httpx.Client, project: Project, cursor: str | None = None) -> list[str]:
    """Every record name, following next_cursor from `cursor` (or the first page)."""
    names: list[str] = []
    for _ in range(100):
        body = page(client, project, **({"cursor": cursor} if cursor else {})).json()
        names += [r["name"] for r in body["records"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return names
    raise AssertionError("paging did not end")


def assert_refused(response: httpx.Response) -> None:
    """The 400 of a cursor that is not one of ours."""
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {"code": "bad_request", "message": CURSOR_REASON}


def unsigned(payload: dict) -> str:
    """A cursor in the previous, unsigned layout, with its public blake2b check value (anyone could make one)."""
    check = hashlib.blake2b(repr((payload["s"], payload["e"], payload["t"], payload["r"])).encode(), digest_size=8)
    body = orjson.dumps({**payload, "c": check.hexdigest()})
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def test_a_cursor_of_another_project_is_refused(server: Running, client: httpx.Client):
    first, second = new_project(server, "first"), new_project(server, "second")
    post(client, first, [f"a{i}" for i in range(5)])
    post(client, second, [f"b{i}" for i in range(5)])
    cursor = page(client, first).json()["next_cursor"]
    assert cursor
    assert_refused(page(client, second, cursor=cursor))
    assert len(all_names(client, first, cursor)) == 3  # in its own project it pages on


def test_edited_or_self_made_cursors_are_refused(server: Running, client: httpx.Client):
    project = new_project(server)
    post(client, project, [f"e{i}" for i in range(5)])
    cursor = page(client, project).json()["next_cursor"]
    body, mac = cursor.split(".")
    payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert set(payload) == {"s", "e", "t", "r"}
    widened = base64.urlsafe_b64encode(orjson.dumps({**payload, "s": 0})).decode().rstrip("=")
    forged = [
        f"{widened}.{mac}",  # the window widened, the signature kept
        unsigned({**payload, "s": 0}),  # the old layout, whose check value anyone could compute
        unsigned(payload),
        encode_cursor(WindowQuery(0, payload["e"]), (payload["t"], payload["r"]), b""),  # signed with a guessed key
        encode_cursor(WindowQuery(0, payload["e"]), (payload["t"], payload["r"]), b"\0" * 32),
        body,  # no signature
        f"{body}.",
        f"{body}.{mac[:-1]}",
        f"{body}.{mac}x",
        f"{body}.{mac}.{mac}",
        f"{body}.{'A' * len(mac)}",
        f"{body}.{mac}é",
    ]
    for bad in forged:
        assert_refused(page(client, project, cursor=bad))
    assert len(all_names(client, project, cursor)) == 3


def test_cursors_survive_a_restart(tmp_path: Path):
    settings = make_settings(tmp_path / "data")
    with in_thread(settings) as running, httpx.Client(base_url=running.http_url, timeout=30) as client:
        project = new_project(running)
        post(client, project, [f"r{i}" for i in range(7)])
        first = page(client, project).json()
        seen, cursor = [r["name"] for r in first["records"]], first["next_cursor"]
    with in_thread(settings) as running, httpx.Client(base_url=running.http_url, timeout=30) as client:
        rest = all_names(client, project, cursor)
        assert len(seen) == 2 and len(rest) == 5
        assert sorted(seen + rest) == [f"r{i}" for i in range(7)]


def open_together(settings: Settings, count: int) -> list[Store | None]:
    """Open `count` Stores on one data dir at the same instant, as processes starting together do."""
    stores: list[Store | None] = [None] * count
    barrier = threading.Barrier(count, timeout=30)

    def open_store(i: int) -> None:
        barrier.wait()
        stores[i] = Store(settings)

    threads = [threading.Thread(target=open_store, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return stores


def test_processes_sharing_a_store_share_the_secret(tmp_path: Path):
    # 25 first starts of 6 at once: a new file's switch to WAL raced here 7% of the time before it waited.
    for attempt in range(25):
        stores = open_together(make_settings(tmp_path / f"data{attempt}"), 6)
        try:
            assert all(s is not None for s in stores), f"attempt {attempt}: a Store failed to open"
            keys = {s.cursor_key("app-12345678") for s in stores}
            assert len(keys) == 1 and len(next(iter(keys))) == 32
            assert stores[0].cursor_key("app-12345678") != stores[0].cursor_key("app-12345679")
            with stores[0].control.connect() as conn:
                rows = conn.execute(server_secrets.select()).all()
            assert [(r.name, len(r.value)) for r in rows] == [("cursor", 64)]
        finally:
            for s in stores:
                if s is not None:
                    s.close()
