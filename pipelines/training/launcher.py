"""Several training processes on this node under torchrun (one per GPU), and the protocol between a worker and the
process that launched it: the flags that hand it its checkpoint area and ask for progress (`worker_flags` on one
side, `add_worker_flags` / `worker_checkpoints` / `worker_progress` on the other), and the lines by which rank 0
reports its progress."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from typing import Any

from linguaforge.pipelines.interrupt import check_stop, die_with_parent, register_child, unregister_child
from linguaforge.pipelines.training.loop import Progress

__all__ = ["PROGRESS_PREFIX", "Progress", "WorkersFailed", "add_worker_flags", "print_progress", "run_processes",
           "torchrun", "worker_checkpoints", "worker_flags", "worker_progress"]
PROGRESS_PREFIX = "LINGUAFORGE_PROGRESS "


def torchrun(processes: int, module: str, *args: str) -> list[str]:
    """The command that runs `python -m module args...` as `processes` ranks on this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", module, *args]


def run_processes(command: list[str], progress: Progress | None, gpus: list[int] | None = None) -> None:
    """Run the workers, forwarding their progress lines; on failure, raise with the output's tail. The workers
    live in a process group of their own, die with this process, and are terminated by a stop request; `gpus`:
    the node's GPUs they may use (the stage's GPU slots)."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
    tail: list[str] = []
    check_stop("before the training workers started")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM)) as proc:
        register_child(proc)
        try:
            for line in proc.stdout:
                if line.startswith(PROGRESS_PREFIX):
                    if progress is not None:
                        report = json.loads(line.removeprefix(PROGRESS_PREFIX))
                        progress(report["done"], report["total"], report["metrics"])
                else:
                    tail = (tail + [line])[-200:]
        finally:
            unregister_child(proc)
    check_stop("the training workers were terminated")
    if proc.returncode != 0:
        raise WorkersFailed(proc.returncode, "".join(tail))


class WorkersFailed(RuntimeError):
    """The training workers exited with an error; `output` is the tail of what they printed."""

    def __init__(self, returncode: int, output: str):
        super().__init__(f"training workers exited with {returncode}:\n{output}")
        self.returncode, self.output = returncode, output


def print_progress(done: int, total: int, metrics: dict[str, Any]) -> None:
    """A worker's progress callback: one line on stdout that run_processes reads back."""
    print(PROGRESS_PREFIX + json.dumps({"done": done, "total": total, "metrics": metrics}), flush=True)


def worker_flags(checkpoints) -> list[str]:
    """The flags that hand a worker its checkpoint area (if any) and ask rank 0 for progress lines."""
    flags = ["--report-progress"]
    if checkpoints is not None:
        flags += ["--store", checkpoints.store.handle(), "--kind", checkpoints.kind, "--key", checkpoints.key]
    return flags


def add_worker_flags(parser: argparse.ArgumentParser) -> None:
    """A worker's side of `worker_flags`."""
    parser.add_argument("--store", help="the store's handle, for the checkpoint area")
    parser.add_argument("--kind")
    parser.add_argument("--key")
    parser.add_argument("--report-progress", action="store_true", help="print progress lines for the parent")


def worker_checkpoints(args: argparse.Namespace):
    """The checkpoint area `worker_flags` named, or None."""
    if not args.store:
        return None
    from linguaforge.storage import ArtifactStore

    return ArtifactStore.from_handle(args.store).checkpoints(args.kind, args.key)


def worker_progress(args: argparse.Namespace) -> Progress | None:
    """Progress lines from rank 0 when the parent asked for them."""
    return print_progress if args.report_progress and int(os.environ.get("RANK", "0")) == 0 else None
