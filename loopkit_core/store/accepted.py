"""The count of records a project ever accepted: what a sandbox's quota spends, kept in one `counters` row."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, func, select, update

from loopkit_core.store import dialect
from loopkit_core.store.schema import ACCEPTED, counters, records


def accepted_total(conn: Connection) -> int:
    """Records ever accepted by the project (what quotas count), locking the counter until the commit.

    The row lock (FOR UPDATE on PostgreSQL; SQLite's write lock serializes anyway) makes writers in other
    processes wait here, so two processes can never both spend a quota's last units.
    """
    locked = select(counters.c.value).where(counters.c.name == ACCEPTED).with_for_update()
    value = conn.execute(locked).scalar()
    if value is None:
        # First commit (or a store older than the counter): create the row from the stored rows; a concurrent
        # first commit elsewhere waits on this insert, then finds the row and locks it.
        count = conn.execute(select(func.count()).select_from(records)).scalar() or 0
        new = dialect.insert(conn, counters).values(name=ACCEPTED, value=count)
        conn.execute(new.on_conflict_do_nothing(index_elements=["name"]))
        value = conn.execute(locked).scalar()
    return value


def write_accepted_total(conn: Connection, value: int) -> None:
    """Store the running total of records ever accepted (read with accepted_total in the same transaction)."""
    stmt = dialect.insert(conn, counters).values(name=ACCEPTED, value=value)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"value": value}))


def add_accepted(conn: Connection, added: int) -> None:
    """Add records this transaction has just inserted to the total, locking the counter only from here to the commit.

    For writes no quota limits: writers of one project (threads or processes) insert side by side and queue for
    the counter only at the end of their transactions.
    """
    if not added:
        return
    bumped = conn.execute(update(counters).where(counters.c.name == ACCEPTED).values(value=counters.c.value + added))
    if bumped.rowcount:
        return
    # First commit (or a store older than the counter): the count already holds this transaction's rows. A first
    # commit elsewhere that made the row meanwhile is met by the conflict, and only this one's rows are added.
    count = select(func.count()).select_from(records).scalar_subquery()
    new = dialect.insert(conn, counters).values(name=ACCEPTED, value=count)
    conn.execute(new.on_conflict_do_update(index_elements=["name"], set_={"value": counters.c.value + added}))


def accepted_count(engine: Engine) -> int:
    """Records ever accepted by the project, read without a lock (for display only)."""
    with engine.connect() as conn:
        return int(conn.execute(select(counters.c.value).where(counters.c.name == ACCEPTED)).scalar() or 0)
