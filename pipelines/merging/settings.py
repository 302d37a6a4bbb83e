"""The merge's settings: what every merge reads (method, language weights, output layout, which baselines a run
builds) plus every registered method's own parameters, composed into one `MergeConfig` (also the Prefect
UI's form). Light on purpose (pydantic and the torch-free method declarations only)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model, field_validator

from linguaforge.pipelines.merging.methods import METHODS
from linguaforge.pipelines.merging.methods.maet import TensorFamily  # noqa: F401 - the config re-exports it
from linguaforge.pipelines.settings import Settings, key_params

MergeMethodName = Literal[tuple(METHODS)]
# μ named by a word instead of per language: Eq. 3 as written (every μ_i = 1), Σμ = 1, or no language delta
MU_WORDS = {"sum": lambda n: 1.0, "mean": lambda n: 1.0 / n, "zero": lambda n: 0.0}


def language_weights(mu: dict[str, float] | str, languages: list[str]) -> dict[str, float]:
    """μ as one weight per language: a word of MU_WORDS spread over `languages`, a dict as given, {} as 1.0 each."""
    if isinstance(mu, str):
        return {code: MU_WORDS[mu](len(languages)) for code in languages}
    return dict(mu) or {code: 1.0 for code in languages}


class MergeSettings(Settings):
    """The fields every merge has; `MergeConfig` adds each method's own."""

    method: MergeMethodName = Field("maet", description="Merge method: " + "; ".join(
        f"{m.name} = {m.summary}" for m in METHODS.values()) + ".")
    mu: dict[str, float] | Literal[tuple(MU_WORDS)] = Field(
        default_factory=dict, title="μ per language",
        description="Weight of each language delta (R_Lang in Eq. 3; the language inputs' weight in TIES and "
                    "DARE): one per target language, or a word for all of them: sum (1.0 each, as Eq. 3 writes "
                    "it), mean (1/n each: Σμ = 1), zero (no language delta); empty = 1.0 for every target language.",
    )
    shard_size_mb: int = Field(2000, ge=1, description="Output safetensors shard size.")
    baselines: list[Literal["task_vector", "full_cpt"]] = Field(
        default_factory=lambda: ["task_vector", "full_cpt"], description="Baselines built next to the MAET model."
    )

    @field_validator("mu", mode="before")
    @classmethod
    def _mu_word_or_weights(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in MU_WORDS:  # one message, not one per branch of the union
            raise ValueError(f"{v!r} is not a word for the weights ({', '.join(MU_WORDS)}); or give one weight "
                             "per target language, e.g. {de: 0.5, sw: 0.5}")
        return v

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
