"""The operator CLI `loopkit projects create|list|show`, run as real subprocesses on a real data dir."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_settings, sqlite_only, store_env

from loopkit_core.projects import authenticate
from loopkit_core.store.engines import Store

KEY_FIELDS = ("producer_key", "agent_key", "dashboard_key", "recovery_code")
PREFIXES = {"producer_key": "lk_ingest_", "agent_key": "lk_agent_", "dashboard_key": "lk_dash_"}


def loopkit(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m loopkit_core.cli ARGS` and capture its output."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
    if "--data-dir" in args:  # on a PostgreSQL run, the schemas make_settings(data_dir) uses
        environ.update(store_env(Path(args[args.index("--data-dir") + 1])))
    return subprocess.run(
        [sys.executable, "-m", "loopkit_core.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
        cwd=cwd,
    )


def create(data_dir: Path, name: str) -> dict:
    """Create a project with --json and return the parsed object."""
    result = loopkit("projects", "create", name, "--data-dir", str(data_dir), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_clean_failure(result: subprocess.CompletedProcess, code: int, message: str) -> None:
    """A non-zero exit with a one-line `loopkit: error:` message and no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr


def test_create_json_prints_one_object_with_the_keys(tmp_path):
    data_dir = tmp_path / "data"
    result = loopkit("projects", "create", "My App", "--data-dir", str(data_dir), "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    created = json.loads(result.stdout)  # the whole output is one JSON document
    assert isinstance(created, dict)
    assert created["ok"] is True
    assert re.fullmatch(r"my-app-[0-9a-f]{8}", created["project_id"])
    assert created["project_name"] == "My App"
    for field, prefix in PREFIXES.items():
        assert created[field].startswith(prefix), field
        assert len(created[field]) >= len(prefix) + 32
    assert created["recovery_code"].startswith("lk_recover_")
    assert len({created[f] for f in KEY_FIELDS}) == 4
    # The printed keys are the real ones: they resolve to the project with their scopes.
    store = Store(make_settings(data_dir))
    try:
        scopes = {
            field: authenticate(store.control, created[field])
            for field in ("producer_key", "agent_key", "dashboard_key")
        }
    finally:
        store.close()
    assert {p.project_id for p in scopes.values()} == {created["project_id"]}
    assert scopes["producer_key"].scopes == {"telemetry:write"}
    assert scopes["agent_key"].scopes == {"runs:write", "telemetry:read", "reports:read", "dashboard:read"}
    assert scopes["dashboard_key"].scopes == {"dashboard:read", "approvals:write"}
    assert (scopes["producer_key"].quota_spans, scopes["producer_key"].expires_at) == (None, None)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("checkout", "checkout"),
        ("Travel Agent v2!", "travel-agent-v2"),
        ("__x__", "x"),
        ("!!!", "project"),
        ("日本", "project"),
    ],
)
def test_project_ids_are_a_slug_of_the_name_and_8_hex(tmp_path, name, slug):
    created = create(tmp_path / "data", name)
    assert re.fullmatch(re.escape(slug) + r"-[0-9a-f]{8}", created["project_id"]), created["project_id"]
    assert created["project_name"] == name


def test_the_same_name_twice_makes_two_projects(tmp_path):
    first, second = create(tmp_path / "data", "app"), create(tmp_path / "data", "app")
    assert first["project_id"] != second["project_id"]
    assert {first[f] for f in KEY_FIELDS}.isdisjoint({second[f] for f in KEY_FIELDS})


def test_create_without_json_prints_readable_lines(tmp_path):
    result = loopkit("projects", "create", "Shop", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    match = re.fullmatch(r"Created project (shop-[0-9a-f]{8}) \(Shop\)\.", lines[0])
    assert match, lines[0]
    assert "shown once" in result.stdout
    keys = {}
    for line in lines:
        found = re.fullmatch(r"\s+(producer key|agent key|dashboard key|recovery code)\b.*?\s(lk_\S+)", line)
        if found:
            keys[found.group(1)] = found.group(2)
    assert set(keys) == {"producer key", "agent key", "dashboard key", "recovery code"}
    assert keys["producer key"].startswith("lk_ingest_")
    assert keys["agent key"].startswith("lk_agent_")
    assert keys["dashboard key"].startswith("lk_dash_")
    assert keys["recovery code"].startswith("lk_recover_")
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)
    store = Store(make_settings(tmp_path / "data"))
    try:
        principal = authenticate(store.control, keys["agent key"])
    finally:
        store.close()
    assert principal is not None and principal.project_id == match.group(1)


