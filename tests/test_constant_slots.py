"""Constant slots of a signature issue's template: read from one grouped read of its messages when the issue is
small, and never for an issue whose messages are too many to name one (the slot varies)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from conftest import Project

from loopkit_core.server import Running
from loopkit_core.window import Window
from loopkit_plugins import signature_clusterer


def diagnose(client: httpx.Client, project: Project, until: int) -> dict[str, dict[str, Any]]:
    """The issues of a diagnosis of the minute before `until`, by operation."""
    body = {"since_minutes": 1, "until": str(until)}
    answer = client.post("/v1/runs/diagnose", json=body, headers=project.auth("agent"))
    assert answer.status_code == 200, answer.text
    return {i["stats"]["span_name"]: i for i in answer.json()["packet"]["issues"]}


@pytest.mark.parametrize("grouped_at_once", [signature_clusterer.GROUPED_AT_ONCE, 0])
def test_constant_slots_come_from_the_messages_and_many_messages_name_none(
    server: Running,
    client: httpx.Client,
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
    grouped_at_once: int,
) -> None:
    now = time.time_ns() - 10**9
    gateway = "payment gateway timed out after {ms} ms (order {n})"
    records = [
        {"type": "error", "name": "POST /checkout", "timestamp": now - n * 10**6}
        | {"message": gateway.format(ms=3000, n=n)}
        for n in range(12)
    ]
    # 60 different timeouts and orders: more messages than are read to find a constant slot.
    records += [
        {"type": "error", "name": "POST /refund", "timestamp": now - n * 10**6, "message": gateway.format(ms=n, n=n)}
        for n in range(60)
    ]
    answer = client.post("/v1/traces", json={"records": records}, headers=project.auth())
    assert answer.status_code == 200 and answer.json()["accepted"] == 72, answer.text
    monkeypatch.setattr(signature_clusterer, "GROUPED_AT_ONCE", grouped_at_once)
    counted: list[str] = []
    distinct = Window.distinct

    def counting(self: Window, selector: Any, by: str, limit: int) -> int:
        counted.append(by)
        return distinct(self, selector, by, limit)

    monkeypatch.setattr(Window, "distinct", counting)
    issues = diagnose(client, project, now + 1)
    checkout, refund = issues["POST /checkout"]["stats"], issues["POST /refund"]["stats"]
    assert checkout["constant_template"] == "payment gateway timed out after 3000 ms (order <NUM>)"
    assert [s["values"] for s in checkout["constant_slots"]] == [{"3000 ms": 12}]
    assert "constant_template" not in refund and refund["constant_slots"] == []
    # Issues of 12 and 60 records are grouped at once; past the bound their distinct messages are counted first.
    assert counted == ([] if grouped_at_once else ["message", "message"])
