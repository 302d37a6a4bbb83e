"""MAET's merge (Eqs. 3–5): the ability delta goes, scaled, into the tensors where it overlaps least with the
language deltas; the language deltas go everywhere.

    R_Lang    = Σ_i μ_i R(L_i)                                               (Eq. 3; μ_i = each input's weight)
    S(τ)      = dot(R(A)[τ], R_Lang[τ]), sorted descending; the last k2 % form T       (Eq. 4)
    τ̃         = τ_o + γ R(A)[τ] + η R_Lang[τ]  for τ ∈ T,   τ_o + R_Lang[τ] otherwise   (Eq. 5)

Two passes: S(τ) for every eligible tensor first (a tensor at a time), then Eq. 5 as the engine streams. Sparse
deltas are combined on the union of their supports (`Compact`): the values a full-size computation gives, at
the cost of the changed rows only; a dense delta falls back to full tensors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.merging.methods import MergeMethod, PlanContext, TensorRule

if TYPE_CHECKING:
    import torch

    from linguaforge.pipelines.merging.inputs import MergeInput

# Tensor families (the paper's Table 3), by the module names of Llama/Mistral/Qwen (and Mixtral's w1-w3).
FAMILIES = {
    "q": r"(^|\.)(q_proj|query)\.",
    "k": r"(^|\.)(k_proj|key)\.",
    "v": r"(^|\.)(v_proj|value)\.",
    "o": r"(^|\.)(o_proj|out_proj)\.",
    "up": r"(^|\.)(up_proj|w3)\.",
    "gate": r"(^|\.)(gate_proj|w1)\.",
    "down": r"(^|\.)(down_proj|w2)\.",
    "embed": r"(^|\.)(embed_tokens|wte|word_embeddings)\.",
    "norm": r"(norm|ln_\w+)\.weight$",
    "lm_head": r"(^|\.)lm_head\.",
}
TensorFamily = Literal[tuple(FAMILIES)]


def family_of(name: str) -> str | None:
    for family, pattern in FAMILIES.items():
        if re.search(pattern, name):
            return family
    return None


# -- Eq. 3–5 as functions of one tensor ---------------------------------------------------------------
def language_sum(deltas: list[torch.Tensor], mu: list[float]) -> torch.Tensor:
    """Eq. 3: R_Lang[τ] = Σ μ_i R(L_i)[τ], summed in the given language order."""
    total = deltas[0].new_zeros(deltas[0].shape)
    for weight, delta in zip(mu, deltas, strict=True):
        total += weight * delta
    return total


def similarity(ability: torch.Tensor, lang: torch.Tensor) -> float:
    """Eq. 4: S(τ) = dot(R(A)[τ], R_Lang[τ]), accumulated in float64."""
    return float(ability.flatten().double().dot(lang.flatten().double()))


def select_t(similarities: dict[str, float], k2_percent: float) -> list[str]:
    """Eq. 4's cut: sort descending by S, equal S by tensor name; the last k2 % form T.
    |T| = k2 % of the eligible tensors, rounded half up."""
    ordered = sorted(similarities, key=lambda n: (-similarities[n], n))
    count = math.floor(len(ordered) * k2_percent / 100 + 0.5 + 1e-9)
    return ordered[len(ordered) - count:] if count else []


def selection_ties(similarities: dict[str, float], selected: set[str]) -> int:
    """How many tensors tie, in S(τ), with the cut between T and the rest: those the name order decided, not
    the data. 0 when the cut falls between distinct values (or T is empty or everything)."""
    inside = [similarities[n] for n in selected]
    outside = [similarities[n] for n in similarities if n not in selected]
    if not inside or not outside:
        return 0
    boundary = max(inside)
    if min(outside) > boundary:
        return 0
    return sum(s == boundary for s in similarities.values()) if boundary == min(outside) else 0


def selection_warning(report: dict) -> str:
    """The flag shown with T when Eq. 4 had nothing to go on (ability and language supports disjoint)."""
    ties, zeros = report.get("ties_at_cut", 0), report.get("zero_similarity", 0)
    if not ties:
        return ""
    return (f" — DEGENERATE: {ties} tensors tie at the cut ({zeros} have S(τ) = 0: the ability and language "
            "deltas never overlap there), so the name order, not the data, chose part of T")


def maet_update(ability: torch.Tensor, lang: torch.Tensor, in_t: bool, gamma: float, eta: float) -> torch.Tensor:
    """Eq. 5 without τ_o: γ R(A) + η R_Lang on T, R_Lang elsewhere."""
    return gamma * ability + eta * lang if in_t else lang


# -- the plan ---------------------------------------------------------------------------------------
def plan(inputs: list[MergeInput], params: Mapping[str, Any], context: PlanContext) -> TensorRule:
    from linguaforge.pipelines.merging.deltas import Compact

    ability = next(i for i in inputs if i.role == "ability")
    languages = [i for i in inputs if i.role == "language"]
    everyone = [ability.delta] + [i.delta for i in languages]
    names = context.base.names()
    families = {n: family_of(n) for n in names}
    unknown = [f for f in params["tensor_families"] if f not in FAMILIES]
    if unknown:
        raise InputError(f"merge.tensor_families: unknown {unknown}; known: {', '.join(FAMILIES)}")
    eligible = [n for n in names if families[n] in params["tensor_families"]]
    if not eligible:
        raise InputError(f"merge.tensor_families {list(params['tensor_families'])} match no tensor of the base model")

    def parts(name: str):
        t = context.position(name)
        weights = [i.weight_of(name, t) for i in languages]
        compact = Compact.of(everyone, name)
        values = compact.values if compact is not None else [d.dense(name) for d in everyone]
        return compact, values[0], language_sum(values[1:], weights)

    sims = {name: similarity(*parts(name)[1:]) for name in eligible}  # pass 1: Eq. 4's similarities
    selected = set(select_t(sims, params["k2_percent"]))
    context.report.update({
        "eligible": len(eligible), "selected": [n for n in eligible if n in selected], "similarity": sims,
        "families": {n: families[n] for n in eligible}, "k2_percent": params["k2_percent"],
        "gamma": params["gamma"], "eta": params["eta"], "mu": {i.label: i.weight for i in languages},
        # degenerate selections, flagged wherever T is shown: supports that never overlap give S = 0
        "zero_similarity": sum(v == 0 for v in sims.values()), "ties_at_cut": selection_ties(sims, selected)})

    def merged(name: str, original: torch.Tensor) -> torch.Tensor:  # pass 2: Eq. 5
        compact, ability_delta, lang = parts(name)
        update = maet_update(ability_delta, lang, name in selected, params["gamma"], params["eta"])
        if compact is None:
            return update.add_(original)  # float32; the engine rounds it to the output dtype
        return compact.apply(original, update)
    return merged


METHOD = MergeMethod(
    name="maet",
    summary="MAET (Eqs. 3–5): γ R(A) on the k2 % of tensors least similar to R_Lang, the language deltas everywhere",
    plan=plan,
    roles=True,
    parameters={
        "k2_percent": (float, Field(80.0, ge=0.0, le=100.0, title="k2 (%)", description=(
            "Share of tensors (lowest ability·language similarity) that get R(A)."))),
        "gamma": (float, Field(0.2, title="γ", description="Scale of R(A) on the selected tensors (Eq. 5).")),
        "eta": (float, Field(1.0, title="η", description="Scale of R_Lang on the selected tensors (Eq. 5).")),
        "tensor_families": (list[TensorFamily], Field(
            default_factory=lambda: list(FAMILIES),
            description="Tensor families eligible for T. Eq. 4 ranks every tensor (the default: every family); the "
                        "paper's Table 3 ablation is [q, k, v, o, up, gate, down].")),
    },
)