def test_list_shows_every_project_without_secrets(tmp_path):
    data_dir = tmp_path / "data"
    empty = loopkit("projects", "list", "--data-dir", str(data_dir))
    assert (empty.returncode, empty.stdout) == (0, "no projects\n")
    assert json.loads(loopkit("projects", "list", "--data-dir", str(data_dir), "--json").stdout) == {
        "ok": True,
        "projects": [],
    }
    first, second = create(data_dir, "alpha"), create(data_dir, "beta")
    as_json = loopkit("projects", "list", "--data-dir", str(data_dir), "--json")
    assert as_json.returncode == 0
    listing = json.loads(as_json.stdout)
    assert listing["ok"] is True
    assert [(p["project_id"], p["project_name"], p["kind"]) for p in listing["projects"]] == [
        (first["project_id"], "alpha", "permanent"),
        (second["project_id"], "beta", "permanent"),
    ]
    table = loopkit("projects", "list", "--data-dir", str(data_dir))
    assert table.returncode == 0
    rows = table.stdout.splitlines()
    assert rows[0].split()[:3] == ["project_id", "project_name", "kind"]
    assert [row.split()[:3] for row in rows[1:]] == [
        [first["project_id"], "alpha", "permanent"],
        [second["project_id"], "beta", "permanent"],
    ]
    for output in (as_json.stdout, table.stdout):
        for project in (first, second):
            for field in KEY_FIELDS:
                assert project[field] not in output


def test_show_describes_a_project_but_never_prints_its_keys(tmp_path):
    data_dir = tmp_path / "data"
    created = create(data_dir, "gamma")
    as_json = loopkit("projects", "show", created["project_id"], "--data-dir", str(data_dir), "--json")
    assert as_json.returncode == 0, as_json.stderr
    shown = json.loads(as_json.stdout)
    assert shown["ok"] is True
    project = shown["project"]
    assert (project["project_id"], project["project_name"], project["kind"]) == (
        created["project_id"],
        "gamma",
        "permanent",
    )
    assert sorted(k["kind"] for k in project["keys"]) == ["agent", "dashboard", "producer"]
    for key in project["keys"]:
        field = {"producer": "producer_key", "agent": "agent_key", "dashboard": "dashboard_key"}[key["kind"]]
        assert key["display"].startswith(PREFIXES[field])
        assert created[field].startswith(key["display"].rstrip("…"))
        assert len(key["display"].rstrip("…")) <= len(PREFIXES[field]) + 4
    text = loopkit("projects", "show", created["project_id"], "--data-dir", str(data_dir))
    assert text.returncode == 0
    assert re.search(rf"^project_id\s+{created['project_id']}$", text.stdout, re.M)
    assert re.search(r"^producer key\s+lk_ingest_", text.stdout, re.M)
    for output in (as_json.stdout, text.stdout):
        for field in KEY_FIELDS:
            assert created[field] not in output
            assert created[field][-20:] not in output


def test_show_an_unknown_project_fails_cleanly(tmp_path):
    create(tmp_path / "data", "delta")
    result = loopkit("projects", "show", "nope-00000000", "--data-dir", str(tmp_path / "data"))
    assert_clean_failure(result, 1, "loopkit: error: no project 'nope-00000000'")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "project name must be a non-empty string"),
        ("   ", "project name must be a non-empty string"),
        ("a\x01b", "project name must not contain control characters"),
        ("n" * 201, "project name must be at most 200 characters"),
    ],
    ids=["empty", "blank", "control-char", "too-long"],
)
def test_create_with_a_bad_name_fails_cleanly_and_creates_nothing(tmp_path, name, message):
    data_dir = tmp_path / "data"
    result = loopkit("projects", "create", name, "--data-dir", str(data_dir), "--json")
    assert_clean_failure(result, 2, f"loopkit: error: {message}")
    assert result.stdout == ""
    listing = loopkit("projects", "list", "--data-dir", str(data_dir), "--json")
    assert json.loads(listing.stdout)["projects"] == []


