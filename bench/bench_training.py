"""Benchmark: the project's training loop (`pipelines.training.train` with the torch back end, progress
callback and per-step metrics) against a plain PyTorch loop, on the same model, batches and optimizer.

Prints tokens/s of both and their ratio (goal: ours >= 0.9x the plain loop). The variants take turns,
A B A B ..., each turn a fresh copy of the same initial model trained for --steps steps on the same
blocks, so machine drift hits both alike; the median of each variant's turns is compared.

Model: the demo's tiny Llama (hidden 128, 4 layers, 2 000-token vocabulary) built from config; data:
random token blocks of 128 tokens; 4 096 tokens per optimizer step (the demo's settings).

    python bench/bench_training.py [--hidden 128] [--layers 4] [--steps 20] [--turns 3]
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from linguaforge.pipelines.training.backends import TorchBackend  # noqa: E402
from linguaforge.pipelines.training.causal_lm import CausalLMRecipe, PackedBlocks  # noqa: E402
from linguaforge.pipelines.training.loop import BlockOrder, train  # noqa: E402
from linguaforge.pipelines.training.settings import TrainSettings  # noqa: E402


def blocks(folder: Path, n: int, block: int, vocab: int) -> PackedBlocks:
    ids = np.random.default_rng(0).integers(3, vocab, size=(n, block), dtype=np.int32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1)), block)
    pq.write_table(pa.table({"input_ids": column, "n_real": pa.array([block] * n, pa.int32())}),
                   folder / "blocks-00000.parquet")
    return PackedBlocks.from_dir(folder)


def ours(model, data: PackedBlocks, settings: TrainSettings) -> float:
    reports = []
    result = train(TorchBackend(model, settings, device=torch.device("cpu")), CausalLMRecipe(data, settings),
                   progress=lambda done, total, metrics: reports.append(metrics))
    return result.summary()["tokens"] / result.seconds


def plain(model, data: PackedBlocks, settings: TrainSettings) -> float:
    """What one would write by hand: same data order, token-weighted loss, clipping, AdamW, schedule."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate,
                                  betas=settings.adam_betas, eps=settings.adam_eps, weight_decay=0.0)
    order, mb = BlockOrder(len(data), settings.seed), settings.micro_batch_size
    accumulation = settings.accumulation(data.block_size)
    model.train()
    began, tokens = time.perf_counter(), 0
    for step in range(settings.steps):
        batches = [data.batch(order.indices((step * accumulation + m) * mb, mb)) for m in range(accumulation)]
        n_targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        for b in batches:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten(), reduction="sum")
            (loss / n_targets).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate * settings.lr_factor(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += accumulation * mb * data.block_size
    return tokens / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    heads = max(1, args.hidden // 16)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=2000, hidden_size=args.hidden,
                                         intermediate_size=args.hidden * 8 // 3 // 8 * 8,
                                         num_hidden_layers=args.layers, num_attention_heads=heads,
                                         num_key_value_heads=max(1, heads // 2), tie_word_embeddings=False))
    settings = TrainSettings(steps=args.steps, learning_rate=2e-3, warmup_steps=5, batch_tokens=4096,
                             micro_batch_size=16, checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        data = blocks(Path(tmp), 512, 128, 2000)
        plain(copy.deepcopy(model), data, settings.model_copy(update={"steps": 2}))  # warm-up
        speeds: dict[str, list[float]] = {"ours": [], "plain": []}
        for _ in range(args.turns):
            for name, loop in (("ours", ours), ("plain", plain)):
                speeds[name].append(loop(copy.deepcopy(model), data, settings))
    med = {k: statistics.median(v) for k, v in speeds.items()}
    print(f"tokens/s, median of {args.turns} turns of {args.steps} steps "
          f"(model {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters):")
    for name, v in speeds.items():
        print(f"  {name:6s} {med[name]:9.0f}   turns: {', '.join(f'{x:.0f}' for x in v)}")
    ratio = med["ours"] / med["plain"]
    print(f"ours / plain = {ratio:.3f}x  (goal >= 0.9x: {'met' if ratio >= 0.9 else 'NOT met'})")
    assert math.isfinite(ratio)


if __name__ == "__main__":
    main()
