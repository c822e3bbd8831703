"""Approve and reject: the dashboard key's decision, with a note, in an append-only audit trail; nothing leaves.

Real server with a settable clock, real SQLite files: the `approvals` table is read straight from the project's
database file, and an SQLite trigger proves that no decision row is ever updated or deleted.
"""

from __future__ import annotations

import ast
import contextlib
import socket
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_sqlite, new_project
from loopdata import MINUTE_NS, NOW_NS, Loop, checkout_calls, running_loop
from sqlalchemy import func, select

from loopkit_core.api import packets as packets_api
from loopkit_core.loop import service as loop_service
from loopkit_core.store import approvals as approvals_store
from loopkit_core.store.schema import approvals as approvals_table
from loopkit_plugins import handoff as handoff_plugin

REPO = Path(__file__).resolve().parent.parent


def checkout_traffic(spans) -> None:  # noqa: ANN001
    checkout_calls(spans, "checkout", NOW_NS - 60 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 50, 5)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    """One signature issue (5 failed checkouts in 50 calls), diagnosed at NOW."""
    with running_loop(tmp_path / "data", checkout_traffic) as running:
        yield running


def database(loop: Loop) -> Path:
    return Path(loop.server.settings.data_dir) / "projects" / f"{loop.project.project_id}.db"


def rows(loop: Loop) -> list[tuple]:
    """The approvals table, straight from the project's store (SQLite file or PostgreSQL schema)."""
    a = approvals_table.c
    with loop.server.app.store.project(loop.project.project_id).connect() as conn:
        stmt = select(a.seq, a.packet_id, a.decision, a.note, a.actor, a.decided_ns).order_by(a.seq)
        return [tuple(r) for r in conn.execute(stmt).all()]


def display(key: str) -> str:
    """How a key is named in the trail: its kind's prefix and four more characters."""
    return key[: key.index("_", 3) + 5] + "…"


def test_approve_records_who_when_and_the_note(loop: Loop):
    pid = loop.packet["packet_id"]
    [issue] = loop.packet["issues"]
    assert (loop.packet["status"], issue["status"]) == ("ready_for_issue_diagnosis", "new")
    loop.clock.set(NOW_NS + 7 * MINUTE_NS)
    note = "  Evidence checked: 5 gateway timeouts; raise the timeout budget.  "
    answer = loop.decide("approve", {"note": note})
    assert answer.status_code == 200, answer.text
    who = f"dashboard key {display(loop.project.dashboard_key)}"
    decision = {
        "decision": "approved",
        "note": note.strip(),
        "actor": who,
        "decided_at": "2026-03-02T10:07:00.000000Z",
    }
    assert answer.json() == {
        "ok": True,
        "packet_id": pid,
        "status": "approved",
        "approval": {
            "state": "approved",
            "decided_by": who,
            "decided_at": "2026-03-02T10:07:00.000000Z",
            "note": note.strip(),
            "trail": [decision],
        },
    }
    # The packet and its issue moved, in both reads and for both kinds of reader.
    for key in ("agent", "dashboard"):
        packet = loop.packet_now(key)
        assert packet["status"] == "approved"
        assert packet["approval"] == answer.json()["approval"]
        assert [i["status"] for i in packet["issues"]] == ["approved"]
        listed = loop.client.get("/v1/packets", headers=loop.project.auth(key)).json()["packets"]
        assert [(p["packet_id"], p["status"], [i["status"] for i in p["issues"]]) for p in listed] == [
            (pid, "approved", ["approved"])
        ]
    # The row in the project's own SQLite file.
    assert rows(loop) == [(1, pid, "approved", note.strip(), who, NOW_NS + 7 * MINUTE_NS)]


