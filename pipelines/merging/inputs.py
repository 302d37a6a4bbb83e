"""What a merge takes: deltas against one base, each with its weight (and density, for the methods that sparsify).

A delta comes from a sparse delta file (what masked CPT and decompose write) or from a fine-tuned model folder
(an HF hub id, a local or s3:// folder): then θ_model − θ_base is computed on the fly, one tensor at a time,
when the engine asks for it. No model is held in memory and no intermediate file is written.

A weight or density is a number or one of mergekit's per-tensor forms (pipelines/merging/parameters.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.locations import (
    check_model_location,
    is_local,
    is_remote,
    resolve_file,
    resolve_model_dir,
)
from linguaforge.pipelines.merging.deltas import SparseDelta, base_weights_digest
from linguaforge.pipelines.merging.parameters import Setting, setting_value
from linguaforge.pipelines.weights import WeightReader

Role = Literal["ability", "language", "model"]
LORA_CONFIG = "adapter_config.json"


class ModelDelta:
    """θ_model − θ_base of a fine-tuned HF folder, tensor by tensor, read when asked (the same surface as
    SparseDelta for the engine and for decompose: every tensor is "dense")."""

    def __init__(self, model_dir: str | Path, base: WeightReader, label: str, base_label: str = ""):
        self.path, self.label, self.base = Path(model_dir), label, base
        self.model = WeightReader(model_dir)
        self.base_id, self.base_digest = base_label or str(base.dir), base_weights_digest(base.dir)
        self.dtypes = {name: base.dtype(name) for name in base.names()}
        base_shapes = base.shapes()
        self.shapes = self.model.shapes()
        missing = [n for n in base_shapes if n not in self.shapes]
        if missing:
            raise InputError(f"model {label}: lacks tensor {missing[0]!r} of the base ({len(missing)} missing); "
                             "is it a fine-tune of this base?")
        self.extension: dict[str, int] = {}  # vocabulary tensors with rows beyond the base's: how many
        for name, shape in base_shapes.items():
            own = self.shapes[name]
            if own != shape and _vocabulary_rows(name) and own[1:] == shape[1:] and own[0] > shape[0]:
                self.extension[name] = own[0] - shape[0]  # an extended vocabulary: the new tokens' rows
            elif own != shape:
                raise InputError(f"model {label}: tensor {name} is {own}, {shape} in the base; "
                                 "is it a fine-tune of this base?")
        if extra := [n for n in self.shapes if n not in base_shapes]:
            # a rule for them (whose values? against which base?) would be a guess: refused, never dropped silently
            raise InputError(f"model {label}: has {len(extra)} tensor(s) the base lacks (e.g. {extra[0]!r}); "
                             "linguaforge merges the base's tensors only: remove them from the input, or merge onto "
                             "a base that has them")
        self.shapes = base_shapes

    def names(self) -> list[str]:
        return list(self.shapes)

    def prefetch(self, name: str) -> None:
        self.model.prefetch(name)

    def form(self, name: str) -> str:
        return "dense"

    def sparse(self, name: str) -> None:
        return None

    def dense(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        tuned = self.model.get(name)
        if name in self.extension:  # the rows the base has; the new ones are `new_rows`
            tuned = tuned[: self.shapes[name][0]]
        tuned = self._finite(name, tuned.to(torch.float32))
        return tuned.sub_(self.base.float32(name)).to(dtype)

    def new_rows(self, name: str) -> torch.Tensor:
        """The rows of an extended vocabulary tensor beyond the base's, as the fine-tune holds them."""
        return self._finite(name, self.model.get(name)[self.shapes[name][0]:])

    def dense_slice(self, name: str, first: int, base_values: torch.Tensor) -> torch.Tensor:
        """The delta's entries first .. first + len(base_values) - 1 of the flattened tensor (`base_values`: the
        base's, in float32), in float32, in a buffer reused from call to call (see WeightReader.float32_slice)."""
        return self._finite(name, self.model.float32_slice(name, first, base_values.numel())).sub_(base_values)

    def _finite(self, name: str, tuned: torch.Tensor) -> torch.Tensor:
        # a sum is NaN/Inf if any value is (one pass); only then look closer (it may just have overflowed)
        if not torch.isfinite(tuned.sum()) and not torch.isfinite(tuned).all():
            raise InputError(f"model {self.label}: tensor {name} has NaN or Inf values")
        return tuned

    def check_finite(self) -> None:
        """Checked tensor by tensor as the merge reads them (a full pass here would read the model twice)."""


