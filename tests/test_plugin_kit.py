"""The plugin author's kit: `loopkit plugins new`, the loopkit pytest plugin's fixtures, versions on /v1/plugins.

A generated package is made visible as pip would leave it (its module plus a dist-info with its entry point,
read from its own pyproject.toml) in a temporary directory on the path, so nothing is downloaded; its own
tests then run in a subprocess, as its author would run them, and a real server lists it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from conftest import make_settings, new_project

from loopkit_core.hookspecs import hookimpl
from loopkit_core.lab import Lab, PluginFailed
from loopkit_core.model import Issue
from loopkit_core.selectors import Signatures
from loopkit_core.server import in_thread


def loopkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The `loopkit` command, as a user types it."""
    command = [sys.executable, "-m", "loopkit_core.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=cwd)


def install(package: Path, site: Path) -> dict:
    """Make a package importable with its entry points, as `pip install` would (module + dist-info); its [project]."""
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    for module in tomllib.loads((package / "pyproject.toml").read_text())["tool"]["setuptools"]["py-modules"]:
        (site / f"{module}.py").write_text((package / f"{module}.py").read_text())
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    entry_points = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["loopkit"].items())
    (info / "entry_points.txt").write_text("[loopkit]\n" + entry_points)
    return project


HOOKS = {"diagnoser": ["diagnose"], "renderer": ["register_handoff_renderers"], "verifier": ["verify_issue"]}
PASSED = {"diagnoser": 2, "renderer": 2, "verifier": 3}


