"""Batched decoding on a tiny model: batch-size invariance, stop strings, EOS, no pad token, and option
log-likelihoods equal to scoring each option with its own full forward pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from linguaforge.pipelines.benchmarks.items import BenchmarkItem
from linguaforge.pipelines.benchmarks.loaders import load_raw
from linguaforge.pipelines.benchmarks.prompts import build_items, load_preset
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.generation.causal_lm import (
    HFCausalLMGenerator,
    OptionScorer,
    TextGenerator,
    _one_query_attention,
    cut_at_stop,
    decode_attention,
    growing_cache,
    shared_prefix,
)
from tests.pipelines.benchmark_model import tiny_lm_dir  # noqa: F401  (fixture)

F = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"


def _items(specs) -> list[BenchmarkItem]:
    preset = load_preset("mindmerger")
    out = []
    for bench, folder, lang in specs:
        out += build_items(bench, load_raw(bench, str(F / folder), lang), lang, preset)
    return out


MIXED = [("mgsm", "mgsm", "en"), ("mgsm", "mgsm", "de"), ("msvamp", "msvamp", "de"), ("xcsqa", "xcsqa", "zh"),
         ("xnli", "xnli", "en")]


@pytest.fixture(scope="module")
def generators(tiny_lm_dir):  # noqa: F811
    return {b: HFCausalLMGenerator.from_pretrained(str(tiny_lm_dir), batch_size=b) for b in (1, 3, 8)}


def test_generators_implement_the_protocols(generators):
    assert isinstance(generators[1], TextGenerator) and isinstance(generators[1], OptionScorer)


def test_tokenizer_without_pad_token_is_handled(generators):
    g = generators[8]
    assert g.tokenizer.pad_token_id is None
    assert g.pad_id == g.tokenizer.eos_token_id


def test_batch_size_does_not_change_outputs(generators):
    items = _items(MIXED)  # 14 prompts of very different lengths and scripts
    one = generators[1].generate(items, 24, [])
    assert len(set(one)) >= len(items) - 2, "outputs must depend on the prompt, else invariance proves nothing"
    assert generators[8].generate(items, 24, []) == one
    assert generators[3].generate(items, 24, []) == one


def test_outputs_match_hf_generate_on_one_unpadded_prompt(generators):
    g = generators[8]
    item = _items([("xnli", "xnli", "zh")])[0]
    ids = g.tokenizer(item.prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        ref = g.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                               pad_token_id=g.pad_id, eos_token_id=g.eos_ids)[0, ids.shape[1]:].tolist()
    if g.tokenizer.eos_token_id in ref:
        ref = ref[: ref.index(g.tokenizer.eos_token_id)]
    assert g.generate([item], 12, []) == [g.tokenizer.decode(ref, skip_special_tokens=True)]


def test_batched_generation_equals_a_one_item_greedy_loop_without_cache(generators):
    """The plainest reference: one prompt at a time, a full forward pass per new token, argmax, stop at EOS."""
    g = generators[8]
    items = _items(MIXED)
    expected = []
    with torch.inference_mode():
        for item in items:
            ids = g.tokenizer(item.prompt)["input_ids"]
            new = []
            for _ in range(16):
                token = int(g.model(torch.tensor([ids + new])).logits[0, -1].argmax())
                if token in g.eos_ids:
                    break
                new.append(token)
            expected.append(g.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False))
    assert g.generate(items, 16, []) == expected


def test_shared_prefix_leaves_every_row_a_token_of_its_own():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 3, 4, 5]]) == 3
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # identical rows: the last token stays each row's own
    assert shared_prefix([[7, 2], [1, 2]]) == 0
    assert shared_prefix([[5], [5, 6]]) == 0


def test_a_preset_batch_shares_its_instruction(generators):
    """The prompts of one benchmark start with the preset's instruction, so the batched path computes it once."""
    g = generators[8]
    items = _items([("mgsm", "mgsm", "en"), ("mgsm", "mgsm", "de")])
    assert shared_prefix(g.tokenizer([it.prompt for it in items])["input_ids"]) >= 15
    assert g.generate(items, 16, []) == generators[1].generate(items, 16, [])  # one prompt: nothing shared


