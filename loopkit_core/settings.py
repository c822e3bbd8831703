"""One Settings object, from defaults, then LOOPKIT_* environment variables, then CLI flags."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything a LoopKit process is configured with; see docs/configuration.md."""

    data_dir: Path = Path("./loopkit-data")
    host: str = "127.0.0.1"
    http_port: int = 4318
    grpc_port: int = 4317
    # None: SQLite files in data_dir. postgresql+psycopg://user@host/db: everything in PostgreSQL.
    database_url: str | None = None
    # PostgreSQL only: prepended to every schema name (<prefix>loopkit, <prefix>lk_p_<project>), e.g. to share
    # one database between several LoopKit installations (or test runs).
    database_schema_prefix: str = ""
    # PostgreSQL only: LoopKit's connections sort and hash with at least this much work_mem (MiB); the server's own
    # value when higher; 0 leaves the server's. At 4 MiB, a diagnosis's grouped reads sorted on disk.
    database_work_mem_mb: int = 32
    # OTLP spec recommends 64 MiB after decompression; applies to HTTP bodies and gRPC messages.
    max_body_bytes: int = 64 * MiB
    # Per record (docs/records.md): longer string values are cut to this many characters, and attributes,
    # events and links past these counts are dropped; a marker attribute says what was cut.
    max_attribute_value_length: int = 16 * 1024
    max_attributes_per_span: int = 256
    max_events_per_span: int = 256
    max_links_per_span: int = 256
    # A POST /v1/traces body must arrive within this many seconds (slow clients get 408 and are dropped).
    request_body_timeout_seconds: float = 30.0
    # A request head (HTTP request line and headers; gRPC: the HTTP/2 preface and SETTINGS) must arrive within
    # this many seconds of the connection or of the previous response, or the connection is closed.
    header_timeout_seconds: float = 10.0
    # Open connections: HTTP requests beyond it get 503 (uvicorn's limit_concurrency); gRPC closes new
    # connections beyond it at once (grpc.max_allowed_incoming_connections).
    max_http_connections: int = 1000
    max_grpc_connections: int = 1000
    # SQLite `synchronous`: FULL survives power loss, NORMAL survives a process crash.
    sqlite_synchronous: str = "FULL"
    # SQLite `wal_autocheckpoint`, in 4 KiB pages: the write-ahead log is copied back into the database once it
    # holds this many. Higher means each hot index page is copied back once per more commits (less writing per
    # span), a larger -wal file (~200 MB at the default) and a longer log replay after a crash.
    sqlite_wal_autocheckpoint: int = 50_000
    # Records a SQLite day table takes before the day's later records go to a new table (store/day_tables.py):
    # the random-key indexes of a bounded table cost each write what they cost the day's first records.
    sqlite_table_rows: int = 2_000_000
    writer_threads: int = 2
    # Back-pressure: rows waiting for a commit, per writer thread, before ingest answers 503.
    writer_max_pending_rows: int = 200_000
    grpc_workers: int = 16
    # Processes that decode ingest payloads into rows beside the server process (which keeps auth, quotas and
    # the commit): -1 picks one per CPU beyond the first under `loopkit serve` (none in embedded servers);
    # 0 decodes on threads of the server process. See docs/benchmarks.md for what it buys.
    decode_workers: int = -1
    shutdown_grace_seconds: float = 10.0
    log_level: str = "info"
    # Where clients reach this server (signup answers build URLs from it); default http://host:http_port.
    public_url: str | None = None
    public_grpc_endpoint: str | None = None  # default host:grpc_port
    sandbox_quota_spans: int = 5000
    sandbox_days: float = 14.0
    # Expired sandboxes keep their data this long (reads say "expired"), then it is purged.
    sandbox_grace_days: float = 7.0
    purge_interval_seconds: float = 300.0
    # Records older than this (by their timestamp) are deleted in the background; 0 keeps them forever.
    # Per project override: `loopkit projects set-retention PROJECT DAYS`.
    retention_days: float = 30.0
    # Rows deleted per transaction by the retention purge, so the writer is never held for long.
    retention_batch_rows: int = 2000
    # POST /v1/signup, /v1/provision and /v1/recover per client address per hour.
    rate_limit_per_hour: int = 20
    # Spans (or records-shape records) in one request; beyond it 413 / RESOURCE_EXHAUSTED, before any is decoded.
    max_spans_per_request: int = 100_000
    # POST /v1/runs/diagnose per project per sliding minute (a diagnosis reads a whole window).
    diagnose_per_minute: int = 60
    # Proxies (comma-separated addresses, or *) whose X-Forwarded-For names the client; none by default.
    forwarded_allow_ips: str | None = None
    # Minting a permanent project with POST /v1/provision needs the operator's consent on a server others can reach:
    # this token, sent as `authorization: Bearer <token>`. Give it as the token itself or as "sha256:<hex digest>"
    # (only the digest is kept in memory and compared). See docs/deployment.md.
    provision_token: str | None = None
    # None (auto): provisioning is open (no token needed) only on a server reachable from this machine alone
    # (host 127.0.0.1, ::1 or localhost, no proxy, no public URL elsewhere). True opens it anywhere; False never.
    open_provisioning: bool | None = None
    # Per-project engines kept open (SQLite: ~3 file descriptors each); the least recently used is closed beyond it.
    max_open_projects: int = 256
    contact_text: str = (
        "Sandbox projects are capped and expire. Ask the operator of this server for a production project; "
        "they can promote yours without losing data."
    )
    contact_email: str | None = None
    # Plugin names never to load (comma-separated), e.g. "latency_outliers,acme_diagnoser".
    blocked_plugins: str = ""
    # What makes a user_signal record negative (loopkit_core/feedback.py, docs/plugin_hooks.md#user_signals):
    # a label attribute (feedback, feedback.label, ...) or the record's name among these (comma-separated) ...
    negative_signal_labels: str = (
        "thumbs_down,negative,dislike,downvote,unhelpful,not_helpful,bad,retry,regenerate,abandoned"
    )
    # ... or a numeric score attribute (feedback.score, score, rating, ...) at most this.
    negative_signal_max_score: float = 0.0
    # A signal outside any trace is attributed to its session's latest root span at most this long before it.
    negative_signal_lookback_seconds: float = 900.0

    def negative_signals(self) -> dict[str, object]:
        """The negative-signal rule's settings, as the diagnose options `negative_signals`."""
        return {
            "labels": self.negative_signal_labels,
            "max_score": self.negative_signal_max_score,
            "lookback_seconds": self.negative_signal_lookback_seconds,
        }

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from LOOPKIT_* variables; keyword overrides (CLI flags) win when not None."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get("LOOPKIT_" + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, f.type, raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = _coerce(name, _type_of(name), value) if isinstance(value, str) else value
        url = values.get("database_url")
        if isinstance(url, str) and url.startswith("postgresql://"):
            values["database_url"] = "postgresql+psycopg://" + url.removeprefix("postgresql://")  # psycopg 3
        settings = replace(cls(), **values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work."""
        for port_name in ("http_port", "grpc_port"):
            port = getattr(self, port_name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{port_name} must be between 0 and 65535, got {port}")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        if self.sqlite_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA")
        if self.sqlite_wal_autocheckpoint < 100:
            raise ValueError("sqlite_wal_autocheckpoint must be at least 100 pages")
        if self.sqlite_table_rows < 1000:
            raise ValueError("sqlite_table_rows must be at least 1000")
        if not 0 <= self.database_work_mem_mb <= 2048:
            raise ValueError("database_work_mem_mb must be between 0 (the server's own) and 2048")
        if self.decode_workers < -1:
            raise ValueError("decode_workers must be -1 (automatic), 0 (none) or a number of processes")
        if self.writer_threads < 1 or self.grpc_workers < 1:
            raise ValueError("writer_threads and grpc_workers must be at least 1")
        if self.sandbox_quota_spans < 0 or self.sandbox_days <= 0 or self.sandbox_grace_days < 0:
            raise ValueError("sandbox_days must be positive; sandbox_quota_spans and sandbox_grace_days not negative")
        if self.negative_signal_lookback_seconds < 0:
            raise ValueError("negative_signal_lookback_seconds must not be negative")
        if self.purge_interval_seconds <= 0:
            raise ValueError("purge_interval_seconds must be positive")
        if self.request_body_timeout_seconds <= 0:
            raise ValueError("request_body_timeout_seconds must be positive")
        if self.header_timeout_seconds <= 0:
            raise ValueError("header_timeout_seconds must be positive")
        if self.max_http_connections < 2 or self.max_grpc_connections < 1:
            # uvicorn counts the asking connection itself: a limit of 1 would refuse every request.
            raise ValueError("max_http_connections must be at least 2 and max_grpc_connections at least 1")
        if self.retention_days < 0 or self.retention_batch_rows < 1:
            raise ValueError("retention_days must not be negative and retention_batch_rows must be at least 1")
        if min(self.max_attributes_per_span, self.max_events_per_span, self.max_links_per_span) < 0 or (
            self.max_attribute_value_length < 1
        ):
            raise ValueError("attribute, event and link limits must not be negative (value length at least 1)")
        if self.rate_limit_per_hour < 1 or self.diagnose_per_minute < 1 or self.max_spans_per_request < 1:
            raise ValueError("rate_limit_per_hour, diagnose_per_minute and max_spans_per_request must be at least 1")
        if self.database_url and not self.database_url.startswith("postgresql+psycopg://"):
            raise ValueError("database_url must be a postgresql+psycopg:// URL (or empty for SQLite in data_dir)")
        if self.provision_token is not None:
            token = self.provision_token
            if token.startswith("sha256:") and not re.fullmatch(r"sha256:[0-9a-f]{64}", token):
                raise ValueError("provision_token as a digest must be sha256: and 64 lowercase hex digits")
            if not token.startswith("sha256:") and (len(token) < 16 or not token.isascii() or not token.isprintable()):
                raise ValueError("provision_token must be at least 16 printable ASCII characters")
        if self.max_open_projects < 1:
            raise ValueError("max_open_projects must be at least 1")
        if not re.fullmatch(r"([a-z_][a-z0-9_]{0,29})?", self.database_schema_prefix):
            raise ValueError("database_schema_prefix must be at most 30 lowercase letters, digits or _")

    def blocked_plugins_list(self) -> list[str]:
        """The blocked plugin names."""
        return [name.strip() for name in self.blocked_plugins.split(",") if name.strip()]

    def base_url(self) -> str:
        """The public base URL of the HTTP API, without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.http_port}"

    def grpc_endpoint(self) -> str:
        """The public host:port of OTLP/gRPC."""
        if self.public_grpc_endpoint:
            return self.public_grpc_endpoint
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.grpc_port}"


def _type_of(name: str) -> str:
    return next(str(f.type) for f in fields(Settings) if f.name == name)


def _coerce(name: str, type_name: object, raw: str) -> object:
    t = str(type_name)
    if t in ("bool", "bool | None"):
        word = raw.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        if word == "auto" and t == "bool | None":
            return None
        allowed = "true or false" + (" (or auto)" if t == "bool | None" else "")
        raise ValueError(f"LOOPKIT_{name.upper()}: {raw!r} is not {allowed}")
    try:
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
        if t == "Path":
            return Path(raw)
    except ValueError as exc:
        raise ValueError(f"LOOPKIT_{name.upper()}: {raw!r} is not a valid {t}") from exc
    return raw
