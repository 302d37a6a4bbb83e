"""Benchmark: a MindMerger training step, ours vs a straightforward implementation, on the same data.

Prints ratios measured in one run (absolute times depend on the machine):
- training step time of ours vs the naive variant (goal: ours >= 1.5x faster);
- peak memory of ours vs the naive variant (goal: <= 0.7x), each variant measured in its own process.

The three variants (naive, ours, ours without the encoder cache) run in their own processes and take
turns, one training step each, so that other work on the machine disturbs them alike; the best step of
each is compared.

The naive variant does what a first implementation (and the official code) does: it tokenizes every
example inside the training loop, one at a time; loads the whole mT5 encoder-decoder and runs both halves
with autograd on; maps every encoder position, padding included; and takes the LLM's full-vocabulary
logits at every position (HF `labels=` loss). Ours: examples tokenized once, the frozen encoder's states
computed once per stage without autograd (the cache is built before timing; its cost per example is
printed too, and a variant without the cache is measured as well), padding never mapped, and the
vocabulary projection only where a target token is predicted.

Models: an mT5-architecture encoder-decoder and a Llama-architecture LLM built from config with the
demo world's tokenizers (LLM vocabulary padded to 32000 rows, as Llama-2's), the augmentation stage's
translated math queries as data (prompt = the MindMerger math template).

    python bench/bench_mindmerger.py [--llm-hidden 512] [--llm-layers 4] [--enc-hidden 256] [--steps 3]

Against the official implementation: with `--official DIR` (a checkout of CONE-MT/MindMerger, fetched by
you, never vendored here) its `MindMerger` module is stepped too, in its own process and in turn with the
others, on the same models and examples. Measured once on the issue's fixture (mT5 d_model 64, 2+2 layers;
Llama hidden 64, 2 layers, vocabulary 32000; 4 math items), 2 CPU cores shared with a test run, best of 15:

    python bench/bench_mindmerger.py --llm-hidden 64 --llm-layers 2 --enc-hidden 64 --enc-layers 2 \
        --micro-batch-size 4 --micro-batches 1 --steps 15 --official ../MindMerger
    official 0.187 s, ours 0.043 s (0.23x; goal <= 0.67x), ours without the encoder cache 0.055 s (0.29x)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch  # noqa: E402
from options import parse_options  # noqa: E402
from torch import nn  # noqa: E402

LANGUAGES = ["en", "de", "zh", "sw", "bn"]


# -- assets ------------------------------------------------------------------------------------------------
def build_assets(root: Path, args) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, MT5Config, MT5ForConditionalGeneration

    from linguaforge.pipelines.demo.models import train_encoder_tokenizer, train_llm_tokenizer, world_texts
    from linguaforge.pipelines.demo.world import WorldSpec, generate_world

    generate_world(WorldSpec(languages=LANGUAGES, general_docs=60, ability_problems=100, translation_pairs=60,
                             query_items=80, test_items=4), root / "world")
    llm_tok = train_llm_tokenizer(world_texts(root / "world"), 2000, root / "llm")
    enc_tok = train_encoder_tokenizer(world_texts(root / "world"), 2000, root / "encoder")
    torch.manual_seed(0)
    h = args.llm_hidden
    LlamaForCausalLM(LlamaConfig(
        vocab_size=32000, hidden_size=h, intermediate_size=h * 8 // 3 // 8 * 8, num_hidden_layers=args.llm_layers,
        num_attention_heads=max(1, h // 64), num_key_value_heads=max(1, h // 128), max_position_embeddings=2048,
        bos_token_id=llm_tok.bos_token_id, eos_token_id=llm_tok.eos_token_id)).save_pretrained(root / "llm")
    e = args.enc_hidden
    MT5ForConditionalGeneration(MT5Config(
        vocab_size=len(enc_tok), d_model=e, d_kv=64, d_ff=e * 2, num_layers=args.enc_layers,
        num_decoder_layers=args.enc_layers, num_heads=max(1, e // 64), pad_token_id=enc_tok.pad_token_id,
        eos_token_id=enc_tok.eos_token_id, decoder_start_token_id=enc_tok.pad_token_id)).save_pretrained(root / "encoder")


def load_texts(root: Path):
    from linguaforge.pipelines.mindmerger.data import read_queries, template_queries

    return [t for lang in LANGUAGES for t in template_queries(read_queries(root / "world" / "queries" / "math", lang),
                                                              "math", lang)]


# -- memory --------------------------------------------------------------------------------------------------
class PeakRSS:
    """Resident memory sampled every millisecond: the peak above the level when sampling started."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.start


