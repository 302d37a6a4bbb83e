"""MAET extraction stages: importance probes (Eq. 1 → key-neuron masks), masked CPT (→ sparse deltas),
and the full-CPT baseline. Each is one cached, resumable Prefect task; the flow fans them out."""

from __future__ import annotations

from pathlib import Path

from linguaforge.pipelines.maet.cpt import DELTA_FILE, key_neuron_mask, write_cpt_delta
from linguaforge.pipelines.maet.importance import MASK_FILE, GradientSum, NeuronMask, mask_anatomy
from linguaforge.pipelines.maet.masked import KeyNeurons
from linguaforge.pipelines.maet.settings import FullCPTConfig, ProbeConfig
from linguaforge.pipelines.merging.methods.maet import family_of
from linguaforge.pipelines.plots import loss_curve
from linguaforge.pipelines.reproducible import content_only
from linguaforge.pipelines.settings import key_params
from linguaforge.pipelines.training.causal_lm import PackedBlocks
from linguaforge.pipelines.training.cpt import run_cpt, save_trained_model
from linguaforge.pipelines.training.loop import TRAIN_FILE
from linguaforge.pipelines.training.settings import TrainConfig, TrainSettings
from linguaforge.storage import ArtifactRef, ArtifactWriter
from linguaforge.tasks.common import (
    MODEL_FOLDER,
    RunContext,
    Source,
    StageSpec,
    open_store,
    run_stage,
    stage_task,
)
from linguaforge.tasks.gpu_slots import gpu_slots, pinned
from linguaforge.tasks.progress import StageProgress

ANATOMY_FILE = "anatomy.json"


def probe_params(ctx: RunContext, probe: ProbeConfig) -> dict:
    return {"probe": key_params(probe), "seed": ctx.seed}


def cpt_params(ctx: RunContext, train: TrainConfig) -> dict:
    """Masked and full CPT: what they read is their TrainConfig and the seed."""
    return {"train": key_params(train), "seed": ctx.seed}


# importance_probe 2: keys derived from the settings models; 3: the mask's anatomy (anatomy.json)
IMPORTANCE_PROBE = StageSpec("importance_probe", 3, "mask", files=(MASK_FILE, ANATOMY_FILE), settings=ProbeConfig,
                             params=probe_params, run_name="probe-{name}")
# masked_cpt 3: MaskedAdamW decays matrices only, as full CPT's AdamW does (with weight decay, v2 decayed the norms)
MASKED_CPT = StageSpec("masked_cpt", 3, "delta", files=(DELTA_FILE, TRAIN_FILE), settings=TrainConfig,
                       params=cpt_params, run_name="masked_cpt-{name}")
FULL_CPT = StageSpec("full_cpt", 2, "delta", files=(DELTA_FILE, TRAIN_FILE, MODEL_FOLDER), settings=FullCPTConfig,
                     params=lambda ctx, full: cpt_params(ctx, full.train))


def _train(ctx: RunContext, w: ArtifactWriter, label: str, base_dir: str, blocks: str, settings: TrainSettings,
           mask: NeuronMask | None = None, gradients: GradientSum | None = None):
    """One CPT with progress in the UI and the terminal, then its loss curve and summary into the artifact."""
    with gpu_slots(settings.processes, ctx.gpus_per_node, label) as gpus, \
            StageProgress(label, settings.steps, tracker=ctx.tracker(label, w)) as progress:
        restriction = KeyNeurons(mask) if mask is not None else None
        summary, weights = run_cpt(base_dir, blocks, pinned(settings, gpus), restriction, checkpoints=w.checkpoints,
                                   progress=progress, label=label, observer=gradients)
    loss_curve(summary["losses"], w.path / "loss_curve.png", label)
    w.write_json(TRAIN_FILE, content_only(summary))
    w.metrics.update({k: v for k, v in summary.items() if k != "losses"})
    return weights


