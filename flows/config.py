"""The run configuration: one pydantic model for a whole linguaforge run.

The same models are the YAML schema (`configs/*.yaml`), the Prefect flow parameters and therefore the
Prefect UI's run form (titles, descriptions, bounds and enums come from the Field definitions here).

Resources are named by URI everywhere: an HF hub id (`meta-llama/Meta-Llama-3-8B`), a local path, any
fsspec URL (`s3://bucket/corpus.jsonl`), `hf:<dataset id>` for HF datasets, or `demo:<name>` for what
the embedded demo world generates (`demo:llm`, `demo:encoder`, `demo:ability`, `demo:general/<lang>`,
`demo:translation/<lang>`, `demo:queries/math`, `demo:bench/<benchmark>`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from linguaforge.pipelines.languages import check_language

DEMO_PREFIX = "demo:"


class _Model(BaseModel):
    # allow_inf_nan=False: every float setting must be finite (a NaN γ would merge into NaN weights)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class StoreConfig(_Model):
    url: str = Field(
        "./.linguaforge/store",
        title="Store URL",
        description="Where artifacts live: a local folder, s3://bucket/prefix (AWS, MinIO), gs://bucket/prefix, "
        "or memory://name. Credentials come from the environment (AWS_ACCESS_KEY_ID, ...), never from here.",
    )
    cache_dir: str = Field("./.linguaforge/cache", description="Local cache of files read from a remote store.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra fsspec options, e.g. {endpoint_url: http://minio:9000}. No credentials.",
    )


class ModelsConfig(_Model):
    base_llm: str = Field(
        "demo:llm", title="Base LLM",
        description="HF id or path of the base causal LM (e.g. meta-llama/Meta-Llama-3-8B); demo:llm = tiny demo Llama.",
    )
    encoder: str = Field(
        "demo:encoder", title="Multilingual encoder",
        description="HF id or path of the multilingual encoder for MindMerger (e.g. google/mt5-xl); only its "
        "encoder is loaded.",
    )
    tokenizer: str | None = Field(
        None, description="Tokenizer to use instead of the base LLM's own (must match its vocabulary and BOS/EOS)."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for HF ids.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype when loading.")


class CorpusSource(_Model):
    uri: str = Field(..., description="hf:<dataset id>[@config], a .jsonl/.parquet/.txt path or URL, or demo:<name>.")
    format: Literal["auto", "jsonl", "parquet", "text", "hf"] = Field("auto", description="File format; auto = by suffix.")
    text_field: str = Field("text", description="Column holding the document text (jsonl, parquet, hf).")
    split: str = Field("train", description="Split, for hf: sources.")
    max_documents: int | None = Field(None, ge=1, description="Read at most this many documents.")


class CorporaConfig(_Model):
    ability: CorpusSource = Field(
        default_factory=lambda: CorpusSource(uri="demo:ability/en"),
        description="English-only ability corpus (math or science), e.g. OpenWebMath or a science corpus.",
    )
    general: dict[str, CorpusSource] = Field(
        default_factory=dict,
        description="General text per language (ISO 639-1 → source), e.g. a CC/Wikipedia slice; must cover the "
        "pivot language and every target language. Empty with a demo world = the demo world's text.",
    )


class CorpusPrepConfig(_Model):
    block_size: int = Field(256, ge=8, le=131072, description="Tokens per packed training block.")
    packing: Literal["concat", "document"] = Field(
        "concat",
        description="concat: documents joined with EOS, blocks may span documents; document: a block never "
        "holds tokens of two documents (the tail is padded).",
    )
    min_chars: int = Field(1, ge=1, description="Drop documents shorter than this after normalisation (counted).")
    max_chars: int = Field(100_000, ge=1, description="Drop documents longer than this (counted, not truncated).")
    ability_mix_ratio: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of ability tokens in the ability + general-pivot mixture."
    )


class TrainConfig(_Model):
    steps: int = Field(100, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(1e-4, gt=0, le=1.0)
    schedule: Literal["constant", "cosine"] = Field("cosine", description="LR schedule after warmup.")
    warmup_steps: int = Field(0, ge=0)
    batch_tokens: int = Field(8192, ge=1, description="Tokens per optimizer step, reached by gradient accumulation.")
    micro_batch_size: int = Field(8, ge=1, description="Blocks per forward pass.")
    weight_decay: float = Field(0.0, ge=0.0)
    adam_betas: tuple[float, float] = Field((0.9, 0.95))
    adam_eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(1.0, gt=0, description="Max global gradient norm; null = no clipping.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast on GPU; fp32 on CPU.")
    backend: Literal["torch", "deepspeed"] = Field("torch", description="Plain torch, or DeepSpeed (ZeRO).")
    deepspeed_config: str | None = Field(
        None, description="DeepSpeed JSON config (e.g. deploy/deepspeed/zero2.json) when backend=deepspeed."
    )
    checkpoint_every: int = Field(50, ge=1, description="Write a resumable checkpoint every N steps.")
    processes: int = Field(1, ge=1, le=1024, description="Training processes (one per GPU) launched with torchrun "
                           "on this node; 1 = train inside the task's own process.")

    @model_validator(mode="after")
    def _several_processes_need_deepspeed(self) -> TrainConfig:
        if self.processes > 1 and self.backend != "deepspeed":
            raise ValueError("processes > 1 needs backend: deepspeed (the plain torch back end is one device)")
        return self


class BootstrapConfig(_Model):
    """Demo only: brief pre-training of the tiny LLM so the base model has some language in it."""

    train: TrainConfig = Field(default_factory=lambda: TrainConfig(
        steps=300, learning_rate=2e-3, warmup_steps=20, batch_tokens=4096, micro_batch_size=16))


class ProbeConfig(_Model):
    k1_percent: float = Field(5.0, gt=0.0, le=100.0, title="k1 (%)",
                              description="Share of neurons kept as key neurons (Eq. 1).")
    granularity: Literal["row", "element"] = Field(
        "row", description="row: one output unit of a weight matrix, scored by its row-delta norm; element: each scalar."
    )
    selection: Literal["global", "per_tensor"] = Field("global", description="Top-k1 over the whole model or per tensor.")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=50, schedule="constant"))


class MaskedCPTConfig(_Model):
    train: TrainConfig = Field(default_factory=TrainConfig)
    language_train: TrainConfig | None = Field(
        None, description="Masked CPT settings for the language runs (LLM_L0 and each LLM_Li) when they differ "
        "from the ability run's; null = `train` for every run.")

    def settings_for(self, ability: bool) -> TrainConfig:
        return self.train if ability or self.language_train is None else self.language_train


class FullCPTConfig(_Model):
    train: TrainConfig = Field(default_factory=TrainConfig)


class DecomposeConfig(_Model):
    alpha: float = Field(0.8, title="α", description="Weight of the ability+pivot delta in R(A) (Eq. 2).")
    beta: float = Field(0.2, title="β", description="Weight of the pivot-language delta subtracted in R(A) (Eq. 2).")
    language_delta_form: Literal["direct", "pivot_removed"] = Field(
        "direct", description="direct: R(L_i) = Θ_Li − Θ_o; pivot_removed: the pivot-language delta subtracted too."
    )


TensorFamily = Literal["q", "k", "v", "o", "up", "gate", "down", "embed", "norm", "lm_head"]


class MergeConfig(_Model):
    method: Literal["maet", "task_vector", "ties", "dare"] = Field("maet", description="Merge method.")
    k2_percent: float = Field(80.0, ge=0.0, le=100.0, title="k2 (%)",
                              description="Share of tensors (lowest ability·language similarity) that get R(A).")
    gamma: float = Field(0.2, title="γ", description="Scale of R(A) on the selected tensors (Eq. 5).")
    eta: float = Field(1.0, title="η", description="Scale of R_Lang (Eq. 5).")
    mu: dict[str, float] = Field(
        default_factory=dict, title="μ per language",
        description="Weight of each language delta in R_Lang (Eq. 3); empty = 1.0 for every target language.",
    )
    tensor_families: list[TensorFamily] = Field(
        default_factory=lambda: ["q", "k", "v", "o", "up", "gate", "down"],
        description="Tensor families eligible for T (the paper's Table 3).",
    )
    task_vector_lambda: float = Field(1.0, title="λ", description="Task-vector baseline scale.")
    ties_density: float = Field(0.2, gt=0.0, le=1.0, description="TIES: share of each delta kept by magnitude.")
    dare_drop: float = Field(0.9, ge=0.0, lt=1.0, description="DARE: drop probability (rescaled by 1/(1-p)).")
    shard_size_mb: int = Field(2000, ge=1, description="Output safetensors shard size.")
    baselines: list[Literal["task_vector", "full_cpt"]] = Field(
        default_factory=lambda: ["task_vector", "full_cpt"], description="Baselines built next to the MAET model."
    )


class MindMergerStageConfig(_Model):
    learning_rate: float = Field(2e-5, gt=0, le=1.0)
    epochs: float = Field(3.0, gt=0)
    global_batch_size: int = Field(128, ge=1)
    micro_batch_size: int = Field(8, ge=1)
    max_source_len: int = Field(200, ge=1, description="Encoder input tokens.")
    max_target_len: int = Field(200, ge=1, description="LLM prompt + target tokens.")
    checkpoint_every: int = Field(100, ge=1)


class MindMergerConfig(_Model):
    enabled: bool = True
    task: Literal["math", "csqa", "xnli"] = Field("math", description="Augmentation-stage task.")
    llms: list[Literal["base", "maet", "full_cpt"]] = Field(
        default_factory=lambda: ["maet", "full_cpt"],
        description="Which LLMs to put MindMerger on: the base LLM, the MAET model, the full-CPT baseline. Each "
        "MindMerger model is compared with the LLM it sits on.",
    )
    mapping: MindMergerStageConfig = Field(default_factory=MindMergerStageConfig)
    augmentation: MindMergerStageConfig = Field(
        default_factory=lambda: MindMergerStageConfig(max_source_len=512, max_target_len=512)
    )
    adam_betas: tuple[float, float] = (0.8, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 3e-7
    grad_clip: float = 1.0
    dev_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="Held-out share for dev perplexity.")
    translation_data: dict[str, str] = Field(
        default_factory=dict,
        description="Per language: folder or URL with line-aligned train.<iso> / train.en; empty = demo world.",
    )
    query_data: str = Field("demo:queries/math", description="Translated task queries for the augmentation stage.")
    backend: Literal["torch", "deepspeed"] = "torch"
    deepspeed_config: str | None = None


BenchmarkName = Literal["mgsm", "msvamp", "xcsqa", "xnli", "mmlu_science"]


class BenchmarkSpec(_Model):
    name: BenchmarkName
    data: str = Field(..., description="HF dataset id, a folder or URL with the official files, or demo:bench/<name>.")
    languages: list[str] | None = Field(None, description="Languages to score; null = the run's pivot + targets.")
    prompt: str = Field("mindmerger", description="Prompt preset (mindmerger, native_cot, ...).")
    max_new_tokens: int | None = Field(None, ge=1, description="null = the benchmark's default.")
    limit: int | None = Field(None, ge=1, description="Score at most this many items per language.")
    scoring: Literal["generate", "loglik"] = Field("generate", description="Classification: generate, or option log-likelihood.")
    exemplars: str | None = Field(None, description="Few-shot exemplar file (JSON) for the native_cot presets.")

    @field_validator("languages")
    @classmethod
    def _iso(cls, v: list[str] | None) -> list[str] | None:
        return v if v is None else [check_language(c, "benchmark language") for c in v]


class EvaluationConfig(_Model):
    enabled: bool = True
    benchmarks: list[BenchmarkSpec] = Field(default_factory=lambda: [
        BenchmarkSpec(name="mgsm", data="demo:bench/mgsm"),
        BenchmarkSpec(name="xnli", data="demo:bench/xnli"),
    ])
    batch_size: int = Field(16, ge=1)


class OrchestrationConfig(_Model):
    gpu_deployment: str | None = Field(
        None, title="GPU deployment",
        description="'flow/deployment' that runs the GPU stages (MAET) on a GPU work pool as a subflow, e.g. "
                    "linguaforge-maet/maet-gpu; null = in this flow run's own process.")
    gpu_job_variables: dict[str, Any] = Field(default_factory=dict,
                                              description="Job variables for that run, e.g. {gpus: 8}.")


class DemoConfig(_Model):
    """The embedded synthetic world: text, ability data, translation pairs, benchmark files, tiny models."""

    seed: int = 0
    general_docs: int = Field(600, ge=10, description="General documents per (high-resource) language.")
    low_resource_languages: list[str] = Field(default_factory=lambda: ["sw", "bn"])
    low_resource_fraction: float = Field(0.25, gt=0.0, le=1.0, description="Their share of general_docs.")
    bilingual_share: float = Field(0.1, ge=0.0, le=1.0, description="Share of non-pivot general documents that "
                                   "carry each sentence's English rendering beside it (as web text mixes languages).")
    ability_problems: int = Field(4000, ge=10, description="English worked math problems.")
    translation_pairs: int = Field(600, ge=10, description="X→English pairs per language.")
    query_items: int = Field(400, ge=10, description="Translated math queries per language (augmentation stage).")
    test_items: int = Field(100, ge=1, description="Items per language in each benchmark test file.")
    llm_hidden_size: int = Field(128, ge=8)
    llm_layers: int = Field(4, ge=1)
    encoder_hidden_size: int = Field(64, ge=8)
    encoder_layers: int = Field(2, ge=1)
    vocab_size: int = Field(2000, ge=300, description="Target vocabulary of both trained tokenizers.")
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)

    @field_validator("low_resource_languages")
    @classmethod
    def _iso(cls, v: list[str]) -> list[str]:
        return [check_language(c, "demo.low_resource_languages") for c in v]


class RunConfig(_Model):
    """A whole linguaforge run: which models, which languages, which data, every stage's settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, title="linguaforge run")

    name: str = Field("demo", pattern=r"^[A-Za-z0-9._-]+$", max_length=100, description="Run name (labels reports).")
    seed: int = Field(0, description="Seed for sampling, shuffling and initialisation.")
    store: StoreConfig = Field(default_factory=StoreConfig)
    pivot_language: str = Field("en", title="Pivot language (L0)", description="Language of the ability corpus.")
    languages: list[str] = Field(
        default_factory=lambda: ["de", "zh", "sw", "bn"], title="Target languages (L_i)",
        description="ISO 639-1 codes of the languages to transfer the ability into.", min_length=1,
    )
    ability: Literal["math", "science"] = Field("math", description="The ability to transfer.")
    demo: DemoConfig | None = Field(default_factory=DemoConfig, description="Generate the synthetic demo world; "
                                    "null for real runs.")
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    corpora: CorporaConfig = Field(default_factory=CorporaConfig)
    corpus_prep: CorpusPrepConfig = Field(default_factory=CorpusPrepConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    masked_cpt: MaskedCPTConfig = Field(default_factory=MaskedCPTConfig)
    full_cpt: FullCPTConfig = Field(default_factory=FullCPTConfig, description="Full CPT baseline (no mask).")
    decompose: DecomposeConfig = Field(default_factory=DecomposeConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    mindmerger: MindMergerConfig = Field(default_factory=MindMergerConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)

    @field_validator("pivot_language")
    @classmethod
    def _pivot_iso(cls, v: str) -> str:
        return check_language(v, "pivot_language")

    @field_validator("languages")
    @classmethod
    def _targets_iso(cls, v: list[str]) -> list[str]:
        for i, code in enumerate(v):
            check_language(code, f"languages[{i}]")
        if dupes := sorted({c for c in v if v.count(c) > 1}):
            raise ValueError(f"languages lists {', '.join(dupes)} more than once")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.pivot_language in self.languages:
            raise ValueError(f"pivot_language {self.pivot_language!r} must not also be a target language")
        if self.demo is not None:
            self._fill_demo_defaults()
        missing = [c for c in self.all_languages if c not in self.corpora.general]
        if missing:
            raise ValueError(f"corpora.general has no corpus for {', '.join(missing)} "
                             "(every pivot and target language needs general text)")
        for code in self.corpora.general:
            check_language(code, "corpora.general key")
        if self.merge.mu and set(self.merge.mu) != set(self.languages):
            raise ValueError(f"merge.mu must give a weight for exactly the target languages {self.languages}, "
                             f"got {sorted(self.merge.mu)}")
        if self.mindmerger.enabled and "full_cpt" in self.mindmerger.llms and "full_cpt" not in self.merge.baselines:
            raise ValueError("mindmerger.llms lists full_cpt, but merge.baselines does not build it")
        if self.demo is None and (uses := self._demo_uris()):
            raise ValueError(f"{uses[0]} names the demo world, but demo is null (set demo: {{}} or a real URI)")
        return self

    def _fill_demo_defaults(self) -> None:
        general = dict(self.corpora.general)
        for code in self.all_languages:
            general.setdefault(code, CorpusSource(uri=f"{DEMO_PREFIX}general/{code}"))
        object.__setattr__(self.corpora, "general", general)  # no re-validation loop on assignment
        translations = dict(self.mindmerger.translation_data)
        for code in self.languages:
            translations.setdefault(code, f"{DEMO_PREFIX}translation/{code}")
        object.__setattr__(self.mindmerger, "translation_data", translations)

    def _demo_uris(self) -> list[str]:
        named = [("models.base_llm", self.models.base_llm), ("corpora.ability", self.corpora.ability.uri)]
        named += [(f"corpora.general.{c}", s.uri) for c, s in self.corpora.general.items()]
        if self.mindmerger.enabled:
            named += [("models.encoder", self.models.encoder), ("mindmerger.query_data", self.mindmerger.query_data)]
            named += [(f"mindmerger.translation_data.{c}", u) for c, u in self.mindmerger.translation_data.items()]
        if self.evaluation.enabled:
            named += [(f"evaluation.benchmarks.{b.name}", b.data) for b in self.evaluation.benchmarks]
        return [f"{where} = {uri!r}" for where, uri in named if uri.startswith(DEMO_PREFIX)]

    @property
    def all_languages(self) -> list[str]:
        """Pivot first, then the targets."""
        return [self.pivot_language, *self.languages]

    def language_weights(self) -> dict[str, float]:
        return dict(self.merge.mu) or {c: 1.0 for c in self.languages}


class ConfigError(ValueError):
    """An invalid run configuration, with one line per bad field."""


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid run configuration {source}:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        got = f" (got {_clip(repr(err['input']))})" if err["type"] not in {"missing"} and not isinstance(
            err.get("input"), dict) else ""
        lines.append(f"  - {where}: {msg}{got}")
    return "\n".join(lines)


def _clip(text: str, limit: int = 80) -> str:
    """A bad value is quoted in its error, but a 100 kB value must not become a 100 kB message."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def parse_config(data: dict[str, Any], source: str = "<dict>") -> RunConfig:
    try:
        return RunConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path | None = None) -> RunConfig:
    """Load a YAML run configuration; None = the embedded demo (configs/demo.yaml's defaults)."""
    if path is None:
        return RunConfig()
    return parse_config(read_yaml_mapping(path, "run configuration"), str(path))


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is an empty one); every way it can be wrong is
    a ConfigError that names `what` and the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start} cannot be decoded); "
                          "expected a YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{what} {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data or {}
