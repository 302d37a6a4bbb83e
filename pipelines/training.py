"""The causal-LM training loop every CPT stage uses (demo bootstrap, importance probe, masked CPT, full CPT).

Read `train()` top to bottom: resume from the newest complete checkpoint if there is one, then for each
optimizer step gather enough micro-batches to reach the token budget, take a token-weighted loss, step,
log, checkpoint. Everything that differs between back ends (plain torch, DeepSpeed) sits behind the
small `Backend` interface; everything that differs between stages (which weights train) is the
backend's business too, so the loop itself stays the same.

Determinism: data order is a seeded permutation per epoch, indexed by a global sample position that the
checkpoint records, so a killed and resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model, save_file, save_model

from linguaforge.pipelines.errors import InputError

Progress = Callable[[int, int, dict[str, Any]], None]
IGNORE_INDEX = -100


@dataclass
class TrainSettings:
    """Mirrors flows.config.TrainConfig (pipelines never import flows); build with TrainSettings(**cfg.model_dump())."""

    steps: int = 100
    learning_rate: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 0
    batch_tokens: int = 8192
    micro_batch_size: int = 8
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    grad_clip: float | None = 1.0
    precision: str = "fp32"
    backend: str = "torch"
    deepspeed_config: str | None = None
    checkpoint_every: int = 50
    processes: int = 1
    seed: int = 0

    def accumulation(self, block_size: int) -> int:
        """Micro-batches per optimizer step to reach batch_tokens (at least one)."""
        return max(1, math.ceil(self.batch_tokens / (self.micro_batch_size * block_size)))

    def lr_factor(self, step: int) -> float:
        """Multiplier of learning_rate at optimizer step `step` (0-based): linear warmup, then constant or cosine."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# -- data -------------------------------------------------------------------------------------------
