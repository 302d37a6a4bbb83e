"""The `linguaforge` command line.

    linguaforge run [CONFIG] [--store URL]     run the pipeline (configs/demo.yaml by default)
    linguaforge artifacts [CONFIG] [--kind K]  list committed artifacts
    linguaforge merge MERGE_CONFIG             decomposition + merge on given models and deltas (no Prefect)
    linguaforge server [--port 4200]           start a local Prefect server with its UI
    linguaforge serve [CONFIG] [--gpu]         register the deployments (and schedules) on PREFECT_API_URL
"""

from __future__ import annotations

import argparse
import errno
import gc
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _console(stderr: bool) -> Console:
    """A terminal gets tables at its own width; a pipe or a log file (CI, `| tee`, Prefect workers) gets them
    in full, where rich would otherwise cut every column to fit 80 characters (keys, store locations)."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=240 if wide else None)


console = _console(stderr=False)
err_console = _console(stderr=True)


def _environment() -> None:
    """Quiet, offline-friendly defaults, set before prefect/transformers/deepspeed are imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not os.environ.get("PREFECT_API_URL"):
        # Ephemeral API: the temporary server is torn down at exit while it may still be flushing event
        # batches; its shutdown tracebacks are noise for a CLI user, so the server's own loggers stay
        # quiet (flow and task logs are unaffected).
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_SERVER_LEVEL", "CRITICAL")
        # Prefect waits 20 s for its temporary server; on a busy machine it takes longer to start
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def _load(args) -> RunConfig:  # noqa: F821 - imported lazily below
    """The run configuration, checked in full (files it names included) before anything heavy is imported."""
    from linguaforge.flows.config import load_config
    from linguaforge.flows.preflight import check_run

    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    cfg = load_config(path)
    if getattr(args, "store", None) is not None:
        cfg.store.url = args.store
    if args.command == "run":
        check_run(cfg, str(path or "the embedded demo"))
    return cfg


def _open_store(cfg, create: bool = False):
    """The run's store. Read-only commands leave `create` off: a mistyped path must not become an empty store."""
    from linguaforge.storage.settings import open_store

    return open_store(cfg.store, create=create)


def cmd_run(args) -> int:
    cfg = _load(args)  # the whole configuration is checked before torch, Prefect and transformers load
    if args.outputs:
        _check_outputs_file(Path(args.outputs))
    check_prefect_api()
    # fail fast, before any Prefect machinery starts, on a store we cannot use (URL, bucket, credentials)
    _open_store(cfg, create=True)
    from linguaforge.flows.live import RunDisplay, run_log_path

    console.print(f"[bold]linguaforge[/] run [cyan]{cfg.name}[/]: pivot {cfg.pivot_language}, "
                  f"targets {', '.join(cfg.languages)}, store {cfg.store.url}")
    log_path = run_log_path(cfg)
    console.print(f"log: {log_path}" + ("" if args.verbose else "  (-v streams it here)"))
    began = time.perf_counter()
    with _prefect_api(args.stopper, log_path.with_suffix(".server.log")):
        try:
            outputs = _run_pipeline(cfg, args, RunDisplay(console, cfg, args.verbose, log_path))
        except KeyboardInterrupt:
            from linguaforge.flows.stopping import cancel_flow_runs

            args.stopper.cleanups.insert(0, lambda: cancel_flow_runs("stopped by a signal to `linguaforge run`"))
            raise
        finally:
            args.stopper.run_cleanups()  # while the API's settings still hold
    _print_summary(outputs, cfg, time.perf_counter() - began)
    if args.outputs:  # for scripts and schedulers: every artifact the run made or reused, by role
        partial = Path(args.outputs).with_name(f".{Path(args.outputs).name}.partial")
        partial.write_text(outputs.model_dump_json(indent=1), encoding="utf-8")
        os.replace(partial, args.outputs)  # whole or not at all
    return 0


def _check_outputs_file(path: Path) -> None:
    """--outputs names a file in an existing folder; one that exists is replaced only if an earlier run wrote it
    (it reads as a run's outputs): a user's file of the same name is never overwritten."""
    from linguaforge.flows.config import ConfigError
    from linguaforge.flows.outputs import RunOutputs

    if not path.resolve().parent.is_dir():
        raise ConfigError(f"--outputs {path}: no such folder {path.resolve().parent}")
    if path.is_dir():
        raise ConfigError(f"--outputs {path}: is a folder; name a file (e.g. {path}/outputs.json)")
    if path.exists():
        try:  # ours: exactly the fields a run's outputs file has, and valid as one
            ours = set(json.loads(path.read_bytes())) == set(RunOutputs.model_fields)
            RunOutputs.model_validate_json(path.read_bytes())
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise ConfigError(f"--outputs {path}: exists and is not a run's outputs file; linguaforge never writes "
                              "over a file it did not write: name another file") from None


