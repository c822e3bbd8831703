"""The measurement tools of bench/: sustained mode's slices and flatness, and the big store's timeline and build."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from argparse import Namespace
from pathlib import Path

import orjson
import pytest
from conftest import PG_URL, store_env
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import big_store  # noqa: E402
import diagnose  # noqa: E402
import drop_day  # noqa: E402
import ingest  # noqa: E402
import payloads  # noqa: E402
import wal_replay  # noqa: E402
import write_growth  # noqa: E402
from store_stats import StoreStats  # noqa: E402


def test_sustained_marks_put_slice_boundaries_deciles_and_samples_in_time_order():
    marks = ingest.sustained_marks(100.0, 4, 30.0)
    assert marks == [
        (10.0, "decile"),
        (25.0, "slice"),
        (30.0, "sample"),
        (50.0, "slice"),
        (60.0, "sample"),
        (75.0, "slice"),
        (90.0, "decile"),
        (100.0, "slice"),
    ]
    # A boundary that is also a decile or a sample is read once, as a boundary.
    assert ingest.sustained_marks(20.0, 10, 10.0) == [(2.0 * k, "slice") for k in range(1, 11)]


def test_flatness_is_the_last_tenth_over_the_first():
    readings = [
        {"t_s": 0.0, "acked_spans": 0},
        {"t_s": 10.0, "acked_spans": 20_000},  # 2,000/s in the first tenth
        {"t_s": 50.0, "acked_spans": 80_000},
        {"t_s": 90.0, "acked_spans": 130_000},
        {"t_s": 100.0, "acked_spans": 145_000},  # 1,500/s in the last tenth
    ]
    assert ingest.flatness(readings, 100.0) == {"first_10pct": 2000.0, "last_10pct": 1500.0, "last_vs_first": 0.75}
    flat = [{"t_s": float(t), "acked_spans": 1000 * t} for t in range(0, 101, 10)]
    assert ingest.flatness(flat, 100.0)["last_vs_first"] == 1.0


def test_squeeze_brings_a_batch_within_the_spread_keeping_its_order_and_newest_end():
    second = 10**9
    latest = 1_800_000_000 * second
    offsets = [(0, latest - 200 * second), (8, latest - 50 * second), (16, latest - second), (24, latest)]
    squeezed, end = ingest.squeeze(offsets, latest, 10 * second)
    assert end == latest
    assert [offset for offset, _ in squeezed] == [0, 8, 16, 24]
    assert [latest - value for _, value in squeezed] == [10 * second, 2_500_000_000, 50_000_000, 0]
    narrow = [(0, latest - 3 * second), (8, latest)]
    assert ingest.squeeze(narrow, latest, 10 * second) == (narrow, latest)  # already within: unchanged


def test_sustained_cycling_sends_squeezed_timestamps():
    body = payloads.build(2000, 512, ["proto"]).batches["proto"][0]
    spans = len(_start_lags(body))
    plain = ingest.Cycling([body], [spans], 1e18, "proto")
    squeezed = ingest.Cycling([body], [spans], 1e18, "proto", spread=10.0)
    lags = {name: _start_lags(work.get(0)[0]) for name, work in (("plain", plain), ("squeezed", squeezed))}
    assert max(lags["plain"]) > 30 * 10**9  # the payload's own spread: long spans start minutes earlier
    assert max(lags["squeezed"]) <= 10 * 10**9
    assert sorted(range(len(lags["plain"])), key=lags["plain"].__getitem__) == sorted(
        range(len(lags["squeezed"])), key=lags["squeezed"].__getitem__
    )


def _start_lags(body: bytes) -> list[int]:
    """How long before the batch's newest end each span of an OTLP protobuf batch starts (ns)."""
    request = ExportTraceServiceRequest.FromString(body)
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    latest = max(s.end_time_unix_nano for s in spans)
    return [latest - s.start_time_unix_nano for s in spans]


def test_timeline_spreads_the_older_records_over_the_days_and_the_rest_over_the_last_hour():
    end, minute = 1_800_000_000 * 10**9, 60 * 10**9
    timeline = big_store.Timeline(records=1000, last_hour=200, end_ns=end, days=30, margin_ns=minute)
    assert timeline.start_ns == end - 30 * big_store.DAY_NS
    assert timeline.start_of(0) == timeline.start_ns
    older = 30 * big_store.DAY_NS - big_store.HOUR_NS - minute
    assert timeline.start_of(400) == timeline.start_ns + older // 2
    assert timeline.start_of(799) == timeline.start_ns + older * 799 // 800  # before end - 1 h - margin
    assert timeline.start_of(800) == end - big_store.HOUR_NS  # the first record of the last hour
    assert timeline.start_of(999) == end - big_store.HOUR_NS + (big_store.HOUR_NS - minute) * 199 // 200
    assert all(timeline.start_of(g) <= timeline.start_of(g + 1) for g in range(999))
    # A trace that starts at record 798 and runs past 800: its spans from record 800 on start the last hour.
    assert timeline.start_of(798, 799) == timeline.start_of(798)
    assert timeline.start_of(798, 800) == end - big_store.HOUR_NS


