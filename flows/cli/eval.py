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
    console,
    devices_flag,
    languages_flag,
)
from linguaforge.flows.cli.render import comparison_table_rows, print_rows


def register(sub) -> None:
    from linguaforge.pipelines.benchmarks.registry import BENCHMARKS

    ev = sub.add_parser("eval", help="evaluate any HF causal LM on a benchmark, outside the pipeline")
    ev.add_argument("--model", required=True, help="HF hub id, local folder or s3:// folder")
    ev.add_argument("--benchmark", required=True, choices=list(BENCHMARKS))
    ev.add_argument("--data", required=True, help="HF dataset id, or a folder / URL with the official files")
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
    ev.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
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
    ev.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    """Any HF causal LM on one benchmark, outside the pipeline (no Prefect, no store)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with _imports_kept_out_of_collection(args):
        from linguaforge.pipelines import loading  # noqa: F401  (torch, transformers' tokenizers: imported here)
        from linguaforge.pipelines.benchmarks import evaluate_model

    languages = languages_flag(args.languages) if args.languages else None
    from linguaforge.pipelines.devices import check_device, resolve_device
    from linguaforge.pipelines.locations import (
        check_local_file_or_folder,
        check_model_location,
        check_not_pickle_only,
    )
    from linguaforge.pipelines.output_folder import claim_output_folder

    check_device(args.device, "--device")
    check_model_location(args.model, "--model")  # before the model (and torch) are loaded
    check_not_pickle_only(args.model, "--model")
    check_local_file_or_folder(args.data, "--data")
    claim_output_folder(args.out, "--out", [args.model, args.data], create=False)  # made when results come
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        bar = progress.add_task(f"{args.benchmark}", total=None)

        def report(done, total, metrics):
            progress.update(bar, completed=done, total=total,
                            description=f"{args.benchmark} {metrics.get('language', '')} "
                                        f"acc={metrics.get('accuracy', 0):.3f}")

        with _parallel_generator(args) as generator:
            scores = evaluate_model(args.model, args.benchmark, args.data, args.out, languages=languages,
                                    preset=args.preset, batch_size=args.batch_size, limit=args.limit,
                                    scoring=args.scoring, max_new_tokens=args.max_new_tokens,
                                    exemplars=args.exemplars, dtype=args.dtype, model_name=args.name,
                                    progress=report, streams=args.streams or "auto",
                                    device=str(resolve_device(args.device, "--device")), generator=generator)
    print_rows(json.loads((Path(args.out) / "rows.json").read_text()) if (Path(args.out) / "rows.json").exists()
                else comparison_table_rows(scores))
    console.print(f"records and scores: {args.out}/{args.benchmark}/<language>/   report: {args.out}/report.md")
    if args.output_format == "lm-eval":
        console.print(f"lm-eval results: {_write_lmeval_results(args, scores)}")
    return 0


@contextmanager
def _parallel_generator(args):
    """--devices d1,d2,...: a worker process per device, each scoring its share of the items; else None."""
    if not args.devices:
        yield None
        return
    from linguaforge.pipelines.generation.parallel import ParallelGenerator

    with ParallelGenerator(args.model, args.devices, dtype=args.dtype, batch_size=args.batch_size) as generator:
        yield generator


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
