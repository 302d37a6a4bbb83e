"""The training loop: schedule arithmetic, learning, exact resume, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from linguaforge.pipelines.corpus import pack_corpus
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.models import load_causal_lm, load_tokenizer
from linguaforge.pipelines.settings import CorpusPrepConfig
from linguaforge.pipelines.training.backends import TorchBackend
from linguaforge.pipelines.training.causal_lm import CausalLMRecipe, PackedBlocks
from linguaforge.pipelines.training.loop import train
from linguaforge.pipelines.training.settings import TrainSettings
from linguaforge.storage import ArtifactStore


def test_lr_schedule_by_hand():
    s = TrainSettings(steps=12, warmup_steps=2, schedule="cosine", learning_rate=1.0)
    assert [s.lr_factor(i) for i in range(2)] == [0.5, 1.0]
    assert s.lr_factor(2) == 1.0  # cosine starts at its peak
    assert s.lr_factor(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))  # halfway = 0.5
    assert s.lr_factor(12) == pytest.approx(0.0)
    assert TrainSettings(steps=5, schedule="constant").lr_factor(4) == 1.0
    # 1000 tokens per step from micro-batches of 4 blocks of 32 tokens: ceil(1000 / 128) = 8
    assert TrainSettings(batch_tokens=1000, micro_batch_size=4).accumulation(32) == 8


@pytest.fixture(scope="module")
def blocks(demo_assets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocks")
    docs = [line for line in (demo_assets["world"] / "translation" / "de" / "train.en").read_text().splitlines()]
    pack_corpus(docs, load_tokenizer(str(demo_assets["llm"])), folder, CorpusPrepConfig(block_size=32))
    return PackedBlocks.from_dir(folder)


SETTINGS = dict(learning_rate=3e-3, batch_tokens=256, micro_batch_size=4, warmup_steps=2, checkpoint_every=3)


def test_loss_falls(demo_assets, blocks):
    s = TrainSettings(steps=25, **SETTINGS)
    result = train(TorchBackend(load_causal_lm(str(demo_assets["llm"])), s), CausalLMRecipe(blocks, s))
    assert result.steps == 25 and result.summary()["tokens"] == 25 * 256
    assert sum(result.losses[-5:]) / 5 < result.losses[0] - 0.5


def test_resume_from_checkpoint_is_bit_identical(demo_assets, blocks, tmp_path):
    s = TrainSettings(steps=7, **SETTINGS)
    straight = load_causal_lm(str(demo_assets["llm"]))
    reference = train(TorchBackend(straight, s), CausalLMRecipe(blocks, s))

    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "cache")
    area = store.checkpoints("test", "k" * 24)

    class Crash(Exception):
        pass

    def crash_after_step_4(step, total, metrics):
        if step == 4:
            raise Crash

    with pytest.raises(Crash):  # dies after step 4; the newest checkpoint is step 3
        train(TorchBackend(load_causal_lm(str(demo_assets["llm"])), s), CausalLMRecipe(blocks, s), checkpoints=area,
              progress=crash_after_step_4)
    assert area.steps() == [3]
    resumed_model = load_causal_lm(str(demo_assets["llm"]))
    resumed = train(TorchBackend(resumed_model, s), CausalLMRecipe(blocks, s), checkpoints=area)
    assert resumed.resumed_from == 3
    assert resumed.losses == reference.losses
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed_model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_too_few_blocks_for_a_batch(demo_assets, blocks):
    s = TrainSettings(steps=1, micro_batch_size=len(blocks) + 1)
    with pytest.raises(InputError, match=f"has {len(blocks)} blocks, fewer than one micro-batch"):
        train(TorchBackend(load_causal_lm(str(demo_assets["llm"])), s), CausalLMRecipe(blocks, s))
