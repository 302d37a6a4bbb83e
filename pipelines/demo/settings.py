"""The demo world's settings: its size and languages, the tiny models, and the bootstrap that gives the tiny LLM
its languages (the run configuration's `demo:` section)."""

from __future__ import annotations

from pydantic import Field, field_validator

from linguaforge.pipelines.languages import check_language
from linguaforge.pipelines.settings import Seed, Settings
from linguaforge.pipelines.training.settings import TrainConfig

# what `demo:<name>` can name: the tiny models and the world's folders (pipelines/demo/world.py writes them; a test
# opens every one in a generated world)
DEMO_MODELS = ("llm", "encoder")
DEMO_FOLDERS = {"ability": "pivot", "queries": ("math",), "general": "languages", "translation": "targets",
                "bench": ("mgsm", "msvamp", "xcsqa", "mmlu", "xnli"), "dev": ("mgsm", "msvamp")}


def demo_names(pivot: str, targets: list[str]) -> list[str]:
    """Every `demo:<name>` the demo world makes for these languages."""
    names = list(DEMO_MODELS)
    for folder, inside in DEMO_FOLDERS.items():
        members = {"pivot": [pivot], "languages": [pivot, *targets], "targets": targets}.get(inside, inside)
        names += [f"{folder}/{m}" for m in members]
    return names


class BootstrapConfig(Settings):
    """Demo only: brief pre-training of the tiny LLM so the base model has some language in it."""

    train: TrainConfig = Field(default_factory=lambda: TrainConfig(
        steps=300, learning_rate=2e-3, warmup_steps=20, batch_tokens=4096, micro_batch_size=16))


class DemoConfig(Settings):
    """The embedded synthetic world: text, ability data, translation pairs, benchmark files, tiny models."""

    seed: Seed = 0
    general_docs: int = Field(600, ge=10, le=10_000_000, description="General documents per (high-resource) language.")
    low_resource_languages: list[str] = Field(default_factory=lambda: ["sw", "bn"])
    low_resource_fraction: float = Field(0.25, gt=0.0, le=1.0, description="Their share of general_docs.")
    bilingual_share: float = Field(0.1, ge=0.0, le=1.0, description="Share of non-pivot general documents that "
                                   "carry each sentence's English rendering beside it (as web text mixes languages).")
    ability_problems: int = Field(4000, ge=10, le=10_000_000, description="English worked math problems.")
    translation_pairs: int = Field(600, ge=10, le=1_000_000, description="X→English pairs per language.")
    query_items: int = Field(400, ge=10, le=1_000_000, description="Translated math queries per language (augmentation stage).")
    test_items: int = Field(100, ge=1, le=100_000, description="Items per language in each benchmark test file.")
    dev_items: int = Field(100, ge=1, le=100_000, description="Math problems per language in each dev file (dev/mgsm, "
                           "dev/msvamp): for choosing settings, disjoint from the test problems and every training text.")
    llm_hidden_size: int = Field(128, ge=16, le=4096, multiple_of=16, description="A multiple of 16 (one attention head per 16).")
    llm_layers: int = Field(4, ge=1, le=64)
    encoder_hidden_size: int = Field(64, ge=16, le=4096, multiple_of=16, description="A multiple of 16 (one attention head per 16).")
    encoder_layers: int = Field(2, ge=1, le=64)
    vocab_size: int = Field(2000, ge=300, le=64_000, description="Target vocabulary of both trained tokenizers.")
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)

    @field_validator("low_resource_languages")
    @classmethod
    def _iso(cls, v: list[str]) -> list[str]:
        return [check_language(c, "demo.low_resource_languages") for c in v]
