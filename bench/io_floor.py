"""The I/O floor of a merge: read each input file once, write the base's bytes once as the output. Benches
time it beside the merge they measure.

    python bench/io_floor.py OUT BASE_DIR [INPUT ...]      # INPUT: a model folder or a file
"""

from __future__ import annotations

import sys
from pathlib import Path


def io_floor(out: Path, base_dir: Path, inputs: list[Path]) -> None:
    """Reads through one reused 16 MB buffer, writes with O_DIRECT (the project's `DirectFile`), the fastest
    ways we know on this machine: a fresh buffer per read (as `f.read(n)` or `shutil.copyfileobj` make) costs
    a page fault per 4 KB, and writing through the page cache costs more kernel time than the disk takes;
    together they took this floor from about 6 s to 13-21 s on a VM (2026-12-04)."""
    from linguaforge.pipelines.direct_file import DirectFile

    out.mkdir(parents=True)
    files = sorted(base_dir.glob("*.safetensors"))
    for item in inputs:
        files += sorted(item.glob("*.safetensors")) if item.is_dir() else [item]
    view = memoryview(bytearray(16 << 20))
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(view):
                pass
    for path in sorted(base_dir.glob("*.safetensors")):
        dst = DirectFile(out / path.name)
        with open(path, "rb", buffering=0) as src:
            while n := src.readinto(view):
                dst.write(view[:n])
        dst.close()


if __name__ == "__main__":
    io_floor(Path(sys.argv[1]), Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]])