def _run_pipeline(cfg, args, display):
    from linguaforge.flows.pipeline import pipeline
    from linguaforge.tasks.progress import attach_console

    if not _debugging(args):
        _drop_tracebacks_of_expected_errors()
    with display:
        attach_console(display)
        try:
            return pipeline(cfg)
        finally:
            attach_console(None)


def _prefect_api(stopper, server_log: Path):
    """The Prefect API of this run: PREFECT_API_URL's, or a temporary server of this command's own (flows/server.py)
    that lives in its own process group, dies with this process, and is stopped by the stop's clean-ups after the
    logs are flushed to it."""
    from contextlib import nullcontext

    from linguaforge.flows.server import TemporaryServer
    from linguaforge.flows.stopping import flush_prefect_logs

    if os.environ.get("PREFECT_API_URL"):
        stopper.cleanups.append(flush_prefect_logs)
        return nullcontext()
    server = TemporaryServer(server_log)
    server.start(timeout_s=float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    stopper.cleanups += [flush_prefect_logs, server.stop]
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: server.url})


def _debugging(args) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("LINGUAFORGE_DEBUG") == "1"


def _drop_tracebacks_of_expected_errors() -> None:
    """Prefect logs every failed task with its traceback. For bad input (whose message already names the input
    and the fault) the terminal shows the message alone; the Prefect UI and --debug keep the traceback."""
    from linguaforge.flows.config import ConfigError
    from linguaforge.pipelines.errors import InputError
    from linguaforge.storage import StoreError

    expected = (ConfigError, InputError, StoreError)

    class DropExpectedTracebacks(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.exc_info and isinstance(record.exc_info[1], expected):
                record.exc_info, record.exc_text = None, None
            return True

    for logger in [logging.getLogger(), *(logging.getLogger(n) for n in logging.root.manager.loggerDict
                                          if n.startswith("prefect"))]:
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler) and "APILogHandler" not in type(handler).__name__:
                handler.addFilter(DropExpectedTracebacks())


def _print_summary(outputs, cfg, seconds: float) -> None:
    table = Table(title=f"linguaforge run {cfg.name} — {seconds:.0f}s")
    for column in ("stage output", "status", "artifact", "location"):
        table.add_column(column)
    refs = outputs.all_refs()
    ran = sum(not ref.reused for ref in refs)
    for name, ref in outputs.stages():
        status = "[dim]skipped (committed)[/]" if ref.reused else "[green]ran[/]"
        table.add_row(name, status, f"{ref.kind}/{ref.key[:12]}", _short(ref.uri))
    if units := [unit.ref for unit in outputs.evaluations]:
        fresh = sum(not ref.reused for ref in units)
        table.add_row(f"eval ({len(units)} units)", f"[green]{fresh} ran[/], {len(units) - fresh} skipped",
                      "eval/…", _short(units[0].uri.rsplit("/", 1)[0]))
    console.print(table)
    if outputs.report is not None:
        _print_comparison(cfg, outputs.report)
    if ran == 0:
        console.print(f"Every stage was already committed in {cfg.store.url}: nothing re-executed.")
    else:
        console.print(f"{ran} stage(s) ran, {len(refs) - ran} skipped. Artifacts are in {cfg.store.url}.")


def _print_comparison(cfg, report_ref) -> None:
    reader = _open_store(cfg).open(report_ref)
    _print_rows(reader.read_json("rows.json"))
    if "headline.json" in reader.files():
        _print_headline(reader.read_json("headline.json"), cfg.pivot_language)
    console.print(f"report: {_short(str(reader.path('report.md')))}")
    console.print(f"plot:   {_short(str(reader.path('comparison.png')))}")


