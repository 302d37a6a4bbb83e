"""Sparse weight deltas: θ_new − θ_base stored as only the entries that changed.

One safetensors file (conventionally `delta.safetensors`), keyed by the base checkpoint's tensor names:

    {name}::idx     int32 (int64 if numel ≥ 2**31) flat indices, sorted      ─┐ element form
    {name}::val     float32 values, same length                              ─┘ (element granularity)
    {name}::rows    int32 indices along dim 0, sorted                        ─┐ row form
    {name}::rowval  float32 [n_rows, *shape[1:]]                             ─┘ (one output unit = one row)
    {name}::dense   float32 full tensor                                        dense form (task vectors)

Unchanged tensors are omitted. Metadata (str → str): `format` = linguaforge.sparse_delta/1, `base_id`
(free text: hub id, path or artifact key), `base_digest` (see `base_weights_digest`), `shapes` and
`dtypes` (JSON, for every tensor of the base, changed or not).

Values are float32 differences computed in float32, so that base.float() + delta reconstructs the
new weights of an fp32 model exactly when the difference is exactly representable (always for bf16
bases, whose values have 8 significant bits).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors import safe_open

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.reproducible import save_tensors
from linguaforge.pipelines.weights import TORCH_DTYPES

FORMAT = "linguaforge.sparse_delta/1"
Form = Literal["auto", "element", "row", "dense"]
_DTYPE_NAMES = {dtype: name for name, dtype in TORCH_DTYPES.items()}


def _index_dtype(numel: int) -> torch.dtype:
    return torch.int64 if numel >= 2**31 else torch.int32


def encode_delta(name: str, delta: torch.Tensor, form: Form = "auto") -> dict[str, torch.Tensor]:
    """The stored entries for one tensor's delta (empty when nothing changed)."""
    delta = delta.detach().float().contiguous()
    changed = delta != 0
    if not changed.any():
        return {}
    if form == "auto":
        form = _smallest_form(delta, changed)
    if form == "dense":
        return {f"{name}::dense": delta}
    if form == "row":
        if delta.ndim < 2:
            return encode_delta(name, delta, "element")
        rows = changed.flatten(1).any(dim=1).nonzero().flatten()
        return {f"{name}::rows": rows.to(torch.int32), f"{name}::rowval": delta[rows].contiguous()}
    idx = changed.flatten().nonzero().flatten()
    return {f"{name}::idx": idx.to(_index_dtype(delta.numel())), f"{name}::val": delta.flatten()[idx].contiguous()}


def _smallest_form(delta: torch.Tensor, changed: torch.Tensor) -> str:
    """The form that stores this delta in the fewest bytes: element (int32 index + float32 value per changed
    entry), row (int32 index + a float32 row per changed row: what row-granularity masked CPT makes, zeros
    included for entries a rounding left unchanged) or dense (float32 per entry)."""
    sizes = {}
    if delta.ndim >= 2:
        rows = int(changed.flatten(1).any(dim=1).sum())
        sizes["row"] = rows * (4 + 4 * delta[0].numel())
    sizes["element"] = int(changed.sum()) * (_index_dtype(delta.numel()).itemsize + 4)
    sizes["dense"] = 4 * delta.numel()
    return min(sizes, key=sizes.get)  # on equal sizes the first listed: fewer indices to merge later


def write_sparse_delta(
    path: str | Path,
    deltas: Iterable[tuple[str, torch.Tensor, torch.Tensor]],
    base_id: str,
    base_digest: str,
    form: Form = "auto",
) -> dict[str, int]:
    """Write θ_new − θ_base for (name, base, new) triples, one tensor at a time; returns nnz per tensor.

    Every base tensor should be passed (changed or not) so that `shapes` describes the whole base."""
    tensors: dict[str, torch.Tensor] = {}
    shapes, dtypes, nnz = {}, {}, {}
    for name, base, new in deltas:
        if base.shape != new.shape:
            raise InputError(f"delta {name}: base shape {tuple(base.shape)} != new shape {tuple(new.shape)}")
        shapes[name] = list(base.shape)
        dtypes[name] = _DTYPE_NAMES.get(base.dtype, str(base.dtype).removeprefix("torch."))
        encoded = encode_delta(name, new.float() - base.float(), form)
        tensors |= encoded
        nnz[name] = _nnz(encoded, name)
    write_encoded(path, tensors, base_id, base_digest, shapes, dtypes)
    return nnz


