"""Merging and unmerging issues on the dashboard, in a real headless Chromium driven by Playwright.

The traffic (tests/test_dashboard_browser.py's, through the real OTLP/HTTP exporter) makes two issues: 6 checkout
timeouts and 4 failures of a flights tool. A person merges the tool issue into the checkout issue from its page,
the next diagnosis has one issue of 10, and the person unmerges it again. Skips without Chromium or Playwright
(and fails in CI), like the other browser tests.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from test_dashboard_browser import TIMEOUT_MS, XSS, artifacts_dir, browser, send_traffic, watch

from loopkit_core.server import Running

__all__ = ["browser"]  # the fixture, shared with the dashboard's browser tests


@pytest.fixture
def world(server: Running, client: httpx.Client) -> dict[str, Any]:
    """A signed-up project with telemetry and one diagnosis packet: two issues, 6 and 4 records."""
    signup = client.post("/v1/signup", json={"project_name": "merge shop"})
    assert signup.status_code == 201, signup.text
    keys = signup.json()
    send_traffic(server, keys["producer_key"])
    agent = {"authorization": f"Bearer {keys['agent_key']}"}
    ran = client.post("/v1/runs/diagnose", json={"min_count": 3}, headers=agent)
    assert ran.status_code == 200, ran.text
    by_count = {i["count"]: i for i in ran.json()["packet"]["issues"]}
    assert sorted(by_count) == [4, 6]
    return {"signup": keys, "agent": agent, "checkout": by_count[6], "tool": by_count[4]}


def test_a_person_merges_and_unmerges_an_issue_from_its_page(browser, server, client, world):
    base = server.http_url
    checkout, tool = world["checkout"], world["tool"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    seen = watch(page)
    page.goto(world["signup"]["dashboard_url"])
    page.wait_for_url(f"{base}/v1/dashboard")

    # From the Issues page to the tool issue's page: not merged, no audit rows yet, a merge form.
    page.goto(f"{base}/v1/dashboard/issues")
    page.locator("#issues tr.issue-row", has_text=tool["issue_id"]).locator("a.issue-link").click()
    page.wait_for_url(f"{base}/v1/dashboard/issues/{tool['fingerprint']}")
    assert page.locator("#merge-state").inner_text().startswith("Not merged into another issue.")
    assert page.locator("#no-merges").count() == 1
    options = page.locator("#into option").all_inner_texts()
    assert options == ["Pick an issue…", f"{checkout['title']} ({checkout['fingerprint']})"]

    # Merge it into the checkout issue, with a note that carries markup (shown as text, never run).
    page.get_by_label("Merge into").select_option(checkout["fingerprint"])
    page.get_by_label("Note (optional: why)").fill("same outage " + XSS)
    page.get_by_role("button", name="Merge").click()
    page.wait_for_url(f"{base}/v1/dashboard/issues/{tool['fingerprint']}#merges")
    assert page.locator("#merged-into").inner_text() == checkout["fingerprint"]
    [row] = page.locator("#merge-trail tbody tr").all()
    cells = row.locator("td").all_inner_texts()
    assert cells[1:4] == ["merge", tool["fingerprint"], checkout["fingerprint"]]
    assert cells[4].startswith("dashboard key lk_dash_") and cells[5] == "same outage " + XSS
    assert page.locator("#unmerge-form").count() == 1 and page.locator("#merge-form").count() == 0
    page.screenshot(path=str(artifacts_dir() / "dashboard-issue-merged.png"), full_page=True)

    # The Issues page marks it, the target's page lists it, and the next diagnosis has one issue of 6 + 4.
    page.goto(f"{base}/v1/dashboard/issues")
    assert checkout["fingerprint"] in page.locator(".merged-into").inner_text()
    page.goto(f"{base}/v1/dashboard/issues/{checkout['fingerprint']}")
    assert page.locator("a.merged-from").all_inner_texts() == [tool["fingerprint"]]
    ran = client.post("/v1/runs/diagnose", json={"min_count": 3}, headers=world["agent"])
    [merged] = ran.json()["packet"]["issues"]
    assert (merged["fingerprint"], merged["count"], merged["merged_from"]) == (
        checkout["fingerprint"],
        10,
        [tool["fingerprint"]],
    )

    # Unmerge from the tool issue's page: apart again, two audit rows, two issues at the next diagnosis.
    page.goto(f"{base}/v1/dashboard/issues/{tool['fingerprint']}")
    page.get_by_label("Note (optional: why)").fill("two faults after all")
    page.get_by_role("button", name="Unmerge").click()
    page.wait_for_url(f"{base}/v1/dashboard/issues/{tool['fingerprint']}#merges")
    assert page.locator("#merge-state").inner_text().startswith("Not merged into another issue.")
    actions = [r.locator("td").nth(1).inner_text() for r in page.locator("#merge-trail tbody tr").all()]
    assert actions == ["merge", "unmerge"]
    ran = client.post("/v1/runs/diagnose", json={"min_count": 3}, headers=world["agent"])
    assert sorted(i["count"] for i in ran.json()["packet"]["issues"]) == [4, 6]

    # A form made stale by another tab: the merge is refused on the page (409), nothing more is written.
    page.get_by_label("Merge into").select_option(checkout["fingerprint"])
    other = client.post(
        f"/v1/issues/{tool['fingerprint']}/merge",
        json={"into": checkout["fingerprint"]},
        headers={"authorization": f"Bearer {world['signup']['dashboard_key']}"},
    )
    assert other.status_code == 200
    page.get_by_role("button", name="Merge").click()
    assert "already merged" in page.locator("#form-error").inner_text()
    assert page.locator("#merge-trail tbody tr").count() == 3
    # A POST without the page's csrf token is refused.
    forged = page.request.post(
        f"{base}/v1/dashboard/issues/{tool['fingerprint']}/unmerge", form={"note": "x"}, headers={"origin": base}
    )
    assert forged.status == 403 and "the form expired or came from another site" in forged.text()
    trail = client.get(f"/v1/issues/{tool['fingerprint']}", headers=world["agent"]).json()["issue"]["merges"]
    assert [m["action"] for m in trail] == ["merge", "unmerge", "merge"]

    assert seen["dialogs"] == [] and page.evaluate("window.__pwned === undefined")
    assert not [m for m in seen["console"] if "Content Security Policy" in m], seen["console"]
    context.close()


def test_the_agent_key_sees_the_merge_state_but_cannot_merge(browser, server, client, world):
    base = server.http_url
    tool, checkout = world["tool"], world["checkout"]
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{base}/v1/dashboard#key={world['signup']['agent_key']}")
    page.wait_for_url(f"{base}/v1/dashboard")
    page.goto(f"{base}/v1/dashboard/issues/{tool['fingerprint']}")
    assert page.locator("#merge-form").count() == 0
    assert "may read but not merge" in page.locator("#merges").locator("..").inner_text()
    refused = page.request.post(
        f"{base}/v1/dashboard/issues/{tool['fingerprint']}/merge",
        form={"into": checkout["fingerprint"], "note": "an agent merging"},
        headers={"origin": base},
    )
    assert refused.status == 403 and "may read the dashboard but not merge" in refused.text()
    found = client.get(f"/v1/issues/{tool['fingerprint']}", headers=world["agent"]).json()["issue"]
    assert found["merges"] == [] and found["merged_into"] is None
    context.close()
