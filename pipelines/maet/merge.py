"""One streaming merge engine: MAET (Eq. 3–5) and the baselines users compare it with (task vector, TIES,
DARE), each a small function that turns one tensor's deltas into the update added to the base tensor.

    R_Lang    = Σ_i μ_i R(L_i)                                               (Eq. 3)
    S(τ)      = dot(R(A)[τ], R_Lang[τ]), sorted descending; the last k2 % form T       (Eq. 4)
    τ̃         = τ_o + γ R(A)[τ] + η R_Lang[τ]  for τ ∈ T,   τ_o + R_Lang[τ] otherwise   (Eq. 5)

Streaming: pass 1 computes S(τ) one tensor at a time (MAET only); pass 2 reads each base tensor, adds its
update and hands it to a shard writer, so memory holds a few tensors and one output shard, never a model.
The output is an HF folder (sharded safetensors + index, config, tokenizer, generation config) written
into a temporary folder and moved into place only when complete.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.maet.decompose import check_deltas
from linguaforge.pipelines.maet.deltas import Compact, SparseDelta, base_weights_digest
from linguaforge.pipelines.maet.settings import FAMILIES, MERGE_METHODS, MergeConfig
from linguaforge.pipelines.weights import INDEX_NAME, ShardedWriter, WeightReader, copy_non_weight_files


def family_of(name: str) -> str | None:
    for family, pattern in FAMILIES.items():
        if re.search(pattern, name):
            return family
    return None


@dataclass
class MergeSpec:
    """What to merge and how; deltas are sparse delta files against `base_dir`."""

    method: str = "maet"
    ability: SparseDelta | None = None  # R(A) (maet, ties, dare) or Θ_CPT − Θ_o (task_vector)
    languages: dict[str, SparseDelta] = field(default_factory=dict)  # R(L_i)
    mu: dict[str, float] = field(default_factory=dict)  # empty: 1.0 each
    k2_percent: float = 80.0
    gamma: float = 0.2
    eta: float = 1.0
    families: list[str] = field(default_factory=lambda: ["q", "k", "v", "o", "up", "gate", "down"])
    task_vector_lambda: float = 1.0
    ties_density: float = 0.2
    dare_drop: float = 0.9
    seed: int = 0

    @classmethod
    def of(cls, config: MergeConfig, method: str, ability: SparseDelta, languages: dict[str, SparseDelta],
           seed: int) -> MergeSpec:
        """The run configuration's merge settings, for one method, on these deltas."""
        return cls(method=method, ability=ability, languages=languages, mu=dict(config.mu),
                   k2_percent=config.k2_percent, gamma=config.gamma, eta=config.eta,
                   families=list(config.tensor_families), task_vector_lambda=config.task_vector_lambda,
                   ties_density=config.ties_density, dare_drop=config.dare_drop, seed=seed)

    def weights(self) -> dict[str, float]:
        return {code: self.mu.get(code, 1.0) for code in self.languages}


# -- Eq. 3–5 as functions of one tensor ---------------------------------------------------------------
def language_sum(deltas: list[torch.Tensor], mu: list[float]) -> torch.Tensor:
    """Eq. 3: R_Lang[τ] = Σ μ_i R(L_i)[τ], summed in the given language order."""
    total = torch.zeros_like(deltas[0])
    for weight, delta in zip(mu, deltas, strict=True):
        total += weight * delta
    return total


def similarity(ability: torch.Tensor, lang: torch.Tensor) -> float:
    """Eq. 4: S(τ) = dot(R(A)[τ], R_Lang[τ]), accumulated in float64."""
    return float(torch.dot(ability.flatten().double(), lang.flatten().double()))


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


def task_vector_update(delta: torch.Tensor, lam: float) -> torch.Tensor:
    return lam * delta


