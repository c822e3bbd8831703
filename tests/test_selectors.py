"""Typed selectors: four dataclasses with one tagged JSON form each; the untagged dicts still read the same records."""

from __future__ import annotations

import pytest

from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Issue
from loopkit_core.selectors import RecordIds, Records, Signatures, SlowCalls, parse_selector, selector_json

TYPED = [
    (Signatures(["a1", "b2"]), {"kind": "signatures", "signatures": ["a1", "b2"]}, {"signatures": ["a1", "b2"]}),
    (RecordIds(["rec_1"]), {"kind": "record_ids", "record_ids": ["rec_1"]}, {"record_ids": ["rec_1"]}),
    (
        Records("event", name="upstream", attributes={"http.status_code": 503, "retry": True}),
        {
            "kind": "records",
            "type": "event",
            "name": "upstream",
            "attributes": {"http.status_code": 503, "retry": True},
        },
        {"type": "event", "name": "upstream", "attributes": {"http.status_code": 503, "retry": True}},
    ),
    (Records("user_signal"), {"kind": "records", "type": "user_signal"}, {"type": "user_signal"}),
    (
        SlowCalls("GET /search", service="web", min_duration_ms=250.5),
        {"kind": "slow_calls", "name": "GET /search", "service": "web", "min_duration_ms": 250.5},
        {"name": "GET /search", "service": "web", "min_duration_ms": 250.5},
    ),
]


@pytest.mark.parametrize(("typed", "tagged", "untagged"), TYPED)
def test_each_selector_has_one_tagged_form_and_reads_both(typed, tagged, untagged):
    assert typed.to_json() == tagged
    assert selector_json(typed) == tagged
    assert parse_selector(tagged) == typed
    assert parse_selector(untagged) == typed
    assert selector_json(untagged) == untagged  # an untagged dict is stored as written


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ({"kind": "rows"}, "unknown selector kind 'rows'; one of signatures, record_ids, records, slow_calls"),
        (
            {"kind": "records", "type": "event", "min_duration_ms": 5},
            "a records selector has no key 'min_duration_ms'; its keys: attributes, name, service, type",
        ),
        ({"kind": "signatures", "signatures": "a1"}, "selector signatures must be a list of strings"),
        ({"kind": "slow_calls", "name": "x", "min_duration_ms": -1}, "selector min_duration_ms must be a non-negative"),
        ({"type": "event", "attributes": {"a": [1]}}, "selector attribute 'a' must equal a string, number or boolean"),
        ({"type": "event", "attributes": {'a"b': 1}}, "selector attribute names must be non-empty strings without"),
        ({"everything": True}, r"unknown selector \['everything'\]"),
        ([1], "a selector must be an object, not list"),
    ],
)
def test_a_selector_that_names_no_records_is_refused_with_its_reason(selector, message):
    with pytest.raises(ValueError, match="^" + message):
        parse_selector(selector)


def test_typed_and_untagged_selectors_name_the_same_records(loopkit_lab):
    records = [
        {"type": "event", "name": "upstream", "attributes": {"http.status_code": 503, "retry": True}},
        {"type": "event", "name": "upstream", "attributes": {"http.status_code": "503", "retry": True}},
        {"type": "event", "name": "other", "attributes": {"http.status_code": 503, "retry": True}},
        {"type": "latency", "name": "GET /search", "service": "web", "duration_ms": 300},
        {"type": "latency", "name": "GET /search", "service": "web", "duration_ms": 200},
        {"type": "latency", "name": "GET /search", "service": "api", "duration_ms": 900},
    ]
    ids = loopkit_lab.add(records)
    window = loopkit_lab.window()
    expected = {
        "upstream": [ids[0]],
        "GET /search": [ids[3]],
    }
    for typed, tagged, untagged in TYPED[2:5:2]:
        found = [[r["record_id"] for r in window.sample(s, limit=10)] for s in (typed, tagged, untagged)]
        assert found == [expected[typed.name]] * 3
    assert window.summary(Records("event"))[0] == 3
    assert window.summary(RecordIds(ids[4:]))[0] == 2


class TypedDiagnoser:
    """Reports the 503s of `upstream` with a typed selector."""

    SELECTOR = Records("event", name="upstream", attributes={"http.status_code": 503})

    @hookimpl
    def diagnose(self, window, options):
        count, first, last = window.summary(self.SELECTOR)
        evidence = [r["record_id"] for r in window.sample(self.SELECTOR)]
        return [Issue("up-503", "503 from upstream", "event", count, first, last, self.SELECTOR, evidence)]


def test_a_typed_selector_is_stored_tagged_and_lists_its_records_over_http(loopkit_app):
    loopkit_app.loopkit.plugins.register(TypedDiagnoser(), "typed")
    event = {"type": "event", "name": "upstream", "attributes": {"http.status_code": 503}}
    ids = loopkit_app.post_records([event] * 3 + [{**event, "attributes": {"http.status_code": 200}}])
    packet = loopkit_app.post("/v1/runs/diagnose", {"diagnosers": ["typed"]}).json()["packet"]
    [issue] = packet["issues"]
    assert issue["selector"] == {
        "kind": "records",
        "type": "event",
        "name": "upstream",
        "attributes": {"http.status_code": 503},
    }
    assert issue["count"] == 3
    for url in (issue["records_url"], f"/v1/telemetry?issue={issue['fingerprint']}&since_minutes=60"):
        listed = loopkit_app.client.get(url, headers=loopkit_app.auth()).json()["records"]
        assert sorted(r["record_id"] for r in listed) == sorted(ids[:3])
    # No built-in verifier knows a records selector: the verdict says so instead of guessing.
    verified = loopkit_app.post("/v1/runs/verify", {"packet_id": packet["packet_id"]}).json()
    [verdict] = verified["verification"]["verdicts"]
    assert (verdict["verdict"], verdict["verifier"]) == ("insufficient_data", "")