def _print_headline(rows: list[dict], pivot: str) -> None:
    """What moved: every derived model's average Δ over the non-pivot languages, with its interval."""
    if not rows:
        return
    benches = [k for k in rows[0] if k not in ("model", "vs")]
    table = Table(title=f"headline: average Δ of chance-adjusted accuracy (points) over the non-{pivot} languages, "
                        "95 % paired interval")
    for column in ("model", "vs", *benches):
        table.add_column(column, justify="left" if column in ("model", "vs") else "right")
    for row in rows:
        cells = []
        for bench in benches:
            d = row[bench]
            if d is None:
                cells.append("not scored")
                continue
            colour = "green" if d["ci_low"] > 0 else "red" if d["ci_high"] < 0 else "white"
            cells.append(f"[{colour}]{d['delta']:+.1f}[/] [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]")
        table.add_row(row["model"], row["vs"], *cells)
    console.print(table)


def _rows(scores):
    from linguaforge.pipelines.benchmarks import comparison_rows

    return comparison_rows(scores)


def _print_rows(rows: list[dict]) -> None:
    """The per-language comparison as one table: a row per benchmark × model, a column per language."""
    languages = list(dict.fromkeys(r["language"] for r in rows if r["language"] != "average")) + ["average"]
    table = Table(title="accuracy % / chance-adjusted (Δ: adjusted points vs the model's own base)")
    for column in ("benchmark", "model", *languages):
        table.add_column(column, justify="left" if column in ("benchmark", "model") else "right")
    fixed = {"benchmark", "metric", "language", "n"}
    for bench in dict.fromkeys(r["benchmark"] for r in rows):
        by_lang = {r["language"]: r for r in rows if r["benchmark"] == bench}
        models = [c for c in next(iter(by_lang.values())) if c not in fixed and " - " not in c
                  and not c.startswith(("n ", "adj ", "chance "))]
        for i, model in enumerate(models):
            delta = next((c for c in by_lang[languages[-1]] if c.startswith(f"{model} - ")), None)
            cells = []
            for lang in languages:
                row = by_lang.get(lang)
                if row is None or row.get(model) is None:
                    cells.append("[dim]not scored[/]")
                    continue
                text = f"{row[model]:.1f}"
                if row.get(f"adj {model}") is not None:
                    text += f"/{row[f'adj {model}']:+.1f}"
                if delta and row.get(delta) is not None:
                    text += f" ({row[delta]:+.1f})"
                cells.append(f"[bold]{text}[/]" if lang == "average" else text)
            table.add_row(bench if i == 0 else "", model, *cells, end_section=i == len(models) - 1)
    console.print(table)


def _short(uri: str) -> str:
    """Local paths relative to the working directory; URLs as they are."""
    try:
        return os.path.relpath(uri) if "://" not in uri else uri
    except ValueError:
        return uri


def cmd_artifacts(args) -> int:
    store = _open_store(_load(args))
    table = Table(title=f"artifacts in {store.url}")
    for column in ("kind", "key", "stage", "files", "size", "created"):
        table.add_column(column)
    manifests = store.list(args.kind)
    for m in manifests:
        table.add_row(m.kind, m.key, m.stage, str(len(m.files)), _human(m.total_bytes), m.created_at[:19])
    console.print(table)
    console.print(f"{len(manifests)} artifact(s), {_human(sum(m.total_bytes for m in manifests))}")
    _warn_unreadable(store, args.kind)
    return 0


def _warn_unreadable(store, kind: str | None = None) -> None:
    """Manifests that cannot be read are named, never a reason to stop listing the others."""
    if bad := store.unreadable(kind):
        err_console.print(f"[yellow]{len(bad)} artifact(s) with an unreadable manifest, left out:[/] "
                          f"{', '.join(sorted(bad)[:5])}{' …' if len(bad) > 5 else ''} (`linguaforge verify` "
                          "says why; `verify --repair` removes them)", highlight=False)


