"""`make gpu-check`: the project's compute paths on a GPU, in one short prepared run that prints one table.

On a machine with its own torch and transformers and nothing else (a lent GPU machine: no internet, no package
index), it needs only what travels with the checkout: the project's source, and the wheels of the few pure-Python
packages `pipelines/` imports beyond torch and transformers (`make gpu-wheels` puts them in build/gpu-wheels;
pydantic's compiled core for Python 3.10-3.13). It imports the source in place, without installing anything
into that machine's Python.

Checks, each on the tiny models of the demo's architecture (a Llama and an mT5 encoder, built from config):
  training step (plain)     the project's loop and torch back end on the device: finite loss, weights moved
  training step (masked)    MaskedAdamW with a row mask: every frozen row bitwise unchanged on the device
  MindMerger                forward, backward (the mapping alone gets gradients) and greedy generation
  greedy, device vs CPU     fp32: the same token ids as on the CPU; bf16: the share of texts equal to fp32's
  eval items/s              the project's generator against transformers' `generate` at the same batch, side by side
  training tokens/s         the project's loop against a plain PyTorch loop at the same micro-batch, side by side

`--device cpu` runs the same script on the CPU (`make test` does, so that it cannot rot).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "gpu-check"


def importable_project() -> None:
    """`linguaforge` from this checkout (a link farm: the layers are top-level folders), and the wheels it needs
    beyond torch and transformers installed into build/gpu-check/site when this Python lacks them."""
    try:
        import linguaforge.pipelines  # noqa: F401
    except ImportError:
        shim = BUILD / "shim" / "linguaforge"
        shim.mkdir(parents=True, exist_ok=True)
        (shim / "__init__.py").write_text("")
        for layer in ("pipelines", "storage"):
            if not (shim / layer).exists():
                (shim / layer).symlink_to(ROOT / layer)
        sys.path.insert(0, str(shim.parent))
    missing = [m for m in ("pydantic", "fsspec", "yaml") if _absent(m)]
    if missing:
        site, wheels = BUILD / "site", ROOT / "build" / "gpu-wheels"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels),
                        "--target", str(site), "pydantic", "fsspec", "pyyaml"], check=True)
        sys.path.insert(0, str(site))


def _absent(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


class Table:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, check: str, ok: bool, result: str, detail: str = "") -> None:
        self.rows.append({"check": check, "ok": ok, "result": result, "detail": detail})
        print(f"  {'ok  ' if ok else 'FAIL'} {check}: {result}", flush=True)

    def show(self, device: str) -> str:
        width = max(len(r["check"]) for r in self.rows)
        lines = [f"gpu-check on {device}", f"| {'check':<{width}} | ok | result | detail |",
                 f"|{'-' * (width + 2)}|----|--------|--------|"]
        lines += [f"| {r['check']:<{width}} | {'yes' if r['ok'] else 'NO'} | {r['result']} | {r['detail']} |"
                  for r in self.rows]
        return "\n".join(lines)


def sentences(n: int) -> list[str]:
    """Synthetic text for the tokenizers: numbers and words, as the demo's math items are."""
    import random

    rng = random.Random(0)
    words = ["Anna", "has", "cakes", "apples", "buys", "gives", "how", "many", "left", "the", "answer", "is", "and"]
    return [" ".join(rng.choice(words) if rng.random() < 0.7 else str(rng.randint(0, 99)) for _ in range(12))
            for _ in range(n)]


