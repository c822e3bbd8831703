"""Fingerprint rules (GET/PUT /v1/grouping/rules): validation, versions, scopes, and grouping at the next diagnosis.

Every test runs a real server over real files (or PostgreSQL with LOOPKIT_TEST_DATABASE_URL); records go in through
POST /v1/traces (the records shape) and every expected number is counted here from the records sent.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from conftest import Project, new_project
from openapi_schema_validator import OAS31Validator

from loopkit_core.fingerprint_rules import MAX_BODY, MAX_PATTERN, MAX_RULES
from loopkit_core.model import MAX_NS
from loopkit_core.server import Running
from loopkit_core.window import Window

MINUTE_NS = 60 * 10**9


def send(client: httpx.Client, project: Project, records: list[dict[str, Any]]) -> list[str]:
    """Post records (the records shape) with the producer key; their IDs."""
    answer = client.post("/v1/traces", json={"records": records}, headers=project.auth())
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == len(records)
    return answer.json()["record_ids"]


def diagnose(client: httpx.Client, project: Project, **body: Any) -> dict[str, Any]:
    answer = client.post("/v1/runs/diagnose", json={"min_count": 1, **body}, headers=project.auth("agent"))
    assert answer.status_code == 200, answer.text
    return answer.json()["packet"]


def put_rules(client: httpx.Client, project: Project, rules: Any, **extra: Any) -> httpx.Response:
    return client.put("/v1/grouping/rules", json={"rules": rules, **extra}, headers=project.auth("dashboard"))


def telemetry_ids(client: httpx.Client, project: Project, issue: dict[str, Any], packet: dict[str, Any]) -> set[str]:
    """Every record ID `GET /v1/telemetry?issue=` lists in the packet's exact window (the issue's records_url)."""
    found: set[str] = set()
    url: str | None = issue["records_url"] + "&limit=1000"
    while url:
        page = client.get(url, headers=project.auth("agent"))
        assert page.status_code == 200, page.text
        found |= {r["record_id"] for r in page.json()["records"]}
        cursor = page.json()["next_cursor"]
        url = f"/v1/telemetry?cursor={cursor}&issue={issue['issue_id']}&limit=1000" if cursor else None
    return found


def failures(now_ns: int) -> list[dict[str, Any]]:
    """Eleven failures of one operation and one message template, three error.type values, one other operation.

    Without rules the signature clusterer makes one issue of the 8 `charge` timeouts (one template) and one of the
    3 `refund` failures.
    """
    out: list[dict[str, Any]] = []
    kinds = ["gateway"] * 4 + ["bank"] * 3 + [1]  # "1" is not 1: the int is its own group
    for i, kind in enumerate(kinds):
        out.append(
            {
                "type": "error",
                "name": "charge",
                "service": "payments",
                "message": f"request {1000 + i} timed out after 30 s",
                "timestamp": now_ns - (20 - i) * MINUTE_NS,
                "attributes": {"error.type": "TimeoutError", "upstream": kind},
            }
        )
    for i in range(3):
        out.append(
            {
                "type": "error",
                "name": "refund",
                "service": "payments",
                "message": f"Refund {i} REJECTED by bank",
                "timestamp": now_ns - (10 - i) * MINUTE_NS,
                "attributes": {"error.type": "RefundError"},
            }
        )
    return out


@pytest.fixture
def other(server: Running) -> Project:
    return new_project(server, "other app")


def test_no_rules_is_version_zero_for_agent_and_dashboard_keys(client: httpx.Client, project: Project):
    for kind in ("agent", "dashboard"):
        answer = client.get("/v1/grouping/rules", headers=project.auth(kind))
        assert answer.status_code == 200
        assert answer.json() == {"ok": True, "version": 0, "rules": [], "updated_at": None, "updated_by": None}
        assert answer.headers["etag"] == '"0"'


def test_scopes_producer_cannot_read_agent_cannot_write(client: httpx.Client, project: Project):
    assert client.get("/v1/grouping/rules", headers=project.auth("producer")).status_code == 403
    rules = {"rules": [{"match": {"type": "error"}, "fingerprint": "all"}]}
    for kind in ("agent", "producer"):
        answer = client.put("/v1/grouping/rules", json=rules, headers=project.auth(kind))
        assert answer.status_code == 403, kind
        assert answer.json()["ok"] is False and answer.json()["error"]["code"] == "forbidden"
    assert client.put("/v1/grouping/rules", json=rules).status_code == 401
    read = client.get("/v1/grouping/rules", headers=project.auth("agent")).json()
    assert read["version"] == 0  # nothing was stored by the refused writes


def test_versions_append_and_the_newest_is_in_force(client: httpx.Client, project: Project, other: Project):
    first = [{"match": {"message": "*timed out*"}, "fingerprint": "timeouts"}]
    second = [{"match": {"name": "refund"}, "fingerprint": "refunds {attributes.error.type}", "title": "Refunds"}]
    before = time.time_ns()
    one = put_rules(client, project, first)
    assert one.status_code == 200, one.text
    body = one.json()
    assert (body["ok"], body["version"], body["rules"]) == (True, 1, first)
    assert body["updated_by"].startswith("dashboard key lk_dash_")
    assert body["updated_at"] >= time.strftime("%Y-%m-%dT", time.gmtime(before / 1e9))
    assert one.headers["etag"] == '"1"'
    two = put_rules(client, project, second)
    assert (two.status_code, two.json()["version"], two.json()["rules"]) == (200, 2, second)
    read = client.get("/v1/grouping/rules", headers=project.auth("agent")).json()
    assert (read["version"], read["rules"]) == (2, second)
    # The other project's rules are its own.
    assert client.get("/v1/grouping/rules", headers=other.auth("agent")).json()["version"] == 0
    # Clearing the rules is a version too.
    cleared = put_rules(client, project, [])
    assert (cleared.json()["version"], cleared.json()["rules"]) == (3, [])


def test_a_stale_version_is_a_409_and_stores_nothing(client: httpx.Client, project: Project):
    rules = [{"match": {"type": "error"}, "fingerprint": "all"}]
    assert put_rules(client, project, rules, version=0).json()["version"] == 1
    stale = put_rules(client, project, rules, version=0)
    assert stale.status_code == 409
    assert stale.json()["error"] == {
        "code": "version_conflict",
        "message": "the rules in force are version 1, not 0: read them and retry",
        "version": 1,
    }
    headers = {**project.auth("dashboard"), "if-match": '"0"'}
    assert client.put("/v1/grouping/rules", json={"rules": rules}, headers=headers).status_code == 409
    headers["if-match"] = '"1"'
    assert client.put("/v1/grouping/rules", json={"rules": rules}, headers=headers).json()["version"] == 2
    headers["if-match"] = "*"
    assert client.put("/v1/grouping/rules", json={"rules": rules}, headers=headers).json()["version"] == 3
    headers["if-match"] = "soon"
    assert client.put("/v1/grouping/rules", json={"rules": rules}, headers=headers).status_code == 400
    assert client.get("/v1/grouping/rules", headers=project.auth("agent")).json()["version"] == 3


LONG = "x" * (MAX_PATTERN + 1)
RULE = {"match": {"type": "error"}, "fingerprint": "{name}"}
# (rules, index named, reason): every refusal names the rule and why.
INVALID = [
    ([RULE, {**RULE, "colour": "red"}], 1, "unknown_field"),
    ([{"match": {"type": "error", "level": "x"}, "fingerprint": "a"}], 0, "unknown_field"),
    ([{"match": {}, "fingerprint": "a"}], 0, "empty_match"),
    ([{"match": {"attributes": {}}, "fingerprint": "a"}], 0, "empty_match"),
    ([{"fingerprint": "a"}], 0, "missing_field"),
    ([{"match": {"type": "error"}}], 0, "missing_field"),
    ([RULE, RULE, {"match": {"type": "error"}, "fingerprint": "{nme}"}], 2, "bad_template_variable"),
    ([{"match": {"type": "error"}, "fingerprint": "{resource.service.version}"}], 0, "bad_template_variable"),
    ([{"match": {"type": "error"}, "fingerprint": "{name}", "title": "{service}"}], 0, "bad_template_variable"),
    ([{"match": {"type": "error"}, "fingerprint": "{name"}], 0, "bad_template"),
    ([{"match": {"message": LONG}, "fingerprint": "a"}], 0, "too_long"),
    ([{"match": {"type": "error"}, "fingerprint": LONG}], 0, "too_long"),
    ([RULE] * (MAX_RULES + 1), None, "too_many_rules"),
    ([{"match": {"type": "span"}, "fingerprint": "a"}], 0, "unknown_type"),
    ([{"match": {"type": 1}, "fingerprint": "a"}], 0, "wrong_type"),
    ([{"match": {"attributes": {"k": [1]}}, "fingerprint": "a"}], 0, "wrong_type"),
    ([{"match": {"attributes": {"k": 2**63}}, "fingerprint": "a"}], 0, "wrong_type"),
    ([{"match": {"attributes": {'k"': 1}}, "fingerprint": "a"}], 0, "wrong_type"),
    ([{"match": {"attributes": []}, "fingerprint": "a"}], 0, "wrong_type"),
    ([{"match": "error", "fingerprint": "a"}], 0, "wrong_type"),
    ([{"match": {"type": "error"}, "fingerprint": ""}], 0, "wrong_type"),
    ([{"match": {"type": "error"}, "fingerprint": ["a"]}], 0, "wrong_type"),
    ([{"match": {"type": "error"}, "fingerprint": "a", "title": 3}], 0, "wrong_type"),
    (["rule"], 0, "not_an_object"),
    ({"match": {}}, None, "wrong_type"),
]


@pytest.mark.parametrize(("rules", "index", "reason"), INVALID, ids=[f"{i}-{r}" for i, (_, _, r) in enumerate(INVALID)])
def test_invalid_rules_are_refused_naming_the_rule_and_reason(
    client: httpx.Client, project: Project, rules: Any, index: int | None, reason: str
):
    answer = put_rules(client, project, rules)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (answer.json()["ok"], error["code"], error["rule"], error["reason"]) == (
        False,
        "invalid_rules",
        index,
        reason,
    )
    assert error["message"].startswith("rules: " if index is None else f"rules[{index}]")
    assert client.get("/v1/grouping/rules", headers=project.auth("agent")).json()["version"] == 0


def test_hostile_bodies_get_precise_4xx(client: httpx.Client, project: Project):
    auth = {**project.auth("dashboard"), "content-type": "application/json"}
    big = b'{"rules": [' + b'{"match": {"type": "error"}, "fingerprint": "a"},' * (MAX_BODY // 40) + b"]}"
    assert client.put("/v1/grouping/rules", content=big, headers=auth).status_code == 413
    assert client.put("/v1/grouping/rules", content=b"[1]", headers=auth).status_code == 400
    assert client.put("/v1/grouping/rules", content=b"{nope", headers=auth).status_code == 400
    assert client.put("/v1/grouping/rules", content=b"", headers=auth).json()["error"]["reason"] == "missing_field"
    unknown = client.put("/v1/grouping/rules", json={"rules": [], "extra": 1}, headers=auth)
    assert (unknown.status_code, unknown.json()["error"]["reason"]) == (400, "unknown_field")
    for version in ("1", -1, True, 1.5):
        answer = client.put("/v1/grouping/rules", json={"rules": [], "version": version}, headers=auth)
        assert answer.status_code == 400, version
    nul = client.put(
        "/v1/grouping/rules", json={"rules": [{"match": {"message": "a\x00"}, "fingerprint": "a"}]}, headers=auth
    )
    assert nul.status_code == 400
    assert client.get("/v1/grouping/rules", headers=project.auth("agent")).json()["version"] == 0


def by_title(packet: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["title"]: i for i in packet["issues"]}


def test_rules_regroup_stored_records_at_the_next_diagnosis(client: httpx.Client, project: Project, other: Project):
    now = time.time_ns()
    ids = send(client, project, failures(now))
    send(client, other, failures(now))
    before = diagnose(client, project)
    assert sorted(i["count"] for i in before["issues"]) == [3, 8]
    charge_before = next(i for i in before["issues"] if i["count"] == 8)
    other_before = diagnose(client, other)

    rules = [
        # Split the charge timeouts by upstream (typed: the int 1 is its own group).
        {
            "match": {"name": "charge", "attributes": {"error.type": "TimeoutError"}},
            "fingerprint": "charge {attributes.upstream}",
            "title": "Charge timed out at {attributes.upstream}",
        },
        # A message glob, case-sensitive: "REJECTED" matches, "rejected" would not.
        {"match": {"message": "*REJECTED*"}, "fingerprint": "rejections"},
    ]
    assert put_rules(client, project, rules).status_code == 200
    after = diagnose(client, project)
    issues = by_title(after)
    assert sorted(issues) == [
        "Charge timed out at 1",
        "Charge timed out at bank",
        "Charge timed out at gateway",
        "rejections",
    ]
    expected = {
        "Charge timed out at gateway": set(ids[0:4]),
        "Charge timed out at bank": set(ids[4:7]),
        "Charge timed out at 1": {ids[7]},
        "rejections": set(ids[8:11]),
    }
    for title, records in expected.items():
        issue = issues[title]
        assert issue["count"] == len(records), title
        assert set(issue["evidence"]) == records
        assert telemetry_ids(client, project, issue, after) == records
        assert issue["selector"]["kind"] == "rule"
        assert issue["diagnoser"] == "signature_clusterer"
        assert issue["status"] == "new"
        # Evidence resolves, and names its rule issue's fingerprint.
        record = client.get(f"/v1/records/{sorted(records)[0]}", headers=project.auth("agent")).json()["record"]
        assert record["fingerprint"] == issue["fingerprint"]
    assert issues["rejections"]["stats"]["values"] == {}
    assert issues["Charge timed out at 1"]["stats"]["values"] == {"attributes.upstream": 1}
    assert issues["Charge timed out at gateway"]["stats"]["span_name"] == "charge"
    assert issues["Charge timed out at gateway"]["stats"]["fingerprint_rendered"] == "charge gateway"
    assert issues["Charge timed out at gateway"]["template"] is None
    # Handoffs and eval specs take rule issues like any other.
    packet_url = f"/v1/packets/{after['packet_id']}"
    for fmt in ("json", "markdown", "prompt"):
        handoff = client.get(f"{packet_url}/handoff", params={"format": fmt}, headers=project.auth("agent"))
        assert handoff.status_code == 200, (fmt, handoff.text)
    evals = client.get(f"{packet_url}/evals", params={"format": "json"}, headers=project.auth("agent"))
    assert evals.status_code == 200, evals.text
    # The old signature issue is not reported: every record of it is a rule's now.
    assert charge_before["fingerprint"] not in {i["fingerprint"] for i in after["issues"]}
    # Fingerprints do not depend on the rule's position or the version: the same rules reordered keep them.
    assert put_rules(client, project, list(reversed(rules))).status_code == 200
    again = by_title(diagnose(client, project))
    assert {t: i["fingerprint"] for t, i in again.items()} == {t: i["fingerprint"] for t, i in issues.items()}
    assert again["rejections"]["status"] == "new"  # the same tracked issue, not a new one each run
    # The other project's grouping is untouched.
    other_after = diagnose(client, other)
    assert sorted(i["fingerprint"] for i in other_after["issues"]) == sorted(
        i["fingerprint"] for i in other_before["issues"]
    )


def test_a_rule_joins_what_signatures_split_and_leaves_the_rest_to_them(client: httpx.Client, project: Project):
    now = time.time_ns()
    records = failures(now)
    # Two more faults of charge with other templates: three signature groups for charge.
    extra = [
        {
            "type": "error",
            "name": "charge",
            "service": "payments",
            "message": "card declined",
            "timestamp": now - i,
            "attributes": {"error.type": "CardError"},
        }
        for i in range(1, 3)
    ]
    ids = send(client, project, records + extra)
    rule = {
        "match": {"name": "refund"},
        "fingerprint": "{exception_type}",
        "title": "Refund failures: {exception_type}",
    }
    assert put_rules(client, project, [rule]).status_code == 200
    packet = diagnose(client, project)
    issues = by_title(packet)
    refund = issues["Refund failures: RefundError"]
    assert (refund["count"], set(refund["evidence"])) == (3, set(ids[8:11]))
    signature_issues = [i for i in packet["issues"] if i["selector"].get("kind") != "rule"]
    assert sorted(i["count"] for i in signature_issues) == [2, 8]
    for issue in signature_issues:
        # Signature issues leave the rules' records out, and say so in their selector.
        assert issue["selector"]["unless"] == [{"name": "refund"}]
        listed = telemetry_ids(client, project, issue, packet)
        assert len(listed) == issue["count"] and not listed & set(ids[8:11])
    assert sum(i["count"] for i in packet["issues"]) == len(records) + len(extra)


def test_a_rule_issue_is_verified_by_its_rate(client: httpx.Client, project: Project):
    now = time.time_ns()
    start = now - 50 * MINUTE_NS
    calls = [
        {"type": "event", "name": "charge", "service": "payments", "timestamp": start + i * MINUTE_NS // 4}
        for i in range(80)
    ]
    faults = [
        {
            "type": "error",
            "name": "charge",
            "service": "payments",
            "message": f"upstream {i} timed out",
            "timestamp": start + i * MINUTE_NS,
            "attributes": {"upstream": "bank"},
        }
        for i in range(20)
    ]
    send(client, project, calls + faults)
    rule = {"match": {"message": "*timed out"}, "fingerprint": "{attributes.upstream}"}
    assert put_rules(client, project, [rule]).status_code == 200
    packet = diagnose(client, project, since_minutes=60)
    [issue] = packet["issues"]
    assert (issue["title"], issue["count"], issue["selector"]["kind"]) == ("bank", 20, "rule")
    approve = client.post(
        f"/v1/packets/{packet['packet_id']}/approve", json={"note": "fix"}, headers=project.auth("dashboard")
    )
    assert approve.status_code == 200
    # After the approval: 100 calls of charge and no timeout; the old rate (20 in 100) predicts 20.
    after = [
        {"type": "event", "name": "charge", "service": "payments", "timestamp": time.time_ns() + i} for i in range(100)
    ]
    send(client, project, after)
    answer = client.post("/v1/runs/verify", json={"packet_id": packet["packet_id"]}, headers=project.auth("agent"))
    assert answer.status_code == 200, answer.text
    [verdict] = answer.json()["verification"]["verdicts"]
    assert verdict["verdict"] == "held", verdict
    assert verdict["before"]["count"] == 20 and verdict["after"]["count"] == 0
    assert verdict["after"]["calls"] == 100


def test_answers_match_the_openapi_schemas(client: httpx.Client, project: Project):
    spec = client.get("/openapi.json").json()

    def validate(name: str, body: Any) -> None:
        OAS31Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]}).validate(body)

    validate("GroupingRules", client.get("/v1/grouping/rules", headers=project.auth("agent")).json())
    rules = [{"match": {"attributes": {"error.type": "TimeoutError", "retry": 2}}, "fingerprint": "t {name}"}]
    validate("GroupingRulesRequest", {"rules": rules, "version": 0})
    saved = put_rules(client, project, rules, version=0)
    validate("GroupingRules", saved.json())
    validate("Error", put_rules(client, project, [{"match": {}, "fingerprint": "a"}]).json())
    validate("Error", put_rules(client, project, rules, version=0).json())


def test_attributes_group_and_match_by_json_type(client: httpx.Client, project: Project):
    """ "1", 1, 1.5, true, null, a list and a missing attribute are seven groups; a match on 1 is not one on true."""
    now = time.time_ns()
    values: list[Any] = ["1", 1, 1.5, True, None, [1, 2]]
    records = [
        {"type": "error", "name": "typed", "message": f"m{i}", "timestamp": now - i * MINUTE_NS, "attributes": {"k": v}}
        for i, v in enumerate(values)
    ]
    records.append({"type": "error", "name": "typed", "message": "m6", "timestamp": now - 6 * MINUTE_NS})
    ids = send(client, project, records)
    rule = {"match": {"name": "typed"}, "fingerprint": "k={attributes.k}"}
    assert put_rules(client, project, [rule]).status_code == 200
    packet = diagnose(client, project)
    got = {json_key(i["stats"]["values"]): (i["title"], i["evidence"]) for i in packet["issues"]}
    assert got == {
        '{"attributes.k":"1"}': ("k=1", [ids[0]]),
        '{"attributes.k":1}': ("k=1", [ids[1]]),
        '{"attributes.k":1.5}': ("k=1.5", [ids[2]]),
        '{"attributes.k":true}': ("k=true", [ids[3]]),
        '{"attributes.k":null}': ("k=", [ids[4]]),
        '{"attributes.k":[1,2]}': ("k=[1,2]", [ids[5]]),
        "{}": ("k=", [ids[6]]),
    }
    assert len({i["fingerprint"] for i in packet["issues"]}) == 7
    # Matching is typed too: true matches only the boolean, 1 only the integer, "1" only the string.
    for value, expected in ((True, ids[3]), (1, ids[1]), ("1", ids[0]), (1.5, ids[2])):
        rules = [{"match": {"attributes": {"k": value}}, "fingerprint": "only"}]
        assert put_rules(client, project, rules).status_code == 200
        [issue] = [i for i in diagnose(client, project)["issues"] if i["title"] == "only"]
        assert issue["evidence"] == [expected], value


def json_key(values: dict[str, Any]) -> str:
    return json.dumps(values, separators=(",", ":"), sort_keys=True)


GLOBS = [
    ("*timed out*", {"a request timed out after 3 s", "timed out"}),
    ("timed out", {"timed out"}),  # the whole message, not a substring
    ("*TIMED*", {"TIMED OUT"}),  # case-sensitive
    ("100% *", {"100% done_[x]\\y"}),  # % and _ are literal, not LIKE wildcards
    ("*_[x]*", {"100% done_[x]\\y"}),  # [ is literal, not a GLOB class
    ("*\\y", {"100% done_[x]\\y"}),  # a backslash is literal
    ("?imed out", {"timed out"}),  # ? is exactly one character
    ("??imed out", set()),
    ("*é*", {"café fermé"}),  # characters, not bytes
    ("caf? ferm?", {"café fermé"}),
]


@pytest.mark.parametrize(("pattern", "expected"), GLOBS, ids=[p for p, _ in GLOBS])
def test_message_globs_match_the_same_on_both_stores(
    server: Running, client: httpx.Client, project: Project, pattern: str, expected: set[str]
):
    messages = ["a request timed out after 3 s", "timed out", "TIMED OUT", "100% done_[x]\\y", "café fermé", ""]
    now = time.time_ns()
    records = [{"type": "error", "name": "g", "message": m, "timestamp": now - i} for i, m in enumerate(messages)]
    send(client, project, records)
    window = Window(project.project_id, 0, MAX_NS, server.app.store.project(project.project_id))
    selector = {"kind": "rule", "parts": [{"match": {"message": pattern}}]}
    assert {r["message"] for r in window.sample(selector, limit=100)} == expected
    assert window.summary(selector)[0] == len(expected)


def test_concurrent_writes_get_200_or_409_never_a_500(client: httpx.Client, project: Project, server: Running):
    rules = [{"match": {"type": "error"}, "fingerprint": "all"}]

    def put(version: int | None) -> int:
        with httpx.Client(base_url=server.http_url, timeout=30) as own:
            body: dict[str, Any] = {"rules": rules} if version is None else {"rules": rules, "version": version}
            return own.put("/v1/grouping/rules", json=body, headers=project.auth("dashboard")).status_code

    with ThreadPoolExecutor(8) as pool:
        guarded = list(pool.map(put, [0] * 8))
    assert sorted(guarded) == [200] + [409] * 7  # one writer replaced version 0; the others were told
    with ThreadPoolExecutor(8) as pool:
        free = list(pool.map(put, [None] * 8))
    assert set(free) <= {200, 409}
    read = client.get("/v1/grouping/rules", headers=project.auth("agent")).json()
    assert read["version"] == 1 + free.count(200)  # every 200 is one stored version, every 409 none


def test_the_rules_page_is_served_and_linked_from_llms_txt(client: httpx.Client):
    page = client.get("/docs/grouping.md")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/markdown")
    assert "\n## Fingerprint rules\n" in page.text
    assert "](/docs/grouping.md)" in client.get("/llms.txt").text