def ties_update(deltas: list[torch.Tensor], density: float) -> torch.Tensor:
    """TIES: trim each delta to its top `density` share by magnitude, elect the sign with the larger total
    mass per entry, and average the kept values that agree with it (disjoint mean)."""
    trimmed = []
    for d in deltas:
        keep = math.ceil(d.numel() * density)
        flat = d.flatten()
        mask = torch.zeros_like(flat, dtype=torch.bool)
        if keep:
            mask[torch.topk(flat.abs(), keep, sorted=False).indices] = True
        trimmed.append(torch.where(mask, flat, torch.zeros_like(flat)).view_as(d))
    stacked = torch.stack(trimmed)
    sign = torch.sign(stacked.sum(dim=0))
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    count = agree.sum(dim=0).clamp(min=1)
    return (stacked * agree).sum(dim=0) / count


def dare_update(deltas: list[torch.Tensor], weights: list[float], drop: float, generator: torch.Generator) -> torch.Tensor:
    """DARE: drop each entry with probability p, rescale the survivors by 1/(1−p), then add the deltas."""
    total = torch.zeros_like(deltas[0])
    for weight, d in zip(weights, deltas, strict=True):
        keep = torch.rand(d.shape, generator=generator) >= drop
        total += weight * torch.where(keep, d / (1 - drop), torch.zeros_like(d))
    return total


# -- the engine ---------------------------------------------------------------------------------------
def check_spec(spec: MergeSpec, base_shapes: dict[str, tuple[int, ...]], expected_languages: list[str] | None) -> None:
    if spec.method not in MERGE_METHODS:
        raise InputError(f"merge.method {spec.method!r} is not one of {', '.join(MERGE_METHODS)}")
    if not 0 <= spec.k2_percent <= 100 or math.isnan(spec.k2_percent):
        raise InputError(f"merge.k2_percent must be in [0, 100], got {spec.k2_percent}")
    if spec.ability is None:
        raise InputError(f"merge ({spec.method}) needs an ability delta")
    if MERGE_METHODS[spec.method].languages and not spec.languages:
        raise InputError(f"merge ({spec.method}) needs at least one language delta")
    if spec.mu:
        missing, extra = set(spec.languages) - set(spec.mu), set(spec.mu) - set(spec.languages)
        if missing or extra:
            raise InputError(f"merge.mu must name exactly the target languages {sorted(spec.languages)}: "
                             f"missing {sorted(missing)}, extra {sorted(extra)}")
    if expected_languages is not None and set(spec.languages) != set(expected_languages):
        raise InputError(f"language deltas {sorted(spec.languages)} do not match the languages "
                         f"{sorted(expected_languages)}")
    if spec.method == "maet":
        unknown = [f for f in spec.families if f not in FAMILIES]
        if unknown:
            raise InputError(f"merge.tensor_families: unknown {unknown}; known: {', '.join(FAMILIES)}")
        if not any(family_of(n) in spec.families for n in base_shapes):
            raise InputError(f"merge.tensor_families {spec.families} match no tensor of the base model")


