"""Loop bookkeeping latency on a real server: POST .../stages, POST /v1/runs/diagnose (with memory), GET /v1/loops.

A LoopKit runs in this process (`in_thread`, loopback, a temporary data directory, or schemas with a fresh prefix
on `--database-url`, dropped at the end). One project gets 50 failing records of 5 faults, then `--loops` times:
a diagnosis (5 issues), an approval with the dashboard key, three stages (issue_opened, pr_opened, merged) with
the agent key, and every third time a verification. Then `GET /v1/loops?limit=100` and the memory a diagnosis
answers (`store.memory.recall`, in process) are timed `--repeat` times.

    python bench/loops.py --loops 300 [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Prints JSON with the median and p95 milliseconds of each (wall time from request to the last byte).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from loopkit_core.projects import create_project
from loopkit_core.server import in_thread
from loopkit_core.settings import Settings
from loopkit_core.store import memory


def summary(seconds: list[float]) -> dict[str, float | int]:
    """Median and p95 in milliseconds, and how many samples."""
    ordered = sorted(seconds)
    return {
        "median_ms": round(statistics.median(ordered) * 1e3, 1),
        "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1e3, 1),
        "n": len(ordered),
    }


def timed(samples: list[float], call):  # noqa: ANN001, ANN201
    """Run `call`, append its wall time to `samples`, return its result."""
    started = time.perf_counter()
    result = call()
    samples.append(time.perf_counter() - started)
    return result


def main() -> None:
    """Fill, time, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loops", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    prefix = f"bench{secrets.token_hex(4)}_" if args.database_url else ""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env(
            {},
            data_dir=Path(tmp) / "data",
            host="127.0.0.1",
            http_port=0,
            grpc_port=0,
            log_level="warning",
            diagnose_per_minute=1_000_000,
            database_url=args.database_url,
            database_schema_prefix=prefix,
        )
        try:
            with in_thread(settings) as server, httpx.Client(base_url=server.http_url, timeout=60) as client:
                keys = create_project(server.app.store.control, "bench loops")
                agent = {"authorization": f"Bearer {keys['agent_key']}"}
                dashboard = {"authorization": f"Bearer {keys['dashboard_key']}"}
                producer = {"authorization": f"Bearer {keys['producer_key']}"}
                records = [{"type": "error", "name": f"op{i % 5}", "message": f"boom kind {i % 5}"} for i in range(50)]
                client.post("/v1/traces", json={"records": records}, headers=producer).raise_for_status()
                times: dict[str, list[float]] = {"stage": [], "diagnose": [], "loops": [], "memory": []}
                for n in range(args.loops):
                    answer = timed(
                        times["diagnose"],
                        lambda: client.post("/v1/runs/diagnose", json={"min_count": 1}, headers=agent),
                    )
                    path = f"/v1/packets/{answer.json()['packet']['packet_id']}"
                    client.post(f"{path}/approve", json={"note": "go"}, headers=dashboard).raise_for_status()
                    for stage in ("issue_opened", "pr_opened", "merged"):
                        body = {"stage": stage, "url": "https://example.com/pr/1"}
                        url = f"{path}/stages"
                        done = timed(times["stage"], lambda u=url, b=body: client.post(u, json=b, headers=agent))
                        assert done.status_code == 201, done.text
                    if n % 3 == 0:
                        client.post("/v1/runs/verify", json={"packet_id": path.rsplit("/", 1)[1]}, headers=agent)
                engine = server.app.store.project(keys["project_id"])
                for _ in range(args.repeat):
                    listed = timed(times["loops"], lambda: client.get("/v1/loops?limit=100", headers=agent))
                    timed(times["memory"], lambda: memory.recall(engine, None))
                print(
                    json.dumps(
                        {
                            "backend": "postgresql" if args.database_url else "sqlite",
                            "loops": listed.json()["funnel"]["loops"],
                            "loops_answer_bytes": len(listed.content),
                            "post_stage": summary(times["stage"]),
                            "post_diagnose_with_memory": summary(times["diagnose"]),
                            "get_loops_limit_100": summary(times["loops"]),
                            "memory_recall_in_process": summary(times["memory"]),
                        },
                        indent=2,
                    )
                )
        finally:
            if args.database_url:
                _drop(args.database_url, prefix)


def _drop(url: str, prefix: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        names = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE left(nspname, length(%s)) = %s", (prefix, prefix)
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


if __name__ == "__main__":
    main()
