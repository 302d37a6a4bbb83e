"""Progress of long work, shown in three places at once: the Prefect UI (a progress artifact and log
lines), and, when the CLI runs the flow in-process, a rich progress bar in the terminal."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

_console_lock = threading.Lock()
_console_progress = None  # the CLI's live display (flows/live.py: RunDisplay) while it runs a flow


def attach_console(progress) -> None:
    """`progress` has rich.progress.Progress's add_task / update / remove_task, and may have
    stage_finished(stage, reused) to count the run's stages."""
    global _console_progress
    with _console_lock:
        _console_progress = progress


def stage_finished(stage: str, reused: bool) -> None:
    """A stage committed its artifact or found it committed: one more done on the live display."""
    with _console_lock:
        if _console_progress is not None and hasattr(_console_progress, "stage_finished"):
            _console_progress.stage_finished(stage, reused)


# what the terminal's bar shows of a stage's metrics, and how (the Prefect log and UI get them all)
TERMINAL_METRICS = {"loss": "loss {:.3f}", "dev_ppl": "ppl {:.2f}", "accuracy": "acc {:.2f}",
                    "tokens_per_s": "{:.0f} tok/s"}


def _terminal(metrics: dict[str, Any]) -> str:
    return "  ".join(form.format(metrics[k]) for k, form in TERMINAL_METRICS.items()
                     if isinstance(metrics.get(k), int | float))


def _fmt(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def ui_artifact(publish: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call one of Prefect's artifact functions, best effort. The UI's artifacts show what the store already
    holds; a Prefect server that cannot take one (seen: HTTP 500, "database is locked", on a loaded SQLite
    server) must not fail, and so re-run, the stage that computed it. Returns None when it did not publish."""
    try:
        return publish(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - whatever the API raised, the stage's result stands
        get_run_logger().warning("Prefect UI artifact not published (%s: %s); the stage goes on",
                                 type(exc).__name__, str(exc)[:200])
        return None


class StageProgress:
    """A `progress(done, total, metrics)` callback for pipelines functions; throttled to ~1 update/s."""

    def __init__(self, label: str, total: int | None = None, every_seconds: float = 1.0, tracker=None):
        """`tracker`: the stage's metric loggers (pipelines/tracking.py), given every step's metrics unthrottled."""
        self.label, self.total, self.every, self.tracker = label, total, every_seconds, tracker
        self.logger = get_run_logger()
        self._last = 0.0
        self._artifact_id = ui_artifact(create_progress_artifact, 0.0, description=label)
        self._console_task = None
        with _console_lock:
            if _console_progress is not None:
                self._console_task = _console_progress.add_task(label, total=total)

    def __call__(self, done: int, total: int, metrics: dict[str, Any] | None = None) -> None:
        total = total or self.total or 0
        if self.tracker is not None and metrics:
            self.tracker.log(metrics, done)
        now = time.monotonic()
        if now - self._last < self.every and done != total:
            return
        self._last = now
        percent = 100.0 * done / total if total else 0.0
        if total and self._artifact_id is not None:
            ui_artifact(update_progress_artifact, self._artifact_id, percent)
        text = _fmt(metrics or {})
        self.logger.info("%s: %d/%s %s", self.label, done, total or "?", text)
        with _console_lock:
            if _console_progress is not None and self._console_task is not None:
                shown = _terminal(metrics or {})
                _console_progress.update(self._console_task, completed=done, total=total or None,
                                         description=f"{self.label} {shown}".strip())

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
        if self.total and self._artifact_id is not None:
            ui_artifact(update_progress_artifact, self._artifact_id, 100.0)
        with _console_lock:
            if _console_progress is not None and self._console_task is not None:
                _console_progress.remove_task(self._console_task)
                self._console_task = None

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
