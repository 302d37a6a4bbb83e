"""The machine refuses mid-run: the store's disk fills up, or turns read-only. `linguaforge run` ends with one
message naming the artifact and the cause (never "unexpected", never a traceback), no retry of what cannot pass,
and every artifact that is visible as committed is intact. Real filesystems (tmpfs, remounted read-only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from linguaforge.storage import ArtifactStore
from tests.flows.test_cli_run import _config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")]
OUTCOMES: list[dict] = []


@pytest.fixture
def disk(tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def _run(config: Path, tmp_path: Path, repo_root: Path) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "300", "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    return subprocess.Popen([sys.executable, "-m", "linguaforge.flows.cli", "run", str(config)], cwd=repo_root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _check(case: str, proc: subprocess.Popen, store_url: str, tmp_path: Path, expect: str) -> None:
    output, _ = proc.communicate(timeout=900)
    message = " ".join(output.split())
    OUTCOMES.append({"case": case, "exit": proc.returncode, "traceback": "Traceback" in output,
                     "message": message[message.find("linguaforge: ", 200):][:200]})
    out = Path(__file__).resolve().parents[2] / "build" / "reliability" / "environment.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(OUTCOMES, indent=1))
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output and "unexpected" not in output, output[-3000:]
    assert expect in message and "again" in message, output[-3000:]
    assert message.count("Retrying") == 0, "a full or read-only disk was retried"
    store = ArtifactStore(store_url, cache_dir=tmp_path / "c", create=False)
    assert store.audit() == {}


def test_a_full_disk_mid_run_is_named_and_leaves_every_commit_intact(disk, tmp_path, repo_root):
    config = _config(tmp_path, **{"store.url": str(disk / "store"), "store.cache_dir": str(tmp_path / "cache")})
    _check("the store's disk fills up mid-run", _run(config, tmp_path, repo_root), str(disk / "store"), tmp_path,
           "no space left on the device while writing")  # in a commit: "nothing was committed"


def test_a_store_turned_read_only_mid_run_is_named(disk, tmp_path, repo_root):
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    config = _config(tmp_path, **{"store.url": str(disk / "store"), "store.cache_dir": str(tmp_path / "cache")})
    proc = _run(config, tmp_path, repo_root)
    deadline = time.monotonic() + 600
    while not list((disk / "store").glob("tiny_models/*/manifest.json")):  # two artifacts committed
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.1)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    _check("the store's filesystem turns read-only mid-run", proc, str(disk / "store"), tmp_path,
           "the filesystem is read-only")
