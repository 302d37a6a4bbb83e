"""GPU slots: stages that compute share a node's GPUs instead of crowding one.

With `orchestration.gpus_per_node: N`, a Prefect global concurrency limit (GPU_SLOTS) holds N slots; a stage that
uses k GPUs (a training run with k processes, a MindMerger stage, an evaluation unit: 1) takes k of them for as
long as it computes, so that the six masked-CPT runs of a MAET run queue two by two on a 2-GPU node instead of
starting together on one device. Which GPUs a stage gets is decided on the node: a lock file per GPU under the
system's temporary folder, taken without waiting (any process on the node, any worker, sees the same locks;
the kernel releases them when a process dies). The stage then runs pinned to them: `cuda:i` in its own process,
CUDA_VISIBLE_DEVICES for the workers it launches.

Every acquisition and release is logged ("GPU slots: holding ..."), so the Prefect API shows when each stage
computed and on which GPUs. Without `gpus_per_node` nothing is limited (one device, or a runner that places work).
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from prefect import get_run_logger
from prefect.concurrency.sync import concurrency

GPU_SLOTS = "linguaforge-gpus"
SLOT_LOG = "GPU slots:"


def size_gpu_slots(gpus_per_node: int | None) -> None:
    """Create or resize the slot limit (at the start of a flow); nothing without `gpus_per_node`."""
    if gpus_per_node is None:
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(GPU_SLOTS, gpus_per_node)


@contextmanager
def gpu_slots(count: int, gpus_per_node: int | None, stage: str) -> Iterator[list[int] | None]:
    """Hold `count` slots and as many of this node's GPUs while the block computes; yields their indices (None
    without slots)."""
    if gpus_per_node is None:
        yield None
        return
    if count > gpus_per_node:
        from linguaforge.pipelines.errors import InputError

        raise InputError(f"{stage} asks for {count} GPUs, but orchestration.gpus_per_node is {gpus_per_node}")
    logger = get_run_logger()
    with concurrency(GPU_SLOTS, occupy=count), _node_gpus(count, gpus_per_node) as indices:
        logger.info("%s holding %d of %d for %s (GPUs %s)", SLOT_LOG, count, gpus_per_node, stage,
                    ",".join(map(str, indices)))
        try:
            yield indices
        finally:
            logger.info("%s released %d for %s", SLOT_LOG, count, stage)


@contextmanager
def _node_gpus(count: int, gpus_per_node: int) -> Iterator[list[int]]:
    """`count` GPU indices of this node that no other stage holds (the slots guarantee there are enough free)."""
    folder = Path(tempfile.gettempdir()) / "linguaforge-gpu-locks"
    folder.mkdir(exist_ok=True)
    with ExitStack() as held:
        taken = []
        for index in range(gpus_per_node):
            handle = held.enter_context(open(folder / f"gpu-{index}.lock", "a"))
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            taken.append(index)
            if len(taken) == count:
                yield taken
                return
        raise RuntimeError(f"{count} GPU slot(s) were granted but only {len(taken)} of this node's {gpus_per_node} "
                           "GPUs are free: another program holds linguaforge's GPU locks")


def pinned_device(device: str, indices: list[int] | None) -> str:
    """The device a stage computes on once pinned: `cuda:i` for its first GPU when it runs on CUDA."""
    if not indices or not device.startswith(("cuda", "auto")):
        return device
    import torch

    if device == "auto" and not torch.cuda.is_available():
        return device
    return f"cuda:{indices[0]}"


def pinned(settings, gpus: list[int] | None):
    """Training settings pinned to the GPUs a stage's slots hold: its device (one process), its workers' GPUs."""
    if gpus is None:
        return settings
    return settings.model_copy(update={"device": pinned_device(settings.device, gpus), "gpus": gpus})

