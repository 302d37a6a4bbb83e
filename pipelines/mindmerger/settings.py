"""MindMerger's settings: the two stages' schedules and the settings they share (the run configuration's
`mindmerger:` section; the defaults are the official recipe)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from linguaforge.pipelines.devices import DEVICE_PATTERN
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.settings import AdamBetas, Settings
from linguaforge.pipelines.training.settings import TrainSettings, as_fingerprint, ceil_multiple

STAGES = ("mapping", "augmentation")


class MindMergerStageConfig(Settings):
    key_exclude: ClassVar[frozenset[str]] = frozenset({"checkpoint_every"})

    learning_rate: float = Field(2e-5, gt=0, le=1.0)
    epochs: float = Field(3.0, gt=0)
    global_batch_size: int = Field(128, ge=1)
    micro_batch_size: int = Field(8, ge=1)
    max_source_len: int = Field(200, ge=1, description="Encoder input tokens.")
    max_target_len: int = Field(200, ge=1, description="LLM prompt + target tokens.")
    checkpoint_every: int = Field(100, ge=1)


class MindMergerConfig(Settings):
    enabled: bool = True
    task: Literal["math", "csqa", "xnli"] = Field("math", description="Augmentation-stage task.")
    llms: list[Literal["base", "merged", "full_cpt"]] = Field(
        default_factory=lambda: ["merged", "full_cpt"],
        description="Which LLMs to put MindMerger on: the base LLM, the model merge.method built (MAET by default), "
        "the full-CPT baseline. Each MindMerger model is compared with the LLM it sits on.",
    )

    mapping: MindMergerStageConfig = Field(default_factory=MindMergerStageConfig)
    augmentation: MindMergerStageConfig = Field(
        default_factory=lambda: MindMergerStageConfig(max_source_len=512, max_target_len=512)
    )
    adam_betas: AdamBetas = (0.8, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(3e-7, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    dev_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="Held-out share for dev perplexity.")
    translation_data: dict[str, str] = Field(
        default_factory=dict,
        description="Per language: folder or URL with line-aligned train.<iso> / train.en; empty = demo world.",
    )
    query_data: str = Field("demo:queries/math", description="Translated task queries for the augmentation stage.")
    backend: Literal["torch", "deepspeed"] = "torch"
    deepspeed_config: str | None = None
    processes: int = Field(1, ge=1, le=1024, description="Training processes (one per GPU) per stage, launched with "
                           "torchrun on one node, as CPT's are; more than 1 needs backend: deepspeed.")
    device: str | None = Field(None, pattern=DEVICE_PATTERN, description="Where MindMerger trains and generates; "
                               "null = the run's `device`.")
    gradient_checkpointing: bool = Field(False, description="Recompute the frozen LLM's activations in the backward "
                                         "pass (the mapping's gradient flows through it): less memory, more compute.")

    @field_validator("llms", mode="before")
    @classmethod
    def _merged_was_maet(cls, v: Any) -> Any:
        """`maet`, this setting's name for the merged model before it could be another method's, still reads."""
        return [("merged" if x == "maet" else x) for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _several_processes_need_deepspeed(self) -> MindMergerConfig:
        if self.processes > 1 and self.backend != "deepspeed":
            raise ValueError("processes > 1 needs backend: deepspeed (the plain torch back end is one device)")
        return self

    def stage_config(self, stage: str) -> MindMergerStageConfig:
        return self.mapping if stage == "mapping" else self.augmentation

    def stage_settings(self, stage: str, dtype: str, seed: int, device: str = "auto") -> StageSettings:
        """One stage's training settings: its own schedule and the optimiser settings both stages share, each field
        taken by its name (the names are the same in both types; a test holds that every one arrives)."""
        own = self.stage_config(stage).model_dump(include=STAGE_FIELDS)
        shared = {name: getattr(self, name) for name in SHARED_FIELDS}
        return StageSettings(stage=stage, **own, **shared, precision="bf16" if dtype == "bfloat16" else "fp32",
                             seed=seed, device=self.device or device)


# what a stage's training reads of its own section, and of the settings both stages share
STAGE_FIELDS = {"learning_rate", "epochs", "global_batch_size", "micro_batch_size", "checkpoint_every"}
SHARED_FIELDS = ("adam_betas", "adam_eps", "weight_decay", "grad_clip", "backend", "deepspeed_config",
                 "gradient_checkpointing", "processes")


def _default(model: type[Settings], name: str) -> Any:
    """A field's default where it is declared, the configuration (so that it is declared once)."""
    return model.model_fields[name].get_default(call_default_factory=True)


