"""The dashboard over plain HTTP: JSON shapes, sign-in and sessions, CSRF, headers, escaping, errors, markup."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Project, make_settings, new_project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS31Validator

from loopkit_core import sessions
from loopkit_core.projects import hash_secret, rotate_keys
from loopkit_core.server import Running, in_thread

REPO = Path(__file__).resolve().parent.parent
JSON = {"accept": "application/json"}
XSS = '<script>alert("x")</script>'


@pytest.fixture
def diagnosed(client: httpx.Client, project: Project) -> dict[str, Any]:
    """Seven failing checkouts (their message carries a <script>), 20 healthy ones, and a packet."""
    records = [
        {"type": "error", "name": "POST /checkout", "message": f"{XSS} gateway timed out after {3000 + i} ms"}
        for i in range(7)
    ] + [{"type": "event", "name": "POST /checkout"} for _ in range(20)]
    posted = client.post("/v1/traces", json={"records": records}, headers=project.auth("producer"))
    assert posted.json()["accepted"] == 27
    ran = client.post("/v1/runs/diagnose", json={"min_count": 3}, headers=project.auth("agent"))
    packet = ran.json()["packet"]
    [issue] = packet["issues"]
    assert issue["count"] == 7
    return {"packet": packet, "issue": issue, "record_ids": posted.json()["record_ids"]}


def sign_in(client: httpx.Client, key: str, next_path: str = "/v1/dashboard") -> httpx.Response:
    """POST the sign-in form as a browser does."""
    return client.post("/v1/dashboard/login", data={"key": key, "next": next_path})


def with_session(client: httpx.Client, token: str) -> httpx.Client:
    """The client, holding exactly this session cookie."""
    client.cookies.clear()
    client.cookies.set(sessions.COOKIE, token, path=sessions.COOKIE_PATH)
    return client


def csrf_of(html: str) -> str:
    """The CSRF token in a packet page's decision form."""
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def validator(spec: dict[str, Any], name: str) -> OAS31Validator:
    """A validator for one of the OpenAPI document's schemas."""
    return OAS31Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


