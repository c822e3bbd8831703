"""Releases (resource service.version) on issues and packets, and release-aware POST /v1/runs/verify.

The packet (diagnosed at NOW over the last hour) holds one signature issue on POST /checkout: release 2.3.0 served
50 clean calls early in the window, release 2.4.1 then served 100 calls of which 10 failed (rate 10/150 per call).
After approval, a rollout: old 2.4.1 instances keep failing while the new release is clean (or not). Every expected
number is computed here from the data sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopdata import MINUTE_NS, NOW_NS, Loop, Spans, checkout_calls, running_loop

from loopkit_core.model import rfc3339
from loopkit_core.releases import counts_toward, semver_key

APPROVED_NS = NOW_NS + 5 * MINUTE_NS
AFTER_END_NS = NOW_NS + 35 * MINUTE_NS
VERIFY_NS = NOW_NS + 40 * MINUTE_NS
OLD_RATE = 10 / 150  # the packet window's failures per checkout call


def failing_release(spans: Spans) -> None:
    checkout_calls(spans, "before", NOW_NS - 30 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 100, 10)  # sent as 2.4.1


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    with running_loop(tmp_path / "data", failing_release) as running:
        checkout_calls(running.spans, "older", NOW_NS - 60 * MINUTE_NS, NOW_NS - 35 * MINUTE_NS, 50, 0)
        running.spans.send(running.client, running.project, version="2.3.0")
        running.packet = running.diagnose()
        yield running


def rollout(loop: Loop, releases: dict[str, tuple[int, int]]) -> dict[str, list[str]]:
    """After-window traffic: release -> (calls, failures); the record IDs of each release's failures."""
    failures = {}
    for n, (release, (calls, errors)) in enumerate(releases.items()):
        checkout_calls(loop.spans, f"after-{n}", APPROVED_NS, AFTER_END_NS, calls, errors, first_order=20_000 + n)
        failures[release] = loop.spans.ids_of(loop.project.project_id, f"after-{n}-err")
        loop.spans.send(loop.client, loop.project, version=release)
    return failures


def approve_and_verify(loop: Loop, **body: object) -> dict:
    loop.clock.set(APPROVED_NS)
    assert loop.decide("approve", {"note": "ship the gateway timeout fix in 2.5.0"}).status_code == 200
    loop.clock.set(VERIFY_NS)
    answer = loop.verify({"packet_id": loop.packet["packet_id"], **body})
    assert answer.status_code == 200, answer.text
    return answer.json()["verification"]


def test_packets_and_issues_report_their_releases(loop: Loop):
    """The issue occurs only in 2.4.1 ("introduced in 2.4.1"): 2.3.0's 50 calls in the same window never failed."""
    (issue,) = loop.packet["issues"]
    assert issue["count"] == 10
    ids = loop.spans.ids_of(loop.project.project_id, "before-err")
    assert len(ids) == 10
    step = (25 * MINUTE_NS) // 100
    errors_at = [NOW_NS - 30 * MINUTE_NS + i * step for i in range(100) if i in {round(j * 10) for j in range(10)}]
    assert issue["releases"] == {
        "first": "2.4.1",
        "last": "2.4.1",
        "by_release": [
            {"release": "2.4.1", "count": 10, "first_seen": rfc3339(errors_at[0]), "last_seen": rfc3339(errors_at[-1])}
        ],
        "others": 0,
        "without_release": 0,
    }
    # The packet's releases are its issues' records per release: 2.3.0 served the window's start without failing.
    assert loop.packet["releases"] == issue["releases"]
    assert loop.packet_now()["releases"] == loop.packet["releases"]  # stored with the packet
    page = loop.client.get(f"/v1/dashboard/packets/{loop.packet['packet_id']}", headers=loop.project.auth("dashboard"))
    assert '<dt>Releases</dt><dd><span class="mono">2.4.1</span> (10): only in this release</dd>' in page.text


def test_a_rollout_with_release_is_held_and_names_the_old_traffic(loop: Loop):
    rollout(loop, {"2.4.1": (40, 4), "2.5.0": (60, 0), "2.10.0": (40, 0), "2.5.0-rc.1": (10, 1)})
    verification = approve_and_verify(loop, release="2.5.0")
    (verdict,) = verification["verdicts"]
    # 2.5.0 and 2.10.0 count (semantic versions: 2.10.0 follows 2.5.0; the pre-release 2.5.0-rc.1 precedes it).
    assert verdict["verdict"] == "held"
    assert verdict["after"] == {"count": 0, "calls": 100, "rate": 0.0, "expected_at_old_rate": round(OLD_RATE * 100, 2)}
    assert verdict["evidence_ids"] == []
    assert verdict["other_releases"] == {
        "count": 5,
        "by_release": [{"release": "2.4.1", "count": 4}, {"release": "2.5.0-rc.1", "count": 1}],
    }
    assert verdict["reason"].endswith("; 5 occurrence(s) from releases that do not carry the fix were not counted")
    assert verification["release"] == "2.5.0"
    traffic = {t["release"]: (t["records"], t["counted"]) for t in verification["releases_after"]}
    assert traffic == {"2.5.0": (60, True), "2.4.1": (40, False), "2.10.0": (40, True), "2.5.0-rc.1": (10, False)}
    assert verification["new_releases"] == ["2.10.0", "2.5.0", "2.5.0-rc.1"]
    assert verification["release_aware"] is None  # the caller already chose the release
    assert loop.packet_now()["issues"][0]["status"] == "verified"


