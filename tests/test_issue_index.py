"""The Issues page's rows from stored packets: one row per fingerprint, counts per packet, regressed, impact.

Packets are written with the store's own save_diagnosis (as a diagnosis does), so an issue can carry fields other
diagnosers add (`impact`, from issue 16 part A) before those diagnosers exist.
"""

from __future__ import annotations

import time

from loopkit_core.model import rfc3339
from loopkit_core.store.packets import save_diagnosis
from loopkit_core.store.schema import issues

NS = 1_000_000_000
JSON = {"accept": "application/json"}


def issue(fingerprint: str, count: int, **extra: object) -> dict:
    """A packet issue as a diagnosis stores it (the fields the Issues page reads)."""
    return {"issue_id": f"iss_{fingerprint}", "fingerprint": fingerprint, "title": f"fault {fingerprint}",
            "count": count, "severity": "high", "signal_type": "error", **extra}  # fmt: skip


def tracked(fingerprint: str, first_ns: int, last_ns: int) -> dict:
    """The tracking row of an issue (issues table)."""
    return {"fingerprint": fingerprint, "issue_id": f"iss_{fingerprint}", "diagnoser": "test", "signal_type": "error",
            "title": f"fault {fingerprint}", "template": None, "selector": {"record_ids": []},
            "first_seen_ns": first_ns, "last_seen_ns": last_ns}  # fmt: skip


def save(server, project, packet_id: str, created_ns: int, issues: list[dict], rows: list[dict]) -> None:
    """Store one packet through the store's own path."""
    engine = server.app.store.project(project.project_id)
    packet = {"packet_id": packet_id, "project_id": project.project_id, "created_at": rfc3339(created_ns),
              "created_ns": created_ns, "status": "ready_for_issue_diagnosis", "issues": issues}  # fmt: skip
    save_diagnosis(engine, packet, rows)


def test_rows_counts_regressed_and_impact(server, project, client) -> None:
    now = time.time_ns()
    t1, t2 = now - 600 * NS, now - 60 * NS
    save(
        server,
        project,
        "pkt_aaa1",
        t1,
        [issue("f1", 7), issue("f2", 3)],
        [tracked("f1", t1, t1), tracked("f2", t1, t1)],
    )
    # A verification found f1's fix held until t1 (what store/verdicts.py records); t2's occurrence is a regression.
    with server.app.store.project(project.project_id).begin() as conn:
        conn.execute(
            issues.update().where(issues.c.fingerprint == "f1").values(status="verified", verified_until_ns=t1)
        )
    impact = {"sessions": 6, "users": 5, "negative_signals": {"count": 6, "evidence": ["rec_1", "rec_2"]}}
    save(server, project, "pkt_bbb2", t2, [issue("f1", 9, impact=impact)], [tracked("f1", t1, t2)])
    dash = project.auth("dashboard")
    body = client.get("/v1/dashboard/issues", headers={**dash, **JSON}).json()
    assert [(i["fingerprint"], [(p["packet_id"], p["count"]) for p in i["packets"]]) for i in body["issues"]] == [
        ("f1", [("pkt_bbb2", 9), ("pkt_aaa1", 7)]),
        ("f2", [("pkt_aaa1", 3)]),
    ]
    f1, f2 = body["issues"]
    assert (f1["regressed"], f2["regressed"]) == (True, False)
    assert (f1["status"], f2["status"]) == ("regressed", "new")
    assert f1["impact"] == impact and f2["impact"] is None
    assert (f1["last_packet_id"], f1["last_seen"]) == ("pkt_bbb2", rfc3339(t2))
    assert body["packets_read"] == 2
    page = client.get("/v1/dashboard/issues", headers=dash).text
    assert page.count('class="issue-row"') == 2
    assert "sessions: 6; users: 5; negative signals: 6" in page
    assert page.count("regressed-flag") == 1
    one = client.get("/v1/dashboard/issues", params={"limit": "1"}, headers={**dash, **JSON}).json()
    assert [i["fingerprint"] for i in one["issues"]] == ["f1"]
