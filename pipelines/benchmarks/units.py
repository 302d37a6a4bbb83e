"""Evaluation units: one model × one benchmark × one language, as one function call writing one folder.

`score_unit` loads the items, templates them, decodes (generation or option log-likelihood), scores
them with every rule of the benchmark, and writes `records.parquet` (one row per item) and
`scores.json` (per-rule accuracy with its 95 % interval) into `out_dir`. Both files are written under
temporary names and renamed at the end, so a failed unit leaves no half-written result behind. The
lead's store commits that folder as the unit's artifact; Prefect fans units out in parallel.

`score_model` is what `linguaforge eval --model ... --benchmark ... --data ...` calls: any HF causal
LM, every language of the data (or the ones asked for), then a report over them.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from linguaforge.pipelines.benchmarks.chance import answer_summary
from linguaforge.pipelines.benchmarks.files import LMEVAL_FILE, RECORDS_FILE, SCORES_FILE
from linguaforge.pipelines.benchmarks.items import BenchmarkItem
from linguaforge.pipelines.benchmarks.lmeval_format import lmeval_results
from linguaforge.pipelines.benchmarks.loaders import available_languages, load_raw
from linguaforge.pipelines.benchmarks.prompts import build_items, load_exemplars, load_preset, stop_strings
from linguaforge.pipelines.benchmarks.scoring import gold_key, score_classification, score_math, summarise
from linguaforge.pipelines.benchmarks.settings import BenchmarkSpec
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.generation.causal_lm import (
    HFCausalLMGenerator,
    OptionScorer,
    TextGenerator,
    default_streams,
)
from linguaforge.pipelines.generation.chat import chat_items
from linguaforge.pipelines.languages import check_language
from linguaforge.pipelines.reproducible import content_only

Progress = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class UnitData:
    """Where a unit's benchmark files are read: a location this process can read, how scores.json records it
    (default: the location itself; a store's machine-local copy is recorded by its source), and the fsspec options
    that reach it."""

    location: str
    label: str | None = None
    storage_options: dict | None = None


def score_unit(generator: TextGenerator, spec: BenchmarkSpec, language: str, out_dir: str | Path, *,
               data: UnitData | None = None, progress: Progress | None = None,
               model_name: str | None = None, base_name: str | None = None) -> dict:
    """Score `generator` on one benchmark language as `spec` says (prompt, scoring, limit, budget, exemplars, chat
    template); write records.parquet + scores.json; return the scores.

    `data`: where the files are (default: `spec.data`). Scoring "generate" is greedy text under every rule of the
    benchmark; "loglik" (classification only) takes the option with the highest log-likelihood as the answer.
    `model_name`/`base_name` are recorded for the comparison report (base_name None: this model is a base).
    """
    bench, data = spec.benchmark, data or UnitData(spec.data)
    language = check_language(language, f"{bench.name} language")
    scoring, limit = spec.scoring, spec.limit
    if scoring == "loglik" and bench.task == "math":
        raise InputError(f"{bench.name} is free-form math: log-likelihood scoring needs options (use generate)")
    if scoring == "loglik" and not isinstance(generator, OptionScorer):
        raise InputError(f"{type(generator).__name__} has no option_logprobs: it cannot score by log-likelihood")

    prompt_preset = load_preset(spec.prompt)
    shots = load_exemplars(spec.exemplars, data.storage_options) if spec.exemplars else None
    every_row = load_raw(bench, data.location, language, data.storage_options)
    rows = every_row[:limit]
    items = build_items(bench, rows, language, prompt_preset, shots)
    if spec.apply_chat_template:  # an instruct model reads its prompts in its own chat template
        items = chat_items(items, generator, spec.system_prompt)
    budget = spec.max_new_tokens or bench.max_new_tokens
    stop = stop_strings(bench, prompt_preset, language, shots)

    started = time.perf_counter()
    outputs, logprobs = _decode(generator, items, scoring, budget, stop, progress, bench.task)
    elapsed = time.perf_counter() - started

    rules = ("loglik",) if scoring == "loglik" else bench.rules
    records = [_record(it, out, lp, rules, scoring, prompt_preset.name, bench.task)
               for it, out, lp in zip(items, outputs, logprobs, strict=True)]
    per_rule = {rule: summarise([r[f"correct_{rule}"] for r in records]) for rule in rules}
    items = _answers(records, rules[0])
    scores = {
        "model": model_name, "base": base_name, "benchmark": bench.name, "language": language,
        "preset": prompt_preset.name, "scoring": scoring, "primary_rule": rules[0],
        **per_rule[rules[0]], **answer_summary(items["answer"], items["gold"], items["correct"]), "items": items,
        "rules": per_rule,
        "max_new_tokens": budget if scoring == "generate" else None, "stop": stop,
        "data_source": data.label or data.location, "limit": limit, "exemplars": spec.exemplars,
        "seconds": round(elapsed, 3), "items_per_second": round(len(items) / elapsed, 3) if elapsed > 0 else None,
        "items_total": len(every_row), "shots": len(shots[language]["exemplars"]) if shots else 0,
        "chat_template": spec.apply_chat_template, "system_prompt": spec.system_prompt,
    }
    if scoring == "generate" and bench.task == "math":  # well-formed answers: how many outputs hold a number
        scores["with_number"] = sum(bool(re.search(r"\d", r["output"])) for r in records) / len(records)
    _write_unit(Path(out_dir), records, content_only(scores))
    return scores


def _answers(records: list[dict], rule: str) -> dict[str, list]:
    """Per item, under the primary rule: id, extracted answer, gold (as answers are compared), correct; what the
    report reads the chance level and paired differences from."""
    return {"id": [r["id"] for r in records], "answer": [r[f"extracted_{rule}"] for r in records],
            "gold": [gold_key(r["gold"], rule) for r in records],
            "correct": [r[f"correct_{rule}"] for r in records]}


def _decode(generator, items: list[BenchmarkItem], scoring: str, budget: int, stop: list[str],
            progress: Progress | None, task: str) -> tuple[list[str], list[list[float] | None]]:
    """Outputs (and option log-probs) in item order, in chunks so that progress is reported as it goes."""
    chunk = max(1, 4 * int(getattr(generator, "batch_size", 8)))
    outputs: list[str] = []
    logprobs: list[list[float] | None] = []
    right = 0
    for start in range(0, len(items), chunk):
        part = items[start: start + chunk]
        if scoring == "loglik":
            lps = generator.option_logprobs(part)
            outs = [it.options[max(range(len(lp)), key=lp.__getitem__)] for it, lp in zip(part, lps, strict=True)]
        else:
            outs, lps = generator.generate(part, budget, stop), [None] * len(part)
        if len(outs) != len(part):
            raise RuntimeError(f"{type(generator).__name__} returned {len(outs)} outputs for {len(part)} items")
        outputs += outs
        logprobs += lps
        if progress is not None:
            right += sum(_primary_correct(it, o, task) for it, o in zip(part, outs, strict=True))
            progress(len(outputs), len(items), {"accuracy": right / len(outputs)})
    return outputs, logprobs


def _primary_correct(item: BenchmarkItem, output: str, task: str) -> bool:
    scored = score_math(output, item.gold, item.answer_phrases) if task == "math" else \
        score_classification(output, item.gold, item.options)
    return next(iter(scored.values()))[1]


def _record(item: BenchmarkItem, output: str, logprobs: list[float] | None, rules: Sequence[str],
            scoring: str, preset: str, task: str) -> dict:
    if scoring == "loglik":
        scored = {"loglik": (output, output == item.gold)}
    elif task == "math":
        scored = score_math(output, item.gold, item.answer_phrases)
    else:
        scored = score_classification(output, item.gold, item.options)
    record = {"id": item.id, "benchmark": item.benchmark, "language": item.language, "preset": preset,
              "scoring": scoring, "prompt": item.prompt, "source_text": item.source_text, "output": output,
              "gold": item.gold, "options": list(item.options),
              "extracted": scored[rules[0]][0], "correct": bool(scored[rules[0]][1]),
              "option_logprobs": logprobs}
    for rule in rules:
        record[f"extracted_{rule}"], record[f"correct_{rule}"] = scored[rule][0], bool(scored[rule][1])
    record["meta"] = json.dumps(item.meta, ensure_ascii=False) if item.meta else None
    return record


_RECORD_SCHEMA_FIXED = {"options": pa.list_(pa.string()), "option_logprobs": pa.list_(pa.float64())}


def _write_unit(out_dir: Path, records: list[dict], scores: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = []
    for name in records[0]:
        if name in _RECORD_SCHEMA_FIXED:
            fields.append(pa.field(name, _RECORD_SCHEMA_FIXED[name]))
        elif name.startswith("correct"):
            fields.append(pa.field(name, pa.bool_()))
        else:
            fields.append(pa.field(name, pa.string()))
    table = pa.Table.from_pylist(records, schema=pa.schema(fields))
    tmp_records, tmp_scores = out_dir / f".{RECORDS_FILE}.tmp", out_dir / f".{SCORES_FILE}.tmp"
    tmp_lmeval = out_dir / f".{LMEVAL_FILE}.tmp"
    lmeval = lmeval_results([scores], scores.get("model") or "model")
    try:
        pq.write_table(table, tmp_records)
        tmp_lmeval.write_text(json.dumps(lmeval, ensure_ascii=False, indent=1), encoding="utf-8")
        tmp_scores.write_text(json.dumps(scores, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp_records, out_dir / RECORDS_FILE)
        os.replace(tmp_lmeval, out_dir / LMEVAL_FILE)
        os.replace(tmp_scores, out_dir / SCORES_FILE)  # scores last: its presence means the unit is whole
    finally:
        for tmp in (tmp_records, tmp_lmeval, tmp_scores):
            tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class ModelLoading:
    """How `score_model` loads and runs a model and reaches its data. `streams` (`decoding.in_streams`; "auto":
    `decoding.default_streams`) sets the intra-op thread count while it generates: the eval CLI, a process of its
    own, asks for "auto"; a process that runs other torch work meanwhile (the pipeline's stages) keeps 1."""

    dtype: str = "float32"
    device: str | None = None
    batch_size: int = 8
    streams: int | str = 1
    storage_options: dict | None = None


def score_model(model: str, spec: BenchmarkSpec, out_dir: str | Path, loading: ModelLoading = ModelLoading(), *,
                model_name: str | None = None, progress: Progress | None = None, generator=None,
                report: bool = True) -> list[dict]:
    """Evaluate any HF causal LM (id, folder or URL) outside the pipeline: one unit per language of `spec` (every
    language of its data when it names none) under `out_dir/<benchmark>/<lang>/`, then `out_dir/report.md` +
    `comparison.png`. Returns the scores.

    `generator`: one already made (a ParallelGenerator over several devices, or one shared by several benchmarks)
    instead of loading `model` here; `report=False` leaves the comparison to the caller (several benchmarks: one
    report)."""
    from linguaforge.pipelines.benchmarks.report import build_comparison
    from linguaforge.pipelines.output_folder import claim_output_folder

    bench, data = spec.benchmark, UnitData(spec.data, storage_options=loading.storage_options)
    langs = list(spec.languages or available_languages(bench, spec.data, loading.storage_options))
    if not langs:
        raise InputError(f"{spec.data}: no {bench.name} languages found there")
    if generator is None:
        streams = default_streams(torch.device(loading.device or "cpu")) if loading.streams == "auto" \
            else loading.streams
        generator = HFCausalLMGenerator.from_pretrained(model, dtype=loading.dtype, batch_size=loading.batch_size,
                                                        device=loading.device, streams=streams)
    name = model_name or model.rstrip("/").rsplit("/", 1)[-1]
    claim_output_folder(out_dir, "output folder", [model, spec.data])  # the model loaded: results are coming
    results = []
    for i, lang in enumerate(langs):
        unit_progress = None
        if progress is not None:
            def unit_progress(done, total, metrics, _lang=lang, _i=i):
                progress(_i * total + done, len(langs) * total, {"language": _lang, **metrics})
        results.append(score_unit(generator, spec, lang, Path(out_dir) / bench.name / lang, data=data,
                                  progress=unit_progress, model_name=name))
    if report:
        build_comparison(results, out_dir)
    return results
