"""MindMerger stages: the mapping stage (translation pairs) and the augmentation stage (translated task
queries, initialised from the mapping stage's best mapping), one cached artifact per (stage, LLM).

Each artifact holds
    best/   mapping.safetensors + mapping.json (metadata), pytorch_model.bin (the official layout)
    last/   mapping.safetensors + mapping.json
    data/   train.parquet, dev.parquet (tokenized examples), stats.json (counts, skips per reason/language)
    models.json    the encoder and LLM it was trained for, as stage sources (resolvable on any machine)
    train.json, loss_curve.png
and the generator factory registered here (kind "mindmerger") turns an augmentation artifact into a
model the benchmark evaluation scores like any LLM.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from linguaforge.pipelines.devices import resolve_device
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.mindmerger.data import (
    TextExample,
    read_queries,
    read_translation_pairs,
    save_examples,
    split_dev,
    template_queries,
    tokenize,
)
from linguaforge.pipelines.mindmerger.generate import MindMergerGenerator
from linguaforge.pipelines.mindmerger.settings import MindMergerConfig
from linguaforge.pipelines.mindmerger.train import ModelPair, run_stage_training
from linguaforge.pipelines.models import load_tokenizer
from linguaforge.pipelines.plots import loss_curve
from linguaforge.pipelines.settings import key_params
from linguaforge.storage import ArtifactRef, ArtifactStore, ArtifactWriter
from linguaforge.tasks.common import (
    RunContext,
    Source,
    StageSpec,
    demo_source,
    open_store,
    run_stage,
    stage_task,
)
from linguaforge.tasks.evaluate import EvalModel
from linguaforge.tasks.gpu_slots import gpu_slots, pinned_device
from linguaforge.tasks.progress import StageProgress

# what each stage does not read of MindMergerConfig: the other stage's schedule, data that enter the key as
# sources, and the run-level choices (whether MindMerger runs, on which LLMs: the LLM is a source too)
# (where it computes, and recomputed activations, change no result beyond float rounding)
# (and how many processes share a step's examples: as for CPT, the order of the examples is global)
STAGE_IGNORES = {
    "mapping": frozenset({"enabled", "llms", "augmentation", "task", "translation_data", "query_data", "device",
                          "gradient_checkpointing", "processes"}),
    "augmentation": frozenset({"enabled", "llms", "mapping", "translation_data", "query_data", "device",
                               "gradient_checkpointing", "processes"}),
}


def _location(source: Source, store: ArtifactStore) -> str:
    """Data inside an artifact become a local folder; external folders and URLs are read where they are."""
    return source.local(store) if source.ref is not None else str(source.uri)


def stage_params(ctx: RunContext, mm: MindMergerConfig, stage: str, llm_name: str,
                 languages: list[str]) -> dict[str, Any]:
    return {"llm_name": llm_name, "languages": languages, "dtype": ctx.dtype, "seed": ctx.seed,
            "mindmerger": key_params(mm, STAGE_IGNORES[stage])}


MODELS_FILE = "models.json"  # the encoder and LLM a MindMerger stage was trained on, as portable sources
# versions: 2: keys derived from the settings models
MINDMERGER_MAPPING = StageSpec("mindmerger_mapping", 2, "mindmerger", files=("best", MODELS_FILE),
                               ignores=STAGE_IGNORES["mapping"], run_name="mindmerger_mapping-{llm_name}")
MINDMERGER_AUGMENTATION = StageSpec("mindmerger_augmentation", 2, "mindmerger", files=("best", MODELS_FILE),
                                    ignores=STAGE_IGNORES["augmentation"],
                                    run_name="mindmerger_augmentation-{llm_name}")


def _train_into(w: ArtifactWriter, store: ArtifactStore, ctx: RunContext, mm: MindMergerConfig, stage: str,
                label: str, texts: list[TextExample], encoder: Source, llm: Source, init: str | None = None) -> None:
    """Tokenize, split, train one stage into the artifact folder, and record what it did."""
    sc = mm.stage_config(stage)
    settings = mm.stage_settings(stage, ctx.dtype, ctx.seed, ctx.device)
    encoder_dir, llm_dir = encoder.local(store), llm.local(store)
    tokenized = tokenize(texts, load_tokenizer(encoder_dir), load_tokenizer(llm_dir), sc.max_source_len,
                         sc.max_target_len)
    train, dev = split_dev(tokenized.examples, mm.dev_fraction, ctx.seed)
    (w.path / "data").mkdir(parents=True, exist_ok=True)
    save_examples(train, w.path / "data" / "train.parquet")
    save_examples(dev, w.path / "data" / "dev.parquet")
    per_language: dict[str, int] = {}
    for e in tokenized.examples:
        per_language[e.language] = per_language.get(e.language, 0) + 1
    stats = {"read": len(texts), "kept": len(tokenized.examples), "train": len(train), "dev": len(dev),
             "kept_per_language": per_language, "skipped": tokenized.report()}
    w.write_json("data/stats.json", stats)
    with gpu_slots(settings.processes, ctx.gpus_per_node, label) as gpus, \
            StageProgress(f"{label}", settings.steps(len(train)), tracker=ctx.tracker(label, w)) as progress:
        settings.device, settings.gpus = pinned_device(settings.device, gpus), gpus
        pair = ModelPair(encoder_dir, llm_dir, encoder.label, llm.label, ctx.dtype)
        result = run_stage_training(pair, train, dev, settings, w.path, init=init, checkpoints=w.checkpoints,
                                    progress=progress)
    # dev as log-perplexity: the same units (nats per target token) as the training loss
    loss_curve(result.losses, w.path / "loss_curve.png", label,
               dev={step: math.log(ppl) for step, ppl in result.dev_ppl.items()})
    w.write_json(MODELS_FILE, {"stage": stage, "encoder": _portable(encoder), "llm": _portable(llm)})
    w.metrics.update({k: v for k, v in result.summary().items() if v is not None})
    w.metrics.update({"train_examples": len(train), "dev_examples": len(dev),
                      "skipped": sum(tokenized.skipped.values())})


@stage_task(MINDMERGER_MAPPING, retries=2)
def mindmerger_mapping(ctx: RunContext, mm: MindMergerConfig, llm_name: str, llm: Source, encoder: Source,
                       world: ArtifactRef | None) -> ArtifactRef:
    """Stage 1: train the mapping on X→English translation pairs of every configured language (no prompt)."""
    store = open_store(ctx.store)
    languages = sorted(mm.translation_data)
    if not languages:
        raise InputError("mindmerger.translation_data names no language: the mapping stage has no data")
    data = {lang: demo_source(uri, world) for lang, uri in mm.translation_data.items()}
    sources = {"encoder": encoder, "llm": llm} | {f"translation_{lang}": s for lang, s in data.items()}

    def build(w: ArtifactWriter) -> None:
        texts = [p for lang in languages for p in read_translation_pairs(_location(data[lang], store), lang)]
        _train_into(w, store, ctx, mm, "mapping", f"mindmerger mapping ({llm_name})", texts, encoder, llm)

    return run_stage(store, MINDMERGER_MAPPING,
                     params=stage_params(ctx, mm, "mapping", llm_name, languages), sources=sources, build=build,
                     describe=_describe)


@stage_task(MINDMERGER_AUGMENTATION, retries=2)
def mindmerger_augmentation(ctx: RunContext, mm: MindMergerConfig, llm_name: str, llm: Source, encoder: Source,
                            mapping: ArtifactRef, world: ArtifactRef | None) -> ArtifactRef:
    """Stage 2: translated task queries with the task prompt, starting from the mapping stage's best mapping."""
    store = open_store(ctx.store)
    languages = ctx.all_languages
    queries = demo_source(mm.query_data, world)
    init = Source.of(mapping, "best")
    sources = {"encoder": encoder, "llm": llm, "queries": queries, "init": init}

    def build(w: ArtifactWriter) -> None:
        folder = _location(queries, store)
        texts = [t for lang in languages
                 for t in template_queries(read_queries(folder, lang), mm.task, lang)]
        _train_into(w, store, ctx, mm, "augmentation", f"mindmerger augmentation ({llm_name})", texts, encoder, llm,
                    init=init.local(store))

    return run_stage(store, MINDMERGER_AUGMENTATION,
                     params=stage_params(ctx, mm, "augmentation", llm_name, languages), sources=sources, build=build,
                     describe=_describe)


