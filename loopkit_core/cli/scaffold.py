"""`loopkit plugins new NAME --kind diagnoser|renderer|verifier`: a ready plugin package, with a passing test."""

from __future__ import annotations

import argparse
import re
import string
from pathlib import Path

from loopkit_core import __version__
from loopkit_core.cli.errors import UsageError

KINDS = ("diagnoser", "renderer", "verifier")
# A plugin name is its entry point's name: in GET /v1/plugins, packets and LOOPKIT_BLOCKED_PLUGINS.
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
# Names of the built-in plugins (loopkit_core.plugins.DEFAULT_PLUGINS): a plugin under one of them never loads.
TAKEN = frozenset(("signature_clusterer", "latency_outliers", "rate_verifier", "latency_verifier", "handoff"))


def new(args: argparse.Namespace) -> int:
    """`loopkit plugins new`: write the package and say what to do next."""
    target = Path(args.directory) if args.directory else Path(f"loopkit-{args.name.replace('_', '-')}")
    written = write_package(args.name, args.kind, target)
    for path in written:
        print(f"wrote {path}")
    print(
        f"\nnext: cd {target} && pip install -e '.[test]' && pytest -q\n"
        f"then: loopkit plugins  (lists {args.name} with its version)"
    )
    return 0


def write_package(name: str, kind: str, target: Path) -> list[Path]:
    """Write a plugin package of one kind into `target` (which must not exist, or be empty); the files written."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"plugin name {name[:60]!r} must be 1-40 of a-z, 0-9 and _, starting with a letter")
    if name in TAKEN:
        raise UsageError(f"{name!r} is the name of a built-in plugin; choose another")
    if kind not in KINDS:
        raise UsageError(f"--kind must be one of {', '.join(KINDS)}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} already exists and is not an empty directory: nothing written")
    values = {
        "name": name,
        "module": f"loopkit_{name}",
        "distribution": f"loopkit-{name.replace('_', '-')}",
        "kind": kind,
        "loopkit_version": __version__,
        "title": name.replace("_", " "),
    }
    files = {
        "pyproject.toml": PYPROJECT,
        f"loopkit_{name}.py": PLUGINS[kind],
        f"test_loopkit_{name}.py": TESTS[kind],
        "README.md": README,
    }
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, template in files.items():
        path = target / filename
        path.write_text(string.Template(template).substitute(values))
        written.append(path)
    return written


PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "A LoopKit $kind plugin: $title"
requires-python = ">=3.11"
dependencies = ["loopkit>=$loopkit_version"]

[project.optional-dependencies]
test = ["pytest>=8", "httpx>=0.27"]

# LoopKit loads every entry point of the `loopkit` group. The name ($name) is the plugin's name in
# GET /v1/plugins and `loopkit plugins` (with this distribution's name and version) and in LOOPKIT_BLOCKED_PLUGINS.
[project.entry-points.loopkit]
$name = "$module"

[tool.setuptools]
py-modules = ["$module"]
"""

DIAGNOSER = '''\
"""$distribution: a LoopKit diagnoser. One issue per tool whose calls failed at least `min_count` times.

Edit SELECTOR and the issue's text to find what your app needs found (docs/writing_plugins.md).
Its issues use a typed selector (loopkit_core.selectors.Records), which no built-in verifier knows: add a
verify_issue hook to this module (`loopkit plugins new NAME --kind verifier` shows one), or the verification
of these issues answers insufficient_data.
"""

from __future__ import annotations

import hashlib
from typing import Any

from loopkit_core.evidence import quote
from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Issue
from loopkit_core.selectors import Records
from loopkit_core.window import Window

NAME = "$name"
SELECTOR = Records("tool_failure")  # the records this diagnoser reads; narrowed per tool below
EVIDENCE = 10


@hookimpl
def diagnose(window: Window, options: dict[str, Any]) -> list[Issue]:
    """One issue per tool with at least `min_count` failures in the window."""
    issues = []
    for group in window.groups(SELECTOR, by="name"):  # counted in SQL, largest first
        if group.count < options["min_count"] or len(issues) == options["max_issues"]:
            break
        selector = Records("tool_failure", name=group.value)  # exactly this group's records
        sample = window.sample(selector, limit=EVIDENCE)
        issues.append(
            Issue(
                fingerprint=hashlib.blake2b(f"{NAME}/{group.value}".encode(), digest_size=8).hexdigest(),
                title=f"Tool {quote(group.value)} failed {group.count} times",  # telemetry text is data: quoted
                signal_type="tool_failure",
                count=group.count,
                first_seen_ns=group.first_ns,
                last_seen_ns=group.last_ns,
                selector=selector,
                evidence=[r["record_id"] for r in sample],
                traces=sorted({r["trace_id"] for r in sample if r["trace_id"]}),
                impact=float(group.count),
                stats={"tool": group.value, "failures": group.count},
                next_action="Read the evidence records, then approve or reject this packet.",
            )
        )
    return issues
'''

