"""The streaming merge engine: any registered method (pipelines/merging/methods/) over deltas against one base,
into an HF folder.

The method's plan runs first (MAET computes Eq. 4's similarities there, one tensor at a time); then each base
tensor is read, the method's rule turns it into τ̃ (in float32, rounded once to the output dtype), and the
shard writer streams it to disk, so memory holds the few tensors in hand, never a model or a shard. The output (sharded safetensors + index, config, tokenizer,
generation config, and a model card README.md) is written into a temporary folder next to the target and
moved into place only when complete.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.interrupt import check_stop
from linguaforge.pipelines.merging.card import write_model_card
from linguaforge.pipelines.merging.deltas import SparseDelta, base_weights_digest, check_deltas
from linguaforge.pipelines.merging.inputs import MergeInput
from linguaforge.pipelines.merging.methods import METHODS, ElementwiseRule, PlanContext
from linguaforge.pipelines.merging.settings import MergeConfig, language_weights
from linguaforge.pipelines.publish import OutputTransaction, check_output_folder  # noqa: F401 - re-exported
from linguaforge.pipelines.threads import intra_op_threads
from linguaforge.pipelines.weights import DTYPES as DTYPES_BY_NAME
from linguaforge.pipelines.weights import TORCH_DTYPES, ShardedWriter, WeightReader, copy_non_weight_files

SLICE_ENTRIES = 1 << 18  # an elementwise merge's slice: 1 MB of float32 per input, in cache while worked on


@dataclass
class MergeSpec:
    """What to merge and how: a registered method, its parameters, the deltas with their weights, the seed, and
    the output dtype (None: each tensor keeps the base's)."""

    method: str
    inputs: list[MergeInput]
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    dtype: str | None = None

    @classmethod
    def of(cls, config: MergeConfig, method: str, ability: SparseDelta, languages: dict[str, SparseDelta],
           seed: int) -> MergeSpec:
        """A MAET run's merge: R(A) (or the full-CPT delta) and the language deltas R(L_i), weighted by μ_i."""
        mu = language_weights(config.mu, list(languages))  # a word, the weights, or {} for 1.0 each
        if languages and set(mu) != set(languages):
            missing, extra = set(languages) - set(mu), set(mu) - set(languages)
            raise InputError(f"merge.mu must name exactly the target languages {sorted(languages)}: "
                             f"missing {sorted(missing)}, extra {sorted(extra)}")
        inputs = [MergeInput("ability", ability, "ability")] + [
            MergeInput(f"language {code}", delta, "language", mu[code])
            for code, delta in languages.items()]
        return cls(method, inputs, config.method_params(method), seed)

    @classmethod
    def pipeline(cls, method: str = "maet", ability: SparseDelta | None = None,
                 languages: dict[str, SparseDelta] | None = None, seed: int = 0, **settings: Any) -> MergeSpec:
        """`of` from keyword settings (checked as MergeConfig fields), for callers without a run configuration."""
        try:
            config = MergeConfig(method=method, **settings)
        except ValidationError as exc:
            raise InputError("; ".join(f"merge.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                             ) from None
        if ability is None:
            raise InputError(f"merge ({method}) needs an ability delta")
        return cls.of(config, method, ability, languages or {}, seed)

    @property
    def languages(self) -> list[str]:
        return [i.label.removeprefix("language ") for i in self.inputs if i.role == "language"]


def check_spec(spec: MergeSpec, base_shapes: dict[str, tuple[int, ...]], expected_languages: list[str] | None) -> None:
    if spec.method not in METHODS:
        raise InputError(f"merge method {spec.method!r} is not one of {', '.join(METHODS)}")
    method = METHODS[spec.method]
    if not spec.inputs:
        raise InputError(f"merge ({spec.method}) needs at least one delta or model")
    roles = [i.role for i in spec.inputs]
    if method.roles and roles.count("ability") != 1:
        raise InputError(f"merge ({spec.method}) needs one ability delta, got {roles.count('ability')}")
    if method.roles and "language" not in roles:
        raise InputError(f"merge ({spec.method}) needs at least one language delta")
    if expected_languages is not None and set(spec.languages) != set(expected_languages):
        raise InputError(f"language deltas {sorted(spec.languages)} do not match the languages "
                         f"{sorted(expected_languages)}")
    if spec.dtype is not None and spec.dtype not in TORCH_DTYPES:
        raise InputError(f"merge dtype {spec.dtype!r} is not one of {', '.join(TORCH_DTYPES)}")
    if "density" not in method.input_parameters:
        dense_only = [i.label for i in spec.inputs if i.density is not None]
        if dense_only:
            raise InputError(f"merge ({spec.method}) has no per-input density, but {dense_only[0]} sets one")


def merge(base_dir: str | Path, out_dir: str | Path, spec: MergeSpec, shard_bytes: int = 2 * 1024**3,
          expected_languages: list[str] | None = None,
          progress: Callable[[int, int, dict[str, Any]], None] | None = None,
          replace: bool = False, base_label: str | None = None) -> dict[str, Any]:
    """Merge into an HF folder at `out_dir`, as one transaction (pipelines/publish.py): built beside it, locked
    while written, swapped in whole, so that a kill leaves the complete old folder or the complete new one.
    The folder gets a model card naming `base_label` (the hub id or URL the base came from; default its folder).
    Returns the report: method, counts, and what the method chose (MAET: per-tensor similarity and family, T).

    An `out_dir` that holds files is refused, unless `replace`: then the files the merge writes replace those of
    the same name, and the others are kept. An output that is, holds or lies inside an input is refused."""
    inputs = [base_dir, *(i.delta.path for i in spec.inputs)]
    with OutputTransaction(out_dir, replace, inputs) as tx:
        report = write_merge(base_dir, tx.work, spec, shard_bytes, expected_languages, progress, base_label)
        tx.publish()
    return report


def write_merge(base_dir: str | Path, folder: Path, spec: MergeSpec, shard_bytes: int = 2 * 1024**3,
                expected_languages: list[str] | None = None,
                progress: Callable[[int, int, dict[str, Any]], None] | None = None,
                base_label: str | None = None, reproduce: dict[str, Any] | None = None) -> dict[str, Any]:
    """The merge into `folder`, which must not exist yet (a staging folder: the store's, or a transaction's).
    Every output tensor is checked finite as it streams: a NaN or Inf stops the merge, naming the tensor.
    `reproduce`: the configuration that made it, for the model card."""
    base = WeightReader(base_dir)
    shapes = base.shapes()
    check_spec(spec, shapes, expected_languages)
    files = {i.label: i.delta for i in spec.inputs if isinstance(i.delta, SparseDelta)}
    if files:  # a model folder's delta is taken against this base by construction; a file's must match it
        check_deltas(files, base_weights_digest(base_dir), shapes)

    context = PlanContext(base=base, seed=spec.seed, report={"method": spec.method, "tensors": len(shapes)})
    merged = METHODS[spec.method].plan(spec.inputs, spec.params, context)
    dtype = TORCH_DTYPES[spec.dtype] if spec.dtype else None
    extended = vocabulary_extensions(spec)
    layout = [(n, _out_dtype(base, n, dtype), _grown(n, shapes[n], extended)) for n in base.names()]
    folder = Path(folder)
    folder.mkdir(parents=True)
    writer = ShardedWriter(folder, shard_bytes, layout=layout)
    _stream(writer, base, merged, spec, layout, progress, extended)
    context.report["files"] = writer.close()
    copy_non_weight_files(base_dir, folder)
    if extended:
        _take_vocabulary(folder, extended, context.report)
    if spec.dtype:
        _set_config_dtype(folder / "config.json", spec.dtype)
    write_model_card(folder / "README.md", spec, base_dir, context.report, base_label, reproduce)
    return context.report


def vocabulary_extensions(spec: MergeSpec) -> dict[str, MergeInput]:
    """The vocabulary tensors an input extends (a fine-tune that added tokens), and which input: the rows the base
    has are merged as any tensor's; the new rows are that input's own. Two inputs that both extend a vocabulary
    would each bring their own tokens for the same new ids: refused."""
    extended: dict[str, MergeInput] = {}
    for item in spec.inputs:
        for name in getattr(item.delta, "extension", {}):
            if name in extended:
                raise InputError(f"merge: {extended[name].label} and {item.label} both extend the vocabulary "
                                 f"({name}); their new tokens would share ids: merge one of them, then the other's "
                                 "tokens into the result")
            extended[name] = item
    return extended


def _grown(name: str, shape: tuple[int, ...], extended: dict[str, MergeInput]) -> tuple[int, ...]:
    """A tensor's output shape: the base's, plus the new tokens' rows where an input extends the vocabulary."""
    return shape if name not in extended else (shape[0] + extended[name].delta.extension[name], *shape[1:])


def _take_vocabulary(folder: Path, extended: dict[str, MergeInput], report: dict[str, Any]) -> None:
    """The extending input's tokenizer (its new tokens) and vocabulary size go with the merged folder."""
    item = next(iter(extended.values()))
    source = item.delta.path
    for path in source.iterdir():
        if path.is_file() and ("token" in path.name or path.name in ("vocab.json", "merges.txt", "vocab.txt")):
            shutil.copy2(path, folder / path.name)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = json.loads((source / "config.json").read_text())["vocab_size"]
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    report["extended_vocabulary"] = {"from": item.label, "tensors": {n: i.delta.extension[n]
                                                                     for n, i in extended.items()},
                                     "vocab_size": config["vocab_size"]}


def _stream(writer: ShardedWriter, base: WeightReader, merged, spec: MergeSpec, layout: list,
            progress: Callable[[int, int, dict[str, Any]], None] | None,
            extended: dict[str, MergeInput] | None = None) -> None:
    """Each base tensor read, τ̃ made by the method's rule (untouched tensors as they are), checked, written; an
    extended vocabulary tensor gets the extending input's new rows after the merged ones."""
    extended = extended or {}
    changed = set().union(*(set(i.delta.names()) for i in spec.inputs))
    sliced = isinstance(merged, ElementwiseRule) and merged.sliceable
    # a whole-tensor merge reads the next tensor while it makes this one; a sliced one reads slice by slice
    readers = [] if sliced else [base] + [i.delta for i in spec.inputs if hasattr(i.delta, "prefetch")]
    # a slice's operations are too short to gain from a second thread, whose spinning between them takes
    # the core the shard writer needs: merge CLI on the 1.1 B bench, 2 cores, 4 interleaved runs, shards
    # written through the page cache: 8.7-10.7 s on one thread against 11.0-14.6 s on two (2026-12-04)
    with intra_op_threads(1) if sliced else nullcontext():
        for done, (name, out_dtype, _) in enumerate(layout, 1):
            check_stop("merging")
            shape = base.shape(name)
            if sliced and name in changed:
                tensor = _merged_in_slices(merged, base, name, shape, out_dtype)
            else:
                original = base.get(name)
                for reader in readers if done < len(layout) else []:
                    reader.prefetch(layout[done][0])
                tensor = merged(name, original) if name in changed else original  # untouched: as is
            if name in extended:
                tensor = torch.cat([tensor.to(out_dtype), extended[name].delta.new_rows(name).to(out_dtype)])
            writer.add(name, _finite(name, tensor.to(out_dtype), base))
            if progress is not None:
                progress(done, len(layout), {})


def _finite(name: str, tensor: torch.Tensor, base: WeightReader) -> torch.Tensor:
    """A NaN or Inf in the output stops the merge (nothing is published). The sum is one cheap pass; only when it
    is not finite (a NaN, an Inf, or a float16 sum that merely overflowed) is every entry looked at."""
    if not tensor.is_floating_point() or torch.isfinite(tensor.sum()) or torch.isfinite(tensor).all():
        return tensor
    bad = int((~torch.isfinite(tensor)).sum())
    origin = ("the base model holds NaN or Inf there" if not torch.isfinite(base.get(name).float()).all()
              else "the merged values overflow the output dtype, or an input holds NaN or Inf")
    raise InputError(f"merged tensor {name}: {bad} of {tensor.numel()} values are NaN or Inf ({origin}); "
                     "nothing was written to the output")


def _merged_in_slices(rule: ElementwiseRule, base: WeightReader, name: str, shape: tuple[int, ...],
                      out_dtype: torch.dtype) -> torch.Tensor:
    """τ̃ made SLICE_ENTRIES entries at a time, each slice rounded once into the output tensor."""
    out = torch.empty(shape, dtype=out_dtype)
    flat = out.view(-1)
    for first in range(0, flat.numel(), SLICE_ENTRIES):
        original = base.float32_slice(name, first, min(SLICE_ENTRIES, flat.numel() - first))
        flat[first:first + original.numel()].copy_(rule.slice(name, first, original))
    return out


def _out_dtype(base: WeightReader, name: str, dtype: torch.dtype | None) -> torch.dtype:
    stored = DTYPES_BY_NAME[base.dtype(name)]
    return dtype if dtype is not None and stored.is_floating_point else stored


def _set_config_dtype(path: Path, dtype: str) -> None:
    """The config's dtype follows the weights (transformers loads `torch_dtype: auto` by it)."""
    if path.is_file():
        config = json.loads(path.read_text())
        config["torch_dtype"] = dtype
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
