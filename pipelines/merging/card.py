"""The model card (README.md) every merged folder gets: how it was made, from what, and what the method chose, made
with the hub's own ModelCard / ModelCardData (its metadata names the base and every input as `base_model`, and tags
the merge), and, for a merge made from a configuration, that configuration as YAML: `linguaforge merge` on it
rebuilds the folder bit for bit.

Inputs are identified by a digest of their weight files' names, sizes, headers and first and last MiB
(`base_weights_digest`): cheap on a 70 B model, and different for any two models or deltas."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from linguaforge.pipelines.merging.deltas import SparseDelta, base_weights_digest, file_identity_digest
from linguaforge.pipelines.merging.methods import METHODS


def write_model_card(path: Path, spec: Any, base_dir: str | Path, report: dict[str, Any],
                     base_label: str | None = None, reproduce: dict[str, Any] | None = None) -> None:
    """`spec`: the engine's MergeSpec (method, inputs, params, seed, dtype); `reproduce`: the merge configuration
    (without its output folder), written into the card so that the merge can be run again from it."""
    from huggingface_hub import ModelCard, ModelCardData

    base_label = base_label or str(base_dir)
    data = ModelCardData(library_name="transformers", tags=["merge", "linguaforge", spec.method],
                         base_model=[base_label, *(i.label for i in spec.inputs if not _internal(i.label))])
    body = model_card(spec, base_dir, report, base_label)
    if reproduce is not None:
        body += ("\n## Reproduce\n\nThis folder is what `linguaforge merge merge.yaml --out <folder>` writes for:\n\n"
                 f"```yaml\n{yaml.safe_dump(reproduce, sort_keys=False, allow_unicode=True)}```\n")
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(path)


def reproduction_config(card_path: str | Path) -> dict[str, Any]:
    """The merge configuration a card carries (its `## Reproduce` YAML block)."""
    text = Path(card_path).read_text(encoding="utf-8")
    block = text.split("## Reproduce", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)


def _internal(label: str) -> bool:
    """A label that names no model (the pipeline's roles: "ability", "language de")."""
    return label == "ability" or label.startswith("language ")


def model_card(spec: Any, base_dir: str | Path, report: dict[str, Any], base_label: str | None = None) -> str:
    method = METHODS[spec.method]
    base_label = base_label or str(base_dir)
    lines = [f"# Merged with linguaforge: {spec.method}", "",
             f"{method.summary}.", "", "## Inputs", "", "| role | input | weight | density | digest |",
             "|---|---|---|---|---|",
             f"| base | `{base_label}` |  |  | `{base_weights_digest(base_dir)[:16]}` |"]
    for item in spec.inputs:
        digest = (file_identity_digest(item.delta.path) if isinstance(item.delta, SparseDelta)
                  else base_weights_digest(item.delta.path))
        density = "" if item.density is None else item.density
        # the input as the user named it, never a local path (a card is the same wherever the merge ran)
        lines.append(f"| {item.role} | `{item.label}` | {item.weight} | {density} | `{digest[:16]}` |")
    params = spec.params | ({"seed": spec.seed} if method.seeded else {}) | {"dtype": spec.dtype or "as the base"}
    lines += ["", "## Parameters", "", "| parameter | value |", "|---|---|",
              *(f"| {name} | {value} |" for name, value in params.items()), "", "## What the method chose", "", *_selection(report), "",
              *_vocabulary(report), "## Load", "", "```python",
              "from transformers import AutoModelForCausalLM", "",
              "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")", "```", ""]
    return "\n".join(lines)


def _selection(report: dict[str, Any]) -> list[str]:
    """MAET: T per tensor family and the spread of S(τ); other methods change every tensor their deltas touch."""
    if "selected" not in report:
        return [f"{report['tensors']} tensors, each τ_o plus the method's update wherever an input changed it; "
                f"written as {', '.join(report.get('files', []))}."]
    families, chosen = Counter(report["families"].values()), Counter(report["families"][n] for n in report["selected"])
    sims = list(report["similarity"].values())
    lines = [f"T (the tensors that get γ R(A)): {len(report['selected'])} of {report['eligible']} eligible "
             f"(k2 = {report['k2_percent']} %), by family:", "", "| family | in T | eligible |", "|---|---|---|",
             *(f"| {family} | {chosen[family]} | {count} |" for family, count in sorted(families.items())), "",
             f"S(τ) over the eligible tensors: min {min(sims):.4g}, median {statistics.median(sims):.4g}, "
             f"max {max(sims):.4g}; {report['zero_similarity']} are exactly 0."]
    if report.get("ties_at_cut"):
        lines.append(f"**Degenerate cut:** {report['ties_at_cut']} tensors tie at the boundary of T, so the name "
                     "order, not the data, chose part of T.")
    return lines


def _vocabulary(report: dict[str, Any]) -> list[str]:
    """An extended vocabulary: whose new tokens, how many rows, and the rule."""
    extended = report.get("extended_vocabulary")
    if not extended:
        return []
    rows = ", ".join(f"{name} +{n}" for name, n in extended["tensors"].items())
    return ["## Vocabulary", "", f"Extended to {extended['vocab_size']} tokens by `{extended['from']}` ({rows}): the "
            "rows the base has are merged as every tensor is; the new tokens' rows, and the tokenizer, are that "
            "input's own.", ""]
