"""POST /v1/signup: the exact answer, working keys and scopes, hostile names and bodies, rate limits, /contact.json."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conftest import make_settings, sqlite_only, store_exists
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loopkit_core.projects import get_project, list_projects
from loopkit_core.server import Running, in_thread

# The signup answer: every field product.md names, plus the project's name and kind (sandbox).
SIGNUP_FIELDS = {
    "ok",
    "project_id",
    "producer_key",
    "agent_key",
    "dashboard_key",
    "recovery_code",
    "quota_spans",
    "expires_at",
    "ingest_url",
    "otlp_grpc_endpoint",
    "diagnose_url",
    "dashboard_url",
    "quickstart_url",
}
EXTRA_FIELDS = {"project_name", "kind"}
SCOPES = {
    "producer": ["telemetry:write"],
    "agent": ["runs:write", "telemetry:read", "reports:read", "dashboard:read"],
    "dashboard": ["dashboard:read", "approvals:write"],
}
PROJECT_ID = re.compile(r"^([a-z0-9]+(?:-[a-z0-9]+)*)-([0-9a-f]{8})$")
STORE_FILE = re.compile(r"^[a-z0-9][a-z0-9-]{0,78}[a-z0-9]\.db(-wal|-shm)?$")
CONTROL_FILE = re.compile(r"^control\.db(-wal|-shm)?$")
NOW = 1_900_000_000.0  # a fixed instant for the injected clock (2030-03-17T17:46:40Z)


def auth(key: str) -> dict[str, str]:
    """The authorization header for a key."""
    return {"authorization": f"Bearer {key}"}


def signup(client: httpx.Client, body: object = None) -> httpx.Response:
    """POST /v1/signup with a JSON body (no body when None)."""
    if body is None:
        return client.post("/v1/signup")
    return client.post("/v1/signup", json=body)


def post_raw(client: httpx.Client, path: str, body: bytes) -> httpx.Response:
    """POST raw bytes as JSON."""
    return client.post(path, content=body, headers={"content-type": "application/json"})


def read_records(client: httpx.Client, agent_key: str) -> list[dict]:
    """Every record of the agent key's project from the last hour (one page)."""
    response = client.get("/v1/telemetry", params={"limit": 1000}, headers=auth(agent_key))
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return response.json()["records"]


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The API error shape with an exact status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def files_under(root: Path) -> list[Path]:
    """Every file below root, relative to it."""
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def clocked(tmp_path: Path):
    """A server whose clock is fixed at NOW, so expires_at is exact."""
    with in_thread(make_settings(tmp_path / "data"), clock=lambda: NOW) as running:
        yield running


def test_signup_answer_has_exactly_the_contract_fields(clocked: Running):
    with httpx.Client(base_url=clocked.http_url, timeout=30) as client:
        response = signup(client, {"project_name": "My App!"})
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == SIGNUP_FIELDS | EXTRA_FIELDS
    assert body["ok"] is True
    match = PROJECT_ID.match(body["project_id"])
    assert match and match.group(1) == "my-app"
    assert (body["project_name"], body["kind"]) == ("My App!", "sandbox")
    assert re.fullmatch(r"lk_ingest_[A-Za-z0-9_-]{40,}", body["producer_key"])
    assert re.fullmatch(r"lk_agent_[A-Za-z0-9_-]{40,}", body["agent_key"])
    assert re.fullmatch(r"lk_dash_[A-Za-z0-9_-]{40,}", body["dashboard_key"])
    assert re.fullmatch(r"lk_recover_[A-Za-z0-9_-]{30,}", body["recovery_code"])
    assert len({body["producer_key"], body["agent_key"], body["dashboard_key"], body["recovery_code"]}) == 4
    assert body["quota_spans"] == 5000
    # RFC 3339, exactly now + sandbox_days (14) by the server's clock.
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert body["expires_at"].endswith("Z")
    assert expires == datetime.fromtimestamp(NOW + 14 * 86400, UTC)
    base = clocked.http_url
    assert base != "http://127.0.0.1:0" and clocked.http_port > 0
    assert body["ingest_url"] == f"{base}/v1/traces"
    assert body["otlp_grpc_endpoint"] == f"127.0.0.1:{clocked.grpc_port}"
    assert body["diagnose_url"] == f"{base}/v1/runs/diagnose"
    assert body["dashboard_url"] == f"{base}/v1/dashboard#key={body['dashboard_key']}"  # signs in; see dashboard.md
    assert body["quickstart_url"] == f"{base}/quickstart.md"


def test_signup_without_body_gets_a_default_name(server: Running, client: httpx.Client):
    response = signup(client)
    assert response.status_code == 201, response.text
    assert PROJECT_ID.match(response.json()["project_id"]).group(1) == "sandbox"
    assert signup(client, {}).status_code == 201
    assert len(list_projects(server.app.store.control)) == 2


