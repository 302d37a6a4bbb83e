"""Same inputs, same bytes: what a stage writes must not depend on the process that wrote it, or every
content-addressed key downstream changes from run to run. Each check compares two fresh processes,
because the faults it guards against (hash-ordered maps) only show between processes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from linguaforge.pipelines.reproducible import content_only, save_tensors

SAVE = textwrap.dedent("""
    import sys, torch
    from linguaforge.pipelines.reproducible import save_tensors
    tensors = {"b": torch.zeros(2, 2), "a": torch.arange(3.0)}
    save_tensors(tensors, sys.argv[1], metadata={f"key{i}": str(i) * i for i in range(12)})
""")

TOKENIZER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from linguaforge.pipelines.demo.models import train_encoder_tokenizer, world_texts
    from linguaforge.pipelines.demo.world import WorldSpec, generate_world
    out = Path(sys.argv[1])
    generate_world(WorldSpec(languages=["en", "de", "sw"], general_docs=60, ability_problems=80,
                             translation_pairs=20, query_items=10, test_items=4), out / "world")
    train_encoder_tokenizer(world_texts(out / "world"), 400, out / "tok")  # as the tiny test run does
""")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(code: str, arg, repo_root) -> None:
    subprocess.run([sys.executable, "-c", code, str(arg)], cwd=repo_root, check=True, timeout=300)


def test_safetensors_files_are_byte_identical_across_processes(tmp_path, repo_root):
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for path in paths:
        _run(SAVE, path, repo_root)
    assert len({_digest(p) for p in paths}) == 1
    with safe_open(str(paths[0]), framework="pt") as f:  # still a valid file, metadata intact
        assert f.metadata() == {f"key{i}": str(i) * i for i in range(12)}
    assert torch.equal(load_file(paths[0])["a"], torch.arange(3.0))


def test_header_rewrite_keeps_a_header_safetensors_wrote_in_any_order(tmp_path):
    path = tmp_path / "x.safetensors"
    save_tensors({"w": torch.ones(4)}, path, metadata={"z": "1", "a": "2"})
    length = int.from_bytes(path.read_bytes()[:8], "little")
    header = path.read_bytes()[8:8 + length].decode()
    assert header.index('"a"') < header.index('"z"')  # sorted, whatever order the writer used
    assert len(path.read_bytes()) == 8 + length + 16  # data offset unchanged: header padded, not moved


def test_encoder_tokenizer_training_is_reproducible(tmp_path, repo_root):
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        _run(TOKENIZER, folder, repo_root)
    assert _digest(folders[0] / "world" / "general" / "de.jsonl") == _digest(folders[1] / "world" / "general" / "de.jsonl")
    assert _digest(folders[0] / "tok" / "tokenizer.json") == _digest(folders[1] / "tok" / "tokenizer.json")


def test_summaries_keep_content_and_drop_execution_facts():
    summary = {"steps": 3, "losses": [1.0], "seconds": 2.5, "tokens_per_second": 9.0, "resumed_from": 2}
    assert content_only(summary) == {"steps": 3, "losses": [1.0]}


def test_unigram_vocabularies_in_any_hash_order_come_out_the_same():
    """What the Unigram trainer leaves in hash order, in the shape the demo's 2 000-piece vocabulary had: a run of
    equal scores among the learned pieces, then the required characters with scores stepping down by 1e-4, and
    a last piece tied with the one before it. Shuffled within those, the vocabularies come out identical."""
    import random

    from tokenizers import Tokenizer, models

    from linguaforge.pipelines.demo.models import ENCODER_SPECIALS, _rounded_unigram_scores

    specials = [[s, 0.0] for s in ENCODER_SPECIALS]
    learned = [["ab", -3.0], ["cd", -4.0], ["ef", -4.0], ["gh", -4.0], ["ij", -5.5]]
    tail_pieces = ["x", "y", "z", "q", "w"]
    outputs = set()
    for seed in range(6):
        rng = random.Random(seed)
        tied = learned[1:4]
        rng.shuffle(tied)
        tail = rng.sample(tail_pieces, len(tail_pieces))
        vocab = specials + [learned[0], *tied, learned[4]]
        vocab += [[piece, -9.0 - 1e-4 * i] for i, piece in enumerate(tail)]
        vocab.append(["uvw", vocab[-1][1]])  # the last piece ties with the one before it
        rng.shuffle(vocab[-2:])
        tok = _rounded_unigram_scores(Tokenizer(models.Unigram([tuple(v) for v in vocab], unk_id=2)))
        outputs.add(tok.to_str())
    assert len(outputs) == 1
