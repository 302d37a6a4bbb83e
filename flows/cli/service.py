"""Running linguaforge as a service: `server` (a Prefect server with its UI) and `serve` (the deployments)."""

from __future__ import annotations

import os
import subprocess
import sys

from rich.table import Table

from linguaforge.flows.cli.common import (
    PrefectUnreachable,
    check_prefect_api,
    console,
    cron_flag,
    load_run_config,
)


def register(sub) -> None:
    srv = sub.add_parser("server", help="start a local Prefect server and UI (SQLite; PostgreSQL via "
                         "PREFECT_API_DATABASE_CONNECTION_URL)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=4200)
    srv.set_defaults(func=cmd_server)
    serve = sub.add_parser("serve", help="register the deployments and their schedules on PREFECT_API_URL")
    serve.add_argument("config", nargs="?", help="YAML run configuration: the deployments' default parameters")
    serve.add_argument("--store", help="artifact store URL (overrides store.url)")
    serve.add_argument("--gpu", action="store_true", help="also the Kubernetes GPU pool and its deployment")
    serve.add_argument("--eval-cron", type=cron_flag, default="0 2 * * *", help="cron of the evaluation deployment ('none': no schedule)")
    serve.add_argument("--only", nargs="*", help="only these deployments (pipeline, maet, evaluate, maet-gpu)")
    serve.add_argument("--result-storage", help="fsspec URL for Prefect's task results, e.g. s3://bucket/prefect-results "
                       "(default: the worker's local PREFECT_HOME)")
    serve.set_defaults(func=cmd_serve)


def cmd_server(args) -> int:
    """`prefect server start` with linguaforge's defaults (SQLite under PREFECT_HOME unless
    PREFECT_API_DATABASE_CONNECTION_URL points at PostgreSQL)."""

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
    cfg = load_run_config(args)
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
