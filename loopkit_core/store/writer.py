"""The batching writer: groups concurrent requests per project into one commit, then acknowledges."""

from __future__ import annotations

import logging
import threading
import zlib
from collections import defaultdict
from concurrent.futures import Future
from typing import Any

from loopkit_core.sink import Ack, CommitFailed, Overloaded
from loopkit_core.store import partitions
from loopkit_core.store.accepted import accepted_total, add_accepted, write_accepted_total
from loopkit_core.store.engines import Store
from loopkit_core.store.records import insert_resources, insert_rows, insert_signatures
from loopkit_core.store.resends import record_stored, stored_ids
from loopkit_core.store.schema import TS_NS, Row

log = logging.getLogger("loopkit.writer")

Rows = list[Row]  # records rows (RECORD_COLUMNS order)
Descriptions = list[dict[str, Any]]  # signature rows
Resources = list[tuple[str, str]]  # (resource_key, JSON) rows

# A commit covers at most this many requests; more waiting for one project take several commits. On PostgreSQL each
# request's COPY runs in a savepoint (store/pg_copy.py), and a backend caches 64 subtransaction IDs: past that,
# concurrent snapshots must look the transaction up in pg_subtrans. It also bounds what a failed commit redoes one
# request at a time.
MAX_GROUP = 32


class _Item:
    __slots__ = ("rows", "quota", "signatures", "resources", "future")

    def __init__(
        self, rows: Rows, quota: int | None, signatures: Descriptions, resources: Resources, future: Future[Ack]
    ) -> None:
        self.rows, self.quota, self.signatures, self.resources = rows, quota, signatures, resources
        self.future = future


class Writer:
    """Shards projects over a few threads; each commit covers every request waiting for a project.

    SQLite takes one writer at a time per file, so a project's requests all go to one thread. PostgreSQL inserts
    side by side: there a request no quota limits goes to the thread with the fewest rows waiting, and one busy
    project keeps every thread (and a PostgreSQL backend each) at work.
    """

    def __init__(self, store: Store, threads: int = 2, max_pending_rows: int = 200_000) -> None:
        self._shards = [_Shard(store, max_pending_rows, i) for i in range(threads)]
        self._spread = store.postgres
        for shard in self._shards:
            shard.start()

    def submit(
        self,
        project_id: str,
        rows: Rows,
        quota: int | None = None,
        signatures: Descriptions | None = None,
        resources: Resources | None = None,
    ) -> Future[Ack]:
        """Queue rows; the future completes once they are committed (or fails with the reason).

        `signatures` are the rows' distinct signature descriptions and `resources` their resources, stored
        alongside (first one wins).
        With a quota, at most `quota` records are ever accepted for the project: the rows past it are
        refused (and listed in the result), exactly, however many requests race for the last places.
        """
        if self._spread and quota is None:
            shard = min(self._shards, key=_Shard.waiting)
        else:
            shard = self._shards[zlib.crc32(project_id.encode()) % len(self._shards)]
        return shard.submit(project_id, rows, quota, signatures or [], resources or [])

    def close(self, timeout: float | None = None) -> None:
        """Stop taking writes, commit everything already queued, and join the threads."""
        for shard in self._shards:
            shard.close()
        for shard in self._shards:
            shard.join(timeout)


