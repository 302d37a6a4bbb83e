"""Prefect's cache belongs to its store: two project folders with the default relative store URL and one
PREFECT_HOME (the usual set-up of one user with two checkouts) never hand each other's artifacts around."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.flows.test_cli_run import TINY, _cli

pytestmark = pytest.mark.slow


def _project(root: Path) -> Path:
    data = json.loads(json.dumps(TINY))
    data["mindmerger"] = {"enabled": False}
    data["evaluation"] = {"enabled": False}
    root.mkdir(parents=True)
    (root / "run.yaml").write_text(yaml.safe_dump(data))  # store: the default ./.linguaforge/store
    return root


def test_two_stores_with_one_prefect_home_share_no_cached_reference(tmp_path):
    home = {"PREFECT_HOME": str(tmp_path / "prefect-home")}
    first, second = _project(tmp_path / "first"), _project(tmp_path / "second")
    run = _cli("run", "run.yaml", "--outputs", "outputs.json", cwd=first, extra_env=home)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # the second project starts from a copy of the first one's store: same keys, another place
    shutil.copytree(first / ".linguaforge" / "store", second / ".linguaforge" / "store")
    run = _cli("run", "run.yaml", "--outputs", "outputs.json", cwd=second, extra_env=home)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    uris = [line.split('"uri": "')[1].split('"')[0] for line in (second / "outputs.json").read_text().splitlines()
            if '"uri": "' in line]
    assert uris, "no artifacts in --outputs"
    store = str((second / ".linguaforge" / "store").resolve())
    outside = [u for u in uris if not u.startswith(store)]
    assert not outside, f"{len(outside)} of {len(uris)} references point outside the second store: {outside[:3]}"
    assert "re-making" not in run.stdout + run.stderr  # found in its own store, not re-made
