"""Streaming access to HF safetensors model folders: read one tensor at a time, write shards as you go.

Memory stays bounded by the tensors in hand (and one output shard), never the whole model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from linguaforge.pipelines.errors import InputError

INDEX_NAME = "model.safetensors.index.json"


class WeightReader:
    """Tensor-by-tensor reader over a single-file or sharded safetensors model folder."""

    def __init__(self, model_dir: str | Path):
        self.dir = Path(model_dir)
        index = self.dir / INDEX_NAME
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
        else:
            files = sorted(self.dir.glob("*.safetensors"))
            if not files:
                raise InputError(f"model {self.dir}: no .safetensors weights (an HF save_pretrained folder is expected)")
            weight_map = {}
            for f in files:
                with safe_open(str(f), framework="pt") as handle:
                    weight_map |= dict.fromkeys(handle.keys(), f.name)
        self.weight_map: dict[str, str] = weight_map
        self._handles: dict[str, object] = {}

    def _handle(self, name: str):
        # one shard mapped at a time: the pages of a memory-mapped file count as this process's memory
        # for as long as it stays open, so a reader going through a model in order holds one shard, not all
        file = self.weight_map[name]
        if file not in self._handles:
            self._handles.clear()
            self._handles[file] = safe_open(str(self.dir / file), framework="pt")
        return self._handles[file]

    def names(self) -> list[str]:
        return list(self.weight_map)

    def get(self, name: str) -> torch.Tensor:
        try:
            return self._handle(name).get_tensor(name)
        except KeyError:
            raise InputError(f"model {self.dir}: no tensor {name!r}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(name).get_slice(name).get_shape())

    def dtype(self, name: str) -> str:
        return self._handle(name).get_slice(name).get_dtype()

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: self.shape(n) for n in self.names()}


def copy_non_weight_files(src: str | Path, dst: str | Path) -> None:
    """config.json, generation_config.json, tokenizer files...: everything but the weights and their index."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name != INDEX_NAME and not path.name.startswith("."):
            shutil.copy2(path, dst / path.name)


class ShardedWriter:
    """Writes tensors into HF-style shards of at most `shard_bytes`, flushing each shard as it fills."""

    def __init__(self, out_dir: str | Path, shard_bytes: int = 2 * 1024**3):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_bytes = shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.shard_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        save_file(self._pending, str(self.dir / f".shard-{len(self._shards):05d}.safetensors"), metadata={"format": "pt"})
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Name the shards as transformers expects and write the index; returns the file names."""
        if self._pending:
            self._flush()
        n = len(self._shards)
        names = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        weight_map = {}
        for i, (tensors, final) in enumerate(zip(self._shards, names, strict=True)):
            os.replace(self.dir / f".shard-{i:05d}.safetensors", self.dir / final)
            weight_map |= dict.fromkeys(tensors, final)
        if n > 1:
            (self.dir / INDEX_NAME).write_text(json.dumps(
                {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}, indent=2))
        return names
