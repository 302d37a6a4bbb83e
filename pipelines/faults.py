"""Fault points: places where the fault tests kill the process, to show that a kill there leaves nothing broken.

`LINGUAFORGE_KILL_AT=<prefix>#<n>` SIGKILLs this process at the n-th fault point (counted from 1) whose name
starts with <prefix>; `LINGUAFORGE_FAULT_LOG=<file>` appends the name of every point reached, so a test can
list the points of a clean run and then kill at each one; `LINGUAFORGE_GATE=<name>:<file>` holds the process at
point <name> (after writing <file>.reached) until <file> exists, so a test can act while it is there. Unset
(always, outside tests), a point costs two dictionary lookups.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from linguaforge.pipelines.interrupt import STOP, check_stop

_counts: dict[str, int] = {}
_lock = threading.Lock()


def fault_point(name: str) -> None:
    log, kill_at = os.environ.get("LINGUAFORGE_FAULT_LOG"), os.environ.get("LINGUAFORGE_KILL_AT")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    if gate := os.environ.get("LINGUAFORGE_GATE"):
        _hold(name, gate)
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


def _hold(name: str, gate: str) -> None:
    point, _, file = gate.partition(":")
    if name != point:
        return
    Path(file + ".reached").touch()
    while not Path(file).exists():  # a stop request opens every gate: the stop is what is being tested
        if STOP.wait(0.02):
            check_stop(f"held at {name}")


def simulated_oom(kind: str, size: int, step: int | None = None) -> None:
    """`LINGUAFORGE_OOM=<kind>:<largest size that fits>[@<first step>]` raises torch's real OutOfMemoryError when a
    `kind` batch ("train": a micro-batch's rows, "generate": a generation batch, "score": an option-scoring batch) is
    larger than that size (from that
    optimizer step on): the memory limit of a GPU, on any machine, for the tests of what is done about it."""
    spec = os.environ.get("LINGUAFORGE_OOM")
    if not spec or not spec.startswith(kind + ":"):
        return
    limit, _, first = spec.removeprefix(kind + ":").partition("@")
    if size > int(limit) and (not first or step is None or step >= int(first)):
        import torch

        raise torch.OutOfMemoryError(f"CUDA out of memory (simulated by LINGUAFORGE_OOM={spec}): a {kind} batch of "
                                     f"{size} does not fit; at most {limit} do")