@pytest.mark.parametrize("kind", sorted(HOOKS))
def test_a_new_package_passes_its_own_tests_and_is_listed_with_its_version(tmp_path, monkeypatch, kind):
    name = f"shop_{kind}"
    made = loopkit("plugins", "new", name, "--kind", kind, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    package = tmp_path / f"loopkit-shop-{kind}"
    assert sorted(p.name for p in package.iterdir()) == sorted(
        ["pyproject.toml", f"loopkit_{name}.py", f"test_loopkit_{name}.py", "README.md"]
    )
    assert f"wrote {Path(package.name) / 'pyproject.toml'}" in made.stdout
    site = tmp_path / "site"
    site.mkdir()
    project = install(package, site)
    assert (project["name"], project["version"], project["entry-points"]["loopkit"]) == (
        f"loopkit-shop-{kind}",
        "0.1.0",
        {name: f"loopkit_{name}"},
    )

    # Its generated tests, run where its author runs them, with the loopkit pytest plugin's fixtures.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
    environ["PYTHONPATH"] = str(site)
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=package,
        env=environ,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert tests.stdout.splitlines()[-1].startswith(f"{PASSED[kind]} passed")

    # A real server on loopback lists it, with its distribution and version.
    monkeypatch.syspath_prepend(str(site))
    try:
        with (
            in_thread(make_settings(tmp_path / "data")) as running,
            httpx.Client(base_url=running.http_url, timeout=30) as client,
        ):
            agent = new_project(running).auth("agent")
            listed = client.get("/v1/plugins", headers=agent).json()
    finally:
        sys.modules.pop(f"loopkit_{name}", None)
    assert listed["load_errors"] == []
    assert listed["plugins"][-1] == {
        "name": name,
        "module": f"loopkit_{name}",
        "distribution": f"loopkit-shop-{kind}",
        "version": "0.1.0",
        "builtin": False,
        "hooks": HOOKS[kind],
    }


def test_new_refuses_a_bad_name_a_built_in_name_and_an_existing_directory(tmp_path):
    bad = loopkit("plugins", "new", "Shop-Checks", "--kind", "diagnoser", cwd=tmp_path)
    assert (bad.returncode, bad.stderr) == (
        2,
        "loopkit: error: plugin name 'Shop-Checks' must be 1-40 of a-z, 0-9 and _, starting with a letter\n",
    )
    taken = loopkit("plugins", "new", "handoff", "--kind", "renderer", cwd=tmp_path)
    assert (taken.returncode, taken.stderr) == (
        2,
        "loopkit: error: 'handoff' is the name of a built-in plugin; choose another\n",
    )
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    exists = loopkit("plugins", "new", "shop", "--kind", "verifier", "--directory", "mine", cwd=tmp_path)
    assert (exists.returncode, exists.stderr) == (
        1,
        "loopkit: error: mine already exists and is not an empty directory: nothing written\n",
    )
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    no_kind = loopkit("plugins", "new", "shop", cwd=tmp_path)
    assert no_kind.returncode == 2 and "--kind" in no_kind.stderr


# --- the fixtures themselves ------------------------------------------------------------------------------------


def test_the_lab_validates_records_as_the_server_does(loopkit_lab):
    with pytest.raises(ValueError, match=r"^record 1: type must be one of error, event, latency, log, tool_failure"):
        loopkit_lab.add([{"type": "error", "name": "a"}, {"type": "span", "name": "b"}])
    assert loopkit_lab.window().counts_by_type() == {}  # nothing of the refused batch was stored


def test_failures_are_signed_at_ingest_and_one_diagnoser_runs(loopkit_lab):
    ids = loopkit_lab.add(
        [{"type": "error", "name": "POST /pay", "message": f"declined after {i} ms"} for i in range(4)]
    )
    [issue] = loopkit_lab.diagnose("signature_clusterer")
    assert (issue.count, sorted(issue.evidence), issue.diagnoser) == (4, sorted(ids), "signature_clusterer")
    assert loopkit_lab.diagnose("latency_outliers") == []
    with pytest.raises(LookupError, match="no plugin 'nope' implements diagnose; those that do: "):
        loopkit_lab.diagnose("nope")


class Broken:
    """A diagnoser whose issue names records no selector can."""

    @staticmethod
    def issue(selector: object) -> Issue:
        """One issue with the given selector."""
        return Issue("f1", "t", "event", 1, 1, 2, selector=selector)


def test_an_answer_the_pipeline_would_refuse_raises_plugin_failed(loopkit_lab):
    class Plugin:
        @hookimpl
        def diagnose(self, window, options):
            return [Broken.issue({"kind": "rows"})]

    loopkit_lab.register(Plugin(), "broken")
    with pytest.raises(PluginFailed, match=r"^broken: ValueError: unknown selector kind 'rows'; one of signatures"):
        loopkit_lab.diagnose("broken")
    packet = loopkit_lab.packet()  # the whole pipeline reports it, as a server would
    assert packet["diagnoser_errors"] == [
        {
            "diagnoser": "broken",
            "error": "ValueError: unknown selector kind 'rows'; one of "
            "signatures, record_ids, records, slow_calls, rule, any",
        }
    ]


def test_no_verifier_knows_an_issue_with_a_records_selector(loopkit_lab):
    from loopkit_core.selectors import Records

    issue = Broken.issue(Records("event", name="cart_abandoned"))
    assert loopkit_lab.verify(issue, loopkit_lab.window(60, 60), loopkit_lab.window()) is None


def test_the_lab_on_disk_writes_a_real_store(loopkit_lab_on_disk, tmp_path):
    loopkit_lab_on_disk.add([{"type": "event", "name": "signup"}])
    assert (tmp_path / "loopkit" / "projects" / "lab.db").is_file()
    assert loopkit_lab_on_disk.window().counts_by_type() == {"event": 1}


def test_a_lab_costs_about_a_millisecond():
    Lab().close()  # the first pays for the schema template and the plugins
    started = time.process_time()  # CPU time: other processes on the machine's cores do not inflate it
    for _ in range(100):
        lab = Lab()
        lab.add([{"type": "event", "name": "signup"}])
        lab.close()
    per_lab = (time.process_time() - started) / 100
    assert per_lab < 0.01, f"{per_lab * 1000:.1f} ms of CPU per lab"  # measured: about 1 ms


def test_the_app_in_process(loopkit_app):
    ids = loopkit_app.post_records([{"type": "error", "name": "POST /pay", "message": "card declined"}] * 3)
    packet = loopkit_app.post("/v1/runs/diagnose").json()["packet"]
    [issue] = packet["issues"]
    assert sorted(issue["evidence"]) == sorted(ids)
    assert loopkit_app.client.get("/v1/plugins").status_code == 401  # keys are checked as on a server


# --- the plugin is cheap to load, registered, and documented ----------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def test_the_pytest_plugin_is_registered_and_imports_nothing_heavy_until_asked():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"loopkit": "loopkit_core.testing"}
    heavy = "('sqlalchemy', 'loopkit_core.lab', 'loopkit_core.window')"
    probe = f"import sys, loopkit_core.testing; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr
    from loopkit_core import testing

    assert testing.Lab is Lab and testing.PluginFailed is PluginFailed


def test_writing_plugins_documents_the_fixtures_the_lab_and_the_scaffold():
    text = (REPO / "docs" / "writing_plugins.md").read_text()
    for fixture in ("loopkit_lab", "loopkit_lab_on_disk", "loopkit_app"):
        assert f"| `{fixture}` |" in text, fixture
    public = [n for n, v in vars(Lab).items() if not n.startswith("_") and callable(v) and n != "close"]
    assert sorted(public) == ["add", "diagnose", "packet", "packet_issue", "register", "render", "verify", "window"]
    for name in set(public) - {"packet_issue"}:
        assert f"`lab.{name}(" in text, name
    for kind in ("diagnoser", "renderer", "verifier"):
        assert f"--kind {kind}" in text, kind
    from loopkit_core.selectors import KINDS

    for kind, cls in KINDS.items():
        assert f"`{cls.__name__}(" in text and f'"kind": "{kind}"' in text, kind
    assert "## Verify its issues" in text and "A verifier in the same package" in text


class ByOperation:
    """A third-party diagnoser grouping failures by operation, with a selector the built-in rate verifier knows."""

    @hookimpl
    def diagnose(self, window, options):
        groups = [g for g in window.signature_groups() if g.operation == "POST /pay"]
        selector = Signatures([g.signature for g in groups])
        count, first, last = window.summary(selector)
        stats = {"operation": "POST /pay", "service": "shop"}  # the calls the rate verifier divides by
        return [Issue("pay-failures", "POST /pay fails", "error", count, first, last, selector, stats=stats)]


def test_a_third_party_issue_with_a_signatures_selector_is_verified_by_the_built_in_rate_verifier(loopkit_lab):
    loopkit_lab.register(ByOperation(), "by_operation")
    call = {"type": "latency", "name": "POST /pay", "service": "shop", "duration_ms": 20}
    failure = {"type": "error", "name": "POST /pay", "service": "shop", "message": "card declined"}
    loopkit_lab.add([failure] * 5 + [call] * 5, minutes_ago=90)
    before = loopkit_lab.window(since_minutes=60, until_minutes_ago=60)
    [issue] = loopkit_lab.diagnose("by_operation", before)
    assert issue.selector["kind"] == "signatures" and issue.count == 5
    loopkit_lab.add([call] * 20, minutes_ago=10)
    verdict = loopkit_lab.verify(issue, before, loopkit_lab.window(since_minutes=60))
    assert (verdict.verdict, verdict.verifier) == ("held", "rate_verifier")
    assert verdict.before == {"count": 5, "calls": 10, "rate": 0.5}
    assert verdict.after == {"count": 0, "calls": 20, "rate": 0.0, "expected_at_old_rate": 10.0}
