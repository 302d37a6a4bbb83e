"""Experiment tracking: after a run, TensorBoard event files exist for every training stage and for the evaluation,
and TensorBoard's own reader gives back a stage's loss curve (one point a step) and every unit's accuracy as the
store holds it; MLflow's client and W&B's offline run files give back the same; a logger that fails never fails a
stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from linguaforge.pipelines.tracking import Trackers
from linguaforge.storage import ArtifactStore
from tests.flows.test_cli_run import TINY, _cli


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_a_run_logs_every_training_stage_and_the_evaluation_to_tensorboard(tmp_path, repo_root):
    data = json.loads(json.dumps(TINY))
    data["store"] = {"url": str(tmp_path / "store"), "cache_dir": str(tmp_path / "cache")}
    data["mindmerger"]["llms"] = ["base"]
    data["tracking"] = {"loggers": ["tensorboard", "mlflow", "wandb"]}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    run = _cli("run", str(tmp_path / "run.yaml"), cwd=repo_root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    folder = tmp_path / "runs" / "tiny" / "tracking"
    runs = sorted(p.name for p in folder.iterdir())
    for stage in ("bootstrap", "probe_ability", "probe_de", "masked_CPT_de", "full_CPT", "mindmerger_mapping",
                  "evaluation", "report", "run"):
        assert any(name.startswith(stage) for name in runs), f"no TensorBoard run for {stage}: {runs}"
    full = _scalars(next(folder.glob("full_CPT*")))
    steps = data["full_cpt"]["train"]["steps"]
    assert [step for step, _ in full["loss"]] == list(range(1, steps + 1))  # a point every step
    assert {"lr", "grad_norm", "tokens_per_s"} <= set(full)
    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "cache", create=False)
    logged = _scalars(folder / "evaluation")
    units = [m for m in store.list("eval")]
    assert units
    for unit in units:
        scores = store.open((unit.kind, unit.key)).read_json("scores.json")
        tag = f"accuracy/{scores['benchmark']}/{scores['language']}/{scores['model']}"
        assert logged[tag] == [(0, pytest.approx(scores["accuracy"]))], tag
        assert f"adjusted/{scores['benchmark']}/{scores['language']}/{scores['model']}" in logged
    _check_mlflow(folder / "mlflow.db", steps, store, units)
    _check_wandb(folder, steps, store, units)


def _check_wandb(folder, steps: int, store: ArtifactStore, units) -> None:
    """The same run in W&B's offline files: a project named by the run, a run per stage, the units in one."""
    from tests.flows.wandb_runs import runs

    logged = runs(folder)
    full = next((run for name, run in logged.items() if name.startswith("full CPT")), None)
    assert full is not None and full["project"] == "tiny", sorted(logged)
    assert sorted(full["history"]) == list(range(1, steps + 1))
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(full["history"][steps])
    evaluation = logged["evaluation"]["history"][0]
    for unit in units:
        scores = store.open((unit.kind, unit.key)).read_json("scores.json")
        tag = f"accuracy/{scores['benchmark']}/{scores['language']}/{scores['model']}"
        assert evaluation[tag] == pytest.approx(scores["accuracy"]), tag


def _check_mlflow(db, steps: int, store: ArtifactStore, units) -> None:
    """The same run read back with MLflow's own client: an experiment named by the run, a run per stage."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("tiny")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id], max_results=1000)}
    full = next((r for name, r in runs.items() if name.startswith("full CPT")), None)
    assert full is not None, sorted(runs)
    loss = client.get_metric_history(full.info.run_id, "loss")
    assert sorted(m.step for m in loss) == list(range(1, steps + 1))
    assert {"lr", "grad_norm", "tokens_per_s"} <= set(full.data.metrics)
    evaluation = runs["evaluation"].data.metrics  # one run of every unit (the units ran in one process)
    for unit in units:
        scores = store.open((unit.kind, unit.key)).read_json("scores.json")
        tag = f"accuracy/{scores['benchmark']}/{scores['language']}/{scores['model']}"
        assert evaluation[tag] == pytest.approx(scores["accuracy"]), tag
    configuration = Path(client.download_artifacts(runs["run"].info.run_id, "configuration.txt")).read_text()
    assert '"name": "tiny"' in configuration


def test_a_failing_logger_is_reported_once_and_never_fails_the_stage(caplog):
    class Broken:
        calls = 0

        def log(self, metrics, step):
            Broken.calls += 1
            raise OSError("disk full")

        def log_text(self, tag, text):
            raise OSError("disk full")

        def close(self):
            pass

    class Fine:
        def __init__(self):
            self.seen = []

        def log(self, metrics, step):
            self.seen.append(step)

        def log_text(self, tag, text):
            pass

        def close(self):
            pass

    fine = Fine()
    trackers = Trackers([Broken(), fine])
    for step in range(3):
        trackers.log({"loss": 1.0}, step)
    trackers.close()
    assert Broken.calls == 1 and fine.seen == [0, 1, 2]
    assert caplog.text.count("tracking: Broken failed") == 1


def test_wandb_runs_are_offline_files_read_back_with_wandbs_own_records(tmp_path):
    """A stage's run (named with its key: finished when the stage closes) and the shared evaluation run (finished
    when the process exits), written by the logger in a process of its own and read back from the run files."""
    from tests.flows.wandb_runs import runs

    script = f"""
from linguaforge.pipelines.tracking import open_trackers
stage = open_trackers(["wandb"], {str(tmp_path)!r}, "full_cpt-0123abcd", experiment="tiny")
for step in (1, 2, 3):
    stage.log({{"loss": 1.0 / step, "lr": 0.1, "flag": True}}, step)
stage.log_text("configuration", "name: tiny")
stage.close()
for unit in ("de", "sw"):
    evaluation = open_trackers(["wandb"], {str(tmp_path)!r}, "evaluation", experiment="tiny")
    evaluation.log({{f"accuracy/mgsm/{{unit}}/base": 0.25}}, 0)
    evaluation.close()
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = runs(tmp_path)
    assert set(logged) == {"full_cpt-0123abcd", "evaluation"}  # two runs: the shared one reused, not one per unit
    stage = logged["full_cpt-0123abcd"]
    assert stage["project"] == "tiny"
    assert {step: row["loss"] for step, row in stage["history"].items()} == {1: 1.0, 2: 0.5, 3: pytest.approx(1 / 3)}
    assert "flag" not in stage["history"][1] and "configuration.txt" in stage["files"]
    assert logged["evaluation"]["history"][0] == {"accuracy/mgsm/de/base": 0.25, "accuracy/mgsm/sw/base": 0.25}
