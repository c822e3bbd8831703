"""Handoff renderers: golden json/markdown/prompt on a realistic packet, the packet JSON Schema, plugins, the CLI.

The packet is built deterministically: a server with a fixed clock, OTLP/JSON spans with fixed trace/span IDs and
timestamps (tests/loopdata.py). Only what is random per run is normalised before comparing with tests/golden/: the
project ID (and the record and issue IDs derived from it), the packet ID and the key's display prefix. Regenerate
the goldens with `LOOPKIT_UPDATE_GOLDENS=1 python -m pytest tests/test_handoff.py`, then read the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from conftest import make_settings, new_project
from loopdata import NOW_NS, Clock, Loop, Spans, realistic_packet_traffic, running_loop

from loopkit_core.server import in_thread

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("LOOPKIT_UPDATE_GOLDENS") == "1"
PUBLIC_URL = "https://loopkit.example"
BOUNDARY = (
    "Do not post issues, open or merge pull requests, deploy or ship anything without the recorded human "
    "approval of this packet. LoopKit never does any of these itself."
)
FORMATS = {  # format -> (golden file, content type)
    "json": ("handoff.json", "application/json"),
    "markdown": ("handoff.md", "text/markdown; charset=utf-8"),
    "prompt": ("handoff.prompt.txt", "text/plain; charset=utf-8"),
}


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    """The realistic packet, diagnosed at NOW over the last 60 minutes."""
    with running_loop(tmp_path / "data", realistic_packet_traffic, public_url=PUBLIC_URL) as running:
        yield running


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden {path}; run with LOOPKIT_UPDATE_GOLDENS=1 once and review it"
    assert text == path.read_text(), f"{name} differs from its golden (LOOPKIT_UPDATE_GOLDENS=1 to regenerate)"


def test_the_realistic_packet_has_a_signature_issue_and_a_latency_issue(loop: Loop):
    pid = loop.project.project_id
    issues = {i["diagnoser"]: i for i in loop.packet["issues"]}
    assert sorted(issues) == ["latency_outliers", "signature_clusterer"]
    errors = issues["signature_clusterer"]
    assert (errors["count"], errors["signal_type"], errors["stats"]["span_name"]) == (6, "error", "POST /checkout")
    # Evidence: the six failed checkouts, newest first, exactly the spans sent.
    assert errors["evidence"] == loop.spans.ids_of(pid, "checkout-err-")[::-1]
    latency = issues["latency_outliers"]
    assert (latency["count"], latency["signal_type"], latency["stats"]["baseline_calls"]) == (40, "latency", 120)
    assert set(latency["evidence"]) <= set(loop.spans.ids_of(pid, "search-"))
    assert loop.packet["approval"] == {
        "state": "pending",
        "decided_by": None,
        "decided_at": None,
        "note": None,
        "trail": [],
    }


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_golden_handoff(loop: Loop, fmt: str):
    name, content_type = FORMATS[fmt]
    answer = loop.handoff(fmt)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == content_type
    check_golden(name, loop.normalise(answer.text))


def test_the_default_format_is_json(loop: Loop):
    default, explicit = loop.handoff(None), loop.handoff("json")
    assert default.status_code == 200 and default.headers["content-type"] == "application/json"
    assert default.text == explicit.text


def test_every_handoff_carries_the_evidence_eval_plan_approval_and_boundary(loop: Loop):
    """What the goldens must contain, said once more in code so a regenerated golden cannot silently drop it."""
    pid = loop.project.project_id
    texts = {fmt: loop.handoff(fmt).text for fmt in FORMATS}
    for fmt, text in texts.items():
        assert BOUNDARY in text, fmt
        for issue in loop.packet["issues"]:
            for record_id in issue["evidence"]:
                assert record_id in text, (fmt, record_id)
            assert issue["eval_candidate"] in text and issue["fingerprint"] in text, fmt
            for step in issue["patch_plan"]:
                assert step["text"] in text or json.dumps(step["text"])[1:-1] in text, (fmt, step["text"])
    # Short excerpts of the evidence: each failed checkout's own message, next to its record ID.
    markdown = texts["markdown"].splitlines()
    for n, record_id in enumerate(loop.spans.ids_of(pid, "checkout-err-")):
        row = next(line for line in markdown if line.startswith(f"| `{record_id}` |"))
        # Telemetry text is quoted (issue 22): the operation and the message are code spans.
        message = f"payment gateway timed out after 3000 ms (order {10_000 + 7 * n})"
        assert row.endswith(f"| `POST /checkout` | `{message}` |")
    assert "**Approval:** pending: no human has approved this packet yet" in texts["markdown"]
    assert "APPROVAL: pending" in texts["prompt"] and "only investigate and prepare a patch locally" in texts["prompt"]
    assert json.loads(texts["json"])["approval"]["state"] == "pending"


def test_the_json_handoff_validates_against_the_published_schema(loop: Loop):
    served = loop.client.get("/schema/packet.json")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/schema+json"
    assert served.content == (REPO / "loopkit_core" / "static" / "packet.schema.json").read_bytes()
    schema = served.json()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())

    document = json.loads(loop.handoff("json").text)
    validator.validate(document)
    assert document["schema"] == f"{PUBLIC_URL}/schema/packet.json"
    assert (document["handoff_version"], document["boundary"]) == ("1", BOUNDARY)
    assert document["telemetry_note"].startswith("String values that come from telemetry ")
    # The json handoff is the stored packet plus the handoff fields: nothing else added, nothing lost.
    stored = loop.client.get(f"/v1/packets/{loop.packet['packet_id']}", headers=loop.project.auth("agent")).json()
    extra = {"handoff_version", "schema", "boundary", "telemetry_note", "evidence_excerpts"}
    assert {k: v for k, v in document.items() if k not in extra} == stored["packet"]
    every_evidence = {rid for issue in document["issues"] for rid in issue["evidence"]}
    assert set(document["evidence_excerpts"]) == every_evidence
    # Also the packet itself, as diagnose answered it, and after a decision and a verification.
    validator.validate(loop.packet)
    approved = loop.client.post(
        f"/v1/packets/{loop.packet['packet_id']}/approve", json={"note": "ok"}, headers=loop.project.auth("dashboard")
    )
    assert approved.status_code == 200, approved.text
    verified = loop.client.post(
        "/v1/runs/verify", json={"packet_id": loop.packet["packet_id"]}, headers=loop.project.auth("agent")
    )
    assert verified.status_code == 200, verified.text
    document = json.loads(loop.handoff("json").text)
    validator.validate(document)
    assert document["status"] == "approved" and len(document["verifications"]) == 2
    # The schema really constrains: a wrong verdict or approval state is refused.
    broken = {**document, "approval": {**document["approval"], "state": "maybe"}}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)
    broken = {**document, "verifications": [{**document["verifications"][0], "verdict": "fixed"}]}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_the_approval_state_shows_in_every_handoff_after_approve(loop: Loop):
    loop.clock.set(NOW_NS + 5 * 60 * 10**9)
    note = "Evidence checked: the gateway timeout is real; fix the retry budget."
    answer = loop.client.post(
        f"/v1/packets/{loop.packet['packet_id']}/approve", json={"note": note}, headers=loop.project.auth("dashboard")
    )
    assert answer.status_code == 200, answer.text
    key = loop.project.dashboard_key
    decided = f'approved by dashboard key {key[:12]}… at 2026-03-02T10:05:00.000000Z — "{note}"'
    markdown = loop.handoff("markdown").text
    assert f"**Approval:** {decided}" in markdown
    assert "pending" not in markdown
    prompt = loop.handoff("prompt").text
    assert f"APPROVAL: {decided}.\n" in prompt
    assert "only investigate" not in prompt and BOUNDARY in prompt
    document = json.loads(loop.handoff("json").text)
    assert document["status"] == "approved"
    assert document["approval"] == {
        "state": "approved",
        "decided_by": f"dashboard key {key[:12]}…",
        "decided_at": "2026-03-02T10:05:00.000000Z",
        "note": note,
        "trail": [
            {
                "decision": "approved",
                "note": note,
                "actor": f"dashboard key {key[:12]}…",
                "decided_at": "2026-03-02T10:05:00.000000Z",
            }
        ],
    }
    assert {i["status"] for i in document["issues"]} == {"approved"}
    check_golden("handoff.approved.prompt.txt", loop.normalise(prompt))


def test_unknown_format_is_400_listing_the_formats(loop: Loop):
    for fmt in ("pdf", "", "JSON", "x" * 500):
        answer = loop.handoff(fmt)
        assert answer.status_code == 400, fmt
        error = answer.json()["error"]
        assert error["code"] == "bad_request"
        assert error["message"].endswith("available: json, markdown, prompt"), error["message"]
        assert len(error["message"]) < 120


def test_handoff_errors_and_keys(loop: Loop, tmp_path: Path):
    assert loop.handoff("markdown", packet_id="pkt_000000000000000000000000").status_code == 404
    assert loop.handoff("markdown", packet_id="pkt_" + "f" * 100).status_code == 404
    assert loop.handoff("markdown", key="dashboard").status_code == 403  # needs reports:read
    assert loop.handoff("markdown", key="producer").status_code == 403
    other = new_project(loop.server, "other")
    answer = loop.client.get(
        f"/v1/packets/{loop.packet['packet_id']}/handoff", params={"format": "json"}, headers=other.auth("agent")
    )
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def test_plugins_lists_the_built_in_renderers_and_verifiers(loop: Loop):
    answer = loop.client.get("/v1/plugins", headers=loop.project.auth("agent")).json()
    assert answer["renderers"] == [
        {
            "name": "json",
            "media_type": "application/json",
            "description": "the versioned packet as JSON (schema: /schema/packet.json)",
        },
        {
            "name": "markdown",
            "media_type": "text/markdown; charset=utf-8",
            "description": "an issue body a person can paste",
        },
        {
            "name": "prompt",
            "media_type": "text/plain; charset=utf-8",
            "description": "a prompt for a coding agent, with its boundary",
        },
    ]
    assert answer["verifiers"] == ["rate_verifier", "latency_verifier", "user_signals_verifier"]  # call order
    builtins = {p["name"]: p for p in answer["plugins"] if p["builtin"]}
    assert builtins["handoff"] == {
        "name": "handoff",
        "module": "loopkit_plugins.handoff",
        "distribution": "loopkit",
        "version": "0.1.0",
        "builtin": True,
        "hooks": ["register_handoff_renderers"],
    }


# --- a third party's renderers, through a real `loopkit` entry point -------------------------------------------

THIRD_PARTY = '''
from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Renderer


def one_line(packet, context):
    """One line per issue: fingerprint, count and the first evidence excerpt."""
    lines = [f"{packet['packet_id']} approval={packet['approval']['state']}"]
    for issue in packet["issues"]:
        first = context["records"][issue["evidence"][0]]
        lines.append(f"{issue['fingerprint']} {issue['count']} {first['record_id']} {first['name']}")
    return "\\n".join(lines) + "\\n"


def broken(packet, context):
    raise KeyError("no such field")


@hookimpl
def register_handoff_renderers():
    return [
        Renderer("oneline", "text/plain; charset=utf-8", "one line per issue", one_line),
        Renderer("markdown", "text/markdown; charset=utf-8", "a team's own issue body", lambda p, c: "ours\\n"),
        Renderer("broken", "text/plain", "always fails", broken),
    ]
'''


BROKEN_REGISTRATION = """
from loopkit_core.hookspecs import hookimpl