def cmd_verify(args) -> int:
    """Recompute every digest in the store; with --repair, remove what is damaged (the next run re-makes it).
    Deletes only in a marked store, only inside it, never through a link: what cannot be removed is said."""
    from linguaforge.storage import StoreError

    store = _open_store(_load(args))
    if args.repair:
        store.require_marker("repair it")
    damaged = store.audit()
    table = Table(title=f"damaged artifacts in {store.url}")
    for column in ("artifact", "problem", "action"):
        table.add_column(column)
    removed = 0
    for artifact, problem in damaged.items():
        action = ""
        kind, _, key = artifact.partition("/")
        if args.repair and not key:
            action = "left alone: a linked kind folder (remove the link yourself)"
        elif args.repair:
            try:
                store.delete(kind, key)
                action, removed = "removed", removed + 1
            except StoreError as exc:
                action = f"left alone: {exc}"
        table.add_row(artifact, problem, action)
    total = len(store.list()) + removed
    if damaged:
        console.print(table)
    console.print(f"{total} artifact(s) checked, {len(damaged)} damaged"
                  + (f", {removed} removed: the next run re-makes them" if removed else ""))
    if leftovers := store.staging_leftovers():
        console.print(f"[dim]{len(leftovers)} entr{'y' if len(leftovers) == 1 else 'ies'} in the staging folder "
                      f"without an owner record, left alone: {', '.join(leftovers[:3])}[/]")
    return 1 if len(damaged) > removed else 0


def cmd_rm(args) -> int:
    """Delete artifacts the supported way: manifest first, then files; cached results notice on their next use."""
    from linguaforge.flows.config import ConfigError

    store = _open_store(_load(args))
    for name in args.artifacts:
        kind, _, key = name.partition("/")
        if not key or not store.exists(kind, key):
            raise ConfigError(f"artifact {name!r}: no such committed artifact in {store.url} (expected KIND/KEY, "
                              "as `linguaforge artifacts` lists them)")
    store.require_marker("delete artifacts")
    for name in args.artifacts:
        store.delete(*name.split("/", 1))
        console.print(f"removed {name}")
    return 0


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_eval(args) -> int:
    """Any HF causal LM on one benchmark, outside the pipeline (no Prefect, no store)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with _imports_kept_out_of_collection(args):
        from linguaforge.pipelines import loading  # noqa: F401  (torch, transformers' tokenizers: imported here)
        from linguaforge.pipelines.benchmarks import evaluate_model

    languages = _languages_flag(args.languages) if args.languages else None
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
    _print_rows(json.loads((Path(args.out) / "rows.json").read_text()) if (Path(args.out) / "rows.json").exists()
                else _rows(scores))
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


def _languages_flag(value: str) -> list[str]:
    from linguaforge.pipelines.languages import check_languages

    return check_languages([c.strip() for c in value.split(",")], "--languages")  # the config's own check


def _at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _devices(value: str) -> list[str]:
    """0,1 → cuda:0,cuda:1; names (cpu, cuda:N) as they are; each checked like --device."""
    from linguaforge.pipelines.devices import check_device
    from linguaforge.pipelines.errors import InputError

    devices = [f"cuda:{d}" if d.strip().isdigit() else d.strip() for d in value.split(",") if d.strip()]
    try:
        for device in devices:
            check_device(device, "--devices")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--devices: ")) from None
    if not devices:
        raise argparse.ArgumentTypeError("names no device")
    return devices


def _batch_size(value: str) -> int | str:
    return value if value == "auto" else _at_least_one(value)


def _cron(value: str) -> str:
    """The deployment's schedule, checked by the same rule Prefect applies when it stores it (names such as
    MON and JAN and macros such as @daily are valid cron), so a bad one is refused before anything starts."""
    if value == "none":
        return value
    import pydantic
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=value)
    except pydantic.ValidationError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a cron expression (minute hour day month weekday, "
                                         "e.g. '0 2 * * *' or '0 2 * * MON'), nor 'none'") from None
    return value


def cmd_report(args) -> int:
    """Rebuild the comparison: from a run's store (CONFIG.yaml) or from folders of scores.json files."""
    from linguaforge.pipelines.benchmarks import build_comparison, read_scores
    from linguaforge.pipelines.output_folder import claim_output_folder

    claim_output_folder(args.out, "--out", [] if args.source.endswith((".yaml", ".yml")) else [args.source])
    if args.source.endswith((".yaml", ".yml")):
        args.config = args.source
        cfg = _load(args)
        store = _open_store(cfg)
        units = [m for m in store.list("eval") if not args.models or m.params.get("model") in args.models]
        _warn_unreadable(store, "eval")
        newest = {}  # a store keeps the units of older runs too (another preset, an older evaluator): newest wins
        for m in units:  # oldest first
            score = store.open((m.kind, m.key)).read_json("scores.json")
            newest[score["model"], score["benchmark"], score["language"]] = score
        scores = list(newest.values())
        if len(scores) < len(units):
            console.print(f"[dim]{len(units) - len(scores)} older evaluation unit(s) superseded by newer ones[/]")
        title = f"linguaforge run {cfg.name}"
    else:
        scores = read_scores(args.source)
        title = f"linguaforge report {args.source}"
    if not scores:
        err_console.print(f"[red]linguaforge:[/] no evaluation scores found in {args.source}")
        return 1
    rows = build_comparison(scores, args.out, title=title)
    _print_rows(rows)
    console.print(f"report: {args.out}/report.md   plot: {args.out}/comparison.png")
    return 0


