"""Eq. 1: neuron importance after a short probe CPT, top-k1 % key-neuron selection, and the mask format.

importance(neuron) = |θ' − θ| (`value_change`: the paper's proxy), or |Σ_t g_t| (`gradient`: the gradient
accumulated over the probe's steps, Eq. 1's definition; under AdamW the proxy fails: Adam moves any coordinate
whose gradient keeps one sign by about the learning rate a step, whatever the gradient's size, so the rows of
tokens absent from the corpus, pushed down a little every step, rank first), where a neuron is
- `row` granularity: one output unit of a weight matrix (row i of a [out, in] tensor), scored by the L2
  norm of its row delta; 1-D tensors (norms, biases) count each element as a neuron;
- `element` granularity: each scalar.

Selection keeps exactly k = ceil(k1 % × neurons) neurons, globally or per tensor. Ties at the threshold
are broken by tensor order, then index (ascending), so the choice is deterministic. The global selection
never sorts the whole model: a log-scale histogram pass finds the bin holding the k-th score, and only
that bin's values are sorted; memory stays a few tensors, whatever the model size.

Mask file (safetensors): `{name}` → uint8 packed bits of the flattened neuron mask; metadata `format`,
`granularity`, `shapes` (full tensor shapes), `selected` (per-tensor counts) and `k1_percent`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.reproducible import save_tensors

MASK_FORMAT = "linguaforge.neuron_mask/1"
MASK_FILE = "mask.safetensors"  # a probe artifact's mask
_BINS = 1 << 16


def neuron_scores(delta: torch.Tensor, granularity: str, inplace: bool = False) -> torch.Tensor:
    """Importance of every neuron of one tensor from its delta θ' − θ (`inplace`: delta may be overwritten)."""
    delta = delta.float()
    if granularity == "element" or delta.ndim < 2:
        return (delta.abs_() if inplace else delta.abs()).flatten()
    if granularity == "row":
        return torch.linalg.vector_norm(delta.flatten(1), dim=1)
    raise InputError(f"granularity {granularity!r} is not one of row, element")


def neuron_count(shape: tuple[int, ...], granularity: str) -> int:
    return shape[0] if granularity == "row" and len(shape) >= 2 else math.prod(shape)


@dataclass
class ScoreSource:
    """Recomputes one tensor's neuron scores on demand, so that no pass holds more than a tensor or two."""

    names: list[str]
    shapes: dict[str, tuple[int, ...]]
    scores: Callable[[str], torch.Tensor]


def delta_score_source(names: Iterable[str], base: Callable[[str], torch.Tensor],
                       probed: Callable[[str], torch.Tensor], granularity: str) -> ScoreSource:
    names = list(names)
    shapes = {n: tuple(base(n).shape) for n in names}

    def scores(name: str) -> torch.Tensor:
        # a private fp32 copy of the base takes the subtraction and the abs in place: two tensors at most
        delta = base(name).float().clone().sub_(probed(name).float())
        return neuron_scores(delta, granularity, inplace=True)

    return ScoreSource(names, shapes, scores)


class GradientSum:
    """Σ_t g_t per parameter over a probe's steps (a TorchBackend gradient observer), in float32 on the CPU."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.sums.clear()

    def __call__(self, named_params) -> None:
        for name, param in named_params:
            if param.grad is not None:
                grad = param.grad.detach().float().cpu()
                if name in self.sums:
                    self.sums[name] += grad
                else:
                    self.sums[name] = grad.clone()

    def score_source(self, names: Iterable[str], granularity: str) -> ScoreSource:
        names = [n for n in names if n in self.sums]
        return ScoreSource(names, {n: tuple(self.sums[n].shape) for n in names},
                           lambda name: neuron_scores(self.sums[name], granularity))


def mask_anatomy(mask: NeuronMask, family_of: Callable[[str], str | None], corpus_tokens: set[int] | None) -> dict:
    """What a mask selected, at a glance: per tensor family the share of its neurons selected; and for the rows
    of the token embedding and the LM head, the share whose tokens occur in the probe's corpus (a mask of absent
    tokens' rows has learned nothing about the corpus)."""
    selected: dict[str, int] = {}
    total: dict[str, int] = {}
    in_corpus: dict[str, list[int]] = {}
    for name, neurons in mask.masks.items():
        family = family_of(name) or "other"
        selected[family] = selected.get(family, 0) + int(neurons.sum())
        total[family] = total.get(family, 0) + neurons.numel()
        if corpus_tokens is not None and family in ("embed", "lm_head") and mask.granularity == "row":
            rows = neurons.nonzero().flatten().tolist()
            hits = in_corpus.setdefault(family, [0, 0])
            hits[0] += sum(r in corpus_tokens for r in rows)
            hits[1] += len(rows)
    all_selected = sum(selected.values()) or 1
    anatomy = {"share_of_selected": {f: round(selected[f] / all_selected, 4) for f in sorted(selected)},
               "share_of_family_selected": {f: round(selected[f] / total[f], 4) for f in sorted(total)}}
    for family, (hits, rows) in in_corpus.items():
        anatomy[f"{family}_rows_selected"] = rows
        anatomy[f"{family}_rows_in_corpus"] = round(hits / rows, 4) if rows else None
    return anatomy


def check_k1(k1_percent: float) -> None:
    if not (0 < k1_percent <= 100) or math.isnan(k1_percent):
        raise InputError(f"k1 must be in (0, 100] percent, got {k1_percent}")


