"""Evaluation settings: which benchmarks, on what data, in which languages, with which prompt and scoring."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from linguaforge.pipelines.benchmarks.registry import BENCHMARKS, Benchmark
from linguaforge.pipelines.devices import DEVICE_PATTERN
from linguaforge.pipelines.languages import check_language
from linguaforge.pipelines.settings import Settings

BenchmarkName = Literal[tuple(BENCHMARKS)]  # the registry is the one list of names


class BenchmarkSpec(Settings):
    name: BenchmarkName  # checked against the registry by the enum: the lookup below cannot miss
    data: str = Field(..., description="HF dataset id, a folder or URL with the official files, or demo:bench/<name>.")
    languages: list[str] | None = Field(None, description="Languages to score; null = the run's pivot + targets.")
    prompt: str = Field("mindmerger", description="Prompt preset (mindmerger, native_cot, ...).")
    max_new_tokens: int | None = Field(None, ge=1, description="null = the benchmark's default.")
    limit: int | None = Field(None, ge=1, description="Score at most this many items per language.")
    scoring: Literal["generate", "loglik"] = Field("generate", description="Classification: generate, or option log-likelihood.")
    exemplars: str | None = Field(None, description="Few-shot exemplar file (JSON) for the native_cot presets.")
    apply_chat_template: bool = Field(False, description="Render each prompt with the tokenizer's own chat template "
                                      "(instruct models), as lm-eval's --apply_chat_template.")
    system_prompt: str | None = Field(None, description="With apply_chat_template: the system turn before each prompt.")

    @property
    def benchmark(self) -> Benchmark:
        """The registry's benchmark: the one place a configured name becomes the object the stages use."""
        return BENCHMARKS[self.name]

    @field_validator("languages")
    @classmethod
    def _iso(cls, v: list[str] | None) -> list[str] | None:
        return v if v is None else [check_language(c, "benchmark language") for c in v]


class EvaluationConfig(Settings):
    enabled: bool = True
    benchmarks: list[BenchmarkSpec] = Field(default_factory=lambda: [
        BenchmarkSpec(name="mgsm", data="demo:bench/mgsm"),
        BenchmarkSpec(name="xnli", data="demo:bench/xnli"),
    ])
    batch_size: int = Field(16, ge=1, description="Items per generation batch; halved (and the items finished) "
                            "when a batch does not fit in memory.")
    device: str | None = Field(None, pattern=DEVICE_PATTERN, description="Where models are evaluated; null = the "
                               "run's `device`.")
