"""The whole linguaforge run as one Prefect flow of subflows; it reads like the diagram in DESIGN.md.

    maet (corpus ─> probes ─> masked CPT ─> decompose ─> merge)
    mindmerger on the base LLM, and on the MAET model   (mapping ─> augmentation)
    evaluate (every model × benchmark × language) ─> comparison report
"""

from __future__ import annotations

from prefect import flow

from flows.config import RunConfig
from flows.evaluate import evaluate
from flows.maet import maet
from flows.mindmerger import mindmerger
from flows.stages import models_to_evaluate
from storage import ArtifactRef
from tasks.common import Source


@flow(name="linguaforge-pipeline", log_prints=True)
def pipeline(config: RunConfig = RunConfig()) -> dict[str, ArtifactRef]:  # noqa: B008 - Prefect reads the default
    """Run every stage of a linguaforge run; stages already committed in the store are skipped."""
    outputs = maet(config)
    if config.mindmerger.enabled:
        for name in config.mindmerger.llms:  # MindMerger on the base LLM, and stacked on the MAET model
            llm = Source.of(outputs["model/merged"], "model") if name == "maet" else None
            outputs |= mindmerger(config, name, llm)
    if config.evaluation.enabled:
        outputs |= evaluate(config, models_to_evaluate(config, outputs))
    return outputs
