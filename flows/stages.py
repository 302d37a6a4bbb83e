"""Glue shared by the flows: where the run's base models come from, and the fan-out of per-corpus and
per-unit stages. Plain functions called inside a flow; the flows themselves read like the diagram."""

from __future__ import annotations

from collections import Counter

from prefect.futures import wait

from linguaforge.flows.config import DEMO_PREFIX, RunConfig
from linguaforge.flows.outputs import EvalUnitOutput, RunOutputs
from linguaforge.pipelines.maet.cpt import DELTA_FILE
from linguaforge.pipelines.maet.decompose import ABILITY_FILE
from linguaforge.storage import ArtifactRef
from linguaforge.tasks.common import MODEL_FOLDER, RunContext, Source
from linguaforge.tasks.corpus import corpus_mixture, corpus_prep
from linguaforge.tasks.demo import bootstrap, demo_world, tiny_models
from linguaforge.tasks.evaluate import EvalModel, benchmark_languages, comparison_report, evaluate_unit
from linguaforge.tasks.maet import full_cpt, importance_probe, masked_cpt
from linguaforge.tasks.merge import decompose, merge_models
from linguaforge.tasks.mindmerger import mindmerger_augmentation, mindmerger_mapping


def run_context(cfg: RunConfig, device: str | None = None) -> RunContext:
    """What every stage task reads of the run besides its own settings (each task gets those alone); `device`:
    a stage family's own device setting, when it has one (else the run's)."""
    return RunContext(name=cfg.name, seed=cfg.seed, store=cfg.store, pivot_language=cfg.pivot_language,
                      languages=cfg.languages, dtype=cfg.models.dtype, tokenizer=cfg.models.tokenizer,
                      device=device or cfg.device, gpus_per_node=cfg.orchestration.gpus_per_node,
                      trackers=list(cfg.tracking.loggers), tracking_folder=cfg.tracking_folder())


def base_models(cfg: RunConfig) -> RunOutputs:
    """The demo world and its tiny models when the run has a demo section (cached like every stage)."""
    outputs = RunOutputs()
    ctx = run_context(cfg)
    if cfg.demo is not None:
        world = outputs.demo_world = demo_world(ctx, cfg.demo)
        models = outputs.tiny_models = tiny_models(ctx, cfg.demo, world)
        if cfg.models.base_llm == f"{DEMO_PREFIX}llm":
            outputs.base_llm = bootstrap(ctx, cfg.demo, cfg.corpus_prep, world, models)
    return outputs


def run_sources(cfg: RunConfig, outputs: RunOutputs) -> tuple[Source, Source, ArtifactRef | None]:
    """The base LLM and the encoder (demo artifacts or the configured HF ids / paths), and the demo world."""
    base = Source.of(outputs.base_llm, MODEL_FOLDER) if outputs.base_llm else Source(uri=cfg.models.base_llm)
    encoder = (Source.of(outputs.tiny_models, "encoder") if cfg.models.encoder == f"{DEMO_PREFIX}encoder"
               else Source(uri=cfg.models.encoder))
    return base, encoder, outputs.demo_world


def prepare_corpora(cfg: RunConfig, world: ArtifactRef | None, base: Source) -> dict[str, ArtifactRef]:
    """Every corpus the MAET stages train on, packed in parallel, plus the ability + pivot mixture."""
    ctx, prep = run_context(cfg), cfg.corpus_prep
    futures = {f"general-{lang}": corpus_prep.submit(ctx, prep, f"general-{lang}", lang, cfg.corpora.general[lang],
                                                     world, base)
               for lang in cfg.all_languages}
    futures["ability"] = corpus_prep.submit(ctx, prep, "ability", cfg.pivot_language, cfg.corpora.ability, world,
                                            base)
    wait(list(futures.values()))
    corpora = {name: future.result() for name, future in futures.items()}
    corpora["mixture"] = corpus_mixture(ctx, prep, corpora["ability"], corpora[f"general-{cfg.pivot_language}"])
    return corpora


def extract(cfg: RunConfig, corpora: dict[str, ArtifactRef], base: Source) -> RunOutputs:
    """MAET extraction: a probe per corpus gives key neurons (N_A, N_L0, N_Li); masked CPT trains
    LLM_{A,L0} on the mixture over N_A ∪ N_L0, LLM_{L0} over N_L0 and each LLM_{Li} over N_Li. Every run
    starts as soon as the probes it needs are done (futures are passed straight in)."""
    pivot, ctx, probe = cfg.pivot_language, run_context(cfg), cfg.probe
    ability_train, language_train = cfg.masked_cpt.settings_for(True), cfg.masked_cpt.settings_for(False)
    probes = {"ability": importance_probe.submit(ctx, probe, "ability", corpora["ability"], base)}
    probes |= {lang: importance_probe.submit(ctx, probe, lang, corpora[f"general-{lang}"], base)
               for lang in cfg.all_languages}
    runs = {"ability+pivot": masked_cpt.submit(ctx, ability_train, f"ability+{pivot}", corpora["mixture"],
                                               [probes["ability"], probes[pivot]], base)}
    runs |= {lang: masked_cpt.submit(ctx, language_train, lang, corpora[f"general-{lang}"], [probes[lang]], base)
             for lang in cfg.all_languages}
    if cfg.merge.baselines:
        runs["full_cpt"] = full_cpt.submit(ctx, cfg.full_cpt, corpora["ability"], base)
    wait([*probes.values(), *runs.values()])
    return RunOutputs(masks={name: f.result() for name, f in probes.items()},
                      deltas={name: f.result() for name, f in runs.items()})