class Markup(HTMLParser):
    """Collects what the markup checks need; fails on unbalanced tags."""

    VOID = {"meta", "link", "input", "br", "hr", "img", "rect", "line", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        """The attributes of every `tag`."""
        return [attrs for name, attrs in self.tags if name == tag]


def check_markup(response: httpx.Response) -> Markup:
    """A page parses with balanced tags and has the landmarks, labels and headers people and screen readers need."""
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    parsed = Markup()
    parsed.feed(response.text)
    parsed.close()
    assert parsed.errors == [] and parsed.stack == [], (parsed.errors, parsed.stack)
    assert parsed.all("html") == [{"lang": "en"}]
    assert len(parsed.all("h1")) == 1 and len(parsed.all("main")) == 1 and len(parsed.all("header")) == 1
    assert any(m.get("name") == "viewport" for m in parsed.all("meta"))
    ids = {attrs.get("id") for _, attrs in parsed.tags}
    labelled = {attrs.get("for") for attrs in parsed.all("label")}
    for field in parsed.all("input") + parsed.all("textarea"):
        if field.get("type") != "hidden":
            assert field.get("id") in labelled, field
    for svg in parsed.all("svg"):
        assert svg.get("role") == "img"
        assert all(part in ids for part in (svg.get("aria-labelledby") or "").split()) and svg.get("aria-labelledby")
    if parsed.all("table"):
        assert parsed.all("th")
    # The only script is the page's own, admitted by the nonce that the CSP names.
    nonce = re.search(r"script-src 'nonce-([^']+)'", response.headers["content-security-policy"]).group(1)
    assert [s.get("nonce") for s in parsed.all("script")] == [nonce]
    assert [s.get("nonce") for s in parsed.all("style")] == [nonce]
    return parsed


def assert_security_headers(response: httpx.Response) -> None:
    """What every dashboard answer carries."""
    csp = response.headers["content-security-policy"]
    for part in ("default-src 'none'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"):
        assert part in csp, part
    assert "unsafe-inline" not in csp and "http" not in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_json_answers_match_the_openapi_schemas_with_exact_numbers(client, project, diagnosed):
    spec = client.get("/openapi.json").json()
    packet, issue = diagnosed["packet"], diagnosed["issue"]

    index = client.get("/v1/dashboard", headers={**JSON, **project.auth("dashboard")})
    assert index.status_code == 200
    validator(spec, "DashboardIndex").validate(index.json())
    body = index.json()
    assert body["project"]["project_id"] == project.project_id
    assert body["project"]["records_accepted"] == 27
    assert body["viewer"] == {
        "project_id": project.project_id,
        "key_kind": "dashboard",
        "key": body["viewer"]["key"],
        "can_decide": True,
    }
    assert project.dashboard_key.startswith(body["viewer"]["key"].rstrip("…"))
    [listed] = body["packets"]
    assert (listed["packet_id"], listed["dashboard_url"]) == (
        packet["packet_id"],
        f"/v1/dashboard/packets/{packet['packet_id']}",
    )

    page = client.get(listed["dashboard_url"], headers={**JSON, **project.auth("agent")})
    assert page.status_code == 200
    validator(spec, "DashboardPacket").validate(page.json())
    assert page.json()["viewer"]["can_decide"] is False
    series = page.json()["occurrences"][issue["issue_id"]]
    assert series["total"] == sum(series["counts"]) == 7 and len(series["counts"]) == 30
    handoff = page.json()["handoff"]
    assert handoff["error"] is None and handoff["text"].startswith(f"# LoopKit diagnosis {packet['packet_id']}")

    record_id = issue["evidence"][0]
    one = client.get(f"/v1/dashboard/records/{record_id}", headers={**JSON, **project.auth("dashboard")})
    assert one.status_code == 200
    validator(spec, "DashboardRecord").validate(one.json())
    assert one.json()["record"]["record_id"] == record_id and one.json()["record"]["message"].startswith(XSS)


def test_the_chart_draws_one_bar_per_busy_bucket(client, project, diagnosed):
    path = f"/v1/dashboard/packets/{diagnosed['packet']['packet_id']}"
    series = client.get(path, headers={**JSON, **project.auth("dashboard")}).json()["occurrences"]
    counts = series[diagnosed["issue"]["issue_id"]]["counts"]
    html = client.get(path, headers=project.auth("dashboard")).text
    svg = re.search(r"<svg class=\"chart\".*?</svg>", html, re.S).group(0)
    assert svg.count("<rect ") == sum(1 for c in counts if c) >= 1
    assert f"{sum(counts)} occurrence(s) from" in svg and "<title id=" in svg


def test_without_a_usable_key_html_gets_the_sign_in_page_and_json_gets_401(client, server, project, diagnosed):
    packet_path = f"/v1/dashboard/packets/{diagnosed['packet']['packet_id']}"
    for headers, message in (
        ({}, "sign in with your dashboard key"),
        ({"authorization": "Bearer lk_dash_nope"}, "unknown or revoked key"),
        ({"authorization": "Basic abc"}, "missing key"),
    ):
        page = client.get(packet_path, headers=headers)
        assert page.status_code == 401
        assert_security_headers(page)
        parsed = check_markup(page)
        assert message in "".join(parsed.text)
        assert {"name": "next", "type": "hidden", "value": packet_path} in parsed.all("input")
        answer = client.get(packet_path, headers={**JSON, **headers})
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthenticated"
        assert message in answer.json()["error"]["message"]
        assert_security_headers(answer)
    refused = client.get("/v1/dashboard", headers=project.auth("producer"))
    assert refused.status_code == 403 and "Not allowed" in refused.text
    assert client.get("/v1/dashboard", headers={**JSON, **project.auth("producer")}).json()["error"]["code"] == (
        "forbidden"
    )
    assert client.get("/v1/dashboard", headers=project.auth("agent")).status_code == 200


def test_another_projects_packet_and_record_are_404(client, server, project, diagnosed):
    other = new_project(server, "other app")
    packet_id, record_id = diagnosed["packet"]["packet_id"], diagnosed["issue"]["evidence"][0]
    for path in (f"/v1/dashboard/packets/{packet_id}", f"/v1/dashboard/records/{record_id}"):
        for kind in ("dashboard", "agent"):
            page = client.get(path, headers=other.auth(kind))
            assert page.status_code == 404 and "Not found" in page.text
            assert "gateway timed out" not in page.text
            assert client.get(path, headers={**JSON, **other.auth(kind)}).json()["error"]["code"] == "not_found"
    decided = client.post(
        f"/v1/dashboard/packets/{packet_id}/approve", data={"note": "not mine"}, headers={**JSON, **other.auth()}
    )
    assert decided.status_code == 403  # the producer key may not even read
    decided = client.post(
        f"/v1/dashboard/packets/{packet_id}/approve", data={"note": "not mine"}, headers=other.auth("dashboard")
    )
    assert decided.status_code == 404
    assert client.get(f"/v1/packets/{packet_id}", headers=project.auth("agent")).json()["packet"]["approval"] == {
        "state": "pending",
        "decided_by": None,
        "decided_at": None,
        "note": None,
        "trail": [],
    }
    listing = client.get("/v1/dashboard", headers={**JSON, **other.auth("dashboard")}).json()
    assert listing["packets"] == [] and listing["project"]["project_id"] == other.project_id


def test_sign_in_sets_a_strict_httponly_session_cookie_that_is_not_the_key(client, project, diagnosed):
    packet_path = f"/v1/dashboard/packets/{diagnosed['packet']['packet_id']}"
    signed = sign_in(client, project.dashboard_key, packet_path)
    assert signed.status_code == 303 and signed.headers["location"] == packet_path
    assert_security_headers(signed)
    cookie = signed.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert set(attributes) == {"httponly", "max-age", "path", "samesite"}  # no Secure over plain http
    assert attributes["path"] == "Path=/v1/dashboard" and attributes["samesite"].lower() == "samesite=strict"
    assert attributes["max-age"] == f"Max-Age={sessions.TTL_SECONDS}"
    token = cookie.split(";")[0].split("=", 1)[1]
    assert project.dashboard_key not in token and hash_secret(project.dashboard_key) not in token
    assert token.split(".")[1] == hash_secret(project.dashboard_key)[: sessions.KEY_ID_HEX]
    page = client.get(packet_path)  # the client sends the cookie back
    assert page.status_code == 200 and "Approve" in page.text
    assert client.get("/v1/dashboard", headers=JSON).json()["viewer"]["key_kind"] == "dashboard"


def test_an_https_server_marks_the_cookie_secure(tmp_path: Path):
    settings = make_settings(tmp_path / "data", public_url="https://loopkit.example.com")
    with in_thread(settings) as running, httpx.Client(base_url=running.http_url) as client:
        project = new_project(running)
        signed = sign_in(client, project.dashboard_key)
        assert signed.status_code == 303
        assert "; secure" in signed.headers["set-cookie"].lower()


def test_rotating_the_keys_or_expiry_or_tampering_ends_the_session(client, server, project, diagnosed):
    assert sign_in(client, project.dashboard_key).status_code == 303
    assert client.get("/v1/dashboard").status_code == 200
    token = client.cookies.get("loopkit_dashboard")
    version, key_id, expires, mac = token.split(".")
    client.cookies.clear()
    for forged in (
        f"{version}.{key_id}.{int(expires) + 3600}.{mac}",  # a longer life
        f"{version}.{key_id}.{expires}.{mac[:-2]}AA",  # another MAC
        f"{version}.{'0' * len(key_id)}.{expires}.{mac}",  # another key
        "garbage",
        "v1." + "a" * 300,
    ):
        answer = with_session(client, forged).get("/v1/dashboard", headers=JSON)
        assert answer.status_code == 401, forged
    old = sessions.issue(project.dashboard_key, now=server.app.clock() - sessions.TTL_SECONDS - 1)
    expired = with_session(client, old).get("/v1/dashboard")
    assert expired.status_code == 401 and "your session ended" in expired.text
    assert with_session(client, token).get("/v1/dashboard").status_code == 200
    rotate_keys(server.app.store.control, project.project_id)
    ended = with_session(client, token).get("/v1/dashboard")
    assert ended.status_code == 401 and "your session ended" in ended.text and "Sign in" in ended.text


def test_sign_in_errors(client, project):
    unknown = sign_in(client, "lk_dash_unknown")
    assert unknown.status_code == 401 and "unknown or revoked key" in unknown.text
    assert "set-cookie" not in unknown.headers
    check_markup(unknown)
    producer = client.post("/v1/dashboard/login", data={"key": project.producer_key}, headers=JSON)
    assert producer.status_code == 403 and "use the dashboard key" in producer.json()["error"]["message"]
    assert sign_in(client, "").status_code == 401
    assert client.post("/v1/dashboard/login", content=b"key=x", headers={"content-type": "text/plain"}).status_code == (
        415
    )
    assert client.post("/v1/dashboard/login", content=b"x" * 20_000, headers=JSON).status_code == 413
    bad_json = client.post(
        "/v1/dashboard/login", content=b"{not json", headers={**JSON, "content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    not_utf8 = client.post(
        "/v1/dashboard/login", content=b"key=%ff%fe", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert not_utf8.status_code in (400, 401)  # undecodable bytes never become a 500
    as_json = client.post("/v1/dashboard/login", json={"key": project.agent_key})
    assert as_json.status_code == 303


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/v1/dashboard", "/v1/dashboard/../../x", "/elsewhere", "/v1/dashboardx"],
)
def test_sign_in_never_redirects_off_the_dashboard(client, project, target):
    signed = sign_in(client, project.dashboard_key, target)
    assert signed.status_code == 303 and signed.headers["location"] == "/v1/dashboard"


def test_forms_need_the_sessions_csrf_token_and_a_same_site_origin(client, server, project, diagnosed):
    packet_id = diagnosed["packet"]["packet_id"]
    path = f"/v1/dashboard/packets/{packet_id}"
    assert sign_in(client, project.dashboard_key).status_code == 303
    token = csrf_of(client.get(path).text)
    refused = [
        client.post(f"{path}/approve", data={"note": "forged"}),
        client.post(f"{path}/approve", data={"note": "forged", "csrf": token[:-1] + "x"}),
        client.post(
            f"{path}/approve", data={"note": "forged", "csrf": token}, headers={"sec-fetch-site": "cross-site"}
        ),
        client.post(
            f"{path}/reject", data={"note": "forged", "csrf": token}, headers={"origin": "http://evil.example"}
        ),
    ]
    for answer in refused:
        assert answer.status_code == 403
        assert "reload the page and try again" in answer.text or "came from another site" in answer.text
    assert (
        client.get(f"/v1/packets/{packet_id}", headers=project.auth("agent")).json()["packet"]["approval"]["trail"]
        == []
    )

    # Another session (same key, signed in at another time) has its own token; this one's does not fit it.
    later = sessions.issue(project.dashboard_key, now=server.app.clock() + 60)
    with httpx.Client(base_url=str(client.base_url)) as other:
        with_session(other, later)
        assert csrf_of(other.get(path).text) != token
        assert other.post(f"{path}/approve", data={"note": "x", "csrf": token}).status_code == 403

    done = client.post(
        f"{path}/reject",
        data={"note": "looks like the vendor", "csrf": token},
        headers={"origin": str(client.base_url)},
    )
    assert done.status_code == 303 and done.headers["location"] == f"{path}#decision"
    page = client.get(path)
    assert '<span class="badge rejected" id="approval-state">rejected</span>' in page.text
    assert "looks like the vendor" in page.text


def test_a_bearer_header_needs_no_csrf_token(client, project, diagnosed):
    path = f"/v1/dashboard/packets/{diagnosed['packet']['packet_id']}"
    waiting = "<dt>Waiting for a decision</dt><dd>{}</dd>"
    assert waiting.format(1) in client.get("/v1/dashboard", headers=project.auth("dashboard")).text
    done = client.post(f"{path}/approve", data={"note": "checked"}, headers=project.auth("dashboard"))
    assert done.status_code == 303
    assert waiting.format(0) in client.get("/v1/dashboard", headers=project.auth("dashboard")).text
    approval = client.get(f"/v1/packets/{diagnosed['packet']['packet_id']}", headers=project.auth("agent")).json()
    assert approval["packet"]["approval"]["state"] == "approved"
    assert approval["packet"]["approval"]["decided_by"].startswith("dashboard key lk_dash_")


def test_decision_errors_are_precise_and_record_nothing(client, project, diagnosed):
    packet_id = diagnosed["packet"]["packet_id"]
    path = f"/v1/dashboard/packets/{packet_id}"
    auth = project.auth("dashboard")
    blank = client.post(f"{path}/approve", data={"note": "   "}, headers=auth)
    assert blank.status_code == 400
    parsed = check_markup(blank)
    assert "note is required: say why, in a few words" in "".join(parsed.text)
    too_long = client.post(f"{path}/reject", data={"note": "x" * 4001}, headers={**JSON, **auth})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["message"] == "note must be at most 4000 characters"
    agent = client.post(f"{path}/approve", data={"note": "I approve my own work"}, headers=project.auth("agent"))
    assert agent.status_code == 403 and "may read the dashboard but not decide" in agent.text
    for missing in ("pkt_000000000000000000000000", "pkt_" + "f" * 60, "pkt_%00"):
        answer = client.post(f"/v1/dashboard/packets/{missing}/approve", data={"note": "x"}, headers=auth)
        assert answer.status_code == 404
    trail = client.get(f"/v1/packets/{packet_id}", headers=auth).json()["packet"]["approval"]["trail"]
    assert trail == []
    # A later decision is recorded on top, as with POST /v1/packets/{id}/approve|reject: the trail is append-only.
    assert client.post(f"{path}/approve", data={"note": "first look"}, headers=auth).status_code == 303
    assert client.post(f"{path}/reject", data={"note": "on second thought"}, headers=auth).status_code == 303
    trail = client.get(f"/v1/packets/{packet_id}", headers=auth).json()["packet"]["approval"]["trail"]
    assert [(d["decision"], d["note"]) for d in trail] == [
        ("approved", "first look"),
        ("rejected", "on second thought"),
    ]


def test_telemetry_text_is_escaped_everywhere(client, project, diagnosed):
    auth = project.auth("dashboard")
    packet_id = diagnosed["packet"]["packet_id"]
    pages = [
        client.get("/v1/dashboard", headers=auth),
        client.get(f"/v1/dashboard/packets/{packet_id}", headers=auth),
        client.get(f"/v1/dashboard/records/{diagnosed['issue']['evidence'][0]}?packet={packet_id}", headers=auth),
    ]
    for page in pages:
        assert page.status_code == 200
        assert XSS not in page.text and "<script>alert" not in page.text
        check_markup(page)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in pages[2].text
    assert "&lt;script&gt;" in pages[1].text  # the title and the handoff, escaped


def test_every_page_carries_the_security_headers(client, project, diagnosed):
    auth = project.auth("dashboard")
    packet_id = diagnosed["packet"]["packet_id"]
    for path in (
        "/v1/dashboard",
        f"/v1/dashboard/packets/{packet_id}",
        f"/v1/dashboard/records/{diagnosed['issue']['evidence'][0]}",
        "/v1/dashboard/packets/pkt_nope",
    ):
        for headers in (auth, {**JSON, **auth}, {}):
            assert_security_headers(client.get(path, headers=headers))
    assert_security_headers(client.post("/v1/dashboard/logout"))


def test_logout_clears_the_cookie(client, project):
    assert sign_in(client, project.dashboard_key).status_code == 303
    out = client.post("/v1/dashboard/logout")
    assert out.status_code == 303 and out.headers["location"] == "/v1/dashboard?signed_out=1"
    assert 'loopkit_dashboard=""' in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
    page = client.get(out.headers["location"])
    assert page.status_code == 401 and "You are signed out." in page.text
    assert "sign in with your dashboard key" not in page.text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/dashboard/packets/%00",
        "/v1/dashboard/packets/" + "p" * 5000,
        "/v1/dashboard/packets/pkt_%E2%9C%93",
        "/v1/dashboard/packets/'%3B--",
        "/v1/dashboard/records/%00",
        "/v1/dashboard/records/" + "r" * 5000,
        "/v1/dashboard/records/rec_%F0%9F%92%A5",
        "/v1/dashboard/records/rec_x?packet=%3Cscript%3E",
    ],
)
def test_bad_ids_are_404_pages_never_500(client, project, path):
    page = client.get(path, headers=project.auth("dashboard"))
    assert page.status_code == 404
    check_markup(page)
    assert client.get(path, headers={**JSON, **project.auth("dashboard")}).json()["error"]["code"] == "not_found"


