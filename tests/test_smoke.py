"""The server starts, answers /healthz, and stores one record end to end."""

from __future__ import annotations


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["ok"] is True


def test_one_record_round_trip(client, project):
    posted = client.post(
        "/v1/traces",
        json={"records": [{"type": "error", "name": "checkout", "message": "boom"}]},
        headers=project.auth("producer"),
    )
    assert posted.status_code == 200, posted.text
    record_id = posted.json()["record_ids"][0]
    read = client.get(f"/v1/records/{record_id}", headers=project.auth("agent"))
    assert read.status_code == 200
    record = read.json()["record"]
    assert (record["type"], record["name"], record["message"], record["status"]) == (
        "error",
        "checkout",
        "boom",
        "error",
    )
