"""Diagnosis cost with fingerprint rules: the same window diagnosed without rules and with N rules, interleaved.

    python bench/grouping_rules.py --size 100000 --rules 2 10 --repeat 5

The window is bench/diagnose.py's (20% failures of 50 faults, the rest spans). The rules: a message glob over the
TimeoutError faults (`*timed out*`, one issue per operation), the KeyError faults grouped by exception type and
service, then rules that match nothing (a message glob and an attribute each), so every failure is checked
against all of them. Each round saves the rule set (or none) as a new version and runs the diagnosis in this
process; prints JSON with the median seconds of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import diagnose as window_bench  # bench/ is on sys.path when this file runs as a script

from loopkit_core.app import create_app
from loopkit_core.diagnose import DiagnoseRequest, run
from loopkit_core.fingerprint_rules import FingerprintRule, parse_rules
from loopkit_core.settings import Settings
from loopkit_core.store import grouping_rules


def rule_set(n: int) -> list[FingerprintRule]:
    """The first n rules of the benchmark's set."""
    rules = [
        {"match": {"message": "*timed out*"}, "fingerprint": "timeout {name}", "title": "Timeout on {name}"},
        {"match": {"exception_type": "KeyError"}, "fingerprint": "{exception_type} {service}"},
    ]
    rules += [
        {"match": {"message": f"*nothing {i}*", "attributes": {f"k{i}": i}}, "fingerprint": f"{{attributes.k{i}}}"}
        for i in range(max(n - 2, 0))
    ]
    return parse_rules(rules[:n])


def main() -> None:
    """Fill once, then diagnose without and with each rule count, interleaved; print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--rules", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project_id, until = window_bench.fill(Path(tmp), args.size)
        app = create_app(Settings(data_dir=Path(tmp)))
        engine = app.store.project(project_id)
        modes = [0, *args.rules]
        seconds: dict[int, list[float]] = {n: [] for n in modes}
        issues: dict[int, int] = {}
        for _ in range(args.repeat):
            for n in modes:
                grouping_rules.save(engine, rule_set(n), "bench", time.time_ns(), None)
                started = time.perf_counter()
                packet = run(app.store, app.plugins, project_id, DiagnoseRequest(60, until, None, 3, 100), until)
                seconds[n].append(round(time.perf_counter() - started, 3))
                issues[n] = len(packet["issues"])
        app.close()
    medians = {n: statistics.median(s) for n, s in seconds.items()}
    print(
        json.dumps(
            {
                "benchmark": "grouping_rules",
                "records_in_window": args.size,
                "median_seconds": {f"{n} rules": medians[n] for n in modes},
                "ratio_to_no_rules": {f"{n} rules": round(medians[n] / medians[0], 2) for n in args.rules},
                "issues": {f"{n} rules": issues[n] for n in modes},
                "runs": {f"{n} rules": seconds[n] for n in modes},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
