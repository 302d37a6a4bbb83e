"""Continued pretraining of a causal LM, as plain functions: one CPT on packed blocks (the demo's bootstrap, MAET's
probes, masked and full CPT all run this), the back end it trains on, and the trained model saved whole.

A CPT runs inside the calling process when `settings.processes == 1`, or as `settings.processes` worker processes
under torchrun (one per GPU, DeepSpeed or DDP-style data parallel); the workers report progress on stdout and
rank 0 writes the trained weights, which are read back here.

Which weights train is not this module's business: a `Restriction` (MAET's key neurons, pipelines/maet/masked.py)
freezes the rest and brings its own optimizer, and a worker process loads it by the class name it was given.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file

from linguaforge.pipelines.devices import resolve_device
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.models import load_causal_lm
from linguaforge.pipelines.training.backends import TorchBackend
from linguaforge.pipelines.training.causal_lm import CausalLMRecipe, PackedBlocks
from linguaforge.pipelines.training.launcher import Progress, run_processes, torchrun, worker_flags
from linguaforge.pipelines.training.loop import TRAIN_FILE, train
from linguaforge.pipelines.training.oom import with_oom_fallback
from linguaforge.pipelines.training.settings import TrainSettings

WEIGHTS_FILE = "weights.safetensors"  # what rank 0 of a multi-process CPT writes for the launching process


class Restriction(Protocol):
    """Which entries of a model train. `freeze(model)` is called once the model is on its device and leaves
    gradients only where training may go (hooks, requires_grad); `optimizer(settings)` is the optimizer over what
    trains (the plain torch back end uses it; DeepSpeed keeps its own). `save` writes it for worker processes, which
    read it back with the class's `load`."""

    def freeze(self, model: torch.nn.Module) -> None: ...

    def optimizer(self, settings: TrainSettings) -> torch.optim.Optimizer: ...

    def save(self, path: Path) -> None: ...


class GradientObserver(Protocol):
    """Sees the named trainable parameters after every step's backward passes (before clipping); `reset` forgets
    what it saw (an out-of-memory restart sees every step again)."""

    def __call__(self, named_params: list[tuple[str, torch.nn.Parameter]]) -> None: ...

    def reset(self) -> None: ...


def run_cpt(model_dir: str, blocks_dir: str, settings: TrainSettings, restriction: Restriction | None = None,
            checkpoints=None, progress: Progress | None = None, label: str = "training",
            observer: GradientObserver | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Train `model_dir` on the packed blocks (only what `restriction` leaves trainable, if given). Returns the
    training summary (with the loss per step) and the trained weights by parameter name. Out of memory, the
    micro-batch is halved and training resumes from its last checkpoint (training/oom.py). `observer`: sees every
    step's gradients (one process, plain torch back end)."""
    data = PackedBlocks.from_dir(Path(blocks_dir))
    fallbacks: list[dict[str, Any]] = []
    if observer is not None and (settings.processes > 1 or settings.backend != "torch"):
        raise InputError(f"{label}: importance by the accumulated gradient needs one process on the plain torch "
                         "back end (probe.train: processes 1, backend torch); or use importance: value_change")

    def attempt(s: TrainSettings):
        if s.processes > 1:
            return _run_cpt_processes(model_dir, blocks_dir, s, restriction, checkpoints, progress)
        backend = make_backend(load_causal_lm(model_dir), s, data.block_size, restriction)
        if observer is not None:
            observer.reset()
            backend.gradient_observers.append(observer)
        result = train(backend, CausalLMRecipe(data, s), checkpoints=checkpoints, progress=progress)
        return result.summary() | {"losses": result.losses}, backend.full_state_dict()

    summary, weights = with_oom_fallback(attempt, settings, f"{label} of {model_dir}",
                                         lambda s: s.halved(data.block_size, s.processes), fallbacks)
    return summary | ({"oom_fallbacks": fallbacks} if fallbacks else {}), weights


def make_backend(model: torch.nn.Module, settings: TrainSettings, block_size: int,
                 restriction: Restriction | None = None):
    """Plain torch or DeepSpeed, by `settings.backend`, on `settings.device`; with a restriction, only what it
    leaves trainable trains."""
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # a cache is for generation; with recomputation it is only memory
    device = _rank_device() if settings.backend == "deepspeed" else resolve_device(settings.device, "training device")
    model.to(device)  # first: a restriction's indices and hooks, and the optimizer's moments, go where the weights are
    if restriction is not None:
        restriction.freeze(model)
    if settings.backend == "deepspeed":
        from linguaforge.pipelines.training.deepspeed_backend import DeepSpeedBackend

        return DeepSpeedBackend(model, settings, block_size, masked=restriction is not None)
    optimizer = restriction.optimizer(settings) if restriction is not None else None
    return TorchBackend(model, settings, device=device, optimizer=optimizer)


def _rank_device() -> torch.device:
    """Where DeepSpeed puts this rank's model: its local GPU (torchrun sets LOCAL_RANK), or the CPU."""
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() else \
        torch.device("cpu")


def _run_cpt_processes(model_dir, blocks_dir, settings, restriction, checkpoints, progress):
    """`settings.processes` workers under torchrun on this node; checkpoints go to the same area."""
    with tempfile.TemporaryDirectory(prefix="cpt-") as tmp:
        tmp = Path(tmp)
        (tmp / "settings.json").write_text(settings.model_dump_json())
        command = torchrun(settings.processes, "linguaforge.pipelines.training.cpt_worker",
                           "--model", model_dir, "--blocks", blocks_dir, "--settings", str(tmp / "settings.json"),
                           "--out", str(tmp / "out"), *worker_flags(checkpoints))
        if restriction is not None:
            restriction.save(tmp / "restriction")
            command += ["--restriction", str(tmp / "restriction"), "--restriction-class", class_name(restriction)]
        run_processes(command, progress, settings.gpus)
        summary = json.loads((tmp / "out" / TRAIN_FILE).read_text())
        return summary, load_file(tmp / "out" / WEIGHTS_FILE)


def class_name(obj: object) -> str:
    return f"{type(obj).__module__}:{type(obj).__qualname__}"


def load_restriction(name: str, path: Path) -> Restriction:
    """The restriction a worker was handed: its class by "module:Class", read back with that class's `load`."""
    module, qualname = name.split(":")
    loader: Callable[[Path], Restriction] = getattr(import_module(module), qualname).load
    return loader(path)


def save_trained_model(base_dir: str, trained: dict[str, torch.Tensor], out: Path) -> None:
    """A full HF folder (config, tokenizer, weights) for a model that is evaluated as a whole."""
    from linguaforge.pipelines.models import load_tokenizer

    model = load_causal_lm(base_dir)
    missing = set(dict(model.named_parameters())) - set(trained)
    if missing:
        raise RuntimeError(f"trained weights lack {sorted(missing)[:3]}")
    model.load_state_dict(trained, strict=False)
    model.save_pretrained(out)
    load_tokenizer(base_dir).save_pretrained(out)
