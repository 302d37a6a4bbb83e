"""`linguaforge eval`: any HF causal LM on one benchmark, outside the pipeline (no Prefect, no store); on one device,
or data-parallel over several (--devices)."""

from __future__ import annotations

import gc
import json
from contextlib import contextmanager
from pathlib import Path

from linguaforge.flows.cli.common import (
    at_least_one,
    batch_size_flag,
    benchmarks_flag,
    console,
    devices_flag,
    languages_flag,
)
from linguaforge.flows.cli.render import print_rows
from linguaforge.pipelines.benchmarks.files import RECORDS_FILE, REPORT_FILE
from linguaforge.pipelines.settings import DTYPE_NAMES


def register(sub) -> None:
    from linguaforge.pipelines.benchmarks.registry import BENCHMARKS

    ev = sub.add_parser("eval", help="evaluate any HF causal LM on a benchmark, outside the pipeline")
    ev.add_argument("--model", required=True, help="HF hub id, local folder or s3:// folder")
    ev.add_argument("--benchmarks", "--benchmark", dest="benchmarks", required=True, type=benchmarks_flag,
                    help=f"one or more of {', '.join(BENCHMARKS)}, comma-separated (the model is loaded once)")
    ev.add_argument("--data", required=True, help="HF dataset id, or a folder / URL with the official files; with "
                    "several benchmarks, a folder with one folder per benchmark, or bench=location,...")
    ev.add_argument("--languages", help="comma-separated ISO 639-1 codes (default: every language in the data)")
    ev.add_argument("--out", default="./linguaforge-eval", help="output folder (default ./linguaforge-eval)")
    ev.add_argument("--preset", default="mindmerger", help="prompt preset (mindmerger, native_cot, ...)")
    ev.add_argument("--scoring", default="generate", choices=["generate", "loglik"])
    ev.add_argument("--batch-size", type=batch_size_flag, default="auto",
                    help="items per batch, or auto (the default: the largest that fits on a GPU, found by halving on "
                         "out-of-memory from 64; 8 on the CPU)")
    ev.add_argument("--limit", type=at_least_one, help="at most this many items per language")
    ev.add_argument("--max-new-tokens", type=at_least_one)
    ev.add_argument("--exemplars", help="few-shot exemplar file for native_cot presets")
    ev.add_argument("--dtype", default="float32", choices=DTYPE_NAMES)
    ev.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    ev.add_argument("--devices", type=devices_flag, help="data-parallel: one worker per device, the items shared out "
                    "among them (e.g. 0,1,2,3 for four GPUs, or cuda:0,cuda:1); the records are those of one process")
    ev.add_argument("--streams", type=at_least_one,
                    help="batches generated at once, each on its share of the CPU threads (default: 2 on a CPU "
                         "with 2 threads or more, else 1)")
    ev.add_argument("--name", help="model name in the report (default: the last part of --model)")
    ev.add_argument("--output-format", choices=["linguaforge", "lm-eval"], default="linguaforge",
                    help="lm-eval: also write <out>/<model>/results_<date>.json in lm-eval's results layout "
                         "(every unit writes results_lmeval.json beside its scores either way)")
    ev.add_argument("--apply-chat-template", action="store_true",
                    help="render each prompt with the tokenizer's own chat template (instruct models)")
    ev.add_argument("--system-prompt", help="with --apply-chat-template: the system turn before each prompt")
    ev.add_argument("--log-samples", action="store_true", help="also write lm-eval's samples_<task>_<date>.jsonl "
                    "(every item: prompt, output, filtered answer, target, correct) beside the results JSON")
    ev.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    """Any HF causal LM on one or more benchmarks, outside the pipeline (no Prefect, no store); the model is loaded
    once for all of them, and one report compares them all."""
    with _imports_kept_out_of_collection(args):
        from linguaforge.pipelines import loading  # noqa: F401  (torch, transformers' tokenizers: imported here)
        from linguaforge.pipelines.benchmarks import build_comparison, score_model
        from linguaforge.pipelines.benchmarks.settings import BenchmarkSpec

    languages = languages_flag(args.languages) if args.languages else None
    data = _data_per_benchmark(args)
    _check_inputs(args, data)
    all_scores = []
    with _generator(args) as generator, _progress() as progress:
        for bench in args.benchmarks:
            spec = BenchmarkSpec(name=bench, data=data[bench], languages=languages, prompt=args.preset,
                                 limit=args.limit, scoring=args.scoring, max_new_tokens=args.max_new_tokens,
                                 exemplars=args.exemplars, apply_chat_template=args.apply_chat_template,
                                 system_prompt=args.system_prompt)
            all_scores += score_model(args.model, spec, args.out, model_name=args.name, progress=progress(bench),
                                      generator=generator, report=False)
    rows = build_comparison(all_scores, args.out)
    print_rows(rows)
    console.print(f"records and scores: {args.out}/<benchmark>/<language>/   report: {args.out}/{REPORT_FILE}")
    if args.output_format == "lm-eval" or args.log_samples:
        console.print(f"lm-eval results: {_write_lmeval_results(args, all_scores)}")
    if args.log_samples:
        console.print(f"samples: {', '.join(str(p) for p in write_samples(args, all_scores))}")
    return 0


