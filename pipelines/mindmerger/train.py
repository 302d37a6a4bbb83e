"""MindMerger training: one loop for both stages (mapping, then augmentation), on the CPT back ends.

Read `train_stage()` top to bottom: resume from the newest complete checkpoint if there is one, else
measure the starting dev perplexity; then each optimizer step takes the next `global_batch_size` examples
of a seeded per-epoch permutation, runs them as micro-batches with a token-weighted summed loss, steps,
measures dev perplexity when due (keeping the best mapping so far), and checkpoints.

What differs from the CPT loop in pipelines/training.py, and why:
- data are (source, prompt, target) examples, not fixed token blocks, so a step is a number of
  examples and its loss is weighted by the target tokens (EOS included) it holds;
- the frozen encoder's states are computed once per stage, in fixed chunks, and reused every epoch
  (the encoder is in eval mode, so they cannot change); fixed chunks make them bit-identical in a
  fresh and in a resumed run;
- checkpoints hold the mapping and its optimizer state only: the encoder and LLM never change, and an
  8B LLM would otherwise add 16 GB to every checkpoint;
- weight decay applies to every mapping parameter, biases and boundary included, as the official
  DeepSpeed AdamW does (and as the DeepSpeed back end here does).

Determinism: nothing in a step draws random numbers (no dropout anywhere: the mapping has none, the
frozen parts run in eval mode), data order comes from the global sample position that the checkpoint
records, so a killed and resumed run ends with the weights of an uninterrupted one, bit for bit on CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.mindmerger.checkpoint import (
    MappingMeta,
    export_official_checkpoint,
    load_mapping,
    load_official_checkpoint,
    save_mapping,
)
from linguaforge.pipelines.mindmerger.data import Example, collate, load_examples, target_tokens
from linguaforge.pipelines.mindmerger.model import MindMergerModel, mindmerger_loss_sum
from linguaforge.pipelines.reproducible import content_only
from linguaforge.pipelines.training import (
    BlockOrder,
    TorchBackend,
    TrainSettings,
    load_optimizer,
    save_optimizer,
)

log = logging.getLogger("linguaforge.mindmerger")
Progress = Callable[[int, int, dict[str, Any]], None]
STAGES = ("mapping", "augmentation")


@dataclass
class StageSettings:
    """One stage's training settings; the defaults are the official recipe (flows.config.MindMergerConfig)."""

    stage: str = "mapping"
    learning_rate: float = 2e-5  # constant: the official run has no schedule
    epochs: float = 3.0
    global_batch_size: int = 128
    micro_batch_size: int = 8
    adam_betas: tuple[float, float] = (0.8, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 3e-7
    grad_clip: float | None = 1.0
    precision: str = "fp32"
    backend: str = "torch"
    deepspeed_config: str | None = None
    checkpoint_every: int = 100
    eval_every: int | None = None  # optimizer steps between dev evaluations; None = once per epoch
    cache_encoder_states: bool = True
    encoder_cache_max_gb: float = 8.0  # host memory for cached states; above it, encode per micro-batch
    encoder_batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise InputError(f"MindMerger stage must be one of {STAGES}, got {self.stage!r}")
        self.adam_betas = tuple(self.adam_betas)

    def micro_batches_per_step(self, world: int = 1) -> int:
        """Micro-batches per optimizer step, a multiple of the data-parallel world size."""
        return math.ceil(math.ceil(self.global_batch_size / self.micro_batch_size) / world) * world

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
                             seed=self.seed)

    def fingerprint(self) -> dict[str, Any]:
        fields = asdict(self)
        fields.pop("checkpoint_every")  # how often we save does not change what we compute
        return json.loads(json.dumps(fields))


# -- back ends that checkpoint the mapping only --------------------------------------------------------------
def mapping_state(model: MindMergerModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.mapping.state_dict().items()}


class MappingTorchBackend(TorchBackend):
    def save_state(self, folder: Path) -> None:
        save_file(mapping_state(self.model), str(folder / "mapping_state.safetensors"))
        save_optimizer(self.optimizer, folder)

    def load_state(self, folder: Path) -> None:
        self.model.mapping.load_state_dict(load_file(str(folder / "mapping_state.safetensors"),
                                                     device=str(self.device)))
        load_optimizer(self.optimizer, folder, self.device)


