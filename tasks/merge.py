"""MAET transfer stages: decompose (Eq. 2) and merge (Eq. 3–5), plus the task-vector baseline; each one
cached Prefect task whose artifact is sparse deltas (decompose) or an HF model folder under `model/`."""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

from linguaforge.pipelines.maet.cpt import DELTA_FILE
from linguaforge.pipelines.maet.decompose import ABILITY_FILE, language_file
from linguaforge.pipelines.maet.decompose import decompose as decompose_deltas
from linguaforge.pipelines.maet.settings import DecomposeConfig
from linguaforge.pipelines.merging.deltas import SparseDelta
from linguaforge.pipelines.merging.engine import MergeSpec, write_merge
from linguaforge.pipelines.merging.methods import METHODS
from linguaforge.pipelines.merging.methods.maet import selection_warning
from linguaforge.pipelines.merging.settings import MergeConfig
from linguaforge.pipelines.settings import key_params
from linguaforge.storage import ArtifactRef, ArtifactWriter
from linguaforge.tasks.common import (
    MODEL_FOLDER,
    RunContext,
    Source,
    StageSpec,
    open_store,
    run_stage,
    stage_task,
    ui_key,
)
from linguaforge.tasks.progress import StageProgress, ui_artifact


def decompose_params(ctx: RunContext, settings: DecomposeConfig) -> dict:  # Eq. 2 reads its settings alone
    return key_params(settings)


def merge_params(ctx: RunContext, settings: MergeConfig, method: str, ability_file: str, languages: bool) -> dict:
    """Only what this merge reads enters its key (a change to γ must not re-run the task-vector baseline): the
    method's declared parameters, the languages and their weights when it is given language deltas, the seed
    when the method draws."""
    return (settings.key_params(method, languages) | {"ability_file": ability_file}
            | ({"languages": ctx.languages} if languages else {})
            | ({"seed": ctx.seed} if METHODS[method].seeded else {}))


# decompose 2: keys derived from the settings models
DECOMPOSE = StageSpec("decompose", 2, "decomposed", files=(ABILITY_FILE,), settings=DecomposeConfig,
                      params=decompose_params)
# merge 2: merge_report.json flags ties at the cut of T; 3: keys derived from the method's declaration; 4: methods in
# their own files (task_vector is the task_arithmetic method), a model card in the folder
MERGE = StageSpec("merge", 4, "model", files=(MODEL_FOLDER,), run_name="merge-{method}")

def _delta(store, ref: ArtifactRef, rel: str = DELTA_FILE) -> SparseDelta:
    return SparseDelta(store.open(ref).path(rel))


@stage_task(DECOMPOSE)
def decompose(ctx: RunContext, d: DecomposeConfig, ability_pivot: ArtifactRef, pivot: ArtifactRef,
              languages: dict[str, ArtifactRef]) -> ArtifactRef:
    """R(A) and every R(L_i) from the masked-CPT deltas, as sparse deltas against the same base."""
    store = open_store(ctx.store)
    params = DECOMPOSE.params(ctx, d)
    sources = ({"ability_pivot": Source.of(ability_pivot), "pivot": Source.of(pivot)}
               | {f"lang_{c}": Source.of(r) for c, r in sorted(languages.items())})

    def build(w: ArtifactWriter) -> None:
        paths = decompose_deltas(_delta(store, ability_pivot), _delta(store, pivot),
                                 {c: _delta(store, r) for c, r in languages.items()}, w.path,
                                 alpha=d.alpha, beta=d.beta, form=d.language_delta_form)
        w.metrics.update({f"changed_entries_{name}": sum(SparseDelta(p).nnz(n) for n in SparseDelta(p).names())
                          for name, p in paths.items()})

    return run_stage(store, DECOMPOSE, params=params,
                     sources=sources, build=build)


@stage_task(MERGE)
def merge_models(ctx: RunContext, m: MergeConfig, method: str, base: Source, ability: ArtifactRef, ability_file: str,
                 languages: ArtifactRef | None = None) -> ArtifactRef:
    """One method of the merge engine (maet, task_arithmetic, ties, dare) into an HF folder `model/`."""
    store = open_store(ctx.store)
    params = merge_params(ctx, m, method, ability_file, languages is not None)
    sources = {"base": base, "ability": Source.of(ability)} | ({"language_deltas": Source.of(languages)} if languages else {})

    def build(w: ArtifactWriter) -> None:
        langs = {} if languages is None else {c: _delta(store, languages, language_file(c))
                                              for c in ctx.languages}
        spec = MergeSpec.of(m, method, _delta(store, ability, ability_file), langs, ctx.seed)
        with StageProgress(f"merge ({method})") as progress:
            report = write_merge(base.local(store), w.path / MODEL_FOLDER, spec, shard_bytes=m.shard_size_mb * 2**20,
                                 expected_languages=ctx.languages if languages else None, progress=progress,
                                 base_label=base.label)
        w.write_json("merge_report.json", report)
        w.metrics.update({"method": method, "tensors": report["tensors"]})
        if method == "maet":
            w.metrics.update({"eligible": report["eligible"], "selected": len(report["selected"]),
                              "selected_tensors": report["selected"]})
            _publish_selection(ctx.name, report)

    return run_stage(store, MERGE, params=params, sources=sources,
                     build=build)


def _publish_selection(run_name: str, report: dict) -> None:
    """Per-tensor similarity and whether R(A) went in: the table users read to see what MAET did."""
    selected = set(report["selected"])
    rows = [{"tensor": name, "family": report["families"][name], "similarity": f"{s:.4g}",
             "gets R(A)": name in selected} for name, s in report["similarity"].items()]
    ui_artifact(create_table_artifact, rows, key=ui_key(f"maet-selection-{run_name}"),
                description=f"MAET merge: S(τ) per tensor, {len(selected)} of {len(rows)} get γR(A)"
                            + selection_warning(report))

