"""POST /v1/runs/verify: per-issue verdicts with their numbers, the after-window, regressions, plugins, the CLI.

One packet, diagnosed at NOW over the last hour, holds a signature issue (POST /checkout: 10 TimeoutErrors in 100
calls, rate 0.1) and a latency issue (GET /search: 40 calls of about 200 ms against a baseline of 120 calls of
about 50 ms). After the packet is approved (NOW + 5 min), the test sends the after-window's traffic with explicit
timestamps, moves the server's clock, and verifies. Every expected number is computed here from the data sent.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopdata import (
    CHECKOUT,
    HOUR_NS,
    MINUTE_NS,
    NOW_NS,
    SEARCH,
    Loop,
    Spans,
    checkout_calls,
    running_loop,
    search_calls,
)

from loopkit_core.model import rfc3339

REPO = Path(__file__).resolve().parent.parent
APPROVED_NS = NOW_NS + 5 * MINUTE_NS
AFTER_END_NS = NOW_NS + 35 * MINUTE_NS  # the after-window's traffic is in [APPROVED_NS, AFTER_END_NS)
VERIFY_NS = NOW_NS + 40 * MINUTE_NS


def verify_traffic(spans: Spans) -> None:
    checkout_calls(spans, "before", NOW_NS - 60 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 100, 10)
    search_calls(spans, "search-baseline", NOW_NS - 7 * HOUR_NS, NOW_NS - HOUR_NS, 120, 50.0)
    search_calls(spans, "search-before", NOW_NS - 60 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 40, 200.0)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    with running_loop(tmp_path / "data", verify_traffic) as running:
        yield running


def issues(loop: Loop) -> dict[str, dict]:
    """The packet's issues by diagnoser."""
    return {i["diagnoser"]: i for i in loop.packet["issues"]}


def approve(loop: Loop, at_ns: int = APPROVED_NS) -> None:
    loop.clock.set(at_ns)
    answer = loop.decide("approve", {"note": "fix the gateway timeout and the slow search"})
    assert answer.status_code == 200, answer.text


def verify(loop: Loop, at_ns: int = VERIFY_NS, **body: object) -> dict:
    loop.clock.set(at_ns)
    answer = loop.verify({"packet_id": loop.packet["packet_id"], **body})
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True
    return answer.json()["verification"]


def verdicts(verification: dict) -> dict[str, dict]:
    """Verdicts by signal type."""
    return {v["signal_type"]: v for v in verification["verdicts"]}


