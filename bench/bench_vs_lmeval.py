"""Benchmark: `linguaforge eval` against lm-evaluation-harness (`lm_eval`, in its own venv) on the same random
model, the same items and the same prompt, greedy, 64 new tokens, side by side in one run.

The model is a random Llama (hidden 512, 5 layers, 8 heads; a BPE vocabulary trained on the items, about
20 M parameters), built once into --root. The items: 250 arithmetic word problems in MGSM's file format; both
tools see the prompt of the project's `mindmerger` preset (lm-eval through a task YAML whose `doc_to_text` is
the rendered prompt), the same stop string, batch size 64. Each turn runs both whole processes, in turn
(--turns, 3); medians compared. Whole-process items/s, and where the time goes: evaluation (each tool's own
timer) and the rest (start-up: imports, model load, data).

The generated texts of both are compared with a one-item greedy loop (HF generate on one prompt at a time).

Goal (issue 14): linguaforge >= 2x lm-eval's whole-process items/s, with texts identical to the one-item loop.

Measured here (2 cores, quiet, 2026-12-04, a median of 3): linguaforge 12.1 s (20.62 items/s; evaluation 8.6 s,
the rest 3.5 s), lm-eval 29.0 s (8.62 items/s; evaluation 26.9 s): 2.39x, goal met; both tools' texts equal the
one-item loop's (0 of 250 differ). From a fresh clone (`make bench-anchors`, same day): linguaforge 9.5 s
(26.40 items/s; evaluation 6.2 s), lm-eval 22.3 s (11.23 items/s): 2.35x, 0 of 250 differ. lm-eval's time
varies from run to run on the same inputs (22-42 s over this bench's runs), ours with it: quote the ratio of
one run.

What took it from 1.56-1.65x (2026-12-03: 23.0 / 25.3 s against 35.9 / 41.8 s) to 2.39x, in the order done,
`linguaforge eval` alone, quiet (the whole process, then its generation):
- Two decode streams (`decoding.in_streams`): batches decode two at a time in threads of their own, one
  intra-op thread each. A one-token step is short operations with Python between them; with one batch on two
  threads a core waits through the Python, with two batches the other batch fills it. Generation 12.5 s ->
  9.4-10.3 s, outputs identical.
- The console script's garbage collector: the interpreter's exit ran full collections over the ~370 000
  objects torch and transformers leave (0.8-1.0 s), and start-up ran 7 full collections while they were made
  (0.93 s). Imported with collection paused, then frozen: all collections 0.08 s, exit 0.14 s.
- `LlamaDecoder` for plain Llama checkpoints on CPU (pipelines/generation/llama_decoder.py): the same
  computation written out, straight from the safetensors, with the shared prompt prefix's keys and values
  read once per step for all rows; transformers' modelling stack (2.3 s of imports) is not imported for
  generation. This bench: 15.6 s (1.96x) before it, 12.1 s (2.39x) after, two runs.

Where the time goes now (the median run): start-up to the first batch about 2.7 s (torch 1.6 s, transformers'
tokenizer classes 1.1 s), generation 8.6 s (prefill is a third of the linear layers' arithmetic, all of it at
about 110 GFLOPS), scoring, writing and the report's plot (matplotlib 0.5 s) the rest.
Tried and not kept: MKL's prepacked weights (20.3 against 18.6 ms a step) and one product for q/k/v and one
for gate/up (3.6-4.8 against 3.1-4.3 ms a layer) were slower.

    make bench-anchors                     # installs lm-eval into bench/.anchors/ (first use), then runs this
    python bench/bench_vs_lmeval.py [--items 250] [--batch 64] [--turns 3]
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from anchors import tool  # noqa: E402
from options import parse_options  # noqa: E402

OPTIONS = {"items": 250, "batch": 64, "new_tokens": 64, "turns": 3, "hidden": 512, "layers": 5,
           "root": str(HERE / ".cache" / "vs-lmeval")}
TASK = "lf_mgsm_en"
NAMES = ["Tom", "Ana", "Juma", "Ines", "Ravi", "Mei", "Olu", "Sara"]
THINGS = ["apples", "coins", "books", "eggs", "pens", "stamps", "shells", "cards"]


def problems(n: int) -> list[tuple[str, int]]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        who, what = rng.choice(NAMES), rng.choice(THINGS)
        a, b, c = rng.randint(2, 40), rng.randint(2, 20), rng.randint(2, 9)
        out.append((f"{who} has {a} {what}. {who} buys {b} more and then gives away {c}. "
                    f"How many {what} does {who} have now?", a + b - c))
    return out


def build(root: Path, o) -> None:
    """Items (MGSM tsv), the lm-eval task (rendered prompts as JSONL, a task YAML) and the random model."""
    if (root / ".complete").exists():
        return
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from linguaforge.pipelines.benchmarks.loaders import load_raw
    from linguaforge.pipelines.benchmarks.prompts import build_items, load_preset, stop_strings

    shutil.rmtree(root, ignore_errors=True)
    (root / "data").mkdir(parents=True)
    rows = problems(o.items)
    (root / "data" / "mgsm_en.tsv").write_text("".join(f"{q}\t{a}\n" for q, a in rows))
    preset = load_preset("mindmerger")
    items = build_items("mgsm", load_raw("mgsm", str(root / "data"), "en"), "en", preset)
    (root / "task").mkdir()
    with open(root / "task" / "items.jsonl", "w") as f:
        for item in items:
            f.write(json.dumps({"id": item.id, "prompt": item.prompt, "answer": str(item.gold)}) + "\n")
    task = {"task": TASK, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(root / "task" / "items.jsonl")}},
            "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{answer}}", "target_delimiter": "", "metric_list": [{"metric": "exact_match"}],
            "generation_kwargs": {"until": stop_strings("mgsm", preset, "en"), "do_sample": False,
                                  "max_gen_toks": o.new_tokens}}
    (root / "task" / f"{TASK}.yaml").write_text(json.dumps(task, indent=1))  # JSON is YAML

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([i.prompt for i in items] * 4, trainers.BpeTrainer(
        vocab_size=4000, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=o.hidden, intermediate_size=int(o.hidden * 2.75),
        num_hidden_layers=o.layers, num_attention_heads=o.hidden // 64, num_key_value_heads=o.hidden // 64,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False))
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    (root / ".complete").write_text("")


def run(command: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    began = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {result.stdout[-1500:]}{result.stderr[-3000:]}")
    return time.perf_counter() - began


def ours_outputs(out: Path) -> tuple[dict[str, str], float]:
    import pyarrow.parquet as pq

    unit = out / "mgsm" / "en"
    table = pq.read_table(unit / "records.parquet").to_pylist()
    results = json.loads(next(out.glob("*/results_*.json")).read_text())  # lm-eval's layout, as --output-format writes
    return {str(r["id"]): r["output"] for r in table}, float(results["total_evaluation_time_seconds"])


def lmeval_outputs(out: Path) -> tuple[dict[str, str], float]:
    samples = next(out.rglob(f"samples_{TASK}_*.jsonl"))
    texts = {}
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        texts[str(sample["doc"]["id"])] = sample["resps"][0][0]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    return texts, float(results["total_evaluation_time_seconds"])


def one_item_loop(root: Path, o, ids: list[str]) -> dict[str, str]:
    """The reference: HF generate on one prompt at a time (no batch, no padding), cut at the stop string."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    task = json.loads((root / "task" / f"{TASK}.yaml").read_text())
    stops = task["generation_kwargs"]["until"]
    model = AutoModelForCausalLM.from_pretrained(root / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(root / "model")
    prompts = {json.loads(line)["id"]: json.loads(line)["prompt"]
               for line in (root / "task" / "items.jsonl").read_text().splitlines()}
    out = {}
    with torch.inference_mode():
        for item_id in ids:
            x = tokenizer(prompts[item_id], return_tensors="pt")["input_ids"]
            new = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=o.new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)[0, x.shape[1]:]
            text = tokenizer.decode([t for t in new.tolist() if t != tokenizer.eos_token_id], skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False)
            out[item_id] = min((text[:text.find(s)] for s in stops if s in text), key=len, default=text)
    return out