def test_a_second_decision_appends_and_wins(loop: Loop):
    pid = loop.packet["packet_id"]
    loop.clock.set(NOW_NS + MINUTE_NS)
    assert loop.decide("approve", {"note": "looks right"}).status_code == 200
    first = rows(loop)
    loop.clock.set(NOW_NS + 2 * MINUTE_NS)
    answer = loop.decide("reject", {"note": "on second thought: the gateway was down, not our code"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "rejected"
    who = f"dashboard key {display(loop.project.dashboard_key)}"
    assert rows(loop) == [
        *first,
        (2, pid, "rejected", "on second thought: the gateway was down, not our code", who, NOW_NS + 2 * MINUTE_NS),
    ]
    packet = loop.packet_now()
    assert packet["status"] == "rejected" and [i["status"] for i in packet["issues"]] == ["rejected"]
    assert packet["approval"]["state"] == "rejected"
    assert packet["approval"]["decided_at"] == "2026-03-02T10:02:00.000000Z"
    assert [(d["decision"], d["decided_at"]) for d in packet["approval"]["trail"]] == [
        ("approved", "2026-03-02T10:01:00.000000Z"),
        ("rejected", "2026-03-02T10:02:00.000000Z"),
    ]


@needs_sqlite
def test_the_trail_is_append_only_in_the_database(loop: Loop):
    """With triggers that abort any UPDATE or DELETE on approvals, the whole loop still works."""
    with contextlib.closing(sqlite3.connect(database(loop))) as conn:
        for statement in ("UPDATE", "DELETE"):
            conn.execute(
                f"CREATE TRIGGER approvals_no_{statement.lower()} BEFORE {statement} ON approvals "
                "BEGIN SELECT RAISE(ABORT, 'append-only'); END"
            )
        conn.commit()
    seen: list[tuple] = []
    for n, decision in enumerate(["approve", "reject", "approve", "approve"], 1):
        loop.clock.set(NOW_NS + n * MINUTE_NS)
        assert loop.decide(decision, {"note": f"decision {n}"}).status_code == 200
        now = rows(loop)
        assert now[: len(seen)] == seen and len(now) == len(seen) + 1  # earlier rows untouched, one more
        seen = now
        assert loop.verify().status_code == 200
        loop.diagnose(since_minutes=120)
    assert [(r[0], r[2], r[3]) for r in seen] == [
        (1, "approved", "decision 1"),
        (2, "rejected", "decision 2"),
        (3, "approved", "decision 3"),
        (4, "approved", "decision 4"),
    ]
    # The triggers are real: an update through SQLite is refused.
    with contextlib.closing(sqlite3.connect(database(loop))) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE approvals SET note = 'rewritten' WHERE seq = 1")


@pytest.mark.parametrize("kind", ["agent", "producer"])
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_agent_and_producer_keys_are_403(loop: Loop, kind: str, decision: str):
    answer = loop.decide(decision, {"note": "an agent must not approve its own work"}, key=kind)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"
    assert rows(loop) == []
    assert loop.packet_now()["approval"]["state"] == "pending"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "note is required: say why, in a few words"),
        (b"", 400, "note is required: say why, in a few words"),
        ({"note": None}, 400, "note is required: say why, in a few words"),
        ({"note": ""}, 400, "note is required: say why, in a few words"),
        ({"note": " \n\t "}, 400, "note is required: say why, in a few words"),
        ({"note": 42}, 400, "note is required: say why, in a few words"),
        ({"note": ["ok"]}, 400, "note is required: say why, in a few words"),
        ({"note": "x" * 4001}, 400, "note must be at most 4000 characters"),
        (b"{not json", 400, "body must be a JSON object"),
        (b'["note"]', 400, "body must be a JSON object"),
        (b'{"note": "' + b"x" * 17_000 + b'"}', 413, "body must be at most 16384 bytes"),
    ],
    ids=["empty object", "no body", "null", "empty", "blank", "number", "list", "4001", "bad json", "array", "17k"],
)
def test_bad_notes_are_refused_and_nothing_is_recorded(loop: Loop, body, status: int, message: str):
    for decision in ("approve", "reject"):
        answer = loop.decide(decision, body)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["message"] == message
    assert rows(loop) == []
    assert loop.packet_now()["status"] == "ready_for_issue_diagnosis"


def test_a_note_of_exactly_4000_characters_is_kept_whole(loop: Loop):
    note = "é" * 4000
    assert loop.decide("approve", {"note": note}).status_code == 200
    assert rows(loop)[0][3] == note


def test_unknown_and_other_projects_packets_are_404(loop: Loop):
    for packet_id in ("pkt_000000000000000000000000", "nope", "pkt_" + "a" * 60):
        answer = loop.decide("approve", {"note": "ok"}, packet_id=packet_id)
        assert answer.status_code == 404, packet_id
        assert answer.json()["error"]["code"] == "not_found"
    other = new_project(loop.server, "other")
    path = f"/v1/packets/{loop.packet['packet_id']}/approve"
    answer = loop.client.post(path, json={"note": "not mine"}, headers=other.auth("dashboard"))
    assert answer.status_code == 404
    assert rows(loop) == []
    with loop.server.app.store.project(other.project_id).connect() as conn:
        assert conn.execute(select(func.count()).select_from(approvals_table)).scalar() == 0
    assert loop.packet_now()["approval"]["state"] == "pending"


def test_a_decision_without_a_key_is_401(loop: Loop):
    answer = loop.client.post(f"/v1/packets/{loop.packet['packet_id']}/approve", json={"note": "ok"})
    assert answer.status_code == 401
    assert rows(loop) == []


# --- nothing external happens -------------------------------------------------------------------------------

NETWORK_MODULES = {"socket", "ssl", "http", "urllib", "httpx", "requests", "smtplib", "subprocess", "grpc", "aiohttp"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_approval_code_cannot_reach_the_network():
    """Structurally: the routes, the store behind them and the renderers import nothing that talks to the network."""
    for module in (packets_api, loop_service, approvals_store, handoff_plugin):
        assert imported_modules(Path(module.__file__)) & NETWORK_MODULES == set(), module.__name__


class Outbound:
    """Records socket connections, DNS lookups and processes started while armed (a Python audit hook)."""

    def __init__(self, allowed: tuple[str, int]) -> None:
        self.allowed = allowed
        self.armed = False
        self.events: list[tuple] = []
        self.lock = threading.Lock()
        sys.addaudithook(self)  # cannot be removed: it does nothing once disarmed

    def __call__(self, event: str, args: tuple) -> None:
        if not self.armed:
            return
        if event == "socket.connect" and isinstance(args[1], tuple) and args[1][:2] == self.allowed:
            return  # the test's own client reaching the server under test
        if event == "socket.getaddrinfo" and args[0] == self.allowed[0]:
            return
        if event in ("socket.connect", "socket.getaddrinfo", "socket.sendto", "subprocess.Popen", "os.system"):
            with self.lock:
                self.events.append((event, args[:2]))


def test_approving_makes_no_outbound_connection(loop: Loop):
    outbound = Outbound(("127.0.0.1", loop.server.http_port))
    outbound.armed = True
    try:
        # The hook sees a real attempt (a refused connection to the discard port counts too).
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 9), timeout=1):
            pass
        assert outbound.events == [("socket.connect", (outbound.events[0][1][0], ("127.0.0.1", 9)))]
        outbound.events.clear()
        assert loop.decide("approve", {"note": "ship it"}).status_code == 200
        assert loop.decide("reject", {"note": "no, wait"}).status_code == 200
        assert loop.handoff("markdown").status_code == 200
    finally:
        outbound.armed = False
    assert outbound.events == []
    assert len(rows(loop)) == 2
