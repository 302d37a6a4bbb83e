"""MAET transfer stages: decompose (Eq. 2) and merge (Eq. 3–5), plus the task-vector baseline; each one
cached Prefect task whose artifact is sparse deltas (decompose) or an HF model folder under `model/`."""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

from linguaforge.flows.config import RunConfig
from linguaforge.pipelines.decompose import decompose as decompose_deltas
from linguaforge.pipelines.deltas import SparseDelta
from linguaforge.pipelines.merge import MergeSpec, merge, selection_warning
from linguaforge.storage import ArtifactRef, ArtifactWriter
from linguaforge.tasks.common import Source, open_store, run_stage, stage_task, ui_key
from linguaforge.tasks.progress import StageProgress

DECOMPOSE_VERSION = 1
MERGE_VERSION = 2  # 2: merge_report.json flags ties at the cut of T


def _delta(store, ref: ArtifactRef, rel: str = "delta.safetensors") -> SparseDelta:
    return SparseDelta(store.open(ref).path(rel))


@stage_task(name="decompose")
def decompose(cfg: RunConfig, ability_pivot: ArtifactRef, pivot: ArtifactRef,
              languages: dict[str, ArtifactRef]) -> ArtifactRef:
    """R(A) and every R(L_i) from the masked-CPT deltas, as sparse deltas against the same base."""
    store = open_store(cfg.store)
    d = cfg.decompose
    params = {"alpha": d.alpha, "beta": d.beta, "form": d.language_delta_form}
    sources = ({"ability_pivot": Source.of(ability_pivot), "pivot": Source.of(pivot)}
               | {f"lang_{c}": Source.of(r) for c, r in sorted(languages.items())})

    def build(w: ArtifactWriter) -> None:
        paths = decompose_deltas(_delta(store, ability_pivot), _delta(store, pivot),
                                 {c: _delta(store, r) for c, r in languages.items()}, w.path,
                                 alpha=d.alpha, beta=d.beta, form=d.language_delta_form)
        w.metrics.update({f"changed_entries_{name}": sum(SparseDelta(p).nnz(n) for n in SparseDelta(p).names())
                          for name, p in paths.items()})

    return run_stage(store, kind="decomposed", stage="decompose", version=DECOMPOSE_VERSION, params=params,
                     sources=sources, build=build)


@stage_task(name="merge", task_run_name="merge-{method}")
def merge_models(cfg: RunConfig, method: str, base: Source, ability: ArtifactRef, ability_file: str,
                 languages: ArtifactRef | None = None) -> ArtifactRef:
    """One method of the merge engine (maet, task_vector, ties, dare) into an HF folder `model/`."""
    store = open_store(cfg.store)
    m = cfg.merge
    # only what this method reads enters its key: a change to γ must not re-run the task-vector baseline
    relevant = {"maet": {"k2_percent": m.k2_percent, "gamma": m.gamma, "eta": m.eta, "mu": m.mu,
                         "families": m.tensor_families, "languages": cfg.languages},
                "task_vector": {"lambda": m.task_vector_lambda},
                "ties": {"ties_density": m.ties_density, "languages": cfg.languages},
                "dare": {"dare_drop": m.dare_drop, "mu": m.mu, "languages": cfg.languages, "seed": cfg.seed}}
    params = {"method": method, "shard_size_mb": m.shard_size_mb, "ability_file": ability_file} | relevant[method]
    sources = {"base": base, "ability": Source.of(ability)} | ({"language_deltas": Source.of(languages)} if languages else {})

    def build(w: ArtifactWriter) -> None:
        langs = {} if languages is None else {c: _delta(store, languages, f"language-{c}.safetensors")
                                              for c in cfg.languages}
        spec = MergeSpec(method=method, ability=_delta(store, ability, ability_file), languages=langs, mu=m.mu,
                         k2_percent=m.k2_percent, gamma=m.gamma, eta=m.eta, families=list(m.tensor_families),
                         task_vector_lambda=m.task_vector_lambda, ties_density=m.ties_density,
                         dare_drop=m.dare_drop, seed=cfg.seed)
        with StageProgress(f"merge ({method})") as progress:
            report = merge(base.local(store), w.path / "model", spec, shard_bytes=m.shard_size_mb * 2**20,
                           expected_languages=cfg.languages if languages else None, progress=progress)
        w.write_json("merge_report.json", report)
        w.metrics.update({"method": method, "tensors": report["tensors"]})
        if method == "maet":
            w.metrics.update({"eligible": report["eligible"], "selected": len(report["selected"]),
                              "selected_tensors": report["selected"]})
            _publish_selection(cfg, report)

    return run_stage(store, kind="model", stage="merge", version=MERGE_VERSION, params=params, sources=sources,
                     build=build)


def _publish_selection(cfg: RunConfig, report: dict) -> None:
    """Per-tensor similarity and whether R(A) went in: the table users read to see what MAET did."""
    selected = set(report["selected"])
    rows = [{"tensor": name, "family": report["families"][name], "similarity": f"{s:.4g}",
             "gets R(A)": name in selected} for name, s in report["similarity"].items()]
    create_table_artifact(rows, key=ui_key(f"maet-selection-{cfg.name}"),
                          description=f"MAET merge: S(τ) per tensor, {len(selected)} of {len(rows)} get γR(A)"
                                      + selection_warning(report))

