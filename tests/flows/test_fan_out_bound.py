"""`orchestration.max_parallel`: with the threads runner, a flow runs at most that many stages at once and the
rest wait their turn in submission order (Prefect's own thread pool has no bound). The units of a real flow on a
real Prefect API try to meet at a barrier one larger than the bound: under the bound it is never met (its
timeout breaks it), and the most that ran at once is the bound; with a larger bound the same barrier is met."""

from __future__ import annotations

import threading

import pytest
from prefect import flow, task

from linguaforge.flows.config import OrchestrationConfig
from linguaforge.flows.runners import ChosenTaskRunner, choose_task_runner

GATHER = 3  # units that try to run together
METERS: dict[str, Meter] = {}


class Meter:
    """How many units run at once, at most, and whether GATHER of them ever met."""

    def __init__(self):
        self.barrier = threading.Barrier(GATHER, timeout=20)  # long enough for a loaded machine to start them all
        self.lock, self.active, self.peak = threading.Lock(), 0, 0

    def visit(self) -> bool:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            self.barrier.wait()
            met = True
        except threading.BrokenBarrierError:
            met = False
        with self.lock:
            self.active -= 1
        return met


@task
def unit(meter: str) -> bool:
    return METERS[meter].visit()


@flow(task_runner=ChosenTaskRunner())
def fan_out(meter: str, units: int, max_parallel: int) -> tuple[str, list[bool]]:
    chosen = choose_task_runner(OrchestrationConfig(max_parallel=max_parallel))
    return chosen, [f.result() for f in [unit.submit(meter) for _ in range(units)]]


@pytest.mark.parametrize(("bound", "gathered"), [(GATHER - 1, False), (GATHER, True)])
def test_at_most_max_parallel_stages_run_at_once(prefect_api, bound, gathered):
    METERS[str(bound)] = meter = Meter()
    chosen, met = fan_out(str(bound), GATHER, bound)
    assert chosen == f"threads (at most {bound} at once)"
    assert met == [gathered] * GATHER  # under the bound the third unit starts only after the barrier broke
    assert meter.peak == min(bound, GATHER)