def interpolated(values: list[float], q: float) -> float | None:
    """The q-quantile interpolated between closest ranks, to the microsecond, as detector and verifier report it."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 3)


def test_the_packet_under_test(loop: Loop):
    found = issues(loop)
    assert sorted(found) == ["latency_outliers", "signature_clusterer"]
    errors, latency = found["signature_clusterer"], found["latency_outliers"]
    assert (errors["count"], errors["stats"]["span_name"], errors["stats"]["service"]) == (10, CHECKOUT, "checkout")
    assert (latency["count"], latency["stats"]["window_calls"], latency["stats"]["expected_slow_count"]) == (
        40,
        40,
        2.0,
    )
    assert latency["selector"] == {"name": SEARCH, "service": "checkout", "min_duration_ms": 58.841}
    plugins = loop.client.get("/v1/plugins", headers=loop.project.auth("agent")).json()
    assert plugins["verifiers"] == ["rate_verifier", "latency_verifier", "user_signals_verifier"]  # call order
    builtins = {p["name"]: p for p in plugins["plugins"] if p["builtin"]}
    for name in plugins["verifiers"]:
        module = f"loopkit_plugins.{name}"
        assert builtins[name] == {
            "name": name,
            "module": module,
            "distribution": "loopkit",
            "version": "0.1.0",
            "builtin": True,
            "hooks": ["verify_issue"],
        }


# --- the four scenarios --------------------------------------------------------------------------------------

# scenario -> (checkout calls, checkout errors, [(search calls, base ms), ...]) in the after-window
SCENARIOS = {
    "fix held with plenty of traffic": (100, 0, [(100, 50.0)]),
    "partial fix": (100, 2, [(70, 50.0), (30, 200.0)]),
    "regression": (100, 10, [(100, 200.0)]),
    "no traffic": (0, 0, []),
}
EXPECTED = {  # scenario -> (rate verdict, latency verdict)
    "fix held with plenty of traffic": ("held", "held"),
    "partial fix": ("improved", "improved"),
    "regression": ("regressed", "regressed"),
    "no traffic": ("insufficient_data", "insufficient_data"),
}
STATUS_AFTER = {"held": "verified", "regressed": "regressed", "improved": "approved", "insufficient_data": "approved"}


def send_after(loop: Loop, calls: int, errors: int, search: list[tuple[int, float]]) -> list[float]:
    """The after-window's traffic; the GET /search durations sent."""
    if calls:
        checkout_calls(loop.spans, "after", APPROVED_NS, AFTER_END_NS, calls, errors, first_order=20_000)
    durations: list[float] = []
    for n, (count, base_ms) in enumerate(search):
        durations += search_calls(loop.spans, f"search-after-{n}", APPROVED_NS, AFTER_END_NS, count, base_ms)
    loop.spans.send(loop.client, loop.project)
    return durations


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_verdicts_and_their_numbers(loop: Loop, scenario: str):
    pid = loop.project.project_id
    calls, errors, search = SCENARIOS[scenario]
    approve(loop)
    durations = send_after(loop, calls, errors, search)
    verification = verify(loop)
    assert verification["window_after"] == {"start": rfc3339(APPROVED_NS), "end": rfc3339(VERIFY_NS)}
    assert verification["window_before"] == loop.packet["window"]
    assert verification["verifier_errors"] == []
    rate_verdict, latency_verdict = EXPECTED[scenario]
    found = verdicts(verification)

    # Signature issue: occurrences per call of POST /checkout, before (10 in 100) and after.
    rate = found["error"]
    assert (rate["verdict"], rate["verifier"]) == (rate_verdict, "rate_verifier"), rate["reason"]
    assert rate["before"] == {"count": 10, "calls": 100, "rate": 0.1}
    assert rate["after"] == {
        "count": errors,
        "calls": calls,
        "rate": round(errors / calls, 6) if calls else 0.0,
        "expected_at_old_rate": round(0.1 * calls, 2),
    }
    # New evidence: every failure of the after-window (newest first), never one of the packet's window.
    assert rate["evidence"] == rate["evidence_ids"] == loop.spans.ids_of(pid, "after-err-")[::-1]
    for record_id in rate["evidence"]:
        record = loop.client.get(f"/v1/records/{record_id}", headers=loop.project.auth("agent")).json()["record"]
        assert APPROVED_NS <= _ns(record["timestamp"]) < VERIFY_NS
        assert (record["name"], record["status"]) == (CHECKOUT, "error")
    reasons = {
        "held": "no occurrence in 100 calls; the old rate predicts 10.0",
        "improved": "2 occurrence(s) in 100 calls against 10.0 expected at the old rate (one-sided Poisson "
        "p=0.0028): fewer, but not gone",
        "regressed": "10 occurrence(s) in 100 calls: the rate (0.1000 per call) did not fall significantly from 0.1000",
        "insufficient_data": "0 calls since the fix: the old rate predicts only 0.0 occurrence(s), fewer than 5, so "
        "silence proves nothing",
    }
    assert rate["reason"] == reasons[rate_verdict]

    # Latency issue: the share of calls at or over the threshold (58.841 ms), and the after-window percentiles.
    latency = found["latency"]
    assert (latency["verdict"], latency["verifier"]) == (latency_verdict, "latency_verifier"), latency["reason"]
    assert latency["before"] == {
        "slow_calls": 40,
        "calls": 40,
        "slow_share": 1.0,
        "p95_ms": 234.1,
        "baseline_p95_ms": 58.841,
        "baseline_slow_share": 0.05,
        "threshold_ms": 58.841,
    }
    slow = [d for d in durations if d >= 58.841]
    assert latency["after"] == {
        "slow_calls": len(slow),
        "calls": len(durations),
        "slow_share": round(len(slow) / len(durations), 6) if durations else 0.0,
        "p95_ms": interpolated(durations, 0.95),
        "p50_ms": interpolated(durations, 0.5),
    }
    slowest = sorted(
        ((d, rid) for rid, d in zip(loop.spans.ids_of(pid, "search-after-"), durations, strict=True) if d >= 58.841),
        key=lambda pair: -pair[0],
    )
    assert latency["evidence"] == [rid for _, rid in slowest[:10]]
    numbers = {
        "held": (5, 100),  # the baseline's own share: 5 of 100 calls reach its p95
        "improved": (30 + 4, 100),  # the 30 slow calls, and 4 of the 70 fast ones reach the threshold
        "regressed": (100, 100),
        "insufficient_data": (0, 0),
    }
    assert (len(slow), len(durations)) == numbers[latency_verdict]

    # Stored, listed on the packet, and the issues' lifecycle moved by held and regressed only.
    packet = loop.packet_now()
    assert [v["verification_id"] for v in packet["verifications"]] == [verification["verification_id"]] * 2
    stored = {v["signal_type"]: v for v in packet["verifications"]}
    for kind, verdict in found.items():
        assert stored[kind] == {
            **verdict,
            "verification_id": verification["verification_id"],
            "verified_at": verification["created_at"],
            "window_after": verification["window_after"],
        }
    statuses = {i["signal_type"]: i["status"] for i in packet["issues"]}
    assert statuses == {"error": STATUS_AFTER[rate_verdict], "latency": STATUS_AFTER[latency_verdict]}
    listed = loop.client.get("/v1/packets", headers=loop.project.auth("dashboard")).json()["packets"]
    assert {i["signal_type"]: i["status"] for i in listed[0]["issues"]} == statuses