def test_bad_limits_are_400(client, project):
    for limit in ("0", "101", "abc", "-1", "1e3"):
        answer = client.get("/v1/dashboard", params={"limit": limit}, headers={**JSON, **project.auth("dashboard")})
        assert answer.status_code == 400, limit
    page = client.get("/v1/dashboard", params={"limit": "abc"}, headers=project.auth("dashboard"))
    assert page.status_code == 400
    check_markup(page)


def test_the_signup_dashboard_url_opens_the_sign_in_page_that_reads_the_fragment(client):
    signup = client.post("/v1/signup", json={"project_name": "bookmark"}).json()
    url, _, fragment = signup["dashboard_url"].partition("#")
    assert fragment == f"key={signup['dashboard_key']}"
    page = client.get(url)  # a browser never sends the fragment
    assert page.status_code == 401
    check_markup(page)
    assert "window.history.replaceState" in page.text and 'form.action = "/v1/dashboard/login"' in page.text
    resumed = client.post(
        "/v1/provision", json={"project_name": "bookmark", "operator": "me"}, headers={"authorization": "Bearer x"}
    )
    assert resumed.status_code == 201 and resumed.json()["dashboard_url"].endswith(
        f"/v1/dashboard#key={resumed.json()['dashboard_key']}"
    )


