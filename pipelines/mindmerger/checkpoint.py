"""Mapping weights on disk: the official `pytorch_model.bin` layout, and ours (safetensors + JSON metadata).

Official checkpoints are a torch-saved dict `{"model_state_dict": {mlp.linear1.weight, mlp.linear1.bias,
mlp.linear2.weight, mlp.linear2.bias, end_boundary}}`, usually bf16 and in the legacy (non-zip) format.
They are read with `torch.load(weights_only=True)` — the only unpickling in linguaforge, and one that
refuses anything but tensors and plain containers — and checked strictly: every key present, no other
key, every shape the one the encoder and LLM at hand imply. A checkpoint that loads "non-strictly" would
leave part of the mapping at its random initialisation and nobody would notice until the scores.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.mindmerger.model import Mapping
from linguaforge.pipelines.reproducible import save_tensors

log = logging.getLogger("linguaforge.mindmerger")
OFFICIAL_FILE = "pytorch_model.bin"
MAPPING_FILE, META_FILE = "mapping.safetensors", "mapping.json"


def expected_shapes(d_enc: int, d_llm: int) -> dict[str, tuple[int, ...]]:
    return {"mlp.linear1.weight": (2 * d_enc, d_enc), "mlp.linear1.bias": (2 * d_enc,),
            "mlp.linear2.weight": (d_llm, 2 * d_enc), "mlp.linear2.bias": (d_llm,),
            "end_boundary": (1, 1, d_llm)}


def check_mapping_state(state: dict[str, Any], d_enc: int, d_llm: int, where: str) -> None:
    """Raise an InputError naming every missing key, extra key and wrong shape of a mapping state dict."""
    expected = expected_shapes(d_enc, d_llm)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        raise InputError(f"mapping checkpoint {where}: {'; '.join(parts)} (a MindMerger mapping has exactly "
                         f"{sorted(expected)})")
    for key, value in state.items():
        if not torch.is_tensor(value):
            raise InputError(f"mapping checkpoint {where}: {key} is a {type(value).__name__}, not a tensor")
    wrong = {k: tuple(state[k].shape) for k in expected if tuple(state[k].shape) != expected[k]}
    if wrong:
        got_enc = state["mlp.linear1.weight"].shape[-1]
        got_llm = state["mlp.linear2.weight"].shape[0]
        raise InputError(
            f"mapping checkpoint {where} maps encoder width {got_enc} → LLM width {got_llm}, but the encoder "
            f"gives {d_enc}-wide states and the LLM takes {d_llm}-wide embeddings (shapes {wrong}, expected "
            f"{ {k: expected[k] for k in wrong} }): it was trained for another encoder or LLM")


# -- the official format -------------------------------------------------------------------------------
def load_official_checkpoint(path: str | Path, d_enc: int, d_llm: int) -> dict[str, torch.Tensor]:
    """The mapping state of an official `pytorch_model.bin`, strictly checked, as float32."""
    path = Path(path)
    if path.is_dir():
        path = path / OFFICIAL_FILE
    if not path.is_file():
        raise InputError(f"mapping checkpoint {path}: no such file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise InputError(f"mapping checkpoint {path} is not a torch checkpoint of plain tensors "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model_state_dict"), dict):
        found = sorted(raw)[:10] if isinstance(raw, dict) else type(raw).__name__
        raise InputError(f"mapping checkpoint {path}: expected a dict with 'model_state_dict' (the official "
                         f"layout), found {found}")
    state = raw["model_state_dict"]
    check_mapping_state(state, d_enc, d_llm, str(path))
    return {k: v.float().contiguous() for k, v in state.items()}


def export_official_checkpoint(mapping: Mapping, path: str | Path, dtype: torch.dtype = torch.bfloat16,
                               legacy: bool = False) -> Path:
    """Our mapping in the official layout (bf16), loadable by the official code's
    `torch.load(...)['model_state_dict']`. In torch's zip format by default, which is byte-reproducible;
    the legacy format the official release uses (`legacy=True`) keys storages by memory address, so its
    bytes, and the artifact's digest, would change on every run. torch.load reads both."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in mapping.state_dict().items()}
    torch.save({"model_state_dict": state}, path, _use_new_zipfile_serialization=not legacy)
    return path


# -- ours: safetensors + metadata --------------------------------------------------------------------------
@dataclass
class MappingMeta:
    encoder: str  # identity: the HF id or path the encoder was loaded from
    llm: str
    d_enc: int
    d_llm: int
    stage: str  # mapping | augmentation | official
    step: int
    dev_ppl: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def save_mapping(mapping: Mapping, folder: str | Path, meta: MappingMeta) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d_enc, d_llm = mapping.dims
    if (meta.d_enc, meta.d_llm) != (d_enc, d_llm):
        raise InputError(f"mapping metadata says {meta.d_enc} → {meta.d_llm}, the weights map {d_enc} → {d_llm}")
    state = {k: v.detach().cpu().contiguous() for k, v in mapping.state_dict().items()}
    save_tensors(state, folder / MAPPING_FILE, metadata={"stage": meta.stage, "step": str(meta.step)})
    (folder / META_FILE).write_text(json.dumps(asdict(meta), indent=2))
    return folder


def read_meta(folder: str | Path) -> MappingMeta:
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise InputError(f"mapping folder {folder}: no {META_FILE}")
    return MappingMeta(**json.loads(path.read_text()))


def load_mapping(folder: str | Path, d_enc: int, d_llm: int, encoder: str | None = None,
                 llm: str | None = None) -> tuple[dict[str, torch.Tensor], MappingMeta]:
    """A mapping saved by `save_mapping`, checked against the dims of the encoder and LLM it will join."""
    folder = Path(folder)
    meta = read_meta(folder)
    if (meta.d_enc, meta.d_llm) != (d_enc, d_llm):
        raise InputError(f"mapping {folder} was trained for encoder {meta.encoder} (width {meta.d_enc}) and LLM "
                         f"{meta.llm} (width {meta.d_llm}), but the encoder here gives {d_enc} and the LLM "
                         f"takes {d_llm}")
    for side, recorded, given in (("encoder", meta.encoder, encoder), ("LLM", meta.llm, llm)):
        if given is not None and given != recorded:
            log.warning("mapping %s was trained with %s %s; loading it for %s (same width)", folder, side,
                        recorded, given)
    state = load_file(str(folder / MAPPING_FILE))
    check_mapping_state(state, d_enc, d_llm, str(folder / MAPPING_FILE))
    return state, meta