def check_prefect_api() -> None:
    """With PREFECT_API_URL set, the server must answer before anything runs; without it, Prefect starts a
    temporary one for this process."""
    import urllib.request

    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=5) as response:
            if response.status == 200:
                return
    except OSError as exc:
        reason = str(getattr(exc, "reason", exc))
    else:
        reason = f"HTTP {response.status}"
    raise PrefectUnreachable(f"no Prefect server answers at PREFECT_API_URL={url} ({reason}); start one with "
                             "`linguaforge server`, or unset PREFECT_API_URL to run on a temporary server")


class PrefectUnreachable(RuntimeError):
    pass


def cmd_server(args) -> int:
    """`prefect server start` with linguaforge's defaults (SQLite under PREFECT_HOME unless
    PREFECT_API_DATABASE_CONNECTION_URL points at PostgreSQL)."""
    import subprocess

    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "true",
           "PREFECT_UI_API_URL": f"http://{args.host}:{args.port}/api"}
    env.pop("PREFECT_API_URL", None)
    console.print(f"Prefect UI: http://{args.host}:{args.port}   then, in the shells that run linguaforge:\n"
                  f"  export PREFECT_API_URL=http://{args.host}:{args.port}/api")
    return subprocess.call([sys.executable, "-m", "prefect", "server", "start", "--host", args.host,
                            "--port", str(args.port)], env=env)


def cmd_serve(args) -> int:
    from linguaforge.flows.deployments import CPU_POOL, register

    if not os.environ.get("PREFECT_API_URL"):
        raise PrefectUnreachable("serve registers deployments on a Prefect server: set PREFECT_API_URL "
                                 "(e.g. http://127.0.0.1:4200/api after `linguaforge server`)")
    check_prefect_api()
    cfg = _load(args)
    cron = None if args.eval_cron in (None, "none") else args.eval_cron
    ids = register(cfg, gpu=args.gpu, eval_cron=cron, only=args.only, result_storage=args.result_storage)
    table = Table(title=f"deployments on {os.environ['PREFECT_API_URL']}")
    for column in ("deployment", "id"):
        table.add_column(column)
    for name, ident in ids.items():
        table.add_row(name, ident)
    console.print(table)
    console.print(f"Start a worker to run them:  prefect worker start --pool {CPU_POOL}")
    return 0


def cmd_merge(args) -> int:
    from rich.progress import Progress

    from linguaforge.flows.merge_cli import input_uris, load_job, run_merge_job
    from linguaforge.pipelines.merging.methods.maet import selection_warning
    from linguaforge.pipelines.publish import check_output_folder

    job = load_job(args.config)
    if args.out:
        job.out = args.out
    job.force = job.force or args.force
    check_output_folder(Path(job.out), job.force, [job.base, *input_uris(job)])  # before any weight is read
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"merge ({job.merge.method})", total=None)
        report = run_merge_job(job, progress=lambda done, total, _: bar.update(task, completed=done, total=total))
    if report["method"] == "maet":
        table = Table(title=f"MAET: {len(report['selected'])} of {report['eligible']} tensors get γR(A) "
                            f"(k2 = {report['k2_percent']} %){selection_warning(report)}")
        for column in ("tensor", "family", "S(τ)", "gets R(A)"):
            table.add_column(column)
        selected = set(report["selected"])
        for name, s in sorted(report["similarity"].items(), key=lambda kv: -kv[1]):
            table.add_row(name, report["families"][name], f"{s:.4g}", "yes" if name in selected else "")
        console.print(table)
    console.print(f"merged model ({report['method']}): {job.out}  ({len(report['files'])} shard(s), model card "
                  "README.md)")
    return 0