def test_a_packet_with_a_plugin_issue_without_selector_still_renders(client, server: Running, project, diagnosed):
    """A third-party diagnoser's issue may lack a selector: the page says so instead of failing."""
    import orjson
    from sqlalchemy import select, update

    from loopkit_core.store.schema import packets

    engine = server.app.store.project(project.project_id)
    packet_id = diagnosed["packet"]["packet_id"]
    with engine.begin() as conn:
        body = orjson.loads(conn.execute(select(packets.c.body).where(packets.c.packet_id == packet_id)).scalar())
        body["issues"][0].pop("selector")
        conn.execute(update(packets).where(packets.c.packet_id == packet_id).values(body=orjson.dumps(body).decode()))
    page = client.get(f"/v1/dashboard/packets/{packet_id}", headers=project.auth("dashboard"))
    assert page.status_code == 200
    assert "No chart for this issue" in page.text
    check_markup(page)


FORM_TYPES = ["application/x-www-form-urlencoded", "application/json", "text/plain", "multipart/form-data", ""]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
@given(body=st.binary(max_size=300) | st.text(max_size=200).map(str.encode), media_type=st.sampled_from(FORM_TYPES))
def test_any_form_body_gets_a_precise_answer(client, project, diagnosed, body, media_type):
    """Whatever bytes a browser or an attacker posts to the dashboard's forms: a 303 or a precise 4xx, never a 500."""
    path = f"/v1/dashboard/packets/{diagnosed['packet']['packet_id']}"
    headers = {"content-type": media_type} if media_type else {}
    for target, extra in (
        ("/v1/dashboard/login", {}),
        (f"{path}/approve", project.auth("dashboard")),
        (f"{path}/reject", {**JSON, **project.auth("dashboard")}),
    ):
        answer = client.post(target, content=body, headers={**headers, **extra})
        assert answer.status_code in (303, 400, 401, 403, 413, 415), (target, answer.status_code, answer.text)
    assert client.get("/healthz").status_code == 200