def make_backend(model: MindMergerModel, settings: StageSettings, steps: int, device: torch.device | None = None):
    train_settings = settings.backend_settings(steps)
    if settings.backend == "deepspeed":
        from linguaforge.pipelines.deepspeed_backend import DeepSpeedBackend

        class MappingDeepSpeedBackend(DeepSpeedBackend):
            def save_weights(self, folder: Path) -> None:
                save_file(mapping_state(self.engine.module), str(folder / "mapping_state.safetensors"))

            def load_weights(self, folder: Path) -> None:
                self.engine.module.mapping.load_state_dict(
                    load_file(str(folder / "mapping_state.safetensors"), device=str(self.device)))

        return MappingDeepSpeedBackend(model, train_settings, block_size=1, loss_fn=mindmerger_loss_sum)
    params = [p for p in model.mapping.parameters()]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, betas=settings.adam_betas,
                                  eps=settings.adam_eps, weight_decay=settings.weight_decay)
    return MappingTorchBackend(model, train_settings, device=device, loss_fn=mindmerger_loss_sum,
                               optimizer=optimizer)


# -- encoder states -----------------------------------------------------------------------------------------
class EncoderStates:
    """Frozen-encoder outputs of every example, real tokens only, computed once in fixed length-sorted
    chunks (little padding; the same chunks in a fresh and a resumed run, hence the same numbers)."""

    def __init__(self, model: MindMergerModel, examples: list[Example], batch_size: int, device: torch.device):
        self.states: list[torch.Tensor | None] = [None] * len(examples)
        order = sorted(range(len(examples)), key=lambda i: (len(examples[i].source_ids), i))
        for start in range(0, len(order), batch_size):
            chunk = order[start: start + batch_size]
            batch = collate([examples[i] for i in chunk], with_targets=False)
            states = model.encode(batch["source_ids"].to(device), batch["source_mask"].to(device)).cpu()
            for row, i in enumerate(chunk):
                self.states[i] = states[row, : len(examples[i].source_ids)].clone()

    def __getitem__(self, indices) -> list[torch.Tensor]:
        return [self.states[i] for i in indices]


def use_encoder_cache(model: MindMergerModel, examples: list[Example], settings: StageSettings) -> bool:
    """Cache when asked and when the states fit the budget (real tokens × width × element size): at the
    official scale (~10^6 pairs, mT5-xl) they would not, and the encoder then runs per micro-batch."""
    if not settings.cache_encoder_states:
        return False
    element = next(model.encoder.parameters()).element_size()
    size_gb = sum(len(e.source_ids) for e in examples) * model.d_enc * element / 2**30
    if size_gb > settings.encoder_cache_max_gb:
        log.warning("encoder states would take %.1f GB (> encoder_cache_max_gb %.1f): encoding per micro-batch",
                    size_gb, settings.encoder_cache_max_gb)
        return False
    return True


def make_batch(examples: list[Example], indices, states: EncoderStates | None) -> dict[str, torch.Tensor]:
    chosen = [examples[i] for i in indices]
    return collate(chosen, states[indices] if states is not None else None)


# -- dev perplexity ------------------------------------------------------------------------------------------
@torch.no_grad()
def dev_perplexity(model: MindMergerModel, dev: list[Example], micro_batch_size: int, device: torch.device,
                   states: EncoderStates | None = None) -> float:
    """exp(summed target loss / target tokens) over the whole dev set: token-weighted, not a mean of
    per-batch perplexities."""
    was_training = model.training
    model.train(False)
    total = 0.0
    for start in range(0, len(dev), micro_batch_size):
        indices = list(range(start, min(len(dev), start + micro_batch_size)))
        batch = {k: v.to(device) for k, v in make_batch(dev, indices, states).items()}
        total += mindmerger_loss_sum(model, batch).item()
    model.train(was_training)
    return math.exp(total / target_tokens(dev))


# -- the loop --------------------------------------------------------------------------------------------------
@dataclass
class StageResult:
    stage: str
    steps: int = 0
    total_steps: int = 0
    examples_seen: int = 0
    losses: list[float] = field(default_factory=list)
    dev_ppl: dict[int, float] = field(default_factory=dict)  # optimizer step → dev perplexity (0 = start)
    best_step: int = 0
    seconds: float = 0.0
    resumed_from: int | None = None

    @property
    def best_ppl(self) -> float:
        return self.dev_ppl[self.best_step]

    def summary(self) -> dict[str, Any]:
        return {"stage": self.stage, "steps": self.steps, "examples_seen": self.examples_seen,
                "first_loss": self.losses[0] if self.losses else None,
                "final_loss": self.losses[-1] if self.losses else None,
                "start_dev_ppl": self.dev_ppl.get(0), "final_dev_ppl": self.dev_ppl.get(self.steps),
                "best_dev_ppl": self.best_ppl, "best_step": self.best_step, "seconds": round(self.seconds, 2),
                "resumed_from": self.resumed_from}


