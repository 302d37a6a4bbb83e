"""The merge's settings: what every merge reads (method, language weights, output layout, which baselines a run
builds) plus every registered method's own parameters, composed into one `MergeConfig` (also the Prefect
UI's form). Light on purpose (pydantic and the torch-free method declarations only)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model

from linguaforge.pipelines.merging.methods import METHODS
from linguaforge.pipelines.merging.methods.maet import TensorFamily  # noqa: F401 - the config re-exports it
from linguaforge.pipelines.settings import Settings, key_params

MergeMethodName = Literal[tuple(METHODS)]


class MergeSettings(Settings):
    """The fields every merge has; `MergeConfig` adds each method's own."""

    method: MergeMethodName = Field("maet", description="Merge method: " + "; ".join(
        f"{m.name} = {m.summary}" for m in METHODS.values()) + ".")
    mu: dict[str, float] = Field(
        default_factory=dict, title="μ per language",
        description="Weight of each language delta (R_Lang in Eq. 3; the language inputs' weight in TIES and "
                    "DARE); empty = 1.0 for every target language.",
    )
    shard_size_mb: int = Field(2000, ge=1, description="Output safetensors shard size.")
    baselines: list[Literal["task_vector", "full_cpt"]] = Field(
        default_factory=lambda: ["task_vector", "full_cpt"], description="Baselines built next to the MAET model."
    )

    def key_params(self, method: str, languages: bool) -> dict[str, Any]:
        """What a merge by `method` reads of these settings: its declared parameters, the output layout, and the
        language weights when it is given language deltas (a change to γ or μ must not re-run the task-vector
        baseline, which merges the full-CPT delta alone)."""
        return ({"method": method, "shard_size_mb": self.shard_size_mb}
                | ({"mu": key_params(self)["mu"]} if languages else {})
                | {name: key_params(self)[name] for name in METHODS[method].parameters})

    def method_params(self, method: str) -> dict[str, Any]:
        """The parameter values `method`'s rule reads."""
        return {name: getattr(self, name) for name in METHODS[method].parameters}


MergeConfig = create_model(
    "MergeConfig", __base__=MergeSettings, __doc__="Merge settings: the shared fields and every method's own.",
    **{name: spec for method in METHODS.values() for name, spec in method.parameters.items()})
