"""Loop bookkeeping over real HTTP: POST /v1/packets/{id}/stages, GET /v1/loops (stages and the funnel), memory.

One packet, diagnosed at NOW over the last hour, holds a signature issue (POST /checkout: 10 TimeoutErrors in 100
calls) and a latency issue (GET /search about 200 ms against a 50 ms baseline). The server's clock is set before
every step, so every timestamp and every funnel figure below is exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import new_project
from loopdata import HOUR_NS, MINUTE_NS, NOW_NS, Loop, Spans, checkout_calls, running_loop, search_calls

from loopkit_core.model import rfc3339
from loopkit_core.store.schema import approvals, packets

APPROVED_NS = NOW_NS + 5 * MINUTE_NS
PR_NS = NOW_NS + 10 * MINUTE_NS
MERGED_NS = NOW_NS + 20 * MINUTE_NS
AFTER_END_NS = NOW_NS + 35 * MINUTE_NS
VERIFY_NS = NOW_NS + 40 * MINUTE_NS
PR_URL = "https://github.com/acme/shop/pull/7"


def traffic(spans: Spans) -> None:
    checkout_calls(spans, "before", NOW_NS - 60 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 100, 10)
    search_calls(spans, "search-baseline", NOW_NS - 7 * HOUR_NS, NOW_NS - HOUR_NS, 120, 50.0)
    search_calls(spans, "search-before", NOW_NS - 60 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 40, 200.0)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    with running_loop(tmp_path / "data", traffic) as running:
        yield running


def stage(loop: Loop, body: object, key: str = "agent", packet_id: str | None = None):
    """POST a stage for the loop's packet (or `packet_id`)."""
    path = f"/v1/packets/{packet_id or loop.packet['packet_id']}/stages"
    return loop.client.post(path, json=body, headers=loop.project.auth(key))


def loops(loop: Loop, key: str = "agent", **params: object) -> dict:
    answer = loop.client.get("/v1/loops", params=params, headers=loop.project.auth(key))
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True
    return answer.json()


def approve(loop: Loop, at_ns: int = APPROVED_NS, packet_id: str | None = None) -> None:
    loop.clock.set(at_ns)
    answer = loop.decide("approve", {"note": "fix the gateway timeout"}, packet_id=packet_id)
    assert answer.status_code == 200, answer.text


def send_clean_after(loop: Loop) -> None:
    """A clean after-window: 100 checkouts without a failure, 100 searches at the baseline's speed."""
    checkout_calls(loop.spans, "after", APPROVED_NS, AFTER_END_NS, 100, 0, first_order=20_000)
    search_calls(loop.spans, "search-after", APPROVED_NS, AFTER_END_NS, 100, 50.0)
    loop.spans.send(loop.client, loop.project)


def verify(loop: Loop, at_ns: int = VERIFY_NS) -> dict:
    loop.clock.set(at_ns)
    answer = loop.verify()
    assert answer.status_code == 200, answer.text
    return answer.json()["verification"]


def diagnose_answer(loop: Loop, **body: object) -> dict:
    answer = loop.client.post("/v1/runs/diagnose", json=body, headers=loop.project.auth("agent"))
    assert answer.status_code == 200, answer.text
    return answer.json()


