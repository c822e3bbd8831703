"""Rows of the append-only tables kept per packet (stages, eval runs), read for several packets at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine, Table, select


def rows_by_packet(
    engine: Engine, table: Table, packet_ids: Iterable[str], shape: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Every row of `table` for each packet, oldest first (by `seq`), each passed through `shape`."""
    ids = list(packet_ids)
    out: dict[str, list[dict[str, Any]]] = {p: [] for p in ids}
    if not ids:
        return out
    with engine.connect() as conn:
        rows = conn.execute(select(table).where(table.c.packet_id.in_(ids)).order_by(table.c.seq)).all()
    for row in rows:
        out[row.packet_id].append(shape(row._asdict()))
    return out
