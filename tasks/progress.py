"""Progress of long work, shown in three places at once: the Prefect UI (a progress artifact and log
lines), and, when the CLI runs the flow in-process, a rich progress bar in the terminal."""

from __future__ import annotations

import threading
import time
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

_console_lock = threading.Lock()
_console_progress = None  # a rich.progress.Progress set by the CLI while it runs a flow


def attach_console(progress) -> None:
    global _console_progress
    with _console_lock:
        _console_progress = progress


def _fmt(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


class StageProgress:
    """A `progress(done, total, metrics)` callback for pipelines functions; throttled to ~1 update/s."""

    def __init__(self, label: str, total: int | None = None, every_seconds: float = 1.0):
        self.label, self.total, self.every = label, total, every_seconds
        self.logger = get_run_logger()
        self._last = 0.0
        self._artifact_id = create_progress_artifact(0.0, description=label)
        self._console_task = None
        with _console_lock:
            if _console_progress is not None:
                self._console_task = _console_progress.add_task(label, total=total)

    def __call__(self, done: int, total: int, metrics: dict[str, Any] | None = None) -> None:
        total = total or self.total or 0
        now = time.monotonic()
        if now - self._last < self.every and done != total:
            return
        self._last = now
        percent = 100.0 * done / total if total else 0.0
        if total:
            update_progress_artifact(self._artifact_id, percent)
        text = _fmt(metrics or {})
        self.logger.info("%s: %d/%s %s", self.label, done, total or "?", text)
        with _console_lock:
            if _console_progress is not None and self._console_task is not None:
                _console_progress.update(self._console_task, completed=done, total=total or None,
                                         description=f"{self.label} {text}"[:90])

    def close(self) -> None:
        if self.total:
            update_progress_artifact(self._artifact_id, 100.0)
        with _console_lock:
            if _console_progress is not None and self._console_task is not None:
                _console_progress.remove_task(self._console_task)
                self._console_task = None

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