def test_big_store_build_fills_the_days_and_the_last_hour_through_the_writer(tmp_path):
    env = store_env(tmp_path)  # SQLite, or PostgreSQL schemas on a LOOPKIT_TEST_DATABASE_URL run
    args = Namespace(records=3000, last_hour=1000, days=30.0)
    meta = big_store.build(tmp_path, args, env)
    assert meta["stored"] == 3000
    assert meta["last_hour_records"] == 1000
    assert meta["end_ns"] - meta["start_ns"] == 30 * big_store.DAY_NS
    stats = StoreStats(tmp_path, meta["project_id"], env)
    assert stats.records() == 3000
    assert stats.disk_bytes() > 0
    stats.close()
    # The oldest day holds about a thirtieth of the 2,000 records before the last hour.
    retention = big_store.measure_retention(tmp_path, meta, env)
    assert retention["deleted_matches_count"]
    assert retention["count_after"] == 3000 - retention["deleted"]
    assert 2000 // 30 - 100 <= retention["deleted"] <= 2000 // 30 + 100
    assert meta["purged_until_ns"] == meta["start_ns"] + big_store.DAY_NS


def test_big_store_times_the_day_layout_migration_of_a_store_built_in_the_previous_layout(tmp_path):
    env = store_env(tmp_path)
    meta = big_store.build(tmp_path, Namespace(records=3000, last_hour=1000, days=30.0, previous_layout=True), env)
    assert meta["stored"] == 3000
    migration = meta["migration"]
    assert migration["seconds"] > 0
    # Every record was in the one table: on PostgreSQL all of them are in the legacy partition, on SQLite they stay
    # in `records`; no day has its own table yet.
    if PG_URL:
        assert migration["layout"] == {"partitioned": True, "days": [], "default": True, "legacy": True}
    else:
        assert migration["layout"] == {"days": [], "tables": 0, "base_records": 3000}
    # The build put the writer's routing back: the next store gets day tables again.
    assert big_store.day_tables.route is big_store.ROUTE


@pytest.mark.parametrize("compare", [["--compare-code", "."], ["--compare-env", "LOOPKIT_DECODE_WORKERS=2"]])
def test_ingest_refuses_a_comparison_in_sustained_mode_which_would_run_one_code(compare, capsys):
    # Sustained mode runs one server: a comparison there was silently a run of the current code alone.
    with pytest.raises(SystemExit) as exc:
        ingest.parse_args(["--duration", "10", *compare])
    assert exc.value.code == 2 and "run sustained mode once per code or setting" in capsys.readouterr().err
    assert ingest.parse_args(compare).compare_env == (compare[1:] if compare[0] == "--compare-env" else [])


@pytest.mark.parametrize("days", [0.5, 1.0])
def test_big_store_refuses_a_span_of_a_day_or_less(days, capsys):
    with pytest.raises(SystemExit) as exc:
        big_store.parse_args(["--records", "100", "--days", str(days)])
    assert exc.value.code == 2


