"""The causal-LM recipe: next-token training on the corpus stage's packed blocks. The demo bootstrap, the
importance probes, masked CPT and full CPT are all this recipe; they differ in the back end (which
weights train) and the settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.training.settings import TrainSettings, as_fingerprint, ceil_multiple

IGNORE_INDEX = -100


class PackedBlocks:
    """Fixed-length token blocks from the corpus stage's Parquet shards (memory-mapped, zero-copy)."""

    def __init__(self, files: Sequence[Path]):
        if not files:
            raise InputError("packed corpus: no Parquet shards given")
        import pyarrow as pa  # here: the training loop itself needs no pyarrow (a GPU check imports it without)
        import pyarrow.parquet as pq

        table = pa.concat_tables([pq.read_table(f, memory_map=True) for f in files])
        column = table.column("input_ids").combine_chunks()
        self.block_size = column.type.list_size
        self.input_ids = column.values.to_numpy(zero_copy_only=False).reshape(-1, self.block_size)
        self.n_real = table.column("n_real").to_numpy()
        self.source = str(Path(files[0]).parent)

    @classmethod
    def from_dir(cls, folder: Path) -> PackedBlocks:
        return cls(sorted(Path(folder).glob("blocks-*.parquet")))

    def __len__(self) -> int:
        return len(self.input_ids)

    def token_ids(self) -> set[int]:
        """Every token id that occurs in the blocks (padding left out)."""
        real = np.arange(self.block_size)[None, :] < self.n_real[:, None]
        return set(np.unique(self.input_ids[real]).tolist())

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(self.input_ids[indices].astype(np.int64))
        real = torch.arange(self.block_size)[None, :] < torch.from_numpy(self.n_real[indices])[:, None]
        labels = ids.masked_fill(~real, IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": real.long(), "labels": labels}



def causal_lm_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over positions whose label is not IGNORE_INDEX."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX, reduction="sum")


class CausalLMRecipe:
    """Packed blocks as samples; a step holds `batch_tokens` worth of blocks (by accumulation)."""

    def __init__(self, data: PackedBlocks, settings: TrainSettings):
        self.data, self.settings = data, settings
        self.steps, self.micro_batch_size = settings.steps, settings.micro_batch_size
        self.seed, self.checkpoint_every = settings.seed, settings.checkpoint_every

    def __len__(self) -> int:
        return len(self.data)

    def micro_batches(self, world: int) -> int:
        return ceil_multiple(self.settings.accumulation(self.data.block_size), world)

    def check(self) -> None:
        if len(self.data) < self.micro_batch_size:
            raise InputError(f"corpus {self.data.source} has {len(self.data)} blocks, fewer than one micro-batch "
                             f"({self.micro_batch_size} blocks of {self.data.block_size} tokens)")

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return self.data.batch(indices)

    def target_tokens(self, indices: np.ndarray) -> int:
        # a block's targets are its real tokens after the first (labels[:, 1:] that are not IGNORE_INDEX)
        return int(np.clip(self.data.n_real[indices], 1, None).sum() - len(indices))

    def start(self) -> None:
        pass

    def after_step(self, step: int, metrics: dict[str, float]) -> None:
        metrics["lr"] = self.settings.learning_rate * self.settings.lr_factor(step - 1)
        metrics["tokens_per_s"] = metrics.pop("samples_per_s") * self.data.block_size

    def fingerprint(self) -> dict[str, Any]:
        # how often we save does not change what we compute, nor the process count, the device, recomputed
        # activations or how a step's blocks are split into micro-batches (the data order is global and a step's
        # blocks are fixed; only float sums reorder): an out-of-memory fallback resumes its own checkpoints
        fields = self.settings.model_dump(mode="json") | {"blocks_per_step": self.micro_batches(1) * self.micro_batch_size}
        return as_fingerprint(fields, "checkpoint_every", "processes", "device", "gradient_checkpointing",
                              "micro_batch_size", "micro_batches_per_step", "gpus")

    def save(self, folder: Path) -> dict[str, Any]:
        return {}

    def restore(self, folder: Path, state: dict[str, Any]) -> None:
        pass

    def summary(self, result) -> dict[str, Any]:
        tokens = result.samples * self.data.block_size
        return {"tokens": tokens, "tokens_per_second": round(tokens / result.seconds, 1) if result.seconds else 0.0}
