"""DARE (Yu et al. 2024; mergekit's `dare_linear`): drop each entry of each delta with probability p, rescale the
survivors by 1/(1 − p), and add the weighted deltas. The draw is seeded per tensor by (seed, the tensor's
position in the base), so it does not depend on the order of reading."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.merging.methods import MergeMethod, PlanContext, TensorRule, dense_rule

if TYPE_CHECKING:
    import torch

    from linguaforge.pipelines.merging.inputs import MergeInput


def dare_update(deltas: list[torch.Tensor], weights: list[float], drop: float | list[float],
                generator: torch.Generator) -> torch.Tensor:
    """Σ w_i · keep_i ⊙ δ_i / (1 − p_i), keep_i ~ Bernoulli(1 − p_i), drawn in the inputs' order."""
    import torch

    drops = drop if isinstance(drop, list) else [drop] * len(deltas)
    total = torch.zeros_like(deltas[0])
    for weight, p, d in zip(weights, drops, deltas, strict=True):
        keep = torch.rand(d.shape, generator=generator) >= p
        total += weight * torch.where(keep, d / (1 - p), torch.zeros_like(d))
    return total


def plan(inputs: list[MergeInput], params: Mapping[str, Any], context: PlanContext) -> TensorRule:
    import torch

    position = {n: i for i, n in enumerate(context.base.names())}

    def update(name: str) -> torch.Tensor:
        t = context.position(name)
        # an input's own density is mergekit's keep probability; else the method's drop probability
        drops = [params["dare_drop"] if i.density is None else 1 - i.density_of(name, t, 0.0) for i in inputs]
        if any(not 0 <= p < 1 for p in drops):
            raise InputError(f"dare: density must be in (0, 1] for tensor {name}, got {[1 - p for p in drops]}")
        g = torch.Generator().manual_seed(context.seed * 1_000_003 + position[name])
        return dare_update([i.delta.dense(name) for i in inputs], [i.weight_of(name, t) for i in inputs], drops, g)
    return dense_rule(update)


METHOD = MergeMethod(
    name="dare",
    summary="DARE: random drop and rescale of each delta, then the weighted sum",
    plan=plan,
    seeded=True,
    input_parameters=("weight", "density"),
    mergekit_names=("dare_linear",),
    parameters={"dare_drop": (float, Field(0.9, ge=0.0, lt=1.0, description=(
        "DARE: drop probability, survivors rescaled by 1/(1-p) (an input's own `density` is its keep "
        "probability).")))},
)
