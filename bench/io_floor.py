"""The I/O floor of a merge: read each input file once, write the base's bytes once as the output. Benches
time it beside the merge they measure.

    python bench/io_floor.py OUT BASE_DIR [INPUT ...]      # INPUT: a model folder or a file
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def io_floor(out: Path, base_dir: Path, inputs: list[Path]) -> None:
    out.mkdir(parents=True)
    files = sorted(base_dir.glob("*.safetensors"))
    for item in inputs:
        files += sorted(item.glob("*.safetensors")) if item.is_dir() else [item]
    for path in files:
        with open(path, "rb") as f:
            while f.read(64 << 20):
                pass
    for path in sorted(base_dir.glob("*.safetensors")):
        with open(path, "rb") as src, open(out / path.name, "wb") as dst:
            shutil.copyfileobj(src, dst, 64 << 20)


if __name__ == "__main__":
    io_floor(Path(sys.argv[1]), Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]])
