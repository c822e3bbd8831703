"""SQLAlchemy tables: the control database (projects, keys) and each project's record store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, Float, ForeignKey, Index, Integer, MetaData, SmallInteger, Table, Text, and_

from loopkit_core.store.dialect import NulSafeString, NulSafeText

# Text columns (all but the JSON ones) are NulSafe*: PostgreSQL text cannot hold NUL, so there it is stored escaped.
# Row sequence numbers: SQLite's INTEGER PRIMARY KEY is its 64-bit rowid; PostgreSQL needs BIGINT (a BIGSERIAL).
Seq = BigInteger().with_variant(Integer(), "sqlite")

control_metadata = MetaData()

projects = Table(
    "projects",
    control_metadata,
    Column("project_id", NulSafeString(80), primary_key=True),
    Column("name", NulSafeString(200), nullable=False),
    Column("kind", NulSafeString(20), nullable=False),  # "permanent" | "sandbox"
    Column("operator", NulSafeString(200)),
    Column("created_at", BigInteger, nullable=False),  # unix seconds
    Column("quota_spans", BigInteger),  # None: uncapped
    Column("expires_at", BigInteger),  # unix seconds; None: never
    Column("recovery_hash", NulSafeString(64)),
    Column("deleted_at", BigInteger),
    # Set for projects minted by POST /v1/provision: "<len(operator)>:<operator>/<project name>", unique.
    Column("provision_key", NulSafeString(420), unique=True),
)

# Per-project settings an operator overrides (absent: the server's defaults), e.g. the retention period.
project_retention = Table(
    "project_retention",
    control_metadata,
    Column("project_id", NulSafeString(80), ForeignKey("projects.project_id"), primary_key=True),
    Column("retention_days", Float, nullable=False),  # 0: keep records forever
    Column("updated_at", BigInteger, nullable=False),  # unix seconds
)

# Random secrets of this installation, made once (migration 3 of the control store) and shared by every process
# on the same control store, e.g. the key that signs telemetry cursors. Never shown by any API.
server_secrets = Table(
    "server_secrets",
    control_metadata,
    Column("name", NulSafeString(40), primary_key=True),
    Column("value", NulSafeString(128), nullable=False),  # hex
    Column("created_at", BigInteger, nullable=False),  # unix seconds
)

api_keys = Table(
    "api_keys",
    control_metadata,
    Column("key_hash", NulSafeString(64), primary_key=True),  # sha256 hex of the whole key
    Column("project_id", NulSafeString(80), ForeignKey("projects.project_id"), nullable=False, index=True),
    Column("kind", NulSafeString(20), nullable=False),  # "producer" | "agent" | "dashboard"
    Column("scopes", NulSafeString(200), nullable=False),  # space-separated
    Column("display", NulSafeString(40), nullable=False),  # prefix + first characters, safe to show
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
)

project_metadata = MetaData()

records = Table(
    "records",
    project_metadata,
    Column("seq", Seq, primary_key=True),  # rowid: keeps inserts append-only
    Column("record_id", NulSafeString(40), nullable=False, unique=True),
    Column("ts_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("received_ns", BigInteger, nullable=False),
    Column("type", NulSafeString(20), nullable=False),
    Column("name", NulSafeText, nullable=False),
    Column("service", NulSafeText, nullable=False),
    Column("status", NulSafeString(10), nullable=False),
    Column("message", NulSafeText, nullable=False),
    Column("trace_id", NulSafeString(32)),
    Column("span_id", NulSafeString(16)),
    Column("parent_span_id", NulSafeString(16)),
    Column("session_id", NulSafeText),
    Column("user_id", NulSafeText),
    Column("kind", NulSafeString(12)),
    Column("scope", NulSafeText),
    Column("exception_type", NulSafeText),
    Column("attributes", Text, nullable=False),  # JSON object
    Column("resource", Text, nullable=False),  # JSON object
    Column("events", Text, nullable=False),  # JSON array
    Column("links", Text, nullable=False),  # JSON array
    Column("signature", NulSafeString(32)),  # grouping key computed at ingest (errors, tool failures)
    # The record's resource, stored once in `resources` (then `resource` is ""); rows from before it carry the JSON.
    Column("resource_key", NulSafeString(32)),
    # 1 when an earlier row of the same write, with the same session, trace and UTC day, is this row's way into the
    # SQLite session index (NULL otherwise, and in rows from before it): see ix_records_session.
    Column("session_repeat", SmallInteger),
    # SQLite's trace index holds one row per run of a trace's rows that one write stores next to each other: the
    # run's first row holds its length, the others 0 (NULL: a row of its own, as every row from before). See
    # ix_records_trace_run and store/partial_indexes.py.
    Column("trace_run", Integer),
)
# Window reads page on (ts_ns, record_id); filters narrow within the window.
Index("ix_records_window", records.c.ts_ns, records.c.record_id)
Index("ix_records_type_window", records.c.type, records.c.ts_ns)
# PostgreSQL: a span is stored once per day partition: (trace_id, span_id) is a deduplication key beside the record ID,
# and the same index serves trace lookups. Records without span identity have NULLs: never equal.
Index("ux_records_span", records.c.trace_id, records.c.span_id, unique=True).ddl_if(dialect="postgresql")
# SQLite: a re-sent span (same trace, span and start time, so the same record ID) meets its stored copy on the
# record ID, and trace reads go through one index entry per run of a trace's rows in a write (trace_run): a
# random-key entry for every span cost the writer a third of its rate by 4M records (docs/benchmarks.md).
Index(
    "ix_records_trace_run",
    records.c.trace_id,
    sqlite_where=and_(records.c.trace_id.is_not(None), records.c.trace_run.is_not(0)),
).ddl_if(dialect="sqlite")
# SQLite indexes a session's first row of each trace a write brings (session_repeat NULL): a random-key index entry
# per span cost the writer a quarter of its time by 4M records (docs/benchmarks.md). Reads find the rest through
# those rows' traces (store/traces.py). PostgreSQL keeps every row in it.
Index(
    "ix_records_session",
    records.c.session_id,
    sqlite_where=and_(records.c.session_id.is_not(None), records.c.session_repeat.is_(None)),
)
# Diagnosis groups a window by signature in SQL; only errors and tool failures carry one.
Index("ix_records_signature", records.c.signature, records.c.ts_ns, sqlite_where=records.c.signature.is_not(None))
# Per-operation reads (latency baselines and latency issues' selectors, name/service filters): covering,
# so an operation's durations in a time range are read from the index alone (see Window.durations).
Index("ix_records_operation", records.c.name, records.c.service, records.c.ts_ns, records.c.duration_ms)

# Each distinct resource (the attributes of the process that sent the spans), once: every span of a service
# instance shares one, and writing ~1.3 KB of it into each row cost a fifth of the ingest write path.
resources = Table(
    "resources",
    project_metadata,
    Column("resource_key", NulSafeString(32), primary_key=True),  # blake2b of the JSON text
    Column("body", Text, nullable=False),  # JSON object
)

# One row per distinct signature ever seen: the masked template and where it came from.
signatures = Table(
    "signatures",
    project_metadata,
    Column("signature", NulSafeString(32), primary_key=True),
    Column("template", NulSafeText, nullable=False),
    Column("type", NulSafeString(20), nullable=False),
    Column("operation", NulSafeText, nullable=False),
    Column("service", NulSafeText, nullable=False),
    Column("exception_type", NulSafeText, nullable=False),
)

# Issues tracked across runs: identity (fingerprint), lifecycle, and which records are theirs.
issues = Table(
    "issues",
    project_metadata,
    Column("fingerprint", NulSafeString(40), primary_key=True),
    Column("issue_id", NulSafeString(40), nullable=False, unique=True),
    Column("diagnoser", NulSafeString(100), nullable=False),
    Column("signal_type", NulSafeString(20), nullable=False),
    Column("title", NulSafeText, nullable=False),
    Column("template", NulSafeText),
    Column("selector", Text, nullable=False),  # JSON
    Column("status", NulSafeString(20), nullable=False),
    Column("first_seen_ns", BigInteger, nullable=False),
    Column("last_seen_ns", BigInteger, nullable=False),
    Column("last_packet_id", NulSafeString(40)),
    # End of the after-window of the verification that found the fix held; a later record is a regression.
    Column("verified_until_ns", BigInteger),
    # The packet whose diagnosis first saw this fingerprint (NULL: tracked before project migration 4).
    Column("first_packet_id", NulSafeString(40)),
)

# Which issue each signature belongs to (set when a diagnosis clusters signatures).
issue_signatures = Table(
    "issue_signatures",
    project_metadata,
    Column("signature", NulSafeString(32), primary_key=True),
    Column("fingerprint", NulSafeString(40), nullable=False, index=True),
)

packets = Table(
    "packets",
    project_metadata,
    Column("packet_id", NulSafeString(40), primary_key=True),
    Column("created_ns", BigInteger, nullable=False, index=True),
    Column("status", NulSafeString(40), nullable=False),
    Column("body", Text, nullable=False),  # the packet JSON
)

# Running totals kept in the same transaction as the inserts (e.g. records ever accepted, for quotas).
counters = Table(
    "counters",
    project_metadata,
    Column("name", NulSafeString(40), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
ACCEPTED = "accepted_total"  # the counters row of records ever accepted (the quota's count)

RECORD_COLUMNS = [c.name for c in records.columns if c.name != "seq"]
Row = tuple[Any, ...]  # one records row, in RECORD_COLUMNS order
RECORD_ID, TS_NS = RECORD_COLUMNS.index("record_id"), RECORD_COLUMNS.index("ts_ns")
TRACE_ID, SPAN_ID = RECORD_COLUMNS.index("trace_id"), RECORD_COLUMNS.index("span_id")
SESSION_ID, SESSION_REPEAT = RECORD_COLUMNS.index("session_id"), RECORD_COLUMNS.index("session_repeat")
TRACE_RUN = RECORD_COLUMNS.index("trace_run")

# Append-only audit trail of human decisions on packets: rows are inserted, never updated or deleted.
approvals = Table(
    "approvals",
    project_metadata,
    Column("seq", Seq, primary_key=True),
    Column("packet_id", NulSafeString(40), nullable=False, index=True),
    Column("decision", NulSafeString(20), nullable=False),  # approved | rejected
    Column("note", NulSafeText, nullable=False),
    Column("actor", NulSafeString(80), nullable=False),  # which key decided (kind and display prefix)
    Column("decided_ns", BigInteger, nullable=False),
)

# Verification verdicts, one row per issue per verification run.
verdicts = Table(
    "verdicts",
    project_metadata,
    Column("seq", Seq, primary_key=True),
    Column("verification_id", NulSafeString(40), nullable=False, index=True),
    Column("packet_id", NulSafeString(40), nullable=False, index=True),
    Column("fingerprint", NulSafeString(40), nullable=False),
    Column("verdict", NulSafeString(20), nullable=False),
    Column("body", Text, nullable=False),  # JSON: numbers, reason, evidence
    Column("created_ns", BigInteger, nullable=False),
)

# Append-only record of loop stages done outside LoopKit (issue opened, PR opened, merged, deployed), per packet.
stages = Table(
    "stages",
    project_metadata,
    Column("seq", Seq, primary_key=True),
    Column("stage_id", NulSafeString(40), nullable=False, unique=True),
    Column("packet_id", NulSafeString(40), nullable=False, index=True),
    Column("issue_id", NulSafeString(40)),  # one issue of the packet, or NULL for the whole packet
    Column("stage", NulSafeString(20), nullable=False),  # issue_opened | pr_opened | merged | deployed
    Column("url", NulSafeText),  # http(s) only; stored, shown, never fetched
    Column("note", NulSafeText),
    Column("actor", NulSafeString(80), nullable=False),  # which key recorded it (kind and display prefix)
    Column("created_ns", BigInteger, nullable=False),
)

# Append-only eval runs an agent reported for a packet's issues (POST /v1/evals): counts, the code they ran on, a note.
eval_runs = Table(
    "eval_runs",
    project_metadata,
    Column("seq", Seq, primary_key=True),
    Column("eval_run_id", NulSafeString(40), nullable=False, unique=True),
    Column("packet_id", NulSafeString(40), nullable=False, index=True),
    Column("issue_id", NulSafeString(40), nullable=False),
    Column("eval_candidate", NulSafeText, nullable=False),
    Column("passed", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("skipped", BigInteger, nullable=False),
    Column("commit_ref", NulSafeString(100)),  # the commit the eval ran on (a SHA or ref), as the agent sent it
    Column("version", NulSafeText),  # or the release (service.version) it ran on
    Column("note", NulSafeText),
    Column("actor", NulSafeString(80), nullable=False),  # which key reported it (kind and display prefix)
    Column("created_ns", BigInteger, nullable=False),
)

# Append-only versions of the project's fingerprint rules (PUT /v1/grouping/rules): the newest is in force.
grouping_rules = Table(
    "grouping_rules",
    project_metadata,
    Column("version", BigInteger, primary_key=True, autoincrement=False),  # 1, 2, ...: the previous + 1
    Column("body", Text, nullable=False),  # JSON: the list of rules
    Column("actor", NulSafeString(80), nullable=False),  # which key saved it (kind and display prefix)
    Column("created_ns", BigInteger, nullable=False),
)

# Append-only audit of people merging and unmerging issues (POST /v1/issues/{fingerprint}/merge, .../unmerge): the
# latest row per source is its merge state, so no row is ever updated or deleted.
issue_merges = Table(
    "issue_merges",
    project_metadata,
    Column("seq", Seq, primary_key=True),
    Column("action", NulSafeString(10), nullable=False),  # merge | unmerge
    Column("source", NulSafeString(40), nullable=False, index=True),  # the issue merged (or unmerged)
    Column("target", NulSafeString(40), nullable=False, index=True),  # the issue it went into (or came out of)
    Column("requested", NulSafeString(40)),  # the `into` as asked (a merged issue: its target was used instead)
    Column("note", NulSafeText),
    Column("actor", NulSafeString(80), nullable=False),  # which key did it (kind and display prefix)
    Column("created_ns", BigInteger, nullable=False),
)
