"""Stages of the embedded demo world: generate the world, build tiny models, bootstrap the tiny LLM."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from linguaforge.pipelines.corpus import pack_corpus, read_documents
from linguaforge.pipelines.demo.models import (
    build_tiny_encoder,
    build_tiny_llm,
    train_encoder_tokenizer,
    train_llm_tokenizer,
    world_texts,
)
from linguaforge.pipelines.demo.settings import DemoConfig
from linguaforge.pipelines.demo.world import WorldSpec, generate_world
from linguaforge.pipelines.models import load_tokenizer
from linguaforge.pipelines.plots import loss_curve
from linguaforge.pipelines.reproducible import content_only
from linguaforge.pipelines.settings import CorpusPrepConfig, CorpusSource, key_params
from linguaforge.pipelines.training.cpt import run_cpt, save_trained_model
from linguaforge.pipelines.training.loop import TRAIN_FILE
from linguaforge.pipelines.training.settings import TrainSettings
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

# what each demo stage reads of DemoConfig; the rest is another demo stage's (a model size must not re-make
# the world)
WORLD_FIELDS = frozenset({"seed", "general_docs", "low_resource_languages", "low_resource_fraction",
                          "bilingual_share", "ability_problems", "translation_pairs", "query_items", "test_items",
                          "dev_items"})
MODEL_FIELDS = frozenset({"vocab_size", "llm_hidden_size", "llm_layers", "encoder_hidden_size", "encoder_layers"})


def _only(demo: DemoConfig, fields: frozenset[str]) -> dict:
    return key_params(demo, frozenset(type(demo).model_fields) - fields)


def world_params(ctx: RunContext, demo: DemoConfig) -> dict:
    return {"languages": ctx.all_languages} | _only(demo, WORLD_FIELDS)


def tiny_model_params(ctx: RunContext, demo: DemoConfig) -> dict:
    return _only(demo, MODEL_FIELDS) | {"seed": ctx.seed}


def bootstrap_params(ctx: RunContext, demo: DemoConfig, prep: CorpusPrepConfig) -> dict:
    return {"bootstrap": key_params(demo.bootstrap), "languages": ctx.all_languages, "block_size": prep.block_size,
            "seed": ctx.seed}


# DemoConfig's fields are shared out among the three stages (WORLD_FIELDS, MODEL_FIELDS, the rest: bootstrap); the
# demo key test checks each field against the stage that reads it
DEMO_WORLD = StageSpec("demo_world", 4, "demo_world")  # 4: keys derived from the settings models
TINY_MODELS = StageSpec("tiny_models", 3, "tiny_models", files=("llm", "encoder"))  # 3: Unigram scores rounded
BOOTSTRAP = StageSpec("bootstrap", 2, "base_llm", files=(MODEL_FOLDER,))


@stage_task(DEMO_WORLD, retries=1)
def demo_world(ctx: RunContext, demo: DemoConfig) -> ArtifactRef:
    params = world_params(ctx, demo)
    spec = WorldSpec(languages=ctx.all_languages, **_only(demo, WORLD_FIELDS))

    def build(w: ArtifactWriter) -> None:
        counts = generate_world(spec, w.path)
        w.write_json("counts.json", counts)
        w.metrics.update({f"{part}_total": sum(c.values()) for part, c in counts.items()})

    return run_stage(open_store(ctx.store), DEMO_WORLD,
                     params=params, build=build)


@stage_task(TINY_MODELS, retries=1)
def tiny_models(ctx: RunContext, demo: DemoConfig, world: ArtifactRef) -> ArtifactRef:
    store = open_store(ctx.store)
    params = tiny_model_params(ctx, demo)
    world_src = Source.of(world)

    def build(w: ArtifactWriter) -> None:
        world_dir = Path(world_src.local(store))
        llm_tok = train_llm_tokenizer(world_texts(world_dir), demo.vocab_size, w.path / "llm")
        enc_tok = train_encoder_tokenizer(world_texts(world_dir), demo.vocab_size, w.path / "encoder")
        llm = build_tiny_llm(llm_tok, w.path / "llm", demo.llm_hidden_size, demo.llm_layers, ctx.seed)
        enc = build_tiny_encoder(enc_tok, w.path / "encoder", demo.encoder_hidden_size, demo.encoder_layers,
                                 ctx.seed)
        w.metrics.update({"llm_parameters": sum(p.numel() for p in llm.parameters()),
                          "encoder_parameters": sum(p.numel() for p in enc.parameters()),
                          "llm_vocab": len(llm_tok), "encoder_vocab": len(enc_tok)})

    return run_stage(store, TINY_MODELS, params=params,
                     sources={"world": world_src}, build=build)


@stage_task(BOOTSTRAP, retries=1)
def bootstrap(ctx: RunContext, demo: DemoConfig, prep: CorpusPrepConfig, world: ArtifactRef,
              models: ArtifactRef) -> ArtifactRef:
    """Briefly pre-train the tiny LLM on the general text of every language: the demo's 'base model'."""
    store = open_store(ctx.store)
    settings = TrainSettings.of(demo.bootstrap.train, ctx.seed, ctx.device)
    params = bootstrap_params(ctx, demo, prep)
    sources = {"world": Source.of(world), "llm": Source.of(models, "llm")}

    def build(w: ArtifactWriter) -> None:
        world_dir = Path(sources["world"].local(store))
        llm_dir = sources["llm"].local(store)
        tokenizer = load_tokenizer(llm_dir)
        docs = itertools.chain.from_iterable(
            read_documents(CorpusSource(uri=str(world_dir / "general" / f"{lang}.jsonl")), lang)
            for lang in ctx.all_languages)
        with tempfile.TemporaryDirectory() as tmp:
            pack_corpus(docs, tokenizer, Path(tmp), prep, source="demo general text")
            with gpu_slots(settings.processes, ctx.gpus_per_node, "bootstrap") as gpus, \
                    StageProgress("bootstrap", settings.steps, tracker=ctx.tracker("bootstrap", w)) as progress:
                summary, trained = run_cpt(llm_dir, tmp, pinned(settings, gpus), checkpoints=w.checkpoints,
                                           progress=progress, label="bootstrap")
        save_trained_model(llm_dir, trained, w.path / MODEL_FOLDER)
        losses = summary.pop("losses")
        loss_curve(losses, w.path / "loss_curve.png", "demo bootstrap (all languages)")
        w.write_json(TRAIN_FILE, content_only(summary) | {"losses": losses})
        w.metrics.update(summary)

    return run_stage(store, BOOTSTRAP, params=params,
                     sources=sources, build=build)
