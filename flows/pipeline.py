"""The linguaforge pipeline as one Prefect flow; it reads like the diagram in DESIGN.md.

    demo world ─> tiny models ─> bootstrap            (embedded demo only; real runs name HF models)
    corpus prep (ability, every language) ─> ability + pivot mixture
    evaluate (model × benchmark × language) ─> comparison report
"""

from __future__ import annotations

from prefect import flow
from prefect.futures import wait

from flows.config import DEMO_PREFIX, RunConfig
from storage import ArtifactRef
from tasks.common import Source
from tasks.corpus import corpus_mixture, corpus_prep
from tasks.demo import bootstrap, demo_world, tiny_models
from tasks.evaluate import EvalModel, benchmark_languages, comparison_report, evaluate


def base_models(cfg: RunConfig, outputs: dict[str, ArtifactRef]) -> tuple[Source, Source, ArtifactRef | None]:
    """The base LLM and the encoder: the demo world's tiny ones, or the configured HF ids / paths."""
    world = None
    if cfg.demo is not None:
        world = outputs["demo_world"] = demo_world(cfg)
        models = outputs["tiny_models"] = tiny_models(cfg, world)
        if cfg.models.base_llm == f"{DEMO_PREFIX}llm":
            outputs["base_llm"] = bootstrap(cfg, world, models)
    base = (Source.of(outputs["base_llm"], "model") if "base_llm" in outputs else Source(uri=cfg.models.base_llm))
    encoder = (Source.of(outputs["tiny_models"], "encoder") if cfg.models.encoder == f"{DEMO_PREFIX}encoder"
               else Source(uri=cfg.models.encoder))
    return base, encoder, world


def prepare_corpora(cfg: RunConfig, world: ArtifactRef | None, base: Source) -> dict[str, ArtifactRef]:
    """Every corpus the MAET stages train on, packed in parallel, plus the ability + pivot mixture."""
    futures = {f"general-{lang}": corpus_prep.submit(cfg, f"general-{lang}", lang, cfg.corpora.general[lang],
                                                     world, base)
               for lang in cfg.all_languages}
    futures["ability"] = corpus_prep.submit(cfg, "ability", cfg.pivot_language, cfg.corpora.ability, world, base)
    wait(list(futures.values()))
    corpora = {name: future.result() for name, future in futures.items()}
    corpora["mixture"] = corpus_mixture(cfg, corpora["ability"], corpora[f"general-{cfg.pivot_language}"])
    return corpora


def evaluate_models(cfg: RunConfig, models: list[EvalModel], world: ArtifactRef | None) -> dict[str, ArtifactRef]:
    """Every model × benchmark × language unit in parallel, then one comparison report over all of them."""
    units = {}
    for spec in cfg.evaluation.benchmarks:
        for lang in benchmark_languages(cfg, spec, world):
            for model in models:
                units[f"eval/{model.name}/{spec.name}/{lang}"] = evaluate.submit(cfg, model, spec, lang, world)
    wait(list(units.values()))
    results = {name: future.result() for name, future in units.items()}
    results["report"] = comparison_report(cfg, list(results.values()))
    return results


@flow(name="linguaforge-pipeline", log_prints=True)
def pipeline(config: RunConfig = RunConfig()) -> dict[str, ArtifactRef]:  # noqa: B008 - Prefect reads the default
    """Run every stage of a linguaforge run; stages already committed in the store are skipped."""
    outputs: dict[str, ArtifactRef] = {}
    base, encoder, world = base_models(config, outputs)
    outputs |= {f"corpus/{name}": ref for name, ref in prepare_corpora(config, world, base).items()}
    models = [EvalModel(name="base", source=base)]
    if config.evaluation.enabled:
        outputs |= evaluate_models(config, models, world)
    return outputs
