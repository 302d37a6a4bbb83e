"""The MAET flow: extract ability and language neurons, then transfer the ability into every language.

    base models ─> corpus prep (ability, every language) ─> ability + pivot mixture
    importance probes (ability, every language) ─> masked CPT (A+L0, L0, each Li) ; full CPT baseline
    decompose (Eq. 2) ─> merge (Eq. 3–5) ─> the multilingual, ability-enhanced model
"""

from __future__ import annotations

from prefect import flow

from linguaforge.flows.config import RunConfig
from linguaforge.flows.outputs import RunOutputs
from linguaforge.flows.runners import ChosenTaskRunner, choose_task_runner
from linguaforge.flows.stages import base_models, extract, prepare_corpora, run_sources, transfer
from linguaforge.flows.stopping import remember_flow_run
from linguaforge.tasks.gpu_slots import size_gpu_slots


@flow(name="linguaforge-maet", log_prints=True, task_runner=ChosenTaskRunner())
def maet(config: RunConfig = RunConfig()) -> RunOutputs:  # noqa: B008 - Prefect reads the default
    """MAET end to end on the run's base model; committed stages are skipped."""
    remember_flow_run()
    choose_task_runner(config.orchestration)  # threads, or the Dask cluster the configuration names
    size_gpu_slots(config.orchestration.gpus_per_node)
    outputs = base_models(config)
    base, _, world = run_sources(config, outputs)
    corpora = prepare_corpora(config, world, base)
    outputs |= RunOutputs(corpora=corpora)
    outputs |= extract(config, corpora, base)
    outputs |= transfer(config, outputs.deltas, base)
    return outputs