def _describe(w: ArtifactWriter) -> str:
    stats = json.loads((w.path / "data" / "stats.json").read_text())
    lines = [f"examples: {stats['train']} train, {stats['dev']} dev ({stats['read']} read)"]
    if stats["skipped"]:
        lines.append("skipped (over the length limits, not truncated): "
                     + ", ".join(f"{k} {v}" for k, v in stats["skipped"].items()))
    m = w.metrics
    lines.append(f"dev perplexity {m.get('start_dev_ppl', float('nan')):.3f} → {m.get('final_dev_ppl', float('nan')):.3f} "
                 f"(best {m.get('best_dev_ppl', float('nan')):.3f} at step {m.get('best_step')})")
    return "\n\n".join(lines)


# -- evaluation: a MindMerger model is scored by the same evaluate_unit as any LLM --------------------------
def mindmerger_generator(model: EvalModel, store: ArtifactStore, ctx: RunContext,
                         batch_size: int) -> MindMergerGenerator:
    """EvalModel(kind="mindmerger", source=Source.of(<augmentation or mapping artifact>)): its best mapping
    on the encoder and LLM recorded in its models.json."""
    root = Path(model.source.local(store))
    info = json.loads((root / MODELS_FILE).read_text())
    encoder, llm = _resolve(info["encoder"], store), _resolve(info["llm"], store)
    # identities as recorded at training (source labels), so the mapping's check compares like with like
    return MindMergerGenerator.from_pretrained(encoder.local(store), llm.local(store), str(root / "best"),
                                               dtype=ctx.dtype, batch_size=batch_size,
                                               device=str(resolve_device(ctx.device, "evaluation device")),
                                               encoder_id=encoder.label, llm_id=llm.label)


def _portable(source: Source) -> dict:
    """A source as recorded in an artifact: artifacts by kind, key and digest, without the store's location,
    so that the file (and its digest) is the same in every store and after a store moves."""
    return source.model_dump(mode="json", exclude={"ref": {"uri", "reused"}})


def _resolve(recorded: dict, store: ArtifactStore) -> Source:
    if (ref := recorded.get("ref")) is not None:
        recorded = {**recorded, "ref": {**ref, "uri": ref.get("uri") or store.uri(ref["kind"], ref["key"])}}
    return Source.model_validate(recorded)



def mindmerger_eval_model(llm_name: str, augmentation: ArtifactRef) -> EvalModel:
    """The evaluation entry for MindMerger on `llm_name`, compared with that LLM alone."""
    return EvalModel(name=f"mindmerger-{llm_name}", base=llm_name, kind="mindmerger", source=Source.of(augmentation))
