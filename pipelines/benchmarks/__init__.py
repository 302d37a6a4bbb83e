"""Multilingual benchmark evaluation: registry, loaders, prompt presets, batched decoding, scoring, reports.

The unit of work is one model × one benchmark × one language (`evaluate_unit`), which writes
`records.parquet` and `scores.json` into a folder; `build_comparison` turns many units' scores into
the base-vs-model report. No Prefect here: the lead's tasks wrap these functions.
"""

from pipelines.benchmarks.decoding import HFCausalLMGenerator, OptionScorer, TextGenerator, cut_at_stop
from pipelines.benchmarks.evaluate import evaluate_model, evaluate_unit
from pipelines.benchmarks.items import BenchmarkItem
from pipelines.benchmarks.loaders import available_languages, load_raw
from pipelines.benchmarks.prompts import (
    PromptPreset,
    build_items,
    builtin_presets,
    load_exemplars,
    load_preset,
    stop_strings,
)
from pipelines.benchmarks.registry import BENCHMARKS, Benchmark, get_benchmark
from pipelines.benchmarks.report import (
    build_comparison,
    build_report,
    comparison_rows,
    headline_rows,
    read_scores,
)

__all__ = [
    "BENCHMARKS", "Benchmark", "BenchmarkItem", "HFCausalLMGenerator", "OptionScorer", "PromptPreset", "TextGenerator",
    "available_languages", "build_comparison", "build_items", "build_report", "builtin_presets", "comparison_rows",
    "cut_at_stop", "evaluate_model", "evaluate_unit", "get_benchmark", "headline_rows", "load_exemplars",
    "load_preset", "load_raw",
    "read_scores", "stop_strings",
]
