"""The CPU Llama decoder against transformers' LlamaForCausalLM on the tiny benchmark model (4 query heads over
2 KV heads): logits, outputs through the generator, rows leaving, the configs it refuses, and that generating
with it never loads transformers' model classes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from linguaforge.pipelines.generation.causal_lm import HFCausalLMGenerator, shared_prefix
from linguaforge.pipelines.generation.llama_decoder import LlamaDecoder, unsupported
from tests.pipelines.benchmark_model import tiny_lm_dir  # noqa: F401  (fixture)
from tests.pipelines.test_decoding import MIXED, _items


@pytest.fixture(scope="module")
def hf_model(tiny_lm_dir):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir)).eval(), AutoTokenizer.from_pretrained(str(tiny_lm_dir))


@pytest.mark.parametrize("shared", [5, 0])
def test_prefill_and_steps_give_transformers_logits(tiny_lm_dir, hf_model, shared):  # noqa: F811
    """Three prompts sharing 5 tokens, of different lengths (left padding), then 6 one-token steps: each row's
    logits equal transformers' full forward pass over that row alone, with the 5 tokens kept once (shared)
    or in every row (0)."""
    model, _ = hf_model
    decoder = LlamaDecoder.from_folder(tiny_lm_dir)
    torch.manual_seed(0)
    head = torch.randint(3, model.config.vocab_size, (5,)).tolist()
    prompts = [head + torch.randint(3, model.config.vocab_size, (n,)).tolist() for n in (4, 1, 7)]
    assert shared_prefix(prompts) == 5
    with torch.inference_mode():
        logits, cache, positions = decoder.prefill(prompts, shared, room=6)
        rows = [list(p) for p in prompts]
        for step in range(7):
            for r, row in enumerate(rows):
                expected = model(torch.tensor([row])).logits[0, -1]
                torch.testing.assert_close(logits[r], expected, rtol=1e-4, atol=1e-4)
            if step == 6:
                break
            chosen = logits.argmax(-1)
            rows = [row + [int(t)] for row, t in zip(rows, chosen, strict=True)]
            positions = positions + 1
            logits = decoder._next_logits(chosen[:, None], positions[:, None], cache)


def test_generator_outputs_equal_transformers_path(tiny_lm_dir, hf_model):  # noqa: F811
    """Same items, stop strings and batch sizes: the generator on the Llama decoder and the generator on
    transformers' model say the same thing; rows leave at EOS or a stop string in both."""
    model, tokenizer = hf_model
    items = _items(MIXED)
    for batch in (3, 8):
        lean = HFCausalLMGenerator.from_pretrained(str(tiny_lm_dir), batch_size=batch)
        hf = HFCausalLMGenerator(model, tokenizer, batch_size=batch)
        assert lean._load_decoder is not None and hf._load_decoder is None
        free = hf.generate(items, 20, [])
        assert lean.generate(items, 20, []) == free
        stop = next(t for t in free if len(t) > 6)[3:6]
        assert lean.generate(items, 20, [stop]) == hf.generate(items, 20, [stop])
        assert lean._model is None, "generating must not load transformers' model"


def test_breaking_the_shared_prefix_changes_the_outputs(tiny_lm_dir, hf_model):  # noqa: F811
    """Sensitivity: a step that ignores the shared prefix's values (as if it had not been cached) no longer
    matches transformers."""
    model, tokenizer = hf_model
    items = _items([("mgsm", "mgsm", "en"), ("mgsm", "mgsm", "de")])
    lean = HFCausalLMGenerator.from_pretrained(str(tiny_lm_dir), batch_size=8)
    expected = HFCausalLMGenerator(model, tokenizer, batch_size=8).generate(items, 12, [])
    decoder = lean._llama_decoder()
    decoder.prefill = _dropping_prefix(decoder.prefill)
    assert lean.generate(items, 12, []) != expected


def _dropping_prefix(prefill):
    def wrapped(prompts, shared, room):
        logits, cache, positions = prefill(prompts, shared, room)
        cache.prefix_values = [torch.zeros_like(v) for v in cache.prefix_values]
        return logits, cache, positions
    return wrapped


@pytest.mark.parametrize(("change", "reason"), [
    ({"model_type": "mistral"}, "model_type 'mistral'"),
    ({"attention_bias": True}, "biases"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}}, "rotary embedding"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rotary embedding"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
])
def test_configs_it_does_not_cover_are_named(change, reason):
    base = {"model_type": "llama", "hidden_act": "silu", "rope_parameters": {"rope_type": "default"}}
    assert unsupported(base) is None
    assert reason in unsupported({**base, **change})


def test_other_dtypes_use_transformers(tiny_lm_dir):  # noqa: F811
    g = HFCausalLMGenerator.from_pretrained(str(tiny_lm_dir), dtype="bfloat16", batch_size=4)
    assert g._load_decoder is None and g._model is not None and g._model.dtype == torch.bfloat16


def test_generating_does_not_import_transformers_model_classes(tiny_lm_dir):  # noqa: F811
    """The point of the decoder on CPU: no transformers modelling import (2.3 s) before the first token; option
    scoring still loads the model when it is asked for."""
    script = (
        "import sys\n"
        "from linguaforge.pipelines.generation.causal_lm import HFCausalLMGenerator\n"
        "from tests.pipelines.test_decoding import _items\n"
        f"g = HFCausalLMGenerator.from_pretrained({str(tiny_lm_dir)!r}, batch_size=4)\n"
        "g.generate(_items([('mgsm', 'mgsm', 'en')]), 4, [])\n"
        "print('after generate', 'transformers.modeling_utils' in sys.modules)\n"
        "g.option_logprobs(_items([('xnli', 'xnli', 'en')]))\n"
        "print('after scoring', 'transformers.modeling_utils' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True)
    assert "after generate False" in out.stdout and "after scoring True" in out.stdout, out.stdout + out.stderr
