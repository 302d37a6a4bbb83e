"""Corpus preparation: sources, normalisation, counted drops, packing invariants, mixtures, bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from linguaforge.pipelines.corpus import mix_corpora, normalise, pack_corpus, read_documents
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.models import load_tokenizer
from linguaforge.pipelines.settings import CorpusPrepConfig, CorpusSource


@pytest.fixture(scope="module")
def tokenizer(demo_assets):
    return load_tokenizer(str(demo_assets["llm"]))


def _blocks(folder):
    table = pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("blocks-*.parquet"))])
    ids = table.column("input_ids").combine_chunks()
    return (ids.values.to_numpy().reshape(-1, ids.type.list_size), table.column("n_real").to_numpy(),
            table.column("first_doc").to_numpy(), table.column("last_doc").to_numpy())


DOCS = ["Tom has 3 apples.", "", "   ", "The cat sees the red dog in the garden. " * 4, "x" * 500, "Anna likes the big cow."]


def test_normalise():
    assert normalise("  a\t\tb  \r\n\n\n\n c ") == "a b\n\nc"
    assert normalise("e\u0301") == "\u00e9"  # NFC


@pytest.mark.parametrize("packing", ["concat", "document"])
def test_token_counts_add_up_and_drops_are_counted(tokenizer, tmp_path, packing):
    stats = pack_corpus(DOCS, tokenizer, tmp_path, CorpusPrepConfig(block_size=8, packing=packing, max_chars=400))
    assert (stats.documents_read, stats.documents_kept) == (6, 3)
    assert (stats.dropped_empty, stats.dropped_too_long) == (2, 1)
    expected = [len(tokenizer(normalise(d))["input_ids"]) + 1 for d in (DOCS[0], DOCS[3], DOCS[5])]  # + EOS
    assert stats.tokens == sum(expected)
    ids, n_real, first, last = _blocks(tmp_path)
    assert len(ids) == stats.blocks
    assert stats.tokens_in_blocks == int(n_real.sum())
    assert stats.tokens == stats.tokens_in_blocks + stats.tokens_dropped_tail
    if packing == "document":
        assert (first == last).all()  # no block holds tokens of two documents
        assert stats.tokens_dropped_tail == 0
        assert stats.padding_tokens == int((8 - n_real).sum())
        per_doc = np.bincount(first, weights=n_real)
        assert per_doc.tolist() == expected
        assert (ids[:, 0] == tokenizer.bos_token_id).sum() == 3  # every document starts a block
    else:
        assert (n_real == 8).all()
        assert (first != last).any()  # concat packing lets blocks span documents
        stream = np.concatenate([tokenizer(normalise(d))["input_ids"] + [tokenizer.eos_token_id]
                                 for d in (DOCS[0], DOCS[3], DOCS[5])])
        assert (ids.reshape(-1) == stream[:ids.size]).all()


def test_sources_jsonl_text_parquet_and_max_documents(tmp_path):
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"body": f"doc {i}"}) for i in range(5)) + "\n")
    (tmp_path / "c.txt").write_text("one\ntwo\n")
    pq.write_table(pa.table({"text": ["p1", None, "p3"]}), tmp_path / "c.parquet")
    assert list(read_documents(CorpusSource(uri=str(tmp_path / "c.jsonl"), text_field="body", max_documents=3), "en")) == \
        ["doc 0", "doc 1", "doc 2"]
    assert list(read_documents(CorpusSource(uri=str(tmp_path / "c.txt")), "en")) == ["one", "two"]
    assert list(read_documents(CorpusSource(uri=str(tmp_path / "c.parquet")), "en")) == ["p1", "", "p3"]


def test_s3_source(s3_bucket, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe_file(f"{s3_bucket}/corpora/sw.jsonl", b'{"text": "habari"}\n{"text": "dunia"}\n')
    assert list(read_documents(CorpusSource(uri=f"s3://{s3_bucket}/corpora/sw.jsonl"), "sw")) == ["habari", "dunia"]


def test_bad_sources_name_the_input(tokenizer, tmp_path):
    with pytest.raises(InputError, match=r"corpus \(sw\) .*missing.jsonl: file does not exist"):
        list(read_documents(CorpusSource(uri=str(tmp_path / "missing.jsonl")), "sw"))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(InputError, match="bad.jsonl, line 2: not valid JSON"):
        list(read_documents(CorpusSource(uri=str(tmp_path / "bad.jsonl")), "en"))
    (tmp_path / "nofield.jsonl").write_text('{"content": "x"}\n')
    with pytest.raises(InputError, match="nofield.jsonl, line 1: no field 'text'"):
        list(read_documents(CorpusSource(uri=str(tmp_path / "nofield.jsonl")), "en"))
    with pytest.raises(InputError, match="cannot tell the format"):
        list(read_documents(CorpusSource(uri=str(tmp_path / "corpus.xml")), "en"))
    with pytest.raises(InputError, match=r"corpus empty-one is empty after filtering: 2 documents read, 2 empty"):
        pack_corpus(["", " "], tokenizer, tmp_path / "out", CorpusPrepConfig(block_size=8), source="empty-one")
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_mixture_respects_the_ratio(tokenizer, tmp_path):
    pack_corpus([f"Tom has {i} apples." for i in range(200)], tokenizer, tmp_path / "a", CorpusPrepConfig(block_size=8))
    pack_corpus([f"The cat sees {i} dogs." for i in range(100)], tokenizer, tmp_path / "g", CorpusPrepConfig(block_size=8))
    n_a, n_g = len(_blocks(tmp_path / "a")[0]), len(_blocks(tmp_path / "g")[0])
    taken = mix_corpora({"ability": tmp_path / "a", "general": tmp_path / "g"}, {"ability": 0.25, "general": 0.75},
                        tmp_path / "mix", seed=0)
    assert taken["general"] <= n_g and taken["ability"] <= n_a
    assert taken["ability"] / sum(taken.values()) == pytest.approx(0.25, abs=0.02)
    assert len(_blocks(tmp_path / "mix")[0]) == sum(taken.values())
