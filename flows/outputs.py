"""What a run made, by role: the typed return value of every flow (no string keys to take apart)."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel, Field

from linguaforge.storage import ArtifactRef


class MindMergerOutputs(BaseModel):
    mapping: ArtifactRef
    augmentation: ArtifactRef


class EvalUnitOutput(BaseModel):
    model: str
    benchmark: str
    language: str
    ref: ArtifactRef


class RunOutputs(BaseModel):
    """Each stage output of a run. A flow returns the part it made; `|` joins two parts."""

    demo_world: ArtifactRef | None = None
    tiny_models: ArtifactRef | None = None
    base_llm: ArtifactRef | None = None
    corpora: dict[str, ArtifactRef] = Field(default_factory=dict)  # general-<iso>, ability, mixture
    masks: dict[str, ArtifactRef] = Field(default_factory=dict)  # ability, <iso>
    deltas: dict[str, ArtifactRef] = Field(default_factory=dict)  # ability+<pivot>, <iso>, full_cpt
    decomposed: ArtifactRef | None = None
    merged: ArtifactRef | None = None  # the MAET model (or TIES / DARE, by merge.method)
    task_vector: ArtifactRef | None = None
    mindmerger: dict[str, MindMergerOutputs] = Field(default_factory=dict)  # by the LLM it sits on
    evaluations: list[EvalUnitOutput] = Field(default_factory=list)
    report: ArtifactRef | None = None
    # a stage with no role above adds its output here by a label of its own ("<stage>/<name>"), listed before the
    # report: a new stage needs no field of its own
    more: dict[str, ArtifactRef] = Field(default_factory=dict)

    def __or__(self, other: RunOutputs) -> RunOutputs:
        """These outputs with `other`'s added (other's win where both have one)."""
        joined = self.model_copy(deep=True)
        for name in type(self).model_fields:
            mine, theirs = getattr(joined, name), getattr(other, name)
            if isinstance(mine, dict):
                mine.update(theirs)
            elif isinstance(mine, list):
                mine.extend(theirs)
            elif theirs is not None:
                setattr(joined, name, theirs)
        return joined

    def stages(self) -> Iterator[tuple[str, ArtifactRef]]:
        """(label, artifact) of every stage output except the evaluation units, in run order."""
        for name in ("demo_world", "tiny_models", "base_llm"):
            if (ref := getattr(self, name)) is not None:
                yield name, ref
        for role, refs in (("corpus", self.corpora), ("mask", self.masks), ("delta", self.deltas)):
            yield from ((f"{role}/{name}", ref) for name, ref in refs.items())
        for name in ("decomposed", "merged", "task_vector"):
            if (ref := getattr(self, name)) is not None:
                yield name, ref
        for llm, parts in self.mindmerger.items():
            yield f"mindmerger/{llm}/mapping", parts.mapping
            yield f"mindmerger/{llm}/augmentation", parts.augmentation
        yield from self.more.items()
        if self.report is not None:
            yield "report", self.report

    def all_refs(self) -> list[ArtifactRef]:
        return [ref for _, ref in self.stages()] + [unit.ref for unit in self.evaluations]
