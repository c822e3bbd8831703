"""Diagnosis through the real server: labelled faults in, one issue per fault out, counts that add up."""

from __future__ import annotations

import random
import time

import pytest

NOW_NS = time.time_ns()


def fault_records(rng: random.Random) -> tuple[list[dict], dict[str, int]]:
    """Records of five labelled faults with heavy variable parts; returns them and the count per fault."""
    makers = {
        "gateway-timeout": lambda: (
            "POST /checkout",
            "TimeoutError",
            f"payment gateway timed out after {rng.randint(1000, 9000)} ms for order ord_{rng.getrandbits(40):x}",
        ),
        "db-refused": lambda: (
            "POST /checkout",
            "ConnectionError",
            f"connection refused by 10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.7:{rng.randint(1024, 65000)}",
        ),
        "db-reset": lambda: (
            "POST /checkout",
            "ConnectionError",
            f"connection reset by 10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.7:{rng.randint(1024, 65000)}",
        ),
        "user-missing": lambda: (
            "GET /profile",
            "KeyError",
            f"user {rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4abc-8def-{rng.getrandbits(48):012x} not found "
            f"in /var/data/shard{rng.randint(1, 9)}/users.db",
        ),
        "user-forbidden": lambda: (
            "GET /profile",
            "PermissionError",
            f"user u{rng.randint(1, 10**6)}@example.com not authorized for 'report-{rng.randint(1, 999)}'",
        ),
    }
    sizes = {"gateway-timeout": 40, "db-refused": 25, "db-reset": 12, "user-missing": 30, "user-forbidden": 7}
    records = []
    for fault, size in sizes.items():
        for _ in range(size):
            name, exc, message = makers[fault]()
            records.append(
                {
                    "type": "error",
                    "name": name,
                    "message": message,
                    "timestamp": NOW_NS - rng.randint(1, 50 * 60) * 10**9,
                    "attributes": {"exception.type": exc, "fault": fault},
                }
            )
    rng.shuffle(records)
    return records, sizes


def post(client, project, records):
    """Post records in the records shape; all must be accepted."""
    response = client.post("/v1/traces", json={"records": records}, headers=project.auth("producer"))
    assert response.status_code == 200 and response.json()["rejected"] == 0, response.text
    return response.json()["record_ids"]


def diagnose(client, project, **body):
    """POST /v1/runs/diagnose with the agent key; the packet."""
    response = client.post("/v1/runs/diagnose", json=body, headers=project.auth("agent"))
    assert response.status_code == 200, response.text
    return response.json()["packet"]


def all_records_of(client, project, issue):
    """Every record of an issue in the packet's window, paging through next_cursor."""
    found, cursor = [], None
    for _ in range(100):
        params = {"issue": issue["issue_id"], "limit": 1000, "since_minutes": 60}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/telemetry", params=params, headers=project.auth("agent")).json()
        found += page["records"]
        cursor = page["next_cursor"]
        if not cursor:
            return found
    raise AssertionError("paging did not end")


def test_one_issue_per_fault_with_exact_counts_and_evidence(client, project):
    records, sizes = fault_records(random.Random(3))
    ids = post(client, project, records)
    fault_of = {rid: r["attributes"]["fault"] for rid, r in zip(ids, records, strict=True)}
    packet = diagnose(client, project, min_count=1)
    assert packet["status"] == "ready_for_issue_diagnosis"
    assert (packet["telemetry_read"], packet["failures"]) == (114, 114)
    assert packet["diagnoser_errors"] == []
    issues = packet["issues"]
    # Ordered by impact (count), one issue per labelled fault, nothing merged, nothing split.
    assert [i["count"] for i in issues] == sorted(sizes.values(), reverse=True)
    by_fault = {}
    for issue in issues:
        members = all_records_of(client, project, issue)
        assert len(members) == issue["count"]
        faults = {fault_of[r["record_id"]] for r in members}
        assert len(faults) == 1, (issue["title"], faults)
        by_fault[faults.pop()] = issue
        # Every evidence ID is a record of this issue, in the window.
        assert set(issue["evidence"]) <= {r["record_id"] for r in members}
        assert issue["evidence"] == issue["evidence_ids"] and len(issue["evidence"]) == min(10, issue["count"])
        for record_id in issue["evidence"][:2]:
            record = client.get(f"/v1/records/{record_id}", headers=project.auth("agent")).json()["record"]
            assert record["fingerprint"] == issue["fingerprint"]
    assert {f: i["count"] for f, i in by_fault.items()} == sizes
    # "connection refused" and "connection reset" differ in one word and stay two issues.
    assert by_fault["db-refused"]["fingerprint"] != by_fault["db-reset"]["fingerprint"]
    assert by_fault["gateway-timeout"]["eval_candidate"] == "post-checkout-timeouterror-v1"
    assert by_fault["gateway-timeout"]["title"].startswith("TimeoutError on POST /checkout: payment gateway timed out")


def test_issues_keep_their_identity_across_runs(client, project):
    records, _ = fault_records(random.Random(4))
    post(client, project, records[:60])
    first = diagnose(client, project, min_count=1)
    post(client, project, records[60:])
    second = diagnose(client, project, min_count=1)
    before = {i["fingerprint"]: i for i in first["issues"]}
    after = {i["fingerprint"]: i for i in second["issues"]}
    assert set(before) <= set(after)
    for fingerprint, issue in before.items():
        assert after[fingerprint]["issue_id"] == issue["issue_id"]
        assert after[fingerprint]["count"] >= issue["count"]
        assert after[fingerprint]["first_seen"] <= issue["first_seen"]
    listed = client.get("/v1/packets", headers=project.auth("agent")).json()["packets"]
    assert [p["packet_id"] for p in listed] == [second["packet_id"], first["packet_id"]]


def test_min_count_max_issues_and_observe_more(client, project):
    records, sizes = fault_records(random.Random(5))
    post(client, project, records)
    packet = diagnose(client, project, min_count=20, max_issues=2)
    assert [i["count"] for i in packet["issues"]] == [40, 30]
    assert packet["truncated"] is True
    assert diagnose(client, project, min_count=41)["status"] == "observe_more"
    assert diagnose(client, project, min_count=41)["issues"] == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"min_count": 0}, "min_count must be an integer from 1"),
        ({"max_issues": 1001}, "max_issues must be an integer from 1 to 1000"),
        ({"since_minutes": -1}, "since_minutes must be greater than 0"),
        ({"diagnosers": ["nope"]}, "unknown diagnoser(s) nope"),
        ({"surprise": 1}, "unknown field(s) surprise"),
        ({"until": "yesterday"}, "until must be RFC 3339"),
    ],
)
def test_bad_diagnose_bodies_are_400(client, project, body, message):
    response = client.post("/v1/runs/diagnose", json=body, headers=project.auth("agent"))
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
