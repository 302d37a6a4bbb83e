"""The process's torch intra-op thread count, set for a block of work and restored after it."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def intra_op_threads(count: int):
    """Within the block, torch operations use `count` threads each. The setting is the process's (torch has no
    per-thread one); Python threads started inside the block take it as theirs."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)
