"""Signing in to the dashboard: `next=` is decoded once, resolved and kept under /v1/dashboard; no login CSRF."""

from __future__ import annotations

import httpx
import pytest
from conftest import Project

BASE = "/v1/dashboard"

# (next as posted, the exact Location answered)
CASES = [
    # Encoded dot segments, which browsers resolve like plain ones.
    ("/v1/dashboard/%2e%2e/%2e%2e/x", BASE),
    ("/v1/dashboard/%2E%2E/%2E%2E/x", BASE),
    ("/v1/dashboard/.%2e/.%2e/evil", BASE),
    ("/v1/dashboard/%2e%2e%2f%2e%2e%2fx", BASE),
    ("/v1/dashboard/..%2f..%2fx", BASE),
    ("/v1/dashboard/../..", BASE),
    ("/v1/dashboard/../../", BASE),
    ("/v1/dashboard/..", BASE),
    ("/v1/dashboard/packets/../../../login", BASE),
    ("/v1/dashboard/./../x", BASE),
    # Encoded and literal slashes and backslashes that would make a scheme-relative (other host) URL.
    ("/v1/dashboard/%2f%2fevil.example", BASE),
    ("/v1/dashboard/..//evil.example", BASE),
    ("/v1/dashboard/%2e%2e/%2e%2e//evil.example", BASE),
    ("/v1/dashboard/%5c%5cevil.example", BASE),
    ("/v1/dashboard/\\..\\..\\x", BASE),
    ("/v1/dashboard%5c..%5c..%5cx", BASE),
    ("\\\\evil.example/v1/dashboard", BASE),
    ("/\\evil.example", BASE),
    ("%2f%2fevil.example/v1/dashboard", BASE),
    ("https:%2f%2fevil.example/v1/dashboard", BASE),
    ("//evil.example/v1/dashboard", BASE),
    ("https://evil.example/v1/dashboard", BASE),
    # Controls and spaces, raw or encoded.
    ("/v1/dashboard/%0d%0aset-cookie:x", BASE),
    ("/v1/dashboard/%00", BASE),
    ("/v1/dashboard/%09/x", BASE),
    ("/v1/dashboard/\u0085x", BASE),
    # Double encoding is decoded once only: %252e stays a literal "%2e" segment under the dashboard.
    ("/v1/dashboard/%252e%252e/x", "/v1/dashboard/%252e%252e/x"),
    # Back to login or logout is never a destination.
    ("/v1/dashboard/%6cogin", BASE),
    ("/v1/dashboard/packets/../logout", BASE),
    # Paths outside, or that only look like the prefix.
    ("/v1/dashboardx", BASE),
    ("/v1/dashboard%2fx/../../y", BASE),
    ("/elsewhere", BASE),
    ("/v1/%64ashboard/../x", BASE),
    # Ordinary destinations survive, dot segments inside the dashboard resolved.
    ("/v1/dashboard", BASE),
    ("/v1/dashboard/packets/pkt_0123", "/v1/dashboard/packets/pkt_0123"),
    ("/v1/dashboard/packets/pkt_1?limit=5", "/v1/dashboard/packets/pkt_1?limit=5"),
    ("/v1/dashboard/packets/../records/rec_1", "/v1/dashboard/records/rec_1"),
    ("/v1/dashboard/packets/%70kt_1", "/v1/dashboard/packets/pkt_1"),
    ("/v1/dashboard/./packets/pkt_1", "/v1/dashboard/packets/pkt_1"),
]


@pytest.mark.parametrize(("target", "location"), CASES, ids=[t for t, _ in CASES])
def test_next_is_normalised_before_the_redirect(client: httpx.Client, project: Project, target: str, location: str):
    signed = client.post("/v1/dashboard/login", data={"key": project.dashboard_key, "next": target})
    assert signed.status_code == 303, signed.text
    assert signed.headers["location"] == location


# (headers of the sign-in POST, status): the browser headers an attacker's page can and cannot produce.
LOGIN_ORIGINS = [
    # A cross-site page with `Referrer-Policy: no-referrer` (or a sandboxed frame) posts with Origin "null";
    # a browser without Sec-Fetch-Site says nothing more. Nothing proves the form is ours: refused.
    ({"origin": "null"}, 403),
    ({"origin": "null", "sec-fetch-site": "cross-site"}, 403),
    ({"origin": "null", "sec-fetch-site": "same-site"}, 403),
    ({"origin": "http://evil.example"}, 403),
    ({"origin": "http://evil.example", "sec-fetch-site": "same-origin"}, 403),
    # Our own page in a current browser: Sec-Fetch-Site says so, whatever the Origin.
    ({"origin": "null", "sec-fetch-site": "same-origin"}, 303),
    ({"sec-fetch-site": "same-origin"}, 303),
    ({"sec-fetch-site": "none"}, 303),
]


@pytest.mark.parametrize(("headers", "status"), LOGIN_ORIGINS, ids=[str(h) for h, _ in LOGIN_ORIGINS])
def test_sign_in_needs_proof_of_our_origin_from_a_browser(client, project, headers, status):
    signed = client.post("/v1/dashboard/login", data={"key": project.dashboard_key}, headers=headers)
    assert signed.status_code == status, signed.text
    if status == 403:
        assert "set-cookie" not in signed.headers
        assert client.get("/v1/dashboard", headers={"accept": "application/json"}).status_code == 401
    else:
        assert signed.headers["location"] == BASE and "loopkit_dashboard=" in signed.headers["set-cookie"]


def test_sign_in_from_our_own_origin_or_a_non_browser_client(server, client, project):
    # An older browser that names our origin, and a script (curl, httpx) that sends neither header.
    for headers in ({"origin": server.http_url}, {}):
        client.cookies.clear()
        signed = client.post("/v1/dashboard/login", data={"key": project.dashboard_key}, headers=headers)
        assert (signed.status_code, signed.headers["location"]) == (303, BASE)
        assert "loopkit_dashboard=" in signed.headers["set-cookie"]