class PackedBlocks:
    """Fixed-length token blocks from the corpus stage's Parquet shards (memory-mapped, zero-copy)."""

    def __init__(self, files: Sequence[Path]):
        if not files:
            raise InputError("packed corpus: no Parquet shards given")
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

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(self.input_ids[indices].astype(np.int64))
        real = torch.arange(self.block_size)[None, :] < torch.from_numpy(self.n_real[indices])[:, None]
        labels = ids.masked_fill(~real, IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": real.long(), "labels": labels}


class BlockOrder:
    """Sample position → block index: a fresh seeded permutation each epoch."""

    def __init__(self, n_blocks: int, seed: int):
        self.n, self.seed = n_blocks, seed
        self._perms: dict[int, np.ndarray] = {}

    def indices(self, start: int, count: int) -> np.ndarray:
        return np.array([self._perm(p // self.n)[p % self.n] for p in range(start, start + count)])

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=g).numpy()
            self._perms.pop(epoch - 2, None)  # a batch spans at most two epochs
        return self._perms[epoch]


# -- back ends ----------------------------------------------------------------------------------------
class Backend(Protocol):
    """What the loop needs from a training back end (plain torch here; DeepSpeed elsewhere)."""

    model: torch.nn.Module
    device: torch.device

    def forward_backward(self, batch: dict[str, torch.Tensor], loss_scale: float) -> float: ...
    def optimizer_step(self, step: int) -> float: ...
    def save_state(self, folder: Path) -> None: ...
    def load_state(self, folder: Path) -> None: ...


def causal_lm_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over positions whose label is not IGNORE_INDEX."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def adamw_param_groups(params: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: norms and biases are not decayed (the usual LLM recipe)."""
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]


class TorchBackend:
    """Plain torch on one device: AdamW over the trainable parameters, LR set per step from the schedule.

    `loss_fn(model, batch)` returns the summed loss of a micro-batch; other models (MindMerger's
    encoder + mapping + LLM) reuse the back end with their own loss.
    """

    def __init__(self, model: torch.nn.Module, settings: TrainSettings, device: torch.device | None = None,
                 loss_fn: LossFn = causal_lm_loss_sum, optimizer: torch.optim.Optimizer | None = None):
        self.settings = settings
        self.loss_fn = loss_fn
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device)
        self.named_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self.named_params:
            raise InputError("training: the model has no trainable parameters")
        self.optimizer = optimizer or torch.optim.AdamW(
            adamw_param_groups(self.named_params, settings.weight_decay), lr=settings.learning_rate,
            betas=tuple(settings.adam_betas), eps=settings.adam_eps,
        )
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=settings.precision == "bf16")

    def forward_backward(self, batch: dict[str, torch.Tensor], loss_scale: float) -> float:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self.autocast:
            loss = self.loss_fn(self.model, batch)
        (loss * loss_scale).backward()
        return loss.item()

    def optimizer_step(self, step: int) -> float:
        params = [p for _, p in self.named_params]
        clip = self.settings.grad_clip if self.settings.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip).item()
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings.learning_rate * self.settings.lr_factor(step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Every parameter (tied ones once, like safetensors checkpoints), on the CPU."""
        return {k: v.detach().cpu() for k, v in self.model.named_parameters()}

    def save_state(self, folder: Path) -> None:
        save_model(self.model, str(folder / "model.safetensors"))
        save_optimizer(self.optimizer, folder)

    def load_state(self, folder: Path) -> None:
        load_model(self.model, str(folder / "model.safetensors"), device=str(self.device))
        load_optimizer(self.optimizer, folder, self.device)


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Optimizer state without pickle: tensors in safetensors, the rest in JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, param_state in state["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path, device: torch.device) -> None:
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors"), device=str(device)).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# -- the loop -------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    steps: int
    tokens: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "tokens": self.tokens, "final_loss": self.losses[-1] if self.losses else None,
                "first_loss": self.losses[0] if self.losses else None, "seconds": round(self.seconds, 2),
                "tokens_per_second": round(self.tokens_per_second, 1), "resumed_from": self.resumed_from}


class CheckpointStore(Protocol):
    """storage.CheckpointArea satisfies this."""

    def new(self, step: int): ...
    def latest(self) -> tuple[int, Path] | None: ...
    def prune(self, keep: int) -> None: ...


def train(
    backend: Backend,
    data: PackedBlocks,
    settings: TrainSettings,
    checkpoints: CheckpointStore | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    # data parallel (DeepSpeed under a launcher): rank r takes micro-batches r, r+W, r+2W, ... of each step
    rank, world = getattr(backend, "rank", 0), getattr(backend, "world", 1)
    accumulation = math.ceil(settings.accumulation(data.block_size) / world) * world
    tokens_per_step = accumulation * settings.micro_batch_size * data.block_size
    if len(data) < settings.micro_batch_size:
        raise InputError(f"corpus {data.source} has {len(data)} blocks, fewer than one micro-batch "
                         f"({settings.micro_batch_size} blocks of {data.block_size} tokens)")
    order = BlockOrder(len(data), settings.seed)
    torch.manual_seed(settings.seed)
    result = TrainResult(steps=0, tokens=0)
    start = 0
    if checkpoints is not None and (latest := checkpoints.latest()) is not None:
        start, folder = latest
        backend.load_state(folder)
        restore_trainer_state(folder, result, settings)
        result.resumed_from = start
    backend.model.train()
    began = time.perf_counter()
    for step in range(start, settings.steps):
        first = step * accumulation * settings.micro_batch_size
        batches = [data.batch(order.indices(first + m * settings.micro_batch_size, settings.micro_batch_size))
                   for m in range(accumulation)]
        n_targets = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)  # over all ranks
        # gradients are averaged over ranks, hence the factor `world` in the token weighting
        local = sum(backend.forward_backward(b, world / n_targets) for b in batches[rank::world])
        loss_sum = backend.all_reduce_sum(local) if world > 1 else local
        grad_norm = backend.optimizer_step(step)

        result.losses.append(loss_sum / n_targets)
        result.steps, result.tokens = step + 1, result.tokens + tokens_per_step
        elapsed = time.perf_counter() - began
        if progress is not None:
            progress(step + 1, settings.steps, {"loss": result.losses[-1], "grad_norm": grad_norm,
                                                "lr": settings.learning_rate * settings.lr_factor(step),
                                                "tokens_per_s": (step + 1 - start) * tokens_per_step / elapsed})
        if checkpoints is not None and (step + 1) % settings.checkpoint_every == 0 and step + 1 < settings.steps:
            save_checkpoint(backend, checkpoints, step + 1, result, settings, rank)
    result.seconds += time.perf_counter() - began
    backend.model.eval()
    return result


def save_checkpoint(backend: Backend, checkpoints: CheckpointStore, step: int, result: TrainResult,
                    settings: TrainSettings, rank: int = 0) -> None:
    """Every rank takes part in gathering the state (ZeRO collectives); rank 0 alone commits it."""
    if rank != 0:
        with tempfile.TemporaryDirectory() as scratch:
            backend.save_state(Path(scratch))
        return
    with checkpoints.new(step) as folder:
        backend.save_state(folder)
        save_trainer_state(folder, result, settings)
    checkpoints.prune(keep=2)


def _settings_fingerprint(settings: TrainSettings) -> dict[str, Any]:
    fields = asdict(settings)
    fields.pop("checkpoint_every")  # how often we save does not change what we compute
    fields.pop("processes")  # nor does the process count: the data order is global (only float sums reorder)
    return json.loads(json.dumps(fields))


def save_trainer_state(folder: Path, result: TrainResult, settings: TrainSettings) -> None:
    save_file({"torch_cpu": torch.get_rng_state()}, str(folder / "rng.safetensors"))
    (folder / "trainer.json").write_text(json.dumps({
        "step": result.steps, "tokens": result.tokens, "losses": result.losses, "seconds": result.seconds,
        "settings": _settings_fingerprint(settings),
    }))


def restore_trainer_state(folder: Path, result: TrainResult, settings: TrainSettings) -> None:
    meta = json.loads((folder / "trainer.json").read_text())
    if meta["settings"] != _settings_fingerprint(settings):
        changed = sorted(k for k in meta["settings"] if meta["settings"][k] != _settings_fingerprint(settings).get(k))
        raise InputError(f"checkpoint {folder} was written with other training settings ({', '.join(changed)}); "
                         "refusing to resume from it")
    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch_cpu"])
    result.steps, result.tokens = meta["step"], meta["tokens"]
    result.losses, result.seconds = list(meta["losses"]), meta["seconds"]
