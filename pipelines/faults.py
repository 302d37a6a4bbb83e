"""Fault points: places where the fault tests kill the process, to show that a kill there leaves nothing broken.

`LINGUAFORGE_KILL_AT=<prefix>#<n>` SIGKILLs this process at the n-th fault point (counted from 1) whose name
starts with <prefix>; `LINGUAFORGE_FAULT_LOG=<file>` appends the name of every point reached, so a test can
list the points of a clean run and then kill at each one. Unset (always, outside tests), a point costs a
dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_counts: dict[str, int] = {}
_lock = threading.Lock()


def fault_point(name: str) -> None:
    log, kill_at = os.environ.get("LINGUAFORGE_FAULT_LOG"), os.environ.get("LINGUAFORGE_KILL_AT")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    if not kill_at:
        return
    prefix, _, nth = kill_at.rpartition("#")
    if not name.startswith(prefix):
        return
    with _lock:
        _counts[prefix] = _counts.get(prefix, 0) + 1
        reached = _counts[prefix] == int(nth)
    if reached:
        os.kill(os.getpid(), signal.SIGKILL)
