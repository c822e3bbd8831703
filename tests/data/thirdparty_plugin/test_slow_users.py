"""The slow_users plugin on LoopKit's test bench (the loopkit pytest plugin's fixtures): no server, no sockets."""

from __future__ import annotations


def thumbs(name: str, feedback: str, user: str) -> dict:
    """A user_signal record as an app would send it."""
    return {"type": "user_signal", "name": name, "user_id": user, "attributes": {"feedback": feedback}}


def test_thumbs_down_become_one_issue_per_operation(loopkit_lab):
    records = [thumbs("POST /checkout", "thumbs_down", f"u{i}") for i in range(4)]
    records += [thumbs("POST /checkout", "thumbs_up", "u9"), thumbs("GET /search", "thumbs_down", "u1")]
    ids = loopkit_lab.add(records)

    [issue] = loopkit_lab.diagnose("slow_users", min_count=3)  # GET /search has one thumbs-down: below min_count
    assert issue.count == 4
    assert set(issue.evidence) == set(ids[:4])
    assert issue.selector == {
        "kind": "records",
        "type": "user_signal",
        "name": "POST /checkout",
        "attributes": {"feedback": "thumbs_down"},
    }
    # The count agrees with the records the selector names (what GET /v1/telemetry?issue= lists).
    assert loopkit_lab.window().summary(issue.selector) == (4, issue.first_seen_ns, issue.last_seen_ns)


def test_the_verdict_holds_once_the_thumbs_down_stop(loopkit_lab):
    loopkit_lab.add([thumbs("POST /checkout", "thumbs_down", f"u{i}") for i in range(6)], minutes_ago=90)
    before = loopkit_lab.window(since_minutes=60, until_minutes_ago=60)
    [issue] = loopkit_lab.diagnose("slow_users", before)

    loopkit_lab.add([thumbs("POST /checkout", "thumbs_up", f"u{i}") for i in range(3)], minutes_ago=10)
    after = loopkit_lab.window(since_minutes=30)
    assert loopkit_lab.verify(issue, before, after).verdict == "insufficient_data"  # 3 pieces of feedback only

    loopkit_lab.add([thumbs("POST /checkout", "thumbs_up", f"v{i}") for i in range(5)], minutes_ago=5)
    verdict = loopkit_lab.verify(issue, before, after)  # as POST /v1/runs/verify asks: the first answer wins
    assert (verdict.verdict, verdict.verifier) == ("held", "slow_users")
    assert verdict.after == {"thumbs_down": 0, "feedback": 8, "share": 0.0}

    loopkit_lab.add([thumbs("POST /checkout", "thumbs_down", "w1")], minutes_ago=1)
    again = loopkit_lab.verify(issue, before, after, previous="verified")
    assert again.verdict == "regressed"


def test_the_packet_and_its_handoff(loopkit_lab):
    loopkit_lab.add([thumbs("POST /checkout", "thumbs_down", f"u{i}") for i in range(3)])
    packet = loopkit_lab.packet(diagnosers=["slow_users"])
    assert packet["diagnoser_errors"] == []
    assert [i["title"] for i in packet["issues"]] == ["Users give POST /checkout a thumbs-down (3 in the window)"]
    assert "Users give POST /checkout a thumbs-down" in loopkit_lab.render(packet, "markdown")