@hookimpl
def register_handoff_renderers():
    raise RuntimeError("renderer registry unavailable")
"""


def install(site: Path, name: str, source: str) -> None:
    """A module and a dist-info declaring it as the `loopkit` entry point `name` (as pip would leave it)."""
    (site / f"loopkit_{name}.py").write_text(source)
    info = site / f"loopkit_{name}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: loopkit-{name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[loopkit]\n{name} = loopkit_{name}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake site-packages with a renderer plugin and one whose registration fails."""
    path = tmp_path / "site"
    path.mkdir()
    install(path, "oneline", THIRD_PARTY)
    install(path, "badregistry", BROKEN_REGISTRATION)
    monkeypatch.syspath_prepend(str(path))
    yield path
    for name in ("oneline", "badregistry"):
        sys.modules.pop(f"loopkit_{name}", None)


def test_a_third_party_renderer_is_served_and_listed(site: Path, tmp_path: Path):
    with (
        in_thread(make_settings(tmp_path / "data", public_url=PUBLIC_URL), clock=Clock(NOW_NS)) as server,
        httpx.Client(base_url=server.http_url, timeout=30) as client,
    ):
        project = new_project(server, "shop")
        spans = Spans()
        realistic_packet_traffic(spans)
        spans.send(client, project)
        packet = client.post("/v1/runs/diagnose", json={}, headers=project.auth("agent")).json()["packet"]
        listed = client.get("/v1/plugins", headers=project.auth("agent")).json()
        # A registration that raises loses that plugin's formats only, reported once however often one asks.
        assert listed == client.get("/v1/plugins", headers=project.auth("agent")).json()
        assert listed["load_errors"] == [
            {"plugin": "badregistry", "error": "RuntimeError: renderer registry unavailable"}
        ]
        listed["plugins"] = [p for p in listed["plugins"] if p["name"] != "badregistry"]
        assert listed["plugins"][-1] == {
            "name": "oneline",
            "module": "loopkit_oneline",
            "distribution": "loopkit-oneline",
            "version": "0.1.0",
            "builtin": False,
            "hooks": ["register_handoff_renderers"],
        }
        # The third party is called first: its `markdown` wins over the built-in one of the same name.
        assert [(r["name"], r["description"]) for r in listed["renderers"]] == [
            ("oneline", "one line per issue"),
            ("markdown", "a team's own issue body"),
            ("broken", "always fails"),
            ("json", "the versioned packet as JSON (schema: /schema/packet.json)"),
            ("prompt", "a prompt for a coding agent, with its boundary"),
        ]
        url = f"/v1/packets/{packet['packet_id']}/handoff"
        answer = client.get(url, params={"format": "oneline"}, headers=project.auth("agent"))
        assert answer.status_code == 200 and answer.headers["content-type"] == "text/plain; charset=utf-8"
        expected = [f"{packet['packet_id']} approval=pending"] + [
            f"{i['fingerprint']} {i['count']} {i['evidence'][0]} {i['stats'].get('span_name', i['stats']['operation'])}"
            for i in packet["issues"]
        ]
        assert answer.text.splitlines() == expected
        assert client.get(url, params={"format": "markdown"}, headers=project.auth("agent")).text == "ours\n"
        # A renderer that raises answers 422 with its name, never 500; the others keep working.
        failed = client.get(url, params={"format": "broken"}, headers=project.auth("agent"))
        assert failed.status_code == 422
        assert failed.json()["error"] == {
            "code": "renderer_failed",
            "message": "renderer 'broken' failed: KeyError: 'no such field'",
        }
        assert client.get(url, params={"format": "prompt"}, headers=project.auth("agent")).status_code == 200
        unknown = client.get(url, params={"format": "pdf"}, headers=project.auth("agent"))
        assert unknown.json()["error"]["message"].endswith("available: broken, json, markdown, oneline, prompt")