def _ns(timestamp: str) -> int:
    from loopkit_core.model import parse_rfc3339

    return parse_rfc3339(timestamp)


@pytest.mark.parametrize(("calls", "errors", "verdict"), [(49, 0, "insufficient_data"), (50, 0, "held")])
def test_held_needs_enough_traffic_for_five_expected_occurrences(loop: Loop, calls: int, errors: int, verdict: str):
    approve(loop)
    send_after(loop, calls, errors, [])
    rate = verdicts(verify(loop))["error"]
    assert rate["verdict"] == verdict, rate["reason"]
    assert rate["after"]["expected_at_old_rate"] == round(0.1 * calls, 2)


def test_a_few_failures_in_little_traffic_are_insufficient_data(loop: Loop):
    approve(loop)
    send_after(loop, 30, 1, [(4, 50.0)])
    found = verdicts(verify(loop))
    assert found["error"]["verdict"] == "insufficient_data"
    assert found["error"]["reason"] == "1 occurrence(s) in 30 calls: too little traffic to tell a fall from chance"
    assert len(found["error"]["evidence"]) == 1
    assert found["latency"]["verdict"] == "insufficient_data"
    assert found["latency"]["reason"] == (
        "4 calls since the fix: at the packet's slow share that is 4.0 slow calls, fewer than 5"
    )


# --- which after-window -----------------------------------------------------------------------------------------


def test_the_after_window_starts_at_the_approval(loop: Loop):
    """Failures between the packet and its approval (before the fix could ship) are not held against it."""
    checkout_calls(loop.spans, "pre-approval", NOW_NS + MINUTE_NS, NOW_NS + 4 * MINUTE_NS, 10, 10)
    loop.spans.send(loop.client, loop.project)
    approve(loop)
    send_after(loop, 100, 0, [])
    verification = verify(loop)
    assert verification["window_after"]["start"] == "2026-03-02T10:05:00.000000Z"
    rate = verdicts(verification)["error"]
    assert (rate["verdict"], rate["after"]["count"], rate["after"]["calls"]) == ("held", 0, 100)


