"""Shared helpers of the MindMerger tests: the demo world's tiny models and tokenized examples."""

from __future__ import annotations

import pytest
import torch

from linguaforge.pipelines.mindmerger.data import (
    read_queries,
    read_translation_pairs,
    template_queries,
    tokenize,
)
from linguaforge.pipelines.mindmerger.model import MindMergerModel
from linguaforge.pipelines.models import load_causal_lm, load_encoder, load_tokenizer

LANGS = ["de", "zh", "sw", "bn"]


def tokenizers(assets):
    return load_tokenizer(str(assets["encoder"])), load_tokenizer(str(assets["llm"]))


def model(assets, seed: int = 0, padding_side: str = "right") -> MindMergerModel:
    torch.manual_seed(seed)
    llm_tok = load_tokenizer(str(assets["llm"]))
    return MindMergerModel(load_encoder(str(assets["encoder"])), load_causal_lm(str(assets["llm"])),
                           llm_tok.bos_token_id, padding_side=padding_side)


def mapping_examples(assets, per_language: int | None = None):
    texts = [p for lang in LANGS
             for p in read_translation_pairs(assets["world"] / "translation" / lang, lang)[:per_language]]
    return tokenize(texts, *tokenizers(assets), max_source_len=200, max_target_len=200).examples


def augmentation_examples(assets, languages=("de", "zh", "en"), per_language: int | None = None):
    texts = [t for lang in languages for t in template_queries(
        read_queries(assets["world"] / "queries" / "math", lang)[:per_language], "math", lang)]
    return tokenize(texts, *tokenizers(assets), max_source_len=512, max_target_len=512).examples


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine spinning OpenMP workers
    slow them down many times over; restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