def _data_per_benchmark(args) -> dict[str, str]:
    """--data: one benchmark's files; with several benchmarks, a folder holding one folder per benchmark (named as
    the benchmark, as the demo world's bench/ is), or bench=location pairs."""
    from linguaforge.pipelines.errors import InputError

    if "=" in args.data and "://" not in args.data.split("=", 1)[0]:
        pairs = dict(part.split("=", 1) for part in args.data.split(","))
        if missing := [b for b in args.benchmarks if b not in pairs]:
            raise InputError(f"--data names no location for {', '.join(missing)} (bench=location,...)")
        return pairs
    if len(args.benchmarks) == 1:
        return {args.benchmarks[0]: args.data}
    return {bench: f"{args.data.rstrip('/')}/{bench}" for bench in args.benchmarks}


def _check_inputs(args, data: dict[str, str]) -> None:
    """Every input and the output checked before the model (and torch) is loaded."""
    from linguaforge.pipelines.devices import check_device
    from linguaforge.pipelines.locations import (
        check_local_file_or_folder,
        check_model_location,
        check_not_pickle_only,
    )
    from linguaforge.pipelines.output_folder import claim_output_folder

    check_device(args.device, "--device")
    check_model_location(args.model, "--model")
    check_not_pickle_only(args.model, "--model")
    for bench, location in data.items():
        check_local_file_or_folder(location, "--data" if len(data) == 1 else f"--data ({bench})")
    claim_output_folder(args.out, "--out", [args.model, *data.values()], create=False)  # made when results come


@contextmanager
def _generator(args):
    """One generator for every benchmark: a worker per device (--devices), or the model here on --device."""
    if args.devices:
        from linguaforge.pipelines.generation.parallel import ParallelGenerator

        with ParallelGenerator(args.model, args.devices, dtype=args.dtype, batch_size=args.batch_size) as generator:
            yield generator
        return
    from linguaforge.pipelines.devices import resolve_device
    from linguaforge.pipelines.generation.causal_lm import HFCausalLMGenerator, default_streams

    device = resolve_device(args.device, "--device")
    yield HFCausalLMGenerator.from_pretrained(args.model, dtype=args.dtype, batch_size=args.batch_size,
                                              device=str(device), streams=args.streams or default_streams(device))


@contextmanager
def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        def for_benchmark(bench: str):
            bar = progress.add_task(bench, total=None)

            def report(done, total, metrics):
                progress.update(bar, completed=done, total=total,
                                description=f"{bench} {metrics.get('language', '')} "
                                            f"acc={metrics.get('accuracy', 0):.3f}")
            return report

        yield for_benchmark


@contextmanager
def _imports_kept_out_of_collection(args):
    """torch and transformers leave about 370 000 long-lived objects for the collector to track, and its full
    passes over them while they are being made took 0.9 s of a `linguaforge eval` (7 passes; 0.08 s for all
    collections once paused). In the console script they are imported with collection paused, then frozen:
    never traversed again. (Not for in-process callers of `main`, whose garbage would stay frozen with them.)"""
    if not args.console_script:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _write_lmeval_results(args, scores: list[dict]) -> Path:
    """All languages' scores as one lm-eval results file, where lm-eval puts it: <out>/<model>/results_<date>.json."""
    from datetime import datetime

    from linguaforge.pipelines.benchmarks.lmeval_format import lmeval_results, sanitize_model_name

    name = scores[0]["model"]  # as the report names it (--name, or the last part of --model)
    doc = lmeval_results(scores, name, {"batch_size": args.batch_size, "limit": args.limit,
                                        "gen_kwargs": {"max_gen_toks": args.max_new_tokens}, "dtype": args.dtype})
    started = datetime.now()
    doc |= {"date": started.timestamp(), "total_evaluation_time_seconds": str(sum(s.get("seconds", 0) for s in scores))}
    folder = Path(args.out) / sanitize_model_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"results_{started.isoformat().replace(':', '-')}.json"
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def write_samples(args, scores: list[dict]) -> list[Path]:
    """--log-samples: lm-eval's samples_<task>_<date>.jsonl per unit, beside the results JSON (<out>/<model>/)."""
    from datetime import datetime

    import pyarrow.parquet as pq

    from linguaforge.pipelines.benchmarks.lmeval_format import samples_lines, sanitize_model_name, task_name

    folder = Path(args.out) / sanitize_model_name(scores[0]["model"])
    folder.mkdir(parents=True, exist_ok=True)
    stamp, written = datetime.now().isoformat().replace(":", "-"), []
    for unit in scores:
        records = pq.read_table(Path(args.out) / unit["benchmark"] / unit["language"] / RECORDS_FILE).to_pylist()
        path = folder / f"samples_{task_name(unit)}_{stamp}.jsonl"
        path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in samples_lines(records, unit)),
                        encoding="utf-8")
        written.append(path)
    return written
