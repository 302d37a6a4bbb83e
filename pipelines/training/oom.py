"""Training out of memory: never retried unchanged. The micro-batch is halved and the accumulation doubled, so that
every optimizer step still takes the same samples (the same data order, the same tokens per step), and training
resumes from the last complete checkpoint; at micro-batch 1 it stops with a message naming the stage, the model
and the memory asked for. Each fallback is logged and recorded in the stage's summary (`oom_fallbacks`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from linguaforge.pipelines.memory import OutOfMemory, free_cached_memory, is_oom, memory_asked

log = logging.getLogger("linguaforge.training")
T = TypeVar("T")
S = TypeVar("S")  # a settings object with a micro_batch_size


def with_oom_fallback(run: Callable[[S], T], settings: S, label: str, halve: Callable[[S], S | None],
                      fallbacks: list[dict[str, Any]]) -> T:
    """`run(settings)`; after an out-of-memory, `run(halve(settings))` (which resumes from the checkpoints the
    first attempt wrote), until it fits or the micro-batch is 1. `fallbacks` receives one record per halving."""
    while True:
        try:
            return run(settings)
        except BaseException as exc:
            if not is_oom(exc):
                raise
            free_cached_memory()
            smaller = halve(settings)
            if smaller is None:
                raise OutOfMemory(
                    f"{label}: out of memory at micro-batch {settings.micro_batch_size} ({memory_asked(exc)}); "
                    "nothing smaller is left: turn on gradient_checkpointing, shorten block_size, add GPUs "
                    "(processes) or use ZeRO-3 (deepspeed_config), and run again") from None
            fallbacks.append({"from_micro_batch": settings.micro_batch_size,
                              "to_micro_batch": smaller.micro_batch_size, "error": memory_asked(exc)})
            log.warning("%s: out of memory at micro-batch %d (%s); resuming from the last checkpoint at micro-batch "
                        "%d with %dx the accumulation (the same samples per step)", label, settings.micro_batch_size,
                        memory_asked(exc), smaller.micro_batch_size,
                        settings.micro_batch_size // smaller.micro_batch_size)
            settings = smaller