def test_growing_cache_equals_transformers_dynamic_cache(generators):
    """Logits step by step with the preallocated cache and with DynamicCache, through a prefill, 80 single-token
    steps (the buffer grows past its first size), rows leaving the batch and the batch repeated."""
    from transformers import DynamicCache

    model = generators[8].model
    torch.manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (4, 7))
    caches, logits = [growing_cache(), DynamicCache()], [[], []]
    with torch.inference_mode():
        for c, cache in enumerate(caches):
            x, length = ids, 0
            for step in range(82):
                if step == 40:
                    cache.batch_select_indices(torch.tensor([0, 2]))
                    x = x[[0, 2]]
                if step == 60:
                    cache.batch_repeat_interleave(2)
                    x = x.repeat_interleave(2, 0)
                positions = torch.arange(length, length + x.shape[1])[None].expand(x.shape[0], -1)
                out = model(input_ids=x, position_ids=positions, use_cache=True,
                            **{generators[8]._cache_kwarg: cache}).logits[:, -1]
                logits[c].append(out)
                length += x.shape[1]
                x = out.argmax(-1, keepdim=True)
    assert caches[0].get_seq_length() == caches[1].get_seq_length() == 7 + 81
    for a, b in zip(*logits, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_one_query_attention_equals_sdpa_with_grouped_heads_and_padding(generators, mask_kind):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    attn = generators[8].model.model.layers[0].self_attn  # 4 query heads over 2 KV heads
    torch.manual_seed(2)
    q, k, v = torch.randn(3, 4, 1, 8), torch.randn(3, 2, 6, 8), torch.randn(3, 2, 6, 8)
    allowed = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    allowed[0, ..., :2] = False  # row 0: two padded positions
    allowed[2, ..., 3] = False
    mask = {"none": None, "bool": allowed,
            "additive": torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)}[mask_kind]
    ours, _ = _one_query_attention(attn, q, k, v, mask, scaling=0.3)
    reference, _ = sdpa_attention_forward(attn, q, k, v, mask, scaling=0.3)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    if mask is not None:  # the mask matters: without it, row 0 reads its padding
        unmasked, _ = _one_query_attention(attn, q, k, v, None, scaling=0.3)
        assert not torch.allclose(unmasked[0], reference[0], atol=1e-3)


def test_decode_attention_is_switched_on_for_the_steps_only(generators):
    model = generators[8].model
    assert model.config._attn_implementation == "sdpa"
    with decode_attention(model):
        assert model.config._attn_implementation != "sdpa"
    assert model.config._attn_implementation == "sdpa"


def test_max_new_tokens_and_stop_strings(generators):
    g = generators[8]
    items = _items(MIXED)
    free = g.generate(items, 24, [])
    short = g.generate(items, 4, [])
    assert all(a.startswith(b) for a, b in zip(free, short, strict=True))
    assert sum(len(b) < len(a) for a, b in zip(free, short, strict=True)) >= len(items) // 2
    # stop at a string the free run produced: output is cut before it, identically at any batch size
    i, text = next((i, t) for i, t in enumerate(free) if len(t) > 6)
    stop = text[3:6]
    cut = g.generate(items, 24, [stop])
    assert cut[i] == text[: text.find(stop)]
    assert generators[1].generate(items, 24, [stop]) == cut
    for full, c in zip(free, cut, strict=True):
        assert stop not in c and full.startswith(c)


def test_cut_at_stop():
    assert cut_at_stop("12 apples\n\nQuestion: next", ["Question:", "\n\n"]) == "12 apples"
    assert cut_at_stop("no stop here", ["###", ""]) == "no stop here"


