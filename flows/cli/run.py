"""`linguaforge run [CONFIG]`: the pipeline (the embedded demo by default), with its live display, its own temporary
Prefect server when PREFECT_API_URL is unset, and clean stops."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from linguaforge.flows.cli.common import (
    check_prefect_api,
    console,
    debugging,
    load_run_config,
    open_run_store,
)
from linguaforge.flows.cli.plan import local_gpu_memory, verdict_before_run
from linguaforge.flows.cli.render import print_summary


def register(sub) -> None:
    run = sub.add_parser("run", help="run the pipeline (embedded demo by default)")
    run.add_argument("config", nargs="?", help="YAML run configuration (default: configs/demo.yaml)")
    run.add_argument("overrides", nargs="*", metavar="KEY.PATH=VALUE",
                     help="settings changed for this run, e.g. full_cpt.train.steps=200 languages=[de,sw]")
    run.add_argument("--store", help="artifact store URL (overrides store.url)")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="stream the full Prefect log here too (it always goes to the run's log file)")
    run.add_argument("--outputs", metavar="FILE", help="write what the run made, by role (artifact refs), as JSON")
    run.add_argument("--gpu-memory", type=float, metavar="GiB",
                     help="GiB per GPU the plan checks against (default: this machine's first GPU, if any)")
    run.add_argument("--ignore-plan", action="store_true", help="run even where `linguaforge plan` says a stage "
                     "will not fit in GPU memory")
    run.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    if args.config and "=" in args.config and not Path(args.config).exists():  # `run key=value`: no file named
        args.overrides, args.config = [args.config, *args.overrides], None
    cfg = load_run_config(args)  # the whole configuration is checked before torch, Prefect and transformers load
    if args.outputs:
        _check_outputs_file(Path(args.outputs))
    memory = args.gpu_memory if args.gpu_memory is not None else None if cfg.device == "cpu" else local_gpu_memory()
    verdict_before_run(cfg, memory, args.ignore_plan)
    check_prefect_api()
    # fail fast, before any Prefect machinery starts, on a store we cannot use (URL, bucket, credentials)
    open_run_store(cfg, create=True)
    from linguaforge.flows.live import RunDisplay, run_log_path

    console.print(f"[bold]linguaforge[/] run [cyan]{cfg.name}[/]: pivot {cfg.pivot_language}, "
                  f"targets {', '.join(cfg.languages)}, store {cfg.store.url}")
    if args.overrides:
        console.print(f"overrides: {' '.join(args.overrides)}")
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
    print_summary(outputs, cfg, time.perf_counter() - began)
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

    if not debugging(args):
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
