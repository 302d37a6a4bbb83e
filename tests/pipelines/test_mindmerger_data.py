"""MindMerger data: translation pairs, templated queries, counted skips, dev split, and the bad inputs of
the issue (line counts differing, empty augmentation set, prompts over the limit)."""

from __future__ import annotations

import json

import pytest

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.mindmerger.data import (
    TextExample,
    load_examples,
    read_queries,
    read_translation_pairs,
    save_examples,
    split_dev,
    template_queries,
    tokenize,
)
from tests.pipelines import mindmerger_common as mm
from tests.pipelines.mindmerger_common import one_torch_thread  # noqa: F401  (autouse fixture)


def test_translation_files_with_different_line_counts(tmp_path):
    (tmp_path / "train.de").write_text("eins\nzwei\ndrei\n")
    (tmp_path / "train.en").write_text("one\ntwo\n")
    with pytest.raises(InputError, match=r"train\.de has 3 lines but .*train\.en has 2"):
        read_translation_pairs(tmp_path, "de")


def test_translation_pairs_of_the_demo_world(demo_assets):
    pairs = read_translation_pairs(demo_assets["world"] / "translation" / "zh", "zh")
    assert len(pairs) == 100 and pairs[0].prompt == "" and pairs[0].language == "zh"
    assert pairs[0].target.endswith(".") and pairs[0].source.endswith("。")


def test_empty_augmentation_set(tmp_path):
    (tmp_path / "de.json").write_text("[]")
    with pytest.raises(InputError, match=r"de\.json is empty"):
        read_queries(tmp_path, "de")
    with pytest.raises(InputError, match=r"fr\.json: not found"):
        read_queries(tmp_path, "fr")


def test_math_encoder_reads_raw_query_llm_the_template(demo_assets):
    rows = read_queries(demo_assets["world"] / "queries" / "math", "de")[:2]
    ex = template_queries(rows, "math", "de")[0]
    assert ex.source == rows[0]["query"]
    assert ex.prompt.startswith("Below is an instruction") and rows[0]["query"] in ex.prompt
    assert ex.prompt.endswith("### Response: Let's think step by step.")
    assert ex.target == " " + rows[0]["response"]


def test_classification_both_sides_templated(tmp_path):
    (tmp_path / "de.json").write_text(json.dumps([{"premise": "Die Katze schläft.", "hypothesis": "Ein Tier ruht.",
                                                   "answer": "entailment"}]))
    ex = template_queries(read_queries(tmp_path, "de"), "xnli", "de")[0]
    assert ex.source == ex.prompt == "Premise: Die Katze schläft.\nHypothesis: Ein Tier ruht.\nLabel:"
    assert ex.target == " entailment"
    (tmp_path / "de.json").write_text(json.dumps([{"question": "Welche?", "choices": [
        {"label": "A", "text": "x"}, {"label": "B", "text": "y"}], "answer": "C"}]))
    with pytest.raises(InputError, match=r"answer 'C' is not one of the choice labels"):
        template_queries(read_queries(tmp_path, "de"), "csqa", "de")


def test_over_long_examples_are_counted_not_truncated(demo_assets):
    enc_tok, llm_tok = mm.tokenizers(demo_assets)
    long_prompt = TextExample("kurz", "word " * 300, " ok", "de")
    long_source = TextExample("wort " * 300, "", "ok", "zh")
    fine = TextExample("kurz", "", "ok", "de")
    out = tokenize([long_prompt, long_source, fine, fine], enc_tok, llm_tok, max_source_len=50, max_target_len=50)
    assert out.report() == {"prompt_target_too_long/de": 1, "source_too_long/zh": 1}
    assert len(out.examples) == 2
    assert out.examples[0].target_ids[-1] == llm_tok.eos_token_id  # EOS appended as an id
    with pytest.raises(InputError, match=r"every example was skipped"):
        tokenize([long_prompt], enc_tok, llm_tok, max_source_len=50, max_target_len=50)


def test_dev_split_and_parquet_round_trip(demo_assets, tmp_path):
    examples = mm.mapping_examples(demo_assets, 10)
    train, dev = split_dev(examples, 0.1, seed=3)
    assert len(dev) == 4 and len(train) == 36
    assert split_dev(examples, 0.1, seed=3) == (train, dev)
    save_examples(examples, tmp_path / "x.parquet")
    assert load_examples(tmp_path / "x.parquet") == examples