def test_the_packet_page_shows_the_timeline_with_stages_escaped(client, project, diagnosed):
    """Decision, stages and verification in time order; a stage's url and note are data, never markup."""
    packet_id = diagnosed["packet"]["packet_id"]
    auth = project.auth("dashboard")
    page = client.get(f"/v1/dashboard/packets/{packet_id}", headers=auth)
    parsed = check_markup(page)
    assert [a.get("class") for a in parsed.all("li") if (a.get("class") or "").startswith("event-")] == [
        "event-diagnosed"
    ]
    assert "No stage recorded yet" in page.text
    decided = client.post(f"/v1/packets/{packet_id}/approve", json={"note": "go"}, headers=auth)
    assert decided.status_code == 200
    hostile_url = 'https://example.com/pull/1"onmouseover="alert(1)"><script>alert(2)</script>'
    body = {"stage": "pr_opened", "url": hostile_url, "note": XSS}
    recorded = client.post(f"/v1/packets/{packet_id}/stages", json=body, headers=project.auth("agent"))
    assert recorded.status_code == 201, recorded.text
    merged = client.post(f"/v1/packets/{packet_id}/stages", json={"stage": "merged"}, headers=project.auth("agent"))
    assert merged.status_code == 201
    verified = client.post("/v1/runs/verify", json={"packet_id": packet_id}, headers=project.auth("agent"))
    assert verified.status_code == 200

    page = client.get(f"/v1/dashboard/packets/{packet_id}", headers=auth)
    assert page.status_code == 200
    parsed = check_markup(page)  # one script only (the nonce'd one): the stage's text added none
    events = [a.get("class") for a in parsed.all("li") if (a.get("class") or "").startswith("event-")]
    assert events == ["event-diagnosed", "event-approved", "event-pr_opened", "event-merged", "event-verified"]
    [link] = [a for a in parsed.all("a") if "stage-url" in (a.get("class") or "")]
    assert link == {"class": "mono stage-url", "href": hostile_url, "rel": "noopener noreferrer nofollow"}
    assert "<script>alert" not in page.text and 'onmouseover="alert' not in page.text
    assert "No stage recorded yet" not in page.text


def test_the_dashboard_json_gives_expires_at_in_rfc_3339_as_signup_does(server: Running, client: httpx.Client) -> None:
    signup = client.post("/v1/signup", json={"project_name": "sandbox app"})
    assert signup.status_code == 201, signup.text
    body = signup.json()
    index = client.get("/v1/dashboard", headers={**JSON, "authorization": f"Bearer {body['dashboard_key']}"})
    assert index.status_code == 200, index.text
    validator(client.get("/openapi.json").json(), "DashboardIndex").validate(index.json())
    assert index.json()["project"]["expires_at"] == body["expires_at"]
    page = client.get("/v1/dashboard", headers={"authorization": f"Bearer {body['dashboard_key']}"}).text
    assert body["expires_at"][:19].replace("T", " ") + " UTC" in page