@dataclass
class StageSettings:
    """What one stage's training run reads: its schedule, the shared optimiser settings, how the encoder
    states are cached, and the seed (built from the run configuration by MindMergerConfig.stage_settings)."""

    stage: str = "mapping"
    learning_rate: float = _default(MindMergerStageConfig, "learning_rate")  # constant: the official run has no schedule
    epochs: float = _default(MindMergerStageConfig, "epochs")
    global_batch_size: int = _default(MindMergerStageConfig, "global_batch_size")
    micro_batch_size: int = _default(MindMergerStageConfig, "micro_batch_size")
    adam_betas: tuple[float, float] = _default(MindMergerConfig, "adam_betas")
    adam_eps: float = _default(MindMergerConfig, "adam_eps")
    weight_decay: float = _default(MindMergerConfig, "weight_decay")
    grad_clip: float | None = _default(MindMergerConfig, "grad_clip")
    precision: str = "fp32"
    backend: str = _default(MindMergerConfig, "backend")
    deepspeed_config: str | None = None
    checkpoint_every: int = _default(MindMergerStageConfig, "checkpoint_every")
    eval_every: int | None = None  # optimizer steps between dev evaluations; None = once per epoch
    cache_encoder_states: bool = True
    encoder_cache_max_gb: float = 8.0  # host memory for cached states; above it, encode per micro-batch
    encoder_batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    gradient_checkpointing: bool = _default(MindMergerConfig, "gradient_checkpointing")
    micro_batches: int | None = None  # set by an out-of-memory fallback: keeps the examples per step
    processes: int = _default(MindMergerConfig, "processes")  # training processes under torchrun (one per GPU)
    gpus: list[int] | None = None  # the node's GPUs the stage holds (GPU slots): its workers see only these

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise InputError(f"MindMerger stage must be one of {STAGES}, got {self.stage!r}")
        self.adam_betas = tuple(self.adam_betas)

    def micro_batches_per_step(self, world: int = 1) -> int:
        """Micro-batches per optimizer step, a multiple of the data-parallel world size."""
        if self.micro_batches is not None:
            return self.micro_batches
        return ceil_multiple(math.ceil(self.global_batch_size / self.micro_batch_size), world)

    def halved(self, world: int = 1) -> StageSettings | None:
        """After an out-of-memory: half the micro-batch, as many more micro-batches (the same examples per step)."""
        per_step = self.micro_batch_size * self.micro_batches_per_step(world)
        for micro in range(self.micro_batch_size // 2, 0, -1):
            if per_step % micro == 0 and (per_step // micro) % world == 0:
                return replace(self, micro_batch_size=micro, micro_batches=per_step // micro)
        return None

    def steps(self, n_train: int, world: int = 1) -> int:
        per_step = self.micro_batches_per_step(world) * self.micro_batch_size
        return max(1, math.ceil(self.epochs * n_train / per_step))

    def backend_settings(self, steps: int) -> TrainSettings:
        # batch_tokens with block size 1: the back ends' accumulation becomes examples per step / micro-batch
        return TrainSettings(steps=steps, learning_rate=self.learning_rate, schedule="constant", warmup_steps=0,
                             batch_tokens=self.global_batch_size, micro_batch_size=self.micro_batch_size,
                             weight_decay=self.weight_decay, adam_betas=self.adam_betas, adam_eps=self.adam_eps,
                             grad_clip=self.grad_clip, precision=self.precision, backend=self.backend,
                             deepspeed_config=self.deepspeed_config, checkpoint_every=self.checkpoint_every,
                             seed=self.seed, device=self.device, gradient_checkpointing=self.gradient_checkpointing,
                             micro_batches_per_step=self.micro_batches)

    def fingerprint(self) -> dict[str, Any]:
        # how often we save, where it computes and how a step's examples are split into micro-batches do not
        # change the result (only float sums reorder): an out-of-memory fallback resumes its own checkpoints
        fields = asdict(self) | {"examples_per_step": self.micro_batch_size * self.micro_batches_per_step()}
        return as_fingerprint(fields, "checkpoint_every", "device", "gradient_checkpointing", "micro_batch_size",
                              "micro_batches", "processes", "gpus")
