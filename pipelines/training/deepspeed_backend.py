"""The DeepSpeed back end: ZeRO 0–3 from a JSON config, behind the same interface as TorchBackend.

The training loop does not change: each micro-batch is `engine.backward` + `engine.step` (DeepSpeed steps
the optimizer at its gradient-accumulation boundary, with its own clipping and the LR schedule handed to
it as a LambdaLR); the loss is token-weighted across the step, so DeepSpeed's own 1/gas scaling is off.

Checkpoints avoid pickle: model weights in safetensors, and the full (gathered) fp32 weights and Adam
moments of every parameter through DeepSpeed's `safe_get_full_*` API — which works for every ZeRO stage —
plus the step count in JSON. Multi-process runs use `torchrun`/`deepspeed` launchers, which set RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; a single process gets them set here.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.reading import read_json
from linguaforge.pipelines.training.backends import LossFn, load_optimizer, save_optimizer
from linguaforge.pipelines.training.causal_lm import causal_lm_loss_sum
from linguaforge.pipelines.training.settings import TrainSettings

_MOMENTS = ("exp_avg", "exp_avg_sq")


def load_deepspeed_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {"zero_optimization": {"stage": 0}}
    return read_json(path, "DeepSpeed config")


def ensure_distributed_env() -> None:
    """A single process outside a launcher still needs the rendezvous variables (else DeepSpeed looks for MPI)."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def use_cpu_accelerator_without_gpu() -> None:
    """DeepSpeed picks its accelerator when first imported; without a GPU it must be told to use the CPU."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


class DeepSpeedBackend:
    def __init__(self, model: torch.nn.Module, settings: TrainSettings, block_size: int,
                 loss_fn: LossFn = causal_lm_loss_sum, masked: bool = False):
        use_cpu_accelerator_without_gpu()
        import deepspeed

        if masked and settings.weight_decay:
            raise InputError("masked CPT on the DeepSpeed back end needs weight_decay 0: DeepSpeed's AdamW would "
                             "decay frozen weights (the torch back end supports decay on the mask only)")
        ensure_distributed_env()
        self.settings, self.loss_fn = settings, loss_fn
        config = load_deepspeed_config(settings.deepspeed_config)
        self.rank, self.world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        world = self.world
        accumulation = -(-settings.accumulation(block_size) // world)  # per rank, as train() splits it
        config |= {"train_micro_batch_size_per_gpu": settings.micro_batch_size,
                   "gradient_accumulation_steps": accumulation,
                   "train_batch_size": settings.micro_batch_size * accumulation * world,
                   "gradient_clipping": settings.grad_clip or 0.0, "steps_per_print": 10**9}
        config.setdefault("optimizer", {"type": "AdamW", "params": {
            "lr": settings.learning_rate, "betas": list(settings.adam_betas), "eps": settings.adam_eps,
            "weight_decay": settings.weight_decay}})
        if settings.precision == "bf16":
            config["bf16"] = {"enabled": True}
        self.config = config
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise InputError("training: the model has no trainable parameters")
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=params, config=config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, settings.lr_factor))
        self.model = self.engine.module
        self.device = self.engine.device
        self.stage = self.engine.zero_optimization_stage()

    def forward_backward(self, batch: dict[str, torch.Tensor], loss_scale: float) -> float:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        loss = self.loss_fn(self.engine, batch)
        self.engine.backward(loss * loss_scale, scale_wrt_gas=False)
        self.engine.step()
        return loss.item()

    def all_reduce_sum(self, value: float) -> float:
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return t.item()

    def optimizer_step(self, step: int) -> float:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight at full size (gathered under ZeRO-3); trainable ones from the fp32 master copy."""
        from deepspeed.utils import safe_get_full_fp32_param

        state = {}
        for name, p in self.engine.module.named_parameters():
            if p.requires_grad and self.stage > 0:
                state[name] = _full(safe_get_full_fp32_param(p), p).to(p.dtype)
            elif self.stage == 3:
                import deepspeed

                with deepspeed.zero.GatheredParameters([p]):
                    state[name] = p.detach().cpu().clone()
            else:
                state[name] = p.detach().cpu().clone()
        return state

    # -- checkpoints without pickle ---------------------------------------------------------------
    def _named(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.engine.module.named_parameters() if p.requires_grad]

    def save_state(self, folder: Path) -> None:
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        if self.stage == 0:  # no ZeRO: the engine wraps a plain torch optimizer
            self.save_weights(folder)
            save_optimizer(_base_optimizer(self.engine), folder)
            self._save_meta(folder)
            return
        tensors = {}
        for name, p in self._named():
            tensors[f"fp32::{name}"] = _full(safe_get_full_fp32_param(p), p)
            for key in _MOMENTS:
                tensors[f"{key}::{name}"] = _full(safe_get_full_optimizer_state(p, key), p)
        if int(os.environ.get("RANK", "0")) == 0:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "deepspeed_state.safetensors"))
            self._save_meta(folder)

    def save_weights(self, folder: Path) -> None:
        """The module's weights in a stage-0 checkpoint (models with frozen parts may save less)."""
        save_model(self.engine.module, str(folder / "model.safetensors"))

    def load_weights(self, folder: Path) -> None:
        load_model(self.engine.module, str(folder / "model.safetensors"), device=str(self.device))

    def _save_meta(self, folder: Path) -> None:
        (folder / "deepspeed_state.json").write_text(json.dumps({
            "global_steps": self.engine.global_steps, "zero_stage": self.stage,
            "scheduler": {"last_epoch": self.engine.lr_scheduler.last_epoch}}))

    def load_state(self, folder: Path) -> None:
        from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

        meta = json.loads((folder / "deepspeed_state.json").read_text())
        if meta["zero_stage"] != self.stage:
            raise InputError(f"checkpoint {folder} was written under ZeRO stage {meta['zero_stage']}, "
                             f"this run uses stage {self.stage}")
        if self.stage == 0:
            self.load_weights(folder)
            load_optimizer(_base_optimizer(self.engine), folder, self.device)
        else:
            tensors = load_file(str(folder / "deepspeed_state.safetensors"))
            _materialise_optimizer_state(self.engine)
            for name, p in self._named():
                safe_set_full_fp32_param(p, tensors[f"fp32::{name}"].to(self.device))
                _set_model_weight(p, tensors[f"fp32::{name}"], self.stage)
                for key in _MOMENTS:
                    safe_set_full_optimizer_state(p, tensors[f"{key}::{name}"].to(self.device), key)
        steps = meta["global_steps"]
        self.engine.global_steps = steps
        self.engine.global_samples = steps * self.engine.train_batch_size()
        for state in _base_optimizer(self.engine).state.values():
            if "step" in state:
                state["step"] = torch.tensor(float(steps)) if torch.is_tensor(state["step"]) else steps
        self.engine.lr_scheduler.last_epoch = meta["scheduler"]["last_epoch"]
        self.engine.lr_scheduler._last_lr = [g["lr"] for g in self.engine.lr_scheduler.optimizer.param_groups]
        for group, base_lr in zip(self.engine.lr_scheduler.optimizer.param_groups, self.engine.lr_scheduler.base_lrs,
                                  strict=True):
            group["lr"] = base_lr * self.settings.lr_factor(meta["scheduler"]["last_epoch"])


