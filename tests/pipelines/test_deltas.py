"""The sparse delta format: forms, lazy reconstruction, base identity, bad values."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.merging.deltas import SparseDelta, base_weights_digest, write_sparse_delta


def test_forms_and_exact_reconstruction(tmp_path):
    base = {"rows": torch.randn(6, 4), "elems": torch.randn(5, 5), "dense": torch.randn(3), "same": torch.ones(2)}
    new = {k: v.clone() for k, v in base.items()}
    new["rows"][[1, 4]] += 0.5  # two trained rows, one entry of which kept its value (a rounding, say):
    new["rows"][1, 2] = base["rows"][1, 2]  # row form, 2 x (4 + 4*4) = 40 bytes < 7 entries x 8 = 56
    new["elems"][0, 3] -= 1.0  # scattered: element form
    new["elems"][4, 0] += 2.0
    new["dense"] += 1.0  # everything: dense form
    nnz = write_sparse_delta(tmp_path / "d.safetensors", ((n, base[n], new[n]) for n in base), "base-id", "dig")
    assert nnz == {"rows": 7, "elems": 2, "dense": 3, "same": 0}
    delta = SparseDelta(tmp_path / "d.safetensors")
    assert delta.names() == ["rows", "elems", "dense"]
    assert [delta.form(n) for n in delta.names()] == ["row", "element", "dense"]
    assert (delta.base_id, delta.base_digest, delta.shapes["same"]) == ("base-id", "dig", (2,))
    for name in base:
        assert torch.equal(base[name] + delta.dense(name), new[name]), name
    assert torch.equal(delta.dense("same"), torch.zeros(2))


def test_nan_is_caught_and_digest_tells_models_apart(tmp_path):
    write_sparse_delta(tmp_path / "d.safetensors", [("w", torch.zeros(3), torch.tensor([0.0, float("nan"), 1.0]))],
                       "b", "d", form="dense")
    with pytest.raises(InputError, match="tensor w has NaN or Inf"):
        SparseDelta(tmp_path / "d.safetensors").check_finite()
    for name, value in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        save_file({"w": torch.full((4,), value)}, str(tmp_path / name / "model.safetensors"))
    assert base_weights_digest(tmp_path / "a") != base_weights_digest(tmp_path / "b")
    assert base_weights_digest(tmp_path / "a") == base_weights_digest(tmp_path / "a")
    with pytest.raises(InputError, match="no such file"):
        SparseDelta(tmp_path / "missing.safetensors")
