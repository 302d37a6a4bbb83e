"""Fifty flow runs at once against one Prefect server and one store: every run completes, and each
artifact is committed exactly once, whatever the interleaving.

Ten processes start five flow runs each, all at the same moment, on a real `prefect server start`.
Every run makes a demo world through the real `demo_world` stage task; two runs share each seed, so 25
distinct artifacts are asked for twice each, concurrently. The figure goes to build/reliability/load.json.

Prefect's client retries a request whose reply timed out, and the server may already have acted on the
first try: a retried `create_flow_run` leaves a second run behind that nobody ever starts. So the test
follows the fifty runs the clients actually executed (each prints its run id), asserts every one
COMPLETED, and allows extra runs only if they never started; it counts them in load.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from linguaforge.storage import ArtifactStore
from tests.e2e.conftest import api

pytestmark = pytest.mark.slow

RUNS, PROCESSES = 50, 10
FLOW_NAME = "linguaforge-load-world"

CLIENT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from prefect import flow, runtime
    from linguaforge.flows.config import RunConfig
    from linguaforge.flows.stages import run_context
    from linguaforge.tasks.demo import demo_world

    store, cache, go, seeds = sys.argv[1], sys.argv[2], Path(sys.argv[3]), [int(s) for s in sys.argv[4:]]

    @flow(name="FLOW_NAME")
    def world(seed: int) -> str:
        cfg = RunConfig(name=f"load-{seed}", languages=["de"], store={"url": store, "cache_dir": cache},
                        demo={"seed": seed, "general_docs": 20, "ability_problems": 20, "translation_pairs": 10,
                              "query_items": 10, "test_items": 2})
        return f"{runtime.flow_run.id} {demo_world(run_context(cfg), cfg.demo).key}"

    while not go.exists():  # every process starts its runs at the same moment
        time.sleep(0.01)
    for seed in seeds:
        print(world(seed), flush=True)
""").replace("FLOW_NAME", FLOW_NAME)


def test_fifty_concurrent_flow_runs_on_one_server_and_store(prefect_server, tmp_path, repo_root):
    store_url, go = str(tmp_path / "store"), tmp_path / "go"
    seeds = [i % (RUNS // 2) for i in range(RUNS)]  # each seed twice
    env = {**os.environ, "PREFECT_API_URL": prefect_server,
           "PREFECT_API_REQUEST_TIMEOUT": "300",  # a loaded server answers slowly; fewer retried creates
           # fifty runs exhaust the SQLite server's connection pool (5 + 10) for its 30 s timeout, and it
           # answers 500 (a fresh-clone run here, 2026-12-04: "QueuePool limit of size 5 overflow 10 reached"):
           # retried, as docs/operations.md advises for SQLite; a retried create that had acted is an orphan,
           # which the checks below allow
           "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500"}
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, store_url, str(tmp_path / f"cache{p}"), str(go),
                               *map(str, seeds[p::PROCESSES])], cwd=repo_root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in range(PROCESSES)]
    go.touch()
    began = time.monotonic()
    results = [proc.communicate(timeout=900) for proc in procs]
    seconds = time.monotonic() - began
    assert all(proc.returncode == 0 for proc in procs), [err[-2000:] for _, err in results]

    executed = [line.split() for out, _ in results for line in out.splitlines()]
    run_ids, keys = {run_id for run_id, _ in executed}, [key for _, key in executed]
    runs = api(prefect_server, "POST", "/flow_runs/filter",
               {"flows": {"name": {"any_": [FLOW_NAME]}}, "limit": 200})
    states = Counter(r["state_type"] for r in runs if r["id"] in run_ids)
    never_started = [r for r in runs if r["id"] not in run_ids]  # orphans of retried creates
    store = ArtifactStore(store_url, cache_dir=tmp_path / "cache-check")
    worlds = store.list("demo_world")
    commits = Counter(e["key"] for e in store.events("demo_world", "committed"))
    out = Path(__file__).resolve().parents[2] / "build" / "reliability" / "load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": len(run_ids), "states": states, "artifacts": len(worlds),
                               "orphan_runs_from_client_retries": len(never_started),
                               "max_commits_per_key": max(commits.values()), "seconds": round(seconds, 1),
                               "processes": PROCESSES}))
    assert len(executed) == len(run_ids) == RUNS and states == {"COMPLETED": RUNS}
    assert all(r["start_time"] is None and r["state_type"] in ("PENDING", "SCHEDULED") for r in never_started), \
        [(r["id"], r["state_type"], r["start_time"]) for r in never_started]
    assert len(worlds) == RUNS // 2 and store.audit() == {}
    assert set(commits.values()) == {1}, commits  # never committed twice, never lost
    assert len(set(keys)) == RUNS // 2
