"""The tables read well at 80 and 100 columns in a real terminal (tmux): no model name is ever cut, so
`mindmerger-full_cpt` and `mindmerger-maet` never both read `mindmerg…`, and no number is cut either (it wraps)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.pipelines.test_report import _score

MODELS = [("base", None), ("full_cpt", "base"), ("task_vector", "base"), ("maet", "base"),
          ("mindmerger-full_cpt", "full_cpt"), ("mindmerger-maet", "maet")]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("columns", [80, 100])
def test_no_model_name_is_cut_at_80_or_100_columns(columns, tmp_path, repo_root):
    for model, base in MODELS:
        for lang, right in (("en", 30), ("de", 20), ("zh", 10), ("sw", 15), ("bn", 12)):
            unit = tmp_path / "scores" / model / lang
            unit.mkdir(parents=True)
            (unit / "scores.json").write_text(json.dumps(_score(model, base, "mgsm", lang, right, 100)))
    # the pane stays open after the command (it waits on a channel nobody signals) until the session is killed
    session, done = f"lf-{uuid.uuid4().hex[:8]}", f"lf-done-{uuid.uuid4().hex[:8]}"
    command = (f"cd {repo_root} && env -u COLUMNS {sys.executable} -m linguaforge.flows.cli report "
               f"{tmp_path / 'scores'} --out {tmp_path / 'report'}; tmux wait-for -S {done}; tmux wait-for {done}-hold")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TMUX")}
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(columns), "-y", "80", command], check=True,
                   env=env)
    try:
        subprocess.run(["tmux", "wait-for", done], check=True, timeout=300)
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session, "-S", "-200"], check=True,
                                capture_output=True, text=True).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    lines = screen.splitlines()
    assert any("mgsm" in line for line in lines), screen
    assert max(len(line) for line in lines) <= columns, screen
    for model, _ in MODELS:
        assert any(f" {model} " in line for line in lines), f"{model} cut at {columns} columns:\n{screen}"
    assert "…" not in screen, screen  # nothing cut: a narrow column wraps its numbers
