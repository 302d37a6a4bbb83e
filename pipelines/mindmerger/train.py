"""MindMerger training: both stages (mapping, then augmentation) as one recipe on the training core's loop.

The loop (pipelines/training/loop.py) steps; this recipe says what differs from CPT, and why:
- samples are (source, prompt, target) examples, not fixed token blocks, so a step is a number of
  examples (`global_batch_size`) and its loss is weighted by the target tokens (EOS included) it holds;
- before the first step, and every `eval_every` steps, the dev perplexity is measured, and the best
  mapping so far is kept (a checkpoint holds it too);
- the frozen encoder's states are computed once per stage, in fixed chunks, and reused every epoch
  (the encoder is in eval mode, so they cannot change); fixed chunks make them bit-identical in a
  fresh and in a resumed run;
- checkpoints hold the mapping and its optimizer state only (the back ends below): the encoder and LLM
  never change, and an 8B LLM would otherwise add 16 GB to every checkpoint;
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
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from linguaforge.pipelines.devices import resolve_device
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.mindmerger.checkpoint import (
    MappingMeta,
    export_official_checkpoint,
    load_mapping,
    load_official_checkpoint,
    save_mapping,
)
from linguaforge.pipelines.mindmerger.data import (
    Example,
    collate,
    load_examples,
    save_examples,
    target_tokens,
)
from linguaforge.pipelines.mindmerger.model import (
    Mapping,
    MindMergerModel,
    encoder_dim,
    llm_dim,
    mindmerger_loss_sum,
)
from linguaforge.pipelines.mindmerger.settings import StageSettings
from linguaforge.pipelines.reproducible import content_only
from linguaforge.pipelines.training.backends import TorchBackend, load_optimizer, save_optimizer
from linguaforge.pipelines.training.launcher import (
    add_worker_flags,
    run_processes,
    torchrun,
    worker_checkpoints,
    worker_flags,
    worker_progress,
)
from linguaforge.pipelines.training.loop import TRAIN_FILE, Progress, TrainResult, train
from linguaforge.pipelines.training.oom import with_oom_fallback

log = logging.getLogger("linguaforge.mindmerger")


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


def mapping_backend(model: MindMergerModel, settings: StageSettings, steps: int, device: torch.device | None = None):
    train_settings = settings.backend_settings(steps)
    if settings.backend == "deepspeed":
        from linguaforge.pipelines.training.deepspeed_backend import DeepSpeedBackend

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


# -- the recipe -------------------------------------------------------------------------------------------------
class MindMergerRecipe:
    """Training examples as samples; dev perplexity at the start, every `eval_every` steps and at the end,
    with the best mapping (lowest dev perplexity) kept."""

    def __init__(self, model: MindMergerModel, train_set: list[Example], dev: list[Example], settings: StageSettings,
                 device: torch.device, world: int = 1):
        self.model, self.train_set, self.dev, self.settings, self.device = model, train_set, dev, settings, device
        self.steps, self.micro_batch_size = settings.steps(len(train_set), world), settings.micro_batch_size
        self.seed, self.checkpoint_every = settings.seed, settings.checkpoint_every
        per_epoch = math.ceil(len(train_set) / (settings.micro_batches_per_step(world) * settings.micro_batch_size))
        self.eval_every = settings.eval_every or max(1, per_epoch)
        self.train_states = self.dev_states = None
        if use_encoder_cache(model, train_set + dev, settings):
            self.train_states = EncoderStates(model, train_set, settings.encoder_batch_size, device)
            self.dev_states = EncoderStates(model, dev, settings.encoder_batch_size, device)
        self.dev_ppl: dict[int, float] = {}  # optimizer step → dev perplexity (0 = start)
        self.best_step, self.best_state = 0, None

    def __len__(self) -> int:
        return len(self.train_set)

    def micro_batches(self, world: int) -> int:
        return self.settings.micro_batches_per_step(world)

    def check(self) -> None:
        if len(self.train_set) < self.micro_batch_size:
            raise InputError(f"{len(self.train_set)} training examples, fewer than one micro-batch "
                             f"({self.micro_batch_size})")

    def batch(self, indices) -> dict[str, torch.Tensor]:
        return make_batch(self.train_set, indices, self.train_states)

    def target_tokens(self, indices) -> int:
        return target_tokens([self.train_set[i] for i in indices])

    def start(self) -> None:
        self.dev_ppl[0] = self._dev_perplexity()
        self.best_state = mapping_state(self.model)

    def after_step(self, step: int, metrics: dict[str, float]) -> None:
        if step % self.eval_every == 0 or step == self.steps:
            ppl = metrics["dev_ppl"] = self.dev_ppl[step] = self._dev_perplexity()
            if ppl < self.dev_ppl[self.best_step]:
                self.best_step, self.best_state = step, mapping_state(self.model)

    def _dev_perplexity(self) -> float:
        return dev_perplexity(self.model, self.dev, self.micro_batch_size, self.device, self.dev_states)

    def fingerprint(self) -> dict[str, Any]:
        return self.settings.fingerprint()

    def save(self, folder: Path) -> dict[str, Any]:
        save_file(self.best_state, str(folder / "best_mapping.safetensors"))
        return {"dev_ppl": self.dev_ppl, "best_step": self.best_step}

    def restore(self, folder: Path, state: dict[str, Any]) -> None:
        self.dev_ppl = {int(k): v for k, v in state["dev_ppl"].items()}
        self.best_step = state["best_step"]
        self.best_state = load_file(str(folder / "best_mapping.safetensors"))

    def summary(self, result: TrainResult) -> dict[str, Any]:
        return {"stage": self.settings.stage, "total_steps": self.steps, "examples_seen": result.samples,
                "start_dev_ppl": self.dev_ppl.get(0), "final_dev_ppl": self.dev_ppl.get(result.steps),
                "best_dev_ppl": self.dev_ppl[self.best_step], "best_step": self.best_step}


@dataclass
class StageResult:
    """A finished stage: the loop's result and the recipe's dev measurements."""

    run: TrainResult
    dev_ppl: dict[int, float]
    best_step: int

    @property
    def steps(self) -> int:
        return self.run.steps

    @property
    def losses(self) -> list[float]:
        return self.run.losses

    @property
    def best_ppl(self) -> float:
        return self.dev_ppl[self.best_step]

    def summary(self) -> dict[str, Any]:
        return self.run.summary()


def train_stage(backend, train_set: list[Example], dev: list[Example], settings: StageSettings, checkpoints=None,
                progress: Progress | None = None) -> tuple[StageResult, dict[str, torch.Tensor]]:
    """Train the mapping on `train_set`; return the result and the best mapping state (by dev perplexity)."""
    recipe = MindMergerRecipe(backend.model, train_set, dev, settings, backend.device, getattr(backend, "world", 1))
    run = train(backend, recipe, checkpoints=checkpoints, progress=progress)
    return StageResult(run, recipe.dev_ppl, recipe.best_step), recipe.best_state


# -- a whole stage, from model locations to output folder ---------------------------------------------------
@dataclass(frozen=True)
class ModelPair:
    """The frozen encoder and LLM a mapping joins: where each is read (HF ids or folders), how the mapping's
    metadata names them (a task passes names valid on any machine; default: the locations), and their dtype."""

    encoder: str
    llm: str
    encoder_id: str | None = None
    llm_id: str | None = None
    dtype: str = "float32"

    @property
    def names(self) -> tuple[str, str]:
        return self.encoder_id or self.encoder, self.llm_id or self.llm


def build_model(pair: ModelPair, seed: int = 0, init: str | Path | None = None) -> MindMergerModel:
    """Encoder (alone) + LLM + a fresh mapping (seeded), or one initialised from `init`: a folder written by
    `save_mapping` (our earlier stage) or an official `pytorch_model.bin`."""
    from linguaforge.pipelines.models import MODEL_BUILD_LOCK, load_causal_lm, load_encoder, load_tokenizer

    encoder_uri, llm_uri, dtype = pair.encoder, pair.llm, pair.dtype
    with MODEL_BUILD_LOCK:  # see pipelines.models: no module creation while another thread loads one
        encoder, llm = load_encoder(encoder_uri, dtype), load_causal_lm(llm_uri, dtype)
        mapping = Mapping(encoder_dim(encoder), llm_dim(llm), seed=seed)  # seeded by a generator of its own
        model = MindMergerModel(encoder, llm, load_tokenizer(llm_uri).bos_token_id, mapping)
    if init is not None:
        init = Path(init)
        if init.suffix == ".bin" or (init / "pytorch_model.bin").is_file() and not (init / "mapping.json").is_file():
            state = load_official_checkpoint(init, model.d_enc, model.d_llm)
        else:
            state, _ = load_mapping(init, model.d_enc, model.d_llm, *pair.names)
        model.mapping.load_state_dict(state)
    return model


def run_stage_training(pair: ModelPair, train: list[Example], dev: list[Example], settings: StageSettings,
                       out_dir: Path, *, init: str | Path | None = None, checkpoints=None,
                       progress: Progress | None = None) -> StageResult:
    """Train one stage on `settings.device` and write into `out_dir`: last/ and best/ mappings (safetensors +
    mapping.json), best/pytorch_model.bin (the official layout), and train.json. With `settings.processes` > 1,
    as that many worker processes under torchrun (this module's `main`), as CPT runs (training/launcher.py)."""
    if settings.processes > 1 and "RANK" not in os.environ:
        return _run_stage_processes(pair, train, dev, settings, out_dir, init, checkpoints, progress)
    world = int(os.environ.get("WORLD_SIZE", "1")) if settings.backend == "deepspeed" else 1
    device = resolve_device(settings.device, "MindMerger device")
    fallbacks: list[dict[str, Any]] = []

    def attempt(s: StageSettings):
        model = build_model(pair, s.seed, init)
        if s.gradient_checkpointing:
            model.enable_llm_recomputation()
        backend = mapping_backend(model, s, s.steps(len(train), world), device)
        return backend, *train_stage(backend, train, dev, s, checkpoints, progress)

    backend, result, best_state = with_oom_fallback(attempt, settings, f"MindMerger {settings.stage} stage",
                                                    lambda s: s.halved(world), fallbacks)
    if fallbacks:
        result.run.details["oom_fallbacks"] = fallbacks
    if getattr(backend, "rank", 0) == 0:
        write_stage_outputs(backend.model, best_state, result, settings.stage, *pair.names, Path(out_dir))
    return result


def write_stage_outputs(model: MindMergerModel, best_state: dict[str, torch.Tensor], result: StageResult, stage: str,
                        encoder_uri: str, llm_uri: str, out_dir: Path) -> None:
    def meta(step: int) -> MappingMeta:
        return MappingMeta(encoder=encoder_uri, llm=llm_uri, d_enc=model.d_enc, d_llm=model.d_llm,
                           stage=stage, step=step, dev_ppl=result.dev_ppl.get(step))

    save_mapping(model.mapping, out_dir / "last", meta(result.steps))
    best = type(model.mapping)(model.d_enc, model.d_llm)
    best.load_state_dict(best_state)
    save_mapping(best, out_dir / "best", meta(result.best_step))
    export_official_checkpoint(best, out_dir / "best" / "pytorch_model.bin")
    record = result.summary() | {"losses": result.losses, "dev_ppl": result.dev_ppl}
    (out_dir / TRAIN_FILE).write_text(json.dumps(content_only(record), indent=1))


def _run_stage_processes(pair: ModelPair, train: list[Example], dev: list[Example], settings: StageSettings,
                         out_dir: Path, init, checkpoints, progress: Progress | None) -> StageResult:
    """`settings.processes` workers of this module under torchrun on this node; rank 0 writes `out_dir` and hands
    its result back in a file; checkpoints go to the same area as in one process."""
    with tempfile.TemporaryDirectory(prefix="mindmerger-") as tmp:
        tmp = Path(tmp)
        save_examples(train, tmp / "train.parquet")
        save_examples(dev, tmp / "dev.parquet")
        (tmp / "settings.json").write_text(json.dumps(asdict(settings)))
        command = torchrun(settings.processes, "linguaforge.pipelines.mindmerger.train", "--encoder", pair.encoder,
                           "--llm", pair.llm, "--dtype", pair.dtype, "--train", str(tmp / "train.parquet"),
                           "--dev", str(tmp / "dev.parquet"), "--settings", str(tmp / "settings.json"),
                           "--out", str(out_dir), "--result", str(tmp / "result.json"),
                           "--encoder-id", pair.names[0], "--llm-id", pair.names[1], *worker_flags(checkpoints))
        if init is not None:
            command += ["--init", str(init)]
        run_processes(command, progress, settings.gpus)
        done = json.loads((tmp / "result.json").read_text())
    return StageResult(TrainResult(**done["run"]), {int(k): v for k, v in done["dev_ppl"].items()}, done["best_step"])


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
    add_worker_flags(parser)
    parser.add_argument("--encoder-id", help="how the mapping's metadata names the encoder (default: --encoder)")
    parser.add_argument("--llm-id", help="how the mapping's metadata names the LLM (default: --llm)")
    parser.add_argument("--result", help="rank 0 writes the stage's result here (JSON) for the launching process")
    args = parser.parse_args(argv)

    settings = StageSettings(**json.loads(Path(args.settings).read_text()))
    pair = ModelPair(args.encoder, args.llm, args.encoder_id, args.llm_id, args.dtype)
    result = run_stage_training(pair, load_examples(Path(args.train)), load_examples(Path(args.dev)), settings,
                                Path(args.out), init=args.init, checkpoints=worker_checkpoints(args),
                                progress=worker_progress(args))
    if args.result and int(os.environ.get("RANK", "0")) == 0:
        Path(args.result).write_text(json.dumps({"run": asdict(result.run), "dev_ppl": result.dev_ppl,
                                                 "best_step": result.best_step}))
    print(json.dumps(result.summary()))  # last line: the summary, execution facts (resumed_from) included


if __name__ == "__main__":
    main()
