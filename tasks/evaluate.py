"""Evaluation stages: one artifact per model × benchmark × language unit, and the comparison report.

A unit is its own cached artifact, so a re-run after a crash re-evaluates only the missing units. The
model side is pluggable: an `EvalModel` of kind "hf" is any causal LM folder or hub id; other kinds
(MindMerger's encoder + mapping + LLM) name their generator factory in the `GENERATORS` table.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any, Literal

from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from linguaforge.pipelines.benchmarks import (
    UnitData,
    available_languages,
    build_comparison,
    headline_rows,
    score_unit,
)
from linguaforge.pipelines.benchmarks.files import (
    HEADLINE_FILE,
    LMEVAL_FILE,
    PLOT_FILE,
    RECORDS_FILE,
    REPORT_FILE,
    ROWS_FILE,
    SCORES_FILE,
)
from linguaforge.pipelines.benchmarks.settings import BenchmarkSpec
from linguaforge.pipelines.devices import resolve_device
from linguaforge.pipelines.generation.causal_lm import HFCausalLMGenerator
from linguaforge.pipelines.settings import DEMO_PREFIX, key_params
from linguaforge.storage import ArtifactRef, ArtifactStore, ArtifactWriter
from linguaforge.tasks.common import (
    RunContext,
    Source,
    StageSpec,
    demo_source,
    open_store,
    run_stage,
    stage_task,
    ui_key,
)
from linguaforge.tasks.gpu_slots import gpu_slots, pinned_device
from linguaforge.tasks.progress import StageProgress, ui_artifact

# the data enter by their source, the language is the unit's own; a spec's other fields all shape the scores
UNIT_IGNORES = frozenset({"data", "languages"})
# evaluate_unit 3: keys derived from the settings models; 4: math units count outputs holding a number; 5: each
# unit keeps its per-item answers, its chance level and chance-adjusted accuracy
EVALUATE_UNIT = StageSpec("evaluate_unit", 5, "eval", files=(RECORDS_FILE, SCORES_FILE, LMEVAL_FILE),
                          ignores=UNIT_IGNORES, run_name="eval-{model.name}-{spec.name}-{language}")
# comparison_report 3: the share of math outputs holding a number, per model and language; 4: chance-adjusted
COMPARISON_REPORT = StageSpec("comparison_report", 4, "report", files=(REPORT_FILE, PLOT_FILE, ROWS_FILE, HEADLINE_FILE))
BENCHMARK_LANGUAGES = StageSpec("benchmark_languages")  # a helper: reads the data's languages, commits nothing


# an EvalModel's kind -> "module:factory", imported where the unit runs (a Dask worker too): one table, read by
# name, so that no module has to be imported for the side effect of registering its kind
GENERATORS = {"hf": "linguaforge.tasks.evaluate:hf_generator",
              "mindmerger": "linguaforge.tasks.mindmerger:mindmerger_generator"}


class EvalModel(BaseModel):
    """A model to score: its display name, the model it is compared with, and where it lives."""

    name: str
    base: str | None = None
    kind: Literal[tuple(GENERATORS)] = "hf"
    source: Source


# (model, store, run context, batch size) -> a generator the benchmark evaluation drives
GeneratorFactory = Callable[[EvalModel, ArtifactStore, RunContext, int], Any]


def generator_factory(kind: str) -> GeneratorFactory:
    module, name = GENERATORS[kind].split(":")
    return getattr(import_module(module), name)


def hf_generator(model: EvalModel, store: ArtifactStore, ctx: RunContext, batch_size: int):
    return HFCausalLMGenerator.from_pretrained(model.source.local(store), dtype=ctx.dtype, batch_size=batch_size,
                                               device=str(resolve_device(ctx.device, "evaluation device")))


def benchmark_data(spec: BenchmarkSpec, world: ArtifactRef | None) -> Source:
    return demo_source(spec.data, world) if spec.data.startswith(DEMO_PREFIX) else Source(uri=spec.data)


def _data_location(source: Source, store: ArtifactStore) -> str:
    """Benchmark files inside an artifact become a local folder; hub ids and URLs go to the loaders as they are."""
    return source.local(store) if source.ref is not None else str(source.uri)


@stage_task(BENCHMARK_LANGUAGES, retries=1)
def benchmark_languages(ctx: RunContext, spec: BenchmarkSpec, world: ArtifactRef | None) -> list[str]:
    """The run's languages that this benchmark's data has (XNLI has no Bengali, for one); the rest are logged."""
    from prefect import get_run_logger

    wanted = spec.languages or ctx.all_languages
    present = set(available_languages(spec.benchmark, _data_location(benchmark_data(spec, world),
                                                                              open_store(ctx.store)),
                                      ctx.store.storage_options))
    if missing := [lang for lang in wanted if lang not in present]:
        get_run_logger().warning("%s: no data for %s in %s; those languages are not scored", spec.name,
                                 ", ".join(missing), spec.data)
    return [lang for lang in wanted if lang in present]


def unit_params(model: EvalModel, spec: BenchmarkSpec, language: str) -> dict:
    return {"model": model.name, "base": model.base, "kind": model.kind, "language": language,
            "benchmark": key_params(spec, UNIT_IGNORES)}


@stage_task(EVALUATE_UNIT, retries=1)
def evaluate_unit(ctx: RunContext, spec: BenchmarkSpec, batch_size: int, model: EvalModel, language: str,
             world: ArtifactRef | None) -> ArtifactRef:
    store = open_store(ctx.store)
    data = benchmark_data(spec, world)
    params = unit_params(model, spec, language)

    def build(w: ArtifactWriter) -> None:
        label = f"eval {model.name} {spec.name} {language}"
        with gpu_slots(1, ctx.gpus_per_node, label) as gpus, StageProgress(label) as progress:
            pinned_ctx = ctx.model_copy(update={"device": pinned_device(ctx.device, gpus)})
            generator = generator_factory(model.kind)(model, store, pinned_ctx, batch_size)
            scores = score_unit(generator, spec, language, w.path, progress=progress, model_name=model.name,
                                   base_name=model.base, data=UnitData(_data_location(data, store), data.label,
                                                                       ctx.store.storage_options))
        w.metrics.update({k: scores[k] for k in ("accuracy", "n", "correct") if k in scores})
        tracker = ctx.tracker("evaluation")  # one view of every unit: model × benchmark × language
        tracker.log({f"{name}/{spec.name}/{language}/{model.name}": scores[name]
                     for name in ("accuracy", "ci_low", "ci_high", "chance", "adjusted") if name in scores}, 0)
        tracker.close()

    return run_stage(store, EVALUATE_UNIT, params=params,
                     sources={"weights": model.source, "data": data}, build=build)


@stage_task(COMPARISON_REPORT, retries=1)
def comparison_report(ctx: RunContext, units: list[ArtifactRef]) -> ArtifactRef:
    """Per-language accuracy of every model next to its base: report.md, comparison.png, rows.json."""
    store = open_store(ctx.store)
    sources = {f"unit{i:04d}": Source.of(ref) for i, ref in enumerate(units)}

    def build(w: ArtifactWriter) -> None:
        scores = [store.open(ref).read_json(SCORES_FILE) for ref in units]
        rows = build_comparison(scores, w.path, title=f"linguaforge run {ctx.name}", pivot=ctx.pivot_language)
        w.write_json(ROWS_FILE, rows)
        w.write_json(HEADLINE_FILE, headline_rows(scores, ctx.pivot_language))
        w.write_json(SCORES_FILE, scores)
        w.metrics.update({"units": len(units), "models": len({s["model"] for s in scores})})
        tracker = ctx.tracker("report", w)
        tracker.log_text("report", (w.path / REPORT_FILE).read_text())
        tracker.close()
        ui_artifact(create_table_artifact, rows, key=ui_key(f"comparison-{ctx.name}"),
                    description=f"linguaforge run {ctx.name}: accuracy per language, every model vs its base")

    return run_stage(store, COMPARISON_REPORT,
                     params={"run": ctx.name}, sources=sources, build=build,
                     describe=lambda w: (Path(w.path) / REPORT_FILE).read_text())
