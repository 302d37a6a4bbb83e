"""Data-parallel evaluation: a benchmark's items shared out over one worker process per device.

`ParallelGenerator` is a TextGenerator and OptionScorer like any other: each call cuts its items into as many
contiguous shards as there are workers, each worker (a process holding the model on its device, `worker.py`)
decodes its shard, and the outputs come back in item order. Outputs do not depend on which batch or process a
row is in (greedy decoding and option scoring are row by row), so the records are those of one process.

Workers speak JSON lines over their stdin and stdout (no pickle), live in a process group of their own, die with
this process, and are terminated by a stop request.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Sequence

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.generation.base import GenerationItem
from linguaforge.pipelines.interrupt import check_stop, die_with_parent, register_child, unregister_child

ITEM_FIELDS = ("id", "benchmark", "language", "prompt", "source_text", "continuations")


class ParallelGenerator:
    def __init__(self, model: str, devices: Sequence[str], dtype: str = "float32", batch_size: int | str = "auto",
                 revision: str | None = None):
        if len(devices) < 1:
            raise InputError("--devices names no device")
        self.devices = list(devices)
        self.batch_size = batch_size if isinstance(batch_size, int) else 8  # what the evaluation's progress chunks by
        self.workers: list[subprocess.Popen] = []
        try:
            for device in self.devices:
                command = [sys.executable, "-m", "linguaforge.pipelines.generation.worker", "--model", model,
                           "--device", device, "--dtype", dtype, "--batch-size", str(batch_size),
                           "--workers", str(len(self.devices))] + (["--revision", revision] if revision else [])
                worker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                          start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
                register_child(worker)
                self.workers.append(worker)
            for worker, device in zip(self.workers, self.devices, strict=True):
                self._answer(worker, device)  # {"ready": true} once its model is loaded
        except BaseException:
            self.close()
            raise

    def generate(self, items: Sequence[GenerationItem], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        return self._sharded(items, {"op": "generate", "max_new_tokens": max_new_tokens, "stop": list(stop)})

    def option_logprobs(self, items: Sequence[GenerationItem]) -> list[list[float]]:
        return self._sharded(items, {"op": "option_logprobs"})

    def _sharded(self, items: Sequence[GenerationItem], request: dict) -> list:
        check_stop("evaluating")
        size = -(-len(items) // len(self.workers))
        shards = [items[s: s + size] for s in range(0, len(items), size)]
        busy = list(zip(self.workers, self.devices, shards, strict=False))
        for worker, _, shard in busy:  # every worker gets its shard before any answer is awaited
            body = request | {"items": [{f: getattr(it, f) for f in ITEM_FIELDS} for it in shard]}
            worker.stdin.write(json.dumps(body, ensure_ascii=False) + "\n")
            worker.stdin.flush()
        return [row for worker, device, _ in busy for row in self._answer(worker, device)["result"]]

    @staticmethod
    def _answer(worker: subprocess.Popen, device: str) -> dict:
        line = worker.stdout.readline()
        if not line:
            check_stop("evaluating")
            raise RuntimeError(f"the evaluation worker on {device} exited with {worker.wait()} (its error is above)")
        answer = json.loads(line)
        if "error" in answer:
            raise InputError(f"evaluation worker on {device}: {answer['error']}")
        return answer

    def close(self) -> None:
        for worker in self.workers:
            unregister_child(worker)
            if worker.poll() is None:
                try:
                    worker.stdin.write(json.dumps({"op": "exit"}) + "\n")
                    worker.stdin.flush()
                    worker.wait(timeout=30)
                except (OSError, subprocess.TimeoutExpired):
                    worker.kill()
                    worker.wait()

    def __enter__(self) -> ParallelGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
