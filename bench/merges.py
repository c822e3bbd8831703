"""What issue merges cost (see docs/benchmarks.md): diagnosis with and without merges, and the merge state's read.

A project is filled as bench/diagnose.py fills it (50 faults, 200 operations; `--size` records in the window) and
diagnosed once; then 20 pairs of its signature issues are merged and unmerged in turn, and the diagnosis is timed
in each state, interleaved (`--repeat` times each). Separately, the merge state (the latest audit row per source)
is read from an audit table of 0, 1,000 and 10,000 rows.

    python bench/merges.py --size 100000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnose import WINDOW_MINUTES, fill  # noqa: E402 (bench/ is not a package)

from loopkit_core import merges  # noqa: E402
from loopkit_core.app import create_app  # noqa: E402
from loopkit_core.diagnose import DiagnoseRequest, run  # noqa: E402
from loopkit_core.projects import create_project  # noqa: E402
from loopkit_core.settings import Settings  # noqa: E402
from loopkit_core.store import issue_merges  # noqa: E402
from loopkit_core.store.schema import issue_merges as audit  # noqa: E402

PAIRS = 20


def diagnosis(size: int, repeat: int) -> dict:
    """Median diagnosis seconds with no merge and with PAIRS merges, interleaved; the packets' issue counts."""
    tmp = Path(tempfile.mkdtemp())
    project_id, until = fill(tmp, size)
    app = create_app(Settings(data_dir=tmp, diagnose_per_minute=10_000))
    request = DiagnoseRequest(WINDOW_MINUTES, until, None, 3, 100)
    first = run(app.store, app.plugins, project_id, request, until)
    signature_issues = [i["fingerprint"] for i in first["issues"] if i["diagnoser"] == "signature_clusterer"]
    pairs = list(zip(signature_issues[0::2], signature_issues[1::2], strict=False))[:PAIRS]
    engine = app.store.project(project_id)
    timings: dict[str, list[float]] = {"none": [], "merged": []}
    issues: dict[str, int] = {}
    for _ in range(repeat):
        for state in ("none", "merged"):
            for source, target in pairs:
                if state == "none":
                    issue_merges.unmerge(engine, source, None, "bench", time.time_ns())
                else:
                    issue_merges.merge(engine, source, target, None, "bench", time.time_ns())
            started = time.perf_counter()
            packet = run(app.store, app.plugins, project_id, request, until)
            timings[state].append(time.perf_counter() - started)
            issues[state] = len(packet["issues"])
    started = time.perf_counter()
    for _ in range(20):
        merges.verified_issues(engine, first["issues"])
    verified_ms = (time.perf_counter() - started) / 20 * 1000
    app.close()
    none, merged = statistics.median(timings["none"]), statistics.median(timings["merged"])
    return {
        "records_in_window": size,
        "pairs_merged": len(pairs),
        "issues": issues,
        "median_seconds": {"no_merges": round(none, 3), "merges": round(merged, 3)},
        "ratio": round(merged / none, 3),
        "verified_issues_ms": round(verified_ms, 2),
        "runs": {k: [round(x, 3) for x in v] for k, v in timings.items()},
    }


def state_reads() -> dict:
    """Median milliseconds of one read of the merge state, by the number of audit rows."""
    tmp = Path(tempfile.mkdtemp())
    app = create_app(Settings(data_dir=tmp))
    engine = app.store.project(create_project(app.store.control, "merges")["project_id"])
    out = {}
    for rows in (0, 1000, 10_000):
        with engine.begin() as conn:
            conn.execute(audit.delete())
            if rows:
                # Merges and unmerges of 500 sources in turn: half the rows are unmerges.
                conn.execute(
                    audit.insert(),
                    [
                        {
                            "action": "merge" if i % 2 == 0 else "unmerge",
                            "source": f"s{i // 2 % 500}",
                            "target": "t",
                            "requested": None,
                            "note": None,
                            "actor": "bench",
                            "created_ns": i,
                        }
                        for i in range(rows)
                    ],
                )
        times = []
        for _ in range(15):
            started = time.perf_counter()
            issue_merges.targets(engine)
            times.append(time.perf_counter() - started)
        out[str(rows)] = round(statistics.median(times) * 1000, 2)
    app.close()
    return out


def main() -> None:
    """Run both measurements; print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    result = {"diagnosis": diagnosis(args.size, args.repeat), "merge_state_read_ms_by_audit_rows": state_reads()}
    print(json.dumps({"benchmark": "merges", **result}, indent=2))


if __name__ == "__main__":
    main()
