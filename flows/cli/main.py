"""The `linguaforge` command line: one module per command (each registers its parser), one error policy.

    linguaforge run [CONFIG]                  the pipeline (configs/demo.yaml by default)          run.py
    linguaforge plan [CONFIG]                 memory per GPU of every training stage, before it runs plan.py
    linguaforge artifacts | verify | rm       what a store holds; re-hash it; delete from it       store.py
    linguaforge eval --model M --benchmark B  any HF causal LM on a benchmark, outside the pipeline eval.py
    linguaforge report SOURCE                 rebuild the per-language comparison                 report.py
    linguaforge merge CONFIG                  decomposition and merging, outside the pipeline       merge.py
    linguaforge server | serve                a Prefect server; the deployments on it               service.py

Every failure a user can cause ends in one line that names the input and what is wrong (exit 2 for a bad
configuration, 1 otherwise); Ctrl-C and SIGTERM stop cleanly (130 / 143); --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import gc

from rich.markup import escape

import linguaforge.flows.cli.eval as eval_command
import linguaforge.flows.cli.merge as merge
import linguaforge.flows.cli.plan as plan
import linguaforge.flows.cli.report as report
import linguaforge.flows.cli.run as run
import linguaforge.flows.cli.service as service
import linguaforge.flows.cli.store as store
from linguaforge.flows.cli.common import (
    OS_ERRORS,
    PrefectUnreachable,
    clip,
    debugging,
    environment,
    err_console,
    os_error_message,
)

COMMANDS = (run, plan, store, eval_command, report, merge, service)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linguaforge", description="MAET and MindMerger as one resumable "
                                     "Prefect pipeline, with multilingual benchmark evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also LINGUAFORGE_DEBUG=1)")
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # KEY.PATH=VALUE overrides written after an option (`run CONFIG --store X steps=3`)
        args.overrides = [*args.overrides, *extra]
    args.console_script = argv is None
    environment()
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
        if debugging(args):
            raise
        code = 2 if isinstance(exc, ConfigError | PrefectUnreachable | ServerDidNotStart) else 1
        label = "" if code == 2 else f"{type(exc).__name__}: "
        if isinstance(exc, OSError) and exc.errno in OS_ERRORS:  # the machine refused: name the path and why
            label, exc = "", os_error_message(exc)
        elif not isinstance(exc, ConfigError | PrefectUnreachable | ServerDidNotStart | InputError | StoreError):
            label = f"unexpected {type(exc).__name__} (run with --debug for the traceback): "
        err_console.print(f"[red]linguaforge:[/] {escape(label + clip(str(exc)))}", highlight=False)
        return code
    finally:
        if args.console_script:  # about to exit
            # the interpreter's shutdown runs full garbage collections over every object the imports made: 0.8-1.0 s
            # with torch and transformers imported, 0.14 s with them frozen out of collection (the OS frees them)
            gc.freeze()
