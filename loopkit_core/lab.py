"""The plugin author's test bench: records in, one diagnoser or verifier run, a packet rendered; no sockets.

`Lab` keeps one project's records in an in-memory SQLite database (a copy of a schema migrated once per
process), or in a real store on disk, and hands plugins the same `Window` a server would. `LabApp` is the whole
HTTP app in-process (Starlette's TestClient), for end-to-end tests. The pytest fixtures that build them are in
`loopkit_core.testing` (the `loopkit` pytest plugin); docs/writing_plugins.md shows them at work.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import StaticPool

from loopkit_core import diagnose as diagnosis
from loopkit_core import hookspecs
from loopkit_core.diagnose import DiagnoseRequest, check_issue
from loopkit_core.ingest import prepare
from loopkit_core.model import VERDICTS, Issue, Record, Verdict
from loopkit_core.plugins import Plugins, get_plugins
from loopkit_core.settings import Settings
from loopkit_core.store import day_tables
from loopkit_core.store.engines import Store
from loopkit_core.store.migrations import migrate
from loopkit_core.store.records import get_records, insert_resources, insert_rows, insert_signatures
from loopkit_core.window import Window
from loopkit_receivers import records_shape

if TYPE_CHECKING:
    import httpx  # LabApp's client (Starlette's TestClient needs httpx, which the test extra installs)

PROJECT_ID = "lab"
NS_PER_MINUTE = 60_000_000_000
_template_lock = threading.Lock()
_template: sqlite3.Connection | None = None  # an in-memory project database, migrated once per process
_loaded: Plugins | None = None  # the installed plugins, loaded (entry points read) once per process


class PluginFailed(AssertionError):
    """A plugin's answer LoopKit would refuse (the text a packet's diagnoser_errors would show)."""


def _memory_engine() -> Engine:
    """A fresh in-memory project database with the current schema: a copy of a migrated template (~0.1 ms)."""
    global _template
    with _template_lock:
        if _template is None:
            template = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
            migrate(template, "project")
            _template = template.raw_connection().driver_connection
        fresh = sqlite3.connect(":memory:", check_same_thread=False)
        _template.backup(fresh)
    engine = create_engine("sqlite://", poolclass=StaticPool, creator=lambda: fresh)
    day_tables.install(engine)  # as every project store's engine
    return engine


def _fresh_plugins(blocked: Iterable[str] = ()) -> Plugins:
    """The installed plugins in a new manager: what a server loads, without reading the entry points again."""
    global _loaded
    blocked = list(blocked)
    if blocked:
        return get_plugins(blocked)
    if _loaded is None:
        _loaded = get_plugins()
    manager = pluggy.PluginManager("loopkit")
    manager.add_hookspecs(hookspecs)
    for name, plugin in _loaded.manager.list_name_plugin():
        if plugin is not None:
            manager.register(plugin, name=name)
    return Plugins(manager, _loaded.builtin, list(_loaded.load_errors), dict(_loaded.origins))


class _MemoryStore:
    """What diagnose.run and verify.run need of a Store: one project's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def project(self, project_id: str) -> Engine:
        """The lab project's engine."""
        return self.engine

    def close(self) -> None:
        """Release the in-memory database."""
        self.engine.dispose()