def test_without_approval_the_after_window_starts_at_the_packet(loop: Loop):
    checkout_calls(loop.spans, "pre-approval", NOW_NS + MINUTE_NS, NOW_NS + 4 * MINUTE_NS, 10, 10)
    send_after(loop, 100, 0, [])
    verification = verify(loop)
    assert verification["window_after"] == {"start": rfc3339(NOW_NS), "end": rfc3339(VERIFY_NS)}
    rate = verdicts(verification)["error"]
    assert (rate["after"]["count"], rate["after"]["calls"]) == (10, 110)
    assert rate["verdict"] == "regressed"
    # A rejected packet is not a shipped fix either: still from the packet's creation.
    loop.clock.set(VERIFY_NS)
    assert loop.decide("reject", {"note": "not ours"}).status_code == 200
    assert verify(loop)["window_after"]["start"] == rfc3339(NOW_NS)


def test_since_minutes_sets_the_after_window(loop: Loop):
    approve(loop)
    send_after(loop, 100, 10, [])  # failures until AFTER_END_NS (NOW + 35 min)...
    checkout_calls(loop.spans, "late", AFTER_END_NS, NOW_NS + 60 * MINUTE_NS, 60, 0)
    loop.spans.send(loop.client, loop.project)  # ...then 60 clean calls until NOW + 60 min
    verification = verify(loop, at_ns=NOW_NS + 60 * MINUTE_NS, since_minutes=25)
    assert verification["window_after"] == {"start": rfc3339(AFTER_END_NS), "end": rfc3339(NOW_NS + 60 * MINUTE_NS)}
    rate = verdicts(verification)["error"]
    assert (rate["verdict"], rate["after"]["count"], rate["after"]["calls"]) == ("held", 0, 60)
    # A since_minutes reaching back before the packet's end starts at the packet's end: windows never overlap.
    verification = verify(loop, at_ns=NOW_NS + 60 * MINUTE_NS, since_minutes=24 * 60)
    assert verification["window_after"]["start"] == rfc3339(NOW_NS)
    assert verdicts(verification)["error"]["after"]["calls"] == 160


# --- regressions after a fix held ---------------------------------------------------------------------------------


def held(loop: Loop) -> dict:
    """Approve, send a clean after-window, verify: both issues held."""
    approve(loop)
    send_after(loop, 100, 0, [(100, 50.0)])
    verification = verify(loop)
    assert {v["verdict"] for v in verification["verdicts"]} == {"held"}
    assert {i["status"] for i in loop.packet_now()["issues"]} == {"verified"}
    return verification


def recur(loop: Loop, errors: int = 1) -> list[str]:
    """Clean traffic and `errors` TimeoutErrors between NOW + 45 and NOW + 55 min; the failures' record IDs."""
    checkout_calls(loop.spans, "recur", NOW_NS + 45 * MINUTE_NS, NOW_NS + 55 * MINUTE_NS, 20, errors, 30_000)
    loop.spans.send(loop.client, loop.project)
    return loop.spans.ids_of(loop.project.project_id, "recur-err-")


