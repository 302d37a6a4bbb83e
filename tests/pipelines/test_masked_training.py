"""Masked CPT: only masked entries move (decay and momentum included), on both back ends; MaskedAdamW is AdamW."""

from __future__ import annotations

import pytest
import torch

from linguaforge.pipelines.corpus import pack_corpus
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.maet.importance import NeuronMask, neuron_count
from linguaforge.pipelines.maet.masked import KeyNeurons, MaskedAdamW
from linguaforge.pipelines.models import load_causal_lm, load_tokenizer
from linguaforge.pipelines.settings import CorpusPrepConfig
from linguaforge.pipelines.training.causal_lm import CausalLMRecipe, PackedBlocks
from linguaforge.pipelines.training.cpt import make_backend
from linguaforge.pipelines.training.loop import train
from linguaforge.pipelines.training.settings import TrainSettings
from linguaforge.storage import ArtifactStore


def test_masked_adamw_is_adamw_on_the_selected_entries():
    torch.manual_seed(0)
    full = torch.nn.Parameter(torch.randn(4, 3))
    part = torch.nn.Parameter(full.detach().clone())
    reference = torch.optim.AdamW([full], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    masked = MaskedAdamW([(part, torch.tensor([1, 3]), "row")], lr=0.1, betas=(0.9, 0.99), eps=1e-8,
                         weight_decay=0.1)
    before = part.detach().clone()
    for _ in range(3):
        grad = torch.randn(4, 3)
        full.grad, part.grad = grad.clone(), grad.clone()
        reference.step()
        masked.step()
    assert torch.allclose(part[[1, 3]], full[[1, 3]], atol=1e-6)  # selected rows follow AdamW exactly
    assert torch.equal(part[[0, 2]], before[[0, 2]])  # the others never move, despite decay
    assert masked.state_bytes() < 2 * 4 * 12  # moments for 6 of 12 entries (+ a few indices)


@pytest.fixture(scope="module")
def setup(demo_assets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocks")
    text = (demo_assets["world"] / "translation" / "de" / "train.en").read_text().splitlines()
    pack_corpus(text, load_tokenizer(str(demo_assets["llm"])), folder, CorpusPrepConfig(block_size=32))
    return str(demo_assets["llm"]), PackedBlocks.from_dir(folder)


def _random_mask(model, granularity, share=0.05, seed=0) -> NeuronMask:
    g = torch.Generator().manual_seed(seed)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    masks = {n: torch.rand(neuron_count(s, granularity), generator=g) < share for n, s in shapes.items()}
    return NeuronMask(granularity, shapes, masks, share * 100)


@pytest.mark.parametrize("granularity, backend, decay", [
    ("row", "torch", 0.1), ("element", "torch", 0.1), ("row", "deepspeed", 0.0), ("element", "deepspeed", 0.0)])
def test_only_masked_entries_change(setup, granularity, backend, decay):
    llm, data = setup
    model = load_causal_lm(llm)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = _random_mask(model, granularity)
    settings = TrainSettings(steps=3, learning_rate=1e-2, batch_tokens=256, micro_batch_size=4, weight_decay=decay,
                             backend=backend, deepspeed_config="deploy/deepspeed/zero2.json")
    backend_obj = make_backend(model, settings, data.block_size, KeyNeurons(mask))
    train(backend_obj, CausalLMRecipe(data, settings))
    after = backend_obj.full_state_dict()
    moved = 0
    for name, old in before.items():
        keep = mask.full(name)
        assert torch.equal(after[name][~keep], old[~keep]), f"{name}: a frozen entry moved"
        moved += int((after[name][keep] != old[keep]).sum())
    assert moved > 0.5 * sum(int(mask.full(n).sum()) for n in before)


@pytest.mark.parametrize("granularity", ["row", "element"])
def test_an_all_ones_mask_is_full_training_weight_decay_included(setup, granularity):
    """The control of issue #27: every neuron a key neuron is full CPT, also with weight decay, which both
    optimizers apply to matrices only (before, the masked one decayed the norms too: 2e-4 apart after 10 steps)."""
    llm, data = setup
    settings = TrainSettings(steps=10, learning_rate=1e-2, batch_tokens=256, micro_batch_size=4, weight_decay=0.1,
                             seed=0)
    trained = {}
    for name, restriction in (("full", None), ("masked", "ones")):
        model = load_causal_lm(llm)
        if restriction:
            shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
            ones = {n: torch.ones(neuron_count(s, granularity), dtype=torch.bool) for n, s in shapes.items()}
            restriction = KeyNeurons(NeuronMask(granularity, shapes, ones, 100.0))
        backend = make_backend(model, settings, data.block_size, restriction)
        train(backend, CausalLMRecipe(data, settings))
        trained[name] = backend.full_state_dict()
    for name, weights in trained["full"].items():
        torch.testing.assert_close(trained["masked"][name], weights, rtol=0, atol=1e-6, msg=name)


def test_deepspeed_masked_refuses_weight_decay(setup):
    llm, data = setup
    model = load_causal_lm(llm)
    settings = TrainSettings(steps=1, weight_decay=0.1, backend="deepspeed")
    with pytest.raises(InputError, match="needs weight_decay 0"):
        make_backend(model, settings, data.block_size, KeyNeurons(_random_mask(model, "row")))


def test_masked_cpt_resumes_bit_identically(setup, tmp_path):
    """Kill (an exception after step 3) and resume from the step-2 checkpoint: the masked optimizer's state
    round-trips and the result equals an uninterrupted run."""
    llm, data = setup
    settings = TrainSettings(steps=5, learning_rate=1e-2, batch_tokens=128, micro_batch_size=4, weight_decay=0.1,
                             checkpoint_every=2)
    straight = load_causal_lm(llm)
    mask = _random_mask(straight, "element")
    reference = train(make_backend(straight, settings, data.block_size, KeyNeurons(mask)), CausalLMRecipe(data, settings))
    area = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "cache").checkpoints("delta", "k" * 24)

    def crash_after_step_3(step, total, metrics):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(make_backend(load_causal_lm(llm), settings, data.block_size, KeyNeurons(mask)), CausalLMRecipe(data, settings),
              checkpoints=area, progress=crash_after_step_3)
    resumed_model = load_causal_lm(llm)
    resumed = train(make_backend(resumed_model, settings, data.block_size, KeyNeurons(mask)), CausalLMRecipe(data, settings), checkpoints=area)
    assert resumed.resumed_from == 2 and resumed.losses == reference.losses
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed_model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
