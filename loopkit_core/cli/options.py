"""Flags several commands share, and the Settings their flags make."""

from __future__ import annotations

import argparse
from pathlib import Path

from loopkit_core.settings import Settings

# Every flag that is also a setting, by its argparse destination (docs/configuration.md).
SETTING_FLAGS = ("data_dir", "host", "http_port", "grpc_port", "database_url", "max_body_bytes", "log_level")


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """--data-dir."""
    parser.add_argument("--data-dir", type=Path, help="data directory (LOOPKIT_DATA_DIR, default ./loopkit-data)")


def add_store(parser: argparse.ArgumentParser) -> None:
    """--data-dir and --database-url: the store an operator command opens."""
    add_data_dir(parser)
    parser.add_argument("--database-url", help="PostgreSQL URL (LOOPKIT_DATABASE_URL), as given to serve")


def add_server(parser: argparse.ArgumentParser) -> None:
    """--url and --key: the running server a client command calls."""
    parser.add_argument("--url", help="server base URL (LOOPKIT_URL, default http://127.0.0.1:4318)")
    parser.add_argument("--key", help="API key (LOOPKIT_KEY)")


def add_json(parser: argparse.ArgumentParser, text: str = "print JSON") -> None:
    """--json."""
    parser.add_argument("--json", action="store_true", help=text)


def settings_of(args: argparse.Namespace) -> Settings:
    """Settings from LOOPKIT_* variables, with the command's flags winning."""
    return Settings.from_env(**{name: getattr(args, name, None) for name in SETTING_FLAGS})
