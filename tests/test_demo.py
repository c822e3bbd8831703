"""`loopkit demo`, run as a real subprocess: the whole loop on a temporary store, and nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from loopkit_core import demo
from loopkit_core.demo import sample_app

DATA_DIR = re.compile(r"temporary embedded store: (\S+)")


def environment(tmp: Path) -> dict[str, str]:
    """The caller's environment without LOOPKIT_* settings, with temporary files under `tmp`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
    return {**env, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, float]:
    """One `loopkit demo` run (about 2 s): its result, its TMPDIR, and how long it took."""
    tmp = tmp_path_factory.mktemp("demo")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "loopkit_core.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment(tmp),
    )
    return result, tmp, time.monotonic() - started


def test_demo_runs_the_whole_loop_and_exits_0(demo_run):
    result, _, elapsed = demo_run
    assert result.returncode == 0, (result.stdout[-4000:], result.stderr[-4000:])
    out = result.stdout
    assert "Traceback" not in result.stderr
    # Progress, step by step.
    for n in range(1, demo.STEPS + 1):
        assert f"[{n}/{demo.STEPS}] " in out
    # The packet, then its Markdown handoff (the same packet).
    packet_id = re.search(r"packet (pkt_[0-9a-f]{24})", out).group(1)
    assert f"# LoopKit diagnosis {packet_id}" in out
    assert "## 1. " in out and "### Patch plan" in out
    # The three issues the sample app causes.
    assert "TimeoutError on execute_tool search_flights" in out
    assert "TypeError on GET /trips/{trip_id}" in out
    assert "latency regression on GET /api/recommendations" in out
    assert "6 thumbs-down user_signal records" in out
    # The user_signals diagnoser: the thumbs-down become an issue linked to the timeout, with a session and a trace.
    assert "negative user signals on POST /chat in trip-planner: 6 in 40 calls (15.0%) vs 1.0% before" in out
    assert "6 of 6 sessions with a negative signal had a `execute_tool search_flights` TimeoutError" in out
    timeout_id = re.search(r"(iss_[0-9a-f]{20})  tool_failure  count 10", out).group(1)
    assert f"linked to {timeout_id} (6 shared signals)" in out
    assert re.search(r"session  http://127\.0\.0\.1:\d+/v1/dashboard/sessions/sess-\d{4}\n", out)
    assert re.search(r"trace    http://127\.0\.0\.1:\d+/v1/dashboard/traces/[0-9a-f]{32} ", out)
    # The chat that fails because its flights search timed out is the tool's symptom: one task, the tool its cause.
    assert re.search(r"RuntimeError on POST /chat: .*\n.*\n.*\n\s+symptom of iss_\w+: one task, the cause's", out)
    assert re.search(r"TimeoutError on execute_tool search_flights.*\n.*\n.*\n\s+probable cause of iss_\w+", out)
    assert re.search(r"telling: flights.long_haul=true on 100% of its records, \d+% of the other calls", out)
    assert "Probable cause: `TimeoutError on execute_tool search_flights" in out
    # Approval, then verdicts: held after the fix, regressed after the failure came back.
    assert "approved by dashboard key" in out
    first, second = out.split("[8/8]")
    assert re.search(r"held\s+iss_\w+\s+TimeoutError on execute_tool search_flights", first)
    assert re.search(r"held\s+iss_\w+\s+latency regression", first)
    assert re.search(r"insufficient_data\s+iss_\w+\s+TypeError", first)
    assert re.search(r"held\s+iss_\w+\s+negative user signals on POST /chat", first)
    assert re.search(r"regressed\s+iss_\w+\s+TimeoutError on execute_tool search_flights", second)
    assert re.search(r"status regressed\s+TimeoutError on execute_tool search_flights.*regression: true", second)
    # Where to go next, honestly.
    assert re.search(r"dashboard\s+http://127\.0\.0\.1:\d+/v1/dashboard", out)
    assert re.search(r"packets\s+http://127\.0\.0\.1:\d+/v1/packets", out)
    assert re.search(r"agent key\s+lk_agent_", out) and re.search(r"dashboard key\s+lk_dash_", out)
    assert "every expected verdict appeared" in out
    assert elapsed < 60, f"the demo took {elapsed:.1f} s"


def test_demo_removes_its_temporary_data_dir(demo_run):
    result, tmp, _ = demo_run
    assert result.returncode == 0, result.stderr[-4000:]
    data_dir = Path(DATA_DIR.search(result.stdout).group(1))
    assert data_dir.parent == tmp  # created with tempfile, under TMPDIR
    assert f"Removed the temporary data dir {data_dir}" in result.stdout
    assert not data_dir.exists()
    assert list(tmp.iterdir()) == []


def test_keep_serving_serves_until_ctrl_c_then_cleans_up(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "loopkit_core.cli", "demo", "--keep-serving"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(tmp_path),
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "until Ctrl-C" in line:
                break
        out = "".join(lines)
        assert "until Ctrl-C" in out, out
        url = re.search(r"Serving (http://127\.0\.0\.1:\d+)", out).group(1)
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
            assert response.status == 200
        data_dir = Path(DATA_DIR.search(out).group(1))
        assert data_dir.exists()
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, (rest, err)
    assert "Traceback" not in err
    assert "LoopKit stopped." in rest
    assert not data_dir.exists()


def test_without_opentelemetry_it_exits_2_and_says_what_to_install(tmp_path):
    # Hide the OpenTelemetry SDK from the demo, as in an installation without the test extra.
    code = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith('opentelemetry'):\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from loopkit_core.cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=environment(tmp_path)
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert 'pip install -e ".[test]"' in result.stderr
    assert "pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # it gave up before creating anything


def test_a_missing_verdict_exits_1_with_what_differed(monkeypatch, capsys, tmp_path):
    # Too little traffic after the fix: the verifier must say insufficient_data, never held, and the demo fails.
    monkeypatch.setattr(sample_app, "FIXED_CHATS", 3)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(demo.tempfile, "tempdir", None)  # re-read TMPDIR
    assert demo.run() == 1
    captured = capsys.readouterr()
    assert "loopkit demo FAILED" in captured.err
    assert "search_flights tool-timeout issue" in captured.err
    assert "is insufficient_data, expected held" in captured.err
    assert list(tmp_path.iterdir()) == []
