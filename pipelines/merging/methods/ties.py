"""TIES (Yadav et al. 2023; mergekit's `ties`): trim each delta to its largest `density` share by magnitude,
elect each entry's sign from the weighted sum, and take the weighted mean of the values that agree with it
(a disjoint mean: an entry no kept value agrees on stays unchanged)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from linguaforge.pipelines.merging.methods import MergeMethod, PlanContext, TensorRule, dense_rule

if TYPE_CHECKING:
    import torch

    from linguaforge.pipelines.merging.inputs import MergeInput


def trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """The delta with all but its ceil(density · n) largest-magnitude entries set to 0."""
    keep = math.ceil(delta.numel() * density)
    if keep >= delta.numel():
        return delta
    flat = delta.flatten()
    out = flat.new_zeros(flat.shape)
    if keep:
        top = flat.abs().topk(keep, sorted=False).indices
        out[top] = flat[top]
    return out.view_as(delta)


def ties_update(deltas: list[torch.Tensor], density: float | list[float],
                weights: list[float] | None = None) -> torch.Tensor:
    """Trim, elect the sign with the larger weighted mass per entry, weighted mean of the agreeing values."""
    import torch

    densities = density if isinstance(density, list) else [density] * len(deltas)
    weights = weights or [1.0] * len(deltas)
    trimmed = torch.stack([trim(d, p) * w for d, p, w in zip(deltas, densities, weights, strict=True)])
    sign = torch.sign(trimmed.sum(dim=0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    weight = torch.tensor(weights, dtype=trimmed.dtype).view(-1, *([1] * (trimmed.dim() - 1)))
    divisor = (weight * agree).sum(dim=0)
    divisor[divisor == 0] = 1
    return (trimmed * agree).sum(dim=0) / divisor


def plan(inputs: list[MergeInput], params: Mapping[str, Any], context: PlanContext) -> TensorRule:
    def update(name: str) -> torch.Tensor:
        t = context.position(name)
        return ties_update([i.delta.dense(name) for i in inputs],
                           [i.density_of(name, t, params["ties_density"]) for i in inputs],
                           [i.weight_of(name, t) for i in inputs])
    return dense_rule(update)


METHOD = MergeMethod(
    name="ties",
    summary="TIES: trim each delta by magnitude, elect signs, weighted mean of the agreeing values",
    plan=plan,
    input_parameters=("weight", "density"),
    mergekit_names=("ties",),
    parameters={"ties_density": (float, Field(0.2, gt=0.0, le=1.0, description=(
        "TIES: share of each delta kept by magnitude (an input's own `density` overrides it).")))},
)
