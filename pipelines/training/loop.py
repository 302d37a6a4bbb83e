"""The one training loop: every training stage (demo bootstrap, importance probe, masked CPT, full CPT, and
both MindMerger stages) is a recipe run by `train()`.

Read `train()` top to bottom: resume from the newest complete checkpoint if there is one, else let the
recipe take its starting measurements; then for each optimizer step take the next samples of a seeded
per-epoch permutation, run them as micro-batches with a loss weighted by target tokens, step, let the
recipe measure what it measures (a dev perplexity), report progress, checkpoint.

What the loop leaves to others: the back end (plain torch or DeepSpeed: devices, optimizer, which
weights train, what a checkpoint of the weights holds) and the recipe (the samples, their batches and
target counts, the settings a resumed run must share, and any state beyond the weights).

Determinism: data order is a seeded permutation per epoch, indexed by a global sample position that the
checkpoint records, so a killed and resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.faults import simulated_oom
from linguaforge.pipelines.interrupt import check_stop

Progress = Callable[[int, int, dict[str, Any]], None]
TRAIN_FILE = "train.json"  # a training stage's summary, beside what it made


class Backend(Protocol):
    """What the loop needs of a back end (TorchBackend in backends.py, DeepSpeedBackend in deepspeed_backend.py)."""

    model: torch.nn.Module
    device: torch.device

    def forward_backward(self, batch: dict[str, torch.Tensor], loss_scale: float) -> float: ...
    def optimizer_step(self, step: int) -> float: ...
    def save_state(self, folder: Path) -> None: ...
    def load_state(self, folder: Path) -> None: ...


class Recipe(Protocol):
    """What one training stage adds to the loop: its samples and their batches, the step plan, what it
    measures besides the loss, and what a checkpoint must record (`fingerprint()`: the settings a resumed
    run must share; `save`/`restore`: state beyond the back end's weights and optimizer)."""

    steps: int
    micro_batch_size: int
    seed: int
    checkpoint_every: int

    def __len__(self) -> int: ...
    def micro_batches(self, world: int) -> int: ...  # per optimizer step, a multiple of the world size
    def check(self) -> None: ...
    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]: ...
    def target_tokens(self, indices: np.ndarray) -> int: ...
    def start(self) -> None: ...
    def after_step(self, step: int, metrics: dict[str, float]) -> None: ...
    def fingerprint(self) -> dict[str, Any]: ...
    def save(self, folder: Path) -> dict[str, Any]: ...
    def restore(self, folder: Path, state: dict[str, Any]) -> None: ...
    def summary(self, result: TrainResult) -> dict[str, Any]: ...


class CheckpointStore(Protocol):
    """storage.CheckpointArea satisfies this."""

    def new(self, step: int): ...
    def latest(self) -> tuple[int, Path] | None: ...
    def prune(self, keep: int) -> None: ...


class BlockOrder:
    """Sample position → sample index: a fresh seeded permutation each epoch."""

    def __init__(self, n_samples: int, seed: int):
        self.n, self.seed = n_samples, seed
        self._perms: dict[int, np.ndarray] = {}

    def indices(self, start: int, count: int) -> np.ndarray:
        return np.array([self._perm(p // self.n)[p % self.n] for p in range(start, start + count)])

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=g).numpy()
            self._perms.pop(epoch - 2, None)  # a step spans at most two epochs
        return self._perms[epoch]


@dataclass
class TrainResult:
    steps: int = 0
    samples: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the recipe's own summary fields

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "first_loss": self.losses[0] if self.losses else None,
                "final_loss": self.losses[-1] if self.losses else None, "seconds": round(self.seconds, 2),
                "resumed_from": self.resumed_from} | self.details


def train(backend: Backend, recipe: Recipe, checkpoints: CheckpointStore | None = None,
          progress: Progress | None = None) -> TrainResult:
    # data parallel (DeepSpeed under a launcher): rank r takes micro-batches r, r+W, r+2W, ... of each step
    rank, world = getattr(backend, "rank", 0), getattr(backend, "world", 1)
    micro, n_micro = recipe.micro_batch_size, recipe.micro_batches(world)
    per_step = n_micro * micro
    recipe.check()
    order = BlockOrder(len(recipe), recipe.seed)
    torch.manual_seed(recipe.seed)
    result = TrainResult()
    start = 0
    if checkpoints is not None and (latest := checkpoints.latest()) is not None:
        start, folder = latest
        backend.load_state(folder)
        restore_checkpoint(folder, result, recipe)
        result.resumed_from = start
    else:
        recipe.start()
    backend.model.train()
    began = time.perf_counter()
    for step in range(start, recipe.steps):
        check_stop(f"training step {step + 1} of {recipe.steps}")
        indices = order.indices(step * per_step, per_step)
        micro_batches = [indices[m * micro: (m + 1) * micro] for m in range(n_micro)]
        n_targets = recipe.target_tokens(indices)  # over all ranks
        # gradients are averaged over ranks, hence the factor `world` in the token weighting
        local = 0.0
        for b in micro_batches[rank::world]:
            simulated_oom("train", len(b), step + 1)  # tests: a GPU's memory limit on any machine
            local += backend.forward_backward(recipe.batch(b), world / n_targets)
        loss_sum = backend.all_reduce_sum(local) if world > 1 else local
        grad_norm = backend.optimizer_step(step)

        result.losses.append(loss_sum / n_targets)
        result.steps, result.samples = step + 1, result.samples + per_step
        metrics = {"loss": result.losses[-1], "grad_norm": grad_norm,
                   "samples_per_s": (step + 1 - start) * per_step / (time.perf_counter() - began)}
        recipe.after_step(step + 1, metrics)
        if progress is not None:
            progress(step + 1, recipe.steps, metrics)
        if checkpoints is not None and (step + 1) % recipe.checkpoint_every == 0 and step + 1 < recipe.steps:
            save_checkpoint(backend, checkpoints, result, recipe, rank)
    result.seconds += time.perf_counter() - began
    backend.model.train(False)
    result.details = recipe.summary(result)
    return result


def save_checkpoint(backend: Backend, checkpoints: CheckpointStore, result: TrainResult, recipe: Recipe,
                    rank: int = 0) -> None:
    """Every rank takes part in gathering the state (ZeRO collectives); rank 0 alone commits it."""
    if rank != 0:
        with tempfile.TemporaryDirectory() as scratch:
            backend.save_state(Path(scratch))
        return
    with checkpoints.new(result.steps) as folder:
        backend.save_state(folder)
        save_file({"torch_cpu": torch.get_rng_state()}, str(folder / "rng.safetensors"))
        (folder / "trainer.json").write_text(json.dumps({
            "step": result.steps, "samples": result.samples, "losses": result.losses, "seconds": result.seconds,
            "settings": recipe.fingerprint(), "recipe": recipe.save(folder),
        }))
    checkpoints.prune(keep=2)


def restore_checkpoint(folder: Path, result: TrainResult, recipe: Recipe) -> None:
    meta = json.loads((folder / "trainer.json").read_text())
    expected = recipe.fingerprint()
    if meta["settings"] != expected:
        changed = sorted(k for k in meta["settings"] if meta["settings"][k] != expected.get(k))
        raise InputError(f"checkpoint {folder} was written with other training settings ({', '.join(changed)}); "
                         "refusing to resume from it")
    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch_cpu"])
    result.steps, result.samples = meta["step"], meta["samples"]
    result.losses, result.seconds = list(meta["losses"]), meta["seconds"]
    recipe.restore(folder, meta["recipe"])