def test_a_recurrence_after_held_is_a_regression_for_verify_then_diagnose(loop: Loop):
    held(loop)
    [recurred] = recur(loop)
    verification = verify(loop, at_ns=NOW_NS + 60 * MINUTE_NS)
    rate = verdicts(verification)["error"]
    # One occurrence in 120 calls would be a clear improvement on the old rate; after held, it is a regression.
    assert rate["verdict"] == "regressed"
    assert rate["reason"] == "the fix had held, and 1 occurrence(s) came back after it"
    assert rate["after"] == {"count": 1, "calls": 120, "rate": round(1 / 120, 6), "expected_at_old_rate": 12.0}
    assert rate["evidence"] == [recurred]
    assert verdicts(verification)["latency"]["verdict"] == "held"
    issue = issues(loop)["signature_clusterer"]
    assert {i["fingerprint"]: i["status"] for i in loop.packet_now()["issues"]}[issue["fingerprint"]] == "regressed"

    # The next diagnosis reports the same issue, as a regression, not as a new issue.
    packet = loop.diagnose(since_minutes=30, min_count=1)
    [again] = packet["issues"]
    assert (again["issue_id"], again["fingerprint"]) == (issue["issue_id"], issue["fingerprint"])
    assert (again["status"], again["regression"], again["count"], again["evidence"]) == (
        "regressed",
        True,
        1,
        [recurred],
    )
    assert again["first_seen"] == issue["first_seen"]  # the issue's history is kept
    listed = loop.client.get("/v1/packets", headers=loop.project.auth("agent")).json()["packets"]
    assert [p["packet_id"] for p in listed] == [packet["packet_id"], loop.packet["packet_id"]]
    assert listed[0]["issues"][0]["status"] == "regressed"


def test_a_recurrence_after_held_is_a_regression_for_diagnose_then_verify(loop: Loop):
    held(loop)
    [recurred] = recur(loop)
    loop.clock.set(NOW_NS + 60 * MINUTE_NS)
    packet = loop.diagnose(since_minutes=30, min_count=1)
    [again] = packet["issues"]
    issue = issues(loop)["signature_clusterer"]
    assert (again["issue_id"], again["status"], again["regression"]) == (issue["issue_id"], "regressed", True)
    # Verifying the first packet afterwards says the same: the fix had held, the failure is back.
    rate = verdicts(verify(loop, at_ns=NOW_NS + 60 * MINUTE_NS))["error"]
    assert rate["verdict"] == "regressed", rate["reason"]
    assert rate["evidence"] == [recurred]


def test_no_recurrence_after_held_stays_verified(loop: Loop):
    held(loop)
    checkout_calls(loop.spans, "clean", NOW_NS + 45 * MINUTE_NS, NOW_NS + 55 * MINUTE_NS, 20, 0)
    loop.spans.send(loop.client, loop.project)
    assert {v["verdict"] for v in verify(loop, at_ns=NOW_NS + 60 * MINUTE_NS)["verdicts"]} == {"held"}
    assert loop.diagnose(since_minutes=30)["issues"] == []
    assert {i["status"] for i in loop.packet_now()["issues"]} == {"verified"}
    assert len(loop.packet_now()["verifications"]) == 4


def test_a_slow_search_after_held_is_a_latency_regression(loop: Loop):
    held(loop)
    durations = search_calls(loop.spans, "search-recur", NOW_NS + 45 * MINUTE_NS, NOW_NS + 55 * MINUTE_NS, 40, 200)
    loop.spans.send(loop.client, loop.project)
    latency = verdicts(verify(loop, at_ns=NOW_NS + 60 * MINUTE_NS))["latency"]
    assert latency["verdict"] == "regressed"
    assert latency["reason"].startswith("the fix had held; now 45 of 140 calls are slow again")
    assert (latency["after"]["slow_calls"], latency["after"]["calls"]) == (5 + len(durations), 140)


# --- plugins, bad requests, keys, the CLI ----------------------------------------------------------------------

