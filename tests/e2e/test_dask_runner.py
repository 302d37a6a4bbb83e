"""`orchestration.runner: dask`: the fan-out runs on a local Dask cluster of two worker processes, the store on a
real S3 endpoint (moto), and what it commits is byte for byte what the threads runner commits; a worker SIGKILLed
mid-stage is replaced, its stage rescheduled, and the run completes with nothing partial committed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from linguaforge.storage import ArtifactStore
from tests.flows.test_cli_run import TINY

pytestmark = pytest.mark.slow
FANNED_OUT = ("corpus_prep", "importance_probe", "masked_cpt", "merge", "evaluate_unit")


def _config(tmp_path, url: str, **orchestration) -> str:
    data = json.loads(json.dumps(TINY))
    data["mindmerger"] = {"enabled": False}
    data["store"] = {"url": url, "cache_dir": str(tmp_path / "cache")}
    data["orchestration"] = orchestration
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _start(config: str, repo_root) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.Popen([sys.executable, "-m", "linguaforge.flows.cli", "run", config], cwd=repo_root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return out + err


def _contents(store: ArtifactStore) -> dict[tuple[str, str], str]:
    return {(m.kind, m.key): m.digest for m in store.list()}


def _store(url: str, tmp_path) -> ArtifactStore:
    return ArtifactStore(url, cache_dir=tmp_path / "reader-cache")


@pytest.fixture
def threads_run(s3_bucket, tmp_path_factory, repo_root) -> dict:
    root = tmp_path_factory.mktemp("threads")
    url = f"s3://{s3_bucket}/threads"
    _finish(_start(_config(root, url), repo_root))
    return _contents(_store(url, root))


def test_stages_run_on_two_worker_processes_and_commit_what_threads_commit(threads_run, s3_bucket, tmp_path,
                                                                            repo_root):
    url = f"s3://{s3_bucket}/dask"
    proc = _start(_config(tmp_path, url, runner="dask", dask_workers=2), repo_root)
    output = _finish(proc)
    store = _store(url, tmp_path)
    assert _contents(store) == threads_run
    started = store.events(event="started")
    flow_process = {e["pid"] for e in started if e["stage"] == "demo_world"}  # run in the flow's own process
    workers = {e["pid"] for e in started if e["stage"] in FANNED_OUT}
    assert len(workers) >= 2 and not workers & flow_process, (workers, flow_process)
    assert {e["stage"] for e in started if e["pid"] in workers} >= {"corpus_prep", "masked_cpt", "evaluate_unit"}
    assert "| INFO" not in output  # the workers log to the run's file, not over the live display


def test_a_worker_killed_mid_stage_is_replaced_and_the_run_completes(threads_run, s3_bucket, tmp_path, repo_root):
    url = f"s3://{s3_bucket}/killed"
    proc = _start(_config(tmp_path, url, runner="dask", dask_workers=2), repo_root)
    store = _store(url, tmp_path)
    victim = None
    deadline = time.monotonic() + 600
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        running = [e for e in store.events(event="started") if e["stage"] == "masked_cpt"]
        if running:
            victim = running[0]
            os.kill(victim["pid"], signal.SIGKILL)  # the worker process, mid-training
        else:
            time.sleep(0.05)
    assert victim is not None, "no masked CPT run started on a worker"
    _finish(proc)
    damaged, equal = store.audit(), _contents(store) == threads_run
    rerun = any(e["stage"] == "masked_cpt" and e["key"] == victim["key"] and e["pid"] != victim["pid"]
                for e in store.events(event="started"))
    out = Path(__file__).resolve().parents[2] / "build" / "reliability" / "dask_worker_kill.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([{"case": "a Dask worker SIGKILLed mid masked CPT (2 workers, store on S3)",
                                "completed": True, "rerun_elsewhere": rerun, "damaged_committed": len(damaged),
                                "equal_to_threads": equal}], indent=1))
    assert damaged == {}
    assert equal  # the killed stage was run again, whole, on a live worker
    assert rerun
