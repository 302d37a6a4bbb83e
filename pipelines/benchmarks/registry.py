"""The benchmark registry: one small definition per benchmark (file shape, hub shape, kind, defaults).

A definition holds no code branches for prompts (those are data, see `presets.yaml`) and no loader
code (see `loaders.py`, which reads the `file_kind` named here). Language codes are ISO 639-1
throughout; the official files' own names (MSVAMP's `test_German.json`) are mapped on load.
"""

from __future__ import annotations

from dataclasses import dataclass

from linguaforge.pipelines.errors import InputError


@dataclass(frozen=True)
class Benchmark:
    name: str
    task: str  # "math" (free-form number), "choice" (lettered options), "nli" (label words)
    languages: tuple[str, ...]  # the official release's languages, in the order papers report them
    file_kind: str  # which official file shape loaders.py reads
    file_pattern: str  # where a language's file sits inside a data folder ({lang}, {name} = English name)
    hub_id: str  # default HF datasets id when the source is just "hf:"
    hub_config: str  # config name template on the hub ({lang})
    hub_split: str
    max_new_tokens: int  # generation budget when the run does not set one
    rules: tuple[str, ...]  # scoring rules reported side by side; the first is the primary one
    labels: tuple[str, ...] = ()  # fixed label set (XNLI)
    subjects: tuple[str, ...] = ()  # subject filter (m-MMLU science)
    release_codes: tuple[tuple[str, str], ...] = ()  # (ISO code, the release's own name) where they differ
    measures: str | None = None  # the ability (a run's `ability`) whose transfer it measures; None: language only

    def release_code(self, iso: str) -> str:
        """The name the official files and hub configs give an ISO language (X-CSQA: ja is `jap`)."""
        return dict(self.release_codes).get(iso, iso)

    def iso_code(self, name: str) -> str:
        return {release: iso for iso, release in self.release_codes}.get(name, name)


MMLU_SCIENCE_SUBJECTS = ("college_biology", "college_chemistry", "college_physics",
                         "high_school_biology", "high_school_chemistry", "high_school_physics")
XNLI_LABELS = ("entailment", "neutral", "contradiction")  # HF facebook/xnli encodes them 0, 1, 2 in this order

BENCHMARKS: dict[str, Benchmark] = {
    "mgsm": Benchmark(
        name="mgsm", task="math",
        languages=("bn", "th", "sw", "ja", "zh", "de", "fr", "ru", "es", "en", "te"),
        file_kind="mgsm_tsv", file_pattern="mgsm_{lang}.tsv",
        hub_id="juletxara/mgsm", hub_config="{lang}", hub_split="test",
        max_new_tokens=512, rules=("mindmerger", "flexible", "strict"), measures="math",
    ),
    "msvamp": Benchmark(
        name="msvamp", task="math",
        languages=("bn", "th", "sw", "ja", "zh", "de", "fr", "ru", "es", "en"),
        file_kind="msvamp_jsonl", file_pattern="test_{name}.json",
        hub_id="Mathoctopus/MSVAMP", hub_config="{lang}", hub_split="test",
        max_new_tokens=512, rules=("mindmerger", "flexible", "strict"), measures="math",
    ),
    "xcsqa": Benchmark(
        name="xcsqa", task="choice",
        languages=("sw", "ur", "hi", "ar", "vi", "ja", "pl", "zh", "nl", "ru", "it", "de", "pt", "fr", "es", "en"),
        file_kind="csqa_jsonl", file_pattern="{lang}/dev.jsonl",
        hub_id="INK-USC/xcsr", hub_config="X-CSQA-{lang}", hub_split="validation",
        max_new_tokens=16, rules=("exact", "lenient"),
        release_codes=(("ja", "jap"),),  # X-CSR_datasets/X-CSQA/jap/dev.jsonl, hub config X-CSQA-jap
    ),
    "xnli": Benchmark(
        name="xnli", task="nli",
        languages=("sw", "ur", "hi", "th", "ar", "tr", "el", "vi", "zh", "ru", "bg", "de", "fr", "es", "en"),
        file_kind="xnli_table", file_pattern="xnli.test.tsv",
        hub_id="facebook/xnli", hub_config="{lang}", hub_split="test",
        max_new_tokens=16, rules=("exact", "lenient"), labels=XNLI_LABELS,
    ),
    "mmlu_science": Benchmark(
        name="mmlu_science", task="choice",
        languages=(),  # Okapi's m-MMLU covers ~30 languages; any language with a file is accepted
        file_kind="okapi_mmlu_json", file_pattern="{lang}_test.json",
        hub_id="jon-tow/okapi_mmlu", hub_config="{lang}", hub_split="test",
        max_new_tokens=16, rules=("exact", "lenient"), subjects=MMLU_SCIENCE_SUBJECTS, measures="science",
    ),
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise InputError(f"benchmark {name!r} is unknown; known benchmarks: {', '.join(BENCHMARKS)}") from None
