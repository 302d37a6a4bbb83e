"""Mapping checkpoints: an official-format `pytorch_model.bin` (legacy torch format, bf16, written here with
torch.save as the official code does) loads strictly and round-trips; missing keys, extra keys and dims
that disagree with the encoder and LLM are clear errors."""

from __future__ import annotations

import zipfile

import pytest
import torch

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.mindmerger.checkpoint import (
    MappingMeta,
    export_official_checkpoint,
    load_mapping,
    load_official_checkpoint,
    save_mapping,
)
from linguaforge.pipelines.mindmerger.model import Mapping
from linguaforge.pipelines.mindmerger.train import ModelPair, build_model
from tests.pipelines.mindmerger_common import one_torch_thread  # noqa: F401  (autouse fixture)

D_ENC, D_LLM = 32, 32  # the demo test models


def official_state(d_enc=D_ENC, d_llm=D_LLM) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {"mlp.linear1.weight": torch.randn(2 * d_enc, d_enc, generator=g).bfloat16(),
            "mlp.linear1.bias": torch.randn(2 * d_enc, generator=g).bfloat16(),
            "mlp.linear2.weight": torch.randn(d_llm, 2 * d_enc, generator=g).bfloat16(),
            "mlp.linear2.bias": torch.randn(d_llm, generator=g).bfloat16(),
            "end_boundary": torch.randn(1, 1, d_llm, generator=g).bfloat16()}


def write_official(path, state):
    torch.save({"model_state_dict": state}, path, _use_new_zipfile_serialization=False)
    return path


def test_official_checkpoint_round_trips_and_loads_strictly(tmp_path, demo_assets):
    state = official_state()
    path = write_official(tmp_path / "pytorch_model.bin", state)
    assert not zipfile.is_zipfile(path)  # the legacy format, as released
    loaded = load_official_checkpoint(path, D_ENC, D_LLM)
    assert all(loaded[k].dtype == torch.float32 and torch.equal(loaded[k], state[k].float()) for k in state)

    # into a model built from the encoder + LLM, then exported again in the same layout
    model = build_model(ModelPair(str(demo_assets["encoder"]), str(demo_assets["llm"])), init=tmp_path)
    assert torch.equal(model.mapping.end_boundary, state["end_boundary"].float())
    out = export_official_checkpoint(model.mapping, tmp_path / "again" / "pytorch_model.bin", legacy=True)
    assert not zipfile.is_zipfile(out)
    raw = torch.load(out, weights_only=True)
    assert set(raw) == {"model_state_dict"}
    assert all(torch.equal(raw["model_state_dict"][k], state[k]) for k in state)  # bf16 → fp32 → bf16 exact
    zipped = export_official_checkpoint(model.mapping, tmp_path / "zip.bin")  # the default: reproducible bytes
    assert zipfile.is_zipfile(zipped) and load_official_checkpoint(zipped, D_ENC, D_LLM).keys() == state.keys()
    again = export_official_checkpoint(model.mapping, tmp_path / "twice" / "zip.bin")  # the name enters the bytes
    assert again.read_bytes() == zipped.read_bytes()


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("end_boundary"), r"missing \['end_boundary'\]"),
    (lambda s: s.update({"mlp.linear3.weight": torch.zeros(2)}), r"unexpected \['mlp.linear3.weight'\]"),
    (lambda s: s.update(official_state(d_enc=48)), r"maps encoder width 48 → LLM width 32, but the encoder gives 32"),
    (lambda s: s.update(official_state(d_llm=64)), r"LLM width 64, .* the LLM takes 32-wide"),
])
def test_bad_official_checkpoints(tmp_path, change, message):
    state = official_state()
    change(state)
    path = write_official(tmp_path / "pytorch_model.bin", state)
    with pytest.raises(InputError, match=message):
        load_official_checkpoint(path, D_ENC, D_LLM)


def test_not_an_official_layout(tmp_path):
    torch.save(official_state(), tmp_path / "flat.bin")
    with pytest.raises(InputError, match=r"expected a dict with 'model_state_dict'"):
        load_official_checkpoint(tmp_path / "flat.bin", D_ENC, D_LLM)
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"junk.bin is not a torch checkpoint"):
        load_official_checkpoint(tmp_path / "junk.bin", D_ENC, D_LLM)


def test_safetensors_mapping_with_metadata(tmp_path):
    mapping = Mapping(D_ENC, D_LLM)
    meta = MappingMeta(encoder="enc-x", llm="llm-y", d_enc=D_ENC, d_llm=D_LLM, stage="mapping", step=12, dev_ppl=3.5)
    save_mapping(mapping, tmp_path / "m", meta)
    state, read = load_mapping(tmp_path / "m", D_ENC, D_LLM)
    assert read == meta
    assert all(torch.equal(state[k], v) for k, v in mapping.state_dict().items())
    with pytest.raises(InputError, match=r"trained for encoder enc-x \(width 32\) and LLM llm-y \(width 32\), "
                                         r"but the encoder here gives 32 and the LLM takes 4096"):
        load_mapping(tmp_path / "m", D_ENC, 4096)