def stored_stages(loop: Loop) -> list[dict]:
    answer = loop.client.get(
        f"/v1/dashboard/packets/{loop.packet['packet_id']}",
        headers={**loop.project.auth("dashboard"), "accept": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["stages"]


def test_the_whole_bookkeeping_path(loop: Loop):
    pid = loop.packet["packet_id"]
    [error_issue] = [i for i in loop.packet["issues"] if i["signal_type"] == "error"]

    # Before a person approved: refused, and nothing is stored.
    loop.clock.set(NOW_NS + 2 * MINUTE_NS)
    answer = stage(loop, {"stage": "issue_opened", "url": "https://github.com/acme/shop/issues/6"})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == {
        "code": "approval_required",
        "message": "a person must approve this packet on the dashboard before a loop stage is recorded",
    }
    assert loops(loop) == {
        "ok": True,
        "loops": [],
        "funnel": {
            "loops": 0,
            "to_approval": {"median_seconds": None, "count": 0},
            "to_merge": {"median_seconds": None, "count": 0},
            "to_first_held": {"median_seconds": None, "count": 0},
            "verified_fixes_per_week": [],
        },
    }

    approve(loop)  # over REST, with the dashboard key
    loop.clock.set(PR_NS)
    answer = stage(loop, {"stage": "pr_opened", "url": PR_URL, "note": "  retries with backoff  "})
    assert answer.status_code == 201, answer.text
    pr = answer.json()["stage"]
    assert pr["stage_id"].startswith("stg_") and len(pr["stage_id"]) == 28
    display = loop.project.agent_key[: loop.project.agent_key.index("_", 3) + 5] + "…"
    assert pr == {
        "stage_id": pr["stage_id"],
        "packet_id": pid,
        "issue_id": None,
        "stage": "pr_opened",
        "url": PR_URL,
        "note": "retries with backoff",
        "actor": f"agent key {display}",
        "created_at": rfc3339(PR_NS),
    }
    loop.clock.set(MERGED_NS)
    answer = stage(loop, {"stage": "merged", "issue_id": error_issue["issue_id"]})
    assert answer.status_code == 201, answer.text
    merged = answer.json()["stage"]
    assert (merged["stage"], merged["issue_id"], merged["url"], merged["note"]) == (
        "merged",
        error_issue["issue_id"],
        None,
        None,
    )

    send_clean_after(loop)
    verification = verify(loop)
    assert {v["verdict"] for v in verification["verdicts"]} == {"held"}

    found = loops(loop)
    [recorded] = found["loops"]
    assert recorded["packet_id"] == pid
    assert recorded["status"] == "approved"
    assert recorded["diagnosed_at"] == rfc3339(NOW_NS)
    assert recorded["approved_at"] == rfc3339(APPROVED_NS)
    assert recorded["merged_at"] == rfc3339(MERGED_NS)
    assert recorded["first_held_at"] == rfc3339(VERIFY_NS)
    assert [s["stage"] for s in recorded["stages"]] == ["pr_opened", "merged"]
    assert recorded["stages"] == [pr, merged]
    assert [d["decision"] for d in recorded["decisions"]] == ["approved"]
    assert recorded["verifications"] == [
        {
            "at": rfc3339(VERIFY_NS),
            "verification_id": verification["verification_id"],
            "verdicts": [
                {"issue_id": v["issue_id"], "fingerprint": v["fingerprint"], "verdict": "held"}
                for v in verification["verdicts"]
            ],
        }
    ]
    assert {i["status"] for i in recorded["issues"]} == {"verified"}
    # 2026-03-02 is the Monday of ISO week 10.
    assert found["funnel"] == {
        "loops": 1,
        "to_approval": {"median_seconds": 300.0, "count": 1},
        "to_merge": {"median_seconds": 1200.0, "count": 1},
        "to_first_held": {"median_seconds": 2400.0, "count": 1},
        "verified_fixes_per_week": [{"week": "2026-W10", "count": 1}],
    }
    # The dashboard key reads the same.
    assert loops(loop, key="dashboard") == found

    # The packet page's JSON shows the timeline in time order.
    page = loop.client.get(
        f"/v1/dashboard/packets/{pid}", headers={**loop.project.auth("dashboard"), "accept": "application/json"}
    ).json()
    assert page["stages"] == [pr, merged]
    assert [(e["event"], e["at"]) for e in page["timeline"]] == [
        ("diagnosed", rfc3339(NOW_NS)),
        ("approved", rfc3339(APPROVED_NS)),
        ("pr_opened", rfc3339(PR_NS)),
        ("merged", rfc3339(MERGED_NS)),
        ("verified", rfc3339(VERIFY_NS)),
    ]


def test_funnel_medians_over_several_loops(loop: Loop):
    first = loop.packet["packet_id"]
    approve(loop)  # 300 s after its diagnosis
    loop.clock.set(MERGED_NS)
    assert stage(loop, {"stage": "merged"}).status_code == 201  # 1200 s
    send_clean_after(loop)
    verify(loop)  # first held 2400 s after diagnosis

    second_ns = NOW_NS + 50 * MINUTE_NS
    loop.clock.set(second_ns)
    second = diagnose_answer(loop, since_minutes=120)["packet"]["packet_id"]
    approve(loop, second_ns + 15 * MINUTE_NS, packet_id=second)  # 900 s
    loop.clock.set(second_ns + 75 * MINUTE_NS)
    assert stage(loop, {"stage": "merged"}, packet_id=second).status_code == 201  # 4500 s
    loop.clock.set(second_ns + 80 * MINUTE_NS)
    assert stage(loop, {"stage": "merged"}, packet_id=second).status_code == 201  # a later merge: not the first

    third_ns = NOW_NS + 60 * MINUTE_NS
    loop.clock.set(third_ns)
    third = diagnose_answer(loop, since_minutes=180)["packet"]["packet_id"]
    approve(loop, third_ns + 7 * MINUTE_NS, packet_id=third)  # 420 s
    loop.clock.set(third_ns + 8 * MINUTE_NS)
    assert loop.decide("reject", {"note": "wrong fix"}, packet_id=third).status_code == 200

    # A fourth packet nobody decided on is no loop.
    loop.clock.set(NOW_NS + 70 * MINUTE_NS)
    diagnose_answer(loop, since_minutes=180)

    found = loops(loop)
    assert [x["packet_id"] for x in found["loops"]] == [third, second, first]
    # The rejected packet counts as a loop, not as an approval.
    assert [x["approved_at"] for x in found["loops"]] == [
        None,
        rfc3339(second_ns + 15 * MINUTE_NS),
        rfc3339(APPROVED_NS),
    ]
    assert [d["decision"] for d in found["loops"][0]["decisions"]] == ["approved", "rejected"]
    assert found["funnel"] == {
        "loops": 3,
        "to_approval": {"median_seconds": (300 + 900) / 2, "count": 2},
        "to_merge": {"median_seconds": (1200 + 4500) / 2, "count": 2},
        "to_first_held": {"median_seconds": 2400.0, "count": 1},
        "verified_fixes_per_week": [{"week": "2026-W10", "count": 1}],
    }
    assert [x["packet_id"] for x in loops(loop, limit=2)["loops"]] == [third, second]
    assert loops(loop, limit=1)["funnel"] == found["funnel"]  # the funnel is the project's, not the page's


def test_a_rejected_packet_takes_no_stage(loop: Loop):
    approve(loop)
    loop.clock.set(APPROVED_NS + MINUTE_NS)
    assert loop.decide("reject", {"note": "not this way"}).status_code == 200
    answer = stage(loop, {"stage": "pr_opened", "url": PR_URL})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == {
        "code": "packet_rejected",
        "message": "this packet was rejected: no loop stage can be recorded on it",
    }
    assert stored_stages(loop) == []
    # Approved again (a person changed their mind): stages are taken again.
    approve(loop, APPROVED_NS + 2 * MINUTE_NS)
    assert stage(loop, {"stage": "pr_opened", "url": PR_URL}).status_code == 201


def test_a_rejection_committed_while_a_stage_is_recorded_wins(loop: Loop):
    """The stage's transaction reads the decision under the lock a decision takes, so it cannot slip past one."""
    approve(loop)
    pid = loop.packet["packet_id"]
    engine = loop.server.app.store.project(loop.project.project_id)
    answers: list = []
    with engine.connect() as conn:
        # A rejection being recorded, as store/approvals.decide writes it, not yet committed.
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        decision = {"packet_id": pid, "decision": "rejected", "note": "no", "actor": "dashboard key x"}
        conn.execute(approvals.insert().values(**decision, decided_ns=APPROVED_NS + 1))
        conn.execute(packets.update().where(packets.c.packet_id == pid).values(status="rejected"))
        poster = threading.Thread(target=lambda: answers.append(stage(loop, {"stage": "merged"})))
        poster.start()
        time.sleep(0.5)
        assert poster.is_alive()  # waiting for the decision's transaction
        conn.commit()
    poster.join(30)
    [answer] = answers
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "packet_rejected"
    assert stored_stages(loop) == []


URL_REASON = "url must be an absolute http:// or https:// URL (it is stored, never opened)"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("javascript:alert(document.cookie)", URL_REASON),
        ("JavaScript://github.com/%0aalert(1)", URL_REASON),
        ("file:///etc/passwd", URL_REASON),
        ("ftp://ftp.example.com/patch.diff", URL_REASON),
        ("data:text/html,<script>alert(1)</script>", URL_REASON),
        ("https://", URL_REASON),
        ("github.com/acme/shop/pull/7", URL_REASON),
        ("/v1/dashboard", URL_REASON),
        ("https://github.com/acme shop", "url must not contain spaces or control characters"),
        ("https://github.com/\nacme", "url must not contain spaces or control characters"),
        ("https://github.com:99999/acme", "url is not a valid URL"),
        ("https://[::1/acme", "url is not a valid URL"),
        ("https://github.com/" + "a" * 2030, "url must be at most 2048 characters"),
        ("", "url must be an http(s) URL"),
        (7, "url must be an http(s) URL"),
    ],
)
def test_only_http_urls_are_taken(loop: Loop, url: object, message: str):
    approve(loop)
    answer = stage(loop, {"stage": "pr_opened", "url": url})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == {"code": "bad_request", "message": message}
    assert stored_stages(loop) == []


