"""A fine-tune with an extended vocabulary (the usual way to adapt a model to a new script) merges: the rows the base
has are merged as any tensor's, the new tokens' rows are the fine-tune's own, its tokenizer goes with the output,
which loads and encodes the new tokens to the new rows; two inputs that both extend the vocabulary are refused."""

from __future__ import annotations

import pytest
import torch
import yaml

from linguaforge.pipelines.weights import WeightReader
from tests.flows.test_merge_models import _cli, fine_tune

pytestmark = pytest.mark.slow
NEW_TOKENS = [f"ব{i}ক" for i in range(50)]


def _extended(base_dir, out, seed: int):
    """A fine-tune of the base that adds 50 tokens (their rows set to known values) and moves some shared rows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    added = tokenizer.add_tokens(NEW_TOKENS)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, added


def _merge(tmp_path, repo_root, base, models, name):
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"base": str(base), "out": str(tmp_path / name), "models": models,
                                      "merge": {"method": "task_arithmetic"}}))
    return _cli("merge", str(config), cwd=repo_root)


def test_an_extended_vocabulary_merges_with_its_new_rows_and_tokenizer(demo_assets, tmp_path, repo_root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = demo_assets["llm"]
    extended, added = _extended(base, tmp_path / "bengali", seed=5)
    assert added == 50
    other = fine_tune(base, tmp_path / "math", 9_021)
    result = _merge(tmp_path, repo_root, base, [{"model": str(extended), "weight": 0.5}, {"model": str(other)}], "out")
    assert result.returncode == 0, result.stdout + result.stderr
    vocab = WeightReader(base).shape("model.embed_tokens.weight")[0]
    merged, tuned, plain = WeightReader(tmp_path / "out"), WeightReader(extended), WeightReader(other)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        out = merged.get(name)
        assert out.shape[0] == vocab + 50
        assert torch.equal(out[vocab:], tuned.get(name)[vocab:])  # the new tokens' rows: the fine-tune's own
        base_rows = WeightReader(base).get(name).float()
        update = 0.5 * (tuned.get(name)[:vocab].float() - base_rows) + 1.0 * (plain.get(name).float() - base_rows)
        expected = base_rows + update  # task arithmetic's order: the weighted deltas summed, then added to τ_o
        assert torch.equal(out[:vocab], expected.to(out.dtype))  # shared rows: as a merge without the extension
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    ids = tokenizer(NEW_TOKENS[7], add_special_tokens=False)["input_ids"]
    assert ids == [vocab + 7] and model.get_input_embeddings().weight.shape[0] == vocab + 50
    assert "## Vocabulary" in (card := (tmp_path / "out" / "README.md").read_text()) and "+50" in card


def test_two_inputs_extending_the_vocabulary_are_refused(demo_assets, tmp_path, repo_root):
    base = demo_assets["llm"]
    one, _ = _extended(base, tmp_path / "one", seed=6)
    two, _ = _extended(base, tmp_path / "two", seed=7)
    result = _merge(tmp_path, repo_root, base, [{"model": str(one)}, {"model": str(two)}], "out")
    assert result.returncode == 1 and "both extend the vocabulary" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_maet_language_deltas_bring_their_new_tokens_by_the_same_rule(demo_assets, tmp_path, repo_root):
    base = demo_assets["llm"]
    extended, _ = _extended(base, tmp_path / "bengali", seed=8)
    config = tmp_path / "maet.yaml"
    config.write_text(yaml.safe_dump({
        "base": str(base), "out": str(tmp_path / "out"),
        "deltas": {"ability_pivot": str(fine_tune(base, tmp_path / "ap", 9_031)),
                   "pivot": str(fine_tune(base, tmp_path / "pivot", 9_032)), "languages": {"bn": str(extended)}},
        "merge": {"method": "maet"}}))
    result = _cli("merge", str(config), cwd=repo_root)
    assert result.returncode == 0, result.stdout + result.stderr
    vocab = WeightReader(base).shape("lm_head.weight")[0]
    out = WeightReader(tmp_path / "out").get("lm_head.weight")
    assert out.shape[0] == vocab + 50 and torch.equal(out[vocab:], WeightReader(extended).get("lm_head.weight")[vocab:])
