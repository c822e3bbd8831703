"""A memoized window (one diagnosis) answers groups, releases and reach exactly as SQL does, from one read.

Records go in through the real HTTP receiver into the real store (SQLite, or PostgreSQL when the run is); every
answer of the memoized window is compared with the plain window's, order included (ties, NULL, limits).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import httpx
import pytest
from conftest import Project
from sqlalchemy import event

from loopkit_core import window as window_module
from loopkit_core.server import Running
from loopkit_core.store.partial_indexes import run_people
from loopkit_core.window import Window

SELECTOR = {"type": "error", "name": "POST /pay"}


def send(client: httpx.Client, project: Project, records: list[dict[str, Any]]) -> None:
    answer = client.post("/v1/traces", json={"records": records}, headers=project.auth())
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == len(records), answer.text


def traffic(client: httpx.Client, project: Project) -> int:
    """24 failures of one operation over 2 services, traces shared by pairs, sessions and users with ties and
    gaps; and 5 calls of another operation. Returns the newest timestamp."""
    now = time.time_ns() - 10**9
    records = []
    for n in range(24):
        records.append(
            {
                "type": "error",
                "name": "POST /pay",
                "service": "shop" if n % 3 else "billing",
                "message": f"card declined ({n % 5})",
                "timestamp": now - n * 10**6,
                "trace_id": f"{n // 2 + 1:032x}" if n % 4 else None,
                "span_id": f"{n + 1:016x}" if n % 4 else None,
                # Sessions s0..s5, but every seventh record has none: ties at 4 (with NULL) and at 3; users too.
                "session_id": None if n % 7 == 0 else f"s{n % 6}",
                "user_id": None if n % 5 == 0 else f"u{n % 9}",
            }
        )
    records += [{"type": "latency", "name": "GET /home", "timestamp": now - n * 10**6} for n in range(5)]
    send(client, project, records)
    return now


def windows(server: Running, project: Project, now: int) -> tuple[Window, Window]:
    engine = server.app.store.project(project.project_id)
    plain = Window(project.project_id, now - 60 * 10**9, now + 1, engine)
    return plain, plain.memoized()


def test_a_memoized_window_answers_like_sql_in_its_order(
    server: Running, client: httpx.Client, project: Project
) -> None:
    plain, memo = windows(server, project, traffic(client, project))
    for by in ("trace_id", "session_id", "user_id"):
        for limit in (1, 2, 3, 5, 1000):
            assert memo.groups(SELECTOR, by=by, limit=limit) == plain.groups(SELECTOR, by=by, limit=limit), (by, limit)
    # s4, s5 and no session (NULL: first on SQLite, last on PostgreSQL), then s0 to s3.
    assert [g.count for g in plain.groups(SELECTOR, by="session_id")] == [4, 4, 4, 3, 3, 3, 3]
    assert sum(g.count for g in plain.groups(SELECTOR, by="trace_id")) == 24
    assert memo.releases(SELECTOR) == plain.releases(SELECTOR)
    assert sorted((g.release, g.count) for g in plain.releases(SELECTOR)) == [(None, 24)]
    assert memo.reach(SELECTOR) == plain.reach(SELECTOR)
    traces, sessions, users = plain.reach(SELECTOR)
    assert (len(traces), len(sessions), len(users)) == (12, 6, 9)
    # More than 3 (trace, session, user) triples: the first 3 in that order, traces first (NULL last).
    assert memo.reach(SELECTOR, limit=3) == plain.reach(SELECTOR, limit=3)
    first = memo.reach(SELECTOR, limit=3)[0]
    assert first and first <= set(sorted(traces)[:3]) and min(traces) in first


def test_reaches_reads_each_shared_trace_once_and_answers_as_reach(
    server: Running, client: httpx.Client, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, memo = windows(server, project, traffic(client, project))
    shop, billing = {**SELECTOR, "service": "shop"}, {**SELECTOR, "service": "billing"}
    selectors = [shop, billing, SELECTOR]
    expected = [plain.reach(selector) for selector in selectors]
    assert expected[0][0] & expected[1][0]  # traces that both services' failures share
    read: list[list[str]] = []
    threads: set[str] = set()

    def counted(conn: Any, trace_ids: list[str], *args: Any) -> Any:
        read.append(list(trace_ids))  # every chunk, on each backend (PostgreSQL then reads it by trace ID)
        threads.add(threading.current_thread().name)
        return run_people(conn, trace_ids, *args)

    monkeypatch.setattr(window_module, "run_people", counted)
    monkeypatch.setattr(window_module, "_TRACES_A_READ", 5)
    assert memo.reaches(selectors) == plain.reaches(selectors) == expected
    for reads in (read[: len(read) // 2], read[len(read) // 2 :]):  # the memoized window's, then the plain one's
        listed = [trace for chunk in reads for trace in chunk]
        assert sorted(listed) == sorted(expected[2][0]) and max(len(chunk) for chunk in reads) == 5
    # PostgreSQL reads the chunks two at a time on a pool's threads; SQLite, which gained nothing so, on the caller's.
    postgres = plain.engine.dialect.name == "postgresql"
    assert {name.startswith("loopkit-people") for name in threads} == {postgres}


def test_the_spread_is_read_once_per_selector(server: Running, client: httpx.Client, project: Project) -> None:
    _, memo = windows(server, project, traffic(client, project))
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(memo.engine, "before_cursor_execute", seen)
    try:
        for by in ("trace_id", "session_id", "user_id"):
            memo.groups(SELECTOR, by=by, limit=10_001)
        memo.reach(SELECTOR)
        memo.releases(SELECTOR)
    finally:
        event.remove(memo.engine, "before_cursor_execute", seen)
    grouped = [s for s in statements if "GROUP BY" in s]
    assert len(grouped) == 1  # the spread; the rest is the reach's trace lookups and the resources' bodies
    group_by = grouped[0].split("GROUP BY")[1].split("LIMIT")[0]
    assert re.findall(r"records\.(\w+)", group_by) == ["trace_id", "session_id", "user_id", "resource_key"]
    # The preceding window shares the memo but not the answers: it is keyed by the window's bounds.
    before = memo.preceding(60 * 10**9)
    assert before.groups(SELECTOR, by="session_id") == []


def test_threads_asking_for_one_spread_at_once_share_one_read(
    server: Running, client: httpx.Client, project: Project
) -> None:
    # A diagnosis on PostgreSQL reads impact, causes and telling attributes at once, and each asks for the issues'
    # spreads: the second thread waits for the first one's read instead of reading again.
    plain, memo = windows(server, project, traffic(client, project))
    statements: list[str] = []

    def slow(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)
        if "GROUP BY" in statement:
            time.sleep(0.3)  # the other threads ask while the spread is being read

    start = threading.Barrier(3)
    answers: list[Any] = []

    def ask(read: Any) -> None:
        start.wait(timeout=10)
        answers.append(read())

    reads = [
        lambda: memo.groups(SELECTOR, by="trace_id", limit=10_001),
        lambda: memo.reach(SELECTOR),
        lambda: memo.count_values(SELECTOR, "user_id", 100),
    ]
    event.listen(memo.engine, "before_cursor_execute", slow)
    try:
        threads = [threading.Thread(target=ask, args=(read,)) for read in reads]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        event.remove(memo.engine, "before_cursor_execute", slow)
    assert len(answers) == 3
    assert len([s for s in statements if "GROUP BY" in s]) == 1
    assert memo.groups(SELECTOR, by="trace_id", limit=10_001) == plain.groups(SELECTOR, by="trace_id", limit=10_001)
    assert memo.reach(SELECTOR) == plain.reach(SELECTOR)
    assert memo.count_values(SELECTOR, "user_id", 100) == plain.count_values(SELECTOR, "user_id", 100) == 9


def test_over_spread_rows_every_read_asks_sql(
    server: Running, client: httpx.Client, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, memo = windows(server, project, traffic(client, project))
    monkeypatch.setattr(window_module, "SPREAD_ROWS", 5)  # the fixture's 24 failures spread over more rows
    assert memo.groups(SELECTOR, by="session_id", limit=3) == plain.groups(SELECTOR, by="session_id", limit=3)
    assert memo.reach(SELECTOR) == plain.reach(SELECTOR)
    assert memo.releases(SELECTOR) == plain.releases(SELECTOR)
    assert memo.memo is not None and list(memo.memo.values()) == [None]


def test_values_are_counted_from_the_spread_as_sql_counts_them(
    server: Running, client: httpx.Client, project: Project
) -> None:
    plain, memo = windows(server, project, traffic(client, project))
    counts = {"trace_id": 12, "session_id": 6, "user_id": 9, "message": 5}  # NULL is not a value
    for by, n in counts.items():
        assert len([g for g in plain.groups(SELECTOR, by=by, limit=1000) if g.value]) == n
        for limit in (1, 5, 6, 100):
            assert memo.count_values(SELECTOR, by, limit) == plain.count_values(SELECTOR, by, limit) == min(n, limit)
    assert memo.memo is not None and any(key[0] == "spread" for key in memo.memo)


def test_distinct_counts_up_to_its_limit(server: Running, client: httpx.Client, project: Project) -> None:
    plain, _ = windows(server, project, traffic(client, project))
    assert plain.distinct(SELECTOR, "message", 51) == 5
    assert plain.distinct(SELECTOR, "message", 3) == 3
    assert plain.distinct(SELECTOR, "session_id", 100) == 7  # s0..s5 and no session
    assert plain.distinct({"type": "latency", "name": "GET /home"}, "message", 51) == 1
    assert plain.distinct({"type": "error", "name": "nothing"}, "message", 51) == 0
    with pytest.raises(ValueError, match="cannot count 'attributes'"):
        plain.distinct(SELECTOR, "attributes", 10)


def test_operations_and_type_counts_are_exact_and_read_once_per_range(
    server: Running, client: httpx.Client, project: Project
) -> None:
    now = traffic(client, project)
    plain, memo = windows(server, project, now)
    ops = [(op.name, op.service, op.count) for op in plain.operations()]
    assert ops == [("GET /home", "unknown_service", 5), ("POST /pay", "billing", 8), ("POST /pay", "shop", 16)]
    assert plain.counts_by_type() == memo.counts_by_type() == {"error": 24, "latency": 5}
    assert plain.operations(max_operations=1) == plain.operations()  # grouped over the rows past the bound
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    expected = plain.operations()
    memo = plain.memoized()  # nothing read yet
    postgres = memo.engine.dialect.name == "postgresql"
    middle = memo.start_ns + (memo.end_ns - memo.start_ns) // 2
    halves = [memo.part(memo.start_ns, middle), memo.part(middle, memo.end_ns)]
    halves_read = [plain.part(h.start_ns, h.end_ns) for h in halves]
    halves_expected = [(h.operations(), h.counts_by_type()) for h in halves_read]
    event.listen(memo.engine, "before_cursor_execute", seen)
    try:
        assert memo.operations() == expected
        first = len(statements)
        assert first >= 1
        assert memo.operations() == expected
        assert len(statements) == first  # the second read is the memo's
        # PostgreSQL: the same grouped read gave the type counts and the halves' operations (the latency
        # detector's stand-in baseline); SQLite counts each in its covering indexes.
        assert memo.counts_by_type() == {"error": 24, "latency": 5}
        assert [(h.operations(), h.counts_by_type()) for h in halves] == halves_expected
        assert (len(statements) == first) is postgres
        # A part of the window has its own operations, counted from its own range.
        newest = memo.part(now - 3 * 10**6 + 1, memo.end_ns)
        assert [(op.name, op.service, op.count) for op in newest.operations()] == [
            ("GET /home", "unknown_service", 3),
            ("POST /pay", "billing", 1),
            ("POST /pay", "shop", 2),
        ]
        statements.clear()
        durations = newest.durations("POST /pay", "shop")
    finally:
        event.remove(memo.engine, "before_cursor_execute", seen)
    assert durations == plain.part(newest.start_ns, newest.end_ns).durations("POST /pay", "shop")
    assert len(durations) == 2
    counted = [s for s in statements if "count(" in s.lower()]
    # PostgreSQL takes the operation's count from the part's grouped read; SQLite counts it in the index.
    assert len(counted) == (0 if memo.engine.dialect.name == "postgresql" else 1)
    with pytest.raises(ValueError, match="within the window"):
        memo.part(memo.start_ns - 1, memo.end_ns)


def test_type_counts_after_the_operations_take_spans_from_their_counts(
    server: Running, client: httpx.Client, project: Project
) -> None:
    now = traffic(client, project)
    spans = [
        {
            "traceId": f"{n + 100:032x}",
            "spanId": f"{n + 100:016x}",
            "name": f"GET /item/{n % 3}",
            "startTimeUnixNano": str(now - n * 10**6),
            "endTimeUnixNano": str(now - n * 10**6 + 1000),
        }
        for n in range(17)
    ]
    otlp = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": spans}]}]}
    answer = client.post("/v1/traces", json=otlp, headers=project.auth())
    assert answer.status_code == 200, answer.text
    send(client, project, [{"type": "log", "name": "worker", "timestamp": now - 5 * 10**6}])
    plain, memo = windows(server, project, now)
    expected = {"error": 24, "latency": 5, "span": 17, "log": 1}
    assert plain.counts_by_type() == expected
    memo.operations()
    asked: list[Any] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        asked.append(parameters)

    event.listen(memo.engine, "before_cursor_execute", seen)
    try:
        assert memo.counts_by_type() == expected
    finally:
        event.remove(memo.engine, "before_cursor_execute", seen)
    # SQLite counts each other type in its index; spans are what remains of the operations' 47 records.
    counted = {value for parameters in asked for value in parameters if isinstance(value, str)}
    if memo.engine.dialect.name == "sqlite":
        assert "span" not in counted and {"error", "latency", "log"} <= counted


def test_every_operations_durations_come_from_one_read_and_equal_the_per_operation_reads(
    server: Running, client: httpx.Client, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Exact samples (at most `limit` calls) and stratified ones (more), with ties in time and in duration, and
    # names that need escaping on PostgreSQL: the memoized window's lateral read gives each operation's sample
    # exactly as its own read does.
    now = time.time_ns() - 10**9
    names = {"GET /a": 7, "POST /b\x00'x'": 61, "PUT /c": 20, "DEL /d": 21}
    records = []
    for name, calls in names.items():
        for n in range(calls):
            records.append(
                {
                    "type": "latency",
                    "name": name,
                    "service": "svc",
                    "timestamp": now - (n // 3) * 2 * 10**9,  # three calls share each start time
                    "duration_ms": float((n * 37) % 11),  # and durations repeat
                }
            )
    send(client, project, records)
    plain, memo = windows(server, project, now)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    memo.operations()  # the counts, read (and memoized) first
    event.listen(memo.engine, "before_cursor_execute", seen)
    try:
        got = {name: memo.durations(name, "svc", limit=20, strata=4) for name in names}
    finally:
        event.remove(memo.engine, "before_cursor_execute", seen)
    span = plain.end_ns - plain.start_ns
    cuts = [plain.start_ns + span * i // 4 for i in range(5)]
    for name, calls in names.items():
        assert got[name] == plain.durations(name, "svc", limit=20, strata=4), name
        mine = sorted((r["timestamp"], r["duration_ms"]) for r in records if r["name"] == name)
        if calls <= 20:  # all of them
            assert got[name] == sorted(d for _, d in mine)
        else:  # the first 5 of each quarter of the window, in (start, duration) order
            quarters = [[d for t, d in mine if lo <= t < hi][:5] for lo, hi in zip(cuts, cuts[1:], strict=False)]
            assert got[name] == sorted(d for q in quarters for d in q)
            assert len(got[name]) <= 20 < calls
    assert memo.durations("nothing", "svc", limit=20, strata=4) == []
    # PostgreSQL: one read for the exact operations and one for the sampled; SQLite counts and reads each
    # operation in its covering index.
    postgres = memo.engine.dialect.name == "postgresql"
    assert len(statements) == (2 if postgres else 2 * len(names))
    # A range with more operations than the bound reads each operation's sample on demand, as before.
    monkeypatch.setattr(window_module, "_MAX_OPERATIONS_SAMPLED_AT_ONCE", len(names) - 1)
    many = plain.memoized()
    many.operations()
    statements.clear()
    event.listen(many.engine, "before_cursor_execute", seen)
    try:
        assert {name: many.durations(name, "svc", limit=20, strata=4) for name in names} == got
    finally:
        event.remove(many.engine, "before_cursor_execute", seen)
    assert len(statements) == (1 if postgres else 2) * len(names)  # PostgreSQL knows each count already
