"""Ctrl-C and SIGTERM stop `linguaforge run`, `merge` and `eval` within 30 s, cleanly: exit 130 / 143, the flow run
marked Cancelled, no process of theirs left behind (the temporary Prefect server included), nothing half-made
committed; a second Ctrl-C ends a run at once; a SIGKILLed CLI takes its server with it. Real processes, real
signals. Outcomes go to build/reliability/signals.json (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from linguaforge.storage import ArtifactStore
from tests.flows.test_cli_run import _config

pytestmark = pytest.mark.slow
OUTCOMES: list[dict] = []


def _start(args: list[str], tmp_path: Path, repo_root: Path, env: dict | None = None) -> subprocess.Popen:
    environ = {**os.environ, "COLUMNS": "200", "PREFECT_HOME": str(tmp_path / "prefect"), **(env or {})}
    environ.pop("PREFECT_API_URL", None)
    return subprocess.Popen([sys.executable, "-m", "linguaforge.flows.cli", *args], cwd=repo_root, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited before {what}: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.1)


def _family(proc: subprocess.Popen) -> list[psutil.Process]:
    """The process and every descendant (the temporary server lives in a session of its own, but is a child)."""
    parent = psutil.Process(proc.pid)
    return [parent, *parent.children(recursive=True)]


def _stopped(proc: subprocess.Popen, family: list[psutil.Process], send, case: str) -> tuple[int, float, str]:
    began = time.monotonic()
    send()
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{case}: still running 30 s after the signal")
    seconds = time.monotonic() - began
    _, alive = psutil.wait_procs(family, timeout=15)
    assert not alive, f"{case}: left behind {[p.cmdline()[:4] for p in alive]}"
    return proc.returncode, seconds, output


def _flow_states(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        return [row[0] for row in db.execute("select state_type from flow_run")]


def _record(case: str, signal_name: str, code: int, seconds: float, **extra) -> None:
    OUTCOMES.append({"case": case, "signal": signal_name, "exit": code, "seconds": round(seconds, 1), **extra})
    out = Path(__file__).resolve().parents[2] / "build" / "reliability" / "signals.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(OUTCOMES, indent=1))


@pytest.mark.parametrize("how", ["Ctrl-C to the process group", "SIGTERM to the CLI", "two Ctrl-C"])
def test_a_run_stops_cleanly_mid_training(how, tmp_path, repo_root):
    config = _config(tmp_path, **{"full_cpt.train.steps": 5000, "full_cpt.train.checkpoint_every": 50})
    proc = _start(["run", str(config)], tmp_path, repo_root)
    store_path = tmp_path / "store"

    def training() -> bool:
        if not (store_path / "linguaforge-store.json").exists():
            return False
        events = ArtifactStore(str(store_path), cache_dir=tmp_path / "c", create=False).events(event="started")
        return any(e["stage"] == "full_cpt" for e in events)

    _wait_for(training, proc, "full CPT started")
    family = _family(proc)
    assert any("create_app" in " ".join(p.cmdline()) for p in family), "no temporary server among the children"

    def send():
        if how == "SIGTERM to the CLI":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
            if how == "two Ctrl-C":
                os.killpg(proc.pid, signal.SIGINT)

    code, seconds, output = _stopped(proc, family, send, how)
    _record(f"linguaforge run, mid-training: {how}", "SIGTERM" if "TERM" in how else "SIGINT", code, seconds)
    assert code == (143 if how == "SIGTERM to the CLI" else 130), output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    if how != "two Ctrl-C":  # the second one ends it at once, without the closing words
        assert "stopped" in output and "nothing half-made was kept" in output, output[-2000:]
        assert _flow_states(tmp_path) and set(_flow_states(tmp_path)) == {"CANCELLED"}
    store = ArtifactStore(str(store_path), cache_dir=tmp_path / "c", create=False)
    assert store.audit() == {}
    assert not [m for m in store.list("delta") if m.stage == "full_cpt"], "the interrupted stage was committed"


def test_a_sigkilled_run_takes_its_server_with_it(tmp_path, repo_root):
    proc = _start(["run", str(_config(tmp_path, **{"full_cpt.train.steps": 5000}))], tmp_path, repo_root)
    _wait_for(lambda: (tmp_path / "store" / "linguaforge-store.json").exists() and any(
        "create_app" in " ".join(p.cmdline()) for p in _family(proc)[1:]), proc, "the server started")
    family = _family(proc)
    code, seconds, _ = _stopped(proc, family, lambda: os.kill(proc.pid, signal.SIGKILL), "SIGKILL")
    _record("linguaforge run: SIGKILL to the CLI", "SIGKILL", code, seconds, left_behind=0)
    assert code == -signal.SIGKILL


def test_a_merge_stopped_while_publishing_changes_nothing(demo_assets, tmp_path, repo_root):
    from tests.flows.test_merge_models import fine_tune

    tune = fine_tune(demo_assets["llm"], tmp_path / "tune", 9_002)
    config = tmp_path / "merge.yaml"
    config.write_text(yaml.safe_dump({"base": str(demo_assets["llm"]), "out": str(tmp_path / "out"),
                                      "models": [{"model": str(tune)}], "merge": {"method": "task_arithmetic"}}))
    gate = tmp_path / "gate"
    proc = _start(["merge", str(config)], tmp_path, repo_root, env={"LINGUAFORGE_GATE": f"publish.start:{gate}"})
    _wait_for(lambda: Path(f"{gate}.reached").exists(), proc, "the merge reached its publish")
    code, seconds, output = _stopped(proc, _family(proc), lambda: os.kill(proc.pid, signal.SIGTERM), "merge")
    _record("linguaforge merge, about to publish: SIGTERM", "SIGTERM", code, seconds)
    assert code == 143 and "Traceback" not in output, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate.reached", "merge.yaml", "tune"]  # no out, no staging


def test_an_eval_stopped_mid_generation_exits_at_once(demo_assets, tmp_path, repo_root):
    gate = tmp_path / "gate"
    proc = _start(["eval", "--model", str(demo_assets["llm"]), "--benchmark", "mgsm", "--data",
                   str(demo_assets["world"] / "bench" / "mgsm"), "--out", str(tmp_path / "ev"), "--batch-size", "1"],
                  tmp_path, repo_root, env={"LINGUAFORGE_GATE": f"generate.batch:{gate}"})
    _wait_for(lambda: Path(f"{gate}.reached").exists(), proc, "generation started")
    code, seconds, output = _stopped(proc, _family(proc), lambda: os.killpg(proc.pid, signal.SIGINT), "eval")
    _record("linguaforge eval, mid-generation: Ctrl-C", "SIGINT", code, seconds)
    assert code == 130 and "stopped" in output and "Traceback" not in output, output
