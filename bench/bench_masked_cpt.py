"""Benchmark: masked CPT at k1 = 5 % against full CPT, on the same model and data, in one run.

Prints, side by side:
- training throughput (tokens/s) of masked CPT / full CPT (goal >= 0.9x);
- optimizer-state bytes of masked CPT (MaskedAdamW: moments for the key neurons only, plus their indices)
  / full AdamW's (goal <= 0.15x);
- size of the sparse delta artifact / a full safetensors checkpoint of the model (goal <= 0.15x).

Model: a Llama built from config with random weights; data: random token blocks; mask: 5 % of the neurons
(rows) picked at random over the whole model, as a probe would pick them (the cost does not depend on which).

    python bench/bench_masked_cpt.py [--hidden 512] [--layers 4] [--vocab 8000] [--steps 6] [--k1 5]
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from options import parse_options  # noqa: E402

from linguaforge.pipelines.maet.cpt import write_cpt_delta  # noqa: E402
from linguaforge.pipelines.maet.importance import NeuronMask, neuron_count  # noqa: E402
from linguaforge.pipelines.maet.masked import KeyNeurons  # noqa: E402
from linguaforge.pipelines.training.causal_lm import CausalLMRecipe, PackedBlocks  # noqa: E402
from linguaforge.pipelines.training.cpt import make_backend  # noqa: E402
from linguaforge.pipelines.training.loop import train  # noqa: E402
from linguaforge.pipelines.training.settings import TrainSettings  # noqa: E402


def build_model(root: Path, hidden: int, layers: int, vocab: int) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 8 / 3),
                         num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                         num_key_value_heads=max(1, hidden // 64), max_position_embeddings=512,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root / "model")
    return root / "model"


def build_blocks(root: Path, vocab: int, block: int, n: int) -> PackedBlocks:
    ids = np.random.default_rng(0).integers(0, vocab, size=(n, block), dtype=np.int32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(ids.ravel()), block)
    (root / "blocks").mkdir()
    pq.write_table(pa.table({"input_ids": column, "n_real": pa.array([block] * n, pa.int32())}),
                   root / "blocks" / "blocks-00000.parquet")
    return PackedBlocks.from_dir(root / "blocks")


def random_mask(model, k1: float) -> NeuronMask:
    g = torch.Generator().manual_seed(1)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    masks = {n: torch.rand(neuron_count(s, "row"), generator=g) < k1 / 100 for n, s in shapes.items()}
    return NeuronMask("row", shapes, masks, k1)


def run(model_dir: Path, data: PackedBlocks, settings: TrainSettings, k1: float | None):
    from linguaforge.pipelines.models import load_causal_lm

    model = load_causal_lm(str(model_dir))
    mask = random_mask(model, k1) if k1 is not None else None
    backend = make_backend(model, settings, data.block_size, KeyNeurons(mask) if mask is not None else None)
    warm = settings.model_copy(update={"steps": 1})
    train(backend, CausalLMRecipe(data, warm))  # first step: allocator and kernels warm up; not timed
    began = time.perf_counter()
    result = train(backend, CausalLMRecipe(data, settings))
    seconds = time.perf_counter() - began
    optimizer = backend.optimizer
    if hasattr(optimizer, "state_bytes"):
        state_bytes = optimizer.state_bytes()
    else:
        state_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                          if torch.is_tensor(t))
    return result.summary()["tokens"] / seconds, state_bytes, backend.full_state_dict()


def main() -> None:
    args = parse_options(__doc__, {"hidden": 512, "layers": 4, "vocab": 8000, "block": 128, "steps": 6, "k1": 5.0})
    settings = TrainSettings(steps=args.steps, learning_rate=1e-4, batch_tokens=8 * args.block,
                             micro_batch_size=8, schedule="constant")
    with tempfile.TemporaryDirectory(prefix="bench-masked-") as tmp:
        root = Path(tmp)
        model_dir = build_model(root, args.hidden, args.layers, args.vocab)
        data = build_blocks(root, args.vocab, args.block, 256)
        from linguaforge.pipelines.weights import WeightReader

        params = sum(math.prod(s) for s in WeightReader(model_dir).shapes().values())
        print(f"model: Llama hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}: "
              f"{params / 1e6:.1f} M parameters; {args.steps} steps of {settings.batch_tokens} tokens; "
              f"k1 = {args.k1} % (rows)")
        full_tps, full_bytes, _ = run(model_dir, data, settings, None)
        masked_tps, masked_bytes, trained = run(model_dir, data, settings, args.k1)
        write_cpt_delta(root / "delta.safetensors", str(model_dir), "bench", trained)
        delta_size = (root / "delta.safetensors").stat().st_size
        full_size = (model_dir / "model.safetensors").stat().st_size
        print(f"  throughput      : full {full_tps:8.0f} tok/s, masked {masked_tps:8.0f} tok/s -> "
              f"ratio {masked_tps / full_tps:.2f}x (goal >= 0.9x)")
        print(f"  optimizer state : full {full_bytes / 2**20:8.1f} MiB, masked {masked_bytes / 2**20:8.1f} MiB -> "
              f"ratio {masked_bytes / full_bytes:.3f}x (goal <= 0.15x)")
        print(f"  stored result   : full checkpoint {full_size / 2**20:8.1f} MiB, sparse delta "
              f"{delta_size / 2**20:8.1f} MiB -> ratio {delta_size / full_size:.3f}x (goal <= 0.15x)")


if __name__ == "__main__":
    main()
