"""MAET's settings, one model per stage (probe, masked CPT, full CPT, decompose; the merge's are in
pipelines/merging/settings.py). Light on purpose (pydantic only): flows/config.py composes
these into the run configuration, which is checked before torch loads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from linguaforge.pipelines.settings import Settings
from linguaforge.pipelines.training.settings import TrainConfig


class ProbeConfig(Settings):
    k1_percent: float = Field(5.0, gt=0.0, le=100.0, title="k1 (%)",
                              description="Share of neurons kept as key neurons (Eq. 1).")
    granularity: Literal["row", "element"] = Field(
        "row", description="row: one output unit of a weight matrix, scored by its row-delta norm; element: each scalar."
    )
    selection: Literal["global", "per_tensor"] = Field("global", description="Top-k1 over the whole model or per tensor.")
    importance: Literal["value_change", "gradient"] = Field(
        "value_change", description="Eq. 1's score: value_change = |θ' − θ| after the probe (the paper's proxy; under "
        "AdamW it ranks the rows of tokens absent from the corpus first), gradient = |Σ_t g_t|, the gradient "
        "accumulated over the probe's steps (Eq. 1's definition; plain torch back end).")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=50, schedule="constant"))


class MaskedCPTConfig(Settings):
    train: TrainConfig = Field(default_factory=TrainConfig)
    language_train: TrainConfig | None = Field(
        None, description="Masked CPT settings for the language runs (LLM_L0 and each LLM_Li) when they differ "
        "from the ability run's; null = `train` for every run.")

    def settings_for(self, ability: bool) -> TrainConfig:
        return self.train if ability or self.language_train is None else self.language_train


class FullCPTConfig(Settings):
    train: TrainConfig = Field(default_factory=TrainConfig)


class DecomposeConfig(Settings):
    alpha: float = Field(0.8, title="α", description="Weight of the ability+pivot delta in R(A) (Eq. 2).")
    beta: float = Field(0.2, title="β", description="Weight of the pivot-language delta subtracted in R(A) (Eq. 2).")
    language_delta_form: Literal["direct", "pivot_removed"] = Field(
        "direct", description="direct: R(L_i) = Θ_Li − Θ_o; pivot_removed: the pivot-language delta subtracted too."
    )
