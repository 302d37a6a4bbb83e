"""MindMerger behind the evaluation's generator interface: batched greedy generation from embeddings
equals one-by-one generation, option log-likelihoods do not depend on the batch, and score_unit
scores the model like a plain LLM."""

from __future__ import annotations

import json

import pytest
import torch

from linguaforge.pipelines.benchmarks.loaders import load_raw
from linguaforge.pipelines.benchmarks.prompts import build_items, load_preset
from linguaforge.pipelines.benchmarks.settings import BenchmarkSpec
from linguaforge.pipelines.benchmarks.units import score_unit
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.generation.causal_lm import OptionScorer, TextGenerator
from linguaforge.pipelines.mindmerger.generate import MindMergerGenerator
from tests.pipelines import mindmerger_common as mm
from tests.pipelines.mindmerger_common import one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def generator(demo_assets):
    model = mm.model(demo_assets, seed=1)
    with torch.no_grad():  # a mapping that says something: random, and a non-zero boundary
        torch.nn.init.normal_(model.mapping.end_boundary, std=0.5)
        model.mapping.mlp.linear2.weight.mul_(20)
    return MindMergerGenerator(model, *mm.tokenizers(demo_assets), batch_size=1)


def _items(demo_assets, bench, lang, n=None):
    rows = load_raw(bench, str(demo_assets["world"] / "bench" / bench), lang)[:n]
    return build_items(bench, rows, lang, load_preset("mindmerger"))


def test_implements_the_evaluation_protocols(generator):
    assert isinstance(generator, TextGenerator) and isinstance(generator, OptionScorer)


def test_batched_generation_equals_one_by_one(generator, demo_assets):
    items = _items(demo_assets, "mgsm", "de", 6) + _items(demo_assets, "xnli", "zh", 4)
    generator.batch_size = 1
    alone = generator.generate(items, max_new_tokens=12)
    generator.batch_size = 4
    batched = generator.generate(items, max_new_tokens=12)
    assert batched == alone
    assert len(set(alone)) > 1 and all(alone)  # real, varied outputs, not an empty-string agreement
    stopped = generator.generate(items, max_new_tokens=12, stop=[alone[0][3:5]])
    assert stopped[0] == alone[0][:3]
    with pytest.raises(InputError, match="max_new_tokens must be at least 1"):
        generator.generate(items, max_new_tokens=0)


def test_option_logprobs_do_not_depend_on_the_batch(generator, demo_assets):
    items = _items(demo_assets, "xnli", "de", 5) + _items(demo_assets, "xcsqa", "sw", 3)
    generator.batch_size = 1
    alone = generator.option_logprobs(items)
    generator.batch_size = 7
    batched = generator.option_logprobs(items)
    assert [len(s) for s in alone] == [3] * 5 + [5] * 3
    for a, b in zip(alone, batched, strict=True):
        assert b == pytest.approx(a, abs=1e-4)


def test_scored_by_the_benchmark_evaluation(generator, demo_assets, tmp_path):
    generator.batch_size = 4
    scores = score_unit(generator, BenchmarkSpec(name="mgsm", data=str(demo_assets["world"] / "bench" / "mgsm"),
                                                   limit=4, max_new_tokens=8), "de", tmp_path / "m",
                        model_name="mindmerger-base", base_name="base")
    assert scores["n"] == 4 and scores["model"] == "mindmerger-base"
    assert json.loads((tmp_path / "m" / "scores.json").read_text())["benchmark"] == "mgsm"
    scores = score_unit(generator, BenchmarkSpec(name="xnli", data=str(demo_assets["world"] / "bench" / "xnli"),
                                                   limit=6, scoring="loglik"), "de", tmp_path / "x")
    assert scores["n"] == 6 and 0.0 <= scores["accuracy"] <= 1.0
