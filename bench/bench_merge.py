"""Benchmark: the streaming MAET merge (decompose + merge) on a >= 1 B-parameter model, side by side with
its I/O floor and with a naive merge, in one run. Each variant runs in its own subprocess (peak RSS from
getrusage).

- The merge (Eq. 3-5) alone, from the decomposition's outputs R(A), R(L_i), against its I/O floor: reading
  its inputs once (base safetensors + the three decomposed deltas) and writing its output once.
  Goal: merge time <= 2x its floor. Also printed: decomposition + merge against the floor of the whole
  transfer (base + the four masked-CPT deltas read, the output written).
- Naive merge: `from_pretrained` of the base and of the four masked-CPT models, Eq. 2-5 on whole state
  dicts in memory, `save_pretrained`. Goal: decomposition + merge time <= 1x naive, peak memory <= 0.25x naive.

Model: a Llama built from config (hidden 2048, 18 layers, vocab 32000: 1.06 B parameters, bf16), random
weights written tensor by tensor; the four CPT results change 5 % of the rows of every tensor (row
granularity, the default) or, with --granularity element, 5 % of its entries.

    python bench/bench_merge.py [--layers 18] [--hidden 2048] [--granularity row|element] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from io_floor import io_floor  # noqa: E402
from llama_shapes import llama_shapes  # noqa: E402

RUNS = ["ability_pivot", "pivot", "de", "sw"]
LANGS = ["de", "sw"]
MU = {"de": 1.0, "sw": 1.0}


def build(root: Path, hidden: int, layers: int, vocab: int, granularity: str) -> int:
    """Base model (sharded safetensors + config) and, per CPT run, a sparse delta and the full model."""
    import torch
    from transformers import LlamaConfig

    from linguaforge.pipelines.merging.deltas import base_weights_digest, encode_delta, write_encoded
    from linguaforge.pipelines.weights import ShardedWriter, WeightReader, copy_non_weight_files

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 2.75),
                         num_hidden_layers=layers, num_attention_heads=hidden // 128, num_key_value_heads=hidden // 128,
                         tie_word_embeddings=False, dtype="bfloat16")
    config.save_pretrained(root / "base")
    shapes = llama_shapes(hidden, layers, vocab, config.intermediate_size)
    g = torch.Generator().manual_seed(0)
    writer = ShardedWriter(root / "base", shard_bytes=1 << 30)
    for name, shape in shapes.items():
        writer.add(name, (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16))
    writer.close()
    base = WeightReader(root / "base")
    digest = base_weights_digest(root / "base")
    for run_index, run in enumerate(RUNS):
        encoded, model = {}, ShardedWriter(root / run, shard_bytes=1 << 30)
        for name in base.names():
            t = base.get(name)
            if granularity == "row":  # trained neurons: whole rows (a few entries may round back to their value)
                trained = torch.rand(t.shape[0], generator=g) < 0.05
            else:  # trained scalars
                trained = torch.rand(t.shape, generator=g) < 0.05
            new = t.float()
            new[trained] += torch.randn(new[trained].shape, generator=g) * 0.01 * (run_index + 1)
            new = new.to(torch.bfloat16)
            encoded |= encode_delta(name, new.float() - t.float())
            model.add(name, new)
        model.close()
        copy_non_weight_files(root / "base", root / run)
        write_encoded(root / f"{run}.delta.safetensors", encoded, "bench", digest,
                      {n: list(s) for n, s in shapes.items()}, {n: "bfloat16" for n in shapes})
    return sum(math.prod(s) for s in shapes.values())


def decompose_into(root: Path, parts_dir: Path) -> dict[str, Path]:
    from linguaforge.pipelines.maet.decompose import decompose
    from linguaforge.pipelines.merging.deltas import SparseDelta

    deltas = {r: SparseDelta(root / f"{r}.delta.safetensors") for r in RUNS}
    return decompose(deltas["ability_pivot"], deltas["pivot"], {c: deltas[c] for c in LANGS}, parts_dir)


def merge_parts(root: Path, parts: dict[str, Path], out: Path) -> None:
    from linguaforge.pipelines.merging.deltas import SparseDelta
    from linguaforge.pipelines.merging.engine import MergeSpec, merge

    spec = MergeSpec.pipeline("maet", ability=SparseDelta(parts["ability"]),
                              languages={c: SparseDelta(parts[c]) for c in LANGS}, mu=MU, k2_percent=80)
    merge(root / "base", out, spec, shard_bytes=1 << 30)


def variant_streaming(root: Path, out: Path) -> None:
    merge_parts(root, decompose_into(root, out.parent / "parts"), out)


def variant_merge(root: Path, out: Path) -> None:
    merge_parts(root, {"ability": root / "parts" / "ability.safetensors"}
                | {c: root / "parts" / f"language-{c}.safetensors" for c in LANGS}, out)


def variant_prepare(root: Path, out: Path) -> None:
    """Not timed: the decomposed deltas the merge-alone variants read."""
    shutil.rmtree(root / "parts", ignore_errors=True)
    decompose_into(root, root / "parts")


def variant_io_floor(root: Path, out: Path) -> None:
    io_floor(out, root / "base", [root / f"{r}.delta.safetensors" for r in RUNS])


def variant_merge_io_floor(root: Path, out: Path) -> None:
    io_floor(out, root / "base", sorted((root / "parts").glob("*.safetensors")))


def variant_naive(root: Path, out: Path) -> None:
    """The straightforward merge: every model whole in memory via from_pretrained."""
    import torch
    from transformers import AutoModelForCausalLM

    from linguaforge.pipelines.merging.methods.maet import family_of

    def load(name):
        return AutoModelForCausalLM.from_pretrained(root / name, dtype=torch.bfloat16).state_dict()

    base = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.bfloat16)
    theta = base.state_dict()
    models = {r: load(r) for r in RUNS}
    merged = {}
    r_a = {n: 0.8 * (models["ability_pivot"][n].float() - t.float()) - 0.2 * (models["pivot"][n].float() - t.float())
           for n, t in theta.items()}
    r_lang = {n: sum(MU[c] * (models[c][n].float() - t.float()) for c in LANGS) for n, t in theta.items()}
    eligible = [n for n in theta if family_of(n) in ("q", "k", "v", "o", "up", "gate", "down")]
    sims = {n: float(torch.dot(r_a[n].flatten().double(), r_lang[n].flatten().double())) for n in eligible}
    ordered = sorted(eligible, key=lambda n: (-sims[n], n))
    selected = set(ordered[len(ordered) - round(0.8 * len(ordered)):])
    for n, t in theta.items():
        update = 0.2 * r_a[n] + r_lang[n] if n in selected else r_lang[n]
        merged[n] = (t.float() + update).to(t.dtype)
    base.load_state_dict(merged)
    base.save_pretrained(out)


def child(variant: str, root: Path, out: Path) -> None:
    import torch  # noqa: F401 - imports are not what is measured
    import transformers  # noqa: F401

    import linguaforge.pipelines.maet.decompose  # noqa: F401
    import linguaforge.pipelines.merging.engine  # noqa: F401

    began = time.perf_counter()
    variants = {"streaming": variant_streaming, "io_floor": variant_io_floor, "naive": variant_naive,
                "merge": variant_merge, "merge_io_floor": variant_merge_io_floor, "prepare": variant_prepare}
    variants[variant](root, out)
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak": peak}))


def run_variant(variant: str, root: Path, repeat: int = 1) -> dict:
    """Median time (and largest peak RSS) over `repeat` fresh child processes."""
    results = []
    for _ in range(repeat):
        out = root / f"out-{variant}" / "model"
        shutil.rmtree(out.parent, ignore_errors=True)
        out.parent.mkdir()
        subprocess.run(["sync"], check=False)  # the previous variant's dirty pages are not this one's cost
        done = subprocess.run([sys.executable, __file__, "--child", variant, str(root), str(out)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        shutil.rmtree(out.parent, ignore_errors=True)
    return {"seconds": statistics.median(r["seconds"] for r in results), "peak": max(r["peak"] for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per fast variant (median); naive runs once")
    parser.add_argument("--keep", help="build into (and reuse) this folder instead of a temporary one")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--granularity", choices=["row", "element"], default="row",
                        help="what the four CPT runs changed: 5 %% of the rows (default) or of the entries")
    parser.add_argument("--build", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        return build(Path(args.build[0]), *map(int, args.build[1:4]), args.build[4])
    if args.child:
        variant, root, out = args.child
        return child(variant, Path(root), Path(out))

    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        if not (root / "sw.delta.safetensors").exists():  # in a child too: this process stays small, and a
            # child's peak RSS starts from its parent's size at fork
            subprocess.run([sys.executable, __file__, "--build", str(root), str(args.hidden), str(args.layers),
                            str(args.vocab), args.granularity], check=True)
        config = json.loads((root / "base" / "config.json").read_text())
        params = sum(math.prod(s) for s in llama_shapes(config["hidden_size"], config["num_hidden_layers"],
                                                         config["vocab_size"], config["intermediate_size"]).values())
        print(f"model: Llama hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}: {params / 1e9:.2f} B "
              f"parameters (bf16); 4 CPT runs with 5 % of {args.granularity}s changed (built in {time.perf_counter() - began:.0f}s)")
        run_variant("prepare", root)
        results = {v: run_variant(v, root, args.repeat) for v in ("merge_io_floor", "merge", "io_floor", "streaming")}
        results["naive"] = run_variant("naive", root)
        labels = {"merge_io_floor": "I/O floor of the merge", "merge": "merge (Eq. 3-5)",
                  "io_floor": "I/O floor of the transfer", "streaming": "decompose + merge", "naive": "naive merge"}
        for v, r in results.items():
            print(f"  {labels[v]:26s}: {r['seconds']:7.1f} s, peak RSS {r['peak'] / 2**30:6.2f} GiB")
        m, mf = results["merge"], results["merge_io_floor"]
        s, f, n = results["streaming"], results["io_floor"], results["naive"]
        print(f"  merge / its I/O floor time                 = {m['seconds'] / mf['seconds']:.2f}x (goal <= 2x)")
        print(f"  decompose + merge / transfer I/O floor time = {s['seconds'] / f['seconds']:.2f}x")
        print(f"  decompose + merge / naive time              = {s['seconds'] / n['seconds']:.2f}x (goal <= 1x)")
        print(f"  decompose + merge / naive peak memory       = {s['peak'] / n['peak']:.2f}x (goal <= 0.25x)")
        print(f"  merge / naive peak memory                   = {m['peak'] / n['peak']:.2f}x (goal <= 0.25x)")


if __name__ == "__main__":
    main()