def _set_model_weight(p: torch.nn.Parameter, value: torch.Tensor, stage: int) -> None:
    """The module's (low-precision) weights are copied from the fp32 master only at the next step, but the
    next forward pass needs them now."""
    if stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters([p], modifier_rank=0), torch.no_grad():
            p.copy_(value.to(p.dtype))
    else:
        with torch.no_grad():
            p.copy_(value.to(device=p.device, dtype=p.dtype))


def _materialise_optimizer_state(engine) -> None:
    """ZeRO-1/2 create Adam moments (and link them to each parameter's fragment) only at the first
    optimizer step; a resumed run must restore them before that, so create zero moments and link now."""
    zero = engine.optimizer
    if getattr(zero, "_hp_optimizer_states_linked", True):
        return
    inner = zero.optimizer
    for group in inner.param_groups:
        for flat in group["params"]:
            if not inner.state[flat]:
                inner.state[flat] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(flat),
                                     "exp_avg_sq": torch.zeros_like(flat)}
    zero._lazy_init_hp_params_optimizer_state()


def _full(value: torch.Tensor | None, p: torch.nn.Parameter) -> torch.Tensor:
    if value is None:  # ZeRO stage 0: the engine wraps a plain torch optimizer
        raise RuntimeError("no full state available")
    return value.detach().float().cpu().reshape(p.ds_shape if hasattr(p, "ds_shape") else p.shape)


def _base_optimizer(engine) -> torch.optim.Optimizer:
    optimizer = engine.optimizer
    return getattr(optimizer, "optimizer", optimizer)
