"""Stopping cleanly: a Ctrl-C or SIGTERM becomes a stop request that every long loop honours at its next step.

The command line sets `STOP` from its signal handler; a training step, a decoding step, a corpus batch or a merged
tensor calls `check_stop()` and raises `Interrupted`, which unwinds through the stage so that nothing half-made is
committed. Child processes (training workers) are started to die with their parent, and are registered so that
a stop terminates them at once instead of waiting for their next line of output.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable

STOP = threading.Event()
_listeners: list[Callable[[int], None]] = []
_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()
_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork: nothing to look up in a child
except (AttributeError, OSError):  # not Linux
    _prctl = None


class Interrupted(KeyboardInterrupt):
    """A stop request reached a loop. A BaseException, as KeyboardInterrupt is: no `except Exception` records it
    as a failure or retries it."""


def check_stop(where: str = "") -> None:
    """Raise Interrupted if a stop was requested (cheap: one Event lookup)."""
    if STOP.is_set():
        raise Interrupted(f"stopped on request{f' ({where})' if where else ''}")


def request_stop(signum: int) -> None:
    """Ask every loop to stop, and tell the listeners (the command line's watchdog and message)."""
    first = not STOP.is_set()
    STOP.set()
    terminate_children()
    if first:
        for listener in list(_listeners):
            listener(signum)


def on_stop_request(listener: Callable[[int], None]) -> None:
    _listeners.append(listener)


def chain_signal(signum: int) -> None:
    """Make `signum` request a stop before whatever handler is installed now runs (Prefect's flow engine installs
    its own SIGTERM handler while a flow runs; this keeps it, and first tells the loops). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signum)

    def handler(received, frame):
        request_stop(received)
        if callable(previous):
            previous(received, frame)
        elif previous == signal.SIG_DFL:
            raise Interrupted(f"signal {received}")

    signal.signal(signum, handler)


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel send `sig` to the child when the thread that started it ends (the
    parent killed with SIGKILL included): no process outlives the command that made it. None off Linux."""
    if _prctl is None:
        return None

    def arm() -> None:
        _prctl(_PR_SET_PDEATHSIG, sig)

    return arm


def register_child(proc: subprocess.Popen) -> None:
    with _children_lock:
        _children.add(proc)


def unregister_child(proc: subprocess.Popen) -> None:
    with _children_lock:
        _children.discard(proc)


def terminate_children() -> None:
    """SIGTERM to every registered child (each in a process group of its own: its own children too)."""
    with _children_lock:
        children = list(_children)
    for proc in children:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                proc.terminate()
