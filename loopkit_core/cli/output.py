"""How commands print: aligned tables and JSON documents."""

from __future__ import annotations

import json
from typing import Any


def table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """Print rows as left-aligned columns under a header line."""
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def print_json(document: Any, indent: int | None = 2) -> None:
    """Print one JSON document."""
    print(json.dumps(document, indent=indent))
