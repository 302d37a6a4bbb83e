"""The pipeline deployed as users run it: a real `prefect server start`, a real `prefect worker start`
(process pool), deployments registered by `linguaforge serve`, the store and Prefect's results on a real S3
endpoint (moto on 127.0.0.1). Runs are triggered through the REST API exactly as the UI does; the worker's
flow-run process is SIGKILLed in the middle of a training stage; a retry (the UI's, or the CLI's) completes
the run, and the store's execution records show that only the interrupted stage ran again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from linguaforge.storage import ArtifactStore
from tests.e2e.conftest import api, wait_for_state, wait_for_worker_to_finish

pytestmark = pytest.mark.slow


def _kill_flow_run_mid_stage(store: ArtifactStore, stage: str, timeout: float = 300) -> int:
    """Wait until `stage` has started and written a checkpoint, then SIGKILL the process running it (the
    flow-run process the worker started; its pid is in the stage's execution record)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = [e for e in store.events(event="started") if e["stage"] == stage]
        if started and store.checkpoints(started[-1]["kind"], started[-1]["key"]).steps():
            os.kill(started[-1]["pid"], signal.SIGKILL)
            return started[-1]["pid"]
        time.sleep(0.2)
    seen = sorted({e["stage"] for e in store.events()})
    raise AssertionError(f"stage {stage} did not start and checkpoint in {timeout}s; stages seen: {seen}")


def _why(base: str, run_id: str, store: ArtifactStore) -> str:
    """What a failed run says: its state message, its error logs, the stages that failed."""
    state = api(base, "GET", f"/flow_runs/{run_id}")["state"]
    logs = api(base, "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}, "level": {"ge_": 40}},
                                              "limit": 20})
    return "\n".join([f"state: {state.get('message')}", *(log["message"][-2000:] for log in logs),
                      *(f"stage failed: {e.get('error')}" for e in store.events(event="failed"))])


def _executions(store: ArtifactStore) -> Counter:
    return Counter((e["kind"], e["key"]) for e in store.events(event="started"))


@pytest.mark.parametrize("retry_with", ["ui", "cli"])
def test_kill_mid_stage_then_retry_reruns_only_that_stage(deployed, retry_with, repo_root):
    base = deployed["api"]
    # each variant runs on its own store prefix: the UI's run form with one parameter edited
    config = json.loads(json.dumps(deployed["config"]))
    config["store"]["url"] = f"s3://{deployed['bucket']}/store-{retry_with}"
    store = ArtifactStore(config["store"]["url"], cache_dir=deployed["root"] / f"cache-{retry_with}",
                          storage_options={"client_kwargs": {"endpoint_url": deployed["endpoint"]}})
    before = _executions(store)
    run = api(base, "POST", f"/deployments/{deployed['deployments']['pipeline']}/create_flow_run",
              {"parameters": {"config": config}, "state": {"type": "SCHEDULED", "message": "Run from the Prefect UI"}})
    _kill_flow_run_mid_stage(store, "full_cpt")
    assert wait_for_state(base, run["id"], {"CRASHED", "FAILED"}, timeout=120) == "CRASHED"
    wait_for_worker_to_finish(base, run["id"])  # the worker reports the crash too, after the process's own
    assert api(base, "GET", f"/flow_runs/{run['id']}")["state_type"] == "CRASHED"
    committed_before_retry = {(m.kind, m.key) for m in store.list()}
    interrupted = set(_executions(store) - before) - committed_before_retry  # started, never committed

    if retry_with == "ui":  # the UI's Retry button
        answer = api(base, "POST", f"/flow_runs/{run['id']}/set_state",
                     {"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"},
                      "force": True})
        assert answer["status"] == "ACCEPT", answer
    else:
        retry = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "retry", run["id"]],
                               env=deployed["env"], cwd=repo_root, capture_output=True, text=True, timeout=120)
        assert retry.returncode == 0, retry.stdout + retry.stderr
    wait_for_state(base, run["id"], {"RUNNING", "COMPLETED"}, timeout=120)  # the worker took it again
    final = wait_for_state(base, run["id"], {"COMPLETED", "FAILED", "CRASHED"})
    assert final == "COMPLETED", _why(base, run["id"], store)

    executions = _executions(store) - before
    # a stage that failed on a transient fault (recorded in the store with its error) is retried by Prefect:
    # those executions are explained by the failure, not by the kill
    failures = Counter((e["kind"], e["key"]) for e in store.events(event="failed"))
    full_cpt = [m for m in store.list("delta") if m.stage == "full_cpt"]
    assert len(full_cpt) == 1
    rerun = {k for k, n in executions.items() if n - failures[k] > 1}
    assert ("delta", full_cpt[0].key) in interrupted
    assert rerun == interrupted, f"executed twice: {rerun}; interrupted by the kill: {interrupted}"
    # everything committed before the kill was reused, not recomputed
    assert all(executions[k] - failures[k] == 1 for k in committed_before_retry)
    resumed_from = full_cpt[0].metrics["resumed_from"]
    assert resumed_from and resumed_from >= 50  # continued from its checkpoint
    assert any(m.kind == "report" for m in store.list())
    results = store.fs.ls(f"{deployed['bucket']}/prefect-results")
    assert results, "Prefect's task results were not written to the bucket"


def test_gpu_stages_run_as_a_subflow_deployment_on_another_worker_process(deployed):
    """orchestration.gpu_deployment sends MAET to a deployment (here the CPU pool's `maet` stands in for the
    GPU pool's `maet-gpu`): it runs as a linked subflow in its own flow-run process, commits to the shared
    bucket, and the pipeline's own MAET call only collects references."""
    base = deployed["api"]
    config = json.loads(json.dumps(deployed["config"]))
    config["store"]["url"] = f"s3://{deployed['bucket']}/store-gpu"
    config["orchestration"] = {"gpu_deployment": "linguaforge-maet/maet"}
    config["full_cpt"]["train"]["steps"] = 20
    store = ArtifactStore(config["store"]["url"], cache_dir=deployed["root"] / "cache-gpu",
                          storage_options={"client_kwargs": {"endpoint_url": deployed["endpoint"]}})
    run = api(base, "POST", f"/deployments/{deployed['deployments']['pipeline']}/create_flow_run",
              {"parameters": {"config": config}})
    assert wait_for_state(base, run["id"], {"COMPLETED", "FAILED", "CRASHED"}, timeout=600) == "COMPLETED"
    children = api(base, "POST", "/flow_runs/filter",
                   {"deployments": {"id": {"any_": [deployed["deployments"]["maet"]]}}})
    child = next(r for r in children if r["parameters"]["config"]["store"]["url"] == config["store"]["url"])
    assert child["state_type"] == "COMPLETED" and child["parent_task_run_id"] is not None  # a linked subflow
    events = store.events(event="started")
    maet_pids = {e["pid"] for e in events if e["stage"] in ("masked_cpt", "merge")}
    later_pids = {e["pid"] for e in events if e["stage"] in ("evaluate_unit", "comparison_report")}
    assert maet_pids and later_pids and not maet_pids & later_pids  # MAET ran in the other process
    assert Counter((e["kind"], e["key"]) for e in events).most_common(1)[0][1] == 1  # nothing ran twice
