"""Task arithmetic (Ilharco et al. 2023; mergekit's `task_arithmetic`): τ̃ = τ_o + λ Σ_i w_i δ_i[τ].

The task-vector baseline of MAET is this method on the full-CPT delta alone (w = 1, λ = 1 reproduces the
full-CPT model)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from linguaforge.pipelines.merging.methods import ElementwiseRule, MergeMethod, PlanContext, TensorRule

if TYPE_CHECKING:
    import torch

    from linguaforge.pipelines.merging.inputs import MergeInput


def task_arithmetic_update(deltas: list[torch.Tensor], weights: list[float], lam: float) -> torch.Tensor:
    """λ Σ w_i δ_i in float32, in the inputs' order, each product rounded before it is added (as the formula
    reads; a fused multiply-add would round differently). Scales the given deltas in place (callers pass
    tensors they own, fresh from the inputs)."""
    total = deltas[0].mul_(weights[0])
    for weight, delta in zip(weights[1:], deltas[1:], strict=True):
        total.add_(delta.mul_(weight))
    return total.mul_(lam) if lam != 1 else total


def plan(inputs: list[MergeInput], params: Mapping[str, Any], context: PlanContext) -> TensorRule:
    def update(name: str, deltas: list[torch.Tensor]) -> torch.Tensor:
        t = context.position(name)
        return task_arithmetic_update(deltas, [i.weight_of(name, t) for i in inputs], params["task_vector_lambda"])
    return ElementwiseRule(inputs, update)


METHOD = MergeMethod(
    name="task_arithmetic",
    summary="task arithmetic: λ times the weighted sum of the deltas",
    plan=plan,
    mergekit_names=("task_arithmetic",),
    parameters={"task_vector_lambda": (float, Field(1.0, title="λ", description=(
        "Task arithmetic: scale of the weighted sum of the deltas (mergekit's `lambda`); the task-vector "
        "baseline's scale.")))},
)