def test_create_without_a_name_is_a_usage_error(tmp_path):
    result = loopkit("projects", "create", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    assert "usage:" in result.stderr and "name" in result.stderr
    assert "Traceback" not in result.stderr


@sqlite_only("a data_dir that is a file only fails when the store is files")
def test_a_data_dir_that_is_a_file_fails_cleanly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = loopkit("projects", "create", "x", "--data-dir", str(blocker))
    assert_clean_failure(result, 1, "loopkit: error:")
    assert blocker.read_text() == "not a directory"


@sqlite_only("checks where control.db is created")
def test_the_data_dir_comes_from_loopkit_data_dir_when_no_flag_is_given(tmp_path):
    env_dir = tmp_path / "from-env"
    result = loopkit("projects", "create", "envy", "--json", env={"LOOPKIT_DATA_DIR": str(env_dir)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project_id = json.loads(result.stdout)["project_id"]
    assert (env_dir / "control.db").is_file()
    assert not (tmp_path / "loopkit-data").exists()
    listing = loopkit("projects", "list", "--data-dir", str(env_dir), "--json")
    assert [p["project_id"] for p in json.loads(listing.stdout)["projects"]] == [project_id]
    # A flag wins over the environment.
    flagged = loopkit(
        "projects", "list", "--data-dir", str(tmp_path / "other"), "--json", env={"LOOPKIT_DATA_DIR": str(env_dir)}
    )
    assert json.loads(flagged.stdout)["projects"] == []


def test_the_console_script_is_installed(tmp_path):
    script = Path(sys.executable).with_name("loopkit")
    assert script.is_file()
    result = subprocess.run(
        [str(script), "projects", "create", "scripted", "--data-dir", str(tmp_path / "data"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"scripted-[0-9a-f]{8}", json.loads(result.stdout)["project_id"])


def test_list_and_show_print_rfc3339_times(tmp_path):
    """Times read the same as in the HTTP API: RFC 3339, not unix seconds."""
    data_dir = str(tmp_path / "data")
    base = [sys.executable, "-m", "loopkit_core.cli", "projects"]
    created = json.loads(
        subprocess.run(
            [*base, "create", "times", "--data-dir", data_dir, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    listed = json.loads(
        subprocess.run(
            [*base, "list", "--data-dir", data_dir, "--json"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )
    shown = json.loads(
        subprocess.run(
            [*base, "show", created["project_id"], "--data-dir", data_dir, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    rfc3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
    assert rfc3339.match(listed["projects"][0]["created_at"])
    assert rfc3339.match(shown["project"]["created_at"])
    assert all(rfc3339.match(k["created_at"]) for k in shown["project"]["keys"])
    assert shown["project"]["expires_at"] is None


@pytest.mark.parametrize("days", ["-1", "nan", "inf"])
def test_set_retention_with_an_unusable_number_is_a_usage_error(tmp_path, days):
    """Every bad DAYS value exits 2 (docs/reliability.md), whether argparse or the retention rule refuses it."""
    data_dir = tmp_path / "data"
    created = create(data_dir, "kept")
    result = loopkit("projects", "set-retention", created["project_id"], days, "--data-dir", str(data_dir))
    assert_clean_failure(result, 2, "loopkit: error: retention days must be a finite number, 0 or more")
    assert result.stdout == ""
    shown = json.loads(loopkit("projects", "show", created["project_id"], "--data-dir", str(data_dir), "--json").stdout)
    assert shown["project"]["retention_source"] == "server default"


@pytest.mark.parametrize("command", ["promote", "rotate-keys", "set-retention", "show"])
def test_commands_on_an_unknown_project_exit_1_with_one_line(tmp_path, command):
    data_dir = tmp_path / "data"
    create(data_dir, "known")
    extra = ["3"] if command == "set-retention" else []
    result = loopkit("projects", command, "nope-00000000", *extra, "--data-dir", str(data_dir))
    assert_clean_failure(result, 1, "loopkit: error: no project 'nope-00000000'")
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_delete_needs_yes_refuses_unknown_projects_and_deletes(tmp_path):
    data_dir = tmp_path / "data"
    created, kept = create(data_dir, "doomed"), create(data_dir, "kept")
    unconfirmed = loopkit("projects", "delete", created["project_id"], "--data-dir", str(data_dir))
    assert_clean_failure(unconfirmed, 2, "loopkit: error: deleting a project removes its records for good; add --yes")
    unknown = loopkit("projects", "delete", "nope-00000000", "--yes", "--data-dir", str(data_dir))
    assert_clean_failure(unknown, 1, "loopkit: error: no project 'nope-00000000'")
    deleted = loopkit("projects", "delete", created["project_id"], "--yes", "--data-dir", str(data_dir))
    assert (deleted.returncode, deleted.stdout) == (
        0,
        f"Deleted project {created['project_id']}: keys revoked, records removed.\n",
    )
    listing = json.loads(loopkit("projects", "list", "--data-dir", str(data_dir), "--json").stdout)
    assert [p["project_id"] for p in listing["projects"]] == [kept["project_id"]]
    again = loopkit("projects", "delete", created["project_id"], "--yes", "--data-dir", str(data_dir))
    assert_clean_failure(again, 1, f"loopkit: error: no project '{created['project_id']}'")


def test_every_known_error_maps_to_one_message_and_code_in_one_place():
    from loopkit_core.cli.errors import UsageError, exit_status
    from loopkit_core.client import ClientError
    from loopkit_core.operator import UnknownProject
    from loopkit_core.projects import AuthError, Conflict

    assert exit_status(UsageError("DAYS must be a number")) == (2, "DAYS must be a number")
    assert exit_status(ValueError("project name must be a non-empty string")) == (
        2,
        "project name must be a non-empty string",
    )
    assert exit_status(ClientError("403: the producer key")) == (1, "403: the producer key")
    assert exit_status(UnknownProject("p-00000000")) == (1, "no project 'p-00000000'")
    assert exit_status(AuthError(401, "unknown or revoked key")) == (1, "unknown or revoked key")
    assert exit_status(Conflict("changed first")) == (1, "changed first")
    assert exit_status(NotADirectoryError(20, "Not a directory")) == (1, "[Errno 20] Not a directory")
    # Anything else is a bug: main() lets its traceback through instead of hiding it behind one line.
    assert exit_status(KeyError("packet_id")) is None
    assert exit_status(LookupError("plain")) is None
