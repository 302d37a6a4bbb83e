"""Out of memory is handled, never retried unchanged: training halves its micro-batch (the same samples per step)
and resumes from its last checkpoint; generation and option scoring halve the batch and finish it; at the smallest
size the error names what to change. The OOM is torch's real OutOfMemoryError, raised at a chosen point by
LINGUAFORGE_OOM (pipelines/faults.py) as a GPU's memory limit would."""

from __future__ import annotations

import pytest
import torch

from linguaforge.pipelines.corpus import pack_corpus
from linguaforge.pipelines.memory import OutOfMemory
from linguaforge.pipelines.models import load_tokenizer
from linguaforge.pipelines.settings import CorpusPrepConfig
from linguaforge.pipelines.training.cpt import run_cpt
from linguaforge.pipelines.training.settings import TrainSettings
from linguaforge.storage import ArtifactStore
from linguaforge.tasks.common import retry_transient

SETTINGS = dict(steps=6, learning_rate=1e-2, batch_tokens=256, micro_batch_size=4, schedule="constant",
                checkpoint_every=2)  # 8 blocks of 32 tokens a step: 2 micro-batches of 4, or 4 of 2


@pytest.fixture(scope="module")
def blocks(demo_assets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("oom-blocks")
    text = (demo_assets["world"] / "translation" / "de" / "train.de").read_text().splitlines()
    pack_corpus(text * 2, load_tokenizer(str(demo_assets["llm"])), folder, CorpusPrepConfig(block_size=32))
    return str(folder)


def _area(tmp_path, name: str):
    return ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "c").checkpoints("delta", name * 24)


def test_training_out_of_memory_halves_the_micro_batch_and_resumes_from_its_checkpoint(demo_assets, blocks,
                                                                                       tmp_path, monkeypatch):
    llm = str(demo_assets["llm"])
    reference, expected = run_cpt(llm, blocks, TrainSettings(**dict(SETTINGS, micro_batch_size=2)),
                                  checkpoints=_area(tmp_path, "r"))
    monkeypatch.setenv("LINGUAFORGE_OOM", "train:2@3")  # micro-batches above 2 rows fail from step 3 on
    summary, weights = run_cpt(llm, blocks, TrainSettings(**SETTINGS), checkpoints=_area(tmp_path, "o"),
                               label="full CPT")
    assert summary["oom_fallbacks"][0] | {"error": ""} == {"from_micro_batch": 4, "to_micro_batch": 2, "error": ""}
    assert summary["resumed_from"] == 2  # the checkpoint written before the failing step
    assert summary["steps"] == 6 and summary["tokens"] == reference["tokens"]  # the same samples per step
    assert summary["losses"] == pytest.approx(reference["losses"], rel=1e-4)
    for name, tensor in expected.items():  # only the float sums' order differs (Adam amplifies it, far below lr)
        torch.testing.assert_close(weights[name], tensor, rtol=1e-3, atol=5e-5)


def test_training_out_of_memory_at_micro_batch_one_names_what_to_change(demo_assets, blocks, tmp_path, monkeypatch):
    monkeypatch.setenv("LINGUAFORGE_OOM", "train:0")  # nothing fits
    with pytest.raises(OutOfMemory, match=r"probe en of .*: out of memory at micro-batch 1 .*gradient_checkpointing"):
        run_cpt(str(demo_assets["llm"]), blocks, TrainSettings(**SETTINGS), checkpoints=_area(tmp_path, "x"),
                label="probe en")


def test_an_out_of_memory_is_never_retried_by_prefect():
    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self):
            raise self.exc

    from linguaforge.pipelines.training.launcher import WorkersFailed

    assert retry_transient(None, None, State(torch.OutOfMemoryError("CUDA out of memory"))) is False
    assert retry_transient(None, None, State(WorkersFailed(1, "torch.OutOfMemoryError: CUDA out of memory"))) is False
    assert retry_transient(None, None, State(ConnectionError("reset"))) is True  # the transient still are


def test_halving_keeps_every_step_s_samples():
    settings = TrainSettings(**dict(SETTINGS, micro_batch_size=6, batch_tokens=32 * 18))  # 3 micro-batches of 6
    smaller = settings.halved(block_size=32)
    assert (smaller.micro_batch_size, smaller.accumulation(32)) == (3, 6)  # 18 blocks, as before
    odd = TrainSettings(**dict(SETTINGS, micro_batch_size=5, batch_tokens=32 * 5))
    assert (odd.halved(32).micro_batch_size, odd.halved(32).accumulation(32)) == (1, 5)  # 2 does not divide 5
    two_ranks = TrainSettings(**dict(SETTINGS, micro_batch_size=4, batch_tokens=32 * 8))
    assert two_ranks.halved(32, world=2).accumulation(32) % 2 == 0
    assert TrainSettings(**dict(SETTINGS, micro_batch_size=1)).halved(32) is None


@pytest.fixture(scope="module")
def generator(demo_assets):
    from linguaforge.pipelines.generation.causal_lm import HFCausalLMGenerator
    from linguaforge.pipelines.models import load_causal_lm

    def make(batch_size: int):
        return HFCausalLMGenerator(load_causal_lm(str(demo_assets["llm"])), load_tokenizer(str(demo_assets["llm"])),
                                   batch_size=batch_size)
    return make


def _items(n: int):
    from linguaforge.pipelines.benchmarks.items import BenchmarkItem

    return [BenchmarkItem(id=str(i), benchmark="mgsm", language="en", prompt="Anna has " + "two " * (i % 5) + "cakes.",
                          source_text="", gold="2", continuations=(" yes", " no", " maybe")) for i in range(n)]


def test_generation_out_of_memory_halves_the_batch_and_gives_the_same_outputs(generator, monkeypatch, caplog):
    items = _items(11)
    small = generator(2).generate(items, max_new_tokens=6)
    monkeypatch.setenv("LINGUAFORGE_OOM", "generate:2")
    big = generator(8)
    assert big.generate(items, max_new_tokens=6) == small
    assert big.batch_size == 2 and "halving it to 4" in caplog.text  # 8 → 4 → 2, and it stays there


def test_option_scoring_out_of_memory_halves_the_batch(generator, monkeypatch):
    items = _items(7)
    expected = generator(1).option_logprobs(items)
    monkeypatch.setenv("LINGUAFORGE_OOM", "score:3")
    big = generator(8)
    scored = big.option_logprobs(items)
    assert big.batch_size == 2  # 8 → 4 → 2
    for got, want in zip(scored, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


def test_generation_out_of_memory_with_one_item_names_what_to_change(generator, monkeypatch):
    monkeypatch.setenv("LINGUAFORGE_OOM", "generate:0")
    with pytest.raises(OutOfMemory, match="out of memory with a single item"):
        generator(4).generate(_items(3), max_new_tokens=4)