THIRD_PARTY = """
from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Verdict


@hookimpl
def verify_issue(issue, before, after, previous):
    if issue["signal_type"] == "latency":
        raise RuntimeError("cannot reach the load balancer metrics")
    if issue["signal_type"] == "error" and previous == "approved":
        count = after.summary(issue["selector"])[0]
        return Verdict("held" if count == 0 else "regressed", "our own rule", {}, {"count": count})
    return None
"""
BAD_ANSWER = """
from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Verdict


@hookimpl
def verify_issue(issue):
    return Verdict("fixed", "not a verdict")
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Two installed verifier plugins (fake distributions with `loopkit` entry points)."""
    path = tmp_path / "site"
    path.mkdir()
    for name, source in (("ourrule", THIRD_PARTY), ("badanswer", BAD_ANSWER)):
        (path / f"loopkit_{name}.py").write_text(source)
        info = path / f"loopkit_{name}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: loopkit-{name}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[loopkit]\n{name} = loopkit_{name}\n")
    monkeypatch.syspath_prepend(str(path))
    yield path
    for name in ("ourrule", "badanswer"):
        sys.modules.pop(f"loopkit_{name}", None)


def test_verifier_plugins_answer_first_and_failures_are_reported(site: Path, tmp_path: Path):
    with running_loop(tmp_path / "data", verify_traffic) as loop:
        listed = loop.client.get("/v1/plugins", headers=loop.project.auth("agent")).json()
        assert listed["load_errors"] == []
        assert sorted(listed["verifiers"][:2]) == ["badanswer", "ourrule"]  # installed plugins first
        assert sorted(listed["verifiers"][2:]) == ["latency_verifier", "rate_verifier", "user_signals_verifier"]
        approve(loop)
        send_after(loop, 100, 0, [(100, 50.0)])
        verification = verify(loop)
        found = verdicts(verification)
        # The error issue: the bad answer is an error, then ourrule's verdict wins over the built-in.
        assert (found["error"]["verdict"], found["error"]["verifier"], found["error"]["after"]) == (
            "held",
            "ourrule",
            {"count": 0},
        )
        # The latency issue: both plugins fail, the built-in still answers.
        assert (found["latency"]["verdict"], found["latency"]["verifier"]) == ("held", "latency_verifier")
        by_kind = issues(loop)
        bad = "TypeError: verify_issue must return a Verdict with one of held, improved, regressed, insufficient_data"
        expected = [
            ("badanswer", by_kind["latency_outliers"]["issue_id"], bad),
            (
                "ourrule",
                by_kind["latency_outliers"]["issue_id"],
                "RuntimeError: cannot reach the load balancer metrics",
            ),
        ]
        if listed["verifiers"].index("badanswer") < listed["verifiers"].index("ourrule"):
            expected.append(("badanswer", by_kind["signature_clusterer"]["issue_id"], bad))  # called before ourrule
        errors = [(e["verifier"], e["issue_id"], e["error"]) for e in verification["verifier_errors"]]
        assert sorted(errors) == sorted(expected)


