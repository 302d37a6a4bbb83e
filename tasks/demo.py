"""Stages of the embedded demo world: generate the world, build tiny models, bootstrap the tiny LLM."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import torch

from linguaforge.flows.config import RunConfig
from linguaforge.pipelines.corpus import CorpusSpec, pack_corpus, read_documents
from linguaforge.pipelines.demo_models import (
    build_tiny_encoder,
    build_tiny_llm,
    train_encoder_tokenizer,
    train_llm_tokenizer,
    world_texts,
)
from linguaforge.pipelines.demo_world import WorldSpec, generate_world
from linguaforge.pipelines.models import load_causal_lm, load_tokenizer
from linguaforge.pipelines.plots import loss_curve
from linguaforge.pipelines.reproducible import content_only
from linguaforge.pipelines.training import PackedBlocks, TorchBackend, TrainSettings, train
from linguaforge.storage import ArtifactRef, ArtifactWriter
from linguaforge.tasks.common import Source, open_store, run_stage, stage_task
from linguaforge.tasks.progress import StageProgress

DEMO_WORLD_VERSION = 3
TINY_MODELS_VERSION = 2  # 2: Unigram scores rounded, so the encoder tokenizer is reproducible
BOOTSTRAP_VERSION = 1


def _world_params(cfg: RunConfig) -> dict:
    demo = cfg.demo
    return {"languages": cfg.all_languages, "seed": demo.seed, "general_docs": demo.general_docs,
            "low_resource_languages": demo.low_resource_languages,
            "low_resource_fraction": demo.low_resource_fraction, "bilingual_share": demo.bilingual_share, "ability_problems": demo.ability_problems,
            "translation_pairs": demo.translation_pairs, "query_items": demo.query_items,
            "test_items": demo.test_items}


@stage_task(name="demo_world", retries=1)
def demo_world(cfg: RunConfig) -> ArtifactRef:
    params = _world_params(cfg)

    def build(w: ArtifactWriter) -> None:
        counts = generate_world(WorldSpec(**params), w.path)
        w.write_json("counts.json", counts)
        w.metrics.update({f"{part}_total": sum(c.values()) for part, c in counts.items()})

    return run_stage(open_store(cfg.store), kind="demo_world", stage="demo_world", version=DEMO_WORLD_VERSION,
                     params=params, build=build)


@stage_task(name="tiny_models", retries=1)
def tiny_models(cfg: RunConfig, world: ArtifactRef) -> ArtifactRef:
    store, demo = open_store(cfg.store), cfg.demo
    params = {"vocab_size": demo.vocab_size, "llm_hidden_size": demo.llm_hidden_size, "llm_layers": demo.llm_layers,
              "encoder_hidden_size": demo.encoder_hidden_size, "encoder_layers": demo.encoder_layers,
              "seed": cfg.seed}
    world_src = Source.of(world)

    def build(w: ArtifactWriter) -> None:
        world_dir = Path(world_src.local(store))
        llm_tok = train_llm_tokenizer(world_texts(world_dir), demo.vocab_size, w.path / "llm")
        enc_tok = train_encoder_tokenizer(world_texts(world_dir), demo.vocab_size, w.path / "encoder")
        llm = build_tiny_llm(llm_tok, w.path / "llm", demo.llm_hidden_size, demo.llm_layers, cfg.seed)
        enc = build_tiny_encoder(enc_tok, w.path / "encoder", demo.encoder_hidden_size, demo.encoder_layers,
                                 cfg.seed)
        w.metrics.update({"llm_parameters": sum(p.numel() for p in llm.parameters()),
                          "encoder_parameters": sum(p.numel() for p in enc.parameters()),
                          "llm_vocab": len(llm_tok), "encoder_vocab": len(enc_tok)})

    return run_stage(store, kind="tiny_models", stage="tiny_models", version=TINY_MODELS_VERSION, params=params,
                     sources={"world": world_src}, build=build)


@stage_task(name="bootstrap", retries=1)
def bootstrap(cfg: RunConfig, world: ArtifactRef, models: ArtifactRef) -> ArtifactRef:
    """Briefly pre-train the tiny LLM on the general text of every language: the demo's 'base model'."""
    store = open_store(cfg.store)
    settings = TrainSettings(**cfg.demo.bootstrap.train.model_dump(), seed=cfg.seed)
    params = {"train": cfg.demo.bootstrap.train.model_dump(mode="json"), "languages": cfg.all_languages,
              "block_size": cfg.corpus_prep.block_size, "seed": cfg.seed}
    sources = {"world": Source.of(world), "llm": Source.of(models, "llm")}

    def build(w: ArtifactWriter) -> None:
        world_dir = Path(sources["world"].local(store))
        llm_dir = sources["llm"].local(store)
        tokenizer = load_tokenizer(llm_dir)
        docs = itertools.chain.from_iterable(
            read_documents(CorpusSpec(uri=str(world_dir / "general" / f"{lang}.jsonl"), language=lang))
            for lang in cfg.all_languages)
        with tempfile.TemporaryDirectory() as tmp:
            pack_corpus(docs, tokenizer, Path(tmp), cfg.corpus_prep.block_size, source="demo general text")
            data = PackedBlocks.from_dir(Path(tmp))
            model = load_causal_lm(llm_dir)
            with StageProgress("bootstrap", settings.steps) as progress:
                result = train(TorchBackend(model, settings), data, settings, checkpoints=w.checkpoints,
                               progress=progress)
        model.to(torch.device("cpu")).save_pretrained(w.path / "model")
        tokenizer.save_pretrained(w.path / "model")
        loss_curve(result.losses, w.path / "loss_curve.png", "demo bootstrap (all languages)")
        w.write_json("train.json", content_only(result.summary()) | {"losses": result.losses})
        w.metrics.update(result.summary())

    return run_stage(store, kind="base_llm", stage="bootstrap", version=BOOTSTRAP_VERSION, params=params,
                     sources=sources, build=build)