# -- the naive variant -----------------------------------------------------------------------------------------
class NaiveMindMerger(nn.Module):
    """The straightforward version: strings in, the whole encoder-decoder run with autograd, padding mapped,
    full-vocabulary logits everywhere."""

    def __init__(self, encoder_dir: str, llm_dir: str):
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        from linguaforge.pipelines.mindmerger.model import Mapping

        super().__init__()
        self.mt = AutoModel.from_pretrained(encoder_dir)  # MT5Model: encoder and decoder
        self.llm = AutoModelForCausalLM.from_pretrained(llm_dir)
        for p in [*self.mt.parameters(), *self.llm.parameters()]:
            p.requires_grad_(False)
        self.enc_tok, self.llm_tok = AutoTokenizer.from_pretrained(encoder_dir), AutoTokenizer.from_pretrained(llm_dir)
        self.mapping = Mapping(self.mt.config.d_model, self.llm.config.hidden_size)

    def _pad(self, rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(1, max(len(r) for r in rows))
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r, dtype=torch.long), 1
        return ids, mask

    def forward(self, texts) -> torch.Tensor:
        # tokenized here, every step, one example at a time
        src = [self.enc_tok(t.source)["input_ids"] for t in texts]
        prompt = [self.llm_tok(t.prompt, add_special_tokens=False)["input_ids"] for t in texts]
        target = [self.llm_tok(t.target, add_special_tokens=False)["input_ids"] + [self.llm_tok.eos_token_id]
                  for t in texts]
        src_ids, src_mask = self._pad(src)
        prompt_ids, prompt_mask = self._pad(prompt)
        target_ids, target_mask = self._pad(target)
        # the whole encoder-decoder, with autograd
        out = self.mt(input_ids=src_ids, attention_mask=src_mask, decoder_input_ids=src_ids,
                      decoder_attention_mask=src_mask)
        mapped = self.mapping.mlp(out.encoder_last_hidden_state)  # padding positions mapped too
        B = len(texts)
        embed = self.llm.get_input_embeddings()
        bos = embed(torch.full((B, 1), self.llm_tok.bos_token_id))
        boundary = self.mapping.end_boundary.expand(B, 1, -1)
        one = torch.ones(B, 1, dtype=torch.long)
        embeds = torch.cat([bos, mapped, boundary, embed(prompt_ids), embed(target_ids)], 1)
        mask = torch.cat([one, src_mask, one, prompt_mask, target_mask], 1)
        labels = torch.cat([torch.full(mask[:, : mask.shape[1] - target_ids.shape[1]].shape, -100),
                            target_ids.masked_fill(target_mask == 0, -100)], 1)
        # move padding to the left (stable sort on the mask), drop columns that are padding in every row
        order = torch.sort(mask, dim=1, stable=True).indices
        embeds = embeds.gather(1, order[..., None].expand_as(embeds))
        mask, labels = mask.gather(1, order), labels.gather(1, order)
        keep = mask.sum(0) > 0
        embeds, mask, labels = embeds[:, keep], mask[:, keep], labels[:, keep]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits  # [B, W, V]
        return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                           ignore_index=-100, reduction="sum")