def write_encoded(path: str | Path, tensors: dict[str, torch.Tensor], base_id: str, base_digest: str,
                  shapes: dict[str, list[int]], dtypes: dict[str, str]) -> None:
    metadata = {"format": FORMAT, "base_id": base_id, "base_digest": base_digest,
                "shapes": json.dumps(shapes), "dtypes": json.dumps(dtypes)}
    save_tensors(tensors, str(path), metadata=metadata)


def _nnz(encoded: dict[str, torch.Tensor], name: str) -> int:
    if f"{name}::dense" in encoded:
        return int((encoded[f"{name}::dense"] != 0).sum())
    if f"{name}::rowval" in encoded:
        return int((encoded[f"{name}::rowval"] != 0).sum())
    if f"{name}::val" in encoded:
        return int(encoded[f"{name}::val"].numel())
    return 0


class SparseDelta:
    """Lazy reader: one tensor at a time, reconstructed to full size on request."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"sparse delta {self.path}: no such file")
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                keys = list(f.keys())
        except Exception as exc:  # safetensors raises its own SafetensorError for truncated or foreign files
            raise InputError(f"sparse delta {self.path}: not a readable safetensors file "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from None
        if meta.get("format") != FORMAT:
            raise InputError(f"sparse delta {self.path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        self.base_id, self.base_digest = meta["base_id"], meta["base_digest"]
        self.shapes = {k: tuple(v) for k, v in json.loads(meta["shapes"]).items()}
        self.dtypes: dict[str, str] = json.loads(meta["dtypes"])
        self._forms: dict[str, str] = {}
        self._keys = keys
        for key in keys:
            name, part = key.rsplit("::", 1)
            self._forms[name] = {"idx": "element", "val": "element", "rows": "row", "rowval": "row",
                                 "dense": "dense"}[part]

    def _get(self, key: str) -> torch.Tensor:
        # opened per read: a memory-mapped file kept open would hold every page read so far in memory
        with safe_open(str(self.path), framework="pt") as f:
            return f.get_tensor(key)

    def names(self) -> list[str]:
        """Tensors that changed, in the base's order."""
        return [n for n in self.shapes if n in self._forms]

    def form(self, name: str) -> str | None:
        return self._forms.get(name)

    def raw(self, name: str) -> dict[str, torch.Tensor]:
        """The stored entries of one tensor (empty for an unchanged one)."""
        return {key: self._get(key) for key in self._keys if key.rsplit("::", 1)[0] == name}

    def dense(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if name not in self.shapes:
            raise KeyError(f"sparse delta {self.path}: no tensor {name!r} in its base")
        out = torch.zeros(self.shapes[name], dtype=torch.float32)
        form = self._forms.get(name)
        if form == "dense":
            out = self._get(f"{name}::dense").float()
        elif form == "row":
            out[self._get(f"{name}::rows").long()] = self._get(f"{name}::rowval")
        elif form == "element":
            out.view(-1)[self._get(f"{name}::idx").long()] = self._get(f"{name}::val")
        return out.to(dtype)

    def nnz(self, name: str) -> int:
        return _nnz(self.raw(name), name) if name in self._forms else 0

    def sparse(self, name: str) -> tuple[str, torch.Tensor, torch.Tensor] | None:
        """("row", row indices, [rows, *shape[1:]] values) or ("element", flat indices, values) as stored, or
        None for a dense or unchanged tensor: what sparse arithmetic needs, without the full tensor."""
        form = self._forms.get(name)
        if form == "row":
            return "row", self._get(f"{name}::rows").long(), self._get(f"{name}::rowval")
        if form == "element":
            return "element", self._get(f"{name}::idx").long(), self._get(f"{name}::val")
        return None

    def check_finite(self) -> None:
        """Raise on NaN/Inf, naming the tensor."""
        for key in self._keys:
            values = self._get(key)
            if not values.is_floating_point():
                continue
            # a sum is NaN/Inf if any value is (one fast pass); only then look closer (it may just overflow)
            if not torch.isfinite(values.sum(dtype=torch.float64)) and not torch.isfinite(values).all():
                raise InputError(f"sparse delta {self.path}: tensor {key.rsplit('::', 1)[0]} has NaN or Inf values")


def check_deltas(deltas: dict[str, SparseDelta], base_digest: str, base_shapes: dict[str, tuple[int, ...]]) -> None:
    """Every delta must be against this base (digest), of this architecture (every shape), and finite."""
    for label, delta in deltas.items():
        if delta.base_digest != base_digest:
            raise InputError(f"delta {label} ({delta.path}) was made against another base model "
                             f"(digest {delta.base_digest[:12]}…, the given base is {base_digest[:12]}…)")
        for name, shape in delta.shapes.items():
            if name not in base_shapes:
                raise InputError(f"delta {label} ({delta.path}) has tensor {name!r}, which the base model lacks")
            if tuple(shape) != tuple(base_shapes[name]):
                raise InputError(f"delta {label} ({delta.path}): tensor {name} is {tuple(shape)}, "
                                 f"{tuple(base_shapes[name])} in the base model")
        delta.check_finite()


def model_weight_files(model_dir: str | Path) -> list[Path]:
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise InputError(f"model {model_dir}: no .safetensors weight files")
    return files


def base_weights_digest(model_dir: str | Path) -> str:
    """A cheap, stable identity of an HF safetensors folder: sha256 over each weight file's name, size and
    header (tensor names, dtypes, shapes and byte offsets) plus its first and last MiB. It tells two models
    apart without hashing gigabytes; the store's per-file sha256 guards content integrity separately."""
    h = hashlib.sha256()
    for path in model_weight_files(model_dir):
        _update_identity(h, path)
    return h.hexdigest()


def file_identity_digest(path: str | Path) -> str:
    """The same identity for one safetensors file (a delta file): name, size, header, first and last MiB."""
    h = hashlib.sha256()
    _update_identity(h, Path(path))
    return h.hexdigest()


def _update_identity(h, path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = f.read(header_len)
        head = f.read(1 << 20)
        f.seek(max(8 + header_len, size - (1 << 20)))
        tail = f.read()
    h.update(f"{path.name}\0{size}\0".encode() + header + head + tail)


class Compact:
    """Several deltas of one tensor on the union U of their supports (rows, or flat entries): elementwise
    arithmetic on these small arrays gives exactly the values a full-size computation gives on U, and zero
    elsewhere — without ever materialising the full tensor."""

    def __init__(self, form: str, support: torch.Tensor, values: list[torch.Tensor]):
        self.form, self.support, self.values = form, support, values

    @classmethod
    def of(cls, deltas: list[SparseDelta], name: str) -> Compact | None:
        """None when some delta stores this tensor dense, or the stored forms differ."""
        parts = [d.sparse(name) if d.form(name) is not None else "absent" for d in deltas]
        if any(p is None for p in parts):
            return None
        present = [p for p in parts if p != "absent"]
        forms = {p[0] for p in present}
        if len(forms) != 1:
            return None
        form = forms.pop()
        shape = deltas[0].shapes[name]
        size = shape[0] if form == "row" else math.prod(shape)
        # the union as a one-byte mask over rows (or entries), read back in order: cheaper than sorting the
        # concatenated indices (numpy's nonzero is several times faster than torch's on CPU)
        member = torch.zeros(size, dtype=torch.bool)
        for p in present:
            member.index_fill_(0, p[1], True)
        support = torch.from_numpy(np.flatnonzero(member.numpy()))
        rest = present[0][2].shape[1:]
        if form == "element":  # spread each delta over a scratch vector and gather it on the union
            scratch = torch.zeros(size, dtype=torch.float32)
        values = []
        for p in parts:
            if p == "absent":
                values.append(torch.zeros((len(support), *rest), dtype=torch.float32))
            elif torch.equal(p[1], support):  # this delta covers the whole union, in order
                values.append(p[2].float())
            elif form == "element":
                scratch.index_copy_(0, p[1], p[2].float())
                values.append(scratch.index_select(0, support))
                scratch.index_fill_(0, p[1], 0.0)
            else:  # few rows: find each one's place in the union by binary search, copy whole rows
                v = torch.zeros((len(support), *rest), dtype=torch.float32)
                values.append(v.index_copy_(0, torch.searchsorted(support, p[1]), p[2].float()))
        return cls(form, support, values)

    def encode(self, name: str, values: torch.Tensor, numel: int) -> dict[str, torch.Tensor]:
        """Stored entries for `values` on U, in this compact's form."""
        if self.form == "row":
            return {f"{name}::rows": self.support.to(torch.int32), f"{name}::rowval": values.contiguous()}
        return {f"{name}::idx": self.support.to(_index_dtype(numel)), f"{name}::val": values.contiguous()}

    def apply(self, original: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """original + update on U (computed in float32, stored in the original's dtype); the rest unchanged.
        Writes into `original` (callers pass a tensor they own, e.g. fresh from a WeightReader)."""
        view = original if self.form == "row" else original.view(-1)
        changed = view.index_select(0, self.support).float() + update
        view.index_copy_(0, self.support, changed.to(original.dtype))
        return original
