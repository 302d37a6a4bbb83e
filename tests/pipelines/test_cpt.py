"""The CPT stage functions on the tiny LLM: a probe's mask is exactly the top k1 % neurons by |θ' − θ|, the
sparse delta reconstructs the trained weights exactly and holds only masked rows, and a multi-process CPT
under torchrun forwards its progress and agrees with one process."""

from __future__ import annotations

import math

import pytest
import torch

from linguaforge.pipelines.corpus import pack_corpus
from linguaforge.pipelines.maet.cpt import key_neuron_mask, write_cpt_delta
from linguaforge.pipelines.maet.importance import neuron_scores
from linguaforge.pipelines.maet.masked import KeyNeurons
from linguaforge.pipelines.merging.deltas import SparseDelta, base_weights_digest
from linguaforge.pipelines.models import load_tokenizer
from linguaforge.pipelines.settings import CorpusPrepConfig
from linguaforge.pipelines.training.cpt import run_cpt
from linguaforge.pipelines.training.settings import TrainSettings
from linguaforge.pipelines.weights import WeightReader

SETTINGS = dict(steps=3, learning_rate=1e-2, batch_tokens=256, micro_batch_size=4, schedule="constant")


@pytest.fixture(scope="module")
def blocks(demo_assets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cpt-blocks")
    text = (demo_assets["world"] / "translation" / "de" / "train.de").read_text().splitlines()
    pack_corpus(text * 2, load_tokenizer(str(demo_assets["llm"])), folder, CorpusPrepConfig(block_size=32))
    return str(folder)


@pytest.fixture(scope="module")
def probed(demo_assets, blocks):
    summary, weights = run_cpt(str(demo_assets["llm"]), blocks, TrainSettings(**SETTINGS))
    return summary, weights


@pytest.mark.parametrize("granularity", ["row", "element"])
def test_probe_mask_is_exactly_the_top_k1_percent(demo_assets, probed, granularity):
    _, weights = probed
    mask = key_neuron_mask(str(demo_assets["llm"]), weights, 7.0, granularity, "global")
    base = WeightReader(demo_assets["llm"])
    scores = {n: neuron_scores(weights[n] - base.get(n), granularity) for n in mask.masks}
    picked = torch.cat([mask.masks[n] for n in scores])
    every = torch.cat(list(scores.values()))
    assert int(picked.sum()) == math.ceil(every.numel() * 0.07)
    assert every[picked].min() >= every[~picked].max()  # a full sort would pick the same set


def test_sparse_delta_reconstructs_the_trained_weights_and_names_its_base(demo_assets, probed, tmp_path):
    _, weights = probed
    nnz = write_cpt_delta(tmp_path / "delta.safetensors", str(demo_assets["llm"]), "tiny-llm", weights)
    delta, base = SparseDelta(tmp_path / "delta.safetensors"), WeightReader(demo_assets["llm"])
    assert delta.base_digest == base_weights_digest(demo_assets["llm"]) and delta.base_id == "tiny-llm"
    assert sum(nnz.values()) > 0
    for name in base.names():
        old, new = base.get(name).float(), weights[name].float()
        # float32 differences: exact up to one rounding of (new − old), i.e. an ulp of the larger operand
        bound = torch.finfo(torch.float32).eps * torch.maximum(old.abs(), new.abs())
        assert ((old + delta.dense(name)) - new).abs().le(bound).all(), name


def test_masked_cpt_delta_holds_only_masked_rows(demo_assets, probed, blocks, tmp_path):
    _, weights = probed
    llm = str(demo_assets["llm"])
    mask = key_neuron_mask(llm, weights, 5.0, "row", "global")
    summary, trained = run_cpt(llm, blocks, TrainSettings(**SETTINGS), KeyNeurons(mask))
    write_cpt_delta(tmp_path / "delta.safetensors", llm, "tiny-llm", trained)
    delta = SparseDelta(tmp_path / "delta.safetensors")
    assert delta.names(), "masked CPT changed nothing"
    for name in delta.names():
        changed = delta.dense(name) != 0
        assert not changed[~mask.full(name)].any(), f"{name}: an entry outside the mask is in the delta"
    full_bytes = sum(p.stat().st_size for p in demo_assets["llm"].glob("*.safetensors"))
    assert (tmp_path / "delta.safetensors").stat().st_size < 0.2 * full_bytes
    assert summary["steps"] == SETTINGS["steps"]


@pytest.mark.slow
def test_two_processes_under_torchrun_forward_progress_and_match_one(demo_assets, blocks, tmp_path):
    llm = str(demo_assets["llm"])
    settings = dict(SETTINGS, backend="deepspeed", deepspeed_config="deploy/deepspeed/zero1.json")
    _, one = run_cpt(llm, blocks, TrainSettings(**settings))
    seen = []
    summary, two = run_cpt(llm, blocks, TrainSettings(**settings, processes=2),
                           progress=lambda done, total, metrics: seen.append((done, total, metrics["loss"])))
    assert [d for d, _, _ in seen] == [1, 2, 3] and all(t == 3 for _, t, _ in seen)
    assert summary["steps"] == 3
    for name, value in one.items():
        assert torch.allclose(value, two[name], atol=1e-5), name


@pytest.mark.slow
def test_a_restriction_reaches_the_worker_processes(demo_assets, probed, blocks):
    """Masked CPT under torchrun: the workers load the caller's restriction by its class name (the training core
    imports no method room), train only its neurons, and agree with one process."""
    llm = str(demo_assets["llm"])
    mask = key_neuron_mask(llm, probed[1], 5.0, "row", "global")
    settings = dict(SETTINGS, backend="deepspeed", deepspeed_config="deploy/deepspeed/zero1.json", weight_decay=0.0)
    _, one = run_cpt(llm, blocks, TrainSettings(**settings), KeyNeurons(mask))
    _, two = run_cpt(llm, blocks, TrainSettings(**settings, processes=2), KeyNeurons(mask))
    base = WeightReader(llm)
    assert any(not torch.equal(two[n], base.get(n)) for n in mask.masks)  # the mask's neurons trained
    for name in base.names():
        frozen = ~mask.full(name) if name in mask.masks else torch.ones_like(base.get(name), dtype=torch.bool)
        assert torch.equal(two[name][frozen], base.get(name)[frozen]), name  # the rest is bitwise the base
        assert torch.allclose(one[name], two[name], atol=1e-5), name


@pytest.mark.slow
def test_workers_get_the_whole_store_handle(demo_assets, blocks, s3_bucket, s3_endpoint, monkeypatch, tmp_path):
    """Two torchrun workers checkpoint into an S3 store that only its storage_options can reach (the endpoint
    is not in the environment): they must receive the store's full handle, not a bare URL."""
    from linguaforge.storage import ArtifactStore

    monkeypatch.delenv("AWS_ENDPOINT_URL")
    store = ArtifactStore(f"s3://{s3_bucket}/runs", cache_dir=tmp_path / "cache",
                          storage_options={"endpoint_url": s3_endpoint})
    area = store.checkpoints("delta", "w" * 24)
    settings = TrainSettings(**dict(SETTINGS, steps=4, checkpoint_every=2), processes=2, backend="deepspeed",
                             deepspeed_config="deploy/deepspeed/zero1.json")
    summary, _ = run_cpt(str(demo_assets["llm"]), blocks, settings, checkpoints=area)
    assert summary["steps"] == 4
    assert area.steps(), "the workers wrote no checkpoint into the store they were handed"
    assert ArtifactStore.from_handle(store.handle()).storage_options == {"endpoint_url": s3_endpoint}