class _Shard(threading.Thread):
    def __init__(self, store: Store, max_pending_rows: int, index: int) -> None:
        super().__init__(name=f"loopkit-writer-{index}", daemon=True)
        self._store = store
        self._max_pending = max_pending_rows
        self._cond = threading.Condition()
        self._queue: list[tuple[str, _Item]] = []
        self._pending_rows = 0
        self._closing = False

    def submit(
        self, project_id: str, rows: Rows, quota: int | None, signatures: Descriptions, resources: Resources
    ) -> Future[Ack]:
        future: Future[Ack] = Future()
        if not rows:
            future.set_result(Ack())
            return future
        with self._cond:
            if self._closing:
                raise Overloaded("server is shutting down")
            # One oversized request is still accepted into an empty queue, so it can never starve.
            if self._pending_rows and self._pending_rows + len(rows) > self._max_pending:
                raise Overloaded("ingest queue is full")
            self._queue.append((project_id, _Item(rows, quota, signatures, resources, future)))
            self._pending_rows += len(rows)
            self._cond.notify()
        return future

    def waiting(self) -> int:
        """Rows queued or being committed (read without the lock: a hint for where the next request goes)."""
        return self._pending_rows

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue and self._closing:
                    return
                batch, self._queue = self._queue, []
            by_project: dict[str, list[_Item]] = defaultdict(list)
            for project_id, item in batch:
                by_project[project_id].append(item)
            for project_id, items in by_project.items():
                for start in range(0, len(items), MAX_GROUP):
                    self._commit(project_id, items[start : start + MAX_GROUP])
            with self._cond:
                self._pending_rows -= sum(len(item.rows) for _, item in batch)

    def _commit(self, project_id: str, items: list[_Item]) -> None:
        try:
            engine = self._store.project(project_id)
            if self._store.postgres:
                _make_partitions(engine, items)
            with engine.begin() as conn:
                # A quota is spent exactly: its counter is locked first, so racing writers (threads or processes)
                # wait before they insert. Without one the lock comes after the inserts: on PostgreSQL two commits
                # of one project then copy their rows side by side and queue only for the counter and the commit.
                capped = any(item.quota is not None for item in items)
                accepted = accepted_total(conn) if capped else 0
                signatures, resources = _described(items)
                if signatures:
                    insert_signatures(conn, signatures)
                if resources:
                    insert_resources(conn, resources)
                results = []
                for item in items:
                    result = _write(conn, item, accepted)
                    accepted += result.inserted
                    results.append(result)
                if capped:
                    write_accepted_total(conn, accepted)
                else:
                    add_accepted(conn, accepted)
        except Exception:
            if len(items) > 1:
                # Isolate the failing request so its neighbours in the group still commit.
                for item in items:
                    self._commit(project_id, [item])
                return
            log.exception("commit failed for project %s", project_id)
            items[0].future.set_exception(CommitFailed(project_id))
            return
        for item, result in zip(items, results, strict=True):
            item.future.set_result(result)


def _described(items: list[_Item]) -> tuple[Descriptions, Resources]:
    """The group's signature descriptions and resources, each key once (its first request's), in key order.

    In key order because two transactions adding the same new keys wait for each other's: in one order they queue,
    in two they deadlock, and PostgreSQL fails one of them (as it did once two threads wrote one project).
    """
    signatures: dict[str, dict[str, Any]] = {}
    resources: dict[str, str] = {}
    for item in items:
        for description in item.signatures:
            signatures.setdefault(description["signature"], description)
        for key, body in item.resources:
            resources.setdefault(key, body)
    return [signatures[key] for key in sorted(signatures)], sorted(resources.items())


def _make_partitions(engine: Any, items: list[_Item]) -> None:
    """PostgreSQL: make the day partitions these rows need, before their commit and outside it (never fails it)."""
    try:
        partitions.ensure(engine, partitions.days_of(row[TS_NS] for item in items for row in item.rows))
    except Exception:  # rows of a day without its partition go to the default one: nothing is lost
        log.exception("could not make day partitions; the rows go to the default partition")


def _write(conn: Any, item: _Item, accepted: int) -> Ack:
    """Insert one request's rows; near a quota, row by row so exactly the overflow is refused."""
    if item.quota is None or accepted + len(item.rows) <= item.quota:
        result = Ack(inserted=insert_rows(conn, item.rows))
    else:
        result = Ack()
        for index, row in enumerate(item.rows):
            if accepted + result.inserted < item.quota:
                result.inserted += insert_rows(conn, [row])
            elif not record_stored(conn, row):  # a resent record already stored is not refused
                result.over_quota.append(index)
    if result.inserted + len(result.over_quota) < len(item.rows):  # some were duplicates: only on retries
        refused = set(result.over_quota)
        result.stored_as = {i: rid for i, rid in stored_ids(conn, item.rows).items() if i not in refused}
    return result
