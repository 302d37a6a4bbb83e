"""The whole linguaforge run as one Prefect flow of subflows; it reads like the diagram in ARCHITECTURE.md.

    maet (corpus ─> probes ─> masked CPT ─> decompose ─> merge)
    mindmerger on the base LLM, and on the MAET model   (mapping ─> augmentation)
    evaluate (every model × benchmark × language) ─> comparison report
"""

from __future__ import annotations

from prefect import flow
from prefect.deployments import run_deployment

from linguaforge.flows.config import RunConfig
from linguaforge.flows.evaluate import evaluate
from linguaforge.flows.maet import maet
from linguaforge.flows.mindmerger import mindmerger
from linguaforge.flows.outputs import RunOutputs
from linguaforge.flows.preflight import check_run
from linguaforge.flows.stages import models_to_evaluate, run_context
from linguaforge.flows.stopping import remember_flow_run
from linguaforge.tasks.common import MODEL_FOLDER, Source
from linguaforge.tasks.gpu_slots import size_gpu_slots


def maet_stages(config: RunConfig) -> RunOutputs:
    """MAET here, or first on the GPU pool: the remote run commits every artifact to the shared store, and
    the local call then skips each stage and only collects the references."""
    gpu = config.orchestration
    if gpu.gpu_deployment:
        remote = run_deployment(gpu.gpu_deployment, parameters={"config": config.model_dump(mode="json")},
                                as_subflow=True, job_variables=gpu.gpu_job_variables or None)
        if not remote.state or not remote.state.is_completed():
            raise RuntimeError(f"the GPU run {remote.name} of {gpu.gpu_deployment} ended "
                               f"{remote.state.name if remote.state else 'without a state'}")
    return maet(config)


@flow(name="linguaforge-pipeline", log_prints=True)
def pipeline(config: RunConfig = RunConfig()) -> RunOutputs:  # noqa: B008 - Prefect reads the default
    """Run every stage of a linguaforge run; stages already committed in the store are skipped."""
    remember_flow_run()  # Ctrl-C / SIGTERM: running stages stop at their next step, the run is marked Cancelled
    size_gpu_slots(config.orchestration.gpus_per_node)  # stages that compute share the node's GPUs
    tracker = run_context(config).tracker("run")  # the configuration, as the run's hyper-parameters
    tracker.log_text("configuration", config.model_dump_json(indent=1))
    tracker.close()
    check_run(config, "(flow parameters)")  # a run started from the UI gets the CLI's checks before it trains
    outputs = maet_stages(config)
    if config.mindmerger.enabled:
        stacked_on = {"base": None, "merged": outputs.merged, "full_cpt": outputs.deltas.get("full_cpt")}
        for name in config.mindmerger.llms:  # MindMerger on the base LLM, or stacked on a model with the ability
            # (RunConfig refuses full_cpt here unless merge.baselines builds it)
            llm = Source.of(stacked_on[name], MODEL_FOLDER) if stacked_on[name] is not None else None
            outputs |= mindmerger(config, name, llm)
    if config.evaluation.enabled:
        outputs |= evaluate(config, models_to_evaluate(config, outputs))
    return outputs
