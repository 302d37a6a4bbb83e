"""The CPT stages of MAET extraction, as plain functions: run one CPT (probe, masked or full), turn a probe
into a key-neuron mask (Eq. 1), and store a trained model as a sparse delta against its base.

A CPT runs inside the calling process when `settings.processes == 1`, or as `settings.processes` worker
processes under torchrun (one per GPU, DeepSpeed or DDP-style data parallel); the workers report progress
on stdout and rank 0 writes the trained weights, which are read back here.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from linguaforge.pipelines.devices import resolve_device
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.maet.importance import (
    MASK_FILE,
    GradientSum,
    NeuronMask,
    check_k1,
    delta_score_source,
    select_top_k,
)
from linguaforge.pipelines.maet.masked import MaskedAdamW, apply_mask
from linguaforge.pipelines.merging.deltas import base_weights_digest, write_sparse_delta
from linguaforge.pipelines.models import load_causal_lm
from linguaforge.pipelines.training.backends import TorchBackend
from linguaforge.pipelines.training.causal_lm import CausalLMRecipe, PackedBlocks
from linguaforge.pipelines.training.launcher import Progress, run_processes, torchrun
from linguaforge.pipelines.training.loop import TRAIN_FILE, train
from linguaforge.pipelines.training.oom import with_oom_fallback
from linguaforge.pipelines.training.settings import TrainSettings
from linguaforge.pipelines.weights import WeightReader

DELTA_FILE = "delta.safetensors"  # a CPT artifact's sparse delta from the base


def run_cpt(model_dir: str, blocks_dir: str, settings: TrainSettings, mask: NeuronMask | None = None,
            checkpoints=None, progress: Progress | None = None, label: str = "training",
            gradients: GradientSum | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Train `model_dir` on the packed blocks (only `mask`'s neurons, if given). Returns the training
    summary (with the loss per step) and the trained weights by parameter name. Out of memory, the micro-batch
    is halved and training resumes from its last checkpoint (training/oom.py). `gradients`: filled with the
    gradient summed over the steps (Eq. 1's accumulated gradient; one process, plain torch back end)."""
    data = PackedBlocks.from_dir(Path(blocks_dir))
    fallbacks: list[dict[str, Any]] = []
    if gradients is not None and (settings.processes > 1 or settings.backend != "torch"):
        raise InputError(f"{label}: importance by the accumulated gradient needs one process on the plain torch "
                         "back end (probe.train: processes 1, backend torch); or use importance: value_change")

    def attempt(s: TrainSettings):
        if s.processes > 1:
            return _run_cpt_processes(model_dir, blocks_dir, s, mask, checkpoints, progress)
        backend = make_backend(load_causal_lm(model_dir), s, data.block_size, mask)
        if gradients is not None:
            gradients.sums.clear()  # an out-of-memory restart sums again from its first step
            backend.gradient_observers.append(gradients)
        result = train(backend, CausalLMRecipe(data, s), checkpoints=checkpoints, progress=progress)
        return result.summary() | {"losses": result.losses}, backend.full_state_dict()

    summary, weights = with_oom_fallback(attempt, settings, f"{label} of {model_dir}",
                                         lambda s: s.halved(data.block_size, s.processes), fallbacks)
    return summary | ({"oom_fallbacks": fallbacks} if fallbacks else {}), weights


def make_backend(model: torch.nn.Module, settings: TrainSettings, block_size: int, mask: NeuronMask | None = None):
    """Plain torch or DeepSpeed, by `settings.backend`, on `settings.device`; with a mask, only its neurons train."""
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # a cache is for generation; with recomputation it is only memory
    device = _rank_device() if settings.backend == "deepspeed" else resolve_device(settings.device, "training device")
    model.to(device)  # first: the mask's indices and hooks, and the optimizer's moments, are made where the weights are
    selections = apply_mask(model, mask) if mask is not None else None
    if settings.backend == "deepspeed":
        from linguaforge.pipelines.training.deepspeed_backend import DeepSpeedBackend

        return DeepSpeedBackend(model, settings, block_size, masked=mask is not None)
    optimizer = None
    if selections is not None:
        optimizer = MaskedAdamW(selections, lr=settings.learning_rate, betas=tuple(settings.adam_betas),
                                eps=settings.adam_eps, weight_decay=settings.weight_decay)
    return TorchBackend(model, settings, device=device, optimizer=optimizer)


def _rank_device() -> torch.device:
    """Where DeepSpeed puts this rank's model: its local GPU (torchrun sets LOCAL_RANK), or the CPU."""
    import os

    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() else \
        torch.device("cpu")


def _run_cpt_processes(model_dir, blocks_dir, settings, mask, checkpoints, progress):
    """`settings.processes` workers under torchrun on this node; checkpoints go to the same area."""
    with tempfile.TemporaryDirectory(prefix="cpt-") as tmp:
        tmp = Path(tmp)
        (tmp / "settings.json").write_text(settings.model_dump_json())
        command = torchrun(settings.processes, "linguaforge.pipelines.maet.cpt_worker",
                           "--model", model_dir, "--blocks", blocks_dir, "--settings", str(tmp / "settings.json"),
                           "--out", str(tmp / "out"), "--report-progress")
        if mask is not None:
            mask.save(tmp / MASK_FILE)
            command += ["--mask", str(tmp / MASK_FILE)]
        if checkpoints is not None:
            command += ["--store", checkpoints.store.handle(), "--kind", checkpoints.kind, "--key", checkpoints.key]
        run_processes(command, progress, settings.gpus)
        summary = json.loads((tmp / "out" / TRAIN_FILE).read_text())
        return summary, load_file(tmp / "out" / "weights.safetensors")


def key_neuron_mask(base_dir: str, probed: dict[str, torch.Tensor], k1_percent: float, granularity: str,
                    selection: str, gradients: GradientSum | None = None) -> NeuronMask:
    """Eq. 1 on a finished probe: importance = |θ' − θ| per neuron (or, given `gradients`, |Σ_t g_t|), top k1 %
    kept. The base is read one tensor at a time from its safetensors, so selection memory stays a few tensors."""
    check_k1(k1_percent)
    base = WeightReader(base_dir)
    names = [n for n in base.names() if n in probed]
    source = (gradients.score_source(names, granularity) if gradients is not None
              else delta_score_source(names, base.get, probed.__getitem__, granularity))
    masks = select_top_k(source, k1_percent, granularity, selection)
    return NeuronMask(granularity, source.shapes, masks, k1_percent)


def write_cpt_delta(path: Path, base_dir: str, base_id: str, trained: dict[str, torch.Tensor]) -> dict[str, int]:
    """θ_trained − θ_base as a sparse delta (only changed entries), tagged with the base's identity."""
    base = WeightReader(base_dir)
    triples = ((n, base.get(n), trained.get(n, base.get(n))) for n in base.names())
    return write_sparse_delta(path, triples, base_id=base_id, base_digest=base_weights_digest(base_dir))


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
