"""Benchmark: `linguaforge merge` against mergekit's `mergekit-yaml` on the same models and the same mergekit YAML,
side by side in one run, with the I/O floor.

Models (built once into --root, then reused): a Llama of 1.1 B parameters in bf16 (TinyLlama's shapes: hidden
2048, 22 layers, 32 heads, 4 KV heads, intermediate 5632, vocabulary 32 000), random weights, and two fine-tunes
that change --share (5 %) of every tensor's entries. The merge: mergekit's `task_arithmetic`, weights 1.0 and
0.5, dtype bfloat16, in one YAML file that both tools read unchanged.

Each turn runs, in fresh processes and in turn: mergekit, linguaforge, and the I/O floor (read each input file
once, write the output's bytes once, the fastest ways we know: a reused read buffer, O_DIRECT writes); before
each, the previous output is flushed to disk (`os.sync`), so no tool writes while another's backlog drains;
--turns turns (3), medians compared. Peak RSS per process, its own (see `LAUNCHER`). Then both outputs are
compared with an fp32 reference, base + Σ w_i (θ_i − base) computed in float32 and rounded once to bf16: the
number of entries off by one or more bf16 ulps, and the largest distance.

Goals (issue 14): linguaforge ≤ 0.5x mergekit's wall time, ≤ 2 GiB peak RSS, and closer to the reference.

Measured here (2 cores, 24 GiB, 2026-12-04, two runs of 3 turns): mergekit 0.1.5 22.7 / 22.5 s and 5.5 GiB;
linguaforge 7.6 / 7.1 s (0.34x / 0.32x mergekit, 2.0x / 1.85x the floor) and 0.50 GiB; the I/O floor 3.8 / 3.9 s.
linguaforge's output is the fp32 reference rounded once (0 entries off); mergekit's has 13.2 M of 1.1 G entries
one or more bf16 ulps off (it subtracts and sums in bf16). From a fresh clone (2026-12-04, `make bench-anchors`,
models built in this run): mergekit 21.8 s, 5.5 GiB; linguaforge 7.2 s (0.33x, 2.85x the floor), 0.50 GiB; floor
2.5 s, 0.04 GiB (peaks measured through `LAUNCHER`; without it every tool read at least 1.52 GiB, this
process's own peak after building the models).
Where it came from (2026-12-03: 20.4 / 23.6 s, 0.81x / 0.72x, 1.50 / 1.75 GiB): on this VM a fresh memory page
costs more than the arithmetic done in it, and writing through the page cache costs more kernel time than the
disk takes (dd, 2.2 GB: 7.2-8.6 s buffered, 1.8 s with O_DIRECT). So task arithmetic over model folders streams
each tensor through 256K-entry slices in reused buffers, on one intra-op thread (the second one's spinning took
the core the shard writer needs), and shards are written with O_DIRECT. The floor of the earlier runs (13-16 s,
"0.5x mergekit lies at the floor") was an artefact of the same costs: it read into a fresh 64 MB buffer per
call and wrote through the page cache.

    make bench-anchors                     # installs mergekit into bench/.anchors/ (first use), then runs this
    python bench/bench_vs_mergekit.py [--layers 22] [--turns 3] [--root bench/.cache/vs-mergekit]
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from anchors import tool  # noqa: E402
from llama_shapes import llama_shapes  # noqa: E402
from options import parse_options  # noqa: E402

OPTIONS = {"hidden": 2048, "layers": 22, "intermediate": 5632, "vocab": 32000, "heads": 32, "kv_heads": 4,
           "share": 0.05, "turns": 3, "root": str(HERE / ".cache" / "vs-mergekit")}
WEIGHTS = {"tune_a": 1.0, "tune_b": 0.5}


def build(root: Path, o) -> None:
    """Base and fine-tunes as HF folders (config, a small tokenizer, 2 GB safetensors shards), streamed."""
    import torch
    from transformers import LlamaConfig

    from linguaforge.pipelines.weights import ShardedWriter

    if (root / ".complete").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    config = LlamaConfig(vocab_size=o.vocab, hidden_size=o.hidden, intermediate_size=o.intermediate,
                         num_hidden_layers=o.layers, num_attention_heads=o.heads, num_key_value_heads=o.kv_heads,
                         tie_word_embeddings=False, dtype="bfloat16", architectures=["LlamaForCausalLM"])
    shapes = model_shapes(o)
    layout = [(n, torch.bfloat16, s) for n, s in shapes.items()]
    writers = {name: ShardedWriter(root / name, 2 * 10**9, layout) for name in ("base", *WEIGHTS)}
    g = torch.Generator().manual_seed(0)
    for name, shape in shapes.items():
        base = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
        writers["base"].add(name, base)
        for tune in WEIGHTS:
            changed = torch.rand(shape, generator=g) < o.share
            writers[tune].add(name, (base.float() + torch.randn(shape, generator=g) * 0.01 * changed).to(torch.bfloat16))
    for name, writer in writers.items():
        writer.close()
        config.save_pretrained(root / name)
        _tokenizer(o.vocab).save_pretrained(root / name)
    (root / ".complete").write_text("")


def model_shapes(o) -> dict[str, tuple[int, ...]]:
    """Llama's tensors with grouped-query attention (k and v have kv_heads / heads of q's rows)."""
    shapes = llama_shapes(o.hidden, o.layers, o.vocab, o.intermediate)
    return {n: ((s[0] * o.kv_heads // o.heads, s[1]) if n.endswith(("k_proj.weight", "v_proj.weight")) else s)
            for n, s in shapes.items()}


def _tokenizer(vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"w{i}": i for i in range(3, vocab)}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def config_yaml(root: Path) -> Path:
    lines = ["merge_method: task_arithmetic", f"base_model: {root / 'base'}", "models:"]
    for tune, weight in WEIGHTS.items():
        lines += [f"  - model: {root / tune}", "    parameters:", f"      weight: {weight}"]
    path = root / "task_arithmetic.yml"
    path.write_text("\n".join(lines + ["dtype: bfloat16", ""]))
    return path


# Linux starts an exec'd process's peak RSS at the high-water mark of the memory it was spawned from (vfork
# shares the parent's, fork copies it), and this process has held the built models: spawned from here, every
# tool reported at least this process's peak (1.52 GiB for the I/O floor after a fresh build). So each tool
# starts from a small launcher, which reports its child's own peak (RUSAGE_CHILDREN) on its last stderr line.
LAUNCHER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
            "print('', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, sep=chr(10), file=sys.stderr); "
            "sys.exit(code)")  # on a line of its own, even after a tool's unterminated last line


def run(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one process."""
    began = time.perf_counter()
    process = subprocess.run([sys.executable, "-c", LAUNCHER, *command], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=env, text=True)
    seconds = time.perf_counter() - began
    *said, peak_kib = process.stderr.strip().splitlines() or [""]
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({process.returncode}): {chr(10).join(said)[-2000:]}")
    return seconds, int(peak_kib) / 2**20