def test_signup_honours_configured_quota_days_and_public_urls(tmp_path: Path):
    settings = make_settings(
        tmp_path / "data",
        sandbox_quota_spans=1234,
        sandbox_days=2.5,
        public_url="https://loopkit.example.com/base/",
        public_grpc_endpoint="otlp.example.com:443",
    )
    with in_thread(settings, clock=lambda: NOW) as running, httpx.Client(base_url=running.http_url) as client:
        body = signup(client, {"project_name": "configured"}).json()
    assert body["quota_spans"] == 1234
    assert body["expires_at"] == "2030-03-20T05:46:40.000000Z"  # NOW + 2.5 days
    assert body["ingest_url"] == "https://loopkit.example.com/base/v1/traces"
    assert body["otlp_grpc_endpoint"] == "otlp.example.com:443"
    assert body["diagnose_url"] == "https://loopkit.example.com/base/v1/runs/diagnose"
    assert body["dashboard_url"] == f"https://loopkit.example.com/base/v1/dashboard#key={body['dashboard_key']}"
    assert body["quickstart_url"] == "https://loopkit.example.com/base/quickstart.md"


@sqlite_only("reads the control.db files byte by byte for secrets")
def test_keys_are_stored_only_as_hashes_with_their_scopes(server: Running, client: httpx.Client):
    body = signup(client, {"project_name": "hashes"}).json()
    project = get_project(server.app.store.control, body["project_id"])
    assert project is not None
    assert {k["kind"]: k["scopes"] for k in project["keys"]} == SCOPES
    assert {k["kind"]: k["display"] for k in project["keys"]} == {
        "producer": body["producer_key"][:14] + "…",
        "agent": body["agent_key"][:13] + "…",
        "dashboard": body["dashboard_key"][:12] + "…",
    }
    # No secret appears anywhere in the control database files.
    data_dir = Path(server.settings.data_dir)
    raw = b"".join(p.read_bytes() for p in data_dir.glob("control.db*"))
    with sqlite3.connect(data_dir / "control.db") as db:
        dumped = "\n".join(db.iterdump()).encode()
    for secret in ("producer_key", "agent_key", "dashboard_key", "recovery_code"):
        assert body[secret].encode() not in raw
        assert body[secret].encode() not in dumped


