"""The demo's steps after the server started: sign up, run the sample app, diagnose, hand off, approve, verify."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from loopkit_core.client import ClientError, send
from loopkit_core.demo import STEPS
from loopkit_core.demo.sample_app import SERVICE, WINDOW_MINUTES, TripPlanner


class DemoError(Exception):
    """A step of the demo could not run: the server answered an error, or could not be reached."""


class Script:
    """The loop against the demo server, over plain HTTP with the project's keys, step by step."""

    def __init__(self, base: str, grpc_target: str, started: float, say: Callable[[str], None]) -> None:
        self.base = base
        self.grpc_target = grpc_target
        self.say = say
        self.started = started
        self.keys: dict[str, str] = {}
        self.project_id = ""
        self.packet_id = ""

    def step(self, n: int, text: str) -> None:
        """A progress line."""
        self.say(f"\n[{n}/{STEPS}] {text}  (t+{time.monotonic() - self.started:.1f} s)")

    def run(self) -> list[str]:
        """Every step after the server started; the expectations that were not met."""
        problems: list[str] = []
        self.step(2, "signing up a sandbox project (POST /v1/signup)")
        created = self.api("POST", "/v1/signup", None, {"project_name": "trip planner demo"}, expect=201)
        self.project_id = created["project_id"]
        self.keys = {k: created[k] for k in ("producer_key", "agent_key", "dashboard_key")}
        self.say(f"      project {self.project_id}: producer, agent and dashboard keys minted (printed at the end)")

        self.step(3, f"running the sample agent app '{SERVICE}' through the real OTLP/HTTP exporter")
        app = TripPlanner(f"{self.base}/v1/traces", self.keys["producer_key"], self.say)
        now = time.time_ns()
        app.baseline(now)
        app.bad_window(now)

        self.step(4, f"diagnosing the last {WINDOW_MINUTES} minutes (POST /v1/runs/diagnose, min_count 3)")
        packet = self.api("POST", "/v1/runs/diagnose", "agent", {"since_minutes": WINDOW_MINUTES, "min_count": 3})[
            "packet"
        ]
        self.packet_id = packet["packet_id"]
        signals = self.api("GET", f"/v1/telemetry?type=user_signal&since_minutes={WINDOW_MINUTES}&limit=1000", "agent")[
            "records"
        ]
        self.print_packet(packet, len(signals))
        issues = _find_issues(packet)
        for label in ("tool", "route", "latency", "signals"):
            if label not in issues:
                problems.append(f"the first diagnosis has no {_LABELS[label]} issue")
        if not issues:
            raise DemoError("the diagnosis found none of the expected issues: " + "; ".join(problems))

        self.step(5, f"the Markdown handoff for a coding agent (GET /v1/packets/{self.packet_id}/handoff)")
        markdown = self.api("GET", f"/v1/packets/{self.packet_id}/handoff?format=markdown", "agent", raw=True)
        self.say("----- 8< ----- handoff (Markdown) " + "-" * 40)
        self.say(markdown.rstrip("\n"))
        self.say("----- >8 ----- end of handoff " + "-" * 44)

        self.step(6, "a person approves with the dashboard key (POST /v1/packets/{id}/approve)")
        note = "Evidence checked: the flight search timeouts and the N+1 reviews query are ours. Fix in 1.4.1."
        approved = self.api("POST", f"/v1/packets/{self.packet_id}/approve", "dashboard", {"note": note})
        approval = approved["approval"]
        self.say(f"      {approved['status']} by {approval['decided_by']} at {approval['decided_at']}")
        self.say(f'      note: "{approval["note"]}"')
        self.say("      LoopKit posted nothing and changed nothing: the decision is recorded, that is all.")

        self.step(7, "shipping the fix (version 1.4.1: flights search with a retry, reviews in one query)")
        self.say("      the route GET /trips/{trip_id} is not part of this fix and gets no traffic")
        app.fixed_traffic()
        verification = self.verify()
        expected = {"tool": "held", "latency": "held", "route": "insufficient_data", "signals": "held"}
        problems += _compare(verification, issues, expected, "the first verification")

        self.step(8, "a regression: one search_flights timeout comes back, then verify and diagnose again")
        app.regression()
        verification = self.verify()
        problems += _compare(verification, issues, {"tool": "regressed", "latency": "held"}, "the second verification")
        again = self.api("POST", "/v1/runs/diagnose", "agent", {"since_minutes": WINDOW_MINUTES, "min_count": 3})[
            "packet"
        ]
        self.say(f"      next diagnosis {again['packet_id']}:")
        for issue in again["issues"]:
            flag = "  regression: true" if issue.get("regression") else ""
            self.say(f"        {issue['issue_id']}  status {issue['status']:<10} {_short(issue['title'], 64)}{flag}")
        tool = issues.get("tool")
        if tool:
            seen = next((i for i in again["issues"] if i["issue_id"] == tool["issue_id"]), None)
            if seen is None:
                problems.append(f"the next diagnosis lost issue {tool['issue_id']}")
            elif seen.get("status") != "regressed" or not seen.get("regression"):
                problems.append(f"the next diagnosis shows {tool['issue_id']} as {seen.get('status')}, not regressed")
        return problems

    def verify(self) -> dict[str, Any]:
        """POST /v1/runs/verify for the packet, printed."""
        verification = self.api("POST", "/v1/runs/verify", "agent", {"packet_id": self.packet_id})["verification"]
        after = verification["window_after"]
        self.say(f"      {verification['verification_id']}: after-window {after['start']} → {after['end']}")
        for v in verification["verdicts"]:
            self.say(f"        {v['verdict']:<17} {v['issue_id']}  {_short(v['title'], 72)}")
            self.say(f"        {'':<17} {v['reason']}")
        return verification

    def print_packet(self, packet: dict[str, Any], user_signals: int) -> None:
        """A compact summary of the packet: its window, counts and issues with their evidence."""
        window = packet["window"]
        self.say(f"      packet {packet['packet_id']}   status {packet['status']}")
        self.say(
            f"      window {window['start']} → {window['end']}   records read {packet['telemetry_read']}   "
            f"failures {packet['failures']}   diagnosers {', '.join(packet['diagnosers'])}"
        )
        required = "required" if packet["approval_required"] else "not required"
        self.say(f"      approval {required}, now {packet['approval']['state']}")
        for n, issue in enumerate(packet["issues"], 1):
            self.say(f"      {n}. {issue['title']}")
            self.say(
                f"         {issue['issue_id']}  {issue['signal_type']}  count {issue['count']}  "
                f"severity {issue['severity']}  eval {issue['eval_candidate']}"
            )
            shown = ", ".join(issue["evidence"][:3])
            more = f" (+{len(issue['evidence']) - 3} more)" if len(issue["evidence"]) > 3 else ""
            self.say(f"         evidence {shown}{more}")
            if issue.get("probable_cause"):
                symptoms = ", ".join(issue["symptoms"])
                self.say(f"         probable cause of {symptoms} (the same traces, caller -> callee)")
            if issue.get("cause_issue_id"):
                self.say(f"         symptom of {issue['cause_issue_id']}: one task, the cause's")
            for found in (issue.get("stats") or {}).get("telling_attributes", [])[:1]:
                self.say(
                    f"         telling: {found['key']}={found['value']} on {found['issue_share']:.0%} of its records, "
                    f"{found['other_share']:.0%} of the other calls (Fisher p {found['p_value']:.2g})"
                )
        impact = packet.get("impact") or {}
        self.say(
            f"      + {user_signals} thumbs-down user_signal records in the window "
            f"(GET /v1/telemetry?type=user_signal): {impact.get('negative_signals_linked', 0)} linked to issues;"
            "\n        impact: "
            f"{impact.get('sessions', 0)} sessions and {impact.get('users', 0)} users reached by the issues"
        )
        signal = _find_issues(packet).get("signals")
        if signal is not None:
            self.print_signal_issue(signal)

    def print_signal_issue(self, issue: dict[str, Any]) -> None:
        """What the user_signals diagnoser said, what it linked, and where to see a session and a trace."""
        stats = issue["stats"]
        self.say(f"      user-signal issue {issue['issue_id']}:")
        for found in stats.get("co_occurring", [])[:2]:
            self.say(f"        {found['text']}")
        for link in issue["impact"]["linked_issues"]:
            self.say(f"        linked to {link['issue_id']} ({link['negative_signals']} shared signals)")
        record = self.api("GET", f"/v1/records/{issue['evidence'][0]}", "agent")["record"]
        if record.get("session_id"):
            self.say(f"        session  {self.base}/v1/dashboard/sessions/{record['session_id']}")
        if issue["traces"]:
            trace = issue["traces"][0]
            self.say(f"        trace    {self.base}/v1/dashboard/traces/{trace}  (what the user was doing)")

    def summary(self, problems: list[str], keep_serving: bool) -> None:
        """Where to look next: the URLs and the keys of the demo project."""
        self.say(f"\nDone in {time.monotonic() - self.started:.1f} s" + (" with problems." if problems else "."))
        if not keep_serving:
            self.say("The server stops now; `loopkit demo --keep-serving` keeps it up, to try these:")
        # The key rides in the fragment: browsers never send it, and the page drops it from the address bar.
        self.say(
            f"  dashboard  {self.base}/v1/dashboard#key={self.keys.get('dashboard_key', '')}  "
            "(open it in a browser: it signs in with the dashboard key)"
        )
        self.say(f"  packets    {self.base}/v1/packets  (agent or dashboard key)")
        self.say(f"  handoff    {self.base}/v1/packets/{self.packet_id}/handoff?format=markdown  (agent key)")
        self.say(f"  ingest     {self.base}/v1/traces  and OTLP/gRPC {self.grpc_target}  (producer key)")
        self.say(f"  project    {self.project_id}  (a sandbox on a temporary store)")
        for kind in ("producer", "agent", "dashboard"):
            self.say(f"  {kind + ' key':<14} {self.keys.get(kind + '_key', '-')}")
        self.say(f'  e.g.       curl -s {self.base}/v1/packets -H "authorization: Bearer {self.keys.get("agent_key")}"')

    def api(
        self,
        method: str,
        path: str,
        key: str | None,
        body: dict[str, Any] | None = None,
        expect: int = 200,
        raw: bool = False,
    ) -> Any:
        """Call the demo server with one of the project's keys (or none); DemoError on anything but `expect`."""
        secret = self.keys[key + "_key"] if key else None
        try:
            return send(method, self.base, path, key=secret, body=body, expect=expect, raw=raw, timeout=60)
        except ClientError as exc:
            raise DemoError(f"{method} {path}: {exc}") from None


