"""Experiment tracking: after a run, TensorBoard event files exist for every training stage and for the evaluation,
and TensorBoard's own reader gives back a stage's loss curve (one point a step) and every unit's accuracy as the
store holds it; a logger that fails never fails a stage."""

from __future__ import annotations

import json
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
    data["tracking"] = {"loggers": ["tensorboard", "mlflow"]}
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
