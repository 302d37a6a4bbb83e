"""Prompt presets: turn canonical benchmark rows into `BenchmarkItem`s, with templates read from data.

The built-in presets live in `presets.yaml` beside this module (`mindmerger`, `native_cot`); a preset
may also be given as the path of a YAML file with the same shape (one preset: description, exemplars,
benchmarks). Few-shot exemplars come from a JSON file keyed by ISO 639-1 code:

    {"de": {"question_prefix": "Frage:", "answer_prefix": "Schritt-für-Schritt-Antwort:",
            "answer_phrase": "Die Antwort lautet",
            "exemplars": [{"question": "...", "target": "... Die Antwort lautet 11."}]}}

An exemplar carries the benchmark's canonical fields (math: question; choice: question, choices
[{label, text}]; nli: premise, hypothesis) and `target`, the text that follows its templated prompt.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from linguaforge.pipelines.benchmarks.items import BenchmarkItem
from linguaforge.pipelines.benchmarks.registry import Benchmark, get_benchmark
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.languages import check_language, language_name
from linguaforge.pipelines.reading import read_json

_TASK_FIELDS = {"math": ("question",), "choice": ("question", "choices"), "nli": ("premise", "hypothesis")}
_PRESET_KEYS = {"template", "option", "option_separator", "source", "continuation", "stop",
                "exemplar_separator", "target_separator", "language_defaults"}


@dataclass(frozen=True)
class PromptPreset:
    name: str
    description: str
    needs_exemplars: bool
    benchmarks: dict[str, dict] = field(default_factory=dict)

    def for_benchmark(self, benchmark: str) -> dict:
        try:
            return self.benchmarks[benchmark]
        except KeyError:
            raise InputError(f"prompt preset {self.name!r} has no template for benchmark {benchmark!r} "
                             f"(it covers {', '.join(self.benchmarks)})") from None


def builtin_presets() -> dict[str, PromptPreset]:
    text = resources.files("linguaforge.pipelines.benchmarks").joinpath("presets.yaml").read_text(encoding="utf-8")
    return {name: _preset(name, spec, "presets.yaml") for name, spec in yaml.safe_load(text).items()}


def load_preset(name_or_path: str) -> PromptPreset:
    """A built-in preset by name, or a preset YAML file by path."""
    presets = builtin_presets()
    if name_or_path in presets:
        return presets[name_or_path]
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise InputError(f"prompt preset {path}: not a readable YAML file ({str(exc).splitlines()[0]})") from None
        return _preset(path.stem, spec, str(path))
    raise InputError(f"prompt preset {name_or_path!r} is neither a built-in preset ({', '.join(presets)}) "
                     "nor a preset YAML file")


def _preset(name: str, spec: object, where: str) -> PromptPreset:
    if not isinstance(spec, dict) or not isinstance(spec.get("benchmarks"), dict):
        raise InputError(f"{where}: preset {name!r} needs a 'benchmarks' mapping")
    for bench, entry in spec["benchmarks"].items():
        get_benchmark(bench)
        if not isinstance(entry, dict) or "template" not in entry:
            raise InputError(f"{where}: preset {name!r}, benchmark {bench!r}: field 'template' is missing")
        unknown = set(entry) - _PRESET_KEYS
        if unknown:
            raise InputError(f"{where}: preset {name!r}, benchmark {bench!r}: unknown field(s) {sorted(unknown)}")
        if entry.get("source", "question") not in ("question", "prompt"):
            raise InputError(f"{where}: preset {name!r}, benchmark {bench!r}: field 'source' must be question or prompt")
    return PromptPreset(name=name, description=str(spec.get("description", "")).strip(),
                        needs_exemplars=spec.get("exemplars") == "required", benchmarks=spec["benchmarks"])


def load_exemplars(uri: str, storage_options: dict | None = None) -> dict[str, dict]:
    """The exemplar file (local path or fsspec URL), checked for shape: {iso: {exemplars: [...], ...}}."""
    data = read_json(uri, "exemplar file", storage_options=storage_options)  # {iso: {...}}, checked below
    for lang, entry in data.items():
        check_language(lang, f"exemplar file {uri}: key")
        if not isinstance(entry, dict) or not isinstance(entry.get("exemplars"), list) or not entry["exemplars"]:
            raise InputError(f"exemplar file {uri}, language {lang!r}: field 'exemplars' must be a non-empty list")
        for i, ex in enumerate(entry["exemplars"]):
            if not isinstance(ex, dict) or not isinstance(ex.get("target"), str):
                raise InputError(f"exemplar file {uri}, language {lang!r}, exemplar {i}: field 'target' is missing")
    return {**data, "_uri": uri}


def build_items(benchmark: str | Benchmark, rows: list[dict], language: str, preset: PromptPreset,
                exemplars: dict[str, dict] | None = None) -> list[BenchmarkItem]:
    """Template every canonical row of one language into a `BenchmarkItem`."""
    bench = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    spec = preset.for_benchmark(bench.name)
    lang_fields, shots = _language_setup(bench, spec, preset, language, exemplars)
    where = f"prompt preset {preset.name!r}, benchmark {bench.name!r}"
    shot_sep = spec.get("exemplar_separator", "\n\n")
    target_sep = spec.get("target_separator", " ")
    prefix = "".join(_render(spec, bench, ex, lang_fields, f"{where}, exemplar {i}") + target_sep + ex["target"]
                     + shot_sep for i, ex in enumerate(shots))
    phrases = ("The answer is",) + ((lang_fields["answer_phrase"],) if lang_fields.get("answer_phrase") else ())
    items = []
    for row in rows:
        zero_shot = _render(spec, bench, row, lang_fields, where)
        options = _options(bench, row)
        continuation = spec.get("continuation", " {option}")
        items.append(BenchmarkItem(
            id=row["id"], benchmark=bench.name, language=language, prompt=prefix + zero_shot,
            source_text=row["question"] if spec.get("source", "question") == "question" and "question" in row
            else zero_shot,
            gold=row["answer"], options=options,
            continuations=tuple(continuation.format(option=o) for o in options),
            answer_phrases=tuple(dict.fromkeys(phrases)),
            meta={k: row[k] for k in ("subject", "question_en") if row.get(k)},
        ))
    return items


def stop_strings(benchmark: str | Benchmark, preset: PromptPreset, language: str,
                 exemplars: dict[str, dict] | None = None) -> list[str]:
    bench = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    spec = preset.for_benchmark(bench.name)
    lang_fields, _ = _language_setup(bench, spec, preset, language, exemplars)
    stops = [_format(s, lang_fields, f"prompt preset {preset.name!r}, benchmark {bench.name!r}, stop")
             for s in spec.get("stop", [])]
    return [s for s in dict.fromkeys(stops) if s]


def _language_setup(bench: Benchmark, spec: dict, preset: PromptPreset, language: str,
                    exemplars: dict[str, dict] | None) -> tuple[dict, list[dict]]:
    fields = {"language": language, "language_name": language_name(language), **spec.get("language_defaults", {})}
    if not preset.needs_exemplars:
        return fields, []
    if exemplars is None:
        raise InputError(f"prompt preset {preset.name!r} needs an exemplar file (few-shot), and none was given")
    uri = exemplars.get("_uri", "exemplar file")
    if language not in exemplars:
        present = ", ".join(k for k in exemplars if k != "_uri")
        raise InputError(f"{uri}: no exemplars for language {language!r} (it has {present})")
    entry = exemplars[language]
    fields.update({k: v for k, v in entry.items() if k != "exemplars" and isinstance(v, str)})
    shots = entry["exemplars"]
    for i, ex in enumerate(shots):
        for name in _TASK_FIELDS[bench.task]:
            if name not in ex:
                raise InputError(f"{uri}, language {language!r}, exemplar {i}: field {name!r} is missing "
                                 f"(needed by {bench.name})")
    return fields, shots


def _render(spec: dict, bench: Benchmark, row: dict, lang_fields: dict, where: str) -> str:
    # the gold answer is never a template field: a template naming it would leak the answer
    values = {**lang_fields, **{k: v for k, v in row.items() if isinstance(v, str) and k not in ("answer", "id")}}
    if bench.task == "choice":
        option = spec.get("option", "{label}. {text}")
        choices = row["choices"]
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise InputError(f"{where}: field 'choices' must be a list of {{label, text}} objects")
        values["options"] = spec.get("option_separator", "\n").join(
            _format(option, c, f"{where}, option") for c in choices)
    return _format(spec["template"], values, where)


def _format(template: str, values: dict, where: str) -> str:
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    missing = names - set(values)
    if missing:
        raise InputError(f"{where}: template field(s) {sorted(missing)} are not defined for this item "
                         f"(defined: {sorted(values)})")
    return template.format_map(values)


def _options(bench: Benchmark, row: dict) -> tuple[str, ...]:
    if bench.task == "choice":
        return tuple(c["label"] for c in row["choices"])
    if bench.task == "nli":
        return bench.labels
    return ()
