"""The live display of `linguaforge run`: the stages done out of the run's total with an ETA, a bar per
running stage with its last loss or items/s, and the Prefect log in a file of the run's folder (streamed
to the terminal as well with `-v`; warnings and errors always are)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from linguaforge.flows.config import RunConfig

LOG_FORMAT = "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s"


def run_log_path(cfg: RunConfig) -> Path:
    """<cache_dir>/../runs/<run name>/<start time>.log: beside the store's local cache, one file per run."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.store.cache_dir).expanduser().resolve().parent / "runs" / cfg.name / f"{stamp}.log"


def _prefect_console_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                                       if n.startswith("prefect"))]
    return [h for lg in loggers for h in lg.handlers if type(h).__name__ == "PrefectConsoleHandler"]


RUN_LOG_ENV = "LINGUAFORGE_RUN_LOG"


class _AboveTheDisplay(logging.Handler):
    """A log record printed above the live display, in a short form: time, level, task, message."""

    def __init__(self, console: Console):
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            when = time.strftime("%H:%M:%S", time.localtime(record.created))
            who = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None) or record.name
            style = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}.get(record.levelname, "dim")
            line = Text(f"{when} {record.levelname.lower()} ", style=style)
            line.append(f"{who}: {record.getMessage()}")
            self.console.print(line, highlight=False)
        except Exception:  # noqa: BLE001 - logging must never take the run down
            self.handleError(record)


class RunDisplay:
    """Used as a context manager around the flow call; the stage tasks report through tasks.progress."""

    def __init__(self, console: Console, cfg: RunConfig, verbose: bool = False, log_path: Path | None = None):
        # the run graph (and torch, which the tasks import) only once a run starts
        from linguaforge.flows.stages import planned_stages

        self.console, self.verbose = console, verbose
        self.total = sum(planned_stages(cfg).values())
        self.log_path = log_path or run_log_path(cfg)
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console, transient=True)
        self.done = self.ran = 0
        self._overall = None

    def __enter__(self) -> RunDisplay:
        self._route_logs()
        self.progress.__enter__()
        self._overall = self.progress.add_task("stages", total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        # the log stays routed until the process ends: the temporary Prefect server logs its stop at exit
        self.progress.__exit__(*exc)

    def _route_logs(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        os.environ[RUN_LOG_ENV] = str(self.log_path)  # a local Dask cluster's workers log there too (flows/runners.py)
        file = logging.FileHandler(self.log_path, encoding="utf-8")
        file.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        file.setLevel(logging.DEBUG)
        logging.getLogger("prefect").addHandler(file)  # flow and task run loggers propagate here
        # Prefect's console handler writes past the live display and tears it; log lines reach the terminal
        # through the display's console instead (warnings and errors, or everything with -v)
        for handler in _prefect_console_handlers():
            handler.setLevel(logging.CRITICAL + 1)
        above = _AboveTheDisplay(self.progress.console)
        above.setLevel(logging.INFO if self.verbose else logging.WARNING)
        logging.getLogger("prefect").addHandler(above)

    # -- what tasks.progress calls ------------------------------------------------------------------
    def add_task(self, description: str, total: int | None = None) -> int:
        return self.progress.add_task(description, total=total)

    def update(self, task_id: int, **fields) -> None:
        if "description" in fields:  # the bar keeps its room at any width: the text gives way
            room = max(16, self.console.width - 50)
            text = fields["description"]
            fields["description"] = text if len(text) <= room else text[: room - 1] + "…"
        self.progress.update(task_id, **fields)

    def remove_task(self, task_id: int) -> None:
        self.progress.remove_task(task_id)

    def stage_finished(self, stage: str, reused: bool) -> None:
        self.done += 1
        self.ran += not reused
        total = max(self.total, self.done)
        self.progress.update(self._overall, completed=self.done, total=total,
                             description=f"stages ({self.ran} ran, {self.done - self.ran} skipped)")