def select_top_k(source: ScoreSource, k1_percent: float, granularity: str,
                 selection: str = "global") -> dict[str, torch.Tensor]:
    """Boolean neuron masks (one 1-D tensor per name) selecting exactly the top k1 % neurons."""
    check_k1(k1_percent)
    if selection == "per_tensor":
        return {n: _top_in_tensor(source.scores(n), k1_percent) for n in source.names}
    if selection != "global":
        raise InputError(f"selection {selection!r} is not one of global, per_tensor")
    total = sum(neuron_count(source.shapes[n], granularity) for n in source.names)
    k = math.ceil(total * k1_percent / 100)
    threshold, take_at_threshold = _kth_score(source, k)
    masks = {}
    for name in source.names:
        s = source.scores(name)
        mask = s > threshold
        tied = (s == threshold).nonzero().flatten()
        chosen = tied[:take_at_threshold]
        mask[chosen] = True
        take_at_threshold -= len(chosen)
        masks[name] = mask
    return masks


def _top_in_tensor(scores: torch.Tensor, k1_percent: float) -> torch.Tensor:
    k = math.ceil(scores.numel() * k1_percent / 100)
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[order] = True
    return mask


def _positive_chunks(source: ScoreSource, chunk: int = 1 << 20):
    """Every tensor's positive scores, a few million at a time: the passes below then add only chunk-sized
    temporaries to the one score tensor in hand."""
    for name in source.names:
        for part in source.scores(name).split(chunk):
            yield part[part > 0]


def _kth_score(source: ScoreSource, k: int) -> tuple[float, int]:
    """The k-th largest score t, and how many neurons scoring exactly t are to be taken (in order)."""
    lo, hi, positives = math.inf, 0.0, 0
    for pos in _positive_chunks(source):  # pass 1: range of the positive scores
        positives += pos.numel()
        if pos.numel():
            lo, hi = min(lo, pos.min().item()), max(hi, pos.max().item())
    if k > positives:  # every positive neuron, then zeros in order
        return 0.0, k - positives
    log_lo, log_hi = math.log(lo), math.log(hi)
    width = (log_hi - log_lo) / _BINS or 1.0

    def bins_of(values: torch.Tensor) -> torch.Tensor:
        return ((values.double().log_() - log_lo) / width).floor_().clamp_(0, _BINS - 1).long()

    counts = torch.zeros(_BINS, dtype=torch.long)
    for pos in _positive_chunks(source):  # pass 2: histogram of log-scores
        counts += torch.bincount(bins_of(pos), minlength=_BINS)
    above = counts.flip(0).cumsum(0).flip(0)  # neurons in this bin or higher
    target_bin = int((above >= k).nonzero().max())
    higher = int(above[target_bin + 1]) if target_bin + 1 < _BINS else 0
    # pass 3: the values in the boundary bin only
    candidates = [pos[bins_of(pos) == target_bin] for pos in _positive_chunks(source)]
    in_bin = torch.sort(torch.cat(candidates), descending=True).values
    threshold = in_bin[k - higher - 1].item()
    strictly_greater = higher + int((in_bin > threshold).sum())
    return threshold, k - strictly_greater


def element_mask(neuron_mask: torch.Tensor, shape: tuple[int, ...], granularity: str) -> torch.Tensor:
    """A neuron mask expanded to the tensor's full shape."""
    if granularity == "row" and len(shape) >= 2:
        return neuron_mask.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone()
    return neuron_mask.view(shape).clone()


@dataclass
class NeuronMask:
    granularity: str
    shapes: dict[str, tuple[int, ...]]
    masks: dict[str, torch.Tensor]  # 1-D bool per tensor, neuron level
    k1_percent: float | None = None

    def selected(self) -> dict[str, int]:
        return {n: int(m.sum()) for n, m in self.masks.items()}

    def full(self, name: str) -> torch.Tensor:
        return element_mask(self.masks[name], self.shapes[name], self.granularity)

    def union(self, other: NeuronMask) -> NeuronMask:
        if other.granularity != self.granularity or other.shapes != self.shapes:
            raise InputError("cannot unite masks of different granularities or models")
        return NeuronMask(self.granularity, self.shapes, {n: m | other.masks[n] for n, m in self.masks.items()})

    def save(self, path: str | Path, **meta: str) -> None:
        packed = {n: torch.from_numpy(np.packbits(m.numpy().astype(np.uint8))) for n, m in self.masks.items()}
        save_tensors(packed, str(path), metadata={
            "format": MASK_FORMAT, "granularity": self.granularity, "k1_percent": str(self.k1_percent),
            "shapes": json.dumps({n: list(s) for n, s in self.shapes.items()}),
            "selected": json.dumps(self.selected()), **meta})

    @classmethod
    def load(cls, path: str | Path) -> NeuronMask:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != MASK_FORMAT:
                raise InputError(f"mask {path}: format {meta.get('format')!r}, expected {MASK_FORMAT!r}")
            granularity = meta["granularity"]
            shapes = {n: tuple(s) for n, s in json.loads(meta["shapes"]).items()}
            masks = {}
            for name, shape in shapes.items():
                n = neuron_count(shape, granularity)
                bits = np.unpackbits(f.get_tensor(name).numpy())[:n]
                masks[name] = torch.from_numpy(bits.astype(bool))
        k1 = meta.get("k1_percent")
        return cls(granularity, shapes, masks, float(k1) if k1 not in (None, "None") else None)

    def check_model(self, shapes: dict[str, tuple[int, ...]], where: str) -> None:
        """Refuse a mask made for another model: every tensor must exist with the same shape."""
        for name, shape in self.shapes.items():
            if name not in shapes:
                raise InputError(f"mask does not fit {where}: it has tensor {name!r}, the model does not")
            if tuple(shapes[name]) != tuple(shape):
                raise InputError(f"mask does not fit {where}: tensor {name} is {tuple(shape)} in the mask, "
                                 f"{tuple(shapes[name])} in the model")