# -- the official implementation, from a checkout the user points at (never vendored) ---------------------------
def official_variant(checkout: str, root: Path, texts, micro: int, n_micro: int):
    """CONE-MT/MindMerger's `MindMerger` module as its training loop drives it: mT5 sources right-padded, LLM
    prompts and targets left-padded (`padding_side = "left"`), target + EOS, HF `labels=` mean loss per
    micro-batch, AdamW on the mapping. Inputs are built once here (the official loop re-tokenizes every
    step; that cost is left out, so the comparison is of the model step alone). Its `.cuda()` calls become
    no-ops on a machine without a GPU."""
    sys.path.insert(0, checkout)
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self
    from modeling_mindmerger import MindMerger
    from transformers import AutoTokenizer

    enc_tok, llm_tok = AutoTokenizer.from_pretrained(root / "encoder"), AutoTokenizer.from_pretrained(root / "llm")
    model = MindMerger(str(root / "encoder"), str(root / "llm"), 64, llm_tok.bos_token_id, llm_tok.eos_token_id)

    def padded(rows: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            span = slice(width - len(r), width) if left else slice(0, len(r))
            ids[i, span], mask[i, span] = torch.tensor(r, dtype=torch.long), 1
        return ids, mask

    def batch(chunk) -> dict[str, torch.Tensor]:
        src_ids, src_mask = padded([enc_tok(t.source)["input_ids"] for t in chunk], enc_tok.pad_token_id, False)
        prompt_ids, prompt_mask = padded([llm_tok(t.prompt, add_special_tokens=False)["input_ids"] for t in chunk],
                                         llm_tok.eos_token_id, True)
        labels, label_mask = padded([llm_tok(t.target, add_special_tokens=False)["input_ids"] + [llm_tok.eos_token_id]
                                     for t in chunk], llm_tok.eos_token_id, True)
        return {"input_ids_mt": src_ids, "attention_mask_mt": src_mask, "input_ids_prompt": prompt_ids,
                "mask_prompt": prompt_mask, "labels": labels, "mask_label": label_mask}

    batches = [batch(texts[i: i + micro]) for i in range(0, len(texts) - micro + 1, micro)]
    optimizer = torch.optim.AdamW(model.mapping.parameters(), lr=2e-5, betas=(0.8, 0.999), weight_decay=3e-7)

    def step(s: int) -> float:
        total = 0.0
        for m in range(n_micro):
            loss = model(**batches[s * n_micro + m]) / n_micro
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.mapping.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    return model, step


# -- one variant, in its own process ---------------------------------------------------------------------------
def run_variant(variant: str, root: Path, args) -> dict:
    from linguaforge.pipelines.mindmerger.data import target_tokens, tokenize
    from linguaforge.pipelines.mindmerger.train import (
        EncoderStates,
        StageSettings,
        make_batch,
        mapping_backend,
        mapping_state,
    )
    from linguaforge.pipelines.models import load_tokenizer

    torch.manual_seed(0)
    texts = load_texts(root)
    micro, n_micro = args.micro_batch_size, args.micro_batches
    settings = StageSettings(stage="augmentation", learning_rate=2e-5, micro_batch_size=micro,
                             global_batch_size=micro * n_micro)
    need = micro * n_micro * (args.steps + 1)
    texts = (texts * (need // len(texts) + 1))[:need]
    result = {"variant": variant}
    if variant == "official":
        model, step = official_variant(args.official, root, texts, micro, n_micro)
    elif variant == "naive":
        model = NaiveMindMerger(str(root / "encoder"), str(root / "llm"))
        optimizer = torch.optim.AdamW(model.mapping.parameters(), lr=2e-5, betas=(0.8, 0.999), weight_decay=3e-7)

        def step(s: int) -> float:
            chunk = texts[s * micro * n_micro: (s + 1) * micro * n_micro]
            n = sum(len(model.llm_tok(t.target, add_special_tokens=False)["input_ids"]) + 1 for t in chunk)
            total = 0.0
            for m in range(n_micro):
                loss = model(chunk[m * micro: (m + 1) * micro])
                (loss / n).backward()
                total += loss.item()
            torch.nn.utils.clip_grad_norm_(model.mapping.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return total / n
    else:
        from linguaforge.pipelines.mindmerger.train import ModelPair, build_model

        model = build_model(ModelPair(str(root / "encoder"), str(root / "llm")))
        examples = tokenize(texts, load_tokenizer(str(root / "encoder")), load_tokenizer(str(root / "llm")),
                            512, 512).examples
        backend = mapping_backend(model, settings, args.steps + 1, torch.device("cpu"))
        states = None
        if variant == "ours":
            began = time.perf_counter()
            states = EncoderStates(model, examples, 32, torch.device("cpu"))
            result["cache_seconds_per_example"] = (time.perf_counter() - began) / len(examples)

        def step(s: int) -> float:
            indices = list(range(s * micro * n_micro, (s + 1) * micro * n_micro))
            n = target_tokens([examples[i] for i in indices])
            total = sum(backend.forward_backward(make_batch(examples, indices[m * micro: (m + 1) * micro], states),
                                                 1.0 / n) for m in range(n_micro))
            backend.optimizer_step(s)
            return total / n

    # Serve steps on request: the parent makes the variants take turns, step by step, so that whatever else
    # runs on the machine disturbs them alike.
    memory = PeakRSS()
    step(0)  # warm-up (allocator, optimizer state), inside the memory window
    print("ready", flush=True)
    times, losses = [], []
    for s in range(1, args.steps + 1):
        sys.stdin.readline()
        began = time.perf_counter()
        losses.append(step(s))
        times.append(time.perf_counter() - began)
        print("done", flush=True)
    result["step_memory_bytes"] = memory.stop()
    result["process_peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["step_seconds"] = min(times)  # the least disturbed step
    result["step_seconds_all"] = times
    result["losses"] = losses
    if variant not in ("naive", "official"):
        result["mapping_norm"] = float(sum(v.float().norm() for v in mapping_state(model).values()))
    return result


def _expect(child: subprocess.Popen, word: str, variant: str, root: Path) -> None:
    """Wait for the child's next protocol word (skipping anything a library printed to stdout)."""
    for line in child.stdout:
        if line.strip() == word:
            return
    child.kill()
    sys.exit(f"variant {variant} failed:\n{(root / f'{variant}.log').read_text()[-3000:]}")


def main() -> None:
    args = parse_options(__doc__, {
        "llm-hidden": 512, "llm-layers": 4, "enc-hidden": 256, "enc-layers": 4, "micro-batch-size": 8,
        "micro-batches": 2, "steps": 5, "variant": {"choices": ["ours", "ours-nocache", "naive", "official"]},
        "root": {"default": None}, "out": {"default": None},
        "official": {"default": None, "help": "a CONE-MT/MindMerger checkout: also time its model step"}})

    if args.variant:  # a child process: measure one variant
        Path(args.out).write_text(json.dumps(run_variant(args.variant, Path(args.root), args)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_assets(root, args)
        children = {}
        for variant in ("naive", "ours", "ours-nocache") + (("official",) if args.official else ()):
            cmd = [sys.executable, __file__, "--variant", variant, "--root", str(root), "--out",
                   str(root / f"{variant}.json")] + (["--official", args.official] if args.official else [])
            for name in ("llm_hidden", "llm_layers", "enc_hidden", "enc_layers", "micro_batch_size", "micro_batches",
                         "steps"):
                cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            children[variant] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                 stderr=open(root / f"{variant}.log", "w"), text=True)
        for variant, child in children.items():
            _expect(child, "ready", variant, root)
        for _ in range(args.steps):  # one step of each variant in turn
            for variant, child in children.items():
                child.stdin.write("step\n")
                child.stdin.flush()
                _expect(child, "done", variant, root)
        results = {}
        for variant, child in children.items():
            child.stdin.close()
            if child.wait() != 0:
                sys.exit(f"variant {variant} failed:\n{(root / f'{variant}.log').read_text()[-3000:]}")
            results[variant] = json.loads((root / f"{variant}.json").read_text())

    naive, ours, nocache = results["naive"], results["ours"], results["ours-nocache"]
    mib = 2**20
    print(f"MindMerger training step, {args.micro_batches} x {args.micro_batch_size} examples, LLM hidden "
          f"{args.llm_hidden} x {args.llm_layers} layers (vocab 32000), mT5 d_model {args.enc_hidden} x "
          f"{args.enc_layers}+{args.enc_layers} layers, torch threads {torch.get_num_threads()}")
    for name, r in results.items():
        print(f"  {name:13s} step {r['step_seconds']:.3f} s (best of {args.steps})   step memory "
              f"{r['step_memory_bytes'] / mib:7.1f} MiB   process peak {r['process_peak_bytes'] / mib:7.1f} MiB")
    print(f"  encoder cache: {ours['cache_seconds_per_example'] * 1000:.2f} ms per example, once per stage")
    print(f"speed-up, ours (cached encoder states) vs naive: {naive['step_seconds'] / ours['step_seconds']:.2f}x "
          "(goal >= 1.5x)")
    print(f"speed-up, ours without the cache vs naive:     {naive['step_seconds'] / nocache['step_seconds']:.2f}x")
    print(f"step memory, ours / naive:                     {ours['step_memory_bytes'] / naive['step_memory_bytes']:.2f}x "
          "(goal <= 0.7x)")
    print(f"step memory, ours without the cache / naive:   "
          f"{nocache['step_memory_bytes'] / naive['step_memory_bytes']:.2f}x")
    print(f"process peak memory, ours / naive:             "
          f"{ours['process_peak_bytes'] / naive['process_peak_bytes']:.2f}x")
    if official := results.get("official"):
        print(f"step time, ours / official MindMerger:         {ours['step_seconds'] / official['step_seconds']:.2f}x "
              f"(goal <= 0.67x); without the cache {nocache['step_seconds'] / official['step_seconds']:.2f}x")


if __name__ == "__main__":
    main()
