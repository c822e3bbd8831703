"""Outcome attributes in signatures, through the real server: a 404 and a 503 are two issues, and the
upgrade that added them renames no existing issue."""

from __future__ import annotations

import hashlib
import time

import pytest

from loopkit_core.model import Record
from loopkit_plugins import signature_clusterer
from loopkit_plugins.masking import mask

NOW_NS = time.time_ns()


def failures(count: int, status: int | None, start: int = 0, minutes_ago: int = 5) -> list[dict]:
    """`count` failed calls of one route with one message shape, carrying `status` when given."""
    out = []
    for i in range(start, start + count):
        attributes: dict[str, object] = {"http.route": "/api/items/{id}", "exception.type": "HTTPError"}
        if status is not None:
            attributes["http.response.status_code"] = status
        out.append(
            {
                "type": "error",
                "name": "GET /api/items/{id}",
                "message": f"request for item {1000 + i} failed",
                "timestamp": NOW_NS - minutes_ago * 60 * 10**9 - i * 10**6,
                "attributes": attributes,
            }
        )
    return out


def post(client, project, records) -> None:
    """Post records in the records shape; all must be accepted."""
    response = client.post("/v1/traces", json={"records": records}, headers=project.auth("producer"))
    assert response.status_code == 200 and response.json()["rejected"] == 0, response.text


def diagnose(client, project) -> list[dict]:
    """The issues of a diagnosis of the last hour, largest first."""
    response = client.post("/v1/runs/diagnose", json={"min_count": 1}, headers=project.auth("agent"))
    assert response.status_code == 200, response.text
    return response.json()["packet"]["issues"]


def old_key(record: Record) -> str:
    """The signature key as LoopKit made it before outcome attributes: type, service, operation, exception, mask."""
    parts = (record.type, record.service, "/r", record.exception_type or "", mask(record.message))
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()


def record(attributes: dict[str, object], message: str = "request for item 7 failed") -> Record:
    return Record(
        record_id="rec_1",
        ts_ns=1,
        end_ns=2,
        type="error",
        name="GET /r",
        service="shop",
        status="error",
        message=message,
        exception_type="HTTPError",
        attributes={"http.route": "/r", **attributes},
    )


def test_a_record_without_outcome_attributes_keeps_its_key() -> None:
    plain = record({"user.id": "u1"})
    signature = signature_clusterer.record_signature(plain)
    assert signature.key == old_key(plain)
    assert signature.template == "request for item <NUM> failed"


@pytest.mark.parametrize(
    ("attributes", "prefix"),
    [
        ({"http.response.status_code": 404}, "[http 404] "),
        ({"http.status_code": "503"}, "[http 503] "),
        ({"rpc.grpc.status_code": 14}, "[grpc 14] "),
        ({"db.response.status_code": "23505"}, "[db 23505] "),
        ({"error.type": "timeout"}, "[error timeout] "),
        # exception.type is the record's exception type already: nothing to add.
        ({"exception.type": "HTTPError"}, ""),
        # the current name wins over the old one; both name the same thing
        ({"http.response.status_code": 502, "http.status_code": 500, "rpc.grpc.status_code": 2}, "[http 502, grpc 2] "),
        ({"http.response.status_code": "4]04\n"}, "[http 4 04] "),
    ],
)
def test_outcome_attributes_prefix_the_template(attributes: dict[str, object], prefix: str) -> None:
    signature = signature_clusterer.record_signature(record(attributes))
    assert signature.template == prefix + "request for item <NUM> failed"
    assert signature_clusterer.split_status(signature.template) == (
        prefix[1:-2] if prefix else "",
        "request for item <NUM> failed",
    )
    assert (signature.key == old_key(record(attributes))) == (prefix == "")


def test_404_and_503_are_two_issues_with_exact_counts(client, project) -> None:
    post(client, project, failures(30, 404) + failures(12, 503, start=100))
    issues = diagnose(client, project)
    assert [(i["count"], i["template"]) for i in issues] == [
        (30, "[http 404] request for item <NUM> failed"),
        (12, "[http 503] request for item <NUM> failed"),
    ]
    assert "[http 404]" in issues[0]["title"] and "[http 503]" in issues[1]["title"]


def test_the_upgrade_keeps_existing_issues(client, project, monkeypatch) -> None:
    # Before the upgrade: outcome attributes were not part of signatures (status_of said nothing).
    monkeypatch.setattr(signature_clusterer, "status_of", lambda record: "")
    post(client, project, failures(20, 404, minutes_ago=50) + failures(10, 503, start=100, minutes_ago=50))
    before = diagnose(client, project)
    assert [(i["count"], i["template"]) for i in before] == [(30, "request for item <NUM> failed")]
    legacy = before[0]
    monkeypatch.undo()

    # After it: new records carry their status in their signatures. The issue keeps its identity and its
    # old records; of the statuses that join it, the one with more records stays with it, the other is new.
    post(client, project, failures(25, 404, start=200) + failures(8, 503, start=300))
    after = diagnose(client, project)
    assert [(i["count"], i["issue_id"] == legacy["issue_id"]) for i in after] == [(55, True), (8, False)]
    assert after[1]["template"] == "[http 503] request for item <NUM> failed"
    assert after[0]["fingerprint"] == legacy["fingerprint"]

    # Next run, with more of both: both issues keep their identity.
    post(client, project, failures(5, 404, start=400, minutes_ago=1) + failures(40, 503, start=500, minutes_ago=1))
    again = diagnose(client, project)
    assert {i["fingerprint"]: i["count"] for i in again} == {
        legacy["fingerprint"]: 60,
        after[1]["fingerprint"]: 48,
    }
