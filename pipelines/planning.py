"""Will it fit? Memory per GPU of every stage, planned from the model's config.json before anything runs.

The model is built on the meta device from its configuration (no weight is loaded, nothing is downloaded but the
config), so the parameter count is the real one. Per GPU, in bytes, for P parameters on N GPUs (mixed precision:
16-bit weights, fp32 master weights and Adam moments, as DeepSpeed accounts them):

    model states   ZeRO-0   2P + 18P                 (16-bit weights; 16- and 32-bit gradients, fp32 master, m, v)
                   ZeRO-1   2P + 6P + 12P/N          (optimizer states sharded)
                   ZeRO-2   2P + 18P/N               (gradients too: DeepSpeed's estimate_zero2_model_states_mem_needs)
                   ZeRO-3   4·largest layer + 18P/N  (weights too: its estimate_zero3_model_states_mem_needs)
                   fp32, plain torch: 4P + 4P + 8P·t (t = the trainable share: masked AdamW keeps moments for
                   the trained entries only)
    activations    per layer of a Llama block at micro-batch b and block s (hidden h, MLP width f), 16-bit:
                   saved for backward ≈ 16·s·b·h + 8·s·b·f bytes (norm inputs, q/k/v, attention output, the MLP's
                   gate, up, activation and product); with gradient checkpointing only each layer's input
                   (2·s·b·h) is kept, and one layer is recomputed at a time; plus the logits: 2·s·b·V in 16 bits,
                   an fp32 copy for the loss and its gradient (10·s·b·V in all).

These are estimates: the allocator's fragmentation and framework buffers come on top (a tenth of the card is kept
free). `make gpu-check` compares the activation estimate with torch.cuda.max_memory_allocated on a lent GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

GIB = 2**30
HEADROOM = 0.9  # the share of a card's memory a plan may fill


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    largest_layer: int  # parameters of the largest module (ZeRO-3 gathers one at a time)
    layers: int
    hidden: int
    intermediate: int
    vocab: int


def model_shape(config: dict[str, Any]) -> ModelShape:
    """A causal LM's sizes, built from its config.json on the meta device (no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    unique = {id(p): p.numel() for p in model.parameters()}  # tied weights once
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return ModelShape(parameters=sum(unique.values()), largest_layer=largest,
                      layers=hf_config.num_hidden_layers, hidden=hf_config.hidden_size,
                      intermediate=getattr(hf_config, "intermediate_size", 4 * hf_config.hidden_size),
                      vocab=hf_config.vocab_size)


def model_state_bytes(shape: ModelShape, gpus: int, zero_stage: int | None, trainable: float = 1.0) -> int:
    """Weights, gradients and optimizer states per GPU (zero_stage None: fp32 on the plain torch back end)."""
    p = shape.parameters
    if zero_stage is None:
        return int(4 * p + 4 * p + 8 * p * trainable)
    if zero_stage == 0:
        return 20 * p
    if zero_stage == 1:
        return int(2 * p + 6 * p + 12 * p / gpus)
    if zero_stage == 2:
        return int(2 * p + 18 * p / gpus)
    return int(4 * shape.largest_layer + 18 * p / gpus)


def activation_bytes(shape: ModelShape, micro_batch: int, block: int, checkpointing: bool,
                     element: int = 2) -> int:
    """What the backward pass keeps (see the module's docstring), in bytes per GPU."""
    tokens = micro_batch * block
    per_layer = tokens * (16 * shape.hidden + 8 * shape.intermediate) * element // 2
    layers = shape.layers * tokens * shape.hidden * element + per_layer if checkpointing else shape.layers * per_layer
    return layers + 10 * tokens * shape.vocab


@dataclass(frozen=True)
class StagePlan:
    stage: str
    gpus: int
    zero_stage: int | None
    micro_batch: int
    checkpointing: bool
    trainable_share: float
    tokens: int
    model_states: int  # bytes per GPU
    activations: int
    fits: bool | None  # None: no GPU memory given
    largest_micro_batch: int | None

    @property
    def total(self) -> int:
        return self.model_states + self.activations

    def row(self) -> dict[str, Any]:
        return asdict(self) | {"total": self.total}


@dataclass(frozen=True)
class Setup:
    """How one training stage runs: what its memory depends on."""

    gpus: int
    zero_stage: int | None  # None: the plain torch back end, fp32
    micro_batch: int
    block: int
    checkpointing: bool
    trainable: float = 1.0  # the share of parameters with optimizer state
    tokens: int = 0  # processed over the whole stage


def plan_training(stage: str, shape: ModelShape, setup: Setup, gpu_memory_gib: float | None = None) -> StagePlan:
    states = model_state_bytes(shape, setup.gpus, setup.zero_stage, setup.trainable)
    element = 4 if setup.zero_stage is None else 2

    def total(b: int) -> int:
        return states + activation_bytes(shape, b, setup.block, setup.checkpointing, element)

    fits, largest = None, None
    if gpu_memory_gib is not None:
        budget = gpu_memory_gib * GIB * HEADROOM
        fits = total(setup.micro_batch) <= budget
        largest = max((b for b in range(1, 257) if total(b) <= budget), default=0)
    activations = activation_bytes(shape, setup.micro_batch, setup.block, setup.checkpointing, element)
    return StagePlan(stage, setup.gpus, setup.zero_stage, setup.micro_batch, setup.checkpointing, setup.trainable,
                     setup.tokens, states, activations, fits, largest)


def zero_stage_of(deepspeed_config: dict | None, backend: str) -> int | None:
    """The ZeRO stage a training setting runs with (None: the plain torch back end, fp32)."""
    if backend != "deepspeed":
        return None
    return int(((deepspeed_config or {}).get("zero_optimization") or {}).get("stage", 0))