@stage_task(IMPORTANCE_PROBE, retries=2)
def importance_probe(ctx: RunContext, probe: ProbeConfig, name: str, corpus: ArtifactRef, base: Source) -> ArtifactRef:
    """Eq. 1: a short CPT on the corpus, then the top k1 % neurons by |θ' − θ| become the key neurons."""
    store = open_store(ctx.store)
    settings = TrainSettings.of(probe.train, ctx.seed, ctx.device)
    params = IMPORTANCE_PROBE.params(ctx, probe)
    sources = {"corpus": Source.of(corpus), "base": base}

    def build(w: ArtifactWriter) -> None:
        base_dir, blocks = base.local(store), sources["corpus"].local(store)
        gradients = GradientSum() if probe.importance == "gradient" else None
        probed = _train(ctx, w, f"probe {name}", base_dir, blocks, settings, gradients=gradients)
        mask = key_neuron_mask(base_dir, probed, probe.k1_percent, probe.granularity, probe.selection, gradients)
        mask.save(w.path / MASK_FILE, corpus=name)
        selected = mask.selected()
        total = sum(m.numel() for m in mask.masks.values())
        anatomy = mask_anatomy(mask, family_of, PackedBlocks.from_dir(Path(blocks)).token_ids())
        w.write_json(ANATOMY_FILE, anatomy)
        w.metrics.update({"key_neurons": sum(selected.values()), "neurons": total,
                          "selected_per_tensor": selected, "anatomy": anatomy})

    return run_stage(store, IMPORTANCE_PROBE, params=params,
                     sources=sources, build=build,
                     describe=lambda w: f"key neurons of **{name}**: {w.metrics['key_neurons']} of "
                                        f"{w.metrics['neurons']} ({probe.granularity} granularity, "
                                        f"{probe.importance}); " + anatomy_line(w.metrics["anatomy"]))


def anatomy_line(anatomy: dict) -> str:
    """A mask at a glance: which families its neurons are in, and whether its vocabulary rows are the corpus's."""
    families = ", ".join(f"{f} {100 * s:.0f} %" for f, s in sorted(anatomy["share_of_selected"].items(),
                                                                   key=lambda kv: -kv[1]) if s > 0)
    rows = [f"{100 * anatomy[k]:.0f} % of its {k.removesuffix('_rows_in_corpus')} rows are tokens of the corpus"
            for k in ("lm_head_rows_in_corpus", "embed_rows_in_corpus") if anatomy.get(k) is not None]
    return f"selected by family: {families}" + ("; " + "; ".join(rows) if rows else "")


@stage_task(MASKED_CPT, retries=2)
def masked_cpt(ctx: RunContext, train: TrainConfig, name: str, corpus: ArtifactRef, masks: list[ArtifactRef],
               base: Source) -> ArtifactRef:
    """CPT of only the union of `masks`' neurons; the result is stored as a sparse delta against the base.
    `train`: the ability + pivot run's settings or a language run's (MaskedCPTConfig.settings_for)."""
    store = open_store(ctx.store)
    settings = TrainSettings.of(train, ctx.seed, ctx.device)
    params = MASKED_CPT.params(ctx, train)
    sources = {"corpus": Source.of(corpus), "base": base} | {f"mask{i}": Source.of(m) for i, m in enumerate(masks)}

    def build(w: ArtifactWriter) -> None:
        base_dir = base.local(store)
        mask = _union([NeuronMask.load(store.open(m).path(MASK_FILE)) for m in masks])
        trained = _train(ctx, w, f"masked CPT {name}", base_dir, sources["corpus"].local(store), settings, mask)
        nnz = write_cpt_delta(w.path / DELTA_FILE, base_dir, base.label, trained)
        w.metrics.update({"changed_entries": sum(nnz.values()), "changed_tensors": sum(v > 0 for v in nnz.values()),
                          "delta_bytes": (w.path / DELTA_FILE).stat().st_size})

    return run_stage(store, MASKED_CPT, params=params,
                     sources=sources, build=build)


@stage_task(FULL_CPT, retries=2)
def full_cpt(ctx: RunContext, full: FullCPTConfig, corpus: ArtifactRef, base: Source) -> ArtifactRef:
    """The baseline: CPT of every weight on the ability corpus; kept as a model and as a (dense) delta."""
    store = open_store(ctx.store)
    settings = TrainSettings.of(full.train, ctx.seed, ctx.device)
    params = FULL_CPT.params(ctx, full)
    sources = {"corpus": Source.of(corpus), "base": base}

    def build(w: ArtifactWriter) -> None:
        base_dir = base.local(store)
        trained = _train(ctx, w, "full CPT (ability)", base_dir, sources["corpus"].local(store), settings)
        write_cpt_delta(w.path / DELTA_FILE, base_dir, base.label, trained)
        save_trained_model(base_dir, trained, w.path / MODEL_FOLDER)
        w.metrics["delta_bytes"] = (w.path / DELTA_FILE).stat().st_size

    return run_stage(store, FULL_CPT, params=params,
                     sources=sources, build=build)


def _union(masks: list[NeuronMask]) -> NeuronMask:
    mask = masks[0]
    for other in masks[1:]:
        mask = mask.union(other)
    return mask

