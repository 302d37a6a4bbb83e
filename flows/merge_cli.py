"""`linguaforge merge CONFIG`: a merge without the rest of the pipeline (and without Prefect). Every input may be a
sparse delta file (`.safetensors`, as masked CPT writes them) or a fine-tuned model (HF hub id, local or
s3:// folder), whose delta against the base is computed on the fly. Two forms, and mergekit's YAML:

    # MAET (configs/merge-example.yaml): Eq. 2, then Eqs. 3-5
    base: meta-llama/Meta-Llama-3-8B
    out: ./merged
    deltas:
      ability_pivot: s3://bucket/run/delta/<key>/delta.safetensors
      pivot: ./deltas/en.safetensors
      languages: {sw: ./deltas/sw.safetensors, bn: ./my-bengali-finetune}
    decompose: {alpha: 0.8, beta: 0.2}
    merge: {method: maet, k2_percent: 80, gamma: 0.2, eta: 1.0}

    # any method over weighted inputs (configs/merge-models-example.yaml)
    base: ./base
    models: [{model: ./math-ft, weight: 1.0}, {model: ./swahili-ft, weight: 0.5, density: 0.3}]
    merge: {method: ties}
    dtype: bfloat16

    # or a mergekit configuration as it is (merge_method, base_model, models[].parameters, dtype)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from linguaforge.flows.config import ConfigError, DecomposeConfig, MergeConfig, StoreConfig, read_yaml_mapping
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.languages import check_language
from linguaforge.pipelines.merging.mergekit import is_mergekit_config, job_from_mergekit
from linguaforge.pipelines.merging.parameters import check_setting
from linguaforge.pipelines.merging.settings import language_weights
from linguaforge.pipelines.settings import DtypeName, Seed
from linguaforge.storage.settings import no_credentials


class DeltaPaths(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    ability_pivot: str = Field(..., description="LLM_{A,L0} (ability + pivot masked CPT): its sparse delta or model.")
    pivot: str = Field(..., description="LLM_{L0}: its sparse delta or model.")
    languages: dict[str, str] = Field(..., min_length=1, description="Each LLM_{Li}: its sparse delta or model.")

    @field_validator("languages")
    @classmethod
    def _iso_codes(cls, v: dict[str, str]) -> dict[str, str]:
        for code in v:
            check_language(code, "deltas.languages key")
        return v


class ModelInput(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: str = Field(..., description="A fine-tuned model (hub id, folder, s3:// folder) or a sparse delta file.")
    weight: Any = Field(1.0, description="Its weight: a number, a gradient over the layers, or filter rules.")
    density: Any = Field(None, description="TIES / DARE: the share of its delta kept (default: the method's).")
    role: Literal["model", "ability", "language"] = Field(
        "model", description="For maet: which input is R(A) (one) and which are language deltas R(L_i).")

    @field_validator("weight", "density")
    @classmethod
    def _setting(cls, v: Any, info) -> Any:
        try:
            return v if v is None else check_setting(v, info.field_name)
        except InputError as exc:
            raise ValueError(str(exc)) from None


class MergeJob(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    base: str = Field(..., description="The base model: HF id, local folder or remote folder.")
    out: str = Field("./merged", description="Output HF folder.")
    deltas: DeltaPaths | None = Field(None, description="MAET: the masked-CPT results, decomposed by Eq. 2.")
    models: list[ModelInput] | None = Field(None, description="Any method: weighted fine-tunes or deltas.")
    dtype: DtypeName | None = Field(None, description="Output dtype (default the base's).")
    decompose: DecomposeConfig = Field(default_factory=DecomposeConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    cache_dir: str = StoreConfig.model_fields["cache_dir"].default
    storage_options: dict = Field(default_factory=dict, description="fsspec options for remote paths (no credentials).")
    seed: Seed = 0
    force: bool = Field(False, description="Write into a non-empty `out`, replacing only the files the merge writes.")

    @field_validator("storage_options")
    @classmethod
    def _no_credentials(cls, options: dict) -> dict:
        return no_credentials(options)


    @model_validator(mode="after")
    def _one_form(self) -> MergeJob:
        if (self.deltas is None) == (self.models is None):
            raise ValueError("give either `deltas` (MAET's masked-CPT results) or `models` (weighted inputs), "
                             "not both or neither")
        if self.models is not None and not self.models:
            raise ValueError("models: empty")
        return self

    @model_validator(mode="after")
    def _weights_for_the_languages(self) -> MergeJob:
        if self.deltas is not None and isinstance(self.merge.mu, str):
            object.__setattr__(self.merge, "mu", language_weights(self.merge.mu, list(self.deltas.languages)))
        if self.deltas is not None and self.merge.mu and set(self.merge.mu) != set(self.deltas.languages):
            raise ValueError(f"merge.mu must weight exactly the languages of deltas.languages "
                             f"({', '.join(sorted(self.deltas.languages))}), got {', '.join(sorted(self.merge.mu))}")
        return self


def load_job(path: str | Path) -> MergeJob:
    data = read_yaml_mapping(path, "merge config")
    if is_mergekit_config(data):
        try:
            data = job_from_mergekit(data, f"merge config {path} (mergekit)")
        except InputError as exc:
            raise ConfigError(str(exc)) from None
    try:
        return MergeJob.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg'].removeprefix('Value error, ')}"
                 for e in exc.errors()]
        raise ConfigError(f"merge config {path} is invalid:\n  " + "\n  ".join(lines)) from None


def run_merge_job(job: MergeJob, progress=None) -> dict:
    """Resolve every input, then merge into `job.out` as one transaction (pipelines/publish.py): MAET's masked-CPT
    results are decomposed inside the transaction's staging folder. Returns the merge report."""
    from linguaforge.pipelines.maet.decompose import decompose
    from linguaforge.pipelines.merging.deltas import SparseDelta
    from linguaforge.pipelines.merging.engine import MergeSpec, write_merge
    from linguaforge.pipelines.merging.inputs import MergeInput, WithNewRows, open_delta, weights_folder
    from linguaforge.pipelines.publish import OutputTransaction
    from linguaforge.pipelines.weights import WeightReader

    base_dir = weights_folder(job.base, job.cache_dir, job.storage_options, "base")
    base = WeightReader(base_dir)
    m, d = job.merge, job.decompose

    def delta(uri: str):
        return open_delta(uri, base, job.cache_dir, job.storage_options, job.base)

    with OutputTransaction(job.out, job.force, inputs=[base_dir, *input_uris(job)]) as tx:
        if job.models is not None:
            inputs = [MergeInput(i.model, delta(i.model), i.role, i.weight, i.density) for i in job.models]
            spec = MergeSpec(m.method, inputs, m.method_params(m.method), job.seed)
        else:
            languages = {c: delta(u) for c, u in job.deltas.languages.items()}
            parts = decompose(delta(job.deltas.ability_pivot), delta(job.deltas.pivot), languages,
                              tx.work.parent / "decomposed", alpha=d.alpha, beta=d.beta, form=d.language_delta_form)
            # a language model that extends the vocabulary brings its new tokens to the merge (R(L_i) cannot)
            spec = MergeSpec.of(m, m.method, SparseDelta(parts["ability"]),
                                {c: WithNewRows(SparseDelta(parts[c]), languages[c])
                                 if getattr(languages[c], "extension", None) else SparseDelta(parts[c])
                                 for c in job.deltas.languages}, job.seed)
        spec.dtype = job.dtype
        report = write_merge(base_dir, tx.work, spec, shard_bytes=m.shard_size_mb * 2**20, progress=progress,
                             base_label=job.base, reproduce=reproducible(job))
        tx.publish()
    return report


def reproducible(job: MergeJob) -> dict:
    """The job as a configuration that makes the same folder again (its output folder and --force left out)."""
    return job.model_dump(mode="json", exclude={"out", "force"}, exclude_none=True)


def input_uris(job: MergeJob) -> list[str]:
    """Every input the job names (the output must be none of them, nor inside or around one)."""
    if job.models is not None:
        return [i.model for i in job.models]
    return [job.deltas.ability_pivot, job.deltas.pivot, *job.deltas.languages.values()]
