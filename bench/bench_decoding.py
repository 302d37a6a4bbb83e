"""Benchmark: batched greedy generation and option log-likelihood scoring, measured side by side.

Prints ratios measured in one run on the same model and items (absolute times depend on the machine):
- generation throughput (items/s) of the batched generator vs a one-item-at-a-time loop, answers identical
  (goal: >= 4x);
- the cost of log-likelihood scoring of a 5-option X-CSQA item vs one forward pass over its prompt and
  longest option (goal: <= 1.5x), and, for scale, vs scoring each option with its own forward pass.

Model: a Llama built from config (hidden 256, 4 layers, random weights drawn wide so that answers differ per
prompt), with a byte-level BPE tokenizer trained on a small demo world whose MGSM / X-CSQA files are the items.

    python bench/bench_decoding.py [--items 48] [--batch-size 16] [--max-new-tokens 48] [--device cpu]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch  # noqa: E402
from options import parse_options  # noqa: E402

from linguaforge.pipelines.benchmarks.loaders import load_raw  # noqa: E402
from linguaforge.pipelines.benchmarks.prompts import build_items, load_preset  # noqa: E402
from linguaforge.pipelines.generation.causal_lm import HFCausalLMGenerator  # noqa: E402

LANGUAGES = ["en", "de", "zh", "sw", "bn", "ja"]


def build_assets(root: Path, hidden: int, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from linguaforge.pipelines.demo.models import train_llm_tokenizer, world_texts
    from linguaforge.pipelines.demo.world import WorldSpec, generate_world

    generate_world(WorldSpec(languages=LANGUAGES, general_docs=80, ability_problems=200, translation_pairs=60,
                             query_items=20, test_items=16), root / "world")
    tokenizer = train_llm_tokenizer(world_texts(root / "world"), 2000, root / "llm")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 8 * 8,
                         num_hidden_layers=layers, num_attention_heads=hidden // 32, num_key_value_heads=hidden // 64,
                         max_position_embeddings=4096, initializer_range=0.1,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config).eval(), tokenizer, root / "world" / "bench"


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of `repeats` runs (the machine is shared: the minimum is the least disturbed run)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_generation(model, tokenizer, bench_dir: Path, args) -> None:
    preset = load_preset("mindmerger")
    items = []
    for lang in LANGUAGES:
        items += build_items("mgsm", load_raw("mgsm", str(bench_dir / "mgsm"), lang), lang, preset)
    items = items[: args.items]
    loop = HFCausalLMGenerator(model, tokenizer, batch_size=1, device=args.device)
    batched = HFCausalLMGenerator(model, tokenizer, batch_size=args.batch_size, device=args.device)
    loop.generate(items[:2], 4, [])  # warm-up
    t_loop, out_loop = timed(lambda: loop.generate(items, args.max_new_tokens, []), args.repeats)
    t_batch, out_batch = timed(lambda: batched.generate(items, args.max_new_tokens, []), args.repeats)
    lengths = [len(tokenizer(it.prompt)["input_ids"]) for it in items]
    print(f"generation: {len(items)} MGSM prompts ({min(lengths)}-{max(lengths)} tokens, {len(LANGUAGES)} languages), "
          f"max_new_tokens={args.max_new_tokens}, {len(set(out_loop))} distinct answers")
    print(f"  one at a time : {len(items) / t_loop:8.2f} items/s")
    print(f"  batch of {args.batch_size:<4} : {len(items) / t_batch:8.2f} items/s")
    print(f"  throughput ratio batched / one-at-a-time = {t_loop / t_batch:.2f}x (goal >= 4x); "
          f"identical answers: {out_loop == out_batch}")
    if out_loop != out_batch:
        raise SystemExit("batched answers differ from one-at-a-time answers")


def bench_loglik(model, tokenizer, bench_dir: Path, args) -> None:
    preset = load_preset("mindmerger")
    gen = HFCausalLMGenerator(model, tokenizer, batch_size=1, device=args.device)
    item = max(build_items("xcsqa", load_raw("xcsqa", str(bench_dir / "xcsqa"), "de"), "de", preset),
               key=lambda it: len(it.prompt))
    prompt = tokenizer(item.prompt)["input_ids"]
    options = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in item.continuations]
    longest = torch.tensor([prompt + max(options, key=len)], device=gen.device)
    separate = [torch.tensor([prompt + o], device=gen.device) for o in options]

    def one_forward():
        with torch.inference_mode():
            return model(input_ids=longest).logits

    def each_option():
        with torch.inference_mode():
            return [model(input_ids=ids).logits for ids in separate]

    for fn in (one_forward, each_option, lambda: gen.option_logprobs([item])):
        fn()  # warm-up
    samples = {"ours": [], "forward": [], "each": []}
    for _ in range(args.loglik_repeats):  # interleaved, so that machine load hits all three alike
        samples["forward"].append(timed(one_forward, 1)[0])
        samples["ours"].append(timed(lambda: gen.option_logprobs([item]), 1)[0])
        samples["each"].append(timed(each_option, 1)[0])
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"log-likelihood: one X-CSQA item, {len(options)} options, prompt {len(prompt)} tokens, "
          f"longest option {max(map(len, options))} tokens (median of {args.loglik_repeats})")
    print(f"  one forward over prompt + longest option : {1000 * med['forward']:8.2f} ms")
    print(f"  option_logprobs (one packed pass)         : {1000 * med['ours']:8.2f} ms")
    print(f"  a forward pass per option                : {1000 * med['each']:8.2f} ms")
    print(f"  cost ratio option_logprobs / one forward = {med['ours'] / med['forward']:.2f}x (goal <= 1.5x); "
          f"a pass per option would be {med['each'] / med['forward']:.2f}x")


def main() -> None:
    args = parse_options(__doc__, {"items": 48, "batch-size": 16, "max-new-tokens": 48, "hidden": 256, "layers": 4,
                                     "repeats": 2, "loglik-repeats": 30, "device": {"default": None}})
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, bench_dir = build_assets(Path(tmp), args.hidden, args.layers)
        if args.device:
            model.to(args.device)
        print(f"model: Llama hidden {args.hidden}, {args.layers} layers, vocab {len(tokenizer)}, "
              f"device {next(model.parameters()).device}, torch threads {torch.get_num_threads()}")
        bench_generation(model, tokenizer, bench_dir, args)
        bench_loglik(model, tokenizer, bench_dir, args)


if __name__ == "__main__":
    main()
