"""`make gpu-wheels`: the wheels `make gpu-check` needs on a GPU machine that has torch and transformers and no
package index: pydantic (with its compiled core for CPython 3.10 to 3.13 on x86-64 Linux) and fsspec, at the
versions installed here. Into build/gpu-wheels (a few MB; the device tool carries it with `carry`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "build" / "gpu-wheels"
PURE = ["pydantic", "annotated-types", "typing-inspection", "typing-extensions", "fsspec"]
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def download(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(OUT), *args], check=True)


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    download(*(f"{name}=={version(name)}" for name in PURE))
    for python in PYTHONS:
        download("--only-binary=:all:", "--python-version", python, "--platform", "manylinux2014_x86_64",
                 f"pydantic-core=={version('pydantic-core')}")
    size = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"{len(list(OUT.iterdir()))} wheels, {size / 2**20:.1f} MiB in {OUT}")


if __name__ == "__main__":
    main()
