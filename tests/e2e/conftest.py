"""Shared by the end-to-end tests: a Prefect server, an S3 endpoint (moto), deployments registered by
`linguaforge serve`, and one process-pool worker — started once per session, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
import yaml

from tests.flows.test_cli_run import TINY


def api(base: str, method: str, path: str, body: dict | None = None, attempts: int = 6):
    """One call of the Prefect REST API. A 503 or no answer within 30 s (the server busy on a loaded machine) is
    retried with a growing pause; every other status is the caller's to judge."""
    for attempt in range(attempts):
        request = urllib.request.Request(f"{base}{path}", method=method, data=json.dumps(body).encode()
                                         if body is not None else None, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
            return json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt + 1 == attempts:
                raise
            time.sleep(0.5 * 2 ** attempt)  # back-off before the next try, not a wait for an event
        except TimeoutError:
            if attempt + 1 == attempts:
                raise


def wait_for_state(base: str, run_id: str, wanted: set[str], timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api(base, "GET", f"/flow_runs/{run_id}")["state_type"]
        if state in wanted:
            return state
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} did not reach {wanted}; last state {state}")


def wait_for_worker_to_finish(base: str, run_id: str, timeout: float = 180) -> dict:
    """The worker's `prefect.worker.executed-flow-run` event for this run: it is emitted after the worker has
    seen the process exit and reported a crash, so nothing the worker does can still change the run's state."""
    deadline = time.monotonic() + timeout
    query = {"filter": {"event": {"name": ["prefect.worker.executed-flow-run"]},
                        "related": {"id": [f"prefect.flow-run.{run_id}"]}}, "limit": 10}
    while time.monotonic() < deadline:
        events = api(base, "POST", "/events/filter", query).get("events", [])
        if events:
            return events[0]
        time.sleep(0.5)
    raise AssertionError(f"the worker did not report finishing flow run {run_id} within {timeout}s")


@pytest.fixture(scope="session")
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
    serve = subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "serve", str(root / "run.yaml"), "--eval-cron", "none",
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


