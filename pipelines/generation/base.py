"""What every generator shares, whatever its model (a plain causal LM, a MindMerger encoder + mapping + LLM):
the protocols the evaluation drives, stop strings, and batching that survives running out of memory.

A generator batches its items longest first (similar lengths share a batch, and a batch too big for memory
fails at once, not at the end). A batch that runs out of memory is halved and finished, and the batch size
stays at what fit (pipelines/memory.py): outputs do not depend on the batch a row is in, so the scores are
those of a run at the smaller size. `batch_size="auto"` starts at AUTO_BATCH on a GPU (8 on the CPU, where
memory is rarely the limit and bigger batches are not faster) and finds the largest that fits that way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

import torch

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.memory import split_on_oom

AUTO_BATCH = 64
T = TypeVar("T")


class GenerationItem(Protocol):
    """What a generator reads of an item (pipelines/benchmarks/items.py's BenchmarkItem is one)."""

    id: str
    benchmark: str
    language: str
    prompt: str  # what a plain LLM reads
    source_text: str  # what a multilingual encoder reads (MindMerger)
    continuations: tuple[str, ...]  # the options whose log-likelihood is compared


@runtime_checkable
class TextGenerator(Protocol):
    def generate(self, items: Sequence[GenerationItem], max_new_tokens: int, stop: Sequence[str]) -> list[str]:
        """Greedy continuation of each item's prompt, cut at EOS and at the first stop string."""
        ...


@runtime_checkable
class OptionScorer(Protocol):
    def option_logprobs(self, items: Sequence[GenerationItem]) -> list[list[float]]:
        """Per item, the summed log-probability of each of `item.continuations` after `item.prompt`."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            pos = text.find(s)
            if pos != -1:
                cut = min(cut, pos)
    return text[:cut]


def stop_in_tail(tokenizer, tokens: list[int], stop: Sequence[str]) -> bool:
    """A stop string in the text so far: checked after every token, so only the tail can hold a new one, and only
    the last tokens are decoded (enough for the longest stop string at up to 4 bytes a character)."""
    tail = tokenizer.decode(tokens[-(4 * max(len(s) for s in stop) + 8):], skip_special_tokens=True,
                            clean_up_tokenization_spaces=False)
    return any(s in tail for s in stop)


def batch_size_for(batch_size: int | str, device: torch.device) -> int:
    """A number as it is; "auto": AUTO_BATCH on a GPU (halved on out-of-memory until it fits), 8 on the CPU."""
    if batch_size == "auto":
        return AUTO_BATCH if device.type == "cuda" else 8
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a whole number of at least 1 or 'auto', got {batch_size!r}")
    return batch_size


class BatchedGenerator:
    """The batching both generators share: `batch_size` rows at most, longest first, halved on out-of-memory."""

    batch_size: int
    device: torch.device

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped into batches, longest first."""
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        return [order[s: s + self.batch_size] for s in range(0, len(order), self.batch_size)]

    def _fitting(self, run: Callable[[list[int]], list[T]], batch: list[int], what: str) -> list[T]:
        """`run` over `batch` in pieces that fit: the current batch size (smaller once a batch ran out of memory),
        each piece halved again on out-of-memory."""
        pieces = [batch[s: s + self.batch_size] for s in range(0, len(batch), self.batch_size)]
        return [row for piece in pieces
                for row in split_on_oom(run, piece, f"{what} on {self.device}", self._shrink)]

    def _shrink(self, size: int) -> None:
        self.batch_size = min(self.batch_size, size)
