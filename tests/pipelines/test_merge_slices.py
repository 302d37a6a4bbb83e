"""The sliced merge (an elementwise method over fine-tuned model folders, streamed through cache-sized slices):
bitwise equal to the whole-tensor merge and to the fp32 reference rounded once, whatever the slice boundaries,
for bf16, fp16 and fp32 tensors; a NaN in a fine-tune is named with its model and tensor; and the intra-op
thread count is back to what it was afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import linguaforge.pipelines.merging.engine as engine
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.merging.engine import MergeSpec, merge
from linguaforge.pipelines.merging.inputs import MergeInput, ModelDelta
from linguaforge.pipelines.weights import WeightReader

SHAPES = {"model.embed_tokens.weight": ((37, 5), torch.bfloat16), "model.layers.0.mlp.up_proj.weight": ((11, 13),
          torch.float16), "model.norm.weight": ((5,), torch.float32), "lm_head.weight": ((37, 5), torch.bfloat16)}
WEIGHTS = [0.7, -0.35]


def _folder(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True)
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"note": "hand-built"}))
    return path


@pytest.fixture
def models(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {n: torch.randn(shape, generator=g).to(dtype) for n, (shape, dtype) in SHAPES.items()}
    tunes = [{n: (t.float() + torch.randn(t.shape, generator=g) * 0.1).to(t.dtype) for n, t in base.items()}
             for _ in WEIGHTS]
    return tmp_path, base, tunes, [_folder(tmp_path / "base", base)] + [
        _folder(tmp_path / f"tune{i}", t) for i, t in enumerate(tunes)]


def _merge(tmp: Path, folders: list[Path], out: str, lam: float = 0.5) -> dict[str, torch.Tensor]:
    base = WeightReader(folders[0])
    inputs = [MergeInput(f"tune{i}", ModelDelta(f, base, f"tune{i}"), weight=w)
              for i, (f, w) in enumerate(zip(folders[1:], WEIGHTS, strict=True))]
    merge(folders[0], tmp / out, MergeSpec("task_arithmetic", inputs, {"task_vector_lambda": lam}))
    reader = WeightReader(tmp / out)
    return {n: reader.get(n) for n in reader.names()}


@pytest.mark.parametrize("slice_entries", [1, 7, 64, 1 << 18])  # one entry; boundaries mid-row; whole tensors
def test_slices_equal_the_fp32_reference_rounded_once(models, monkeypatch, slice_entries):
    tmp, base, tunes, folders = models
    monkeypatch.setattr(engine, "SLICE_ENTRIES", slice_entries)
    threads = torch.get_num_threads()
    merged = _merge(tmp, folders, "merged")
    assert torch.get_num_threads() == threads
    for n, t in base.items():
        b = t.float()
        expected = b + 0.5 * (WEIGHTS[0] * (tunes[0][n].float() - b) + WEIGHTS[1] * (tunes[1][n].float() - b))
        assert merged[n].dtype == t.dtype and torch.equal(merged[n], expected.to(t.dtype)), n
        assert not torch.equal(merged[n], t), n  # the merge moved every tensor


def test_slices_equal_the_whole_tensor_merge(models, monkeypatch):
    """The same rule, with the model inputs unable to slice (the engine's whole-tensor path): same bits."""
    tmp, _, _, folders = models
    monkeypatch.setattr(engine, "SLICE_ENTRIES", 10)
    sliced = _merge(tmp, folders, "sliced")
    monkeypatch.delattr(ModelDelta, "dense_slice")
    whole = _merge(tmp, folders, "whole")
    assert sliced.keys() == whole.keys() and all(torch.equal(sliced[n], whole[n]) for n in sliced)


def test_a_nan_in_a_fine_tune_is_named_and_nothing_is_left(models, monkeypatch):
    tmp, _, tunes, folders = models
    monkeypatch.setattr(engine, "SLICE_ENTRIES", 16)
    bad = dict(tunes[1])
    bad["lm_head.weight"] = bad["lm_head.weight"].clone()
    bad["lm_head.weight"][30, 2] = float("nan")  # in the last slice but one of the tensor
    folders[2] = _folder(tmp / "bad", bad)
    with pytest.raises(InputError, match=r"model tune1: tensor lm_head.weight has NaN or Inf values"):
        _merge(tmp, folders, "merged")
    assert not (tmp / "merged").exists() and not list(tmp.glob(".merged-*"))
