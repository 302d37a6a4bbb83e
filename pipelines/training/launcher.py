"""Several training processes on this node under torchrun (one per GPU), and the line protocol by which
rank 0 reports its progress to the process that launched it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from linguaforge.pipelines.training.loop import Progress

__all__ = ["PROGRESS_PREFIX", "Progress", "print_progress", "run_processes", "torchrun"]
PROGRESS_PREFIX = "LINGUAFORGE_PROGRESS "


def torchrun(processes: int, module: str, *args: str) -> list[str]:
    """The command that runs `python -m module args...` as `processes` ranks on this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", module, *args]


def run_processes(command: list[str], progress: Progress | None) -> None:
    """Run the workers, forwarding their progress lines; on failure, raise with the output's tail."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    tail: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            if line.startswith(PROGRESS_PREFIX):
                if progress is not None:
                    report = json.loads(line.removeprefix(PROGRESS_PREFIX))
                    progress(report["done"], report["total"], report["metrics"])
            else:
                tail = (tail + [line])[-200:]
    if proc.returncode != 0:
        raise RuntimeError(f"training workers exited with {proc.returncode}:\n{''.join(tail)}")


def print_progress(done: int, total: int, metrics: dict[str, Any]) -> None:
    """A worker's progress callback: one line on stdout that run_processes reads back."""
    print(PROGRESS_PREFIX + json.dumps({"done": done, "total": total, "metrics": metrics}), flush=True)
