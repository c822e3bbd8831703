"""Agent discovery: /openapi.json documents exactly the app's routes and is valid; /llms.txt is the repo's file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from starlette.routing import Route

from loopkit_core import diagnose
from loopkit_core.app import ROUTES
from loopkit_core.loop import requests as loop_requests

REPO = Path(__file__).resolve().parent.parent
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def spec(client) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def app_routes() -> dict[str, set[str]]:
    """path -> methods of every HTTP route (Starlette adds HEAD to GET routes; OpenAPI leaves it implicit)."""
    routes = {}
    for route in ROUTES:
        assert isinstance(route, Route), route
        routes[route.path] = {m.lower() for m in route.methods or ()} - {"head"}
    return routes


def test_openapi_is_3_1_and_valid(spec):
    assert spec["openapi"].startswith("3.1.")
    validate(spec)  # raises on any structural error (OpenAPI 3.1 schema + semantic checks)


def test_every_route_documented_with_its_methods(spec):
    documented = {path: set(item) & HTTP_METHODS for path, item in spec["paths"].items()}
    assert documented == app_routes()


def test_every_operation_documents_its_errors(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            assert operation.get("operationId"), (method, path)
            needs_key = operation.get("security", spec.get("security")) != []
            if needs_key:
                assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_served_file_is_the_static_file(client):
    served = client.get("/openapi.json").content
    assert served == (REPO / "loopkit_core" / "static" / "openapi.json").read_bytes()


def _validator(spec: dict[str, Any], name: str) -> OAS31Validator:
    # A wrapper whose $ref points into the document's components, so nested $refs resolve.
    return OAS31Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


def test_real_answers_match_the_documented_schemas(client, project, spec):
    """The schemas describe what the server really sends (success and both error shapes)."""
    health = client.get("/healthz").json()
    _validator(spec, "Health").validate(health)

    posted = client.post(
        "/v1/traces",
        json={
            "records": [
                {
                    "type": "error",
                    "name": "POST /checkout",
                    "message": "payment gateway timed out after 3000 ms",
                    "trace_id": "5b8efff798038103d269b633813fc60c",
                    "span_id": "eee19b7ec3c1b174",
                    "attributes": {"exception.type": "TimeoutError", "tags": ["a", 1]},
                },
                {"type": "bogus", "name": "x"},
            ]
        },
        headers=project.auth("producer"),
    )
    assert posted.status_code == 200, posted.text
    _validator(spec, "RecordsResponse").validate(posted.json())

    otlp = client.post("/v1/traces", json={"resourceSpans": []}, headers=project.auth("producer"))
    assert otlp.status_code == 200
    _validator(spec, "OtlpExportTraceServiceResponse").validate(otlp.json())

    page = client.get("/v1/telemetry", params={"limit": 1}, headers=project.auth("agent"))
    assert page.status_code == 200
    _validator(spec, "TelemetryPage").validate(page.json())

    record_id = posted.json()["record_ids"][0]
    one = client.get(f"/v1/records/{record_id}", headers=project.auth("agent"))
    _validator(spec, "RecordResponse").validate(one.json())

    forbidden = client.get("/v1/telemetry", headers=project.auth("producer"))
    assert forbidden.status_code == 403
    _validator(spec, "Error").validate(forbidden.json())

    denied = client.post("/v1/traces", json={"records": []}, headers=project.auth("agent"))
    assert denied.status_code == 403
    _validator(spec, "GoogleRpcStatus").validate(denied.json())


def test_project_answers_match_the_documented_schemas(client, spec):
    _validator(spec, "Contact").validate(client.get("/contact.json").json())

    signup = client.post("/v1/signup", json={"project_name": "docs check"})
    assert signup.status_code == 201, signup.text
    _validator(spec, "ProjectWithKeys").validate(signup.json())

    first = client.post("/v1/provision", json={"project_name": "docs check", "operator": "ci"})
    assert first.status_code == 201, first.text
    _validator(spec, "ProvisionResponse").validate(first.json())
    again = client.post(
        "/v1/provision",
        json={"project_name": "docs check", "operator": "ci"},
        headers={"authorization": f"Bearer {first.json()['agent_key']}"},
    )
    assert again.status_code == 200, again.text
    _validator(spec, "ProvisionResponse").validate(again.json())

    recovered = client.post(
        "/v1/recover", json={"project_id": first.json()["project_id"], "recovery_code": first.json()["recovery_code"]}
    )
    assert recovered.status_code == 200, recovered.text
    _validator(spec, "ProjectWithKeys").validate(recovered.json())


def test_llms_txt_is_the_repository_file(client, server):
    # The repository's file, with this server's URLs in place of the defaults and a line naming them.
    response = client.get("/llms.txt")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    base, grpc = server.settings.base_url(), server.settings.grpc_endpoint()
    head, summary, rest = (REPO / "llms.txt").read_text().split("\n\n", 2)
    here = f"This server: HTTP API and OTLP/HTTP at `{base}`, OTLP/gRPC at `{grpc}`; quickstart: {base}/quickstart.md"
    expected = "\n\n".join([head, summary, here, rest])
    expected = expected.replace("(default `http://127.0.0.1:4318`)", f"(on this server `{base}`)")
    assert response.text == expected.replace("on port 4317 (default)", f"at `{grpc}` on this server")


def test_llms_txt_format(client):
    """llms.txt format: an H1 first, then a blockquote summary, then H2 sections of markdown links."""
    lines = client.get("/llms.txt").text.splitlines()
    content = [line for line in lines if line.strip()]
    assert content[0].startswith("# ")
    assert content[1].startswith("> ")
    assert sum(line.startswith("# ") for line in lines) == 1
    sections = [i for i, line in enumerate(lines) if line.startswith("## ")]
    assert sections
    links = [line for line in lines[sections[0] :] if line.startswith("- [")]
    assert any("](/openapi.json)" in line for line in links)


def test_the_diagnose_body_schema_is_the_code(spec):
    """Fields, defaults and bounds of DiagnoseRequest are the ones POST /v1/runs/diagnose applies."""
    schema = spec["components"]["schemas"]["DiagnoseRequest"]
    assert set(schema["properties"]) == loop_requests.DIAGNOSE_FIELDS
    defaults = diagnose.DiagnoseRequest()
    for field in ("since_minutes", "min_count", "max_issues"):
        assert schema["properties"][field]["default"] == getattr(defaults, field), field
    assert schema["properties"]["max_issues"]["maximum"] == diagnose.MAX_ISSUES
    packet = spec["components"]["schemas"]["PacketIssue"]["properties"]
    assert packet["signal_type"]["enum"] == list(diagnose.ISSUE_SIGNAL_TYPES)
    assert packet["severity"]["enum"] == list(diagnose.SEVERITIES)


def test_diagnosis_answers_match_the_documented_schemas(client, project, spec):
    """POST /v1/runs/diagnose, GET /v1/packets[/{id}], GET /v1/plugins and ?issue= answer as documented."""
    records = [
        {"type": "error", "name": "POST /checkout", "message": f"payment gateway timed out after {3000 + i} ms"}
        for i in range(4)
    ]
    posted = client.post("/v1/traces", json={"records": records}, headers=project.auth("producer"))
    assert posted.json()["accepted"] == 4
    body = {"since_minutes": 30, "min_count": 2, "max_issues": 5, "diagnosers": ["signature_clusterer"]}
    _validator(spec, "DiagnoseRequest").validate(body)
    ran = client.post("/v1/runs/diagnose", json=body, headers=project.auth("agent"))
    assert ran.status_code == 200, ran.text
    _validator(spec, "PacketResponse").validate(ran.json())
    packet = ran.json()["packet"]
    assert set(packet) == set(spec["components"]["schemas"]["Packet"]["required"])
    [issue] = packet["issues"]
    assert set(issue) == set(spec["components"]["schemas"]["PacketIssue"]["required"])
    assert issue["count"] == 4

    empty = client.post("/v1/runs/diagnose", headers=project.auth("agent"))  # no body: every default
    assert empty.status_code == 200, empty.text
    _validator(spec, "PacketResponse").validate(empty.json())

    listed = client.get("/v1/packets", params={"limit": 5}, headers=project.auth("dashboard"))
    assert listed.status_code == 200
    _validator(spec, "PacketList").validate(listed.json())
    assert [p["packet_id"] for p in listed.json()["packets"]] == [
        empty.json()["packet"]["packet_id"],
        packet["packet_id"],
    ]
    one = client.get(f"/v1/packets/{packet['packet_id']}", headers=project.auth("agent"))
    _validator(spec, "PacketResponse").validate(one.json())
    missing = client.get("/v1/packets/pkt_000000000000000000000000", headers=project.auth("agent"))
    assert missing.status_code == 404
    _validator(spec, "Error").validate(missing.json())

    plugins = client.get("/v1/plugins", headers=project.auth("agent"))
    assert plugins.status_code == 200
    _validator(spec, "PluginsResponse").validate(plugins.json())

    page = client.get(issue["records_url"], headers=project.auth("agent"))
    _validator(spec, "TelemetryPage").validate(page.json())
    assert sorted(r["record_id"] for r in page.json()["records"]) == sorted(posted.json()["record_ids"])
    unknown = client.get("/v1/telemetry", params={"issue": "iss_nope"}, headers=project.auth("agent"))
    assert unknown.status_code == 404
    _validator(spec, "Error").validate(unknown.json())

    bad = client.post("/v1/runs/diagnose", json={"max_issues": 1001}, headers=project.auth("agent"))
    assert bad.status_code == 400
    _validator(spec, "Error").validate(bad.json())
    forbidden = client.post("/v1/runs/diagnose", json={}, headers=project.auth("dashboard"))
    assert forbidden.status_code == 403
    _validator(spec, "Error").validate(forbidden.json())


def test_the_verify_and_decision_bodies_are_the_code(spec):
    """Fields and bounds of the verify and approve/reject bodies are the ones the routes apply."""
    verify = spec["components"]["schemas"]["VerifyRequest"]
    assert set(verify["properties"]) == loop_requests.VERIFY_FIELDS and verify["required"] == ["packet_id"]
    assert verify["properties"]["since_minutes"]["maximum"] == loop_requests.MAX_SINCE_MINUTES
    note = spec["components"]["schemas"]["DecisionRequest"]["properties"]["note"]
    assert note["maxLength"] == loop_requests.MAX_NOTE


def test_handoff_approval_and_verification_answers_match_the_documented_schemas(client, project, spec):
    """GET .../handoff in every built-in format, approve/reject, POST /v1/runs/verify and the packet afterwards."""
    records = [
        {"type": "error", "name": "POST /checkout", "message": f"payment gateway timed out after {3000 + i} ms"}
        for i in range(4)
    ] + [{"type": "event", "name": "POST /checkout"} for _ in range(20)]
    assert client.post("/v1/traces", json={"records": records}, headers=project.auth("producer")).status_code == 200
    packet = client.post("/v1/runs/diagnose", json={}, headers=project.auth("agent")).json()["packet"]
    assert len(packet["issues"]) == 1
    path = f"/v1/packets/{packet['packet_id']}"

    handoff = spec["paths"]["/v1/packets/{packet_id}/handoff"]["get"]
    documented = set(handoff["responses"]["200"]["content"])
    plugins = client.get("/v1/plugins", headers=project.auth("agent")).json()
    _validator(spec, "PluginsResponse").validate(plugins)
    for renderer in plugins["renderers"]:
        answer = client.get(f"{path}/handoff", params={"format": renderer["name"]}, headers=project.auth("agent"))
        assert answer.status_code == 200, answer.text
        media_type = answer.headers["content-type"].split(";")[0]
        assert media_type == renderer["media_type"].split(";")[0] and media_type in documented
        if media_type == "application/json":
            _validator(spec, "HandoffJson").validate(answer.json())
    for status, params in (("400", {"format": "pdf"}), ("404", {"format": "json"})):
        target = f"{path}/handoff" if status == "400" else "/v1/packets/pkt_000000000000000000000000/handoff"
        answer = client.get(target, params=params, headers=project.auth("agent"))
        assert str(answer.status_code) == status and status in handoff["responses"]
        _validator(spec, "Error").validate(answer.json())

    body = {"note": "checked the evidence"}
    _validator(spec, "DecisionRequest").validate(body)
    for decision in ("reject", "approve"):
        operation = spec["paths"][f"/v1/packets/{{packet_id}}/{decision}"]["post"]
        answer = client.post(f"{path}/{decision}", json=body, headers=project.auth("dashboard"))
        assert answer.status_code == 200, answer.text
        _validator(spec, "DecisionResponse").validate(answer.json())
        for status, key, sent in (("403", "agent", body), ("400", "dashboard", {"note": " "})):
            refused = client.post(f"{path}/{decision}", json=sent, headers=project.auth(key))
            assert str(refused.status_code) == status and status in operation["responses"]
            _validator(spec, "Error").validate(refused.json())

    request = {"packet_id": packet["packet_id"], "since_minutes": 30}
    _validator(spec, "VerifyRequest").validate(request)
    verified = client.post("/v1/runs/verify", json=request, headers=project.auth("agent"))
    assert verified.status_code == 200, verified.text
    _validator(spec, "VerifyResponse").validate(verified.json())
    assert len(verified.json()["verification"]["verdicts"]) == 1
    whole = client.get(path, headers=project.auth("dashboard")).json()
    _validator(spec, "PacketResponse").validate(whole)
    assert set(whole["packet"]) == set(spec["components"]["schemas"]["Packet"]["required"])
    assert len(whole["packet"]["verifications"]) == 1
    _validator(spec, "PacketList").validate(client.get("/v1/packets", headers=project.auth("agent")).json())
    for status, sent in (("400", {"packet_id": packet["packet_id"], "x": 1}), ("404", {"packet_id": "pkt_0"})):
        answer = client.post("/v1/runs/verify", json=sent, headers=project.auth("agent"))
        assert str(answer.status_code) == status
        _validator(spec, "Error").validate(answer.json())

    schema = client.get("/schema/packet.json")
    assert schema.headers["content-type"] in spec["paths"]["/schema/packet.json"]["get"]["responses"]["200"]["content"]


def test_the_stage_body_is_the_code(spec):
    """Fields, stages and bounds of POST /v1/packets/{packet_id}/stages are the ones the route applies."""
    from loopkit_core.store.stages import STAGES

    body = spec["components"]["schemas"]["StageRequest"]
    assert set(body["properties"]) == loop_requests.STAGE_FIELDS and body["required"] == ["stage"]
    assert tuple(body["properties"]["stage"]["enum"]) == STAGES
    assert body["properties"]["url"]["maxLength"] == loop_requests.MAX_URL
    assert body["properties"]["note"]["maxLength"] == loop_requests.MAX_NOTE
    limit = spec["paths"]["/v1/loops"]["get"]["parameters"][0]["schema"]
    assert limit["maximum"] == loop_requests.MAX_LOOPS


def test_bookkeeping_answers_match_the_documented_schemas(client, project, spec):
    """POST /v1/runs/diagnose (memory), POST .../stages and GET /v1/loops answer as documented, errors too."""
    records = [
        {"type": "error", "name": "POST /checkout", "message": f"payment gateway timed out after {3000 + i} ms"}
        for i in range(4)
    ] + [{"type": "event", "name": "POST /checkout"} for _ in range(20)]
    assert client.post("/v1/traces", json={"records": records}, headers=project.auth("producer")).status_code == 200
    ran = client.post("/v1/runs/diagnose", json={}, headers=project.auth("agent"))
    _validator(spec, "DiagnoseResponse").validate(ran.json())
    assert set(ran.json()["memory"]) == set(spec["components"]["schemas"]["Memory"]["required"])
    packet = ran.json()["packet"]
    path = f"/v1/packets/{packet['packet_id']}/stages"
    operation = spec["paths"]["/v1/packets/{packet_id}/stages"]["post"]
    body = {
        "stage": "pr_opened",
        "url": "https://example.com/pr/1",
        "note": "n",
        "issue_id": packet["issues"][0]["issue_id"],
    }
    _validator(spec, "StageRequest").validate(body)
    for status, key, sent in (("409", "agent", body), ("403", "dashboard", body)):
        refused = client.post(path, json=sent, headers=project.auth(key))
        assert str(refused.status_code) == status and status in operation["responses"]
        _validator(spec, "Error").validate(refused.json())
    approved = client.post(
        f"/v1/packets/{packet['packet_id']}/approve", json={"note": "ok"}, headers=project.auth("dashboard")
    )
    assert approved.status_code == 200
    recorded = client.post(path, json=body, headers=project.auth("agent"))
    assert recorded.status_code == 201 and "201" in operation["responses"]
    _validator(spec, "StageResponse").validate(recorded.json())
    assert set(recorded.json()["stage"]) == set(spec["components"]["schemas"]["Stage"]["required"])
    for status, sent in (("400", {"stage": "merged", "url": "javascript:alert(1)"}), ("400", {"stage": "x"})):
        refused = client.post(path, json=sent, headers=project.auth("agent"))
        assert str(refused.status_code) == status and status in operation["responses"]
        _validator(spec, "Error").validate(refused.json())
    missing = client.post("/v1/packets/pkt_000000000000000000000000/stages", json=body, headers=project.auth("agent"))
    assert missing.status_code == 404 and "404" in operation["responses"]

    for key in ("agent", "dashboard"):
        listed = client.get("/v1/loops", params={"limit": 5}, headers=project.auth(key))
        assert listed.status_code == 200, listed.text
        _validator(spec, "LoopsResponse").validate(listed.json())
        [loop] = listed.json()["loops"]
        assert set(loop) == set(spec["components"]["schemas"]["Loop"]["required"])
    bad = client.get("/v1/loops", params={"limit": 101}, headers=project.auth("agent"))
    assert bad.status_code == 400 and "400" in spec["paths"]["/v1/loops"]["get"]["responses"]
    _validator(spec, "Error").validate(bad.json())