def merge(base_dir: str | Path, out_dir: str | Path, spec: MergeSpec, shard_bytes: int = 2 * 1024**3,
          expected_languages: list[str] | None = None,
          progress: Callable[[int, int, dict[str, Any]], None] | None = None,
          replace: bool = False) -> dict[str, Any]:
    """Merge into an HF folder at `out_dir` (created only on success). Returns the report: method, per-tensor
    similarity and family, the selected set T, counts.

    An `out_dir` that holds files is refused, unless `replace`: then the files the merge writes replace
    those of the same name, and nothing else in the folder is touched."""
    check_output_folder(Path(out_dir), replace)
    base = WeightReader(base_dir)
    shapes = base.shapes()
    check_spec(spec, shapes, expected_languages)
    deltas = {"ability": spec.ability} | {f"language {c}": d for c, d in spec.languages.items()}
    check_deltas(deltas, base_weights_digest(base_dir), shapes)

    report: dict[str, Any] = {"method": spec.method, "tensors": len(shapes)}
    merged = _plan(spec, base, report)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        writer = ShardedWriter(staging, shard_bytes)
        names = base.names()
        changed = set().union(*(set(d.names()) for d in deltas.values()))
        for i, name in enumerate(names):
            original = base.get(name)
            writer.add(name, merged(name, original) if name in changed else original)  # untouched: as is
            if progress is not None:
                progress(i + 1, len(names), {})
        report["files"] = writer.close()
        copy_non_weight_files(base_dir, staging)
        _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def check_output_folder(out_dir: Path, replace: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError(f"output {out_dir}: exists and is not a folder")
    present = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    if present and not replace:
        raise InputError(f"output folder {out_dir} is not empty ({len(present)} files, e.g. {present[0]}); choose "
                         "another output, or --force to replace the files the merge writes (others are kept)")


def _publish(staging: Path, out_dir: Path) -> None:
    """The finished folder into place: renamed whole when `out_dir` is new, else file by file (replace)."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    written = {p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()}
    stale = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")
                   if p.is_file() and (p.suffix == ".safetensors" or p.name == INDEX_NAME))
    if stale := [f for f in stale if f not in written]:  # other weights beside ours would load as a mixture
        raise InputError(f"output folder {out_dir} holds weight files this merge does not write "
                         f"({', '.join(stale[:3])}); remove them first (linguaforge never deletes files it did "
                         "not write)")
    for rel in sorted(written):
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target)


def _dense(update: Callable[[str], torch.Tensor]) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """τ̃ = τ_o + update(τ), on the full tensor."""
    return lambda name, original: (original.float() + update(name)).to(original.dtype)


def _plan(spec: MergeSpec, base: WeightReader, report: dict[str, Any]) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """The method as `merged(name, τ_o) -> τ̃` (after pass 1, for MAET)."""
    codes = list(spec.languages)
    weights = [spec.weights()[c] for c in codes]
    everyone = [spec.ability] + [spec.languages[c] for c in codes]
    if spec.method == "task_vector":
        return _dense(lambda name: task_vector_update(spec.ability.dense(name), spec.task_vector_lambda))
    if spec.method == "ties":
        return _dense(lambda name: ties_update([d.dense(name) for d in everyone], spec.ties_density))
    if spec.method == "dare":
        position = {n: i for i, n in enumerate(base.names())}

        def dare(name: str) -> torch.Tensor:
            # one generator per tensor, seeded by its position: the same draw whatever the order of reading
            g = torch.Generator().manual_seed(spec.seed * 1_000_003 + position[name])
            return dare_update([d.dense(name) for d in everyone], [1.0] + weights, spec.dare_drop, g)
        return _dense(dare)

    # MAET. Sparse deltas are combined on the union of their supports (Compact): the same values as on
    # full tensors, at the cost of the changed rows only; a dense delta falls back to full tensors.
    def parts(name: str) -> tuple[Compact | None, torch.Tensor, torch.Tensor]:
        compact = Compact.of(everyone, name)
        values = compact.values if compact is not None else [d.dense(name) for d in everyone]
        return compact, values[0], language_sum(values[1:], weights)

    families = {n: family_of(n) for n in base.names()}
    eligible = [n for n in base.names() if families[n] in spec.families]
    sims = {}
    for name in eligible:  # pass 1: Eq. 4's similarities
        _, ability, lang = parts(name)
        sims[name] = similarity(ability, lang)
    selected = set(select_t(sims, spec.k2_percent))
    report.update({"eligible": len(eligible), "selected": [n for n in eligible if n in selected],
                   "similarity": sims, "families": {n: families[n] for n in eligible},
                   "k2_percent": spec.k2_percent, "gamma": spec.gamma, "eta": spec.eta, "mu": spec.weights(),
                   # degenerate selections, flagged wherever T is shown: supports that never overlap give S = 0
                   "zero_similarity": sum(v == 0 for v in sims.values()),
                   "ties_at_cut": selection_ties(sims, selected)})

    def merged(name: str, original: torch.Tensor) -> torch.Tensor:  # pass 2: Eq. 5
        compact, ability, lang = parts(name)
        update = maet_update(ability, lang, name in selected, spec.gamma, spec.eta)
        if compact is None:
            return (original.float() + update).to(original.dtype)
        return compact.apply(original, update)
    return merged
