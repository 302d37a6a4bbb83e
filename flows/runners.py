"""Where a flow's fan-out runs: threads in the flow's process (the default), or a Dask cluster, chosen by the run
configuration (`orchestration.runner`).

Prefect fixes a flow's task runner when the flow is defined, before its parameters are known; so every linguaforge
flow is defined with `ChosenTaskRunner`, which runs on threads until the flow's first line calls
`choose_task_runner(config.orchestration)`, and from then on hands every submission to the runner the
configuration names: a pool of at most `max_parallel` threads, or the Dask cluster. This works however the flow
was started: the CLI, a deployment triggered from the UI, or a schedule.

Stages exchange only artifact references and read and write through the store, so any worker that reaches the
store can run any stage. A local cluster (no `dask_address`) is started once per process with
`dask_workers` worker processes and shared by the flows of the run; its workers are given this process's
Prefect API, so their task runs report to the same server.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import Any

import yaml
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from linguaforge.flows.live import LOG_FORMAT, RUN_LOG_ENV

_clusters: dict[int, Any] = {}  # workers → a LocalCluster of this process
_lock = threading.Lock()


class ChosenTaskRunner(TaskRunner):
    """Threads until `choose()`; then the configured runner, entered for the rest of the flow run."""

    def __init__(self) -> None:
        super().__init__()
        self._inner: TaskRunner | None = None
        self.kind = "threads"

    def duplicate(self) -> ChosenTaskRunner:
        return type(self)()

    def __enter__(self) -> ChosenTaskRunner:
        super().__enter__()
        self._inner = ThreadPoolTaskRunner().__enter__()
        return self

    def choose(self, runner: TaskRunner, kind: str) -> None:
        self._inner.__exit__(None, None, None)  # nothing was submitted yet: the flow chooses on its first line
        self._inner, self.kind = runner.__enter__(), kind

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        return self._inner.submit(task, parameters, wait_for, dependencies)

    def __exit__(self, *exc) -> None:
        if self._inner is not None:
            self._inner.__exit__(*exc)
        self._inner = None
        super().__exit__(*exc)


def choose_task_runner(orchestration) -> str:
    """The current flow run's fan-out goes to the runner `orchestration` names; returns its description."""
    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    if not isinstance(runner, ChosenTaskRunner):
        return "threads"
    if orchestration.runner == "threads":  # FIFO and submitted upstream first: a stage never waits on one queued
        runner.choose(ThreadPoolTaskRunner(max_workers=orchestration.max_parallel), "threads")  # behind it
        return f"threads (at most {orchestration.max_parallel} at once)"
    address = orchestration.dask_address or local_cluster(orchestration.dask_workers)
    runner.choose(_dask_runner(address), "dask")
    return f"dask at {address}"


def _dask_runner(address: str) -> TaskRunner:
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def local_cluster(workers: int) -> str:
    """The scheduler address of this process's local cluster of `workers` processes (one thread each: a stage
    trains with the torch threads of its own process), started on first use. Its workers report to this process's
    Prefect API, and log where this run logs (never on the terminal the live display is drawn on)."""
    with _lock:
        if workers not in _clusters:
            from distributed import LocalCluster
            from prefect.settings import PREFECT_API_URL

            env = {"PREFECT_API_URL": PREFECT_API_URL.value() or ""}
            if run_log := os.environ.get(RUN_LOG_ENV):
                env["PREFECT_LOGGING_SETTINGS_PATH"] = str(worker_logging(Path(run_log)))
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   host="127.0.0.1", env={k: v for k, v in env.items() if v})
            atexit.register(cluster.close)
            _clusters[workers] = cluster
        return _clusters[workers].scheduler_address


def worker_logging(run_log: Path) -> Path:
    """Prefect's own logging configuration with its console handler silenced and the run's log file added: a
    worker process reads it whenever Prefect (re)configures its logging. Written beside the run's log."""
    from prefect.logging.configuration import DEFAULT_LOGGING_SETTINGS_PATH

    config = yaml.safe_load(DEFAULT_LOGGING_SETTINGS_PATH.read_text())
    config["handlers"]["console"]["level"] = "CRITICAL"
    config["handlers"]["run_log"] = {"class": "logging.FileHandler", "filename": str(run_log), "encoding": "utf-8",
                                     "formatter": "run_log", "level": "DEBUG"}
    config["formatters"]["run_log"] = {"format": LOG_FORMAT, "datefmt": "%H:%M:%S"}
    config["loggers"]["prefect"]["handlers"] = ["run_log"]
    path = run_log.with_suffix(".workers-logging.yml")
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def check_runner_installed(runner: str) -> str | None:
    """None when `runner` can be used here, else what is missing (checked at preflight)."""
    if runner != "dask":
        return None
    try:
        import distributed  # noqa: F401
        import prefect_dask  # noqa: F401
    except ImportError as exc:
        return (f"orchestration.runner: dask needs prefect-dask and distributed ({exc.name} is not installed): "
                "pip install 'linguaforge[dask]'")
    return None
