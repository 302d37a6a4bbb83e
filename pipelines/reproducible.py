"""What keeps a stage's files reproducible: the same inputs give the same bytes, so the same digest and
the same keys downstream, on every run, resumed or not.

- `content_only`: a summary without how this execution went (wall time, throughput, the step it resumed
  from). Those go to the manifest's metrics, which the digest leaves out.
- `save_tensors`: safetensors writes its `__metadata__` map in hash order, which differs between
  processes, so identical tensors got different digests. This rewrites the header with sorted keys,
  padded to its original length; the tensor data that follows it is untouched.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

EXECUTION_FIELDS = frozenset({"seconds", "tokens_per_second", "items_per_second", "resumed_from"})


def content_only(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in EXECUTION_FIELDS}


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    save_file(tensors, str(path), metadata=metadata)
    canonicalise_header(path)


def canonicalise_header(path: str | Path) -> None:
    with open(path, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        # same entries, sorted: as long as or shorter than the original (no whitespace), then space-padded
        canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(canonical) > length:  # cannot happen for a header safetensors wrote compactly; keep it as is
            return
        f.seek(8)
        f.write(canonical.ljust(length, b" "))
