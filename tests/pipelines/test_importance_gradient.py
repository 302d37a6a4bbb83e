"""Eq. 1 both ways, by hand on the tiny model: the accumulated gradient |Σ_t g_t| equals the gradients of the
probe's steps summed by hand, and ranks differently from the value-change proxy; a mask records its anatomy
(the share of each tensor family, and of vocabulary rows whose tokens the corpus holds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from linguaforge.pipelines.corpus import pack_corpus
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.maet.cpt import key_neuron_mask
from linguaforge.pipelines.maet.importance import GradientSum, NeuronMask, mask_anatomy
from linguaforge.pipelines.merging.methods.maet import family_of
from linguaforge.pipelines.models import load_causal_lm, load_tokenizer
from linguaforge.pipelines.settings import CorpusPrepConfig
from linguaforge.pipelines.training.causal_lm import PackedBlocks, causal_lm_loss_sum
from linguaforge.pipelines.training.cpt import run_cpt
from linguaforge.pipelines.training.loop import BlockOrder
from linguaforge.pipelines.training.settings import TrainSettings

SETTINGS = dict(steps=3, learning_rate=1e-2, batch_tokens=64, micro_batch_size=2, schedule="constant",
                grad_clip=None, device="cpu")  # 2 blocks of 32 a step, one micro-batch


@pytest.fixture(scope="module")
def blocks(demo_assets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gradient-blocks")
    text = (demo_assets["world"] / "translation" / "de" / "train.de").read_text().splitlines()
    pack_corpus(text, load_tokenizer(str(demo_assets["llm"])), folder, CorpusPrepConfig(block_size=32))
    return folder


def test_the_accumulated_gradient_is_the_steps_gradients_summed_by_hand(demo_assets, blocks):
    llm = str(demo_assets["llm"])
    gradients = GradientSum()
    run_cpt(llm, str(blocks), TrainSettings(**SETTINGS), observer=gradients)
    # by hand: the same three steps with plain AdamW, the batches the loop's seeded order gives
    data, model = PackedBlocks.from_dir(blocks), load_causal_lm(llm)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    torch.manual_seed(0)
    order, expected = BlockOrder(len(data), 0), {}
    for step in range(3):
        rows = order.indices(step * 2, 2)
        batch = data.batch(rows)
        targets = int(np.clip(data.n_real[rows], 1, None).sum() - len(rows))
        (causal_lm_loss_sum(model, batch) / targets).backward()
        for name, p in model.named_parameters():
            expected[name] = expected.get(name, 0) + p.grad.detach().clone()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert set(gradients.sums) == set(expected)
    for name, total in expected.items():
        torch.testing.assert_close(gradients.sums[name], total, rtol=1e-4, atol=1e-7)


def test_gradient_and_value_change_rank_neurons_differently(demo_assets, blocks):
    llm = str(demo_assets["llm"])
    gradients = GradientSum()
    _, probed = run_cpt(llm, str(blocks), TrainSettings(**SETTINGS), observer=gradients)
    by_change = key_neuron_mask(llm, probed, 5.0, "row", "global")
    by_gradient = key_neuron_mask(llm, probed, 5.0, "row", "global", gradients)
    head = "lm_head.weight"
    tokens = PackedBlocks.from_dir(blocks).token_ids()
    absent = sorted(set(range(probed[head].shape[0])) - tokens)
    assert absent, "every token of the vocabulary occurs in the corpus: nothing to tell apart"
    picked_absent = {m: int(mask.masks[head][absent].sum()) for m, mask in
                     (("value_change", by_change), ("gradient", by_gradient))}
    # Adam moves an absent token's row by about lr a step, as much as a present one's; its gradient is tiny
    assert picked_absent["gradient"] < picked_absent["value_change"], picked_absent
    anatomy = mask_anatomy(by_gradient, family_of, tokens)
    assert sum(anatomy["share_of_selected"].values()) == pytest.approx(1.0, abs=1e-3)
    assert 0 <= anatomy["lm_head_rows_in_corpus"] <= 1


def test_anatomy_by_hand():
    shapes = {"model.embed_tokens.weight": (6, 2), "lm_head.weight": (6, 2), "model.layers.0.mlp.up_proj.weight": (4, 2)}
    masks = {"model.embed_tokens.weight": torch.tensor([1, 1, 0, 0, 0, 0], dtype=torch.bool),
             "lm_head.weight": torch.tensor([0, 0, 1, 1, 1, 1], dtype=torch.bool),
             "model.layers.0.mlp.up_proj.weight": torch.tensor([1, 1, 0, 0], dtype=torch.bool)}
    anatomy = mask_anatomy(NeuronMask("row", shapes, masks), family_of, corpus_tokens={0, 1, 2})
    assert anatomy["share_of_selected"] == {"embed": 0.25, "lm_head": 0.5, "up": 0.25}  # 2, 4, 2 of 8
    assert anatomy["share_of_family_selected"]["lm_head"] == round(4 / 6, 4)
    assert anatomy["lm_head_rows_in_corpus"] == 0.25 and anatomy["embed_rows_in_corpus"] == 1.0  # rows 2 / 0, 1


def test_gradient_importance_needs_the_plain_back_end(demo_assets, blocks):
    with pytest.raises(InputError, match="accumulated gradient needs one process"):
        run_cpt(str(demo_assets["llm"]), str(blocks), TrainSettings(**SETTINGS, backend="deepspeed"),
                observer=GradientSum())


def test_eq4_ranks_every_tensor_family_unless_narrowed():
    from linguaforge.pipelines.merging.methods.maet import FAMILIES
    from linguaforge.pipelines.merging.settings import MergeConfig

    assert MergeConfig().tensor_families == list(FAMILIES)
    assert MergeConfig(tensor_families=["q", "k", "v", "o", "up", "gate", "down"]).tensor_families[0] == "q"
