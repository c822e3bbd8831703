"""`loopkit demo`: the whole loop on a temporary embedded store, driven by a small sample agent app.

The demo starts a real LoopKit (HTTP and OTLP/gRPC on 127.0.0.1) over SQLite files in a temporary
directory, signs up a sandbox project, and runs "trip-planner" (sample_app.py), a small agent app instrumented
with the real OpenTelemetry SDK and OTLP/HTTP exporter. Then (script.py) it diagnoses the last 10 minutes,
prints the packet and the Markdown handoff, approves with the dashboard key, "ships the fix" (version 1.4.1:
healthy traffic for the fixed operations only), verifies (`held`), brings one timeout back and verifies again
(`regressed`), and diagnoses once more (the issue's status is `regressed`). It exits 0 when every expected
verdict appeared, 1 otherwise (saying what differed), and 2 when the OpenTelemetry SDK is not installed.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

STEPS = 8
INSTALL_HINT = (
    "loopkit demo needs the OpenTelemetry SDK and OTLP/HTTP exporter (its sample app uses them).\n"
    'Install them with:  pip install -e ".[test]"\n'
    "or:                 pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
)


def run(http_port: int = 0, grpc_port: int = 0, keep_serving: bool = False) -> int:
    """Run the demo; 0 when every expected verdict appeared, 1 otherwise, 2 without the OpenTelemetry SDK."""
    try:
        # The sample app imports the SDK: without it, say what to install before anything is created.
        from loopkit_core.demo.sample_app import ExportError
        from loopkit_core.demo.script import DemoError, Script
    except ImportError as exc:
        say(f"loopkit: error: {INSTALL_HINT}\n(import failed: {exc})", err=True)
        return 2

    from loopkit_core.server import in_thread
    from loopkit_core.settings import Settings

    started = time.monotonic()
    data_dir = Path(tempfile.mkdtemp(prefix="loopkit-demo-"))
    previous_term = _exit_on_sigterm()
    try:
        settings = Settings.from_env(
            {},  # the demo is self-contained: LOOPKIT_* variables of a real installation do not apply
            data_dir=data_dir,
            host="127.0.0.1",
            http_port=http_port,
            grpc_port=grpc_port,
            log_level="warning",
            shutdown_grace_seconds=5.0,
        )
        say(f"[1/{STEPS}] starting LoopKit on a temporary embedded store: {data_dir}")
        with in_thread(settings) as running:
            say(f"      HTTP {running.http_url}   OTLP/gRPC {running.grpc_target}   (127.0.0.1 only)")
            script = Script(running.http_url, running.grpc_target, started, say)
            problems = script.run()
            elapsed = time.monotonic() - started
            script.summary(problems, keep_serving)
            if keep_serving:
                # Ctrl-C is caught from before the line that invites it: a signal sent as soon as the line is read
                # must not land between the print and the wait (seen under load).
                with contextlib.suppress(KeyboardInterrupt):
                    say(f"\nServing {running.http_url} until Ctrl-C (then the temporary data dir is removed) ...")
                    while True:
                        threading.Event().wait(3600)
        say("LoopKit stopped.")
    except (DemoError, ExportError) as exc:
        say(f"\nloopkit demo FAILED: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        say("\nloopkit demo interrupted.", err=True)
        return 130
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        say(f"Removed the temporary data dir {data_dir}")
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        say(f"loopkit demo FAILED: {len(problems)} expectation(s) differed:\n{lines}", err=True)
        return 1
    say(f"loopkit demo OK: the loop ran in {elapsed:.1f} s and every expected verdict appeared.")
    return 0


def say(text: str, err: bool = False) -> None:
    """One line of the demo's output, flushed at once (a reader may be waiting for it)."""
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def _exit_on_sigterm() -> Any:
    """SIGTERM exits through the finally blocks (server stopped, temporary data removed)."""

    def handle(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None  # only the main thread may set signal handlers
    return signal.signal(signal.SIGTERM, handle)