def _full_forward_logprob(g: HFCausalLMGenerator, prompt: str, continuation: str) -> float:
    p = g.tokenizer(prompt)["input_ids"]
    c = g.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = g.model(torch.tensor([p + c])).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    return sum(lp[len(p) - 1 + j, t].item() for j, t in enumerate(c))


def test_option_logprobs_equal_one_full_forward_per_option(generators):
    items = _items([("xcsqa", "xcsqa", "en"), ("xnli", "xnli", "de"), ("mmlu_science", "mmlu", "de")])
    got = generators[8].option_logprobs(items)  # 5-, 3- and 4-option items mixed in one call
    assert [len(s) for s in got] == [len(it.options) for it in items]
    for item, scores in zip(items, got, strict=True):
        ref = [_full_forward_logprob(generators[8], item.prompt, c) for c in item.continuations]
        assert scores == pytest.approx(ref, abs=1e-4)
    # multi-token options ("contradiction") included, and the batch size changes nothing
    one = generators[1].option_logprobs(items)
    assert torch.allclose(torch.tensor([s for x in one for s in x]), torch.tensor([s for x in got for s in x]), atol=1e-4)


def test_option_logprobs_refuses_items_without_options(generators):
    with pytest.raises(InputError, match="has no options to score"):
        generators[1].option_logprobs(_items([("mgsm", "mgsm", "en")]))
    with pytest.raises(InputError, match="max_new_tokens must be at least 1"):
        generators[1].generate(_items([("mgsm", "mgsm", "en")]), 0, [])


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_both_option_scoring_paths_agree_with_full_forwards(tiny_lm_dir, attn):  # noqa: F811
    """The packed single pass (custom 4D mask, eager and SDPA kernels) and the KV-cache path used for
    kernels without custom masks give the same numbers as one full forward pass per option."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir), attn_implementation=attn)
    g = HFCausalLMGenerator(model, AutoTokenizer.from_pretrained(str(tiny_lm_dir)), batch_size=4)
    items = _items([("xnli", "xnli", "de"), ("xnli", "xnli", "zh")])  # prompts of different lengths: padding
    prompts = [g.tokenizer(it.prompt)["input_ids"] for it in items]
    options = [g.tokenizer(list(it.continuations), add_special_tokens=False)["input_ids"] for it in items]
    with torch.inference_mode():
        packed = g._score_options_packed(prompts, options)
        cached = g._score_options_cached(prompts, options)
    for item, p, c in zip(items, packed, cached, strict=True):
        ref = [_full_forward_logprob(g, item.prompt, cont) for cont in item.continuations]
        assert p == pytest.approx(ref, abs=1e-4) and c == pytest.approx(ref, abs=1e-4)


class _ThreadRecordingGenerator(HFCausalLMGenerator):
    """Records the thread each batch decodes on."""

    def _greedy(self, prompts, max_new_tokens, stop):
        import threading

        self.threads.add(threading.current_thread().name)
        return super()._greedy(prompts, max_new_tokens, stop)


def test_streams_decode_batches_side_by_side_with_the_same_outputs(tiny_lm_dir):  # noqa: F811
    """Two streams: the batches decode on two threads of their own, and every output equals one stream's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_lm_dir))
    items = _items(MIXED)  # 14 prompts: 5 batches of 3
    threads_before = torch.get_num_threads()
    outputs = {}
    for streams in (1, 2):
        g = _ThreadRecordingGenerator(model, tokenizer, batch_size=3, streams=streams)
        g.threads = set()
        outputs[streams] = g.generate(items, 16, ["\n\n"])
        assert len(g.threads) == streams and all(n.startswith("decode") for n in g.threads) == (streams > 1)
    assert outputs[2] == outputs[1]
    assert torch.get_num_threads() == threads_before
    assert model.config._attn_implementation == "sdpa"  # the decode attention switched off again
    with pytest.raises(InputError, match="streams must be at least 1"):
        HFCausalLMGenerator(model, tokenizer, streams=0)
