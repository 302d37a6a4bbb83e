"""The plain torch back end (DeepSpeed's is in deepspeed_backend.py), and the optimizer state written without
pickle that both use in their checkpoints.

`loss_fn(model, batch)` returns the summed loss of a micro-batch; a recipe whose model is not a plain
causal LM (MindMerger's encoder + mapping + LLM) passes its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.training.causal_lm import causal_lm_loss_sum
from linguaforge.pipelines.training.settings import TrainSettings


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
        # called with the named trainable parameters after every step's backward passes, before clipping (Eq. 1's
        # accumulated gradient reads them there)
        self.gradient_observers: list[Callable[[list[tuple[str, torch.nn.Parameter]]], None]] = []

    def forward_backward(self, batch: dict[str, torch.Tensor], loss_scale: float) -> float:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self.autocast:
            loss = self.loss_fn(self.model, batch)
        (loss * loss_scale).backward()
        return loss.item()

    def optimizer_step(self, step: int) -> float:
        for observe in self.gradient_observers:
            observe(self.named_params)
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
