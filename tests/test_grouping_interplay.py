"""Fingerprint rules and merges together (docs/grouping.md): a rule issue merged into a signature issue and the
reverse, rules changed after a merge, and unmerges; through the server, on SQLite and PostgreSQL.

The traffic is tests/test_issue_merges.py's: POST /checkout took 100 calls in the hour before NOW, 7 of them
TimeoutErrors (A), 5 ValueErrors (B) and 4 KeyErrors (C), each its own signature. The KeyError rule below takes C's
records into a rule issue R; every number below is counted from that traffic.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Project
from loopdata import MINUTE_NS, NOW_NS, Loop, Spans, running_loop
from test_grouping_rules import diagnose, failures, send
from test_grouping_rules import put_rules as put_project_rules
from test_issue_merges import AFTER_START_NS, APPROVED_NS, VERIFY_NS, calls, fingerprints, merge, traffic, unmerge

from loopkit_core.fingerprint_rules import parse_rules
from loopkit_core.model import MAX_NS
from loopkit_core.server import Running
from loopkit_core.window import Window

KEYERROR_RULE = {"match": {"exception_type": "KeyError"}, "fingerprint": "{exception_type} {service}"}
TIMEOUT_RULE = {"match": {"exception_type": "TimeoutError"}, "fingerprint": "timeouts on {name}"}


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    with running_loop(tmp_path / "data", traffic) as running:
        yield running


def put_rules(loop: Loop, rules: list[dict[str, Any]]) -> None:
    answer = loop.client.put("/v1/grouping/rules", json={"rules": rules}, headers=loop.project.auth("dashboard"))
    assert answer.status_code == 200, answer.text


def issues(packet: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["fingerprint"]: i for i in packet["issues"]}


def rule_issue(packet: dict[str, Any]) -> dict[str, Any]:
    (found,) = [i for i in packet["issues"] if i["stats"].get("grouped_by") == "fingerprint_rule"]
    return found


def telemetry_ids(loop: Loop, key: str, since_minutes: int = 60) -> set[str]:
    params = {"issue": key, "since_minutes": str(since_minutes), "until": str(NOW_NS), "limit": "1000"}
    answer = loop.client.get("/v1/telemetry", params=params, headers=loop.project.auth("agent"))
    assert answer.status_code == 200, answer.text
    return {r["record_id"] for r in answer.json()["records"]}


def ids(loop: Loop, *tags: str) -> set[str]:
    return {i for tag in tags for i in loop.spans.ids_of(loop.project.project_id, f"before-{tag}-")}


def verify_after(loop: Loop, packet: dict[str, Any], failing: dict[str, set[int]]) -> dict[str, dict[str, Any]]:
    """Approve the packet, send 100 more calls failing as `failing` says, verify; the verdicts by fingerprint."""
    loop.clock.set(APPROVED_NS)
    approved = loop.decide("approve", {"note": "fix it"}, packet_id=packet["packet_id"])
    assert approved.status_code == 200, approved.text
    after = Spans()
    after.counter = loop.spans.counter  # fresh trace IDs
    calls(after, "after", AFTER_START_NS, failing)
    after.send(loop.client, loop.project)
    loop.clock.set(VERIFY_NS)
    answer = loop.verify({"packet_id": packet["packet_id"]})
    assert answer.status_code == 200, answer.text
    return {v["fingerprint"]: v for v in answer.json()["verification"]["verdicts"]}


def test_a_rule_issue_merged_into_a_signature_issue_is_one_issue_verified_by_its_rate(loop: Loop):
    fp = fingerprints(loop)
    put_rules(loop, [KEYERROR_RULE])
    loop.clock.set(NOW_NS + MINUTE_NS)
    ruled = loop.diagnose()
    r = rule_issue(ruled)["fingerprint"]
    assert {k: i["count"] for k, i in issues(ruled).items()} == {fp["a"]: 7, fp["b"]: 5, r: 4}

    assert merge(loop, r, {"into": fp["b"]}).status_code == 200
    packet = loop.diagnose()
    by_fp = issues(packet)
    assert sorted(by_fp) == sorted([fp["a"], fp["b"]])
    merged = by_fp[fp["b"]]
    assert (merged["count"], merged["merged_from"]) == (9, [r])
    assert merged["selector"]["kind"] == "any"
    assert [s["kind"] for s in merged["selector"]["selectors"]] == ["signatures", "rule"]
    assert set(merged["evidence"]) == ids(loop, "b", "c")
    # ?issue= lists exactly the union's records under the target, the rule issue's own under its fingerprint.
    assert telemetry_ids(loop, fp["b"]) == ids(loop, "b", "c")
    assert telemetry_ids(loop, merged["issue_id"]) == ids(loop, "b", "c")
    assert telemetry_ids(loop, r) == ids(loop, "c")

    # The rate verifier counts the mixed union in both windows against POST /checkout's calls: 9 in 100 before,
    # 1 in 100 after (a KeyError, which the rule takes): improved (Poisson p = e^-9 * 10 = 0.0012).
    verdicts = verify_after(loop, packet, {"c": {50}})
    union = verdicts[fp["b"]]
    assert union["merged_from"] == [r]
    assert union["before"] == {"count": 9, "calls": 100, "rate": 0.09}
    assert union["after"] == {"count": 1, "calls": 100, "rate": 0.01, "expected_at_old_rate": 9.0}
    assert union["verdict"] == "improved" and union["verifier"] == "rate_verifier"

    # Unmerge: the rule issue is its own again (4 before, 1 after in the last two hours).
    loop.clock.set(VERIFY_NS + MINUTE_NS)
    assert unmerge(loop, r).status_code == 200
    split = issues(loop.diagnose(since_minutes=120))
    assert {k: (i["count"], i["merged_from"]) for k, i in split.items()} == {
        fp["a"]: (7, []),
        fp["b"]: (5, []),
        r: (5, []),
    }


def test_a_signature_issue_merged_into_a_rule_issue_keeps_the_rule_issue_identity(loop: Loop):
    fp = fingerprints(loop)
    put_rules(loop, [KEYERROR_RULE])
    loop.clock.set(NOW_NS + MINUTE_NS)
    ruled = rule_issue(loop.diagnose())
    r = ruled["fingerprint"]

    assert merge(loop, fp["a"], {"into": r}).status_code == 200
    packet = loop.diagnose()
    by_fp = issues(packet)
    assert sorted(by_fp) == sorted([r, fp["b"]])
    merged = by_fp[r]
    assert (merged["count"], merged["merged_from"], merged["title"]) == (11, [fp["a"]], ruled["title"])
    assert merged["issue_id"] == ruled["issue_id"] and merged["stats"]["grouped_by"] == "fingerprint_rule"
    assert [s["kind"] for s in merged["selector"]["selectors"]] == ["rule", "signatures"]
    assert telemetry_ids(loop, r) == ids(loop, "a", "c") and telemetry_ids(loop, fp["a"]) == ids(loop, "a")

    # 11 in 100 before, 1 TimeoutError in 100 after: improved (p = e^-11 * 12 = 0.0002).
    verdicts = verify_after(loop, packet, {"a": {10}})
    assert verdicts[r]["before"] == {"count": 11, "calls": 100, "rate": 0.11}
    assert verdicts[r]["after"] == {"count": 1, "calls": 100, "rate": 0.01, "expected_at_old_rate": 11.0}
    assert (verdicts[r]["verdict"], verdicts[r]["merged_from"]) == ("improved", [fp["a"]])
    assert verdicts[fp["b"]]["after"]["count"] == 0 and verdicts[fp["b"]]["merged_from"] == []

    loop.clock.set(VERIFY_NS + MINUTE_NS)
    assert unmerge(loop, fp["a"]).status_code == 200
    split = issues(loop.diagnose(since_minutes=120))
    assert {k: (i["count"], i["merged_from"]) for k, i in split.items()} == {
        fp["a"]: (8, []),
        fp["b"]: (5, []),
        r: (4, []),
    }


def test_rules_changed_after_a_merge_move_records_never_count_them_twice(loop: Loop):
    fp = fingerprints(loop)
    loop.clock.set(NOW_NS + MINUTE_NS)
    assert merge(loop, fp["a"], {"into": fp["b"]}).status_code == 200
    assert issues(loop.diagnose())[fp["b"]]["count"] == 12

    # A rule now takes A's TimeoutErrors: they are the rule issue's, and the merged issue counts B's alone.
    put_rules(loop, [TIMEOUT_RULE])
    packet = loop.diagnose()
    t = rule_issue(packet)["fingerprint"]
    by_fp = issues(packet)
    assert {k: (i["count"], i["merged_from"]) for k, i in by_fp.items()} == {
        fp["b"]: (5, [fp["a"]]),
        t: (7, []),
        fp["c"]: (4, []),
    }
    assert sum(i["count"] for i in packet["issues"]) == packet["failures"] == 16
    assert telemetry_ids(loop, fp["b"]) == ids(loop, "b") and telemetry_ids(loop, t) == ids(loop, "a")
    assert telemetry_ids(loop, fp["a"]) == ids(loop, "a")  # A's own selector, as last tracked

    # To keep them together, merge the rule issue too: 12 again.
    assert merge(loop, t, {"into": fp["b"]}).status_code == 200
    together = issues(loop.diagnose())
    assert (together[fp["b"]]["count"], together[fp["b"]]["merged_from"]) == (12, sorted([fp["a"], t]))
    assert telemetry_ids(loop, fp["b"]) == ids(loop, "a", "b")

    # Rules cleared: A's records are A's again (its fingerprint is sticky), still merged into B; the rule issue,
    # whose template no rule has, names nothing.
    put_rules(loop, [])
    cleared = loop.diagnose()
    assert {k: (i["count"], i["merged_from"]) for k, i in issues(cleared).items()} == {
        fp["b"]: (12, sorted([fp["a"], t])),
        fp["c"]: (4, []),
    }
    assert telemetry_ids(loop, fp["b"]) == ids(loop, "a", "b")


def test_a_merged_rule_issue_whose_template_changes_leaves_its_records_to_the_new_one(loop: Loop):
    fp = fingerprints(loop)
    put_rules(loop, [KEYERROR_RULE])
    loop.clock.set(NOW_NS + MINUTE_NS)
    r = rule_issue(loop.diagnose())["fingerprint"]
    assert merge(loop, r, {"into": fp["b"]}).status_code == 200
    assert issues(loop.diagnose())[fp["b"]]["count"] == 9

    put_rules(loop, [{**KEYERROR_RULE, "fingerprint": "{exception_type} in {service}"}])
    packet = loop.diagnose()
    renamed = rule_issue(packet)["fingerprint"]
    assert renamed != r
    assert {k: (i["count"], i["merged_from"]) for k, i in issues(packet).items()} == {
        fp["a"]: (7, []),
        fp["b"]: (5, [r]),
        renamed: (4, []),
    }
    assert telemetry_ids(loop, fp["b"]) == ids(loop, "b") and telemetry_ids(loop, renamed) == ids(loop, "c")
    # Unmerged, the old rule issue stays without records; B is B.
    assert unmerge(loop, r).status_code == 200
    assert {k: i["count"] for k, i in issues(loop.diagnose()).items()} == {fp["a"]: 7, fp["b"]: 5, renamed: 4}


def test_the_one_pass_grouping_gives_what_the_per_rule_reads_gave(
    client: httpx.Client, project: Project, server: Running
):
    """Window.failure_groups (one scan) answers exactly signature_groups(unless) and rule_groups(rules, limit), also
    when a rule's groups are cut; a diagnosis's counts, evidence and operations equal reads without narrowing."""
    now = time.time_ns()
    records = failures(now)
    records += [
        {
            "type": "tool_failure",
            "name": "charge",
            "service": "agent",
            "message": f"tool {i} failed",
            "timestamp": now - (30 - i) * MINUTE_NS,
            "attributes": {"upstream": "gateway" if i % 2 else 2},
        }
        for i in range(5)
    ]
    records += [{"type": "error", "name": "other", "message": "boom", "timestamp": now - MINUTE_NS}] * 1
    send(client, project, records)
    rules = parse_rules(
        [
            {"match": {"name": "charge"}, "fingerprint": "{attributes.upstream} on {name}"},
            {"match": {"message": "*REJECTED*"}, "fingerprint": "{name}"},
            {"match": {"message": "*REJECTED*", "service": "payments"}, "fingerprint": "never {service}"},
            {"match": {"type": "tool_failure"}, "fingerprint": "{name} {attributes.upstream}"},
        ]
    )
    window = Window(project.project_id, 0, MAX_NS, server.app.store.project(project.project_id))
    for limit in (1000, 2, 1):
        one = window.failure_groups(rules, limit)
        assert [(g.rule, g.type, g.values, g.count, g.first_ns, g.last_ns) for g in one.rule_groups] == [
            (g.rule, g.type, g.values, g.count, g.first_ns, g.last_ns) for g in window.rule_groups(rules, limit)
        ]
        unless = tuple(rule.match for rule in rules)
        assert one.signature_groups == sorted(window.signature_groups(unless), key=lambda g: g.signature)
        assert one.cut == (frozenset({0}) if limit < 3 else frozenset())
    assert len(window.failure_groups(rules).signature_groups) == 1  # "other": no rule matches it

    assert put_project_rules(client, project, [r.to_json() for r in rules]).status_code == 200
    packet = diagnose(client, project, since_minutes=120)
    assert sum(i["count"] for i in packet["issues"]) == packet["failures"] == len(records)
    fresh = Window(project.project_id, packet["window_ns"]["start"], packet["window_ns"]["end"], window.engine)
    for issue in packet["issues"]:
        selector = issue["selector"]
        assert issue["count"] == fresh.summary(selector)[0]
        assert issue["evidence"] == [r["record_id"] for r in fresh.sample(selector, 10)]
        assert issue["stats"]["span_name"] == fresh.groups(selector, by="name", limit=1)[0].value
        assert issue["stats"]["session_count"] == sum(1 for g in fresh.groups(selector, by="session_id") if g.value)
