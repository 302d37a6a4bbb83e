"""SIGKILL the whole `linguaforge run` (its process group: the CLI, its Prefect server, its workers) in the
middle of each kind of stage, run again, and the store ends exactly as an uninterrupted run leaves it.

One sequence kills the run once per case, in pipeline order, each time at `delay` seconds after that stage
started; after every kill, every artifact visible as committed must be intact (`ArtifactStore.audit`), and
the next run continues. At the end the artifacts equal, bit for bit, those of an uninterrupted run of the
same configuration in another store. `make test` runs one sequence (one kill point per case);
`make faults` runs five (LINGUAFORGE_FAULT_POINTS=5). Outcomes go to build/reliability/faults.json."""

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

# (case, the stage whose start arms the kill); in the order the pipeline reaches them
CASES = [
    ("corpus preparation (Parquet parts)", "corpus_prep"),
    ("training (full CPT, checkpointing)", "full_cpt"),
    ("merge (shard writes)", "merge"),
    ("MindMerger training", "mindmerger_mapping"),
    ("evaluation unit", "evaluate_unit"),
    ("report", "comparison_report"),
]
DELAYS = [0.0, 0.4, 0.1, 0.8, 0.25]  # seconds after the stage started; one per kill point
POINTS = int(os.environ.get("LINGUAFORGE_FAULT_POINTS", "1"))
OUTCOMES: list[dict] = []


def _config(root: Path) -> Path:
    data = json.loads(json.dumps(TINY))
    data["mindmerger"]["llms"] = ["merged"]
    data["full_cpt"]["train"].update(steps=40, checkpoint_every=5)  # long enough to be killed mid-training
    data["store"] = {"url": str(root / "store"), "cache_dir": str(root / "cache")}
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.yaml").write_text(yaml.safe_dump(data))
    return root / "run.yaml"


def _start(config: Path, repo_root: Path) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.Popen([sys.executable, "-m", "linguaforge.flows.cli", "run", str(config)], cwd=repo_root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _contents(store: ArtifactStore) -> dict[tuple[str, str], str]:
    return {(m.kind, m.key): m.digest for m in store.list()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, repo_root) -> dict:
    root = tmp_path_factory.mktemp("uninterrupted")
    run = subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "run", str(_config(root))], cwd=repo_root,
                         capture_output=True, text=True, timeout=900,
                         env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return _contents(ArtifactStore(str(root / "store"), cache_dir=root / "cache"))


def _kill_when_started(proc: subprocess.Popen, store: ArtifactStore, stage: str, seen: int, delay: float) -> str:
    """SIGKILL the run's process group `delay` s after a new `stage` started; 'finished' if it ended first."""
    deadline = time.monotonic() + 600
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"{stage} never started"
        if sum(e["stage"] == stage for e in store.events(event="started")) > seen:
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            return "killed" if proc.returncode == -signal.SIGKILL else "finished"
        time.sleep(0.05)
    return "finished"


@pytest.mark.parametrize("point", range(POINTS))
def test_sigkill_in_every_kind_of_stage_then_resume_is_bitwise_equal(point, reference, tmp_path, repo_root):
    config = _config(tmp_path)
    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "cache-test")
    delay = DELAYS[point % len(DELAYS)]
    for case, stage in CASES:
        seen = sum(e["stage"] == stage for e in store.events(event="started"))
        outcome = _kill_when_started(_start(config, repo_root), store, stage, seen, delay)
        damaged = store.audit()
        started = [e for e in store.events(event="started") if e["stage"] == stage]
        checkpointed = bool(started) and bool(store.checkpoints(started[-1]["kind"], started[-1]["key"]).steps())
        OUTCOMES.append({"case": case, "point": point, "delay_s": delay, "outcome": outcome,
                         "checkpoint_at_kill": checkpointed, "damaged_committed": len(damaged)})
        assert damaged == {}, f"after a kill in {case}: {damaged}"
    final = subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "run", str(config)], cwd=repo_root,
                           capture_output=True, text=True, timeout=900,
                           env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    equal = _contents(store) == reference
    for row in OUTCOMES:
        if row["point"] == point:
            row["bitwise_equal_after_resume"] = equal
    _record()
    assert equal, sorted(set(_contents(store).items()) ^ set(reference.items()))[:10]
    assert not list((Path(store.root) / ".staging").glob("*")), "staging left behind"
    full = next(m for m in store.list("delta") if m.stage == "full_cpt")
    if any(r["case"].startswith("training") and r["outcome"] == "killed" and r["checkpoint_at_kill"]
           for r in OUTCOMES if r["point"] == point):
        assert full.metrics.get("resumed_from") is not None  # continued from its last complete checkpoint


def _record() -> None:
    out = Path(__file__).resolve().parents[2] / "build" / "reliability" / "faults.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(OUTCOMES, indent=1))