def train_stage(backend, train: list[Example], dev: list[Example], settings: StageSettings,
                checkpoints=None, progress: Progress | None = None) -> tuple[StageResult, dict[str, torch.Tensor]]:
    """Train the mapping on `train`; return the result and the best mapping state (by dev perplexity)."""
    rank, world = getattr(backend, "rank", 0), getattr(backend, "world", 1)
    model: MindMergerModel = backend.model
    device = backend.device
    micro = settings.micro_batch_size
    n_micro = settings.micro_batches_per_step(world)
    steps = settings.steps(len(train), world)
    eval_every = settings.eval_every or max(1, math.ceil(len(train) / (n_micro * micro)))
    if len(train) < micro:
        raise InputError(f"{len(train)} training examples, fewer than one micro-batch ({micro})")
    order = BlockOrder(len(train), settings.seed)
    train_states = dev_states = None
    if use_encoder_cache(model, train + dev, settings):
        train_states = EncoderStates(model, train, settings.encoder_batch_size, device)
        dev_states = EncoderStates(model, dev, settings.encoder_batch_size, device)

    result = StageResult(settings.stage, total_steps=steps)
    start = 0
    if checkpoints is not None and (latest := checkpoints.latest()) is not None:
        start, folder = latest
        backend.load_state(folder)
        best_state = restore_stage_state(folder, result, settings)
        result.resumed_from = start
    else:
        result.dev_ppl[0] = dev_perplexity(model, dev, micro, device, dev_states)
        best_state = mapping_state(model)
    model.train()
    began = time.perf_counter()
    for step in range(start, steps):
        first = step * n_micro * micro
        indices = order.indices(first, n_micro * micro)
        micro_batches = [indices[m * micro: (m + 1) * micro] for m in range(n_micro)]
        n_targets = target_tokens([train[i] for i in indices])  # over all ranks
        # gradients are averaged over ranks, hence the factor `world` in the token weighting
        local = sum(backend.forward_backward(make_batch(train, b, train_states), world / n_targets)
                    for b in micro_batches[rank::world])
        loss_sum = backend.all_reduce_sum(local) if world > 1 else local
        grad_norm = backend.optimizer_step(step)

        result.losses.append(loss_sum / n_targets)
        result.steps, result.examples_seen = step + 1, result.examples_seen + len(indices)
        metrics = {"loss": result.losses[-1], "grad_norm": grad_norm}
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            ppl = result.dev_ppl[step + 1] = dev_perplexity(model, dev, micro, device, dev_states)
            metrics["dev_ppl"] = ppl
            if ppl < result.best_ppl:
                result.best_step, best_state = step + 1, mapping_state(model)
        if progress is not None:
            progress(step + 1, steps, metrics)
        if checkpoints is not None and (step + 1) % settings.checkpoint_every == 0 and step + 1 < steps:
            save_stage_checkpoint(backend, checkpoints, result, best_state, settings, rank)
    result.seconds += time.perf_counter() - began
    model.train(False)
    return result, best_state


def save_stage_checkpoint(backend, checkpoints, result: StageResult, best_state: dict[str, torch.Tensor],
                          settings: StageSettings, rank: int = 0) -> None:
    """Every rank takes part in gathering the state (ZeRO collectives); rank 0 alone commits it."""
    if rank != 0:
        with tempfile.TemporaryDirectory() as scratch:
            backend.save_state(Path(scratch))
        return
    with checkpoints.new(result.steps) as folder:
        backend.save_state(folder)
        save_file(best_state, str(folder / "best_mapping.safetensors"))
        state = asdict(result) | {"settings": settings.fingerprint()}
        (folder / "stage.json").write_text(json.dumps(state))
    checkpoints.prune(keep=2)


def restore_stage_state(folder: Path, result: StageResult, settings: StageSettings) -> dict[str, torch.Tensor]:
    meta = json.loads((folder / "stage.json").read_text())
    saved = meta.pop("settings")
    if saved != settings.fingerprint():
        changed = sorted(k for k in saved if saved[k] != settings.fingerprint().get(k))
        raise InputError(f"checkpoint {folder} was written with other MindMerger settings ({', '.join(changed)}); "
                         "refusing to resume from it")
    for name in ("steps", "examples_seen", "losses", "best_step", "seconds"):
        setattr(result, name, meta[name])
    result.dev_ppl = {int(k): v for k, v in meta["dev_ppl"].items()}
    return load_file(str(folder / "best_mapping.safetensors"))


