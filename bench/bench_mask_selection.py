"""Benchmark: memory of the top-k1 key-neuron selection (Eq. 1) on a model of >= 100 M parameters.

The selection reads the base one tensor at a time from safetensors and the probed weights on demand, so
its own memory should stay a few tensors. Measured: the peak anonymous memory (RssAnon, sampled every
millisecond) the selection adds over the process's memory before it starts, less the mask it returns (one
bool per neuron: at element granularity a quarter of the fp32 model, reported separately), in units of the
largest tensor (goal: <= 3x), at both granularities; for contrast, the same for a naive selection that
concatenates every score and sorts. Each variant runs in its own subprocess.

    python bench/bench_mask_selection.py [--hidden 768] [--layers 12] [--vocab 32000] [--k1 5]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama_shapes import llama_shapes  # noqa: E402


def rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


class PeakSampler:
    """Samples RssAnon in a thread; `peak` is the largest value seen."""

    def __init__(self):
        self.peak, self._stop = rss_anon(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon())
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon())


def build_model_files(root: Path, hidden: int, layers: int, vocab: int) -> tuple[int, int]:
    """Base and probed weights of a Llama-shaped model as safetensors, written tensor by tensor."""
    import torch
    from safetensors.torch import save_file

    shapes = llama_shapes(hidden, layers, vocab, int(hidden * 8 / 3))
    g = torch.Generator().manual_seed(0)
    (root / "base").mkdir()
    (root / "probed").mkdir()
    for part, names in enumerate([list(shapes)[i::4] for i in range(4)]):  # four shards, as HF would
        base = {n: torch.randn(shapes[n], generator=g) * 0.02 for n in names}
        save_file(base, str(root / "base" / f"model-{part}.safetensors"))
        probed = {n: t + torch.randn(t.shape, generator=g) * 1e-3 for n, t in base.items()}
        save_file(probed, str(root / "probed" / f"model-{part}.safetensors"))
        del base, probed
    params = sum(math.prod(s) for s in shapes.values())
    largest = max(math.prod(s) for s in shapes.values()) * 4
    return params, largest


class LazyWeights:
    """The probed model as a mapping that reads each tensor when asked (the trained model would already be
    in memory in a real probe; here it is kept out so that only the selection's own memory is measured)."""

    def __init__(self, folder: Path):
        from linguaforge.pipelines.weights import WeightReader

        self.reader = WeightReader(folder)
        self.names = set(self.reader.names())

    def __contains__(self, name):
        return name in self.names

    def __getitem__(self, name):
        return self.reader.get(name)


def child(root: Path, variant: str, granularity: str, k1: float) -> None:
    import torch

    from linguaforge.pipelines.maet.cpt import key_neuron_mask
    from linguaforge.pipelines.maet.importance import neuron_scores
    from linguaforge.pipelines.weights import WeightReader

    probed = LazyWeights(root / "probed")
    before = rss_anon()
    began = time.perf_counter()
    with PeakSampler() as sampler:
        if variant == "streaming":
            mask = key_neuron_mask(str(root / "base"), probed, k1, granularity, "global")
            selected = sum(mask.selected().values())
            output = sum(m.numel() * m.element_size() for m in mask.masks.values())
        else:  # naive: every score in one tensor, one full sort
            base = WeightReader(root / "base")
            scores = torch.cat([neuron_scores(probed[n] - base.get(n), granularity) for n in base.names()])
            k = math.ceil(scores.numel() * k1 / 100)
            selected = int(torch.sort(scores, descending=True).indices[:k].numel())
            output = 0
    print(json.dumps({"extra": sampler.peak - before, "seconds": time.perf_counter() - began,
                      "selected": selected, "output": output}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--k1", type=float, default=5.0)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, variant, granularity = args.child
        return child(Path(root), variant, granularity, args.k1)

    with tempfile.TemporaryDirectory(prefix="bench-mask-") as tmp:
        root = Path(tmp)
        params, largest = build_model_files(root, args.hidden, args.layers, args.vocab)
        print(f"model: {params / 1e6:.0f} M parameters (fp32), largest tensor {largest / 2**20:.0f} MiB, "
              f"k1 = {args.k1} %")
        for granularity in ("row", "element"):
            runs = {}
            for variant in ("streaming", "naive"):
                out = subprocess.run([sys.executable, __file__, "--child", str(root), variant, granularity,
                                      "--k1", str(args.k1)], capture_output=True, text=True, check=True)
                runs[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            assert runs["streaming"]["selected"] == runs["naive"]["selected"]
            s, n = runs["streaming"], runs["naive"]
            work = s["extra"] - s["output"]
            print(f"{granularity:>7} granularity: selection peak working memory = {work / largest:.2f}x the "
                  f"largest tensor (goal <= 3x; naive full sort: {n['extra'] / largest:.2f}x); plus the "
                  f"returned mask (one bool per neuron) {s['output'] / largest:.2f}x; "
                  f"time {s['seconds']:.1f}s vs naive {n['seconds']:.1f}s")


if __name__ == "__main__":
    main()