def main() -> None:
    o = parse_options(__doc__, OPTIONS)
    root = Path(o.root)
    lm_eval = tool("lmeval")
    build(root, o)
    linguaforge = Path(sys.executable).parent / "linguaforge"
    variants = {
        "linguaforge": lambda out: [str(linguaforge), "eval", "--model", str(root / "model"), "--benchmark", "mgsm",
                                    "--data", str(root / "data"), "--languages", "en", "--batch-size", str(o.batch),
                                    "--max-new-tokens", str(o.new_tokens), "--out", str(out),
                                    "--output-format", "lm-eval"],
        "lm-eval": lambda out: [str(lm_eval), "--model", "hf", "--model_args", f"pretrained={root / 'model'},dtype=float32",
                                "--tasks", TASK, "--include_path", str(root / "task"), "--batch_size", str(o.batch),
                                "--device", "cpu", "--output_path", str(out), "--log_samples"],
    }
    walls: dict[str, list[float]] = {name: [] for name in variants}
    evals: dict[str, list[float]] = {name: [] for name in variants}
    texts: dict[str, dict[str, str]] = {}
    for turn in range(o.turns):
        for name, command in variants.items():
            out = root / "out" / name
            shutil.rmtree(out, ignore_errors=True)
            walls[name].append(run(command(out)))
            texts[name], seconds = (ours_outputs if name == "linguaforge" else lmeval_outputs)(out)
            evals[name].append(seconds)
            print(f"turn {turn + 1}: {name:12s} {walls[name][-1]:6.1f} s (evaluation {seconds:5.1f} s)", flush=True)
    reference = one_item_loop(root, o, sorted(texts["linguaforge"]))

    print(f"\n{o.items} items, {o.new_tokens} new tokens, batch {o.batch}, random Llama hidden {o.hidden} × "
          f"{o.layers} layers; median of {o.turns} whole processes")
    print(f"{'':13s}{'wall s':>8s}{'items/s':>9s}{'evaluation s':>14s}{'start-up etc. s':>17s}{'≠ one-item loop':>17s}")
    for name in variants:
        wall, spent = statistics.median(walls[name]), statistics.median(evals[name])
        differ = sum(texts[name].get(k) != v for k, v in reference.items())
        print(f"{name:13s}{wall:8.1f}{o.items / wall:9.2f}{spent:14.1f}{wall - spent:17.1f}{differ:>17d}")
    ratio = statistics.median(walls["lm-eval"]) / statistics.median(walls["linguaforge"])
    same = all(texts["linguaforge"].get(k) == v for k, v in reference.items())
    print(f"\ngoal: >= 2x lm-eval's items/s: {ratio:.2f}x {'met' if ratio >= 2 else 'NOT met'}; texts identical to "
          f"the one-item loop: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
