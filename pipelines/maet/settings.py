"""MAET's settings, one model per stage (probe, masked CPT, full CPT, decompose, merge), and the names the merge
method and tensor-family choices are drawn from. Light on purpose (pydantic only): flows/config.py composes
these into the run configuration, which is checked before torch loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from linguaforge.pipelines.settings import Settings, key_params
from linguaforge.pipelines.training.settings import TrainConfig


class ProbeConfig(Settings):
    k1_percent: float = Field(5.0, gt=0.0, le=100.0, title="k1 (%)",
                              description="Share of neurons kept as key neurons (Eq. 1).")
    granularity: Literal["row", "element"] = Field(
        "row", description="row: one output unit of a weight matrix, scored by its row-delta norm; element: each scalar."
    )
    selection: Literal["global", "per_tensor"] = Field("global", description="Top-k1 over the whole model or per tensor.")
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


@dataclass(frozen=True)
class MergeMethod:
    """A merge method's declaration, as a mergekit method declares its parameters: the MergeConfig fields it
    reads, and whether it takes the language deltas R(L_i) and the seed. A merge's cache key holds exactly
    these (a change to γ must not re-run the task-vector baseline); pipelines/maet/merge.py implements each."""

    parameters: tuple[str, ...]
    languages: bool = True
    seeded: bool = False


MERGE_METHODS: dict[str, MergeMethod] = {
    "maet": MergeMethod(("k2_percent", "gamma", "eta", "mu", "tensor_families")),
    "task_vector": MergeMethod(("task_vector_lambda",), languages=False),
    "ties": MergeMethod(("ties_density",)),
    "dare": MergeMethod(("dare_drop", "mu"), seeded=True),
}
MergeMethodName = Literal[tuple(MERGE_METHODS)]


class MergeConfig(Settings):
    method: MergeMethodName = Field("maet", description="Merge method.")
    k2_percent: float = Field(80.0, ge=0.0, le=100.0, title="k2 (%)",
                              description="Share of tensors (lowest ability·language similarity) that get R(A).")
    gamma: float = Field(0.2, title="γ", description="Scale of R(A) on the selected tensors (Eq. 5).")
    eta: float = Field(1.0, title="η", description="Scale of R_Lang (Eq. 5).")
    mu: dict[str, float] = Field(
        default_factory=dict, title="μ per language",
        description="Weight of each language delta in R_Lang (Eq. 3); empty = 1.0 for every target language.",
    )
    tensor_families: list[TensorFamily] = Field(
        default_factory=lambda: ["q", "k", "v", "o", "up", "gate", "down"],
        description="Tensor families eligible for T (the paper's Table 3).",
    )
    task_vector_lambda: float = Field(1.0, title="λ", description="Task-vector baseline scale.")
    ties_density: float = Field(0.2, gt=0.0, le=1.0, description="TIES: share of each delta kept by magnitude.")
    dare_drop: float = Field(0.9, ge=0.0, lt=1.0, description="DARE: drop probability (rescaled by 1/(1-p)).")
    shard_size_mb: int = Field(2000, ge=1, description="Output safetensors shard size.")
    baselines: list[Literal["task_vector", "full_cpt"]] = Field(
        default_factory=lambda: ["task_vector", "full_cpt"], description="Baselines built next to the MAET model."
    )

    def key_params(self, method: str) -> dict[str, Any]:
        """What a merge by `method` reads of these settings: its declared parameters and the output layout."""
        return {"method": method, "shard_size_mb": self.shard_size_mb} | {
            name: key_params(self)[name] for name in MERGE_METHODS[method].parameters}
