"""Experiment tracking, as torchtune's metric loggers have it: every training stage logs its loss, learning rate,
throughput, gradient norm (and dev metrics) every step; every evaluation unit its accuracy, chance level and
interval; the run its configuration. TensorBoard is on by default, under the run's folder; each stage is a run of
its own, named by stage and artifact key, so that a sweep compares in one TensorBoard view.

A logger never fails a stage: the first error it raises is reported once, and it logs nothing more.
"""

from __future__ import annotations

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


def open_trackers(kinds: Sequence[str], folder: str | Path, run: str) -> Trackers:
    """The configured loggers for one stage (`run`: its name, e.g. "masked_cpt-de-3f2a9c1b")."""
    loggers: list[MetricLogger] = []
    for kind in kinds:
        if kind == "tensorboard":
            loggers.append(TensorBoardLogger(Path(folder), run))
        else:
            raise ValueError(f"tracking: unknown logger {kind!r}")
    return Trackers(loggers)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", name).strip("_") or "run"
