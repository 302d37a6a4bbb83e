"""Ctrl-C and SIGTERM on a linguaforge command: it stops within seconds, leaves nothing half-written, and says so.

The first signal asks every loop to stop (pipelines/interrupt.py: a training step, a decoding step, a merged
tensor raises `Interrupted`), terminates training workers, and unwinds the main thread, so that a stage raises
before it commits. The command then runs its clean-ups (a run: mark its Prefect flow runs Cancelled, flush the
logs, stop its temporary server) and exits 130 (SIGINT) or 143 (SIGTERM). If unwinding takes longer than
GRACE_S, or a second signal comes, the clean-ups run at once and the process ends there.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

from linguaforge.pipelines.interrupt import chain_signal, on_stop_request, request_stop

GRACE_S = 20.0
_flow_runs: list[str] = []


def remember_flow_run() -> None:
    """Called at the start of a flow: the run to mark Cancelled if the command is stopped."""
    from prefect.context import FlowRunContext

    if (ctx := FlowRunContext.get()) and ctx.flow_run:
        _flow_runs.append(str(ctx.flow_run.id))
    for signum in (signal.SIGINT, signal.SIGTERM):  # Prefect's own SIGTERM handler is kept, after ours
        chain_signal(signum)


def cancel_flow_runs(reason: str) -> None:
    """Mark the flow runs of this process Cancelled (Prefect marks an interrupted run Crashed)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        for run_id in _flow_runs:
            client.set_flow_run_state(run_id, Cancelled(message=reason), force=True)


def flush_prefect_logs(timeout_s: float = 5.0) -> None:
    """Send the log and event batches still queued while the API is up (at exit it may be gone)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s)


class StopOnSignals:
    """`with StopOnSignals(say) as stopper:` the command runs; `stopper.cleanups` run on every stop."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.signum: int | None = None
        self.cleanups: list[Callable[[], None]] = []
        self._previous: dict[int, object] = {}
        self._delivered = False
        self._cleaned = threading.Lock()

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def __enter__(self) -> StopOnSignals:
        on_stop_request(self._announce)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self._delivered:  # a second signal: end at once
            self.finish_now()
        self._delivered = True  # (a flow's chained handler may have announced this one already)
        request_stop(signum)
        raise KeyboardInterrupt

    def _announce(self, signum: int) -> None:
        """The first stop request, whoever saw the signal (this handler, or a flow's chained one)."""
        self.signum = signum
        self.say(f"{signal.Signals(signum).name}: stopping (running stages end at their next step, nothing "
                 f"half-made is kept); {'Ctrl-C' if signum == signal.SIGINT else 'SIGTERM'} again to end at once")
        watchdog = threading.Timer(GRACE_S, self._overdue)
        watchdog.daemon = True
        watchdog.start()

    def _overdue(self) -> None:
        self.say(f"still stopping after {GRACE_S:.0f} s: ending now")
        self.finish_now()

    def run_cleanups(self) -> None:
        """Each clean-up once, whichever path gets here first; one failing does not skip the others."""
        if not self._cleaned.acquire(blocking=False):
            return
        for cleanup in self.cleanups:
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 - a clean-up is best effort: say what failed, go on
                self.say(f"while stopping: {type(exc).__name__}: {exc}")

    def finish_now(self) -> None:
        runner = threading.Thread(target=self.run_cleanups, daemon=True)
        runner.start()
        runner.join(timeout=10)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(self.exit_code)