def test_an_issue_no_verifier_knows_is_insufficient_data(tmp_path: Path):
    with running_loop(tmp_path / "data", verify_traffic, blocked_plugins="rate_verifier") as loop:
        approve(loop)
        send_after(loop, 100, 0, [(100, 50.0)])
        rate = verdicts(verify(loop))["error"]
        assert (rate["verdict"], rate["verifier"]) == ("insufficient_data", "")
        assert rate["reason"] == "no verifier answered for this kind of issue"
        assert (rate["before"], rate["after"], rate["evidence"]) == ({}, {}, [])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "packet_id is required: the packet_id of a stored packet"),
        ({"packet_id": ""}, "packet_id is required: the packet_id of a stored packet"),
        ({"packet_id": 7}, "packet_id is required: the packet_id of a stored packet"),
        ({"packet_id": "pkt_" + "0" * 60}, "packet_id is required: the packet_id of a stored packet"),
        (
            {"packet_id": "PACKET", "since_minutes": 0},
            "since_minutes must be a number greater than 0 and at most 5270400",
        ),
        (
            {"packet_id": "PACKET", "since_minutes": -5},
            "since_minutes must be a number greater than 0 and at most 5270400",
        ),
        (
            {"packet_id": "PACKET", "since_minutes": True},
            "since_minutes must be a number greater than 0 and at most 5270400",
        ),
        (
            {"packet_id": "PACKET", "since_minutes": "60"},
            "since_minutes must be a number greater than 0 and at most 5270400",
        ),
        (
            {"packet_id": "PACKET", "since_minutes": 5270401},
            "since_minutes must be a number greater than 0 and at most 5270400",
        ),
        ({"packet_id": "PACKET", "until": "now"}, "unknown field(s) until; allowed: packet_id, release, since_minutes"),
        (["PACKET"], "body must be a JSON object"),
    ],
)
def test_bad_bodies_are_400(loop: Loop, body, message: str):
    if isinstance(body, dict) and body.get("packet_id") == "PACKET":
        body = {**body, "packet_id": loop.packet["packet_id"]}
    answer = loop.verify(body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == {"code": "bad_request", "message": message}
    assert loop.packet_now()["verifications"] == []


def test_unknown_packet_other_project_and_keys(loop: Loop):
    from conftest import new_project

    answer = loop.verify({"packet_id": "pkt_000000000000000000000000"})
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == "no packet 'pkt_000000000000000000000000' in this project"
    other = new_project(loop.server, "other")
    answer = loop.client.post(
        "/v1/runs/verify", json={"packet_id": loop.packet["packet_id"]}, headers=other.auth("agent")
    )
    assert answer.status_code == 404
    for kind in ("dashboard", "producer"):
        assert loop.verify(key=kind).status_code == 403
    assert loop.client.post("/v1/runs/verify", json={"packet_id": loop.packet["packet_id"]}).status_code == 401
    assert loop.packet_now()["verifications"] == []


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
    command = [sys.executable, "-m", "loopkit_core.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environ, cwd=REPO)


def test_loopkit_verify_prints_the_verification(loop: Loop):
    approve(loop)
    send_after(loop, 100, 2, [(100, 50.0)])
    loop.clock.set(VERIFY_NS)
    pid, url, key = loop.packet["packet_id"], loop.server.http_url, loop.project.agent_key
    result = cli("verify", pid, "--url", url, "--key", key, "--json")
    assert result.returncode == 0, result.stderr
    verification = json.loads(result.stdout)
    assert verification["packet_id"] == pid
    assert {v["signal_type"]: v["verdict"] for v in verification["verdicts"]} == {
        "error": "improved",
        "latency": "held",
    }
    stored = loop.packet_now()["verifications"]
    assert {v["verification_id"] for v in stored} == {verification["verification_id"]}
    # The table: one row per issue, then each verdict's reason.
    table = cli("verify", pid, "--since-minutes", "30", "--url", url, "--key", key)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("ver_") and f"packet {pid}" in lines[0]
    assert lines[0].endswith(f"after {rfc3339(VERIFY_NS - 30 * MINUTE_NS)} → {rfc3339(VERIFY_NS)}")
    assert lines[1].split() == ["issue_id", "verdict", "title"]
    by_issue = {i["issue_id"]: i for i in loop.packet["issues"]}
    rows = {line.split()[0]: line.split()[1] for line in lines[2:4]}
    assert set(rows) == set(by_issue)
    assert all(line.startswith("- iss_") for line in lines[4:6]) and len(lines) == 6
    missing = cli("verify", "pkt_000000000000000000000000", "--url", url, "--key", key)
    assert missing.returncode == 1
    assert missing.stderr == "loopkit: error: 404: no packet 'pkt_000000000000000000000000' in this project\n"


def test_verifying_a_packet_without_issues(tmp_path: Path):
    with running_loop(tmp_path / "data", lambda spans: None) as loop:
        assert (loop.packet["status"], loop.packet["issues"]) == ("observe_more", [])
        verification = verify(loop)
        assert (verification["verdicts"], verification["verifier_errors"]) == ([], [])
        pid, url, key = loop.packet["packet_id"], loop.server.http_url, loop.project.agent_key
        table = cli("verify", pid, "--url", url, "--key", key)
        assert (table.returncode, table.stderr) == (0, "")
        assert table.stdout.splitlines()[1:] == ["the packet has no issues: nothing to verify"]
