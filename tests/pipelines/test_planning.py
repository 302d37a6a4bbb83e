"""`linguaforge plan`: parameter counts from config.json on the meta device, model states equal to DeepSpeed's own
estimator, an activation estimate read against what autograd really saves, and the 8 B recipe's verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from linguaforge.pipelines.planning import (
    GIB,
    Setup,
    activation_bytes,
    model_shape,
    model_state_bytes,
    plan_training,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "model_configs"


def config(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.mark.parametrize(("name", "published"), [("llama-3-8b", 8_030_261_248), ("llama-2-7b", 6_738_415_616)])
def test_parameter_counts_are_the_published_ones(name, published):
    assert model_shape(config(name)).parameters == published


@pytest.mark.parametrize("gpus", [1, 8, 64])
def test_model_states_equal_deepspeeds_estimator(gpus):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    shape = model_shape(config("llama-3-8b"))
    _, zero2 = estimate_zero2_model_states_mem_needs(shape.parameters, gpus, 1, cpu_offload=False)
    _, zero3, _ = estimate_zero3_model_states_mem_needs(shape.parameters, shape.largest_layer, gpus, 1,
                                                        cpu_offload=False, cpu_offload_params=False)
    assert model_state_bytes(shape, gpus, 2) == pytest.approx(zero2, rel=0.05)
    assert model_state_bytes(shape, gpus, 3) == pytest.approx(zero3, rel=0.05)


def test_largest_layer_is_deepspeeds():
    """ZeRO-3 gathers one module's parameters at a time; DeepSpeed's all-live estimator finds the same module."""
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = dict(vocab_size=500, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    assert model_shape({"model_type": "llama", **settings}).largest_layer == largest == 500 * 64


def test_zero_stages_by_hand():
    """P = 1 000 parameters on 4 GPUs: ZeRO-0 20 000 B, ZeRO-1 2 000 + 6 000 + 3 000, ZeRO-2 2 000 + 4 500."""
    from linguaforge.pipelines.planning import ModelShape

    shape = ModelShape(parameters=1000, largest_layer=100, layers=1, hidden=8, intermediate=16, vocab=10)
    assert [model_state_bytes(shape, 4, z) for z in (0, 1, 2, 3)] == [20_000, 11_000, 6_500, 400 + 4_500]
    assert model_state_bytes(shape, 4, None, trainable=0.25) == 4000 + 4000 + 2000  # masked AdamW: moments of 1/4


def test_activation_estimate_against_what_autograd_saves():
    """Without checkpointing, the bytes autograd saves for backward in a real bf16 Llama forward pass are within a
    factor 1.5 of the estimate; with checkpointing the estimate (which also counts the recomputed layer and the
    logits' gradient) bounds them from above, and checkpointing saves less."""
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = dict(vocab_size=2000, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                    num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False)
    shape = model_shape({"model_type": "llama", **settings})
    measured = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**settings, attn_implementation="sdpa")).to(torch.bfloat16).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
        saved: dict[int, int] = {}

        def pack(tensor, saved=saved):
            storage = tensor.untyped_storage()
            saved[storage.data_ptr()] = storage.nbytes()
            return tensor

        ids = torch.randint(0, 2000, (4, 128))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, labels=ids)
        measured[checkpointing] = sum(n for ptr, n in saved.items() if ptr not in parameters)
    plain, checkpointed = (activation_bytes(shape, 4, 128, c) for c in (False, True))
    assert plain / 1.5 <= measured[False] <= plain * 1.5, (measured, plain)
    assert measured[True] <= checkpointed
    assert measured[True] < measured[False] and checkpointed < plain


def test_eight_b_fits_on_eight_h100s_with_checkpointing_and_not_without():
    shape = model_shape(config("llama-3-8b"))

    def plan(checkpointing: bool, micro: int = 4):
        return plan_training("cpt", shape, Setup(gpus=8, zero_stage=2, micro_batch=micro, block=2048,
                                                 checkpointing=checkpointing), gpu_memory_gib=80)

    on, off = plan(True), plan(False)
    assert on.fits and not off.fits
    assert off.largest_micro_batch < 4 < on.largest_micro_batch
    assert on.model_states == model_state_bytes(shape, 8, 2)
    assert 30 * GIB < on.model_states < 33 * GIB  # 2P + 18P/8 = 4.25 · 8.03 G bytes
    assert plan(True, on.largest_micro_batch + 1).fits is False


def test_plan_command_prints_the_8b_plan_and_says_what_does_not_fit(repo_root):
    def plan(*extra):
        return subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "plan", "configs/maet-llama3-8b-math.yaml",
                               "--model-config", str(FIXTURES / "llama-3-8b.json"), "--gpu-memory", "80", *extra],
                              cwd=repo_root, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "COLUMNS": "200"})

    fits = plan()
    assert fits.returncode == 0, fits.stdout + fits.stderr
    assert "full CPT" in fits.stdout and "31.8 GiB" in fits.stdout and "does not fit" not in fits.stdout
    refused = plan("probe.train.gradient_checkpointing=false")
    assert refused.returncode == 1
    assert "does not fit: importance probe needs" in " ".join(refused.stdout.split())


def test_run_refuses_a_stage_that_cannot_fit_before_anything_runs(repo_root, tmp_path):
    store = tmp_path / "store"
    done = subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "run", "--store", str(store),
                           "--gpu-memory", "0.05"], cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "demo bootstrap needs" in done.stderr and "--ignore-plan" in done.stderr
    assert "Traceback" not in done.stderr and not store.exists()  # refused before the store was made