class Lab:
    """One project's records and LoopKit's plugins, for running one plugin at a time without a server."""

    def __init__(
        self, data_dir: Path | None = None, plugins: Iterable[tuple[str, object]] = (), blocked: Iterable[str] = ()
    ) -> None:
        self.now_ns = time.time_ns()
        self.project_id = PROJECT_ID
        self.plugins = _fresh_plugins(blocked)
        for name, plugin in plugins:
            self.register(plugin, name)
        if data_dir is None:  # in memory: nothing touches the disk
            self.store: Any = _MemoryStore(_memory_engine())
            self.settings = Settings.from_env({})
        else:
            self.settings = Settings.from_env({}, data_dir=data_dir, sqlite_synchronous="OFF")
            self.store = Store(self.settings)
        self.engine: Engine = self.store.project(self.project_id)

    def register(self, plugin: object, name: str) -> None:
        """Load a plugin that is not installed (a module, or any object with @hookimpl functions) under `name`."""
        self.plugins.register(plugin, name)

    def add(self, records: Iterable[dict[str, Any] | Record], minutes_ago: float | None = None) -> list[str]:
        """Store records (plain record dicts, docs/records.md, or Records); their record IDs, in order.

        A dict without a `timestamp` is stamped `minutes_ago` minutes before `now_ns` (default: 1 ms before).
        Dicts are validated as `POST /v1/traces` would (ValueError with the server's reason), and failures
        are signed by the `record_signature` hooks, as at ingest.
        """
        at = self.now_ns - (1_000_000 if minutes_ago is None else int(minutes_ago * NS_PER_MINUTE))
        built: list[Record] = []
        for index, item in enumerate(records):
            if isinstance(item, Record):
                built.append(item)
                continue
            decoded = records_shape.decode({"records": [item]}, self.project_id, at)
            if decoded.errors:
                raise ValueError(f"record {index}: {decoded.errors[0]['reason']}")
            built.extend(decoded.records)
        batch = prepare(built, self.plugins)
        with self.engine.begin() as conn:
            if batch.signatures:
                insert_signatures(conn, batch.signatures)
            insert_resources(conn, batch.resources)
            insert_rows(conn, batch.rows)
        return [record.record_id for record in built]

    def window(self, since_minutes: float = 60.0, until_minutes_ago: float = 0.0) -> Window:
        """The window `[now - until_minutes_ago - since_minutes, now - until_minutes_ago)` a plugin is handed."""
        end = self.now_ns - int(until_minutes_ago * NS_PER_MINUTE)
        return Window(self.project_id, max(end - int(since_minutes * NS_PER_MINUTE), 0), end, self.engine)

    def diagnose(
        self, diagnoser: str, window: Window | None = None, min_count: int = 3, max_issues: int = 20
    ) -> list[Issue]:
        """Run one diagnoser on a window (default: the last hour); its issues, checked as the pipeline checks them.

        The plugin is called directly, so its exceptions reach the test with their traceback; an answer the
        pipeline would refuse raises PluginFailed. The issues keep their order; min_count is not applied.
        """
        window = window or self.window()
        options = {"min_count": min_count, "max_issues": max_issues, "since_minutes": window_minutes(window)}
        answer = self._call(diagnoser, "diagnose", {"window": window, "options": options})
        issues = list(answer or [])
        for issue in issues:
            try:
                check_issue(issue)
            except (TypeError, ValueError) as exc:
                raise PluginFailed(f"{diagnoser}: {type(exc).__name__}: {exc}") from exc
            issue.diagnoser = diagnoser
        return issues

    def packet_issue(self, issue: Issue, window: Window | None = None) -> dict[str, Any]:
        """An issue as a packet holds it (issue_id, selector in JSON, records_url...), e.g. to hand to a verifier."""
        window = window or self.window()
        check_issue(issue)
        return diagnosis.packet_issue(self.project_id, issue, window, window_minutes(window))

    def verify(
        self,
        issue: dict[str, Any] | Issue,
        before: Window,
        after: Window,
        verifier: str | None = None,
        previous: str = "new",
    ) -> Verdict | None:
        """One verdict on an issue: from the named verifier (None if it passes), or as the pipeline asks them.

        Without `verifier`, every verifier is asked in call order and the first answer wins, exactly as
        `POST /v1/runs/verify` does; None means no verifier knows the issue (the API says insufficient_data).
        """
        if isinstance(issue, Issue):
            issue = self.packet_issue(issue, before)
        kwargs = {"issue": issue, "before": before, "after": after, "previous": previous}
        if verifier is not None:
            answer = self._call(verifier, "verify_issue", kwargs)
            try:
                verdict = _checked_verdict(answer)
            except TypeError as exc:
                raise PluginFailed(f"{verifier}: {exc}") from exc
            if verdict is not None:
                verdict.verifier = verifier
            return verdict
        calls = self.plugins.call_each("verify_issue", kwargs, check=_checked_verdict, first_answer=True)
        if calls.errors:
            raise PluginFailed("; ".join(f"{e.plugin}: {e.error}" for e in calls.errors))
        if not calls.answers:
            return None
        name, verdict = calls.answers[0]
        verdict.verifier = name
        return verdict

    def packet(
        self,
        diagnosers: Iterable[str] | None = None,
        since_minutes: float = 60.0,
        min_count: int = 3,
        max_issues: int = 20,
    ) -> dict[str, Any]:
        """A whole diagnosis, as `POST /v1/runs/diagnose` answers it (stored; diagnoser failures in the packet)."""
        only = tuple(diagnosers) if diagnosers is not None else None
        request = DiagnoseRequest(since_minutes, self.now_ns, only, min_count, max_issues)
        return diagnosis.run(self.store, self.plugins, self.project_id, request, self.now_ns)

    def render(self, packet: dict[str, Any], format: str = "markdown") -> str:
        """A packet's handoff in one format, with its evidence records, as `GET .../handoff?format=` renders it."""
        renderers = self.plugins.renderers()
        if format not in renderers:
            raise KeyError(f"no renderer {format!r}; loaded: {', '.join(sorted(renderers))}")
        ids = [rid for issue in packet.get("issues") or [] for rid in issue.get("evidence") or []]
        context = {"records": get_records(self.engine, ids), "base_url": self.settings.base_url()}
        return renderers[format].render(packet, context)

    def close(self) -> None:
        """Release the database."""
        self.store.close()

    def _call(self, name: str, hook: str, kwargs: dict[str, Any]) -> Any:
        for plugin, impl in self.plugins.implementations(hook):
            if plugin == name:
                return impl.function(**{k: kwargs[k] for k in impl.argnames})
        found = ", ".join(plugin for plugin, _ in self.plugins.implementations(hook)) or "none"
        raise LookupError(f"no plugin {name!r} implements {hook}; those that do: {found}")