def test_bad_bodies_are_400_and_store_nothing(loop: Loop):
    approve(loop)
    cases = [
        ({}, "stage is required: issue_opened, pr_opened, merged or deployed"),
        ({"stage": "shipped"}, "stage must be one of issue_opened, pr_opened, merged, deployed"),
        ({"stage": "merged", "status": "done"}, "unknown field(s) status; allowed: issue_id, note, stage, url"),
        ({"stage": "merged", "note": "x" * 4001}, "note must be at most 4000 characters"),
        ({"stage": "merged", "note": 5}, "note must be a string"),
        ({"stage": "merged", "issue_id": 5}, "issue_id must be the issue_id of one of the packet's issues"),
    ]
    for body, message in cases:
        answer = stage(loop, body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"] == {"code": "bad_request", "message": message}
    path = f"/v1/packets/{loop.packet['packet_id']}/stages"
    for raw in (b"[]", b"{", b'"merged"'):
        answer = loop.client.post(path, content=raw, headers=loop.project.auth("agent"))
        assert answer.status_code == 400 and answer.json()["error"]["message"] == "body must be a JSON object"
    answer = loop.client.post(path, content=b" " * (16 * 1024 + 1), headers=loop.project.auth("agent"))
    assert answer.status_code == 413
    # The longest note and URL allowed are taken whole.
    longest = {"stage": "merged", "note": "n" * 4000, "url": "https://github.com/" + "a" * 2029}
    answer = stage(loop, longest)
    assert answer.status_code == 201, answer.text
    assert (answer.json()["stage"]["note"], answer.json()["stage"]["url"]) == (longest["note"], longest["url"])
    assert len(stored_stages(loop)) == 1


def test_unknown_packet_other_project_issue_and_keys(loop: Loop):
    approve(loop)
    body = {"stage": "merged", "url": PR_URL}
    answer = stage(loop, body, packet_id="pkt_000000000000000000000000")
    assert answer.status_code == 404
    assert answer.json()["error"] == {
        "code": "not_found",
        "message": "no packet 'pkt_000000000000000000000000' in this project",
    }
    assert stage(loop, body, packet_id="pkt_%00x").status_code == 404
    other = new_project(loop.server, "other")
    answer = loop.client.post(f"/v1/packets/{loop.packet['packet_id']}/stages", json=body, headers=other.auth("agent"))
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == f"no packet {loop.packet['packet_id']!r} in this project"
    # The other project's loops are its own: none.
    answer = loop.client.get("/v1/loops", headers=other.auth("agent"))
    assert answer.status_code == 200 and answer.json()["loops"] == []
    answer = stage(loop, {**body, "issue_id": "iss_00000000000000000000"})
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == (
        f"no issue 'iss_00000000000000000000' in packet {loop.packet['packet_id']!r}"
    )
    for kind in ("dashboard", "producer"):
        answer = stage(loop, body, key=kind)
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "forbidden"
    assert loop.client.post(f"/v1/packets/{loop.packet['packet_id']}/stages", json=body).status_code == 401
    answer = loop.client.get("/v1/loops", headers=loop.project.auth("producer"))
    assert answer.status_code == 403
    assert loop.client.get("/v1/loops").status_code == 401
    assert stored_stages(loop) == []


@pytest.mark.parametrize("limit", ["0", "101", "-1", "x", "٥", "1.5", ""])
def test_loops_limit_is_bounded(loop: Loop, limit: str):
    answer = loop.client.get("/v1/loops", params={"limit": limit}, headers=loop.project.auth("agent"))
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "limit must be an integer from 1 to 100"


def test_stages_are_append_only(loop: Loop):
    approve(loop)
    loop.clock.set(PR_NS)
    first = stage(loop, {"stage": "pr_opened", "url": PR_URL}).json()["stage"]
    loop.clock.set(PR_NS + MINUTE_NS)
    second = stage(loop, {"stage": "pr_opened", "url": PR_URL}).json()["stage"]
    assert first["stage_id"] != second["stage_id"]
    assert stored_stages(loop) == [first, second]
    path = f"/v1/packets/{loop.packet['packet_id']}/stages"
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        answer = loop.client.request(method, path, json={"stage": "merged"}, headers=loop.project.auth("agent"))
        assert answer.status_code == 405, (method, answer.text)
    for method in ("GET", "PUT", "PATCH", "DELETE", "POST"):
        answer = loop.client.request(method, f"{path}/{first['stage_id']}", headers=loop.project.auth("agent"))
        assert answer.status_code in (404, 405), (method, answer.text)
    assert stored_stages(loop) == [first, second]


def test_memory_after_held_and_after_regressed(loop: Loop):
    issues = {i["signal_type"]: i for i in loop.packet["issues"]}
    assert set(issues) == {"error", "latency"}

    approve(loop)
    # Approved, nothing verified yet: both issues are in flight.
    memory = diagnose_answer(loop, since_minutes=60)["memory"]
    assert memory["new_issues"] == 0  # the same two fingerprints again
    assert memory["in_flight"] == [
        {
            "packet_id": loop.packet["packet_id"],
            "created_at": rfc3339(NOW_NS),
            "issues": [
                {"issue_id": i["issue_id"], "fingerprint": i["fingerprint"], "title": i["title"], "status": "approved"}
                for i in loop.packet["issues"]
            ],
        }
    ]
    assert (memory["verified"], memory["regressed"]) == ([], [])

    send_clean_after(loop)
    verification = verify(loop)
    memory = loop_memory(loop)
    assert memory["in_flight"] == []
    assert sorted(m["issue_id"] for m in memory["verified"]) == sorted(i["issue_id"] for i in issues.values())
    assert memory["verified_total"] == 2 and memory["regressed"] == [] and memory["regressed_total"] == 0
    evidence = {v["issue_id"]: v["evidence_ids"] for v in verification["verdicts"]}
    for item in memory["verified"]:
        assert item["latest_verification"] == {
            "verification_id": verification["verification_id"],
            "packet_id": loop.packet["packet_id"],
            "verdict": "held",
            "verified_at": rfc3339(VERIFY_NS),
            "evidence_ids": evidence[item["issue_id"]],
        }

    # The failure comes back after the fix held: regressed, with the new occurrence as evidence.
    checkout_calls(loop.spans, "recur", NOW_NS + 45 * MINUTE_NS, NOW_NS + 55 * MINUTE_NS, 20, 1, 30_000)
    loop.spans.send(loop.client, loop.project)
    [recurred] = loop.spans.ids_of(loop.project.project_id, "recur-err-")
    regression = verify(loop, NOW_NS + 60 * MINUTE_NS)
    memory = loop_memory(loop)
    assert [m["issue_id"] for m in memory["regressed"]] == [issues["error"]["issue_id"]]
    assert memory["regressed"][0]["latest_verification"]["evidence_ids"] == [recurred]
    assert memory["regressed"][0]["latest_verification"]["verification_id"] == regression["verification_id"]
    assert [m["issue_id"] for m in memory["verified"]] == [issues["latency"]["issue_id"]]


def loop_memory(loop: Loop) -> dict:
    """The memory a diagnosis answers with (diagnosing the next hour, where the test sent nothing new)."""
    answer = diagnose_answer(loop, since_minutes=1)
    assert answer["packet"]["issues"] == []
    return answer["memory"]


def test_diagnose_answers_with_memory_first_and_counts_new_issues(tmp_path: Path):
    with running_loop(tmp_path / "data", traffic) as loop:
        answer = loop.client.post("/v1/runs/diagnose", json={}, headers=loop.project.auth("agent"))
        body = answer.json()
        assert list(body) == ["ok", "memory", "packet"]
        assert body["memory"]["new_issues"] == 0  # the fixture's diagnosis saw both first
        assert body["memory"]["packet_id"] == body["packet"]["packet_id"]
        # The packet is what GET /v1/packets/{id} reads back: memory is next to it, not in it.
        assert "memory" not in body["packet"]
        assert body["packet"] == loop.packet_now(packet_id=body["packet"]["packet_id"])

    with running_loop(tmp_path / "fresh", lambda spans: None) as empty:
        traffic(empty.spans)
        empty.spans.send(empty.client, empty.project)
        memory = diagnose_answer(empty)["memory"]
        assert memory["new_issues"] == 2
        assert memory == {
            "packet_id": memory["packet_id"],
            "new_issues": 2,
            "verified": [],
            "verified_total": 0,
            "regressed": [],
            "regressed_total": 0,
            "in_flight": [],
            "in_flight_truncated": False,
        }


def test_nul_and_odd_text_in_a_stage_round_trip_or_miss(loop: Loop):
    """PostgreSQL text cannot hold NUL: a note keeps it (stored escaped), an issue_id with it is a plain miss."""
    approve(loop)
    answer = stage(loop, {"stage": "deployed", "note": "canary \x00 eu-west \ufffe ok"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["stage"]["note"] == "canary \x00 eu-west \ufffe ok"
    assert stored_stages(loop)[0]["note"] == "canary \x00 eu-west \ufffe ok"
    answer = stage(loop, {"stage": "merged", "issue_id": "iss_\x00"})
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "not_found"
    answer = stage(loop, {"stage": "merged", "url": "https://example.com/\x00"})
    assert answer.status_code == 400, answer.text
    assert len(stored_stages(loop)) == 1