class LoraDelta:
    """scale · B·A of a PEFT LoRA adapter, tensor by tensor as the merge asks (nothing merged on disk): for every
    `<module>.lora_A.weight` / `lora_B.weight` pair, the delta of `<module>.weight` of the base, with
    scale = lora_alpha / r (lora_alpha / √r with rsLoRA), transposed for fan_in_fan_out layers. Tensors the adapter
    does not touch have a zero delta. What a LoRA adapter can hold that is not a low-rank delta (DoDA's magnitudes,
    full copies in modules_to_save, per-module ranks) is refused by name."""

    def __init__(self, folder: str | Path, base: WeightReader, label: str):
        from linguaforge.pipelines.reading import read_json
        from linguaforge.pipelines.weights import SafetensorsFile

        self.path, self.label, self.base = Path(folder), label, base
        config = read_json(str(self.path / LORA_CONFIG), f"LoRA adapter config of {label}")
        if str(config.get("peft_type", "LORA")).upper() != "LORA":
            raise InputError(f"adapter {label}: peft_type {config.get('peft_type')!r}; only LoRA adapters merge")
        for key in ("use_dora", "modules_to_save", "rank_pattern", "alpha_pattern"):
            if config.get(key):
                raise InputError(f"adapter {label}: {key} is set; linguaforge merges plain LoRA deltas only "
                                 "(merge the adapter into its model with PEFT first, then merge that folder)")
        rank, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
        self.scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        self.transposed = bool(config.get("fan_in_fan_out"))
        weights = self.path / "adapter_model.safetensors"
        if not weights.is_file():
            raise InputError(f"adapter {label}: no adapter_model.safetensors (a pickled adapter_model.bin is never "
                             "loaded)")
        self.file = SafetensorsFile(weights)
        base_shapes = base.shapes()
        self.pairs: dict[str, tuple[str, str]] = {}
        for key in self.file.entries:
            if ".lora_A." not in key:
                continue
            module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            name, b_key = f"{module}.weight", key.replace(".lora_A.", ".lora_B.")
            if b_key not in self.file.entries or name not in base_shapes:
                raise InputError(f"adapter {label}: {key} has no matching lora_B, or the base has no {name}")
            self.pairs[name] = (key, b_key)
        if not self.pairs:
            raise InputError(f"adapter {label}: adapter_model.safetensors holds no lora_A / lora_B pair")
        self.shapes = base_shapes
        self._last: tuple[str, torch.Tensor] | None = None

    def names(self) -> list[str]:
        return list(self.pairs)

    def form(self, name: str) -> str | None:
        return "dense" if name in self.pairs else None

    def sparse(self, name: str) -> None:
        return None

    def dense(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if name not in self.pairs:
            return torch.zeros(self.shapes[name], dtype=dtype)
        a_key, b_key = self.pairs[name]
        delta = (self.file.read(b_key).float() @ self.file.read(a_key).float()).mul_(self.scale)
        delta = delta.T if self.transposed else delta
        if tuple(delta.shape) != tuple(self.shapes[name]):
            raise InputError(f"adapter {self.label}: B·A of {name} is {tuple(delta.shape)}, the base tensor "
                             f"{tuple(self.shapes[name])}")
        return delta.contiguous().to(dtype)

    def dense_slice(self, name: str, first: int, base_values: torch.Tensor) -> torch.Tensor:
        if self._last is None or self._last[0] != name:
            self._last = (name, self.dense(name))
        return self._last[1].view(-1)[first: first + base_values.numel()].clone()

    def check_finite(self) -> None:
        for name in self.pairs:
            if not torch.isfinite(self.dense(name)).all():
                raise InputError(f"adapter {self.label}: the delta of {name} has NaN or Inf values")


class WithNewRows:
    """A delta made from a vocabulary-extending model (MAET's R(L_i), decomposed from it), still carrying that
    model's new tokens: the merge adds their rows and tokenizer by the same rule as for the model itself."""

    def __init__(self, delta, source: ModelDelta):
        self._delta, self.source = delta, source
        self.extension, self.path = source.extension, source.path

    def new_rows(self, name: str) -> torch.Tensor:
        return self.source.new_rows(name)

    def __getattr__(self, name: str):
        return getattr(self._delta, name)


class SumDelta:
    """Several deltas of one input added (mergekit's `model+lora`: the model's delta and its adapter's)."""

    def __init__(self, parts: list, label: str):
        self.parts, self.label, self.path = parts, label, parts[0].path

    def names(self) -> list[str]:
        return list(dict.fromkeys(n for part in self.parts for n in part.names()))

    def form(self, name: str) -> str | None:
        return "dense" if name in self.names() else None

    def sparse(self, name: str) -> None:
        return None

    def dense(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        total = self.parts[0].dense(name, torch.float32)
        for part in self.parts[1:]:
            total += part.dense(name, torch.float32)
        return total.to(dtype)

    def dense_slice(self, name: str, first: int, base_values: torch.Tensor) -> torch.Tensor:
        total = self.parts[0].dense_slice(name, first, base_values).clone()
        for part in self.parts[1:]:
            total += part.dense_slice(name, first, base_values)
        return total

    def check_finite(self) -> None:
        for part in self.parts:
            part.check_finite()


def _vocabulary_rows(name: str) -> bool:
    """A tensor with a row per token (the input embedding, the LM head): the only ones a vocabulary extends."""
    return name.endswith(("embed_tokens.weight", "lm_head.weight", "wte.weight", "word_embeddings.weight"))


def weights_folder(uri: str, cache_dir: str | Path, storage_options: dict | None = None, what: str = "model") -> str:
    """A local folder holding a model's safetensors: the folder itself, a remote folder copied once into the cache,
    or an HF hub repository's weights and configs (snapshot_download, which uses the hub's own cache)."""
    if is_remote(uri):
        return resolve_model_dir(uri, cache_dir, storage_options)
    check_model_location(uri, what)
    if is_local(uri):
        return str(Path(uri).expanduser())
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(uri, allow_patterns=["*.safetensors", "*.json", "*.model", "*.txt", "*.tiktoken"])
    except Exception as exc:  # the hub client's errors: no network, no such repo, gated
        raise InputError(f"{what} {uri}: could not fetch it from the HF hub ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None


def open_delta(uri: str, base: WeightReader, cache_dir: str | Path, storage_options: dict | None = None,
               base_label: str = ""):
    """A `.safetensors` file is a sparse delta (as masked CPT writes them); a folder with adapter_config.json a LoRA
    adapter (its delta scale · B·A); `model+adapter` (mergekit's syntax) the model's delta plus its adapter's;
    anything else a fine-tuned model (folder, s3:// folder or hub id) whose delta against `base` is computed as the
    merge reads it."""
    if uri.endswith(".safetensors"):
        return SparseDelta(resolve_file(uri, cache_dir, storage_options))
    if "+" in uri and not Path(uri).exists():
        model, adapter = uri.rsplit("+", 1)
        lora = LoraDelta(weights_folder(adapter, cache_dir, storage_options, "adapter"), base, adapter)
        model_dir = weights_folder(model, cache_dir, storage_options)
        if os.path.realpath(model_dir) == os.path.realpath(base.dir):  # the adapter sits on the base itself
            return lora
        return SumDelta([ModelDelta(model_dir, base, model, base_label), lora], uri)
    folder = weights_folder(uri, cache_dir, storage_options)
    if (Path(folder) / LORA_CONFIG).is_file():
        return LoraDelta(folder, base, uri)
    return ModelDelta(folder, base, uri, base_label)


@dataclass
class MergeInput:
    """One delta of a merge, with its per-input settings (mergekit's tensor parameters)."""

    label: str
    delta: SparseDelta | ModelDelta
    role: Role = "model"
    weight: Setting = 1.0
    density: Setting | None = None

    def weight_of(self, name: str, t: float) -> float:
        return setting_value(self.weight, name, t, f"{self.label}: weight")

    def density_of(self, name: str, t: float, default: float) -> float:
        if self.density is None:
            return default
        return setting_value(self.density, name, t, f"{self.label}: density")
