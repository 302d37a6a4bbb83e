"""The MindMerger model on the demo world's tiny mT5 encoder and Llama LLM: the packed sequence is
[BOS][mapped real source tokens][boundary][prompt][target + EOS] with labels exactly on the targets,
for either padding side and mixed lengths; a row computes the same loss alone and in a batch."""

from __future__ import annotations

import pytest
import torch

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.mindmerger.data import collate
from linguaforge.pipelines.mindmerger.model import IGNORE_INDEX, Mapping, MindMergerModel
from linguaforge.pipelines.mindmerger.train import EncoderStates
from linguaforge.pipelines.threads import intra_op_threads
from tests.pipelines import mindmerger_common as mm
from tests.pipelines.mindmerger_common import one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def setup(demo_assets):
    model = mm.model(demo_assets)
    torch.nn.init.normal_(model.mapping.end_boundary)  # distinguishable from the zero padding vector
    mixed = mm.mapping_examples(demo_assets, 2)[:3] + mm.augmentation_examples(demo_assets, ("de", "zh"), 2)[:3]
    assert len({len(e.source_ids) for e in mixed}) > 2 and len({len(e.prompt_ids) for e in mixed}) > 1
    return model, mixed, mm.tokenizers(demo_assets)[1].eos_token_id


@pytest.mark.parametrize("side", ["left", "right"])
def test_labels_line_up_with_targets(setup, side):
    model, examples, eos = setup
    batch = collate(examples)
    with torch.no_grad():
        packed = model.pack_batch(batch, padding_side=side)
        embed = model.llm.get_input_embeddings()
        states = model.encode(batch["source_ids"], batch["source_mask"])
        for b, ex in enumerate(examples):
            real = packed.attention_mask[b].bool()
            n = 1 + len(ex.source_ids) + 1 + len(ex.prompt_ids) + len(ex.target_ids)
            assert int(real.sum()) == n
            # padding sits on the requested side only
            assert real[-n:].all() if side == "left" else real[:n].all()
            row, labels = packed.inputs_embeds[b][real], packed.labels[b][real]
            assert packed.position_ids[b][real].tolist() == list(range(n))
            # the sequence, segment by segment
            k = len(ex.source_ids)
            assert torch.equal(row[0], embed.weight[model.bos_id])
            mapped = model.mapping.mlp(states[b, :k])
            assert torch.allclose(row[1: 1 + k], mapped, atol=1e-6)
            assert torch.equal(row[1 + k], model.mapping.end_boundary.view(-1))
            p0 = 2 + k
            assert torch.equal(row[p0: p0 + len(ex.prompt_ids)], embed(torch.tensor(ex.prompt_ids, dtype=torch.long)))
            t0 = p0 + len(ex.prompt_ids)
            assert torch.equal(row[t0:], embed(torch.tensor(ex.target_ids)))
            # labels: exactly the target tokens (EOS last), at the positions holding their embeddings
            assert (labels[:t0] == IGNORE_INDEX).all()
            assert labels[t0:].tolist() == ex.target_ids
            assert ex.target_ids[-1] == eos
        assert (packed.labels[packed.attention_mask == 0] == IGNORE_INDEX).all()


def test_loss_is_the_same_alone_and_batched_either_side(setup):
    model, examples, _ = setup
    with torch.no_grad():
        alone = sum(model(**collate([e])).item() for e in examples)
        for side in ("left", "right"):
            model.padding_side = side
            assert model(**collate(examples)).item() == pytest.approx(alone, rel=1e-5)
    model.padding_side = "right"


def test_cached_encoder_states_give_the_same_loss(setup):
    model, examples, _ = setup
    cache = EncoderStates(model, examples, batch_size=4, device=torch.device("cpu"))
    with torch.no_grad():
        direct = model(**collate(examples)).item()
        cached = model(**collate(examples, cache[range(len(examples))])).item()
    assert cached == pytest.approx(direct, rel=1e-5)


def test_frozen_parts_and_trainable_mapping(setup):
    model, _, _ = setup
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"mapping.mlp.linear1.weight", "mapping.mlp.linear1.bias", "mapping.mlp.linear2.weight",
                         "mapping.mlp.linear2.bias", "mapping.end_boundary"}
    assert model.mapping.mlp.linear1.weight.shape == (2 * model.d_enc, model.d_enc)
    assert model.mapping.end_boundary.shape == (1, 1, model.d_llm)
    model.train()
    assert not model.encoder.training and not model.llm.training
    assert torch.count_nonzero(Mapping(model.d_enc, model.d_llm).end_boundary) == 0  # zero-initialised


def test_mapping_of_other_dims_is_refused(demo_assets):
    with pytest.raises(InputError, match=r"mapping maps 48 → 32, but the encoder gives 32"):
        m = mm.model(demo_assets)
        MindMergerModel(m.encoder, m.llm, m.bos_id, mapping=Mapping(48, 32))


def test_a_seeded_mapping_does_not_depend_on_other_threads():
    """Stages run in threads of one process. A mapping drawn from the process-wide generator changes when another
    thread reseeds it meanwhile; a seeded mapping draws from its own and comes out the same every time, with
    the values nn.Linear draws from that seed when nothing races it (|w| ≤ 1/√fan_in)."""
    import threading

    stop = threading.Event()

    def reseed():
        while not stop.is_set():
            torch.manual_seed(12345)

    def build(seeded: bool) -> torch.Tensor:
        if seeded:
            return torch.cat([p.detach().flatten() for p in Mapping(64, 48, seed=3).parameters()])
        torch.manual_seed(3)
        return torch.cat([p.detach().flatten() for p in Mapping(64, 48).parameters()])

    quiet = {seeded: build(seeded) for seeded in (False, True)}
    other = threading.Thread(target=reseed)
    other.start()
    try:
        seeded = [build(True) for _ in range(30)]
        raced = any(not torch.equal(build(False), quiet[False]) for _ in range(5000))  # stops at the first
    finally:
        stop.set()
        other.join()
    assert raced, "the race this test is about never happened"
    assert all(torch.equal(b, quiet[True]) for b in seeded)
    assert torch.equal(quiet[True], quiet[False])  # unraced, the same draws as nn.Linear's own from that seed
    weight = Mapping(64, 48, seed=3).mlp.linear1.weight
    assert weight.abs().max() <= 1 / 64 ** 0.5 and weight.abs().max() > 0.9 / 64 ** 0.5


def test_a_batch_gives_the_same_gradient_bits_on_two_threads(demo_assets):
    """The boundary, BOS and padding vectors recur in every row of a packed batch. With two intra-op threads,
    summing their gradients must not depend on which thread adds first: packing by indexing (`pool[index]`)
    summed them with atomic adds on CPU, and two identical training runs differed from their first step."""
    model = mm.model(demo_assets)
    batch = collate(mm.mapping_examples(demo_assets, 16))
    assert batch["llm_ids"].shape[0] >= 64  # enough rows (and elements) for torch to split the work in two

    def gradient() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        model(**batch).backward()
        return torch.cat([p.grad.flatten() for p in model.mapping.parameters()])

    with intra_op_threads(2):
        first = gradient()
        assert all(torch.equal(gradient(), first) for _ in range(12))
