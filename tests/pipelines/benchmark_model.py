"""A tiny Llama and byte-level BPE tokenizer for the benchmark tests, built from config (no hub).

The tokenizer is trained on the benchmark fixture files and has no pad token (like Llama's). Weights are
random but drawn wide (initializer_range 0.5), so that greedy outputs depend on the prompt: a batch
invariance test on a model that says the same thing to every prompt would prove nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"


def fixture_lines() -> list[str]:
    lines = []
    for path in sorted(FIXTURES.rglob("*")):
        if path.is_file() and path.suffix in (".tsv", ".json", ".jsonl"):
            lines += path.read_text(encoding="utf-8").splitlines()
    lines += ["Below is an instruction that describes a task. Write a response that appropriately completes "
              "the request.", "### Instruction:", "### Response: Let's think step by step.", "The answer is 42.",
              "Premise: Hypothesis: Label: entailment neutral contradiction", "Options: A. B. C. D. E. Answer:"]
    return lines


def build_tiny_lm(out_dir: Path, seed: int = 0, hidden: int = 32, layers: int = 2, vocab: int = 400,
                  init: float = 0.5) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(fixture_lines(), trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, initializer_range=init,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = None
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


try:
    import pytest

    @pytest.fixture(scope="session")
    def tiny_lm_dir(tmp_path_factory) -> Path:
        """The tiny model folder, built once per test session."""
        return build_tiny_lm(tmp_path_factory.mktemp("bench-tiny-lm") / "model")
except ImportError:  # the bench script imports this module without pytest
    pass