def ulps(root: Path, outputs: dict[str, Path]) -> dict[str, tuple[int, int, int]]:
    """Per output: (entries ≥ 1 bf16 ulp from the fp32 reference rounded to bf16, largest distance in ulps, entries)."""
    import torch

    from linguaforge.pipelines.weights import WeightReader

    readers = {name: WeightReader(root / name) for name in ("base", *WEIGHTS)}
    outs = {tool_name: WeightReader(path) for tool_name, path in outputs.items()}
    counts = {tool_name: [0, 0, 0] for tool_name in outputs}
    for name in readers["base"].names():
        base = readers["base"].get(name).float()
        reference = base.clone()
        for tune, weight in WEIGHTS.items():
            reference += weight * (readers[tune].get(name).float() - base)
        want = _ordered(reference.to(torch.bfloat16))
        for tool_name, reader in outs.items():
            distance = (_ordered(reader.get(name)) - want).abs()
            counts[tool_name][0] += int((distance > 0).sum())
            counts[tool_name][1] = max(counts[tool_name][1], int(distance.max()))
            counts[tool_name][2] += distance.numel()
    return {k: tuple(v) for k, v in counts.items()}


def _ordered(values):
    """bf16 bit patterns as integers in the order of their values (±0 alike): a difference counts ulps."""
    bits = values.view(__import__("torch").int16).int()
    return bits.where(bits >= 0, -(bits & 0x7FFF))


def main() -> None:
    o = parse_options(__doc__, OPTIONS)
    root = Path(o.root)
    mergekit = tool("mergekit")
    build(root, o)
    config = config_yaml(root)
    linguaforge = Path(sys.executable).parent / "linguaforge"
    variants = {
        "mergekit": lambda out: [str(mergekit), str(config), str(out)],
        "linguaforge": lambda out: [str(linguaforge), "merge", str(config), "--out", str(out)],
        "io floor": lambda out: [sys.executable, str(HERE / "io_floor.py"), str(out), str(root / "base"),
                                 *(str(root / tune) for tune in WEIGHTS)],
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for turn in range(o.turns):
        for name, command in variants.items():
            out = root / "out" / name.replace(" ", "_")
            shutil.rmtree(out, ignore_errors=True)
            os.sync()  # the previous tool's output reaches the disk first, not while this one writes
            results[name].append(run(command(out)))
            print(f"turn {turn + 1}: {name:12s} {results[name][-1][0]:6.1f} s  {results[name][-1][1]:5.2f} GiB", flush=True)
    off = ulps(root, {name: root / "out" / name for name in ("mergekit", "linguaforge")})

    wall = {name: statistics.median(s for s, _ in runs) for name, runs in results.items()}
    rss = {name: max(r for _, r in runs) for name, runs in results.items()}
    params = sum(math.prod(s) for s in model_shapes(o).values())
    print(f"\n{o.layers} layers, hidden {o.hidden}: about {params / 1e9:.2f} B parameters, bf16; fine-tunes change "
          f"{o.share:.0%} of each tensor; task_arithmetic, weights {list(WEIGHTS.values())}; median of {o.turns}")
    print(f"{'':14s}{'wall s':>8s}{'vs mergekit':>13s}{'vs floor':>10s}{'peak RSS GiB':>14s}{'entries ≥1 ulp off':>29s}"
          f"{'max ulps':>10s}")
    for name in variants:
        changed = f"{off[name][0]:,} of {off[name][2]:,}" if name in off else ""
        print(f"{name:14s}{wall[name]:8.1f}{wall[name] / wall['mergekit']:12.2f}x{wall[name] / wall['io floor']:9.2f}x"
              f"{rss[name]:14.2f}  {changed:>27s}{(str(off[name][1]) if name in off else ''):>10s}")
    ratio = wall["linguaforge"] / wall["mergekit"]
    print(f"\ngoals: time <= 0.5x mergekit: {ratio:.2f}x {'met' if ratio <= 0.5 else 'NOT met'}; peak RSS <= 2 GiB: "
          f"{rss['linguaforge']:.2f} {'met' if rss['linguaforge'] <= 2 else 'NOT met'}; closer to fp32 than mergekit: "
          f"{'met' if off['linguaforge'][0] < off['mergekit'][0] else 'NOT met'}")


if __name__ == "__main__":
    main()