RENDERER = '''\
"""$distribution: a LoopKit handoff format, `GET /v1/packets/{id}/handoff?format=$name`: one line per issue."""

from __future__ import annotations

from typing import Any

from loopkit_core.evidence import quote
from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Renderer

NAME = "$name"


def render(packet: dict[str, Any], context: dict[str, Any]) -> str:
    """The packet as text: its approval state, then one line per issue. Pure: it sends nothing anywhere."""
    lines = [f"packet {packet['packet_id']}: approval {packet['approval']['state']}"]
    for issue in packet["issues"]:
        # Titles carry telemetry text: quote it as data, so no record can write a line that passes for ours.
        lines.append(f"- [{issue['severity']}] {quote(issue['title'])} ({issue['count']} records)")
    return "\\n".join(lines) + "\\n"


@hookimpl
def register_handoff_renderers() -> list[Renderer]:
    """This plugin's format."""
    return [Renderer(NAME, "text/plain; charset=utf-8", "one line per issue", render)]
'''

VERIFIER = '''\
"""$distribution: a LoopKit verifier for issues with a `records` selector (loopkit_core.selectors.Records).

It compares the issue's records per minute before and after the fix. Edit `knows` to choose the issues it
answers for (say, those of your own diagnoser: issue["diagnoser"]), and the thresholds to your traffic.
"""

from __future__ import annotations

from typing import Any

from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Verdict
from loopkit_core.selectors import Records, parse_selector
from loopkit_core.window import Window

NAME = "$name"
MIN_EXPECTED = 5.0  # with fewer records expected after the fix at the old rate, silence proves nothing
EVIDENCE = 10


def knows(issue: dict[str, Any]) -> bool:
    """Whether this verifier answers for an issue: those with a records selector."""
    return isinstance(parse_selector(issue["selector"]), Records)


@hookimpl
def verify_issue(issue: dict[str, Any], before: Window, after: Window, previous: str) -> Verdict | None:
    """held, improved, regressed or insufficient_data from the issue's rate before and after; None for others."""
    if not knows(issue):
        return None  # another verifier's issue
    selector = issue["selector"]
    count_b, count_a = before.summary(selector)[0], after.summary(selector)[0]
    minutes_b = max((before.end_ns - before.start_ns) / 60e9, 1e-9)
    minutes_a = max((after.end_ns - after.start_ns) / 60e9, 1e-9)
    expected = count_b / minutes_b * minutes_a
    numbers_b = {"count": count_b, "per_minute": round(count_b / minutes_b, 4)}
    numbers_a = {"count": count_a, "per_minute": round(count_a / minutes_a, 4), "expected": round(expected, 2)}
    evidence = [r["record_id"] for r in after.sample(selector, EVIDENCE)] if count_a else []
    if previous == "verified" and count_a:
        return Verdict("regressed", f"the fix had held; {count_a} came back", numbers_b, numbers_a, evidence)
    if expected < MIN_EXPECTED:
        reason = f"the old rate predicts {expected:.1f} record(s) since the fix, fewer than {MIN_EXPECTED:g}"
        return Verdict("insufficient_data", reason, numbers_b, numbers_a, evidence)
    if count_a == 0:
        return Verdict("held", f"none since the fix, where {expected:.1f} were expected", numbers_b, numbers_a)
    if count_a <= expected / 2:
        return Verdict("improved", f"{count_a} against {expected:.1f} expected", numbers_b, numbers_a, evidence)
    return Verdict("regressed", f"{count_a} against {expected:.1f} expected", numbers_b, numbers_a, evidence)
'''

PLUGINS = {"diagnoser": DIAGNOSER, "renderer": RENDERER, "verifier": VERIFIER}