def test_without_release_the_verdict_reports_the_new_release_and_offers_the_release_aware_answer(loop: Loop):
    failures = rollout(loop, {"2.4.1": (40, 4), "2.5.0": (100, 0)})
    verification = approve_and_verify(loop)
    (verdict,) = verification["verdicts"]
    # The window-based rule, unchanged: 4 failures in 140 calls against 9.33 expected is not a significant fall.
    assert verdict["verdict"] == "regressed"
    assert verdict["after"]["count"] == 4 and verdict["after"]["calls"] == 140
    assert sorted(verdict["evidence_ids"]) == sorted(failures["2.4.1"])
    assert "other_releases" not in verdict
    assert verification["release"] is None
    assert verification["new_releases"] == ["2.5.0"]
    assert {t["release"]: (t["records"], t["counted"]) for t in verification["releases_after"]} == {
        "2.5.0": (100, True),
        "2.4.1": (40, True),
    }
    aware = verification["release_aware"]
    assert aware["release"] == "2.5.0"
    (offered,) = aware["verdicts"]
    assert offered["verdict"] == "held"
    assert offered["after"]["calls"] == 100 and offered["after"]["count"] == 0
    assert offered["other_releases"] == {"count": 4, "by_release": [{"release": "2.4.1", "count": 4}]}
    # The answer of record is the window's: the offered verdict is not stored and does not move the issue.
    stored = loop.packet_now()
    assert stored["issues"][0]["status"] == "regressed"
    assert [v["verdict"] for v in stored["verifications"]] == ["regressed"]


def test_a_fix_that_does_not_hold_in_the_new_release_is_regressed_with_its_evidence(loop: Loop):
    failures = rollout(loop, {"2.4.1": (40, 4), "2.5.0": (100, 10)})
    verification = approve_and_verify(loop, release="2.5.0")
    (verdict,) = verification["verdicts"]
    assert verdict["verdict"] == "regressed"
    assert verdict["after"]["count"] == 10 and verdict["after"]["calls"] == 100
    assert len(failures["2.5.0"]) == 10
    assert sorted(verdict["evidence_ids"]) == sorted(failures["2.5.0"])  # only the new release's failures
    assert verdict["other_releases"] == {"count": 4, "by_release": [{"release": "2.4.1", "count": 4}]}
    assert loop.packet_now()["issues"][0]["status"] == "regressed"


def test_a_release_never_seen_counts_nothing(loop: Loop):
    rollout(loop, {"2.4.1": (40, 4)})
    verification = approve_and_verify(loop, release="9.9.9")
    (verdict,) = verification["verdicts"]
    assert verdict["verdict"] == "insufficient_data"
    assert verdict["after"]["calls"] == 0
    assert verdict["other_releases"]["count"] == 4


@pytest.mark.parametrize("release", ["", "   ", 5, "x" * 201, "1.0\n0", ["1.0.0"]])
def test_a_bad_release_is_400(loop: Loop, release: object):
    answer = loop.verify({"packet_id": loop.packet["packet_id"], "release": release})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith("release must be the service.version carrying the fix")


def test_semantic_version_order():
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11"]
    ordered += ["1.0.0-rc.1", "1.0.0", "v1.0.1", "1.2.0", "1.10.0", "2.0.0+build.7"]
    keys = [semver_key(v) for v in ordered]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # semver.org 2.0.0, rule 11's own example
    assert semver_key("1.0") is None and semver_key("2024.1.5-nightly") is not None
    assert semver_key("1.01.0") is None and semver_key("release-7") is None
    assert counts_toward("1.10.0", "1.9.2") and not counts_toward("1.9.2", "1.10.0")
    assert counts_toward("1.5.0+sha.abc", "1.5.0") and not counts_toward("1.5.0-rc.1", "1.5.0")
    assert counts_toward("release-7", "release-7") and not counts_toward("release-8", "release-7")
    assert not counts_toward(None, "1.0.0")


def test_loopkit_verify_release(loop: Loop):
    rollout(loop, {"2.4.1": (40, 4), "2.5.0": (100, 0)})
    loop.clock.set(APPROVED_NS)
    assert loop.decide("approve", {"note": "ship it in 2.5.0"}).status_code == 200
    loop.clock.set(VERIFY_NS)
    pid, url, key = loop.packet["packet_id"], loop.server.http_url, loop.project.agent_key
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
    command = [sys.executable, "-m", "loopkit_core.cli", "verify", pid, "--url", url, "--key", key]
    released = subprocess.run([*command, "--release", "2.5.0"], capture_output=True, text=True, timeout=60, env=environ)
    assert released.returncode == 0, released.stderr
    assert " held " in released.stdout.splitlines()[2]  # the table row of the one issue
    assert "4 occurrence(s) from releases that do not carry the fix were not counted" in released.stdout
    plain = subprocess.run(command, capture_output=True, text=True, timeout=60, env=environ)
    assert plain.returncode == 0, plain.stderr
    assert "new releases since the packet: 2.5.0" in plain.stdout
    assert "- counting only 2.5.0 and later: " + loop.packet["issues"][0]["issue_id"] + " held" in plain.stdout
