"""The `linguaforge` command line.

    linguaforge run [CONFIG] [--store URL]     run the pipeline (configs/demo.yaml by default)
    linguaforge artifacts [CONFIG] [--kind K]  list committed artifacts
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
console = Console(stderr=False)
err_console = Console(stderr=True)


def _environment() -> None:
    """Quiet, offline-friendly defaults, set before prefect/transformers/deepspeed are imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def _load(args) -> RunConfig:  # noqa: F821 - imported lazily below
    from flows.config import load_config

    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    cfg = load_config(path)
    if getattr(args, "store", None):
        cfg.store.url = args.store
    return cfg


def cmd_run(args) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from flows.pipeline import pipeline
    from tasks.progress import attach_console

    cfg = _load(args)
    from storage import ArtifactStore

    # fail fast, before any Prefect machinery starts, on a store we cannot use (URL, bucket, credentials)
    ArtifactStore(cfg.store.url, cache_dir=cfg.store.cache_dir, storage_options=cfg.store.storage_options)
    console.print(f"[bold]linguaforge[/] run [cyan]{cfg.name}[/]: pivot {cfg.pivot_language}, "
                  f"targets {', '.join(cfg.languages)}, store {cfg.store.url}")
    began = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        attach_console(progress)
        try:
            outputs = pipeline(cfg)
        finally:
            attach_console(None)
    _print_summary(outputs, cfg, time.perf_counter() - began)
    return 0


def _print_summary(outputs: dict, cfg, seconds: float) -> None:
    table = Table(title=f"linguaforge run {cfg.name} — {seconds:.0f}s")
    for column in ("stage output", "status", "artifact", "location"):
        table.add_column(column)
    ran = 0
    for name, ref in outputs.items():
        ran += not ref.reused
        status = "[dim]skipped (committed)[/]" if ref.reused else "[green]ran[/]"
        table.add_row(name, status, f"{ref.kind}/{ref.key[:12]}", _short(ref.uri))
    console.print(table)
    if ran == 0:
        console.print(f"Every stage was already committed in {cfg.store.url}: nothing re-executed.")
    else:
        console.print(f"{ran} stage(s) ran, {len(outputs) - ran} skipped. Artifacts are in {cfg.store.url}.")


def _short(uri: str) -> str:
    """Local paths relative to the working directory; URLs as they are."""
    try:
        return os.path.relpath(uri) if "://" not in uri else uri
    except ValueError:
        return uri


def cmd_artifacts(args) -> int:
    from storage import ArtifactStore

    cfg = _load(args)
    store = ArtifactStore(cfg.store.url, cache_dir=cfg.store.cache_dir, storage_options=cfg.store.storage_options)
    table = Table(title=f"artifacts in {store.url}")
    for column in ("kind", "key", "stage", "files", "size", "created"):
        table.add_column(column)
    manifests = store.list(args.kind)
    for m in manifests:
        table.add_row(m.kind, m.key, m.stage, str(len(m.files)), _human(m.total_bytes), m.created_at[:19])
    console.print(table)
    console.print(f"{len(manifests)} artifact(s), {_human(sum(m.total_bytes for m in manifests))}")
    return 0


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linguaforge", description="MAET and MindMerger as one resumable "
                                     "Prefect pipeline, with multilingual benchmark evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline (embedded demo by default)")
    run.add_argument("config", nargs="?", help="YAML run configuration (default: configs/demo.yaml)")
    run.add_argument("--store", help="artifact store URL (overrides store.url)")
    run.set_defaults(func=cmd_run)
    arts = sub.add_parser("artifacts", help="list committed artifacts")
    arts.add_argument("config", nargs="?", help="YAML run configuration naming the store")
    arts.add_argument("--store", help="artifact store URL (overrides store.url)")
    arts.add_argument("--kind", help="only this kind (corpus, base_llm, ...)")
    arts.set_defaults(func=cmd_artifacts)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _environment()
    from flows.config import ConfigError
    from pipelines.errors import InputError
    from storage import StoreError

    try:
        return args.func(args)
    except ConfigError as exc:
        err_console.print(f"[red]linguaforge:[/] {exc}", highlight=False)
        return 2
    except (InputError, StoreError) as exc:
        err_console.print(f"[red]linguaforge: {type(exc).__name__}:[/] {exc}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
