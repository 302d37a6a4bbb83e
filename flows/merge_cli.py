"""`linguaforge merge CONFIG`: decomposition + merge on given model and delta paths or URLs, without the
rest of the pipeline (and without Prefect). Example: configs/merge-example.yaml.

    base: meta-llama/Meta-Llama-3-8B | ./base | s3://bucket/models/base     (an HF safetensors folder)
    out: ./merged
    deltas:                                   # sparse deltas of the masked CPT runs, against `base`
      ability_pivot: s3://bucket/run/delta/<key>/delta.safetensors
      pivot: ./deltas/en.safetensors
      languages: {sw: ./deltas/sw.safetensors, bn: ./deltas/bn.safetensors}
    decompose: {alpha: 0.8, beta: 0.2}
    merge: {method: maet, k2_percent: 80, gamma: 0.2, eta: 1.0}
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from linguaforge.flows.config import ConfigError, DecomposeConfig, MergeConfig, StoreConfig, read_yaml_mapping
from linguaforge.pipelines.languages import check_language


class DeltaPaths(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    ability_pivot: str = Field(..., description="Sparse delta of LLM_{A,L0} (ability + pivot masked CPT).")
    pivot: str = Field(..., description="Sparse delta of LLM_{L0}.")
    languages: dict[str, str] = Field(..., min_length=1, description="Sparse delta of each LLM_{Li}.")

    @field_validator("languages")
    @classmethod
    def _iso_codes(cls, v: dict[str, str]) -> dict[str, str]:
        for code in v:
            check_language(code, "deltas.languages key")
        return v


class MergeJob(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    base: str = Field(..., description="The base model: HF id, local folder or remote folder.")
    out: str = Field("./merged", description="Output HF folder.")
    deltas: DeltaPaths
    decompose: DecomposeConfig = Field(default_factory=DecomposeConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    cache_dir: str = StoreConfig.model_fields["cache_dir"].default
    storage_options: dict = Field(default_factory=dict, description="fsspec options for remote paths (no credentials).")
    seed: int = 0
    force: bool = Field(False, description="Write into a non-empty `out`, replacing only the files the merge writes.")

    @model_validator(mode="after")
    def _weights_for_the_languages(self) -> MergeJob:
        if self.merge.mu and set(self.merge.mu) != set(self.deltas.languages):
            raise ValueError(f"merge.mu must weight exactly the languages of deltas.languages "
                             f"({', '.join(sorted(self.deltas.languages))}), got {', '.join(sorted(self.merge.mu))}")
        return self


def load_job(path: str | Path) -> MergeJob:
    data = read_yaml_mapping(path, "merge config")
    try:
        return MergeJob.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg'].removeprefix('Value error, ')}"
                 for e in exc.errors()]
        raise ConfigError(f"merge config {path} is invalid:\n  " + "\n  ".join(lines)) from None


def run_merge_job(job: MergeJob, progress=None) -> dict:
    """Decompose into a folder next to the output, then merge; returns the merge report."""
    import tempfile

    from linguaforge.pipelines.locations import check_model_location
    from linguaforge.pipelines.maet.decompose import decompose
    from linguaforge.pipelines.maet.deltas import SparseDelta
    from linguaforge.pipelines.maet.merge import MergeSpec, merge
    from linguaforge.pipelines.models import resolve_file, resolve_model_dir

    def delta(uri: str) -> SparseDelta:
        return SparseDelta(resolve_file(uri, job.cache_dir, job.storage_options))

    check_model_location(job.base, "base")
    base_dir = resolve_model_dir(job.base, job.cache_dir, job.storage_options)
    m, d = job.merge, job.decompose
    with tempfile.TemporaryDirectory(prefix="decomposed-") as tmp:
        parts = decompose(delta(job.deltas.ability_pivot), delta(job.deltas.pivot),
                          {c: delta(u) for c, u in job.deltas.languages.items()}, Path(tmp),
                          alpha=d.alpha, beta=d.beta, form=d.language_delta_form)
        spec = MergeSpec.of(m, m.method, SparseDelta(parts["ability"]),
                            {c: SparseDelta(parts[c]) for c in job.deltas.languages}, job.seed)
        return merge(base_dir, job.out, spec, shard_bytes=m.shard_size_mb * 2**20, progress=progress,
                     replace=job.force)
