"""Multilingual benchmark evaluation: registry, loaders, prompt presets, scoring, reports (the model side, batched
decoding, is pipelines/generation/).

The unit of work is one model × one benchmark × one language (`score_unit`), which writes
`records.parquet` and `scores.json` into a folder; `build_comparison` turns many units' scores into
the base-vs-model report. No Prefect here: the lead's tasks wrap these functions.
"""

from importlib import import_module

# Names resolve on first use (PEP 562), so that the light parts (registry, presets, loaders, report) load
# without torch: a configuration is then checked in well under a second, before any heavy import.
_HOMES = {
    "units": ["ModelLoading", "UnitData", "score_model", "score_unit"],
    "items": ["BenchmarkItem"],
    "loaders": ["available_languages", "load_raw"],
    "prompts": ["PromptPreset", "build_items", "builtin_presets", "load_exemplars", "load_preset", "stop_strings"],
    "registry": ["BENCHMARKS", "Benchmark", "get_benchmark"],
    "report": ["build_comparison", "build_report", "comparison_rows", "headline_rows", "read_scores"],
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str):
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOME_OF[name]}"), name)


__all__ = [
    "BENCHMARKS", "Benchmark", "BenchmarkItem", "PromptPreset",
    "available_languages", "build_comparison", "build_items", "build_report", "builtin_presets", "comparison_rows",
    "ModelLoading", "UnitData", "score_model", "score_unit", "get_benchmark", "headline_rows", "load_exemplars",
    "load_preset", "load_raw",
    "read_scores", "stop_strings",
]
