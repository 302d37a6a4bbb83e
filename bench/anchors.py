"""The anchor tools the side-by-side benches compare against, each installed into a virtual environment of its
own under bench/.anchors/ (never vendored, never in the project's environment): mergekit for
bench_vs_mergekit.py, lm-evaluation-harness for bench_vs_lmeval.py. `make bench-anchors` runs this first.

The CPU build of torch that the project installs comes first in each (a plain `torch` requirement would pull
a multi-GB CUDA build); then the tool at the version the issue measured.

    python bench/anchors.py [mergekit|lmeval ...]      # installs what is missing; prints each tool's path
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent / ".anchors"
TORCH = "torch==2.13.0"
TOOLS = {  # name: (requirements, the executable a bench runs)
    "mergekit": (["mergekit==0.1.5"], "mergekit-yaml"),
    "lmeval": (["lm_eval[hf]==0.4.13"], "lm_eval"),
}


def tool(name: str) -> Path:
    """The tool's executable, installing its environment first if it is not there."""
    requirements, executable = TOOLS[name]
    home = ROOT / name
    path = home / "bin" / executable
    if not (home / ".installed").exists():
        print(f"installing {name} into {home} (first use) ...", flush=True)
        venv.create(home, with_pip=True, clear=True)
        pip = [str(home / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["--upgrade", "pip"], check=True)
        subprocess.run(pip + [TORCH], check=True)
        subprocess.run(pip + requirements, check=True)
        (home / ".installed").write_text(" ".join([TORCH, *requirements]))
    if not path.exists():
        raise SystemExit(f"{name}: {path} missing after installation")
    return path


if __name__ == "__main__":
    for name in sys.argv[1:] or TOOLS:
        print(name, tool(name))