def window_minutes(window: Window) -> float:
    """A window's length in minutes."""
    return (window.end_ns - window.start_ns) / NS_PER_MINUTE


class LabApp:
    """The whole LoopKit HTTP app in-process, over a temporary data directory, with one project's keys."""

    def __init__(self, data_dir: Path, plugins: Iterable[tuple[str, object]] = ()) -> None:
        from starlette.testclient import TestClient

        from loopkit_core.app import create_app  # the whole app (MCP SDK included): only when a test asks

        settings = Settings.from_env({}, data_dir=data_dir, sqlite_synchronous="OFF", log_level="warning")
        self.loopkit = create_app(settings)
        for name, plugin in plugins:
            self.loopkit.plugins.register(plugin, name)
        self.client: httpx.Client = TestClient(self.loopkit.http, base_url="http://127.0.0.1")
        signup = self.client.post("/v1/signup", json={"project_name": "lab"})
        signup.raise_for_status()
        self.keys: dict[str, str] = signup.json()
        self.project_id: str = self.keys["project_id"]

    def auth(self, kind: str = "agent") -> dict[str, str]:
        """The authorization header of the project's `producer`, `agent` or `dashboard` key."""
        return {"authorization": f"Bearer {self.keys[kind + '_key']}"}

    def post_records(self, records: list[dict[str, Any]]) -> list[str]:
        """POST /v1/traces with the producer key; every record must be accepted; their record IDs."""
        answer = self.client.post("/v1/traces", json={"records": records}, headers=self.auth("producer"))
        if answer.status_code != 200 or answer.json().get("accepted") != len(records):
            raise AssertionError(f"records refused: {answer.status_code} {answer.text}")
        return answer.json()["record_ids"]

    def get(self, path: str, **params: Any) -> httpx.Response:
        """GET with the agent key."""
        return self.client.get(path, params=params, headers=self.auth())

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """POST a JSON body with the agent key."""
        return self.client.post(path, json=body or {}, headers=self.auth())

    def close(self) -> None:
        """Stop the app and release its store."""
        self.client.close()
        self.loopkit.close()


def _checked_verdict(answer: Any) -> Verdict | None:
    # The pipeline's rule (verify.py): None, or a Verdict with a known verdict.
    if answer is not None and (not isinstance(answer, Verdict) or answer.verdict not in VERDICTS):
        raise TypeError(f"verify_issue must return a Verdict with one of {', '.join(VERDICTS)}")
    return answer