def build_models(folder: Path, hidden: int, layers: int):
    from linguaforge.pipelines.demo.models import (
        build_tiny_encoder,
        build_tiny_llm,
        train_encoder_tokenizer,
        train_llm_tokenizer,
    )

    texts = sentences(2000)
    llm_tok = train_llm_tokenizer(iter(texts), 400, folder / "llm")
    enc_tok = train_encoder_tokenizer(iter(texts), 400, folder / "encoder")
    build_tiny_llm(llm_tok, folder / "llm", hidden=hidden, layers=layers, seed=0)
    build_tiny_encoder(enc_tok, folder / "encoder", hidden=max(32, hidden // 2), layers=2, seed=0)
    return folder / "llm", folder / "encoder"


class Blocks:
    """A minimal causal-LM recipe over random token blocks (the loop's Recipe protocol), for timing."""

    def __init__(self, vocab: int, block: int, n: int, micro: int, steps: int):
        import numpy as np
        import torch

        self.ids = torch.from_numpy(np.random.default_rng(0).integers(3, vocab, (n, block)))
        self.steps, self.micro_batch_size, self.seed, self.checkpoint_every = steps, micro, 0, 10**9

    def __len__(self):
        return len(self.ids)

    def micro_batches(self, world: int) -> int:
        return 1

    def check(self) -> None:
        pass

    def batch(self, indices):
        ids = self.ids[indices]
        return {"input_ids": ids, "attention_mask": ids.new_ones(ids.shape), "labels": ids}

    def target_tokens(self, indices) -> int:
        return len(indices) * (self.ids.shape[1] - 1)

    def start(self) -> None:
        pass

    def after_step(self, step, metrics) -> None:
        pass

    def summary(self, result) -> dict:
        return {}


def settings_for(device: str, micro: int, steps: int, precision: str = "fp32"):
    from linguaforge.pipelines.training.settings import TrainSettings

    return TrainSettings(steps=steps, learning_rate=1e-3, batch_tokens=1, micro_batch_size=micro, schedule="constant",
                         precision=precision, device=device, grad_clip=None)


def check_training(table: Table, llm_dir: Path, device: str, micro: int, block: int, steps: int) -> None:
    import torch

    from linguaforge.pipelines.maet.importance import NeuronMask
    from linguaforge.pipelines.maet.masked import KeyNeurons
    from linguaforge.pipelines.models import load_causal_lm
    from linguaforge.pipelines.training.cpt import make_backend
    from linguaforge.pipelines.training.loop import train

    model = load_causal_lm(str(llm_dir))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    recipe = Blocks(model.config.vocab_size, block, 64 * micro, micro, steps + 1)
    backend = make_backend(model, settings_for(device, micro, steps + 1), block)
    marks = {}

    def mark(done, total, metrics):  # timed from the end of the first (warm-up) step to the end of the last
        sync(device)
        marks[done] = time.perf_counter()

    result = train(backend, recipe, progress=mark)
    ours = steps * micro * block / (marks[steps + 1] - marks[1])
    on_device = {str(p.device) for p in backend.model.parameters()}
    moved = sum(not torch.equal(p.detach().cpu(), before[n]) for n, p in backend.model.named_parameters())
    table.add("training step (plain)", all(torch.isfinite(torch.tensor(result.losses))) and moved > 0
              and on_device == {str(torch.device(device if device != "cuda" else "cuda:0"))},
              f"loss {result.losses[0]:.3f} → {result.losses[-1]:.3f}", f"{moved} tensors moved, on {on_device}")

    plain = load_causal_lm(str(llm_dir)).to(device).train()
    optimizer = torch.optim.AdamW(plain.parameters(), lr=1e-3)
    for step in range(steps + 1):
        if step == 1:  # the first step warms up, as above
            sync(device)
            began = time.perf_counter()
        batch = {k: v.to(device) for k, v in recipe.batch(list(range(step * micro, (step + 1) * micro))).items()}
        plain(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    baseline = steps * micro * block / (time.perf_counter() - began)
    table.add("training tokens/s", True, f"{ours:,.0f} vs plain PyTorch {baseline:,.0f} ({ours / baseline:.2f}x)",
              f"micro-batch {micro} x {block} tokens, {steps} steps, side by side")

    model = load_causal_lm(str(llm_dir))
    name = next(n for n, p in model.named_parameters() if n.endswith("mlp.up_proj.weight"))
    rows = model.get_parameter(name).shape[0]
    keep = torch.zeros(rows, dtype=torch.bool)
    keep[: rows // 4] = True
    mask = NeuronMask("row", {name: tuple(model.get_parameter(name).shape)}, {name: keep})
    frozen_before = model.get_parameter(name).detach()[~keep].clone()
    trainable_before = model.get_parameter(name).detach()[keep].clone()
    backend = make_backend(model, settings_for(device, micro, 2), block, KeyNeurons(mask))
    train(backend, Blocks(model.config.vocab_size, block, 8 * micro, micro, 2))
    after = backend.model.get_parameter(name).detach()
    frozen_same = torch.equal(after[~keep].cpu(), frozen_before)
    trained_moved = not torch.equal(after[keep].cpu(), trainable_before)
    others_same = all(torch.equal(p.detach().cpu(), before[n]) for n, p in backend.model.named_parameters() if n != name)
    table.add("training step (masked)", frozen_same and others_same and trained_moved,
              ("frozen rows bitwise unchanged" if frozen_same else "FROZEN ROWS MOVED")
              + ("" if trained_moved else ", BUT THE TRAINABLE ROWS DID NOT MOVE"),
              f"{int(keep.sum())} of {rows} rows of {name} trainable; every other tensor unchanged: {others_same}")


def check_plan(table: Table, llm_dir: Path, device: str, micro: int, block: int) -> None:
    """`linguaforge plan`'s activation estimate against the peak of one bf16 forward and backward: on a GPU
    torch.cuda.max_memory_allocated less what was there before and the gradients; on a CPU what autograd saved."""
    import torch

    from linguaforge.pipelines.models import load_causal_lm
    from linguaforge.pipelines.planning import activation_bytes, model_shape

    model = load_causal_lm(str(llm_dir)).to(device=device, dtype=torch.bfloat16).train()
    estimate = activation_bytes(model_shape(model.config.to_dict()), micro, block, checkpointing=False)
    ids = torch.randint(0, model.config.vocab_size, (micro, block), device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        model(input_ids=ids, labels=ids).loss.backward()
        torch.cuda.synchronize()
        gradients = sum(p.numel() * p.element_size() for p in model.parameters())
        measured, how = torch.cuda.max_memory_allocated() - before - gradients, "max_memory_allocated"
    else:
        saved: dict[int, int] = {}

        def pack(tensor):
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, labels=ids)
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        measured, how = sum(n for k, n in saved.items() if k not in weights), "bytes autograd saved"
    ratio = measured / estimate
    table.add("plan: activations", 0.5 <= ratio <= 2.0, f"measured {measured / 2**20:,.1f} MiB vs planned "
              f"{estimate / 2**20:,.1f} MiB ({ratio:.2f}x)", f"{how}, bf16, micro-batch {micro} x {block}, no checkpointing")


def check_mindmerger(table: Table, llm_dir: Path, encoder_dir: Path, device: str) -> None:
    import torch

    from linguaforge.pipelines.mindmerger.data import Example, collate
    from linguaforge.pipelines.mindmerger.generate import MindMergerGenerator
    from linguaforge.pipelines.mindmerger.model import MindMergerModel, mindmerger_loss_sum
    from linguaforge.pipelines.models import load_causal_lm, load_encoder, load_tokenizer

    enc_tok, llm_tok = load_tokenizer(str(encoder_dir)), load_tokenizer(str(llm_dir))
    model = MindMergerModel(load_encoder(str(encoder_dir)), load_causal_lm(str(llm_dir)), llm_tok.bos_token_id)
    model.to(device).train()
    texts = sentences(8)
    examples = [Example(enc_tok(t)["input_ids"], llm_tok("Q:", add_special_tokens=False)["input_ids"],
                        llm_tok(" 42", add_special_tokens=False)["input_ids"] + [llm_tok.eos_token_id], "de")
                for t in texts]
    batch = {k: v.to(device) for k, v in collate(examples).items()}
    loss = mindmerger_loss_sum(model, batch)
    loss.backward()
    mapped = all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.mapping.parameters())
    frozen = all(p.grad is None for p in [*model.encoder.parameters(), *model.llm.parameters()])
    generator = MindMergerGenerator(model, enc_tok, llm_tok, batch_size=4, device=device)

    class Item:
        def __init__(self, text):
            self.id, self.benchmark, self.language, self.prompt, self.source_text = "1", "mgsm", "de", "Q:", text
            self.continuations = ()

    outputs = generator.generate([Item(t) for t in texts[:4]], max_new_tokens=6)
    table.add("MindMerger", bool(torch.isfinite(loss)) and mapped and frozen and len(outputs) == 4,
              f"loss {loss.item():.2f}, mapping gradients {'finite' if mapped else 'MISSING'}",
              f"frozen encoder and LLM without gradients: {frozen}; generated {len(outputs)} texts")


def check_greedy(table: Table, llm_dir: Path, device: str, items: int, batch: int, new_tokens: int) -> None:
    import torch

    from linguaforge.pipelines.generation.causal_lm import HFCausalLMGenerator
    from linguaforge.pipelines.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(str(llm_dir))
    prompts = [f"Anna has {i} cakes and buys {i % 7}. How many" for i in range(items)]

    class Item:
        def __init__(self, i, prompt):
            self.id, self.benchmark, self.language, self.prompt = str(i), "mgsm", "en", prompt
            self.source_text, self.continuations = "", ()

    work = [Item(i, p) for i, p in enumerate(prompts)]
    cpu = HFCausalLMGenerator(load_causal_lm(str(llm_dir)), tok, batch_size=batch, device="cpu")
    expected = cpu.generate(work, new_tokens)
    fp32 = HFCausalLMGenerator(load_causal_lm(str(llm_dir)), tok, batch_size=batch, device=device)
    fp32.generate(work[:batch], new_tokens)  # warm-up, as for transformers' below
    sync(device)
    began = time.perf_counter()
    got = fp32.generate(work, new_tokens)
    sync(device)
    ours = items / (time.perf_counter() - began)
    equal = sum(a == b for a, b in zip(got, expected, strict=True))
    table.add(f"greedy fp32, {device} vs cpu", equal == items, f"{equal} of {items} texts equal", "")
    bf16 = HFCausalLMGenerator(load_causal_lm(str(llm_dir), dtype="bfloat16"), tok, batch_size=batch, device=device)
    halves = bf16.generate(work, new_tokens)
    agree = sum(a == b for a, b in zip(halves, got, strict=True)) / items
    table.add("greedy bf16 vs fp32", True, f"{100 * agree:.0f} % of texts equal",
              "a random tiny model has no accuracy to compare; its near-ties make bf16 texts drift from fp32's")

    model = load_causal_lm(str(llm_dir)).to(device).eval()
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    with torch.inference_mode():
        warm = tok(prompts[:batch], return_tensors="pt", padding=True).to(device)
        model.generate(**warm, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    sync(device)
    began = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, items, batch):
            enc = tok(prompts[start: start + batch], return_tensors="pt", padding=True).to(device)
            model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    sync(device)
    theirs = items / (time.perf_counter() - began)
    table.add("eval items/s", True, f"{ours:.1f} vs transformers generate {theirs:.1f} ({ours / theirs:.2f}x)",
              f"{items} items, batch {batch}, {new_tokens} new tokens, fp32, side by side")


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cuda (default where there is one) or cpu")
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--out", default=os.environ.get("OUT") or str(BUILD), help="where result.json goes")
    args = parser.parse_args()
    importable_project()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.startswith("cuda")
    hidden, layers = args.hidden or (512 if gpu else 64), args.layers or (8 if gpu else 2)
    print(f"gpu-check: {device} ({torch.cuda.get_device_name(0) if gpu else 'CPU'}), torch {torch.__version__}, "
          f"Llama hidden {hidden} x {layers} layers", flush=True)
    table = Table()
    with tempfile.TemporaryDirectory() as tmp:
        llm_dir, encoder_dir = build_models(Path(tmp), hidden, layers)
        check_training(table, llm_dir, device, micro=8 if gpu else 2, block=256 if gpu else 32, steps=20 if gpu else 3)
        check_plan(table, llm_dir, device, micro=8 if gpu else 2, block=256 if gpu else 32)
        check_mindmerger(table, llm_dir, encoder_dir, device)
        check_greedy(table, llm_dir, device, items=256 if gpu else 32, batch=32 if gpu else 8,
                     new_tokens=64 if gpu else 16)
    if gpu:
        table.add("peak GPU memory", True, f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", "")
    text = table.show(device)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-check.json").write_text(json.dumps({"device": device, "rows": table.rows}, indent=1))
    (out / "gpu-check.md").write_text(text + "\n")
    return 0 if all(r["ok"] for r in table.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
