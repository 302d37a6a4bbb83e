"""MindMerger targets on the tokenizers real LLMs ship, trained here offline with the sentencepiece trainer.

The official code tokenizes a target alone, with EOS and without BOS: `tokenizer(response)`. Our targets are
written as they read after the prompt (" " + response), so on a tokenizer that marks a text start itself the
space must go, or it becomes an extra `▁` token. Three kinds:
- legacy: a Llama-2 / MetaMath-style tokenizer.json (normaliser Prepend("▁") + Replace(" ", "▁")), which
  tokenizes like the sentencepiece library itself (the slow LlamaTokenizer of the official environment);
- fast: transformers' LlamaTokenizer converted from the same tokenizer.model (Metaspace pre-tokenizer);
- byte-level BPE without a prefix space (Llama 3, the demo LLM), where the space is written out.
"""

from __future__ import annotations

import random

import pytest

spm = pytest.importorskip("sentencepiece")

from tokenizers import normalizers  # noqa: E402
from transformers import LlamaTokenizer, PreTrainedTokenizerFast  # noqa: E402

from linguaforge.pipelines.mindmerger.data import (  # noqa: E402
    TextExample,
    marks_text_start,
    template_queries,
    tokenize,
)

ROWS = [{"query": "Tom has 3 apples and gets 4 more. How many apples does he have?", "_where": "q.json, row 1",
         "response": "Tom has 3 + 4 = 7 apples. The answer is 7"},
        {"query": "Ann had 12 pears and gave 5 away. How many are left?", "_where": "q.json, row 2",
         "response": "12 - 5 = 7 pears are left. The answer is 7"}]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    """A SentencePiece BPE model with Llama 2's settings: identity normalisation, a dummy prefix, extra
    whitespace kept, digits split, byte fallback; <unk> 0, <s> 1, </s> 2."""
    root = tmp_path_factory.mktemp("sp")
    rng = random.Random(0)
    words = ("Tom Ann has had apples pears and gets gave more away left How many does he have are the answer "
             "is Below an instruction that describes a task Write response appropriately completes request "
             "Let's think step by").split()
    lines = [" ".join(rng.choice(words) for _ in range(14)) + f" {rng.randint(0, 99)} = {rng.randint(0, 9)}."
             for _ in range(600)]
    (root / "corpus.txt").write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"), model_prefix=str(root / "tokenizer"), vocab_size=400, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, minloglevel=2,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        split_digits=True)
    return root


@pytest.fixture(scope="module")
def tokenizers(sp_model):
    fast = LlamaTokenizer.from_pretrained(str(sp_model), legacy=False)
    legacy_backend = LlamaTokenizer.from_pretrained(str(sp_model), legacy=True).backend_tokenizer
    legacy_backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    legacy_backend.pre_tokenizer = None
    legacy = PreTrainedTokenizerFast(tokenizer_object=legacy_backend, bos_token="<s>", eos_token="</s>",
                                     unk_token="<unk>")
    return {"legacy": legacy, "fast": fast}


def _official(tokenizer, response: str) -> list[int]:
    """The official code's target ids: the target alone, add_bos_token False, add_eos_token True."""
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def _targets(tokenizer) -> list[list[int]]:
    texts = template_queries(ROWS, "math", "en")
    return [e.target_ids for e in tokenize(texts, tokenizer, tokenizer, 512, 512).examples]


def test_the_legacy_fixture_is_the_kind_that_adds_a_second_prefix(sp_model, tokenizers):
    sp = spm.SentencePieceProcessor(model_file=str(sp_model / "tokenizer.model"))
    legacy = tokenizers["legacy"]
    for text in ("Tom has 3 apples.", " Tom has 3 apples."):
        assert legacy(text, add_special_tokens=False)["input_ids"] == sp.encode(text)
    assert legacy.convert_ids_to_tokens(legacy(" Tom", add_special_tokens=False)["input_ids"])[0] == "▁"


@pytest.mark.parametrize("kind", ["legacy", "fast"])
def test_targets_are_the_official_ids(tokenizers, kind, sp_model):
    tokenizer = tokenizers[kind]
    assert marks_text_start(tokenizer)
    expected = [_official(tokenizer, row["response"]) for row in ROWS]
    assert _targets(tokenizer) == expected
    if kind == "legacy":  # and the sentencepiece library agrees (the official, slow tokenizer)
        sp = spm.SentencePieceProcessor(model_file=str(sp_model / "tokenizer.model"))
        assert expected == [sp.encode(row["response"]) + [2] for row in ROWS]


def test_writing_the_space_on_a_legacy_tokenizer_would_add_a_token(tokenizers):
    """What the targets were before: " " + response, tokenized as it stands. The comparison above can fail."""
    legacy = tokenizers["legacy"]
    spaced = legacy(" " + ROWS[0]["response"], add_special_tokens=False)["input_ids"] + [legacy.eos_token_id]
    assert spaced != _official(legacy, ROWS[0]["response"])
    assert legacy.convert_ids_to_tokens(spaced[:1]) == ["▁"]


def test_byte_level_targets_keep_the_space_they_read_with(demo_assets):
    from linguaforge.pipelines.models import load_tokenizer

    tokenizer = load_tokenizer(str(demo_assets["llm"]))
    assert not marks_text_start(tokenizer)
    (example,) = tokenize([TextExample("q", "Question?", " 7 apples", "en")], tokenizer, tokenizer, 64, 64).examples
    assert example.target_ids == tokenizer(" 7 apples", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