def test_keys_work_at_once_with_the_real_exporters(server: Running, client: httpx.Client):
    body = signup(client, {"project_name": "first steps"}).json()
    # The plain records shape.
    posted = client.post(
        body["ingest_url"],
        json={"records": [{"type": "error", "name": "checkout", "message": "boom"}]},
        headers=auth(body["producer_key"]),
    )
    assert posted.status_code == 200, posted.text
    assert (posted.json()["accepted"], posted.json()["rejected"]) == (1, 0)
    # The real OTLP exporters, configured only from the signup answer.
    provider = TracerProvider(resource=Resource.create({"service.name": "signup-test"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("signup")
    with tracer.start_as_current_span("GET /hello"):
        pass
    spans = memory.get_finished_spans()
    http_exporter = HttpSpanExporter(endpoint=body["ingest_url"], headers=auth(body["producer_key"]), timeout=10)
    grpc_exporter = GrpcSpanExporter(
        endpoint=body["otlp_grpc_endpoint"], insecure=True, headers=auth(body["producer_key"]), timeout=10
    )
    try:
        assert http_exporter.export(spans) == SpanExportResult.SUCCESS
        assert grpc_exporter.export(spans) == SpanExportResult.SUCCESS  # the same span: stored once
    finally:
        http_exporter.shutdown()
        grpc_exporter.shutdown()
        provider.shutdown()
    records = read_records(client, body["agent_key"])
    assert sorted((r["type"], r["name"]) for r in records) == [("error", "checkout"), ("span", "GET /hello")]
    hello = next(r for r in records if r["name"] == "GET /hello")
    assert hello["span_id"] == f"{spans[0].get_span_context().span_id:016x}"
    assert hello["service"] == "signup-test"


def test_each_key_holds_only_its_scopes(client: httpx.Client):
    body = signup(client, {"project_name": "scopes"}).json()
    write = {"records": [{"type": "event", "name": "x"}]}
    assert client.post("/v1/traces", json=write, headers=auth(body["producer_key"])).status_code == 200
    assert client.post("/v1/traces", json=write, headers=auth(body["agent_key"])).status_code == 403
    assert client.post("/v1/traces", json=write, headers=auth(body["dashboard_key"])).status_code == 403
    assert client.get("/v1/telemetry", headers=auth(body["agent_key"])).status_code == 200
    assert_error(client.get("/v1/telemetry", headers=auth(body["producer_key"])), 403, "forbidden")
    assert_error(client.get("/v1/telemetry", headers=auth(body["dashboard_key"])), 403, "forbidden")
    # The recovery code is not a key.
    assert_error(client.get("/v1/telemetry", headers=auth(body["recovery_code"])), 401, "unauthenticated")


# name -> the slug of the project ID it gets, or None when the signup is refused with 400.
HOSTILE_NAMES: list[tuple[object, str | None]] = [
    ("../../etc/passwd", "etc-passwd"),
    ("../../../../../../tmp/x", "tmp-x"),
    ("/etc/passwd", "etc-passwd"),
    ("a/b", "a-b"),
    ("a\\b", "a-b"),
    ("..", "project"),
    (".", "project"),
    ("C:\\Windows\\system32", "c-windows-system32"),
    ("name.db", "name-db"),
    ("a\x00b", None),
    ("\x00", None),
    ("line\nbreak", None),
    ("tab\there", None),
    ("\x7f-del", None),  # DEL is a control character (Cc)
    ("x" * 10 * 1024, None),
    ("y" * 200, "y" * 60),
    ("😀🔥", "project"),
    ("café ünïcode", "caf-n-code"),
    ("\u202eevil", None),  # a bidi override would reorder the text around the name
    ("!!!", "project"),
    ("-._~-", "project"),
    ("   ", None),
    ("", None),
    (5, None),
    (1.5, None),
    (True, None),
    (["a"], None),
    ({"a": "b"}, None),
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):
    """One server for every hostile name (root dir, server, client); its whole tree is checked after each."""
    root = tmp_path_factory.mktemp("hostile")
    settings = make_settings(root / "data", rate_limit_per_hour=1000)
    with in_thread(settings) as running, httpx.Client(base_url=running.http_url, timeout=30) as client:
        yield root, running, client


@pytest.mark.parametrize(("name", "slug"), HOSTILE_NAMES, ids=[repr(n)[:30] for n, _ in HOSTILE_NAMES])
def test_hostile_project_names_are_refused_or_slugged(hostile, name: object, slug: str | None):
    root, running, client = hostile
    before = len(list_projects(running.app.store.control))
    response = signup(client, {"project_name": name})
    if slug is None:
        assert_error(response, 400, "bad_request")
        assert len(list_projects(running.app.store.control)) == before
    else:
        assert response.status_code == 201, response.text
        body = response.json()
        match = PROJECT_ID.match(body["project_id"])
        assert match and match.group(1) == slug, body["project_id"]
        assert body["project_name"] == name.strip()
        # Make the project's store exist on disk, and read it back.
        posted = client.post(
            "/v1/traces", json={"records": [{"type": "event", "name": "n"}]}, headers=auth(body["producer_key"])
        )
        assert posted.status_code == 200, posted.text
        assert len(read_records(client, body["agent_key"])) == 1
        assert store_exists(running, body["project_id"])
    # Nothing was written anywhere but the control database and data_dir/projects/<valid id>.db.
    for path in files_under(root):
        assert path.parts[0] == "data", path
        if len(path.parts) == 2:
            assert CONTROL_FILE.match(path.parts[1]), path
        else:
            assert len(path.parts) == 3 and path.parts[1] == "projects", path
            assert STORE_FILE.match(path.parts[2]), path
    assert not Path("/etc/passwd.db").exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "bad_request"),
        (b"{", 400, "bad_request"),
        (b"[]", 400, "bad_request"),
        (b'["project_name", "x"]', 400, "bad_request"),
        (b'"a string"', 400, "bad_request"),
        (b"42", 400, "bad_request"),
        (b"null", 400, "bad_request"),
        (b"\xff\xfe\x00", 400, "bad_request"),
        (b'{"project_name": "' + b"z" * (16 * 1024) + b'"}', 413, "payload_too_large"),
        (b" " * (16 * 1024 + 1), 413, "payload_too_large"),
    ],
    ids=["text", "truncated", "empty-array", "array", "string", "number", "null", "binary", "name-17k", "spaces-17k"],
)
def test_malformed_signup_bodies(server: Running, client: httpx.Client, body: bytes, status: int, code: str):
    assert_error(post_raw(client, "/v1/signup", body), status, code)
    assert list_projects(server.app.store.control) == []


def test_a_body_of_exactly_16_kib_is_read(client: httpx.Client):
    prefix, suffix = b'{"project_name": "limit", "pad": "', b'"}'
    body = prefix + b"p" * (16 * 1024 - len(prefix) - len(suffix)) + suffix
    assert len(body) == 16 * 1024
    assert post_raw(client, "/v1/signup", body).status_code == 201