# -- a whole stage, from model locations to output folder ---------------------------------------------------
def build_model(encoder_uri: str, llm_uri: str, dtype: str = "float32", seed: int = 0,
                init: str | Path | None = None, encoder_id: str | None = None,
                llm_id: str | None = None) -> MindMergerModel:
    """Encoder (alone) + LLM + a fresh mapping (seeded), or one initialised from `init`: a folder written by
    `save_mapping` (our earlier stage) or an official `pytorch_model.bin`."""
    from linguaforge.pipelines.models import MODEL_BUILD_LOCK, load_causal_lm, load_encoder, load_tokenizer

    with MODEL_BUILD_LOCK:  # see pipelines.models: no module creation while another thread loads one
        encoder, llm = load_encoder(encoder_uri, dtype), load_causal_lm(llm_uri, dtype)
        torch.manual_seed(seed)
        model = MindMergerModel(encoder, llm, load_tokenizer(llm_uri).bos_token_id)
    if init is not None:
        init = Path(init)
        if init.suffix == ".bin" or (init / "pytorch_model.bin").is_file() and not (init / "mapping.json").is_file():
            state = load_official_checkpoint(init, model.d_enc, model.d_llm)
        else:
            state, _ = load_mapping(init, model.d_enc, model.d_llm, encoder_id or encoder_uri, llm_id or llm_uri)
        model.mapping.load_state_dict(state)
    return model


def run_stage_training(encoder_uri: str, llm_uri: str, train: list[Example], dev: list[Example],
                       settings: StageSettings, out_dir: Path, *, dtype: str = "float32",
                       init: str | Path | None = None, checkpoints=None, progress: Progress | None = None,
                       device: torch.device | None = None, encoder_id: str | None = None,
                       llm_id: str | None = None) -> StageResult:
    """Train one stage and write into `out_dir`: last/ and best/ mappings (safetensors + mapping.json),
    best/pytorch_model.bin (the official layout), and train.json. `encoder_id`/`llm_id` name the models in
    the metadata (default: the URIs they were loaded from; a task passes names valid on any machine)."""
    model = build_model(encoder_uri, llm_uri, dtype, settings.seed, init, encoder_id, llm_id)
    world = 1
    if settings.backend == "deepspeed":
        import os

        world = int(os.environ.get("WORLD_SIZE", "1"))
    backend = make_backend(model, settings, settings.steps(len(train), world), device)
    result, best_state = train_stage(backend, train, dev, settings, checkpoints, progress)
    if getattr(backend, "rank", 0) == 0:
        write_stage_outputs(backend.model, best_state, result, encoder_id or encoder_uri, llm_id or llm_uri,
                            Path(out_dir))
    return result


def write_stage_outputs(model: MindMergerModel, best_state: dict[str, torch.Tensor], result: StageResult,
                        encoder_uri: str, llm_uri: str, out_dir: Path) -> None:
    def meta(step: int) -> MappingMeta:
        return MappingMeta(encoder=encoder_uri, llm=llm_uri, d_enc=model.d_enc, d_llm=model.d_llm,
                           stage=result.stage, step=step, dev_ppl=result.dev_ppl.get(step))

    save_mapping(model.mapping, out_dir / "last", meta(result.steps))
    best = type(model.mapping)(model.d_enc, model.d_llm)
    best.load_state_dict(best_state)
    save_mapping(best, out_dir / "best", meta(result.best_step))
    export_official_checkpoint(best, out_dir / "best" / "pytorch_model.bin")
    (out_dir / "train.json").write_text(json.dumps(content_only(asdict(result) | result.summary()), indent=1))


# -- a training process (alone, or under torchrun / deepspeed) ---------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train one MindMerger stage.")
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--llm", required=True)
    parser.add_argument("--train", required=True, help="examples Parquet (data.save_examples)")
    parser.add_argument("--dev", required=True, help="examples Parquet")
    parser.add_argument("--settings", required=True, help="JSON file of StageSettings fields")
    parser.add_argument("--out", required=True)
    parser.add_argument("--init", help="mapping folder or official pytorch_model.bin to start from")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--store")
    parser.add_argument("--kind")
    parser.add_argument("--key")
    args = parser.parse_args(argv)

    settings = StageSettings(**json.loads(Path(args.settings).read_text()))
    checkpoints = None
    if args.store:
        from linguaforge.storage import ArtifactStore

        checkpoints = ArtifactStore.from_handle(args.store).checkpoints(args.kind, args.key)
    result = run_stage_training(args.encoder, args.llm, load_examples(Path(args.train)),
                                load_examples(Path(args.dev)), settings, Path(args.out), dtype=args.dtype,
                                init=args.init, checkpoints=checkpoints)
    print(json.dumps(result.summary()))  # last line: the summary, execution facts (resumed_from) included


if __name__ == "__main__":
    main()
