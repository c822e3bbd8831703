"""One Settings object, from defaults, then LOOPKIT_* environment variables, then CLI flags."""

from __future__ import annotations

import os
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
    database_url: str | None = None
    # OTLP spec recommends 64 MiB after decompression; applies to HTTP bodies and gRPC messages.
    max_body_bytes: int = 64 * MiB
    # SQLite `synchronous`: FULL survives power loss, NORMAL survives a process crash.
    sqlite_synchronous: str = "FULL"
    writer_threads: int = 2
    # Back-pressure: rows waiting for a commit, per writer thread, before ingest answers 503.
    writer_max_pending_rows: int = 200_000
    grpc_workers: int = 16
    shutdown_grace_seconds: float = 10.0
    log_level: str = "info"

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
        if self.writer_threads < 1 or self.grpc_workers < 1:
            raise ValueError("writer_threads and grpc_workers must be at least 1")


def _type_of(name: str) -> str:
    return next(str(f.type) for f in fields(Settings) if f.name == name)


def _coerce(name: str, type_name: object, raw: str) -> object:
    t = str(type_name)
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
