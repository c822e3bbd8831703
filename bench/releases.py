"""What the release counts cost a diagnosis, on bench/diagnose.py's synthetic window (see docs/benchmarks.md).

Fills one project as bench/diagnose.py does, then times in one process: the diagnosis, the per-issue release
queries alone, one whole-window release grouping (what POST /v1/runs/verify runs on the packet's window and on the
after-window), and the diagnosis with `Window.releases` switched off, alternating, for the paired difference.

    python bench/releases.py --size 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnose import WINDOW_MINUTES, fill  # noqa: E402

from loopkit_core.app import create_app  # noqa: E402
from loopkit_core.diagnose import DiagnoseRequest, run  # noqa: E402
from loopkit_core.settings import Settings  # noqa: E402
from loopkit_core.window import Window  # noqa: E402


def main() -> None:
    """Fill, then time; print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project_id, until = fill(Path(tmp), args.size)
        app = create_app(Settings(data_dir=Path(tmp)))
        window = Window(project_id, until - WINDOW_MINUTES * 60 * 10**9, until, app.store.project(project_id))
        request = DiagnoseRequest(WINDOW_MINUTES, until, None, 3, 100)
        packet = run(app.store, app.plugins, project_id, request, until)  # warms the page cache
        started = time.perf_counter()
        for issue in packet["issues"]:
            window.releases(issue["selector"])
        per_issue = time.perf_counter() - started
        started = time.perf_counter()
        window.releases()
        whole = time.perf_counter() - started
        timings: dict[bool, list[float]] = {True: [], False: []}
        original = Window.releases
        for _ in range(args.repeat):
            for enabled in (True, False):
                if not enabled:
                    Window.releases = lambda self, selector=None: []  # type: ignore[method-assign]
                started = time.perf_counter()
                run(app.store, app.plugins, project_id, request, until)
                timings[enabled].append(round(time.perf_counter() - started, 3))
                Window.releases = original  # type: ignore[method-assign]
        app.close()
    print(
        json.dumps(
            {
                "records_in_window": args.size,
                "issues": len(packet["issues"]),
                "issue_release_queries_s": round(per_issue, 3),
                "whole_window_release_grouping_s": round(whole, 3),
                "diagnose_s_with_releases": timings[True],
                "diagnose_s_without_releases": timings[False],
            }
        )
    )


if __name__ == "__main__":
    main()
