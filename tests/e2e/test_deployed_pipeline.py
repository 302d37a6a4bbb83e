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
import urllib.request
import uuid
from collections import Counter

import pytest
import yaml

from storage import ArtifactStore
from tests.flows.test_cli_run import TINY

pytestmark = pytest.mark.slow


def api(base: str, method: str, path: str, body: dict | None = None):
    request = urllib.request.Request(f"{base}{path}", method=method, data=json.dumps(body).encode() if body is not None
                                     else None, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


def wait_for_state(base: str, run_id: str, wanted: set[str], timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api(base, "GET", f"/flow_runs/{run_id}")["state_type"]
        if state in wanted:
            return state
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} did not reach {wanted}; last state {state}")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, prefect_server, s3_endpoint, repo_root):
    """Bucket, config on S3, deployments registered, one process-pool worker running."""
    import boto3

    root = tmp_path_factory.mktemp("deployed")
    bucket = f"lf-{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_HOME": str(root / "prefect-home"),
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": s3_endpoint, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    config = json.loads(json.dumps(TINY))
    config["store"] = {"url": f"s3://{bucket}/store", "cache_dir": str(root / "cache")}
    # one long, checkpointed stage to interrupt: the full-CPT baseline
    config["full_cpt"] = {"train": {"steps": 1500, "batch_tokens": 128, "micro_batch_size": 4,
                                    "checkpoint_every": 50, "schedule": "constant"}}
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    serve = subprocess.run([sys.executable, "-m", "flows.cli", "serve", str(root / "run.yaml"), "--eval-cron", "none",
                            "--result-storage", f"s3://{bucket}/prefect-results"],
                           cwd=repo_root, env=env, capture_output=True, text=True, timeout=180)
    assert serve.returncode == 0, serve.stdout + serve.stderr
    deployments = {d["name"]: d["id"] for d in api(prefect_server, "POST", "/deployments/filter", {})}
    log = open(root / "worker.log", "wb")
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "linguaforge-cpu"],
                              cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update({k: env[k] for k in saved})  # this process reads the bucket too
    try:
        yield {"api": prefect_server, "deployments": deployments, "env": env, "root": root, "config": config,
               "bucket": bucket, "endpoint": s3_endpoint}
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        worker.send_signal(signal.SIGTERM)  # a worker wants two SIGTERMs to exit
        time.sleep(1)
        from tests.conftest import stop_process

        stop_process(worker)
        log.close()


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
    time.sleep(6)  # the worker reports the crash too, a few seconds after the process's own report
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
    assert wait_for_state(base, run["id"], {"COMPLETED", "FAILED", "CRASHED"}) == "COMPLETED"

    executions = _executions(store) - before
    full_cpt = [m for m in store.list("delta") if m.stage == "full_cpt"]
    assert len(full_cpt) == 1
    rerun = {k for k, n in executions.items() if n > 1}
    assert ("delta", full_cpt[0].key) in interrupted
    assert rerun == interrupted, f"executed twice: {rerun}; interrupted by the kill: {interrupted}"
    # everything committed before the kill was reused, not recomputed
    assert all(executions[k] == 1 for k in committed_before_retry)
    summary = json.loads(store.open(("delta", full_cpt[0].key)).read_text("train.json"))
    assert summary["resumed_from"] and summary["resumed_from"] >= 50  # continued from its checkpoint
    assert any(m.kind == "report" for m in store.list())
    results = store.fs.ls(f"{deployed['bucket']}/prefect-results")
    assert results, "Prefect's task results were not written to the bucket"
