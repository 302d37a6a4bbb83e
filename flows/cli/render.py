"""How results look in the terminal: the run's summary, the per-language comparison and the headline, as tables.

A narrow terminal (80 columns) squeezes the number columns, never a name: the columns that name a stage or a model
are as wide as their longest entry (mindmerger-full_cpt and mindmerger-maet must not both read `mindmerg…`)."""

from __future__ import annotations

from rich.table import Table

from linguaforge.flows.cli.common import console, open_run_store, short
from linguaforge.pipelines.benchmarks.files import HEADLINE_FILE, PLOT_FILE, REPORT_FILE, ROWS_FILE


def print_summary(outputs, cfg, seconds: float) -> None:
    table = Table(title=f"linguaforge run {cfg.name} — {seconds:.0f}s")
    longest = max([len(name) for name, _ in outputs.stages()] + [len("stage output")])
    table.add_column("stage output", min_width=longest, no_wrap=True)
    for column in ("status", "artifact", "location"):
        table.add_column(column, overflow="fold")
    refs = outputs.all_refs()
    ran = sum(not ref.reused for ref in refs)
    for name, ref in outputs.stages():
        status = "[dim]skipped (committed)[/]" if ref.reused else "[green]ran[/]"
        table.add_row(name, status, f"{ref.kind}/{ref.key[:12]}", short(ref.uri))
    if units := [unit.ref for unit in outputs.evaluations]:
        fresh = sum(not ref.reused for ref in units)
        table.add_row(f"eval ({len(units)} units)", f"[green]{fresh} ran[/], {len(units) - fresh} skipped",
                      "eval/…", short(units[0].uri.rsplit("/", 1)[0]))
    console.print(table)
    if outputs.report is not None:
        _print_comparison(cfg, outputs.report)
    if ran == 0:
        console.print(f"Every stage was already committed in {cfg.store.url}: nothing re-executed.")
    else:
        console.print(f"{ran} stage(s) ran, {len(refs) - ran} skipped. Artifacts are in {cfg.store.url}.")


def _print_comparison(cfg, report_ref) -> None:
    reader = open_run_store(cfg).open(report_ref)
    print_rows(reader.read_json(ROWS_FILE))
    if HEADLINE_FILE in reader.files():
        _print_headline(reader.read_json(HEADLINE_FILE), cfg.pivot_language)
    console.print(f"report: {short(str(reader.path(REPORT_FILE)))}")
    console.print(f"plot:   {short(str(reader.path(PLOT_FILE)))}")


def _print_headline(rows: list[dict], pivot: str) -> None:
    """What moved: every derived model's average Δ over the non-pivot languages, with its interval."""
    if not rows:
        return
    benches = [k for k in rows[0] if k not in ("model", "vs")]
    table = Table(title=f"headline: average Δ of chance-adjusted accuracy (points) over the non-{pivot} languages, "
                        "95 % paired interval")
    for column in ("model", "vs"):
        table.add_column(column, min_width=max(len(str(r[column])) for r in rows), no_wrap=True)
    for column in benches:
        table.add_column(column, justify="right", overflow="fold")
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


def comparison_table_rows(scores):
    from linguaforge.pipelines.benchmarks import comparison_rows

    return comparison_rows(scores)


def print_rows(rows: list[dict]) -> None:
    """The per-language comparison as one table: a row per benchmark × model, a column per language."""
    languages = list(dict.fromkeys(r["language"] for r in rows if r["language"] != "average")) + ["average"]
    table = Table(title="accuracy % / chance-adjusted (Δ: adjusted points vs the model's own base)")
    fixed = {"benchmark", "metric", "language", "n"}
    names = [c for c in rows[0] if c not in fixed and " - " not in c and not c.startswith(("n ", "adj ", "chance "))]
    table.add_column("benchmark", min_width=max(len(r["benchmark"]) for r in rows), no_wrap=True)
    table.add_column("model", min_width=max(len(n) for n in names), no_wrap=True)
    for column in languages:  # a narrow terminal wraps a number, never cuts it
        table.add_column(column, justify="right", overflow="fold")
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
