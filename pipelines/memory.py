"""Out of memory, handled: never retried unchanged. What is done about it is the caller's (training halves its
micro-batch and resumes, evaluation halves its batch and continues); this module recognises it, frees what the
allocator caches, splits a batch, and words the error that ends the line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from linguaforge.pipelines.errors import InputError

log = logging.getLogger("linguaforge.memory")
T = TypeVar("T")
_OOM_TEXT = ("CUDA out of memory", "OutOfMemoryError", "out of memory", "CUBLAS_STATUS_ALLOC_FAILED")


class OutOfMemory(InputError):
    """Out of memory at the smallest size there is: a setting must change (fewer tokens per micro-batch, a shorter
    block, gradient checkpointing, more GPUs, ZeRO-3), which the message says. Never retried."""


def is_oom(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or a worker process's death by one (its output says so)."""
    import torch

    while exc is not None:
        if isinstance(exc, torch.OutOfMemoryError):
            return True
        output = getattr(exc, "output", None)  # training workers' failure carries their output
        if isinstance(output, str) and any(text in output for text in _OOM_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_cached_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def memory_asked(exc: BaseException) -> str:
    """The allocator's own words about what it was asked for (the first line of its message)."""
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def split_on_oom(run: Callable[[list[int]], list[T]], batch: list[int], what: str,
                 shrink: Callable[[int], None] | None = None) -> list[T]:
    """`run(batch)`, and on out-of-memory the same on each half, recursively (the outputs of a row do not depend
    on its batch: greedy decoding and option scoring are row by row); `shrink(size)` is told the size that fit, so
    the next batches start there. One row that does not fit is an OutOfMemory."""
    try:
        return run(batch)
    except BaseException as exc:
        if not is_oom(exc):
            raise
        free_cached_memory()
        if len(batch) == 1:
            raise OutOfMemory(f"{what}: out of memory with a single item ({memory_asked(exc)}); use a device with "
                              "more memory, a smaller dtype, or fewer new tokens") from None
        half = len(batch) // 2
        log.warning("%s: out of memory at batch size %d; halving it to %d and going on", what, len(batch), half)
        if shrink is not None:
            shrink(half)
    return split_on_oom(run, batch[:half], what, shrink) + split_on_oom(run, batch[half:], what, shrink)