_LABELS = {
    "tool": "search_flights tool-timeout",
    "route": "GET /trips/{trip_id} error",
    "latency": "GET /api/recommendations latency",
    "signals": "POST /chat thumbs-down",
}


def _find_issues(packet: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The packet's issues the demo expects, by label."""
    found: dict[str, dict[str, Any]] = {}
    for issue in packet["issues"]:
        stats = issue.get("stats") or {}
        operation = stats.get("operation")
        if issue["signal_type"] == "tool_failure" and operation == "search_flights":
            found.setdefault("tool", issue)
        elif issue["signal_type"] == "error" and operation == "/trips/{trip_id}":
            found.setdefault("route", issue)
        elif issue["signal_type"] == "latency" and operation == "GET /api/recommendations":
            found.setdefault("latency", issue)
        elif issue["signal_type"] == "user_signal" and operation == "POST /chat":
            found.setdefault("signals", issue)
    return found


def _compare(
    verification: dict[str, Any], issues: dict[str, dict[str, Any]], expected: dict[str, str], what: str
) -> list[str]:
    verdicts = {v["issue_id"]: v["verdict"] for v in verification["verdicts"]}
    problems = []
    for label, want in expected.items():
        issue = issues.get(label)
        if issue is None:
            continue  # already reported: the diagnosis did not find it
        got = verdicts.get(issue["issue_id"])
        if got != want:
            problems.append(f"{what}: the {_LABELS[label]} issue ({issue['issue_id']}) is {got}, expected {want}")
    return problems


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"
