"""`linguaforge report`: rebuild the per-language comparison, from a run's store or from folders of scores.json."""

from __future__ import annotations

from linguaforge.flows.cli.common import (
    console,
    err_console,
    load_run_config,
    open_run_store,
    warn_unreadable,
)
from linguaforge.flows.cli.render import print_rows
from linguaforge.pipelines.benchmarks.files import PLOT_FILE, REPORT_FILE, SCORES_FILE


def register(sub) -> None:
    rep = sub.add_parser("report", help="rebuild the per-language comparison report")
    rep.add_argument("source", help="a run configuration (.yaml: reads its store) or a folder of scores.json files")
    rep.add_argument("--out", default="./linguaforge-report", help="output folder (default ./linguaforge-report)")
    rep.add_argument("--store", help="artifact store URL (overrides the configuration's)")
    rep.add_argument("--models", nargs="*", help="only these model names")
    rep.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    """Rebuild the comparison: from a run's store (CONFIG.yaml) or from folders of scores.json files."""
    from linguaforge.pipelines.benchmarks import build_comparison, read_scores
    from linguaforge.pipelines.benchmarks.report import latest_scores
    from linguaforge.pipelines.output_folder import claim_output_folder

    claim_output_folder(args.out, "--out", [] if args.source.endswith((".yaml", ".yml")) else [args.source])
    if args.source.endswith((".yaml", ".yml")):
        args.config = args.source
        cfg = load_run_config(args)
        store = open_run_store(cfg)
        units = [m for m in store.list("eval") if not args.models or m.params.get("model") in args.models]
        warn_unreadable(store, "eval")
        scores = latest_scores(store.open((m.kind, m.key)).read_json(SCORES_FILE) for m in units)  # oldest first
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
    print_rows(rows)
    console.print(f"report: {args.out}/{REPORT_FILE}   plot: {args.out}/{PLOT_FILE}")
    return 0