DIAGNOSER_TEST = '''\
"""$name on LoopKit's test bench (fixtures of the loopkit pytest plugin, installed with LoopKit)."""

from __future__ import annotations


def failure(tool: str) -> dict:
    """A tool_failure record as an app would send it."""
    return {"type": "tool_failure", "name": tool, "message": "the tool timed out"}


def test_one_issue_per_tool_over_min_count(loopkit_lab):
    ids = loopkit_lab.add([failure("search_docs")] * 4 + [failure("send_mail")])
    [issue] = loopkit_lab.diagnose("$name", min_count=3)  # send_mail failed once only
    assert issue.count == 4
    assert sorted(issue.evidence) == sorted(ids[:4])
    assert loopkit_lab.window().summary(issue.selector)[0] == issue.count  # what ?issue= lists


def test_it_is_loaded_in_the_app(loopkit_app):
    plugins = loopkit_app.get("/v1/plugins").json()
    [plugin] = [p for p in plugins["plugins"] if p["name"] == "$name"]
    assert (plugin["distribution"], plugin["hooks"]) == ("$distribution", ["diagnose"])
    loopkit_app.post_records([failure("search_docs")] * 3)
    packet = loopkit_app.post("/v1/runs/diagnose", {"diagnosers": ["$name"]}).json()["packet"]
    assert [i["count"] for i in packet["issues"]] == [3]
'''

RENDERER_TEST = '''\
"""$name on LoopKit's test bench (fixtures of the loopkit pytest plugin, installed with LoopKit)."""

from __future__ import annotations


def test_one_line_per_issue(loopkit_lab):
    loopkit_lab.add([{"type": "error", "name": "POST /pay", "message": "card declined"}] * 3)
    packet = loopkit_lab.packet()
    text = loopkit_lab.render(packet, "$name")
    assert text.splitlines()[0] == f"packet {packet['packet_id']}: approval pending"
    assert len(text.splitlines()) == 1 + len(packet["issues"]) == 2


def test_it_is_served_by_the_app(loopkit_app):
    loopkit_app.post_records([{"type": "error", "name": "POST /pay", "message": "card declined"}] * 3)
    packet = loopkit_app.post("/v1/runs/diagnose").json()["packet"]
    answer = loopkit_app.get(f"/v1/packets/{packet['packet_id']}/handoff", format="$name")
    assert answer.status_code == 200
    assert answer.text.startswith(f"packet {packet['packet_id']}")
'''

VERIFIER_TEST = '''\
"""$name on LoopKit's test bench (fixtures of the loopkit pytest plugin, installed with LoopKit)."""

from __future__ import annotations

from loopkit_core.model import Issue
from loopkit_core.selectors import Records

SELECTOR = Records("event", name="cart_abandoned")


def events(n: int) -> list[dict]:
    """n cart_abandoned events."""
    return [{"type": "event", "name": "cart_abandoned"}] * n


def issue_of(count: int, first_ns: int, last_ns: int) -> Issue:
    """The issue a diagnoser would report for these events."""
    return Issue("carts", "Carts abandoned", "event", count, first_ns, last_ns, selector=SELECTOR)


def test_held_when_the_events_stop_and_regressed_when_they_come_back(loopkit_lab):
    loopkit_lab.add(events(12), minutes_ago=90)
    before = loopkit_lab.window(since_minutes=60, until_minutes_ago=60)
    count, first, last = before.summary(SELECTOR)
    issue = issue_of(count, first, last)
    after = loopkit_lab.window(since_minutes=60)
    assert loopkit_lab.verify(issue, before, after, verifier="$name").verdict == "held"
    loopkit_lab.add(events(12), minutes_ago=5)
    assert loopkit_lab.verify(issue, before, after, verifier="$name").verdict == "regressed"


def test_too_little_traffic_is_insufficient_data(loopkit_lab):
    loopkit_lab.add(events(2), minutes_ago=90)
    before = loopkit_lab.window(since_minutes=60, until_minutes_ago=60)
    issue = issue_of(*before.summary(SELECTOR))
    verdict = loopkit_lab.verify(issue, before, loopkit_lab.window(since_minutes=60))  # as the pipeline asks
    assert (verdict.verdict, verdict.verifier) == ("insufficient_data", "$name")


def test_it_is_loaded_in_the_app(loopkit_app):
    plugins = loopkit_app.get("/v1/plugins").json()
    assert "$name" in plugins["verifiers"]
'''

TESTS = {"diagnoser": DIAGNOSER_TEST, "renderer": RENDERER_TEST, "verifier": VERIFIER_TEST}

README = """\
# $distribution

A [LoopKit](https://pypi.org/project/loopkit/) $kind plugin, `$name`.

```sh
pip install -e '.[test]'   # LoopKit loads it through its `loopkit` entry point
pytest -q                  # the loopkit pytest plugin's fixtures: loopkit_lab, loopkit_app
loopkit plugins            # $name, with $distribution and its version
```

Edit `$module.py`; the hooks and their contracts are in LoopKit's docs/plugin_hooks.md, and
docs/writing_plugins.md walks through a whole package (diagnosers, renderers, verifiers, and how a diagnoser's
issues get verified). Turn the plugin off on a server with `LOOPKIT_BLOCKED_PLUGINS=$name`.
"""