def _provision(client: httpx.Client, i: int) -> httpx.Response:
    return client.post("/v1/provision", json={"project_name": f"rate {i}"})


def _recover(client: httpx.Client, i: int) -> httpx.Response:
    return client.post("/v1/recover", json={"project_id": "nope-00000000", "recovery_code": "lk_recover_wrong"})


def _signup(client: httpx.Client, i: int) -> httpx.Response:
    return signup(client, {"project_name": f"rate {i}"})


CALLS = {"signup": (_signup, 201), "provision": (_provision, 201), "recover": (_recover, 401)}


def assert_rate_limited(response: httpx.Response) -> None:
    """429 with the error JSON and an integer Retry-After of at least one second (at most the window)."""
    assert_error(response, 429, "rate_limited")
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= 3600


@pytest.mark.parametrize("route", sorted(CALLS))
def test_fourth_call_from_one_address_is_rate_limited(tmp_path: Path, route: str):
    call, ok_status = CALLS[route]
    with (
        in_thread(make_settings(tmp_path / "data", rate_limit_per_hour=3)) as running,
        httpx.Client(base_url=running.http_url, timeout=30) as client,
    ):
        assert [call(client, i).status_code for i in range(3)] == [ok_status] * 3
        before = len(list_projects(running.app.store.control))
        assert_rate_limited(call(client, 3))
        assert_rate_limited(call(client, 4))
        # A refused call does nothing (and costs nothing more than the refusal).
        assert len(list_projects(running.app.store.control)) == before
        # Other routes are not rate-limited, and neither are keys already issued.
        assert client.get("/contact.json").status_code == 200
        assert client.get("/healthz").status_code == 200


def test_signup_provision_and_recover_share_one_budget(tmp_path: Path):
    with (
        in_thread(make_settings(tmp_path / "data", rate_limit_per_hour=3)) as running,
        httpx.Client(base_url=running.http_url, timeout=30) as client,
    ):
        assert _signup(client, 0).status_code == 201
        assert _provision(client, 1).status_code == 201
        assert _recover(client, 2).status_code == 401
        for call, _ in CALLS.values():
            assert_rate_limited(call(client, 9))
    # Malformed bodies count too: the limit is checked first, so a flood of junk costs nothing.
    with (
        in_thread(make_settings(tmp_path / "data2", rate_limit_per_hour=3)) as running,
        httpx.Client(base_url=running.http_url, timeout=30) as client,
    ):
        assert [post_raw(client, "/v1/signup", b"nope").status_code for _ in range(3)] == [400] * 3
        assert_rate_limited(_signup(client, 0))


def test_contact_json(tmp_path: Path):
    settings = make_settings(
        tmp_path / "data",
        contact_email="ops@example.com",
        contact_text="Write to ops.",
        sandbox_quota_spans=777,
        sandbox_days=3.0,
        sandbox_grace_days=1.5,
        rate_limit_per_hour=1,
    )
    with in_thread(settings) as running, httpx.Client(base_url=running.http_url, timeout=30) as client:
        responses = [client.get("/contact.json") for _ in range(3)]  # not rate-limited, no key needed
        for response in responses:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {
                "ok": True,
                "production": {
                    "text": "Write to ops.",
                    "email": "ops@example.com",
                    "operator_command": "loopkit projects promote PROJECT_ID --data-dir DATA_DIR",
                },
                "sandbox": {"quota_spans": 777, "days": 3.0, "grace_days_after_expiry": 1.5},
                "provisioning": {
                    "open": True,  # a loopback-only server
                    "requires": None,
                    "how": "POST /v1/provision mints a permanent project for any caller on this server; "
                    "later calls resume the project with one of its own keys",
                },
            }


def test_contact_json_defaults(client: httpx.Client):
    body = client.get("/contact.json").json()
    assert body["sandbox"] == {"quota_spans": 5000, "days": 14.0, "grace_days_after_expiry": 7.0}
    assert body["production"]["email"] is None
    assert "promote" in body["production"]["text"]


def test_signups_are_isolated_and_unique(client: httpx.Client):
    bodies = [signup(client, {"project_name": "same name"}).json() for _ in range(5)]
    assert len({b["project_id"] for b in bodies}) == 5
    assert all(PROJECT_ID.match(b["project_id"]).group(1) == "same-name" for b in bodies)
    for i, body in enumerate(bodies):
        posted = client.post(
            "/v1/traces",
            json={"records": [{"type": "event", "name": f"only-{i}"}]},
            headers=auth(body["producer_key"]),
        )
        assert posted.status_code == 200
    for i, body in enumerate(bodies):
        assert [r["name"] for r in read_records(client, body["agent_key"])] == [f"only-{i}"]
