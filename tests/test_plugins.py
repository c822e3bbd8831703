"""Plugins through real entry points: third-party diagnosers, broken plugins, blocking, and `loopkit plugins`.

A third-party distribution is made visible the way pip would leave it, without installing anything: its
module plus a `NAME-VERSION.dist-info` directory (METADATA, entry_points.txt) in a temporary directory put on
sys.path, so `importlib.metadata.entry_points(group="loopkit")` finds it. Servers are real (HTTP on loopback,
SQLite on disk).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Project, make_settings, new_project

from loopkit_core.server import Running, in_thread

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "tests" / "data" / "thirdparty_plugin"
BUILTINS = {
    "latency_outliers": {
        "name": "latency_outliers",
        "module": "loopkit_plugins.latency_outliers",
        "distribution": "loopkit",
        "version": "0.1.0",
        "builtin": True,
        "hooks": ["diagnose"],
    },
    "signature_clusterer": {
        "name": "signature_clusterer",
        "module": "loopkit_plugins.signature_clusterer",
        "distribution": "loopkit",
        "version": "0.1.0",
        "builtin": True,
        "hooks": ["diagnose", "record_signature"],
    },
    "user_signals": {
        "name": "user_signals",
        "module": "loopkit_plugins.user_signals",
        "distribution": "loopkit",
        "version": "0.1.0",
        "builtin": True,
        "hooks": ["diagnose"],
    },
}
SLOW_USERS = {
    "name": "slow_users",
    "module": "loopkit_slow_users",
    "distribution": "loopkit-slow-users",
    "version": "0.1.0",
    "builtin": False,
    "hooks": ["diagnose", "verify_issue"],
}


class Site:
    """A directory on sys.path holding fake installed distributions (modules + dist-info)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.modules: list[str] = []

    def add(self, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
        """Install `modules` (name -> source) and a dist-info declaring `entry_points` in the `loopkit` group."""
        for module, source in modules.items():
            (self.path / f"{module}.py").write_text(source)
            self.modules.append(module)
        info = self.path / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text("[loopkit]\n" + lines)

    def add_example(self) -> None:
        """The documented example package (tests/data/thirdparty_plugin), declared exactly as its pyproject says."""
        project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
        modules = {m: (EXAMPLE / f"{m}.py").read_text() for m in ["loopkit_slow_users"]}
        self.add(project["name"], project["entry-points"]["loopkit"], modules)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """A fresh fake site-packages first on sys.path; its modules are forgotten afterwards."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    fake = Site(path)
    yield fake
    for module in fake.modules:
        sys.modules.pop(module, None)


def plugin(body: str) -> str:
    """The source of a plugin module: hookimpl and the model imported, then `body`."""
    header = "from loopkit_core.hookspecs import hookimpl\nfrom loopkit_core.model import Issue, Signature\n\n"
    return header + textwrap.dedent(body)


BOOM = plugin(
    """
    @hookimpl
    def diagnose(window, options):
        raise RuntimeError("boom: the plugin is broken")
    """
)


def checkout_errors(n: int) -> list[dict]:
    """n errors of one fault (variable parts differ), which the signature clusterer makes one issue."""
    return [
        {"type": "error", "name": "POST /checkout", "message": f"payment gateway timed out after {3000 + i} ms"}
        for i in range(n)
    ]


def thumbs_down(name: str, n: int) -> list[dict]:
    """n thumbs-down user signals on one operation."""
    return [
        {"type": "user_signal", "name": name, "user_id": f"u{i}", "attributes": {"feedback": "thumbs_down"}}
        for i in range(n)
    ]


def post(client: httpx.Client, project: Project, records: list[dict]) -> list[str]:
    """Post plain records with the producer key; all must be accepted; their record IDs."""
    answer = client.post("/v1/traces", json={"records": records}, headers=project.auth("producer"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == len(records), answer.text
    return answer.json()["record_ids"]


def diagnose(client: httpx.Client, project: Project, **body: object) -> dict:
    """POST /v1/runs/diagnose with the agent key; the packet."""
    answer = client.post("/v1/runs/diagnose", json=body, headers=project.auth("agent"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True
    return answer.json()["packet"]


# Built-in plugins that neither diagnose nor sign: always loaded, checked in tests/test_handoff.py/test_verify.py.
OTHER_BUILTINS = {
    "handoff": ["register_handoff_renderers"],
    "latency_verifier": ["verify_issue"],
    "rate_verifier": ["verify_issue"],
    "user_signals_verifier": ["verify_issue"],
}


def diagnosis_view(answer: dict) -> dict:
    """The plugins answer reduced to what these tests are about: diagnosers and load errors."""
    others = [p for p in answer["plugins"] if p["builtin"] and p["name"] in OTHER_BUILTINS]
    assert {p["name"]: p["hooks"] for p in others} == {
        name: hooks for name, hooks in OTHER_BUILTINS.items() if name in {p["name"] for p in others}
    }
    return {
        "ok": answer["ok"],
        "plugins": [p for p in answer["plugins"] if p not in others],
        "diagnosers": answer["diagnosers"],
        "load_errors": answer["load_errors"],
    }


def plugins_of(client: httpx.Client, project: Project) -> dict:
    """GET /v1/plugins with the agent key (diagnosis view)."""
    answer = client.get("/v1/plugins", headers=project.auth("agent"))
    assert answer.status_code == 200, answer.text
    return diagnosis_view(answer.json())


def serving(tmp_path: Path, name: str = "data", **overrides: object):
    """A real LoopKit on loopback ports with its own data dir."""
    return in_thread(make_settings(tmp_path / name, **overrides))


def client_for(running: Running) -> httpx.Client:
    """An HTTP client for a running server."""
    return httpx.Client(base_url=running.http_url, timeout=30)


def test_a_third_party_diagnoser_from_a_real_entry_point(tmp_path, site):
    site.add_example()
    with serving(tmp_path) as running, client_for(running) as client:
        project = new_project(running)
        listed = plugins_of(client, project)
        assert listed["plugins"] == [
            BUILTINS["latency_outliers"],
            BUILTINS["signature_clusterer"],
            BUILTINS["user_signals"],
            SLOW_USERS,
        ]
        assert listed["diagnosers"] == ["slow_users", "latency_outliers", "signature_clusterer", "user_signals"]
        assert listed["load_errors"] == []

        ids = post(client, project, thumbs_down("POST /checkout", 4) + thumbs_down("GET /search", 3))
        ids += post(client, project, [{"type": "user_signal", "name": "POST /checkout", "attributes": {}}])
        packet = diagnose(client, project)
        assert packet["diagnosers"] == ["slow_users", "latency_outliers", "signature_clusterer", "user_signals"]
        assert packet["diagnoser_errors"] == []
        assert packet["status"] == "ready_for_issue_diagnosis"
        by_operation = {i["stats"]["operation"]: i for i in packet["issues"]}
        assert sorted(by_operation) == ["GET /search", "POST /checkout"]
        assert [i["diagnoser"] for i in packet["issues"]] == ["slow_users", "slow_users"]
        checkout, search = by_operation["POST /checkout"], by_operation["GET /search"]
        assert (checkout["count"], search["count"]) == (4, 3)
        assert sorted(checkout["evidence"]) == sorted(ids[:4])
        assert sorted(search["evidence"]) == sorted(ids[4:7])
        assert checkout["evidence_ids"] == checkout["evidence"]
        assert checkout["evidence_sampled"] is False
        assert checkout["signal_type"] == "user_signal"
        assert checkout["status"] == "new"
        assert checkout["eval_candidate"] == "post-checkout-thumbs-down-v1"
        assert [step["kind"] for step in checkout["patch_plan"]] == ["hypothesis", "where_to_look", "change", "check"]

        # count, evidence and GET /v1/telemetry?issue= agree: exactly the thumbs-down of the operation.
        for issue in (checkout, search):
            for key in (issue["issue_id"], issue["fingerprint"]):
                page = client.get("/v1/telemetry", params={"issue": key}, headers=project.auth("agent"))
                assert page.status_code == 200, page.text
                assert sorted(r["record_id"] for r in page.json()["records"]) == sorted(issue["evidence"])
            via_url = client.get(issue["records_url"], headers=project.auth("agent"))
            assert sorted(r["record_id"] for r in via_url.json()["records"]) == sorted(issue["evidence"])

        # The same failure in a second run is the same issue (same fingerprint and issue_id).
        again = diagnose(client, project, diagnosers=["slow_users"])
        assert {i["issue_id"] for i in again["issues"]} == {checkout["issue_id"], search["issue_id"]}
        stored = client.get(f"/v1/packets/{packet['packet_id']}", headers=project.auth("agent")).json()["packet"]
        assert stored == packet


def test_a_raising_diagnoser_is_reported_and_the_built_ins_still_run(tmp_path, site):
    site.add("loopkit-boom", {"boom": "loopkit_boom"}, {"loopkit_boom": BOOM})
    with serving(tmp_path) as running, client_for(running) as client:
        project = new_project(running)
        ids = post(client, project, checkout_errors(5))
        packet = diagnose(client, project)
        assert packet["diagnosers"] == ["boom", "latency_outliers", "signature_clusterer", "user_signals"]
        assert packet["diagnoser_errors"] == [
            {"diagnoser": "boom", "error": "RuntimeError: boom: the plugin is broken"}
        ]
        [issue] = packet["issues"]
        assert issue["diagnoser"] == "signature_clusterer"
        assert issue["count"] == 5
        assert sorted(issue["evidence"]) == sorted(ids)
        assert packet["status"] == "ready_for_issue_diagnosis"


def bad_plugin(answer: str) -> str:
    """A diagnoser whose answer is `answer` (Python source), built on one well-formed issue `ISSUE`."""
    return plugin(
        f"""
        ISSUE = dict(fingerprint="bad-1", title="bad", signal_type="error", count=9, first_seen_ns=1, last_seen_ns=2,
                     selector={{"record_ids": []}})

        @hookimpl
        def diagnose(window, options):
            return {answer}
        """
    )


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ('["not an issue"]', "TypeError: diagnose returned str, not loopkit_core.model.Issue"),
        ('[Issue(**{**ISSUE, "selector": {"everything": True}})]', "ValueError: unknown selector ['everything']"),
        ('[Issue(**{**ISSUE, "stats": {"users": {"u1"}}})]', "TypeError: Type is not JSON serializable: set"),
        ('[Issue(**{**ISSUE, "count": "9"})]', "TypeError: Issue.count must be a non-negative int"),
        (
            '[Issue(**{**ISSUE, "fingerprint": "f" * 41})]',
            "ValueError: Issue.fingerprint must be a string of 1 to 40 characters",
        ),
        ("42", "TypeError: 'int' object is not iterable"),
        (
            '[Issue(**{**ISSUE, "severity": "urgent"})]',
            "ValueError: Issue.severity must be one of critical, high, medium, low",
        ),
        (
            '[Issue(**{**ISSUE, "signal_type": "span"})]',
            "ValueError: Issue.signal_type must be one of error, tool_failure, latency, user_signal, event",
        ),
    ],
)
def test_answers_that_cannot_be_served_are_diagnoser_errors(tmp_path, site, answer, error):
    site.add("loopkit-bad", {"bad": "loopkit_bad"}, {"loopkit_bad": bad_plugin(answer)})
    with serving(tmp_path) as running, client_for(running) as client:
        project = new_project(running)
        ids = post(client, project, checkout_errors(3))
        packet = diagnose(client, project)
        assert packet["diagnoser_errors"] == [{"diagnoser": "bad", "error": error}]
        assert [(i["diagnoser"], i["count"], sorted(i["evidence"])) for i in packet["issues"]] == [
            ("signature_clusterer", 3, sorted(ids))
        ]
        # Nothing of the refused answer was stored: its fingerprint is no issue.
        page = client.get("/v1/telemetry", params={"issue": "bad-1"}, headers=project.auth("agent"))
        assert page.status_code == 404


UPSTREAM = plugin(
    """
    SELECTOR = {"type": "event", "name": "upstream", "attributes": {"http.status_code": 503, "retry": True}}

    @hookimpl
    def diagnose(window, options):
        count, first, last = window.summary(SELECTOR)
        sample = window.sample(SELECTOR, limit=options["min_count"])
        return [
            Issue(fingerprint="upstream-503", title="503 from upstream", signal_type="event", count=count,
                  first_seen_ns=first, last_seen_ns=last, selector=SELECTOR, evidence=[r["record_id"] for r in sample])
        ]
    """
)


def test_attribute_selectors_match_exact_json_values_and_records_url_is_the_exact_window(tmp_path, site):
    site.add("loopkit-upstream", {"upstream": "loopkit_upstream"}, {"loopkit_upstream": UPSTREAM})
    with serving(tmp_path) as running, client_for(running) as client:
        project = new_project(running)

        def event(attributes: dict, type_: str = "event", name: str = "upstream") -> dict:
            return {"type": type_, "name": name, "attributes": attributes}

        match = {"http.status_code": 503, "retry": True}
        ids = post(
            client,
            project,
            [event(match)] * 3
            + [
                event({"http.status_code": "503", "retry": True}),  # a string is not the number 503
                event({"http.status_code": 503, "retry": False}),
                event({"http.status_code": 503}),
                event(match, type_="error"),
                event(match, name="other"),
            ],
        )
        for min_count, evidence in [(3, 3), (2, 2)]:
            packet = diagnose(client, project, diagnosers=["upstream"], min_count=min_count, since_minutes=1.2345678)
            [issue] = packet["issues"]
            assert (issue["count"], len(issue["evidence"])) == (3, evidence)
            assert set(issue["evidence"]) <= set(ids[:3])
            assert issue["evidence_sampled"] is (evidence < 3)
            assert issue["records_url"] == (
                f"/v1/telemetry?issue={issue['issue_id']}&since_minutes=1.2345678&until={packet['created_ns']}"
            )
            page = client.get(issue["records_url"], headers=project.auth("agent")).json()
            assert sorted(r["record_id"] for r in page["records"]) == sorted(ids[:3])


def test_unloadable_plugins_are_load_errors_and_the_server_still_works(tmp_path, site):
    site.add("loopkit-broken", {"broken": "loopkit_broken"}, {"loopkit_broken": "import loopkit_no_such_module\n"})
    misspelt = plugin(
        """
        @hookimpl
        def diagnoze(window, options):
            return []
        """
    )
    site.add("loopkit-misspelt", {"misspelt": "loopkit_misspelt"}, {"loopkit_misspelt": misspelt})
    wrong_args = plugin(
        """
        @hookimpl
        def diagnose(records):
            return []
        """
    )
    site.add("loopkit-wrong-args", {"wrong_args": "loopkit_wrong_args"}, {"loopkit_wrong_args": wrong_args})
    site.add("loopkit-impostor", {"signature_clusterer": "loopkit_boom"}, {"loopkit_boom": BOOM})
    site.add_example()
    with serving(tmp_path) as running, client_for(running) as client:
        project = new_project(running)
        listed = plugins_of(client, project)
        assert listed["plugins"] == [
            BUILTINS["latency_outliers"],
            BUILTINS["signature_clusterer"],
            BUILTINS["user_signals"],
            SLOW_USERS,
        ]
        errors = {e["plugin"]: e["error"] for e in listed["load_errors"]}
        assert sorted(errors) == ["broken", "misspelt", "signature_clusterer", "wrong_args"]
        assert errors["broken"] == "ModuleNotFoundError: No module named 'loopkit_no_such_module'"
        module = f"<module 'loopkit_misspelt' from '{site.path / 'loopkit_misspelt.py'}'>"
        assert errors["misspelt"] == f"PluginValidationError: unknown hook 'diagnoze' in plugin {module}"
        assert errors["wrong_args"] == (
            "PluginValidationError: Plugin 'wrong_args' for hook 'diagnose'\nhookimpl definition: diagnose(records)\n"
            "Argument(s) {'records'} are declared in the hookimpl but can not be found in the hookspec"
        )
        assert errors["signature_clusterer"] == "the name 'signature_clusterer' is taken by another plugin"

        ids = post(client, project, checkout_errors(3) + thumbs_down("POST /pay", 3))
        packet = diagnose(client, project)
        assert packet["diagnoser_errors"] == []
        assert sorted((i["diagnoser"], i["count"], tuple(sorted(i["evidence"]))) for i in packet["issues"]) == [
            ("signature_clusterer", 3, tuple(sorted(ids[:3]))),
            ("slow_users", 3, tuple(sorted(ids[3:]))),
        ]


EVERYWHERE = plugin(
    """
    @hookimpl
    def diagnose(window, options):
        raise ValueError("x" * 3000)

    @hookimpl
    def verify_issue(issue, before, after, previous):
        raise ValueError("x" * 3000)

    @hookimpl
    def register_handoff_renderers():
        raise ValueError("x" * 3000)
    """
)
NOT_ITERABLE = plugin(
    """
    @hookimpl
    def register_handoff_renderers():
        return 42
    """
)


def test_every_hook_reports_a_failing_plugin_with_the_same_error_text(tmp_path, site):
    # One call loop for every hook: the same "Type: message" (cut at 2,000 characters) in load_errors,
    # diagnoser_errors and verifier_errors, and a renderer answer that is not a list is a load error too.
    site.add("loopkit-everywhere", {"everywhere": "loopkit_everywhere"}, {"loopkit_everywhere": EVERYWHERE})
    site.add("loopkit-not-iterable", {"not_iterable": "loopkit_not_iterable"}, {"loopkit_not_iterable": NOT_ITERABLE})
    error = "ValueError: " + "x" * (2000 - len("ValueError: "))
    with serving(tmp_path) as running, client_for(running) as client:
        project = new_project(running)
        listed = client.get("/v1/plugins", headers=project.auth("agent")).json()
        assert sorted(listed["load_errors"], key=lambda e: e["plugin"]) == [
            {"plugin": "everywhere", "error": error},
            {"plugin": "not_iterable", "error": "TypeError: 'int' object is not iterable"},
        ]
        assert [r["name"] for r in listed["renderers"]] == ["json", "markdown", "prompt"]  # the built-ins still serve
        post(client, project, checkout_errors(3))
        packet = diagnose(client, project)
        assert packet["diagnoser_errors"] == [{"diagnoser": "everywhere", "error": error}]
        [issue] = packet["issues"]
        answer = client.post(
            "/v1/runs/verify", json={"packet_id": packet["packet_id"]}, headers=project.auth("agent")
        ).json()["verification"]
        assert answer["verifier_errors"] == [{"verifier": "everywhere", "issue_id": issue["issue_id"], "error": error}]
        assert [v["verifier"] for v in answer["verdicts"]] == ["rate_verifier"]  # the next verifier answered


def test_blocking_by_name_is_per_server_and_covers_built_ins(tmp_path, site):
    site.add_example()
    blocked = serving(tmp_path, "blocked", blocked_plugins="slow_users, signature_clusterer")
    with blocked as one, serving(tmp_path, "open") as other, client_for(one) as c1, client_for(other) as c2:
        p1, p2 = new_project(one), new_project(other)
        assert plugins_of(c1, p1) == {
            "ok": True,
            "plugins": [BUILTINS["latency_outliers"], BUILTINS["user_signals"]],
            "diagnosers": ["latency_outliers", "user_signals"],
            "load_errors": [],
        }
        listed = plugins_of(c2, p2)
        assert listed["plugins"] == [
            BUILTINS["latency_outliers"],
            BUILTINS["signature_clusterer"],
            BUILTINS["user_signals"],
            SLOW_USERS,
        ]

        records = checkout_errors(3) + thumbs_down("POST /pay", 3)
        post(c1, p1, records)
        post(c2, p2, records)
        packet = diagnose(c1, p1)
        assert (packet["diagnosers"], packet["issues"], packet["status"]) == (
            ["latency_outliers", "user_signals"],
            [],
            "observe_more",
        )
        refused = c1.post("/v1/runs/diagnose", json={"diagnosers": ["slow_users"]}, headers=p1.auth("agent"))
        assert refused.status_code == 400
        assert (
            refused.json()["error"]["message"]
            == "unknown diagnoser(s) slow_users; loaded: latency_outliers, user_signals"
        )
        # Without the clusterer's record_signature, failures were stored without a signature.
        page = c1.get("/v1/telemetry", params={"type": "error"}, headers=p1.auth("agent")).json()
        assert [r["signature"] for r in page["records"]] == [None, None, None]

        packet = diagnose(c2, p2)
        assert sorted(i["diagnoser"] for i in packet["issues"]) == ["signature_clusterer", "slow_users"]


def test_diagnosers_restricts_which_run(tmp_path, site):
    site.add_example()
    site.add("loopkit-boom", {"boom": "loopkit_boom"}, {"loopkit_boom": BOOM})
    with serving(tmp_path) as running, client_for(running) as client:
        project = new_project(running)
        ids = post(client, project, checkout_errors(3) + thumbs_down("POST /pay", 3))

        packet = diagnose(client, project, diagnosers=["slow_users"])
        assert (packet["diagnosers"], packet["diagnoser_errors"]) == (["slow_users"], [])
        assert [(i["diagnoser"], sorted(i["evidence"])) for i in packet["issues"]] == [("slow_users", sorted(ids[3:]))]

        packet = diagnose(client, project, diagnosers=["signature_clusterer", "boom"])
        assert packet["diagnosers"] == ["boom", "signature_clusterer"]
        assert [e["diagnoser"] for e in packet["diagnoser_errors"]] == ["boom"]
        assert [(i["diagnoser"], sorted(i["evidence"])) for i in packet["issues"]] == [
            ("signature_clusterer", sorted(ids[:3]))
        ]

        packet = diagnose(client, project, diagnosers=[])
        assert (packet["diagnosers"], packet["issues"], packet["status"]) == ([], [], "observe_more")

        loaded = "boom, latency_outliers, signature_clusterer, slow_users, user_signals"
        for diagnosers, message in [
            (["slow_users", "nope"], f"unknown diagnoser(s) nope; loaded: {loaded}"),
            ("slow_users", "diagnosers must be a list of diagnoser names"),
            ([1], "diagnosers must be a list of diagnoser names"),
        ]:
            answer = client.post("/v1/runs/diagnose", json={"diagnosers": diagnosers}, headers=project.auth("agent"))
            assert answer.status_code == 400, answer.text
            assert answer.json() == {"ok": False, "error": {"code": "bad_request", "message": message}}
        listed = client.get("/v1/packets", headers=project.auth("agent")).json()["packets"]
        assert len(listed) == 3  # the refused runs stored nothing


THIRD_PARTY_SIGNATURE = plugin(
    """
    @hookimpl
    def record_signature(record):
        if record.service == "legacy":
            return None  # pass: the next implementation (the built-in clusterer) answers
        if record.message == "explode":
            raise RuntimeError("signature plugin failed")
        return Signature(key="op-" + record.name.replace(" ", "-"), template="any failure", operation=record.name)
    """
)


def test_record_signature_first_answer_wins_and_none_passes(tmp_path, site):
    site.add(
        "loopkit-by-operation",
        {"by_operation": "loopkit_by_operation"},
        {"loopkit_by_operation": THIRD_PARTY_SIGNATURE},
    )
    with serving(tmp_path) as running, client_for(running) as client:
        project = new_project(running)
        listed = plugins_of(client, project)
        assert listed["plugins"][-1] == {
            "name": "by_operation",
            "module": "loopkit_by_operation",
            "distribution": "loopkit-by-operation",
            "version": "0.1.0",
            "builtin": False,
            "hooks": ["record_signature"],
        }
        assert listed["diagnosers"] == ["latency_outliers", "signature_clusterer", "user_signals"]
        records = [
            {"type": "error", "name": "POST /a", "message": "disk full on /dev/sda1"},
            {"type": "error", "name": "POST /a", "message": "quota exceeded"},
            {"type": "error", "name": "POST /b", "message": "x", "service": "legacy"},
            {"type": "error", "name": "POST /c", "message": "explode"},
            {"type": "latency", "name": "POST /a", "duration_ms": 5},
        ]
        ids = post(client, project, records)
        signatures = []
        for record_id in ids:
            answer = client.get(f"/v1/records/{record_id}", headers=project.auth("agent"))
            signatures.append(answer.json()["record"]["signature"])
        assert signatures[:2] == ["op-POST-/a", "op-POST-/a"]
        assert isinstance(signatures[2], str) and len(signatures[2]) == 16  # the built-in's masked-template hash
        assert signatures[3:] == [None, None]  # a raising plugin: stored unsigned; not a failure: never asked

        # The clusterer groups by signature: the two different messages on POST /a are one issue.
        packet = diagnose(client, project, min_count=1, diagnosers=["signature_clusterer"])
        assert sorted((i["count"], sorted(i["evidence"])) for i in packet["issues"]) == [
            (1, [ids[2]]),
            (2, sorted(ids[:2])),
        ]


def test_loopkit_plugins_json_lists_the_built_ins(tmp_path, site):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
    environ.pop("PYTHONPATH", None)
    command = [sys.executable, "-m", "loopkit_core.cli", "plugins", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=environ)
    assert result.returncode == 0, result.stderr
    assert diagnosis_view(json.loads(result.stdout)) == {
        "ok": True,
        "plugins": [BUILTINS["latency_outliers"], BUILTINS["signature_clusterer"], BUILTINS["user_signals"]],
        "diagnosers": ["latency_outliers", "signature_clusterer", "user_signals"],
        "load_errors": [],
    }

    # With the example installed (PYTHONPATH here), one plugin blocked and one broken.
    site.add_example()
    site.add("loopkit-broken", {"broken": "loopkit_broken"}, {"loopkit_broken": "raise ImportError('nope')\n"})
    environ.update(PYTHONPATH=str(site.path), LOOPKIT_BLOCKED_PLUGINS="latency_outliers")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=environ)
    assert result.returncode == 0, result.stderr
    assert diagnosis_view(json.loads(result.stdout)) == {
        "ok": True,
        "plugins": [BUILTINS["signature_clusterer"], BUILTINS["user_signals"], SLOW_USERS],
        "diagnosers": ["slow_users", "signature_clusterer", "user_signals"],
        "load_errors": [{"plugin": "broken", "error": "ImportError: nope"}],
    }
    table = subprocess.run(command[:-1], capture_output=True, text=True, timeout=60, env=environ)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["name", "builtin", "hooks", "module", "distribution", "version"]
    assert [line.split() for line in lines[1:] if line.split()[0] not in OTHER_BUILTINS] == [
        [
            "signature_clusterer",
            "yes",
            "diagnose,",
            "record_signature",
            "loopkit_plugins.signature_clusterer",
            "loopkit",
            "0.1.0",
        ],
        ["user_signals", "yes", "diagnose", "loopkit_plugins.user_signals", "loopkit", "0.1.0"],
        ["slow_users", "no", "diagnose,", "verify_issue", "loopkit_slow_users", "loopkit-slow-users", "0.1.0"],
    ]
    assert table.stderr.splitlines()[-1] == "failed to load broken: ImportError: nope"


# A pytest plugin counting the CPU seconds of every test's setup, call and teardown (unlike wall time, it does not
# grow when other processes share the machine's cores), and reporting whether a server was loaded or listened.
CPU_PROBE = """
import socket
import sys
import time

import pytest

_total = 0.0
_listening = []
_listen = socket.socket.listen


def _counted_listen(self, *args):
    _listening.append(self.getsockname())
    return _listen(self, *args)


socket.socket.listen = _counted_listen


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _total
    start = time.process_time()
    yield
    _total += time.process_time() - start


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"cpu seconds in tests: {_total:.3f}")
    servers = [m for m in ("loopkit_core.app", "loopkit_core.server", "uvicorn") if m in sys.modules]
    terminalreporter.write_line(f"server modules: {' '.join(servers) or 'none'}")
    terminalreporter.write_line(f"listening sockets: {len(_listening)}")