def transfer(cfg: RunConfig, deltas: dict[str, ArtifactRef], base: Source) -> RunOutputs:
    """Eq. 2 on the masked-CPT deltas, then the merge (MAET, or TIES/DARE if configured) and the
    task-vector baseline from the full CPT, side by side."""
    pivot, ctx, m = cfg.pivot_language, run_context(cfg), cfg.merge
    parts = decompose(ctx, cfg.decompose, deltas["ability+pivot"], deltas[pivot],
                      {code: deltas[code] for code in cfg.languages})
    merges = {"merged": merge_models.submit(ctx, m, m.method, base, parts, ABILITY_FILE, parts)}
    if "task_vector" in m.baselines:
        merges["task_vector"] = merge_models.submit(ctx, m, "task_arithmetic", base, deltas["full_cpt"],
                                                    DELTA_FILE)
    wait(list(merges.values()))
    return RunOutputs(decomposed=parts, **{name: future.result() for name, future in merges.items()})


def evaluate_models(cfg: RunConfig, models: list[EvalModel], world: ArtifactRef | None) -> RunOutputs:
    """Every model × benchmark × language unit in parallel, then one comparison report over all of them."""
    units, ctx, batch = {}, run_context(cfg, cfg.evaluation.device), cfg.evaluation.batch_size
    for spec in cfg.evaluation.benchmarks:
        for lang in benchmark_languages(ctx, spec, world):
            for model in models:
                units[model.name, spec.name, lang] = evaluate_unit.submit(ctx, spec, batch, model, lang, world)
    wait(list(units.values()))
    done = [EvalUnitOutput(model=m, benchmark=b, language=lang, ref=future.result())
            for (m, b, lang), future in units.items()]
    return RunOutputs(evaluations=done, report=comparison_report(ctx, [unit.ref for unit in done]))


def models_to_evaluate(cfg: RunConfig, outputs: RunOutputs) -> list[EvalModel]:
    """The base and every model the run produced that is evaluated as a whole, each against its base."""
    base, _, _ = run_sources(cfg, outputs)
    models = [EvalModel(name="base", source=base)]
    named = {"full_cpt": outputs.deltas.get("full_cpt") if "full_cpt" in cfg.merge.baselines else None,
             "task_vector": outputs.task_vector, cfg.merge.method: outputs.merged}
    for name, ref in named.items():
        if ref is not None:
            models.append(EvalModel(name=name, base="base", source=Source.of(ref, MODEL_FOLDER)))
    for llm, parts in outputs.mindmerger.items():  # each compared with the LLM it was stacked on, by its name
        under = cfg.merge.method if llm == "merged" else llm
        models.append(EvalModel(name=f"mindmerger-{under}", base=under, kind="mindmerger",
                                source=Source.of(parts.augmentation)))
    return models


def planned_stages(cfg: RunConfig) -> Counter[str]:
    """How many times each stage runs (committed or skipped once each) in the run `cfg` describes: the graph above,
    counted, by the stages' own names. Evaluation units count every configured language; a benchmark whose data
    lack one has fewer (the live display's bar then ends at what ran)."""
    plan: Counter[str] = Counter()

    def add(stage, times: int = 1) -> None:
        plan[stage.spec.name] += times

    corpora = len(cfg.all_languages) + 1  # every language's general text, and the ability corpus
    if cfg.demo is not None:
        add(demo_world), add(tiny_models), add(bootstrap, cfg.models.base_llm == f"{DEMO_PREFIX}llm")
    add(corpus_prep, corpora), add(corpus_mixture)
    add(importance_probe, corpora), add(masked_cpt, corpora), add(full_cpt, bool(cfg.merge.baselines))
    add(decompose), add(merge_models, 1 + ("task_vector" in cfg.merge.baselines))
    llms = len(cfg.mindmerger.llms) if cfg.mindmerger.enabled else 0
    add(mindmerger_mapping, llms), add(mindmerger_augmentation, llms)
    if cfg.evaluation.enabled:
        models = 2 + ("full_cpt" in cfg.merge.baselines) + ("task_vector" in cfg.merge.baselines) + llms
        add(evaluate_unit, models * sum(len(b.languages or cfg.all_languages) for b in cfg.evaluation.benchmarks))
        add(comparison_report)
    return +plan  # stages that run zero times are left out
