"""The merge methods, one file each, and the registry that lists them.

A method declares, as a mergekit method does: its own parameters (pydantic fields: they become fields of
`MergeConfig`, of the Prefect UI's form and of the merge's cache key), what it takes (the ability delta and the
language deltas of a MAET run, or any list of weighted deltas), and its rule: `plan(inputs, params, context)`
returns `merged(name, τ_o) -> τ̃`, the function the streaming engine applies to each tensor.

Adding a method is adding a file to this folder that defines `METHOD`; nothing else changes. Declarations
import no torch (a run configuration is checked before torch loads): a rule imports torch when it runs.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic.fields import FieldInfo

from linguaforge.pipelines.merging.parameters import layer_position

if TYPE_CHECKING:
    import torch

    from linguaforge.pipelines.merging.inputs import MergeInput
    from linguaforge.pipelines.weights import WeightReader

TensorRule = Callable[[str, "torch.Tensor"], "torch.Tensor"]
@dataclass
class PlanContext:
    """What a rule may need besides its inputs and parameters: the base (names, shapes, order), the run's seed,
    and the report it fills (per-tensor choices that the model card and the UI show)."""

    base: WeightReader
    seed: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    _positions: dict[str, float] = field(default_factory=dict)

    def position(self, name: str) -> float:
        """The tensor's t for gradient settings (see `layer_position`)."""
        if not self._positions:
            self._positions.update(layer_position(self.base.names()))
        return self._positions[name]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    summary: str
    plan: Callable[[list[MergeInput], Mapping[str, Any], PlanContext], TensorRule]  # rule: τ̃ in float32 or τ_o's dtype
    parameters: dict[str, tuple[Any, FieldInfo]] = field(default_factory=dict)  # MergeConfig fields it owns
    roles: bool = False  # needs exactly one "ability" input and ≥ 1 "language" inputs (MAET's R(A), R(L_i))
    seeded: bool = False  # reads the run's seed
    input_parameters: tuple[str, ...] = ("weight",)  # per-input settings it reads (mergekit's tensor parameters)
    mergekit_names: tuple[str, ...] = ()  # mergekit's `merge_method` names it stands for


def dense_rule(update: Callable[[str], torch.Tensor]) -> TensorRule:
    """τ̃ = τ_o + update(τ) on the full tensor, in float32 (`update` returns a fresh float32 tensor, τ_o is added
    into it exactly); the engine rounds once, to the output dtype."""
    return lambda name, original: update(name).add_(original)


@dataclass(frozen=True)
class ElementwiseRule:
    """τ̃ = τ_o + update(τ, [δ_i]) where each entry of the update depends on the same entry of the deltas only
    (task arithmetic; not TIES, whose threshold looks at the whole tensor, nor DARE, whose draws follow the
    tensor's size). Such a rule also runs on slices of a tensor, bitwise as on the whole: when every input can
    read slices (a fine-tuned model folder can), the engine streams each tensor through a cache-sized slice
    instead of holding it whole in float32. `update` may modify the deltas it is given."""

    inputs: list[MergeInput]
    update: Callable[[str, list[torch.Tensor]], torch.Tensor]

    def __call__(self, name: str, original: torch.Tensor) -> torch.Tensor:
        return self.update(name, [i.delta.dense(name) for i in self.inputs]).add_(original)

    @property
    def sliceable(self) -> bool:
        return all(hasattr(i.delta, "dense_slice") for i in self.inputs)

    def slice(self, name: str, first: int, original: torch.Tensor) -> torch.Tensor:
        """τ̃'s entries first .. first + len(original) - 1 of the flattened tensor (`original`: τ_o's, float32)."""
        return self.update(name, [i.delta.dense_slice(name, first, original) for i in self.inputs]).add_(original)


def _discover() -> dict[str, MergeMethod]:
    methods: dict[str, MergeMethod] = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        method = getattr(importlib.import_module(f"{__name__}.{module.name}"), "METHOD", None)
        if isinstance(method, MergeMethod):
            if method.name in methods:
                raise RuntimeError(f"two merge methods are named {method.name!r}")
            methods[method.name] = method
    owners: dict[str, str] = {}
    for method in methods.values():  # a parameter belongs to one method (shared ones live in MergeConfig)
        for name in method.parameters:
            if name in owners:
                raise RuntimeError(f"merge parameter {name!r} is declared by {owners[name]} and {method.name}")
            owners[name] = method.name
    return methods


METHODS: dict[str, MergeMethod] = _discover()
