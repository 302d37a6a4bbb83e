"""The evaluation flow: every model × benchmark × language unit, then the comparison report.

    models (base, and any the run produced) ─> eval units in parallel ─> report (table, plot)
"""

from __future__ import annotations

from prefect import flow

from linguaforge.flows.config import RunConfig
from linguaforge.flows.outputs import RunOutputs
from linguaforge.flows.runners import ChosenTaskRunner, choose_task_runner
from linguaforge.flows.stages import base_models, evaluate_models, run_sources
from linguaforge.flows.stopping import remember_flow_run
from linguaforge.tasks.evaluate import EvalModel
from linguaforge.tasks.gpu_slots import size_gpu_slots


@flow(name="linguaforge-evaluate", log_prints=True, task_runner=ChosenTaskRunner())
def evaluate(config: RunConfig = RunConfig(), models: list[EvalModel] | None = None) -> RunOutputs:  # noqa: B008
    """Score `models` (default: the run's base model) on the configured benchmarks, language by language."""
    remember_flow_run()
    choose_task_runner(config.orchestration)  # threads, or the Dask cluster the configuration names
    size_gpu_slots(config.orchestration.gpus_per_node)
    outputs = base_models(config)
    base, _, world = run_sources(config, outputs)
    return evaluate_models(config, models or [EvalModel(name="base", source=base)], world)
