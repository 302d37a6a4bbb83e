"""Eq. 2: split the masked-CPT results into an ability delta and language deltas.

    R(A)   = α (Θ_{A,L0} − Θ_o) − β (Θ_{L0} − Θ_o)
    R(L_i) = Θ_{Li} − Θ_o                       ("direct", the default)
           = (Θ_{Li} − Θ_o) − (Θ_{L0} − Θ_o)     ("pivot_removed": what the pivot-language CPT also learned —
                                                  CPT on general text as such — taken out of each language)

Inputs and outputs are sparse deltas (pipelines.deltas) against one base; each output tensor is built
from the inputs' tensors of the same name, one name at a time, and stored sparse again (its support is
the union of the inputs' supports).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.merging.deltas import Compact, SparseDelta, encode_delta, write_encoded

FORMS = ("direct", "pivot_removed")


ABILITY_FILE = "ability.safetensors"  # R(A), Eq. 2


def language_file(code: str) -> str:
    """R(L_i) of language `code`, Eq. 2."""
    return f"language-{code}.safetensors"


def ability_delta(ability_pivot: torch.Tensor, pivot: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """R(A)[τ] for one tensor."""
    return alpha * ability_pivot - beta * pivot


def language_delta(language: torch.Tensor, pivot: torch.Tensor, form: str) -> torch.Tensor:
    """R(L_i)[τ] for one tensor."""
    if form == "direct":
        return language
    if form == "pivot_removed":
        return language - pivot
    raise InputError(f"language_delta_form {form!r} is not one of {', '.join(FORMS)}")


def decompose(ability_pivot: SparseDelta, pivot: SparseDelta, languages: dict[str, SparseDelta], out_dir: Path,
              alpha: float = 0.8, beta: float = 0.2, form: str = "direct") -> dict[str, Path]:
    """Write R(A) to `ability.safetensors` and each R(L_i) to `language-<code>.safetensors` in `out_dir`.
    Returns {"ability": path, "<code>": path, ...}."""
    if form not in FORMS:
        raise InputError(f"language_delta_form {form!r} is not one of {', '.join(FORMS)}")
    for label, value in (("alpha", alpha), ("beta", beta)):
        if not math.isfinite(value):
            raise InputError(f"decompose.{label} must be a finite number, got {value}")
    _check_same_base({"ability_pivot": ability_pivot, "pivot": pivot} | {f"language {c}": d for c, d in languages.items()})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"ability": out_dir / ABILITY_FILE}
    _write(paths["ability"], pivot, [ability_pivot, pivot],
           lambda ap, p: ability_delta(ap, p, alpha, beta))
    for code, delta in languages.items():
        paths[code] = out_dir / language_file(code)
        _write(paths[code], pivot, [delta, pivot], lambda li, p: language_delta(li, p, form))
    return paths


def _check_same_base(deltas: dict[str, SparseDelta]) -> None:
    """Outputs inherit the inputs' base identity, so every input must share it (and the architecture)."""
    first_label, first = next(iter(deltas.items()))
    for label, delta in deltas.items():
        if delta.base_digest != first.base_digest:
            raise InputError(f"delta {label} ({delta.path}) was made against another base model than "
                             f"{first_label} (digest {delta.base_digest[:12]}…, not {first.base_digest[:12]}…)")
        if delta.shapes != first.shapes:
            differing = next(n for n in first.shapes if delta.shapes.get(n) != first.shapes[n])
            raise InputError(f"delta {label} ({delta.path}): tensor {differing} is {delta.shapes.get(differing)}, "
                             f"{first.shapes[differing]} in {first_label}")
        delta.check_finite()


def _write(path: Path, template: SparseDelta, inputs: list[SparseDelta],
           combine: Callable[..., torch.Tensor]) -> None:
    """Combine the inputs tensor by tensor (only names some input changed) and store the result sparse."""
    changed = set().union(*(set(d.names()) for d in inputs))
    encoded: dict[str, torch.Tensor] = {}
    for name in template.shapes:  # the base's order
        if name not in changed:
            continue
        compact = Compact.of(inputs, name)
        if compact is not None:  # sparse in, sparse out: only the union of the supports is computed
            numel = math.prod(template.shapes[name])
            encoded |= compact.encode(name, combine(*compact.values), numel)
        else:
            encoded |= encode_delta(name, combine(*(d.dense(name) for d in inputs)))
    write_encoded(path, encoded, template.base_id, template.base_digest,
                  {n: list(s) for n, s in template.shapes.items()}, template.dtypes)
