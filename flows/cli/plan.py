"""`linguaforge plan CONFIG [--gpus N] [--gpu-memory 80] [--nodes M]`: before anything runs, each training stage's
parameters, trainable share, memory per GPU (model states under its ZeRO stage, activations at its micro-batch and
block size, with or without checkpointing), tokens, and whether it fits, with the largest micro-batch that does
(pipelines/planning.py). The model comes from its config.json alone, built on the meta device."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from linguaforge.flows.cli.common import console, load_run_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def register(sub) -> None:
    plan = sub.add_parser("plan", help="memory per GPU of every training stage, before anything runs")
    plan.add_argument("config", nargs="?", help="YAML run configuration (default: configs/demo.yaml)")
    plan.add_argument("overrides", nargs="*", metavar="KEY.PATH=VALUE", help="settings changed, as for `run`")
    plan.add_argument("--gpus", type=int, help="GPUs per training stage (default: each stage's `processes`)")
    plan.add_argument("--nodes", type=int, default=1, help="nodes a stage spans (its GPUs: gpus × nodes)")
    plan.add_argument("--gpu-memory", type=float, help="GiB per GPU (default: this machine's first GPU, if any)")
    plan.add_argument("--model-config", help="the base model's config.json (default: read from models.base_llm)")
    plan.set_defaults(func=cmd_plan)


def cmd_plan(args) -> int:
    if args.config and "=" in args.config and not Path(args.config).exists():  # `plan key=value`: no file named
        args.overrides, args.config = [args.config, *args.overrides], None
    cfg = load_run_config(args)
    memory = args.gpu_memory if args.gpu_memory is not None else local_gpu_memory()
    plans = plan_run(cfg, model_config(cfg, args.model_config), args.gpus, args.nodes, memory)
    table = Table(title=f"plan of {cfg.name}: memory per GPU" + (f", {memory:g} GiB cards" if memory else ""))
    for column in ("stage", "GPUs", "ZeRO", "micro-batch", "checkpointing", "trainable", "tokens", "model states",
                   "activations", "total", "fits", "largest micro-batch"):
        table.add_column(column, justify="left" if column == "stage" else "right", no_wrap=column == "stage")
    for p in plans:
        fits = "—" if p.fits is None else "[green]yes[/]" if p.fits else "[red]no[/]"
        table.add_row(p.stage, str(p.gpus), "—" if p.zero_stage is None else str(p.zero_stage), str(p.micro_batch),
                      "on" if p.checkpointing else "off", f"{100 * p.trainable_share:.0f} %", f"{p.tokens:,}",
                      size(p.model_states), size(p.activations), size(p.total), fits,
                      "—" if p.largest_micro_batch is None else str(p.largest_micro_batch))
    console.print(table)
    for line in refusals(plans, memory):
        console.print(f"[red]does not fit:[/] {line}")
    return 0 if all(p.fits is not False for p in plans) else 1


def refusals(plans, memory: float | None) -> list[str]:
    """One line per stage that cannot fit, with what would make it fit."""
    from linguaforge.pipelines.planning import HEADROOM

    lines = []
    for p in plans:
        if p.fits is False:
            fix = (f"micro_batch_size {p.largest_micro_batch} fits" if p.largest_micro_batch else
                   "not even micro-batch 1 fits: more GPUs, a higher ZeRO stage"
                   + ("" if p.checkpointing else " or gradient_checkpointing: true"))
            if p.largest_micro_batch and not p.checkpointing:
                fix += ", or turn on gradient_checkpointing"
            lines.append(f"{p.stage} needs {size(p.total)} per GPU of {size(int(memory * HEADROOM * 2**30))} usable "
                         f"({memory:g} GiB cards): {fix}")
    return lines


def verdict_before_run(cfg, memory: float | None, go_on: bool) -> None:
    """`linguaforge run`: the plan's verdict before the first GPU stage; a stage that cannot fit is refused
    unless --ignore-plan. Where no GPU memory is known (no GPU, no --gpu-memory) there is nothing to check."""
    from linguaforge.flows.config import ConfigError
    from linguaforge.pipelines.errors import InputError

    if memory is None:
        return
    try:
        plans = plan_run(cfg, model_config(cfg, None), None, 1, memory)
    except InputError as exc:
        console.print(f"plan: not checked ({exc})")
        return
    worst = max(plans, key=lambda p: p.total)
    console.print(f"plan: largest stage {worst.stage}, {size(worst.total)} per GPU of {memory:g} GiB")
    lines = refusals(plans, memory)
    if lines and not go_on:
        more = f" (and {len(lines) - 1} more stages)" if len(lines) > 1 else ""
        raise ConfigError(f"{lines[0]}{more}; `linguaforge plan` shows every stage, --ignore-plan runs anyway")
    for line in lines:
        console.print(f"[yellow]does not fit, run anyway (--ignore-plan):[/] {line}")


def size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def model_config(cfg, path: str | None) -> dict:
    """The base model's config.json: the given file, the base model folder's, or the hub's (network)."""
    from linguaforge.pipelines.errors import InputError
    from linguaforge.pipelines.reading import read_json

    if path:
        return read_json(path, "model config")
    if cfg.models.base_llm.startswith("demo:"):
        from linguaforge.pipelines.demo.models import tiny_llm_config

        demo = cfg.demo  # the trained tokenizer's size is at most the target vocabulary
        return tiny_llm_config(demo.vocab_size, demo.llm_hidden_size, demo.llm_layers)
    local = Path(cfg.models.base_llm).expanduser() / "config.json"
    if local.is_file():
        return read_json(str(local), "model config")
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(cfg.models.base_llm).to_dict()
    except (OSError, ValueError) as exc:
        raise InputError(f"models.base_llm {cfg.models.base_llm}: its config.json cannot be read here "
                         f"({str(exc).splitlines()[0][:160]}); give it with --model-config") from None