"""


def test_the_example_package_passes_its_own_tests(tmp_path, site):
    """The test file docs/writing_plugins.md shows, run as its author would, against the installed example."""
    site.add_example()
    (site.path / "loopkit_cpu_probe.py").write_text(CPU_PROBE)
    work = tmp_path / "loopkit-slow-users"
    shutil.copytree(EXAMPLE, work)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
    environ["PYTHONPATH"] = str(site.path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "loopkit_cpu_probe",
            "test_slow_users.py",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=work,
        env=environ,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("3 passed")
    # The fixtures of the loopkit pytest plugin need no server: neither the server's modules nor a listening
    # socket. That is what keeps them cheap. Their CPU time is only a guard against a blow-up: it is 0.36 s on one
    # machine of this class and 1.24 s on a slower one under a parallel test run, so it cannot be a tight bound.
    assert "server modules: none" in result.stdout.splitlines(), result.stdout
    assert "listening sockets: 0" in result.stdout.splitlines(), result.stdout
    [cpu] = re.findall(r"^cpu seconds in tests: ([0-9.]+)$", result.stdout, re.MULTILINE)
    assert float(cpu) < 5.0, result.stdout


LONG_SIGNATURE = plugin(
    """
    @hookimpl
    def record_signature(record):
        return Signature(key="k" * 64 if record.message == "long" else "ok-key", template="t", operation=record.name)
    """
)


def test_a_signature_key_the_store_cannot_hold_leaves_the_record_unsigned_not_lost(tmp_path, site):
    """A plugin's 64-character key would fail the whole commit on PostgreSQL (VARCHAR(32)): the record is kept."""
    site.add("loopkit-long-keys", {"long_keys": "loopkit_long_keys"}, {"loopkit_long_keys": LONG_SIGNATURE})
    with serving(tmp_path) as running, client_for(running) as client:
        project = new_project(running)
        records = [{"type": "error", "name": "POST /a", "message": m} for m in ("long", "short", "long")]
        ids = post(client, project, records)
        signatures = [
            client.get(f"/v1/records/{rid}", headers=project.auth("agent")).json()["record"]["signature"] for rid in ids
        ]
        assert signatures == [None, "ok-key", None]
