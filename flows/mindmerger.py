"""The MindMerger flow: a frozen multilingual encoder mapped into a frozen LLM, in two stages.

    base models ─> mapping stage (X→English translation pairs) ─> augmentation stage (translated queries)
"""

from __future__ import annotations

from prefect import flow

from linguaforge.flows.config import RunConfig
from linguaforge.flows.outputs import MindMergerOutputs, RunOutputs
from linguaforge.flows.stages import base_models, run_context, run_sources
from linguaforge.flows.stopping import remember_flow_run
from linguaforge.tasks.common import Source
from linguaforge.tasks.gpu_slots import size_gpu_slots
from linguaforge.tasks.mindmerger import mindmerger_augmentation, mindmerger_mapping


@flow(name="linguaforge-mindmerger", log_prints=True)
def mindmerger(config: RunConfig = RunConfig(), llm_name: str = "base",  # noqa: B008 - Prefect reads the default
               llm: Source | None = None) -> RunOutputs:
    """Both stages on `llm` (default: the run's base LLM); committed stages are skipped."""
    remember_flow_run()
    size_gpu_slots(config.orchestration.gpus_per_node)
    outputs = base_models(config)
    base, encoder, world = run_sources(config, outputs)
    llm = llm or base
    ctx, mm = run_context(config, config.mindmerger.device), config.mindmerger
    mapping = mindmerger_mapping(ctx, mm, llm_name, llm, encoder, world)
    augmentation = mindmerger_augmentation(ctx, mm, llm_name, llm, encoder, mapping, world)
    return RunOutputs(mindmerger={llm_name: MindMergerOutputs(mapping=mapping, augmentation=augmentation)})
