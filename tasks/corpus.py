"""Corpus stages: pack one language's (or the ability) corpus; mix ability and pivot-language text."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger

from linguaforge.pipelines.corpus import mix_corpora, pack_corpus, read_documents, write_stats
from linguaforge.pipelines.models import check_tokenizer_matches, load_tokenizer, read_model_config
from linguaforge.pipelines.settings import DEMO_PREFIX, CorpusPrepConfig, CorpusSource, key_params
from linguaforge.storage import ArtifactRef, ArtifactWriter
from linguaforge.tasks.common import (
    RunContext,
    Source,
    StageSpec,
    demo_source,
    open_store,
    run_stage,
    stage_task,
)
from linguaforge.tasks.progress import StageProgress

# the corpus enters by its source (URI or artifact); the mixture ratio is the mixture stage's business
PREP_IGNORES = frozenset({"uri", "ability_mix_ratio"})


def tokenizer_source(ctx: RunContext, base: Source) -> Source:
    return Source(uri=ctx.tokenizer) if ctx.tokenizer else base


def corpus_params(language: str, corpus: CorpusSource, prep: CorpusPrepConfig) -> dict:
    return {"language": language, "reading": key_params(corpus, PREP_IGNORES), "packing": key_params(prep, PREP_IGNORES)}


def mixture_params(ctx: RunContext, prep: CorpusPrepConfig) -> dict:
    return {"ability_share": prep.ability_mix_ratio, "seed": ctx.seed}


# versions: 2: keys derived from the settings models
CORPUS_PREP = StageSpec("corpus_prep", 2, "corpus", ignores=PREP_IGNORES, run_name="corpus_prep-{name}")
CORPUS_MIXTURE = StageSpec("corpus_mixture", 2, "corpus", settings=CorpusPrepConfig, params=mixture_params,
                           ignores=frozenset({"block_size", "packing", "min_chars", "max_chars"}))


@stage_task(CORPUS_PREP, retries=2)
def corpus_prep(ctx: RunContext, prep: CorpusPrepConfig, name: str, language: str, corpus: CorpusSource,
                world: ArtifactRef | None, base: Source) -> ArtifactRef:
    """Read, normalise, filter, tokenize (with the base model's tokenizer) and pack one corpus."""
    store = open_store(ctx.store)
    source = demo_source(corpus.uri, world, suffix=".jsonl" if corpus.uri.startswith(DEMO_PREFIX) else "")
    tokenizer_src = tokenizer_source(ctx, base)
    params = corpus_params(language, corpus, prep)

    def build(w: ArtifactWriter) -> None:
        tokenizer_path, model_path = tokenizer_src.local(store), base.local(store)
        tokenizer = load_tokenizer(tokenizer_path)
        check_tokenizer_matches(tokenizer, read_model_config(model_path), tokenizer_src.label, base.label)
        uri = source.local(store, folder=False)
        documents = read_documents(corpus.model_copy(update={"uri": uri}), language, ctx.store.storage_options)
        with StageProgress(f"corpus {name}") as progress:
            stats = pack_corpus(documents, tokenizer, w.path, prep, source=f"{name} ({corpus.uri})", progress=progress)
        w.metrics.update(write_stats(stats, w.path, language=language, source=corpus.uri))

    return run_stage(store, CORPUS_PREP, params=params,
                     sources={"corpus": source, "tokenizer": tokenizer_src}, build=build)


@stage_task(CORPUS_MIXTURE, retries=2)
def corpus_mixture(ctx: RunContext, prep: CorpusPrepConfig, ability: ArtifactRef, general: ArtifactRef) -> ArtifactRef:
    """The ability + pivot-language mixture that LLM_{A,L0} is trained on, by token share."""
    store = open_store(ctx.store)
    ratio = prep.ability_mix_ratio
    params = CORPUS_MIXTURE.params(ctx, prep)
    sources = {"ability": Source.of(ability), "general": Source.of(general)}

    def build(w: ArtifactWriter) -> None:
        parts = {name: Path(src.local(store)) for name, src in sources.items()}
        taken = mix_corpora(parts, {"ability": ratio, "general": 1.0 - ratio}, w.path, ctx.seed)
        available = {name: int(ref.metrics.get("blocks", 0)) for name, ref in
                     (("ability", store.manifest(ability.kind, ability.key)),
                      ("general", store.manifest(general.kind, general.key)))}
        w.write_json("stats.json", {"blocks": sum(taken.values()), "blocks_per_part": taken})
        w.metrics.update({"blocks": sum(taken.values())} | {f"blocks_{k}": v for k, v in taken.items()})
        for name, count in taken.items():
            if available.get(name) and count < available[name] / 2:
                # the smaller part limits the mixture: most of this one is left out (the demo's trap, once)
                get_run_logger().warning(
                    "corpus mixture uses %d of the %d blocks of the %s corpus (ability_mix_ratio %.2f, and "
                    "the other part is small); raise or lower corpus_prep.ability_mix_ratio to use more of it",
                    count, available[name], name, ratio)

    return run_stage(store, CORPUS_MIXTURE, params=params,
                     sources=sources, build=build)