# --- `loopkit handoff` against the running server -----------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
    command = [sys.executable, "-m", "loopkit_core.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environ, cwd=REPO)


def test_loopkit_handoff_prints_the_markdown(loop: Loop):
    pid = loop.packet["packet_id"]
    url, key = loop.server.http_url, loop.project.agent_key
    result = cli("handoff", pid, "--url", url, "--key", key)
    assert result.returncode == 0, result.stderr
    assert result.stdout == loop.handoff("markdown").text
    assert result.stdout.startswith(f"# LoopKit diagnosis {pid}\n")
    prompt = cli("handoff", pid, "--format", "prompt", "--url", url, "--key", key)
    assert prompt.returncode == 0 and prompt.stdout == loop.handoff("prompt").text
    missing = cli("handoff", "pkt_000000000000000000000000", "--url", url, "--key", key)
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == "loopkit: error: 404: no packet 'pkt_000000000000000000000000' in this project\n"
    unknown = cli("handoff", pid, "--format", "pdf", "--url", url, "--key", key)
    assert unknown.returncode == 1
    assert unknown.stderr == "loopkit: error: 400: unknown format 'pdf'; available: json, markdown, prompt\n"
    forbidden = cli("handoff", pid, "--url", url, "--key", loop.project.dashboard_key)
    assert forbidden.returncode == 1 and forbidden.stderr.startswith("loopkit: error: 403: ")
