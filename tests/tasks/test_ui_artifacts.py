"""Prefect UI artifacts are best effort: one the API refuses must not fail, and so re-run, the stage that
computed the result (under load a SQLite Prefect server answered POST /artifacts/ with HTTP 500 and five
evaluation units failed and ran again)."""

from __future__ import annotations

import asyncio
import logging


def _artifact_keys() -> set[str]:
    from prefect.client.orchestration import get_client

    async def keys():
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts()}

    return asyncio.run(keys())


def test_a_refused_ui_artifact_is_a_warning_and_the_stage_goes_on(prefect_api):
    from prefect import flow, task
    from prefect.artifacts import create_markdown_artifact

    from linguaforge.tasks.progress import StageProgress, ui_artifact

    @task
    def stage() -> int:
        published = ui_artifact(create_markdown_artifact, "fine", key="a-good-key")
        refused = ui_artifact(create_markdown_artifact, "refused", key="Not A Valid Key!")  # the API's own check
        with StageProgress("work", total=2) as progress:
            progress(1, 2, {"loss": 1.0})
            progress(2, 2, {"loss": 0.5})
        return (published is not None) + 10 * (refused is None)

    @flow
    def run() -> int:
        return stage()

    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    task_log = logging.getLogger("prefect.task_runs")  # what get_run_logger() writes to inside a task
    task_log.addHandler(handler)
    try:
        assert run() == 11  # the task completed: one published, one refused
    finally:
        task_log.removeHandler(handler)
    assert any(w.startswith("Prefect UI artifact not published (ValidationError") for w in warnings), warnings
    assert "a-good-key" in _artifact_keys()
