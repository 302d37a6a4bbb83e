"""`make gpu-check` in CPU mode, so that it cannot rot: the script runs its every check on the CPU, in a process
where the packages a GPU machine lacks (pyarrow, Prefect, DeepSpeed, datasets, s3fs, matplotlib, rich) cannot be
imported, and prints its table with every check passed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

WITHOUT = ("pyarrow", "prefect", "deepspeed", "datasets", "s3fs", "matplotlib", "rich", "boto3")
RUN = (f"import runpy, sys\nfor m in {WITHOUT!r}: sys.modules[m] = None\n"
       "sys.argv = ['bench/gpu_check.py', '--device', 'cpu', '--out', sys.argv[1]]\n"
       "runpy.run_path('bench/gpu_check.py', run_name='__main__')\n")


def test_gpu_check_passes_on_the_cpu_without_the_packages_a_gpu_machine_lacks(tmp_path, repo_root):
    result = subprocess.run([sys.executable, "-c", RUN, str(tmp_path)], cwd=repo_root, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "gpu-check.json").read_text())["rows"]
    checks = {r["check"] for r in rows}
    assert {"training step (plain)", "training step (masked)", "MindMerger", "greedy fp32, cpu vs cpu",
            "greedy bf16 vs fp32", "eval items/s", "training tokens/s"} <= checks
    assert all(r["ok"] for r in rows), rows
    assert "| training step (masked)  | yes | frozen rows bitwise unchanged" in result.stdout