def _store_command(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command that works on the store a run configuration (or --store) names."""
    command = sub.add_parser(name, help=help_text)
    command.add_argument("config", nargs="?", help="YAML run configuration naming the store")
    command.add_argument("--store", help="artifact store URL (overrides store.url)")
    return command


def build_parser() -> argparse.ArgumentParser:
    from linguaforge.pipelines.benchmarks.registry import BENCHMARKS

    parser = argparse.ArgumentParser(prog="linguaforge", description="MAET and MindMerger as one resumable "
                                     "Prefect pipeline, with multilingual benchmark evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline (embedded demo by default)")
    run.add_argument("config", nargs="?", help="YAML run configuration (default: configs/demo.yaml)")
    run.add_argument("--store", help="artifact store URL (overrides store.url)")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="stream the full Prefect log here too (it always goes to the run's log file)")
    run.add_argument("--outputs", metavar="FILE", help="write what the run made, by role (artifact refs), as JSON")
    run.set_defaults(func=cmd_run)
    arts = _store_command(sub, "artifacts", "list committed artifacts")
    arts.add_argument("--kind", help="only this kind (corpus, base_llm, ...)")
    arts.set_defaults(func=cmd_artifacts)
    ev = sub.add_parser("eval", help="evaluate any HF causal LM on a benchmark, outside the pipeline")
    ev.add_argument("--model", required=True, help="HF hub id, local folder or s3:// folder")
    ev.add_argument("--benchmark", required=True, choices=list(BENCHMARKS))
    ev.add_argument("--data", required=True, help="HF dataset id, or a folder / URL with the official files")
    ev.add_argument("--languages", help="comma-separated ISO 639-1 codes (default: every language in the data)")
    ev.add_argument("--out", default="./linguaforge-eval", help="output folder (default ./linguaforge-eval)")
    ev.add_argument("--preset", default="mindmerger", help="prompt preset (mindmerger, native_cot, ...)")
    ev.add_argument("--scoring", default="generate", choices=["generate", "loglik"])
    ev.add_argument("--batch-size", type=_batch_size, default="auto",
                    help="items per batch, or auto (the default: the largest that fits on a GPU, found by halving on "
                         "out-of-memory from 64; 8 on the CPU)")
    ev.add_argument("--limit", type=_at_least_one, help="at most this many items per language")
    ev.add_argument("--max-new-tokens", type=_at_least_one)
    ev.add_argument("--exemplars", help="few-shot exemplar file for native_cot presets")
    ev.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ev.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    ev.add_argument("--devices", type=_devices, help="data-parallel: one worker per device, the items shared out "
                    "among them (e.g. 0,1,2,3 for four GPUs, or cuda:0,cuda:1); the records are those of one process")
    ev.add_argument("--streams", type=_at_least_one,
                    help="batches generated at once, each on its share of the CPU threads (default: 2 on a CPU "
                         "with 2 threads or more, else 1)")
    ev.add_argument("--name", help="model name in the report (default: the last part of --model)")
    ev.add_argument("--output-format", choices=["linguaforge", "lm-eval"], default="linguaforge",
                    help="lm-eval: also write <out>/<model>/results_<date>.json in lm-eval's results layout "
                         "(every unit writes results_lmeval.json beside its scores either way)")
    ev.set_defaults(func=cmd_eval)
    rep = sub.add_parser("report", help="rebuild the per-language comparison report")
    rep.add_argument("source", help="a run configuration (.yaml: reads its store) or a folder of scores.json files")
    rep.add_argument("--out", default="./linguaforge-report", help="output folder (default ./linguaforge-report)")
    rep.add_argument("--store", help="artifact store URL (overrides the configuration's)")
    rep.add_argument("--models", nargs="*", help="only these model names")
    rep.set_defaults(func=cmd_report)
    ver = _store_command(sub, "verify", "recompute every digest in a store; --repair removes what is damaged")
    ver.add_argument("--repair", action="store_true", help="remove damaged artifacts, so the next run re-makes them")
    ver.set_defaults(func=cmd_verify)
    rm = sub.add_parser("rm", help="delete committed artifacts (KIND/KEY, as `artifacts` lists them)")
    rm.add_argument("artifacts", nargs="+", metavar="KIND/KEY")
    rm.add_argument("--config", help="YAML run configuration naming the store")
    rm.add_argument("--store", help="artifact store URL (overrides store.url)")
    rm.set_defaults(func=cmd_rm)
    mrg = sub.add_parser("merge", help="merge fine-tuned models or deltas (maet, task_arithmetic, ties, dare) outside "
                         "the pipeline; reads mergekit YAML too")
    mrg.add_argument("config", help="merge configuration (configs/merge-example.yaml, configs/merge-models-example.yaml,"
                                    " or a mergekit YAML)")
    mrg.add_argument("--out", help="output folder (overrides `out`)")
    mrg.add_argument("--force", action="store_true", help="write into a non-empty output folder, replacing only "
                     "the files the merge writes")
    mrg.set_defaults(func=cmd_merge)
    srv = sub.add_parser("server", help="start a local Prefect server and UI (SQLite; PostgreSQL via "
                         "PREFECT_API_DATABASE_CONNECTION_URL)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=4200)
    srv.set_defaults(func=cmd_server)
    serve = sub.add_parser("serve", help="register the deployments and their schedules on PREFECT_API_URL")
    serve.add_argument("config", nargs="?", help="YAML run configuration: the deployments' default parameters")
    serve.add_argument("--store", help="artifact store URL (overrides store.url)")
    serve.add_argument("--gpu", action="store_true", help="also the Kubernetes GPU pool and its deployment")
    serve.add_argument("--eval-cron", type=_cron, default="0 2 * * *", help="cron of the evaluation deployment ('none': no schedule)")
    serve.add_argument("--only", nargs="*", help="only these deployments (pipeline, maet, evaluate, maet-gpu)")
    serve.add_argument("--result-storage", help="fsspec URL for Prefect's task results, e.g. s3://bucket/prefect-results "
                       "(default: the worker's local PREFECT_HOME)")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also LINGUAFORGE_DEBUG=1)")
    args = parser.parse_args(argv)
    args.console_script = argv is None
    _environment()
    from linguaforge.flows.config import ConfigError
    from linguaforge.flows.server import ServerDidNotStart
    from linguaforge.flows.stopping import StopOnSignals
    from linguaforge.pipelines.errors import InputError
    from linguaforge.storage import StoreError

    stopper = args.stopper = StopOnSignals(lambda text: err_console.print(f"[yellow]linguaforge:[/] {escape(text)}",
                                                                          highlight=False))
    try:
        with stopper:
            return args.func(args)
    except KeyboardInterrupt:
        stopper.run_cleanups()
        err_console.print(f"[yellow]linguaforge:[/] stopped ({'SIGTERM' if stopper.exit_code == 143 else 'Ctrl-C'}); "
                          "nothing half-made was kept. Run the same command again to resume.")
        return stopper.exit_code
    except Exception as exc:
        if _debugging(args):
            raise
        code = 2 if isinstance(exc, ConfigError | PrefectUnreachable | ServerDidNotStart) else 1
        label = "" if code == 2 else f"{type(exc).__name__}: "
        if isinstance(exc, OSError) and exc.errno in OS_ERRORS:  # the machine refused: name the path and why
            label, exc = "", _os_error(exc)
        elif not isinstance(exc, ConfigError | PrefectUnreachable | ServerDidNotStart | InputError | StoreError):
            label = f"unexpected {type(exc).__name__} (run with --debug for the traceback): "
        err_console.print(f"[red]linguaforge:[/] {escape(label + _clip(str(exc)))}", highlight=False)
        return code
    finally:
        if args.console_script:  # about to exit
            # the interpreter's shutdown runs full garbage collections over every object the imports made: 0.8-1.0 s
            # with torch and transformers imported, 0.14 s with them frozen out of collection (the OS frees them)
            gc.freeze()


OS_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
             errno.EROFS: "the filesystem is read-only", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted", errno.ENOENT: "no such file or folder",
             errno.ENOTDIR: "a part of the path is a file, not a folder", errno.EISDIR: "is a folder, not a file",
             errno.ENAMETOOLONG: "the name is too long", errno.EMFILE: "too many open files",
             errno.EIO: "an input/output error from the device"}


def _os_error(exc: OSError) -> str:
    """What the machine refused, where, and what to do: one line instead of a traceback."""
    where = exc.filename if exc.filename is not None else "a file"
    return (f"{where}: {OS_ERRORS[exc.errno]}; the command stopped there (what it commits is whole or absent): "
            "fix that and run the same command again")


def _clip(message: str, limit: int = 2000) -> str:
    """A message quotes the bad input, which can be huge: keep its head."""
    return message if len(message) <= limit else f"{message[:limit]}… ({len(message) - limit} more characters)"


if __name__ == "__main__":
    sys.exit(main())
