"""Merging and splitting issues: sticky across diagnoses and verifications, audited, refused precisely.

One project, diagnosed at NOW over the last hour: POST /checkout took 100 calls, 7 of them TimeoutErrors (issue A),
5 ValueErrors (issue B) and 4 KeyErrors (issue C), each its own signature and so its own issue. After the window,
100 more calls carry 2 TimeoutErrors and 1 ValueError. Every expected number below is counted from that traffic.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import make_settings, new_project
from loopdata import CHECKOUT, MINUTE_NS, NOW_NS, Loop, Spans, running_loop
from openapi_schema_validator import OAS31Validator
from sqlalchemy import delete, inspect, select
from test_dashboard import assert_security_headers, check_markup, csrf_of, sign_in

from loopkit_core.diagnose import issue_id
from loopkit_core.model import rfc3339
from loopkit_core.projects import create_project
from loopkit_core.store import migrations
from loopkit_core.store.engines import Store
from loopkit_core.store.schema import issue_merges

APPROVED_NS = NOW_NS + 5 * MINUTE_NS
AFTER_START_NS = NOW_NS + 6 * MINUTE_NS
VERIFY_NS = NOW_NS + 40 * MINUTE_NS
ERRORS = {"a": "TimeoutError", "b": "ValueError", "c": "KeyError"}
XSS_NOTE = "<script>window.__pwned = 1</script> same fault"
SPEC = orjson.loads((Path(__file__).resolve().parent.parent / "loopkit_core" / "static" / "openapi.json").read_bytes())


def documented(name: str, body: object) -> None:
    """Raise unless `body` matches the OpenAPI document's schema `name`."""
    OAS31Validator({"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}).validate(body)


def traffic(spans: Spans) -> None:
    """The window's 100 calls, 20 s apart: 7 TimeoutErrors, 5 ValueErrors, 4 KeyErrors and 84 successes."""
    failing = {"a": {3, 13, 23, 33, 43, 53, 63}, "b": {6, 16, 26, 36, 46}, "c": {8, 18, 28, 38}}
    calls(spans, "before", NOW_NS - 50 * MINUTE_NS, failing)


def calls(spans: Spans, tag: str, start_ns: int, failing: dict[str, set[int]]) -> None:
    """100 POST /checkout calls 20 s apart from start_ns; call i fails with issue k's error when i is in failing[k]."""
    at = {i: k for k, ids in failing.items() for i in ids}
    for i in range(100):
        ts = start_ns + i * 20 * 10**9
        if i in at:
            spans.add(f"{tag}-{at[i]}-{i}", CHECKOUT, ts, 40.0, error=ERRORS[at[i]], order=i)
        else:
            spans.add(f"{tag}-ok-{i}", CHECKOUT, ts, 40.0)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    with running_loop(tmp_path / "data", traffic) as running:
        yield running


def fingerprints(loop: Loop) -> dict[str, str]:
    """a, b, c -> the fingerprint of the first packet's issue of that exception type."""
    by_type = {i["title"].split(" ", 1)[0]: i["fingerprint"] for i in loop.packet["issues"]}
    return {k: by_type[v] for k, v in ERRORS.items()}


def merge(loop: Loop, source: str, body: object, key: str = "dashboard") -> httpx.Response:
    return loop.client.post(f"/v1/issues/{source}/merge", json=body, headers=loop.project.auth(key))


def unmerge(loop: Loop, source: str, body: object = None, key: str = "dashboard") -> httpx.Response:
    kwargs = {"json": body} if body is not None else {}
    return loop.client.post(f"/v1/issues/{source}/unmerge", headers=loop.project.auth(key), **kwargs)


def issue(loop: Loop, key: str, auth: str = "agent") -> dict:
    answer = loop.client.get(f"/v1/issues/{key}", headers=loop.project.auth(auth))
    assert answer.status_code == 200, answer.text
    return answer.json()["issue"]


def telemetry_count(loop: Loop, key: str, until: int = NOW_NS, since_minutes: int = 60) -> int:
    params = {"issue": key, "since_minutes": str(since_minutes), "until": str(until), "limit": "1000"}
    answer = loop.client.get("/v1/telemetry", params=params, headers=loop.project.auth("agent"))
    assert answer.status_code == 200, answer.text
    return len(answer.json()["records"])


def display(key: str) -> str:
    return key[: key.index("_", 3) + 5] + "…"


def error(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["code"]


def test_merged_issues_are_diagnosed_and_verified_as_one_until_unmerged(loop: Loop):
    pid = loop.project.project_id
    fp = fingerprints(loop)
    counts = {i["fingerprint"]: i["count"] for i in loop.packet["issues"]}
    assert (counts[fp["a"]], counts[fp["b"]], counts[fp["c"]]) == (7, 5, 4)
    first_packet = loop.packet
    own = {i["fingerprint"]: i["selector"] for i in first_packet["issues"]}

    loop.clock.set(NOW_NS + MINUTE_NS)
    answer = merge(loop, fp["a"], {"into": fp["b"], "note": "  one fault: the gateway client  "})
    assert answer.status_code == 200, answer.text
    who = f"dashboard key {display(loop.project.dashboard_key)}"
    row = {
        "action": "merge",
        "source": fp["a"],
        "target": fp["b"],
        "requested": fp["b"],
        "note": "one fault: the gateway client",
        "actor": who,
        "created_at": rfc3339(NOW_NS + MINUTE_NS),
    }
    assert answer.json()["merge"] == row
    documented("MergeResponse", answer.json())
    assert answer.json()["issue"]["merged_into"] == fp["b"] and answer.json()["issue"]["root"] == fp["b"]

    # The next diagnosis: one issue with B's identity, 7 + 5 records, evidence from both, first seen at A's first.
    packet = loop.diagnose()
    by_fp = {i["fingerprint"]: i for i in packet["issues"]}
    assert sorted(by_fp) == sorted([fp["b"], fp["c"]])
    merged = by_fp[fp["b"]]
    assert merged["issue_id"] == issue_id(pid, fp["b"])
    assert merged["count"] == 12 and merged["merged_from"] == [fp["a"]] and by_fp[fp["c"]]["merged_from"] == []
    assert merged["title"].startswith("ValueError on POST /checkout")
    assert merged["selector"] == {
        "kind": "signatures",
        "signatures": own[fp["b"]]["signatures"] + own[fp["a"]]["signatures"],
    }
    a_ids = set(loop.spans.ids_of(pid, "before-a-"))
    b_ids = set(loop.spans.ids_of(pid, "before-b-"))
    assert len(a_ids) == 7 and len(b_ids) == 5
    assert set(merged["evidence"]) == a_ids | b_ids
    assert merged["first_seen"] == rfc3339(NOW_NS - 50 * MINUTE_NS + 3 * 20 * 10**9)  # A's first, before B's
    assert merged["last_seen"] == rfc3339(NOW_NS - 50 * MINUTE_NS + 63 * 20 * 10**9)
    # telemetry ?issue= reads the union under B, A's own records under A.
    assert (telemetry_count(loop, fp["b"]), telemetry_count(loop, merged["issue_id"])) == (12, 12)
    assert telemetry_count(loop, fp["a"]) == 7
    # The issue index keeps both tracked, A with its own selector.
    assert issue(loop, fp["a"])["selector"] == own[fp["a"]]
    assert issue(loop, fp["b"], "dashboard")["merged_from"] == [fp["a"]]
    assert issue(loop, fp["b"])["records_selector"] == merged["selector"]
    documented("IssueResponse", loop.client.get(f"/v1/issues/{fp['b']}", headers=loop.project.auth("agent")).json())
    documented("PacketIssue", merged)

    # Verification of the merged packet compares the union's rate: 12 in 100 calls before, 3 in 100 after.
    loop.clock.set(APPROVED_NS)
    approved = loop.decide("approve", {"note": "fix the gateway client"}, packet_id=packet["packet_id"])
    assert approved.status_code == 200, approved.text
    after = Spans()
    after.counter = loop.spans.counter  # fresh trace IDs
    calls(after, "after", AFTER_START_NS, {"a": {10, 50}, "b": {30}})
    after.send(loop.client, loop.project)
    loop.clock.set(VERIFY_NS)
    answer = loop.client.post(
        "/v1/runs/verify", json={"packet_id": packet["packet_id"]}, headers=loop.project.auth("agent")
    )
    assert answer.status_code == 200, answer.text
    verdicts = {v["fingerprint"]: v for v in answer.json()["verification"]["verdicts"]}
    union = verdicts[fp["b"]]
    assert union["issue_id"] == issue_id(pid, fp["b"]) and union["merged_from"] == [fp["a"]]
    assert union["before"] == {"count": 12, "calls": 100, "rate": 0.12}
    assert union["after"] == {"count": 3, "calls": 100, "rate": 0.03, "expected_at_old_rate": 12.0}
    assert union["verdict"] == "improved"
    documented("VerifyResponse", answer.json())
    assert verdicts[fp["c"]]["merged_from"] == [] and verdicts[fp["c"]]["before"]["count"] == 4

    # The packet made before the merge is verified as one issue too (A folded into B, under B's identity).
    answer = loop.client.post(
        "/v1/runs/verify", json={"packet_id": first_packet["packet_id"]}, headers=loop.project.auth("agent")
    )
    assert answer.status_code == 200, answer.text
    verdicts = {v["fingerprint"]: v for v in answer.json()["verification"]["verdicts"]}
    assert sorted(verdicts) == sorted([fp["b"], fp["c"]])
    assert verdicts[fp["b"]]["merged_from"] == [fp["a"]] and verdicts[fp["b"]]["before"]["count"] == 12
    assert verdicts[fp["b"]]["after"]["count"] == 3

    # Unmerge: the next diagnosis has two issues again, each its own; the audit has both rows.
    loop.clock.set(VERIFY_NS + MINUTE_NS)
    answer = unmerge(loop, fp["a"], {"note": "two faults after all"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["merge"] == {
        "action": "unmerge",
        "source": fp["a"],
        "target": fp["b"],
        "requested": None,
        "note": "two faults after all",
        "actor": who,
        "created_at": rfc3339(VERIFY_NS + MINUTE_NS),
    }
    split = loop.diagnose(since_minutes=120)
    counts = {i["fingerprint"]: (i["count"], i["issue_id"], i["merged_from"]) for i in split["issues"]}
    assert counts[fp["a"]] == (9, issue_id(pid, fp["a"]), [])
    assert counts[fp["b"]] == (6, issue_id(pid, fp["b"]), [])
    assert telemetry_count(loop, fp["b"], VERIFY_NS, 120) == 6
    trail = issue(loop, fp["b"])["merges"]
    assert [(r["action"], r["source"], r["target"], r["actor"]) for r in trail] == [
        ("merge", fp["a"], fp["b"], who),
        ("unmerge", fp["a"], fp["b"], who),
    ]
    assert issue(loop, fp["a"])["merges"] == trail and issue(loop, fp["a"])["merged_into"] is None
    # A packet made while merged keeps its union when verified after the unmerge (widened, never narrowed).
    answer = loop.client.post(
        "/v1/runs/verify", json={"packet_id": packet["packet_id"]}, headers=loop.project.auth("agent")
    )
    verdicts = {v["fingerprint"]: v for v in answer.json()["verification"]["verdicts"]}
    assert verdicts[fp["b"]]["before"]["count"] == 12 and verdicts[fp["b"]]["merged_from"] == [fp["a"]]


def test_merging_into_a_merged_issue_merges_into_its_root_and_cycles_are_refused(loop: Loop):
    fp = fingerprints(loop)
    assert merge(loop, fp["b"], {"into": fp["c"]}).status_code == 200
    answer = merge(loop, fp["a"], {"into": fp["b"], "note": "same"})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["merge"]["target"], answer.json()["merge"]["requested"]) == (fp["c"], fp["b"])
    # c's root is c; a and b are in it. Merging c into a (or b) would make a cycle.
    for into in (fp["a"], fp["b"]):
        answer = merge(loop, fp["c"], {"into": into})
        assert error(answer) == (409, "merge_cycle"), answer.text
    answer = merge(loop, fp["a"], {"into": fp["c"]})
    assert error(answer) == (409, "already_merged")
    assert fp["c"] in answer.json()["error"]["message"]
    packet = loop.diagnose()
    [merged] = packet["issues"]
    assert (merged["fingerprint"], merged["count"], merged["merged_from"]) == (fp["c"], 16, sorted([fp["a"], fp["b"]]))
    # Unmerging b takes it out; a, merged into c directly, stays.
    assert unmerge(loop, fp["b"]).status_code == 200
    assert error(unmerge(loop, fp["b"])) == (409, "not_merged")
    by_fp = {i["fingerprint"]: (i["count"], i["merged_from"]) for i in loop.diagnose()["issues"]}
    assert by_fp == {fp["c"]: (11, [fp["a"]]), fp["b"]: (5, [])}
    # The issue index by issue_id as well as by fingerprint.
    assert issue(loop, issue_id(loop.project.project_id, fp["c"]))["merged_from"] == [fp["a"]]


def test_a_source_alone_in_the_window_appears_under_its_target(loop: Loop):
    pid = loop.project.project_id
    fp = fingerprints(loop)
    own = {i["fingerprint"]: i["selector"] for i in loop.packet["issues"]}
    # Calls 49 to 69 only: TimeoutErrors at 53 and 63 (issue A), no ValueError (B) and no KeyError (C).
    until = NOW_NS - 50 * MINUTE_NS + 70 * 20 * 10**9
    # A minute later than the fixture's packet, so this packet is the newest of GET /v1/packets (not a tie).
    loop.clock.set(NOW_NS + MINUTE_NS)
    [before] = loop.diagnose(since_minutes=7, until=until, min_count=1)["issues"]
    assert (before["fingerprint"], before["count"], before["merged_from"]) == (fp["a"], 2, [])
    a_only = loop.client.get("/v1/packets", headers=loop.project.auth("agent")).json()["packets"][0]["packet_id"]
    assert merge(loop, fp["a"], {"into": fp["b"]}).status_code == 200
    packet = loop.diagnose(since_minutes=7, until=until, min_count=1)
    [alone] = packet["issues"]
    assert (alone["fingerprint"], alone["issue_id"], alone["count"], alone["merged_from"]) == (
        fp["b"],
        issue_id(pid, fp["b"]),
        2,
        [fp["a"]],
    )
    assert alone["title"] == next(i["title"] for i in loop.packet["issues"] if i["fingerprint"] == fp["b"])
    assert alone["selector"] == {
        "kind": "signatures",
        "signatures": own[fp["b"]]["signatures"] + own[fp["a"]]["signatures"],
    }
    assert set(alone["evidence"]) == set(loop.spans.ids_of(pid, "before-a-53")) | set(
        loop.spans.ids_of(pid, "before-a-63")
    )
    # The packet's first_seen is the group's earliest, project-wide (A's first record, call 3).
    assert alone["first_seen"] == rfc3339(NOW_NS - 50 * MINUTE_NS + 3 * 20 * 10**9)
    # The target keeps its own selector in the issue tracking; the union is derived when read.
    assert issue(loop, fp["b"])["selector"] == own[fp["b"]]
    assert issue(loop, fp["b"])["records_selector"] == alone["selector"]
    # The packet made before the merge, holding A alone, is verified under B (its identity and title).
    answer = loop.client.post("/v1/runs/verify", json={"packet_id": a_only}, headers=loop.project.auth("agent"))
    assert answer.status_code == 200, answer.text
    [verdict] = answer.json()["verification"]["verdicts"]
    assert (verdict["fingerprint"], verdict["issue_id"], verdict["title"], verdict["merged_from"]) == (
        fp["b"],
        issue_id(pid, fp["b"]),
        alone["title"],
        [fp["a"]],
    )
    assert verdict["before"]["count"] == 2  # A's 2 in that window, B's none: the union's


def test_merges_refuse_bad_input_precisely_and_write_nothing(loop: Loop):
    fp = fingerprints(loop)
    cases: list[tuple[str, object, int, str]] = [
        (fp["a"], {"into": fp["a"]}, 400, "merge_into_itself"),
        (fp["a"], {"into": issue_id(loop.project.project_id, fp["a"])}, 400, "merge_into_itself"),
        (fp["a"], {"into": "0123456789abcdef"}, 404, "not_found"),
        ("0123456789abcdef", {"into": fp["b"]}, 404, "not_found"),
        ("x" * 41, {"into": fp["b"]}, 404, "not_found"),
        (fp["a"], {"into": "a\u0000b"}, 404, "not_found"),
        (fp["a"], {"into": "x" * 5000}, 404, "not_found"),
        (fp["a"], {}, 400, "bad_request"),
        (fp["a"], {"into": 5}, 400, "bad_request"),
        (fp["a"], {"into": [fp["b"]]}, 400, "bad_request"),
        (fp["a"], {"into": ""}, 400, "bad_request"),
        (fp["a"], {"into": fp["b"], "note": 5}, 400, "bad_request"),
        (fp["a"], {"into": fp["b"], "note": "n" * 4001}, 400, "bad_request"),
        (fp["a"], {"into": fp["b"], "by": "me"}, 400, "bad_request"),
        (fp["a"], [fp["b"]], 400, "bad_request"),
    ]
    for source, body, status, code in cases:
        answer = merge(loop, source, body)
        assert error(answer) == (status, code), (source, body, answer.text)
    big = loop.client.post(
        f"/v1/issues/{fp['a']}/merge",
        content=b'{"into": "' + fp["b"].encode() + b'", "note": "' + b"n" * 40_000 + b'"}',
        headers=loop.project.auth("dashboard"),
    )
    assert error(big) == (413, "payload_too_large"), big.text
    broken = loop.client.post(f"/v1/issues/{fp['a']}/merge", content=b"{", headers=loop.project.auth("dashboard"))
    assert broken.status_code == 400
    assert error(unmerge(loop, fp["a"])) == (409, "not_merged")
    assert error(unmerge(loop, fp["a"], {"note": ["x"]})) == (400, "bad_request")
    assert error(unmerge(loop, fp["a"], {"into": fp["b"]})) == (400, "bad_request")
    assert unmerge(loop, "nope").status_code == 404
    assert loop.client.get("/v1/issues/nope", headers=loop.project.auth("agent")).status_code == 404
    with loop.server.app.store.project(loop.project.project_id).connect() as conn:
        assert conn.execute(select(issue_merges)).all() == []
    # A note of exactly 4,000 characters is accepted.
    assert merge(loop, fp["a"], {"into": fp["b"], "note": "n" * 4000}).status_code == 200


def test_only_the_dashboard_key_merges_and_only_its_own_project(loop: Loop):
    fp = fingerprints(loop)
    for key in ("agent", "producer"):
        assert merge(loop, fp["a"], {"into": fp["b"]}, key).status_code == 403
        assert unmerge(loop, fp["a"], key=key).status_code == 403
    assert loop.client.get(f"/v1/issues/{fp['a']}", headers=loop.project.auth("producer")).status_code == 403
    assert loop.client.post(f"/v1/issues/{fp['a']}/merge", json={"into": fp["b"]}).status_code == 401
    # Another project cannot name this project's issues, and its own merges never touch them.
    other = new_project(loop.server, "other")
    headers = other.auth("dashboard")
    answer = loop.client.post(f"/v1/issues/{fp['a']}/merge", json={"into": fp["b"]}, headers=headers)
    assert error(answer) == (404, "not_found")
    assert loop.client.get(f"/v1/issues/{fp['a']}", headers=other.auth("agent")).status_code == 404
    with loop.server.app.store.project(loop.project.project_id).connect() as conn:
        assert conn.execute(select(issue_merges)).all() == []
    assert len(loop.diagnose()["issues"]) == 3


def test_concurrent_merges_never_make_a_cycle_or_a_double_merge(loop: Loop):
    fp = fingerprints(loop)
    for _round in range(3):
        statuses: list[int] = []
        barrier = threading.Barrier(6)

        def attempt(source: str, into: str, barrier: threading.Barrier, statuses: list[int]) -> None:
            with httpx.Client(base_url=loop.server.http_url, timeout=30) as client:
                barrier.wait()
                answer = client.post(
                    f"/v1/issues/{source}/merge", json={"into": into}, headers=loop.project.auth("dashboard")
                )
                statuses.append(answer.status_code)

        pairs = [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")]
        threads = [threading.Thread(target=attempt, args=(fp[s], fp[t], barrier, statuses)) for s, t in pairs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Three issues: at most two merges can hold together (a forest), every other attempt is a 409.
        assert all(s in (200, 409) for s in statuses), statuses
        state = {k: issue(loop, fp[k]) for k in "abc"}
        roots = {state[k]["root"] for k in "abc"}
        assert len(roots) == 1 and statuses.count(200) == 2, (statuses, state)
        root = roots.pop()
        assert state[next(k for k in "abc" if fp[k] == root)]["merged_into"] is None
        [packet_issue] = loop.diagnose()["issues"]
        assert (packet_issue["fingerprint"], packet_issue["count"]) == (root, 16)
        for k in "abc":
            if fp[k] != root:
                assert unmerge(loop, fp[k]).status_code == 200


def test_the_audit_table_is_added_by_a_migration_on_either_backend(tmp_path: Path):
    [step] = [s for s in migrations.STEPS["project"] if s.description.startswith("issue_merges:")]
    settings = make_settings(tmp_path / "data")
    store = Store(settings)
    project_id = create_project(store.control, "merges")["project_id"]
    engine = store.project(project_id)
    schema = store.project_schema(project_id) if settings.database_url else None
    with engine.begin() as conn:
        issue_merges.drop(conn)
        conn.execute(delete(migrations.schema_version).where(migrations.schema_version.c.version >= step.version))
    with engine.connect() as conn:
        assert "issue_merges" not in inspect(conn).get_table_names(schema=schema)
    store.close()
    again = Store(settings)
    try:
        engine = again.project(project_id)
        assert migrations.current_version(engine) == migrations.latest("project")
        with engine.connect() as conn:
            assert "issue_merges" in inspect(conn).get_table_names(schema=schema)
            assert conn.execute(select(issue_merges)).all() == []
    finally:
        again.close()


def test_the_dashboard_issue_page_forms_are_same_site_escaped_and_precise(loop: Loop):
    fp = fingerprints(loop)
    auth = loop.project.auth("dashboard")
    path = f"/v1/dashboard/issues/{fp['a']}"
    page = loop.client.get(path, headers=auth)
    assert page.status_code == 200
    parsed = check_markup(page)
    assert_security_headers(page)
    assert [o.get("value") for o in parsed.all("option")] == ["", *sorted([fp["b"], fp["c"]], key=order(loop))]
    as_json = loop.client.get(path, headers={"accept": "application/json", **auth})
    documented("DashboardIssue", as_json.json())
    assert {c["fingerprint"] for c in as_json.json()["candidates"]} == {fp["b"], fp["c"]}

    with httpx.Client(base_url=loop.server.http_url, timeout=30) as browser:
        assert sign_in(browser, loop.project.dashboard_key).status_code == 303
        token = csrf_of(browser.get(path).text)
        same_site = {"origin": loop.server.http_url}
        refused = [
            browser.post(f"{path}/merge", data={"into": fp["b"]}, headers=same_site),
            browser.post(f"{path}/merge", data={"into": fp["b"], "csrf": token[:-1] + "x"}, headers=same_site),
            browser.post(
                f"{path}/merge", data={"into": fp["b"], "csrf": token}, headers={"origin": "http://evil.example"}
            ),
        ]
        assert [r.status_code for r in refused] == [403, 403, 403]
        # A refused merge shows the page again with the message (400 into itself, 409 a cycle), writing nothing.
        itself = browser.post(f"{path}/merge", data={"into": fp["a"], "csrf": token}, headers=same_site)
        assert itself.status_code == 400 and "cannot be merged into itself" in "".join(check_markup(itself).text)
        done = browser.post(f"{path}/merge", data={"into": fp["b"], "note": XSS_NOTE, "csrf": token}, headers=same_site)
        assert done.status_code == 303 and done.headers["location"] == f"{path}#merges"
        page = browser.get(path)
        check_markup(page)
        assert XSS_NOTE not in page.text and "&lt;script&gt;" in page.text
        target = f"/v1/dashboard/issues/{fp['b']}"
        cycle = browser.post(f"{target}/merge", data={"into": fp["a"], "csrf": token}, headers=same_site)
        assert cycle.status_code == 409 and "would make a cycle" in "".join(check_markup(cycle).text)
        undone = browser.post(f"{path}/unmerge", data={"note": "no", "csrf": token}, headers=same_site)
        assert undone.status_code == 303
    trail = issue(loop, fp["a"])["merges"]
    assert [(m["action"], m["note"]) for m in trail] == [("merge", XSS_NOTE), ("unmerge", "no")]
    for bad in ("%00", "x" * 5000, "iss_%E2%9C%93", "'%3B--", "0123456789abcdef"):
        answer = loop.client.get(f"/v1/dashboard/issues/{bad}", headers=auth)
        assert answer.status_code == 404, bad
        check_markup(answer)
        assert (
            loop.client.post(f"/v1/dashboard/issues/{bad}/merge", data={"into": fp["b"]}, headers=auth).status_code
            == 404
        )


def order(loop: Loop):  # noqa: ANN201 (a sort key)
    """The Issues page's order (most recently seen first, then fingerprint), as the merge form lists targets."""
    rows = loop.client.get(
        "/v1/dashboard/issues", headers={"accept": "application/json", **loop.project.auth("dashboard")}
    )
    ranked = [r["fingerprint"] for r in rows.json()["issues"]]
    return ranked.index
