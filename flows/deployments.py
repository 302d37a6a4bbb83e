"""The deployments `linguaforge serve` registers with a Prefect server (and `deploy/prefect.yaml` declares
for `prefect deploy`; a test keeps the two in step).

    pipeline      the whole run             cpu pool (process)     on demand (UI, API, CLI)
    maet          MAET alone                cpu pool               on demand
    evaluate      evaluation alone          cpu pool               nightly cron (newest models)
    maet-gpu      MAET on the GPU pool      gpu pool (kubernetes)  on demand, or from `pipeline` as a
                                                                   subflow (orchestration.gpu_deployment)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from linguaforge.flows.config import RunConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU_POOL = "linguaforge-cpu"
GPU_POOL = "linguaforge-gpu"
NIGHTLY_EVAL_CRON = "0 2 * * *"


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str
    pool: str
    description: str
    cron: str | None = None


DEPLOYMENTS = [
    DeploymentSpec("pipeline", "flows/pipeline.py:pipeline", CPU_POOL,
                   "Every stage of a linguaforge run: MAET, MindMerger, evaluation, report."),
    DeploymentSpec("maet", "flows/maet.py:maet", CPU_POOL, "MAET extraction and transfer alone."),
    DeploymentSpec("evaluate", "flows/evaluate.py:evaluate", CPU_POOL,
                   "Benchmarks × languages for the run's models; nightly.", cron=NIGHTLY_EVAL_CRON),
    DeploymentSpec("maet-gpu", "flows/maet.py:maet", GPU_POOL,
                   "MAET on the Kubernetes GPU pool (multi-GPU stages launch DeepSpeed inside the job)."),
]


def ensure_pool(name: str, pool_type: str) -> None:
    """Create the work pool if the server does not have it yet (a GPU pool gets deploy/k8s's template)."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    template = None
    if pool_type == "kubernetes":
        template = json.loads((REPO_ROOT / "deploy" / "k8s" / "gpu-job-template.json").read_text())
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type=pool_type, base_job_template=template or {}))
        except ObjectAlreadyExists:
            pass


RESULTS_BLOCK = "linguaforge-results"


def result_storage_env(url: str | None) -> dict[str, str]:
    """Prefect task results (artifact refs, JSON) in any fsspec location, e.g. the store's own bucket:
    a RemoteFileSystem block the flow-run processes are pointed at. Credentials come from their env."""
    if not url:
        return {}
    from prefect.filesystems import RemoteFileSystem

    RemoteFileSystem(basepath=url.rstrip("/")).save(RESULTS_BLOCK, overwrite=True)
    return {"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"remote-file-system/{RESULTS_BLOCK}"}


def register(cfg: RunConfig, *, gpu: bool = False, eval_cron: str | None = NIGHTLY_EVAL_CRON,
             only: list[str] | None = None, result_storage: str | None = None) -> dict[str, str]:
    """Register the deployments (with `cfg` as their default parameters) against PREFECT_API_URL.
    Returns {deployment name: id}."""
    from prefect import Flow

    env = result_storage_env(result_storage)
    ensure_pool(CPU_POOL, "process")
    if gpu:
        ensure_pool(GPU_POOL, "kubernetes")
    ids = {}
    for spec in DEPLOYMENTS:
        if (spec.pool == GPU_POOL and not gpu) or (only is not None and spec.name not in only):
            continue
        flow = Flow.from_source(source=str(REPO_ROOT), entrypoint=spec.entrypoint)
        cron = eval_cron if spec.cron else None
        ids[spec.name] = str(flow.deploy(
            name=spec.name, work_pool_name=spec.pool, parameters={"config": cfg.model_dump(mode="json")},
            description=spec.description, cron=cron, build=False, push=False, print_next_steps=False,
            tags=["linguaforge"], job_variables={"env": env} if env else None))
    return ids