def local_gpu_memory() -> float | None:
    import torch

    return torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None


def plan_run(cfg, config: dict, gpus: int | None, nodes: int, memory: float | None) -> list:
    """A StagePlan per training stage of the run (probes, masked CPT, full CPT, the demo's bootstrap)."""
    from linguaforge.pipelines.planning import Setup, model_shape, plan_training, zero_stage_of

    shape = model_shape(config)
    k1 = cfg.probe.k1_percent / 100
    stages = [("importance probe", cfg.probe.train, 1.0),
              ("masked CPT (ability + pivot)", cfg.masked_cpt.settings_for(True), min(1.0, 2 * k1)),
              ("masked CPT (each language)", cfg.masked_cpt.settings_for(False), k1)]
    if cfg.merge.baselines:
        stages.append(("full CPT", cfg.full_cpt.train, 1.0))
    if cfg.demo is not None:
        stages.insert(0, ("demo bootstrap", cfg.demo.bootstrap.train, 1.0))
    plans = []
    for name, train, trainable in stages:
        zero = zero_stage_of(_deepspeed_config(train.deepspeed_config), train.backend)
        count = (gpus or train.processes) * nodes
        block = cfg.corpus_prep.block_size
        per_step = train.micro_batch_size * max(1, -(-train.batch_tokens // (train.micro_batch_size * block)))
        setup = Setup(gpus=count, zero_stage=zero, micro_batch=train.micro_batch_size, block=block,
                      checkpointing=train.gradient_checkpointing, trainable=trainable if zero is None else 1.0,
                      tokens=train.steps * per_step * block)
        plans.append(plan_training(name, shape, setup, memory))
    return plans


def _deepspeed_config(path: str | None) -> dict | None:
    if not path:
        return None
    candidate = Path(path) if Path(path).is_file() else REPO_ROOT / path
    return json.loads(candidate.read_text()) if candidate.is_file() else None
