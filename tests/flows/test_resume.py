"""Resuming with a fresh `linguaforge run`: the CLI process (and its temporary Prefect server) is SIGKILLed
in the middle of a training stage; the next run with the same configuration re-executes only what had not
committed, and the interrupted stage continues from its checkpoint. Then one stage's parameter changes and
only that stage and those downstream of it run. Counted from the store's execution records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml

from linguaforge.storage import ArtifactStore
from tests.flows.test_cli_run import TINY

pytestmark = pytest.mark.slow


def _start(config, repo_root):
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.Popen([sys.executable, "-m", "linguaforge.flows.cli", "run", str(config)], cwd=repo_root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _started(store: ArtifactStore) -> Counter:
    return Counter((e["kind"], e["key"], e["stage"]) for e in store.events(event="started"))


def test_fresh_run_resumes_after_sigkill_and_a_parameter_change_reruns_only_downstream(tmp_path, repo_root):
    data = json.loads(json.dumps(TINY))
    data["store"] = {"url": str(tmp_path / "store"), "cache_dir": str(tmp_path / "cache")}
    data["full_cpt"] = {"train": {"steps": 600, "batch_tokens": 128, "micro_batch_size": 4, "checkpoint_every": 50,
                                  "schedule": "constant"}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "cache-test")

    victim = _start(config, repo_root)
    deadline = time.monotonic() + 300
    while True:  # until the full CPT has written a checkpoint, then kill the CLI and everything it started
        assert victim.poll() is None, victim.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the full CPT never checkpointed"
        started = [e for e in store.events(event="started") if e["stage"] == "full_cpt"]
        if started and store.checkpoints(started[0]["kind"], started[0]["key"]).steps():
            break
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    interrupted = set(_started(store)) - {(m.kind, m.key, m.stage) for m in store.list()}
    assert any(stage == "full_cpt" for _, _, stage in interrupted)
    before = _started(store)

    again = _start(config, repo_root)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    second = _started(store) - before
    assert not {k for k in second if k in before and k not in interrupted}, "a committed stage ran again"
    assert set(second) >= interrupted  # every interrupted stage ran again (now to completion)
    full = next(m for m in store.list("delta") if m.stage == "full_cpt")
    assert full.metrics["resumed_from"] >= 50  # an execution fact: in the manifest, not in the artifact's bytes
    assert "resumed_from" not in json.loads(store.open(("delta", full.key)).read_text("train.json"))

    data["merge"] = {"gamma": 0.5}  # one stage's parameter
    config.write_text(yaml.safe_dump(data))
    before = _started(store)
    third = _start(config, repo_root)
    out, _ = third.communicate(timeout=600)
    assert third.returncode == 0, out[-3000:]
    ran = _started(store) - before
    assert {stage for _, _, stage in ran} <= {"merge", "mindmerger_mapping", "mindmerger_augmentation",
                                              "evaluate_unit", "comparison_report"}
    assert sum(1 for _, _, stage in ran if stage == "merge") == 1  # the MAET merge; not the task vector
    evaluated = {m.params["model"] for m in store.list("eval") if ("eval", m.key, "evaluate_unit") in ran}
    assert evaluated == {"maet", "mindmerger-maet"}  # base, baselines and MindMerger-on-base were reused
