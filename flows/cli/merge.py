"""`linguaforge merge CONFIG`: decomposition and merging without the rest of the pipeline (flows/merge_cli.py)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from linguaforge.flows.cli.common import console


def register(sub) -> None:
    mrg = sub.add_parser("merge", help="merge fine-tuned models or deltas (maet, task_arithmetic, ties, dare) outside "
                         "the pipeline; reads mergekit YAML too")
    mrg.add_argument("config", help="merge configuration (configs/merge-example.yaml, configs/merge-models-example.yaml,"
                                    " or a mergekit YAML)")
    mrg.add_argument("--out", help="output folder (overrides `out`)")
    mrg.add_argument("--force", action="store_true", help="write into a non-empty output folder, replacing only "
                     "the files the merge writes")
    mrg.set_defaults(func=cmd_merge)


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
