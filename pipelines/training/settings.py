"""The optimisation settings every back end reads: steps, learning rate and its schedule, batch, AdamW, clipping,
precision, the back end and its DeepSpeed config, checkpoint interval, process count; and the seed."""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from linguaforge.pipelines.devices import DEVICE_PATTERN
from linguaforge.pipelines.settings import AdamBetas, Seed, Settings


class TrainConfig(Settings):
    """How one training run optimises: the run configuration's `train:` sections (probe, masked CPT, full CPT,
    the demo bootstrap)."""

    # how often we save, how many processes share the data (the order is global), where it computes and whether
    # activations are recomputed do not change the result (beyond float rounding)
    key_exclude: ClassVar[frozenset[str]] = frozenset({"checkpoint_every", "processes", "device",
                                                       "gradient_checkpointing"})

    steps: int = Field(100, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(1e-4, gt=0, le=1.0)
    schedule: Literal["constant", "cosine"] = Field("cosine", description="LR schedule after warmup.")
    warmup_steps: int = Field(0, ge=0)
    batch_tokens: int = Field(8192, ge=1, description="Tokens per optimizer step, reached by gradient accumulation.")
    micro_batch_size: int = Field(8, ge=1, description="Blocks per forward pass.")
    weight_decay: float = Field(0.0, ge=0.0)
    adam_betas: AdamBetas = (0.9, 0.95)
    adam_eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(1.0, gt=0, description="Max global gradient norm; null = no clipping.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast on GPU; fp32 on CPU.")
    backend: Literal["torch", "deepspeed"] = Field("torch", description="Plain torch, or DeepSpeed (ZeRO).")
    deepspeed_config: str | None = Field(
        None, description="DeepSpeed JSON config (e.g. deploy/deepspeed/zero2.json) when backend=deepspeed."
    )
    checkpoint_every: int = Field(50, ge=1, description="Write a resumable checkpoint every N steps.")
    processes: int = Field(1, ge=1, le=1024, description="Training processes (one per GPU) launched with torchrun "
                           "on this node; 1 = train inside the task's own process.")
    device: str | None = Field(None, pattern=DEVICE_PATTERN, description="auto, cpu, cuda or cuda:N for this stage; "
                               "null = the run's `device`.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass instead of "
                                         "keeping them: much less memory for about a third more compute (an 8 B "
                                         "model at block size 2 048 needs it).")

    @model_validator(mode="after")
    def _several_processes_need_deepspeed(self) -> TrainConfig:
        if self.processes > 1 and self.backend != "deepspeed":
            raise ValueError("processes > 1 needs backend: deepspeed (the plain torch back end is one device)")
        return self


class TrainSettings(TrainConfig):
    """What a back end and the causal-LM recipe read: a TrainConfig and the run's seed."""

    seed: Seed = 0
    micro_batches_per_step: int | None = Field(None, ge=1, description="Set when an out-of-memory fallback halved "
                                               "micro_batch_size: the accumulation that keeps the blocks per step.")
    gpus: list[int] | None = Field(None, description="The node's GPUs this run holds (GPU slots): its workers see "
                                   "these alone (CUDA_VISIBLE_DEVICES). None: as `device` says.")

    @classmethod
    def of(cls, train: TrainConfig, seed: int, device: str = "auto") -> TrainSettings:
        """A stage's settings with the run's seed, and the run's device unless the stage names its own."""
        return cls(**(train.model_dump() | {"device": train.device or device}), seed=seed)

    def accumulation(self, block_size: int) -> int:
        """Micro-batches per optimizer step to reach batch_tokens (at least one)."""
        if self.micro_batches_per_step is not None:
            return self.micro_batches_per_step
        return max(1, math.ceil(self.batch_tokens / (self.micro_batch_size * block_size)))

    def halved(self, block_size: int, world: int = 1) -> TrainSettings | None:
        """The settings after an out-of-memory: a smaller micro-batch and as much more accumulation, so that every
        optimizer step takes the same blocks (the same data order, the same tokens). None at micro-batch 1."""
        per_step = self.micro_batch_size * ceil_multiple(self.accumulation(block_size), world)
        for micro in range(self.micro_batch_size // 2, 0, -1):
            if per_step % micro == 0 and (per_step // micro) % world == 0:
                return self.model_copy(update={"micro_batch_size": micro, "micro_batches_per_step": per_step // micro})
        return None

    def lr_factor(self, step: int) -> float:
        """Multiplier of learning_rate at optimizer step `step` (0-based): linear warmup, then constant or cosine."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def as_fingerprint(fields: dict[str, Any], *ignored: str) -> dict[str, Any]:
    """Settings as JSON values, without those that cannot change what is computed: what a checkpoint
    records, and a resumed run must match."""
    return json.loads(json.dumps({k: v for k, v in fields.items() if k not in ignored}))


def ceil_multiple(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple
