"""Tiny models for the demo world: tokenizers trained on the world's text, models built from config.

- a Llama-architecture causal LM with a byte-level BPE tokenizer (BOS added, no pad token — like Llama 3),
- an mT5-architecture encoder-decoder with a Unigram tokenizer (EOS appended, pad id 0 — like mT5),

both written with `save_pretrained`, so every later stage loads them with the same `from_pretrained`
code that loads Llama-3-8B and mT5-xl.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

LLM_SPECIALS = ["<unk>", "<s>", "</s>"]
ENCODER_SPECIALS = ["<pad>", "</s>", "<unk>"]


def world_texts(world: Path) -> Iterator[str]:
    """Tokenizer training text: general text of every language, the ability corpus and the translation pairs."""
    for path in sorted((world / "general").glob("*.jsonl")) + sorted((world / "ability").glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]
    for path in sorted((world / "translation").glob("*/train.*")):
        yield from path.read_text(encoding="utf-8").splitlines()
    for path in sorted((world / "queries").glob("*/*.json")):
        for row in json.loads(path.read_text(encoding="utf-8")):
            yield row["query"]


def train_llm_tokenizer(texts: Iterator[str], vocab_size: int, out_dir: Path):
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=LLM_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    wrapped.save_pretrained(out_dir)
    return wrapped


def train_encoder_tokenizer(texts: Iterator[str], vocab_size: int, out_dir: Path):
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=ENCODER_SPECIALS, unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok = _rounded_unigram_scores(tok)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", eos)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    wrapped.save_pretrained(out_dir)
    return wrapped


def _rounded_unigram_scores(tok: Tokenizer, digits: int = 8) -> Tokenizer:
    """The Unigram trainer is not reproducible between processes, in three ways, all from hash-ordered
    maps: it sums scores in hash order (the last bits of ~15 % of them differ), it lists pieces of equal
    score in hash order, and it appends the required characters it did not learn at the end, with scores
    that step down by 1e-4, in hash order. Rounding far below any score gap fixes the first; putting equal
    scores, and that tail, in piece order (the scores stay where they were) the others. The tail may end on a
    piece with the score of the one before it (seen in the demo's 2 000-piece vocabulary: its last two pieces
    tie, and missing that made the demo's encoder tokenizer, and so MindMerger's results, differ between runs)."""
    spec = json.loads(tok.to_str())
    vocab = [[piece, round(score, digits)] for piece, score in spec["model"]["vocab"]]

    def in_tail(i: int) -> bool:  # a step of 1e-4 down from the piece before, or a tie with it
        step = vocab[i][1] - vocab[i - 1][1]
        return abs(step + 1e-4) < 1e-6 or abs(step) < 1e-9

    tail = len(vocab) - 1
    while tail > 0 and in_tail(tail):
        tail -= 1
    first = len(ENCODER_SPECIALS)  # the special tokens keep their ids (pad 0, eos 1, unk 2)
    runs = [list(group) for _, group in itertools.groupby(range(first, tail), key=lambda i: vocab[i][1])]
    for run in [*runs, list(range(tail, len(vocab)))]:
        pieces = sorted(vocab[i][0] for i in run)
        for i, piece in zip(run, pieces, strict=True):
            vocab[i][0] = piece
    spec["model"]["vocab"] = vocab
    return Tokenizer.from_str(json.dumps(spec))


def tiny_llm_config(vocab_size: int, hidden: int, layers: int, bos: int | None = None, eos: int | None = None,
                    max_positions: int = 1024) -> dict:
    """The tiny LLM's Llama configuration (also what `linguaforge plan` sizes the demo with)."""
    heads = max(1, hidden // 16)
    return dict(model_type="llama", vocab_size=vocab_size, hidden_size=hidden,
                intermediate_size=hidden * 8 // 3 // 8 * 8 or 8, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                max_position_embeddings=max_positions, bos_token_id=bos, eos_token_id=eos,
                tie_word_embeddings=False, rope_theta=10000.0)


def build_tiny_llm(tokenizer, out_dir: Path, hidden: int, layers: int, seed: int, max_positions: int = 1024):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = tiny_llm_config(len(tokenizer), hidden, layers, tokenizer.bos_token_id, tokenizer.eos_token_id,
                               max_positions)
    settings.pop("model_type")
    config = LlamaConfig(**settings)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id, do_sample=False)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model


def build_tiny_encoder(tokenizer, out_dir: Path, hidden: int, layers: int, seed: int):
    """A whole mT5-architecture encoder-decoder, as mT5 checkpoints are: consumers load its encoder alone."""
    from transformers import MT5Config, MT5ForConditionalGeneration

    torch.manual_seed(seed)
    heads = max(1, hidden // 16)
    config = MT5Config(
        vocab_size=len(tokenizer), d_model=hidden, d_kv=hidden // heads, d_ff=hidden * 2, num_layers=layers,
        num_decoder_layers=layers, num_heads=heads, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = MT5ForConditionalGeneration(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model
