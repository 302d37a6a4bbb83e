"""A merge's output is one transaction: a SIGKILL at every point of the publish leaves the complete old folder or
the complete new one (bitwise), a second merge into a folder being written fails at once, and an output that is,
holds or lies inside an input is refused. Real `linguaforge merge` processes, real kills."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.flows.test_merge_models import fine_tune

pytestmark = pytest.mark.slow
OUTCOMES: list[dict] = []


def _record(row: dict) -> None:
    import json

    OUTCOMES.append(row)
    out = Path(__file__).resolve().parents[2] / "build" / "reliability" / "publish_kills.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(OUTCOMES, indent=1))


def _merge(config: Path, *extra: str, env: dict | None = None, wait: bool = True, cwd: Path):
    command = [sys.executable, "-m", "linguaforge.flows.cli", "merge", str(config), *extra]
    environ = {**os.environ, "COLUMNS": "200", **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    return subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=600)


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def setup(demo_assets, tmp_path_factory, repo_root) -> dict:
    """Two merges of one fine-tune at weights 0.5 ("old") and 1.0 ("new"), each made once into a fresh folder."""
    root = tmp_path_factory.mktemp("transaction")
    tune = fine_tune(demo_assets["llm"], root / "tune", 9_001)
    configs = {}
    for name, weight in (("old", 0.5), ("new", 1.0)):
        configs[name] = root / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump({
            "base": str(demo_assets["llm"]), "out": str(root / f"reference-{name}"),
            "models": [{"model": str(tune), "weight": weight}], "merge": {"method": "task_arithmetic"}}))
        result = _merge(configs[name], cwd=repo_root)
        assert result.returncode == 0, result.stdout + result.stderr
    return {"root": root, "configs": configs, "base": demo_assets["llm"], "tune": tune,
            "old": _snapshot(root / "reference-old"), "new": _snapshot(root / "reference-new")}


def _old_output_with_notes(setup: dict, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.parent / f".{out.name}.linguaforge", ignore_errors=True)
    shutil.copytree(setup["root"] / "reference-old", out)
    (out / "notes").mkdir()
    (out / "notes" / "mine.txt").write_text("the user's own file")


def _without_notes(snapshot: dict[str, bytes] | None) -> dict[str, bytes] | None:
    return None if snapshot is None else {k: v for k, v in snapshot.items() if not k.startswith("notes/")}


@pytest.mark.parametrize("mode", ["exchange", "journal"])
def test_a_kill_at_every_publish_point_leaves_the_old_or_the_new_folder(mode, setup, tmp_path, repo_root):
    env = {"LINGUAFORGE_NO_RENAMEAT2": "1"} if mode == "journal" else {}
    out = tmp_path / "out"
    log = tmp_path / "points.log"
    _old_output_with_notes(setup, out)
    clean = _merge(setup["configs"]["new"], "--out", str(out), "--force", env={**env, "LINGUAFORGE_FAULT_LOG": str(log)},
                   cwd=repo_root)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    points = [p for p in log.read_text().split() if p.startswith("publish.")]
    assert len(points) == (7 if mode == "journal" else 4), points
    outcomes = []
    for nth, point in enumerate(points, 1):
        _old_output_with_notes(setup, out)
        killed = _merge(setup["configs"]["new"], "--out", str(out), "--force",
                        env={**env, "LINGUAFORGE_KILL_AT": f"publish#{nth}"}, cwd=repo_root)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stdout + killed.stderr)
        state = _without_notes(_snapshot(out))
        outcome = "old" if state == setup["old"] else "new" if state == setup["new"] else "neither"
        if mode == "journal" and state is None:  # between the two renames: the journal completes it
            outcome = "between renames (journal)"
        outcomes.append((point, outcome))
        assert outcome != "neither", (point, sorted(state or {}))
        if state is not None:
            assert (out / "notes" / "mine.txt").read_text() == "the user's own file", point
        again = _merge(setup["configs"]["new"], "--out", str(out), "--force", env=env, cwd=repo_root)
        assert again.returncode == 0, (point, again.stdout + again.stderr)
        assert _without_notes(_snapshot(out)) == setup["new"], point
        assert (out / "notes" / "mine.txt").read_text() == "the user's own file"
        assert not (tmp_path / ".out.linguaforge").exists(), f"leftovers after a kill at {point}"
        _record({"case": f"merge --force killed at {point} ({'renameat2 exchange' if mode == 'exchange' else 'two renames and a journal'})",
                 "outcome": outcome, "after_rerun": "new, user's file kept, no leftovers"})
    if mode == "exchange":  # one atomic exchange: before it the old folder, after it the new one
        assert [o for _, o in outcomes] == ["old", "old", "new", "new"], outcomes


def test_a_second_merge_into_a_folder_being_written_fails_at_once(setup, tmp_path, repo_root):
    out, gate = tmp_path / "out", tmp_path / "gate"
    first = _merge(setup["configs"]["new"], "--out", str(out), wait=False, cwd=repo_root,
                   env={"LINGUAFORGE_GATE": f"publish.start:{gate}"})
    try:
        deadline = time.monotonic() + 300
        while not Path(f"{gate}.reached").exists():  # the first merge holds the lock, its output built
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
            time.sleep(0.05)
        second = _merge(setup["configs"]["old"], "--out", str(out), cwd=repo_root)
        assert second.returncode == 1 and "is being written by pid" in second.stderr, second.stdout + second.stderr
        forced = _merge(setup["configs"]["old"], "--out", str(out), "--force", cwd=repo_root)
        assert forced.returncode == 1 and "is being written by pid" in forced.stderr
    finally:
        gate.touch()
    assert first.wait(timeout=300) == 0, first.stdout.read()
    assert _snapshot(out) == setup["new"]
    third = _merge(setup["configs"]["old"], "--out", str(out), cwd=repo_root)  # after it, without --force: refused
    assert third.returncode == 1 and "not empty" in third.stderr and _snapshot(out) == setup["new"]


@pytest.mark.parametrize("where", ["the base itself", "inside the base", "around the base", "the fine-tune"])
def test_an_output_over_an_input_is_refused_even_with_force(where, setup, tmp_path, repo_root):
    base = tmp_path / "models" / "base"
    shutil.copytree(setup["base"], base)
    out = {"the base itself": base, "inside the base": base / "merged", "around the base": tmp_path / "models",
           "the fine-tune": setup["tune"]}[where]
    before = {p: _snapshot(p) for p in (base, setup["tune"])}
    config = tmp_path / "merge.yaml"
    config.write_text(yaml.safe_dump({"base": str(base), "out": str(out), "force": True,
                                      "models": [{"model": str(setup["tune"])}], "merge": {"method": "task_arithmetic"}}))
    result = _merge(config, cwd=repo_root)
    assert result.returncode == 1 and "never writes over what it reads" in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert {p: _snapshot(p) for p in before} == before
