"""GPU slots against a real Prefect server: with `orchestration.gpus_per_node: 2`, the run's ten one-GPU stages
(bootstrap, four probes, four masked CPT runs, full CPT) never compute more than two at a time, each pinned to a
GPU of its own, and all finish. When each stage held its slots is read back from the Prefect API (the stages log
their acquisitions and releases); on this CPU machine the slots limit the same stages a GPU node would."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import yaml

from linguaforge.storage import ArtifactStore
from tests.e2e.conftest import api
from tests.flows.test_cli_run import TINY, _cli

pytestmark = pytest.mark.slow


def _intervals(base: str, flow_runs: list[str]) -> dict[str, list]:
    logs = api(base, "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": flow_runs}}, "limit": 200,
                                              "sort": "TIMESTAMP_ASC"})
    spans: dict[str, list] = {}
    for log in logs:
        message = log["message"]
        if not message.startswith("GPU slots:"):
            continue
        stage = message.split(" for ", 1)[1].split(" (GPUs")[0]
        at = datetime.fromisoformat(log["timestamp"])
        if " holding " in message:
            spans[stage] = [at, None, message.split("(GPUs ")[1].rstrip(")")]
        else:
            spans[stage][1] = at
    return spans


def test_two_slots_hold_ten_stages_to_two_at_a_time(prefect_server, tmp_path, repo_root):
    data = json.loads(json.dumps(TINY))
    data.update(mindmerger={"enabled": False}, evaluation={"enabled": False},
                store={"url": str(tmp_path / "store"), "cache_dir": str(tmp_path / "cache")},
                orchestration={"gpus_per_node": 2}, device="cpu")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    run = _cli("run", str(tmp_path / "run.yaml"), cwd=repo_root, api_url=prefect_server)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    slots = api(prefect_server, "GET", "/v2/concurrency_limits/linguaforge-gpus")
    assert slots["limit"] == 2 and slots["active_slots"] == 0
    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "cache", create=False)
    spans = _intervals(prefect_server, sorted({e["flow_run_id"] for e in store.events(event="started")}))
    assert len(spans) == 10 and all(end is not None for _, end, _ in spans.values()), spans
    events = sorted([(start, 1, gpu) for start, _, gpu in spans.values()] + [(end, -1, gpu) for _, end, gpu in
                                                                            spans.values()],
                    key=lambda e: (e[0], e[1]))  # at the same instant a release counts first
    held, most, gpus_in_use = 0, 0, []
    for _, step, gpu in events:
        held += step
        most = max(most, held)
        gpus_in_use = [g for g in gpus_in_use if not (step < 0 and g == gpu)] + ([gpu] if step > 0 else [])
        assert len(set(gpus_in_use)) == len(gpus_in_use), "two stages pinned to one GPU at once"
    assert most == 2, f"at most {most} stages held slots at once"
