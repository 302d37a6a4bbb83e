"""Experiment tracking, as torchtune's metric loggers have it: every training stage logs its loss, learning rate,
throughput, gradient norm (and dev metrics) every step; every evaluation unit its accuracy, chance level and
interval; the run its configuration. TensorBoard is on by default, under the run's folder; MLflow and W&B on request.
Each stage is a run of its own, named by stage and artifact key, so that a sweep compares in one TensorBoard, MLflow or
W&B view.

A logger never fails a stage: the first error it raises is reported once, and it logs nothing more.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("linguaforge.tracking")


class MetricLogger(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...
    def log_text(self, tag: str, text: str) -> None: ...
    def close(self) -> None: ...


class TensorBoardLogger:
    """Scalars and text into `<folder>/<run>/events.out.tfevents.*` (opened on first use)."""

    def __init__(self, folder: Path, run: str):
        self.path = Path(folder) / _safe(run)
        self._writer = None

    def _open(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path))
        return self._writer

    def log(self, metrics: dict[str, Any], step: int) -> None:
        writer = self._open()
        for name, value in metrics.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(name, value, step)

    def log_text(self, tag: str, text: str) -> None:
        self._open().add_text(tag, f"```\n{text}\n```")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class MLflowLogger:
    """Each stage a run of the MLflow experiment named by the linguaforge run: metrics by step, text as artifacts.
    The tracking URI is MLflow's own MLFLOW_TRACKING_URI when set, else a SQLite store in the tracking folder
    (MLflow has retired its plain-file store); `mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db`."""

    def __init__(self, folder: Path, experiment: str, run: str):
        import os

        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"
        self.folder, self.experiment, self.run = Path(folder), experiment, run
        self._client, self._run_id = None, None

    def _open(self):
        if self._run_id is None:
            self._client = _mlflow_client(self.uri)
            with _MLFLOW_LOCK:  # two stages may create the experiment at once
                found = self._client.get_experiment_by_name(self.experiment)
                experiment = found.experiment_id if found else self._client.create_experiment(
                    self.experiment, artifact_location=(self.folder / "mlflow-artifacts").resolve().as_uri())
                # a name without a key ("evaluation": every unit's accuracy) is one run per process, as in TensorBoard
                key = (self.uri, experiment, self.run)
                if key not in _mlflow_runs:
                    _mlflow_runs[key] = self._client.create_run(experiment, run_name=self.run).info.run_id
                self._run_id = _mlflow_runs[key]
        return self._client

    def log(self, metrics: dict[str, Any], step: int) -> None:
        import time

        from mlflow.entities import Metric

        client, now = self._open(), int(time.time() * 1000)
        numbers = [Metric(name, float(value), now, step) for name, value in metrics.items()
                   if isinstance(value, int | float) and not isinstance(value, bool)]
        client.log_batch(self._run_id, metrics=numbers)

    def log_text(self, tag: str, text: str) -> None:
        self._open().log_text(self._run_id, text, f"{_safe(tag)}.txt")

    def close(self) -> None:
        if self._run_id is not None:
            self._client.set_terminated(self._run_id)
            self._run_id = None


class WandbLogger:
    """Each stage a W&B run in the project named by the linguaforge run, written offline under the tracking folder
    unless WANDB_MODE says otherwise (`wandb sync <folder>/wandb/offline-run-*` uploads them later): metrics by step,
    text as files of the run. A name without a key ("evaluation": every unit's accuracy) is one run per process, as
    in TensorBoard; it is finished when the process exits, the others when their stage closes its loggers."""

    def __init__(self, folder: Path, experiment: str, run: str):
        self.folder, self.experiment, self.run = Path(folder), experiment, run
        self._run = None

    def _open(self):
        if self._run is None:
            import os

            import wandb

            with _WANDB_LOCK:  # one init at a time: stages open their runs from several threads
                key = (str(self.folder.resolve()), self.experiment, self.run)
                if key not in _wandb_runs:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    _wandb_runs[key] = wandb.init(
                        project=self.experiment, name=self.run, dir=str(self.folder), reinit="create_new",
                        mode=os.environ.get("WANDB_MODE", "offline"),
                        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
                self._run = _wandb_runs[key]
        return self._run

    def log(self, metrics: dict[str, Any], step: int) -> None:
        numbers = {name: value for name, value in metrics.items()
                   if isinstance(value, int | float) and not isinstance(value, bool)}
        self._open().log(numbers, step=step)

    def log_text(self, tag: str, text: str) -> None:
        run = self._open()
        path = Path(run.dir) / f"{_safe(tag)}.txt"
        path.write_text(text, encoding="utf-8")
        run.save(str(path), base_path=run.dir, policy="now")

    def close(self) -> None:
        if self._run is not None and _KEYED.search(self.run):
            with _WANDB_LOCK:
                _wandb_runs.pop((str(self.folder.resolve()), self.experiment, self.run), None)
            self._run.finish()
        self._run = None


_WANDB_LOCK = threading.Lock()
_wandb_runs: dict[tuple[str, str, str], Any] = {}
_KEYED = re.compile(r"-[0-9a-f]{8}$")  # a stage's run name ends in its artifact key (RunContext.tracker)


@atexit.register
def _finish_wandb_runs() -> None:
    for run in list(_wandb_runs.values()):
        run.finish()
    _wandb_runs.clear()


_MLFLOW_LOCK = threading.Lock()
_mlflow_clients: dict[str, Any] = {}
_mlflow_runs: dict[tuple[str, str, str], str] = {}


def _mlflow_client(uri: str):
    """One client per store and process: the first one creates the SQLite tables, which must not race."""
    with _MLFLOW_LOCK:
        if uri not in _mlflow_clients:
            from mlflow.tracking import MlflowClient

            if uri.startswith("sqlite:///"):
                Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            for noisy in ("mlflow.store.db.utils", "alembic"):  # table creation talks over the live display
                logging.getLogger(noisy).setLevel(logging.WARNING)
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # creates the tables now, under the lock
            _mlflow_clients[uri] = client
        return _mlflow_clients[uri]


class Trackers:
    """Several loggers as one; each one that fails is reported once and then left out."""

    def __init__(self, loggers: Sequence[MetricLogger]):
        self.loggers = list(loggers)
        self._lock = threading.Lock()

    def _each(self, call: str, *args: Any) -> None:
        with self._lock:
            for logger in list(self.loggers):
                try:
                    getattr(logger, call)(*args)
                except Exception as exc:  # noqa: BLE001 - tracking is never worth a stage
                    log.warning("tracking: %s failed (%s: %s); it logs nothing more in this stage",
                                type(logger).__name__, type(exc).__name__, exc)
                    self.loggers.remove(logger)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._each("log", metrics, step)

    def log_text(self, tag: str, text: str) -> None:
        self._each("log_text", tag, text)

    def close(self) -> None:
        self._each("close")


def open_trackers(kinds: Sequence[str], folder: str | Path, run: str, experiment: str = "linguaforge") -> Trackers:
    """The configured loggers for one stage (`run`: its name, e.g. "masked_cpt-de-3f2a9c1b"; `experiment`: the
    linguaforge run's name, which groups its stages where a tracker has experiments)."""
    loggers: list[MetricLogger] = []
    for kind in kinds:
        if kind == "tensorboard":
            loggers.append(TensorBoardLogger(Path(folder), run))
        elif kind == "mlflow":
            loggers.append(MLflowLogger(Path(folder), experiment, run))
        elif kind == "wandb":
            loggers.append(WandbLogger(Path(folder), experiment, run))
        else:
            raise ValueError(f"tracking: unknown logger {kind!r}")
    return Trackers(loggers)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", name).strip("_") or "run"
