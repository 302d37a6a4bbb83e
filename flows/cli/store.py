"""The store's commands: `artifacts` (list), `verify [--repair]` (re-hash; remove what is damaged), `rm KIND/KEY`."""

from __future__ import annotations

from rich.table import Table

from linguaforge.flows.cli.common import (
    console,
    human,
    load_run_config,
    open_run_store,
    store_command,
    warn_unreadable,
)


def register(sub) -> None:
    arts = store_command(sub, "artifacts", "list committed artifacts")
    arts.add_argument("--kind", help="only this kind (corpus, base_llm, ...)")
    arts.set_defaults(func=cmd_artifacts)
    ver = store_command(sub, "verify", "recompute every digest in a store; --repair removes what is damaged")
    ver.add_argument("--repair", action="store_true", help="remove damaged artifacts, so the next run re-makes them")
    ver.set_defaults(func=cmd_verify)
    rm = sub.add_parser("rm", help="delete committed artifacts (KIND/KEY, as `artifacts` lists them)")
    rm.add_argument("artifacts", nargs="+", metavar="KIND/KEY")
    rm.add_argument("--config", help="YAML run configuration naming the store")
    rm.add_argument("--store", help="artifact store URL (overrides store.url)")
    rm.set_defaults(func=cmd_rm)


def cmd_artifacts(args) -> int:
    store = open_run_store(load_run_config(args))
    table = Table(title=f"artifacts in {store.url}")
    for column in ("kind", "key", "stage", "files", "size", "created"):
        table.add_column(column)
    manifests = store.list(args.kind)
    for m in manifests:
        table.add_row(m.kind, m.key, m.stage, str(len(m.files)), human(m.total_bytes), m.created_at[:19])
    console.print(table)
    console.print(f"{len(manifests)} artifact(s), {human(sum(m.total_bytes for m in manifests))}")
    warn_unreadable(store, args.kind)
    return 0


def cmd_verify(args) -> int:
    """Recompute every digest in the store; with --repair, remove what is damaged (the next run re-makes it).
    Deletes only in a marked store, only inside it, never through a link: what cannot be removed is said."""
    from linguaforge.storage import StoreError

    store = open_run_store(load_run_config(args))
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

    store = open_run_store(load_run_config(args))
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
