"""Masked CPT: train only the key neurons, and leave every other weight bit-identical.

`KeyNeurons` is the training core's `Restriction` (pipelines/training/cpt.py): the core trains whatever it is
given, and this room says which entries that is. Two mechanisms, used together:
- a gradient hook zeroes the gradient outside the mask, so gradient clipping (and any optimizer) sees only
  trainable entries;
- `MaskedAdamW` keeps Adam moments only for the trainable entries (indices into each tensor) and writes
  only those entries: weight decay and momentum cannot touch a frozen weight, and optimizer memory scales
  with k1, not with the model. Tensors with no trainable entry are frozen outright (requires_grad=False).
"""

from __future__ import annotations

from pathlib import Path

import torch

from linguaforge.pipelines.maet.importance import NeuronMask


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay) over selected entries of each parameter.

    `selections` maps each parameter to the flat indices (element granularity) or row indices (row
    granularity) it may update. The state per parameter is the index tensor and two moment tensors of
    the selected size. Weight decay applies to matrices only, as the plain back end's AdamW does
    (training/backends.py: norms and biases are not decayed), so an all-ones mask is full training.
    """

    def __init__(self, selections: list[tuple[torch.nn.Parameter, torch.Tensor, str]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        matrices = [p for p, _, _ in selections if p.ndim >= 2]
        vectors = [p for p, _, _ in selections if p.ndim < 2]
        groups = [{"params": matrices, "weight_decay": weight_decay}, {"params": vectors, "weight_decay": 0.0}]
        super().__init__([g for g in groups if g["params"]] or groups[:1], dict(lr=lr, betas=betas, eps=eps))
        # Which entries train is fixed by the mask, not learned state: it stays out of state_dict(), so a
        # checkpoint holds only step and moments (torch's load_state_dict would cast an index to float).
        self.selection = {p: (index, mode == "row") for p, index, mode in selections}
        for p, (index, rows) in self.selection.items():
            selected = p.detach()[index] if rows else p.detach().view(-1)[index]
            self.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(selected, dtype=torch.float32),
                             "exp_avg_sq": torch.zeros_like(selected, dtype=torch.float32)}

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                index, rows = self.selection[p]
                view = p if rows else p.view(-1)
                grad = (p.grad if rows else p.grad.view(-1))[index].float()
                weights = view[index].float()
                state["step"] += 1
                t = state["step"].item()
                state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias1, bias2 = 1 - beta1**t, 1 - beta2**t
                denom = (state["exp_avg_sq"] / bias2).sqrt_().add_(eps)
                weights.mul_(1 - lr * wd).addcdiv_(state["exp_avg"], denom, value=-lr / bias1)
                view[index] = weights.to(p.dtype)

    def state_bytes(self) -> int:
        moments = sum(t.numel() * t.element_size() for s in self.state.values() for t in s.values() if torch.is_tensor(t))
        return moments + sum(index.numel() * index.element_size() for index, _ in self.selection.values())


def apply_mask(model: torch.nn.Module, mask: NeuronMask) -> list[tuple[torch.nn.Parameter, torch.Tensor, str]]:
    """Freeze everything outside `mask`: returns (parameter, indices, mode) for MaskedAdamW, registers
    gradient hooks that zero frozen entries, and turns off gradients of fully frozen tensors."""
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    mask.check_model(shapes, "the model being trained")
    selections = []
    for name, param in model.named_parameters():
        neuron = mask.masks.get(name)
        if neuron is None or not neuron.any():
            param.requires_grad_(False)
            continue
        param.requires_grad_(True)
        rows = mask.granularity == "row" and param.ndim >= 2
        index = neuron.nonzero().flatten()
        full = mask.full(name).to(param.device)
        param.register_hook(lambda g, keep=full: g * keep)
        selections.append((param, index.to(param.device), "row" if rows else "element"))
    return selections


class KeyNeurons:
    """A NeuronMask as the training core's Restriction: only the mask's neurons train, under MaskedAdamW."""

    def __init__(self, mask: NeuronMask):
        self.mask, self.selections = mask, None

    def freeze(self, model: torch.nn.Module) -> None:
        self.selections = apply_mask(model, self.mask)

    def optimizer(self, settings) -> MaskedAdamW:
        return MaskedAdamW(self.selections, lr=settings.learning_rate, betas=tuple(settings.adam_betas),
                           eps=settings.adam_eps, weight_decay=settings.weight_decay)

    def save(self, path: Path) -> None:
        self.mask.save(path)

    @classmethod
    def load(cls, path: Path) -> KeyNeurons:
        return cls(NeuronMask.load(path))