def test_big_store_measures_pages_diagnosis_and_retention_through_a_real_server(tmp_path, capsys):
    keep = tmp_path / "store"
    argv = ["--records", "4000", "--last-hour", "1500", "--repeat", "2", "--keep", str(keep)]
    if env := store_env(keep):
        argv += ["--database-url", env["LOOPKIT_DATABASE_URL"]]
        argv += ["--schema-prefix", env["LOOPKIT_DATABASE_SCHEMA_PREFIX"]]
    assert big_store.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["build"]["stored"] == 4000
    server = report["server"]
    assert server["page_newest"]["records_returned"] == 1000
    assert server["page_errors"]["records_returned"] <= 1000
    assert server["page_next_cursor"]["records_returned"] == [500]  # 1,500 in the last hour: one more page
    runs = server["diagnose"]["runs"]
    assert len(runs) == 3
    assert [r["telemetry_read"] for r in runs] == [1500, 1500, 1500]  # exactly the last hour's records
    retention = report["retention"]
    assert retention["deleted_matches_count"] and retention["count_before"] == 4000
    # A second run reuses the kept store and removes the next day.
    assert big_store.main([*argv, "--no-retention"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["build"]["built_at"] == report["build"]["built_at"]
    assert "retention" not in again


def test_write_growth_reports_each_slice_of_the_rows_written(capsys):
    assert write_growth.main(["--records", "3000", "--slice", "1000", "--spans", "1000"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert [s["records"] for s in run["slices"]] == [1000, 2000, 3000]
    assert all(s["cpu_us_per_row"] > 0 and s["wall_us_per_row"] > 0 and s["disk_mb"] > 0 for s in run["slices"])
    first, last = run["slices"][0], run["slices"][-1]
    assert run["cpu_last_vs_first"] == round(last["cpu_us_per_row"] / first["cpu_us_per_row"], 3)


def test_write_growth_puts_the_history_in_the_day_before(capsys):
    assert write_growth.main(["--records", "1000", "--slice", "1000", "--spans", "1000", "--history", "2500"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["history_records"] == 2500
    # Two day tables, the day before holding exactly the history; only the 1,000 timed rows in the measured day.
    (before, before_rows), (day, day_rows) = sorted(run["day_tables"].items())
    assert (before_rows, day_rows) == (2500, 1000)
    assert int(day.removeprefix("records_d")) == int(before.removeprefix("records_d")) + 1
    assert [s["records"] for s in run["slices"]] == [1000]


def test_write_growth_splits_a_sample_of_the_log_by_table_and_index(capsys):
    args = ["--records", "2000", "--slice", "1000", "--spans", "1000", "--in-flight", "1", "--wal-frames", "1000"]
    assert write_growth.main(args) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    frames = run["wal_frames"]
    # One 512-row request in flight: the sample of 1,000 rows is two requests, each its own commit.
    assert (frames["rows"], frames["commits"], frames["rows_per_commit"]) == (1000, 2, 500.0)
    split = frames["by_btree_per_commit"]
    assert abs(sum(split.values()) - frames["frames_per_commit"]) < 0.5
    assert frames["frames_per_row"] == round(frames["frames"] / 1000, 3)
    # A day's table and its indexes took the frames: a 1 KB row and its index entries need pages of each.
    day_table = next(name for name in split if name.startswith("records_d"))
    assert split[day_table] > 100 and split[f"ix_records_window{day_table.removeprefix('records')}"] >= 1


def test_write_growth_refuses_a_log_sample_that_a_checkpoint_cut():
    # A 100-page checkpoint mark restarts the log within 1,000 rows: counting its last cycle would undercount.
    args = ["--records", "1000", "--slice", "1000", "--spans", "1000", "--wal-frames", "1000"]
    with pytest.raises(SystemExit, match="crossed a checkpoint"):
        write_growth.main([*args, "--setting", "sqlite_wal_autocheckpoint=100"])


def test_wal_replay_kills_a_writer_with_a_full_log_and_times_the_reopen(capsys):
    assert wal_replay.main(["--wal-mb", "2", "--spans", "1000"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stored_records"] >= report["acknowledged_records"] > 0
    assert report["wal_mb"] >= 2
    assert report["db_mb"] < 1  # below the checkpoint mark nothing was copied back: the reopen replayed it all
    assert 0 < report["open_s"] <= report["open_and_count_s"]


def test_drop_day_times_a_day_dropped_under_each_secure_delete_setting_and_deleted_row_by_row(capsys):
    assert drop_day.main(["--records", "3000", "--repeat", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records_per_day"] == 3000
    variants = [k for k in report if k.startswith(("drop_table_", "row_deletes_"))]
    assert sorted(variants) == [
        "drop_table_secure_delete_FAST",
        "drop_table_secure_delete_OFF",
        "drop_table_secure_delete_ON",
        "row_deletes_secure_delete_ON",
    ]
    for name in variants:  # each one removed the whole day
        assert report[name]["records_left"] == 0 and report[name]["median_seconds"] > 0
    # secure_delete=ON writes the freed pages again (as zeros); FAST does not.
    assert report["drop_table_secure_delete_ON"]["wal_mb"] > 10 * report["drop_table_secure_delete_FAST"]["wal_mb"]


def _trace_ids(body: bytes) -> list[str]:
    request = ExportTraceServiceRequest.FromString(body)
    return [s.trace_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def test_sustained_rounds_send_random_looking_trace_ids_that_keep_each_trace_whole():
    body = payloads.build(2000, 512, ["proto"]).batches["proto"][0]
    original = _trace_ids(body)
    cycling = ingest.Cycling([body], [len(original)], 1e18, "proto")
    rounds = [_trace_ids(cycling.get(n)[0]) for n in range(3)]
    for sent in rounds:
        # Spans of one trace still share one ID, and spans of different traces still differ.
        assert len(set(zip(original, sent, strict=True))) == len(set(original)) == len(set(sent))
        assert sent == [payloads.round_trace_id(t, rounds.index(sent)) for t in original]
    assert not set(rounds[0]) & set(rounds[1]) and not set(rounds[1]) & set(rounds[2])
    assert not set(original) & set(rounds[0])
    # Random-looking: the IDs of a round do not share a prefix (stamped ones all begin with the round).
    distinct = len(set(original))
    assert len({t[:2] for t in rounds[1]}) > distinct // 2
    stamped = ingest.Cycling([body], [len(original)], 1e18, "proto", trace_ids="stamped")
    assert {t[:4] for t in _trace_ids(stamped.get(1)[0])} == {"0001"}
    json_body = payloads.build(2000, 512, ["json"]).batches["json"][0]
    as_json = ingest.Cycling([json_body], [len(original)], 1e18, "json")
    spans = orjson.loads(as_json.get(1)[0])["resourceSpans"]
    sent_json = [s["traceId"] for rs in spans for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert sent_json == rounds[1]  # the same payload, the same round: the same IDs in either encoding


def test_stage_reading_names_the_busy_thread_and_the_busy_child_process_in_cores():
    # CPU time, not wall time, decides when each spinner stops: the reading must hold up on a loaded machine.
    spin = "import time\nwhile time.process_time() < 0.3: pass\nprint('spun', flush=True)\ninput()\n"
    started = time.monotonic()
    reading = ingest.StageReading(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    spun, release = threading.Event(), threading.Event()

    def spin_here() -> None:
        while time.thread_time() < 0.3:
            pass
        spun.set()
        release.wait(60)  # alive until read, as the child: a thread's seconds count while it lives

    spinner = threading.Thread(target=spin_here)
    spinner.start()
    try:
        assert child.stdout.readline() == "spun\n"
        assert spun.wait(60)
        cores = reading.read()
        elapsed = time.monotonic() - started
    finally:
        release.set()
        spinner.join(timeout=60)
        child.communicate("\n", timeout=30)
    # Each spent at least 0.3 s of CPU in a reading no longer than `elapsed` (less a clock tick, and rounding).
    assert cores["busiest_thread_cores"] >= 0.28 / elapsed
    assert cores["decode_workers_cores"] >= 0.28 / elapsed
    assert cores["machine_busy_cores"] > 0
    assert set(cores) == {"busiest_thread_cores", "decode_workers_cores", "machine_busy_cores"}


@pytest.mark.skipif(PG_URL is not None, reason="SQLite's day tables")
def test_diagnose_fills_in_time_order_into_bounded_tables(tmp_path: Path):
    project_id, until = diagnose.fill(tmp_path, 8000, table_rows=1000)
    tables = diagnose.record_tables(tmp_path, project_id)
    # 12,000 records (8,000 in the window, 4,000 in the six hours before it) in time order, 5,000 a request: a
    # request goes into its day's last table unless that is full, then into the next (5,000, 5,000 and 2,000 within
    # one UTC day; a request across midnight is divided between the two days' tables).
    assert tables.pop("records") == 0 and sum(tables.values()) == 12_000
    assert len(tables) >= 3 and max(tables.values()) <= 1000 + diagnose.BATCH, tables
    with sqlite3.connect(tmp_path / "projects" / f"{project_id}.db") as db:
        newest = [db.execute(f"SELECT max(ts_ns) FROM {name}").fetchone()[0] for name in tables]
    assert newest == sorted(newest) and newest[-1] < until


def test_a_server_whose_port_was_taken_meanwhile_starts_on_new_ports(monkeypatch):
    # The ports are picked free and bound later by the server; another process can take one in between.
    taken = socket.socket()
    taken.bind((ingest.HOST, 0))
    taken.listen()
    free = ingest.free_ports
    picked: list[list[int]] = []

    def pick(count: int) -> list[int]:
        # The first pick of each start names the taken port; later picks are really free.
        ports = [taken.getsockname()[1], *free(count - 1)] if len(picked) % 2 == 0 else free(count)
        picked.append(ports)
        return ports

    monkeypatch.setattr(ingest, "free_ports", pick)
    server = ingest.Server({"LOOPKIT_DATABASE_URL": ""})
    try:
        with pytest.raises(RuntimeError, match="could not bind HTTP"):
            server.start(timeout=60, attempts=1)
        picked.clear()
        server.start(timeout=60)
        assert len(picked) == 2 and server.http_port == picked[1][0] != taken.getsockname()[1]
        assert server._healthy()
    finally:
        server.cleanup()
        taken.close()
