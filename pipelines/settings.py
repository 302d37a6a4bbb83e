"""Settings shared by the science: the base every stage's settings model derives from, how a model becomes
cache-key parameters, and the settings of what several stages read (models, corpora).

Each stage's settings live next to the code that reads them (training/settings.py, maet/settings.py,
mindmerger/settings.py, benchmarks/settings.py, demo/settings.py); flows/config.py composes them into the
run configuration, whose Field definitions are also the Prefect UI's run form. These modules import
pydantic only, so that a configuration is checked before torch is loaded.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # the weight dtypes a setting or flag may name (torch's names)
DtypeName = Literal[DTYPE_NAMES]

DEMO_PREFIX = "demo:"

# Values that pass a plain `int`/`float` check but fail deep inside torch or numpy are refused here, by name:
# a seed beyond 32 bits (numpy's generators refuse it, torch's overflows), AdamW's betas outside [0, 1).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="Seed (0 to 2^32 - 1).")]
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
AdamBetas = Annotated[tuple[Beta, Beta], Field(description="AdamW's (β1, β2), each in [0, 1).")]


class Settings(BaseModel):
    """A stage's settings. `key_exclude` names the fields that cannot change a stage's output (how often it
    checkpoints, how many processes share the work): every other field enters the stage's cache key."""

    # allow_inf_nan=False: every float setting must be finite (a NaN γ would merge into NaN weights)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    key_exclude: ClassVar[frozenset[str]] = frozenset()


def key_params(settings: BaseModel, ignore: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The settings as cache-key parameters: every field, nested models included, except those that the
    model (or a nested one) excludes, and those a stage declares it does not read (`ignore`)."""
    excluded = getattr(settings, "key_exclude", frozenset()) | set(ignore)
    out: dict[str, Any] = {}
    for name in type(settings).model_fields:
        if name in excluded:
            continue
        value = getattr(settings, name)
        out[name] = _key_value(value)
    return out


def _key_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return key_params(value)
    if isinstance(value, dict):
        return {str(k): _key_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_key_value(v) for v in value]
    return value


class ModelsConfig(Settings):
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
    dtype: DtypeName = Field("float32", description="Weights dtype when loading.")


class CorpusSource(Settings):
    uri: str = Field(..., description="hf:<dataset id>[@config], a .jsonl/.parquet/.txt path or URL, or demo:<name>.")
    format: Literal["auto", "jsonl", "parquet", "text", "hf"] = Field("auto", description="File format; auto = by suffix.")
    text_field: str = Field("text", description="Column holding the document text (jsonl, parquet, hf).")
    split: str = Field("train", description="Split, for hf: sources.")
    max_documents: int | None = Field(None, ge=1, description="Read at most this many documents.")


class CorporaConfig(Settings):
    ability: CorpusSource = Field(
        default_factory=lambda: CorpusSource(uri="demo:ability/en"),
        description="English-only ability corpus (math or science), e.g. OpenWebMath or a science corpus.",
    )
    general: dict[str, CorpusSource] = Field(
        default_factory=dict,
        description="General text per language (ISO 639-1 → source), e.g. a CC/Wikipedia slice; must cover the "
        "pivot language and every target language. Empty with a demo world = the demo world's text.",
    )


class CorpusPrepConfig(Settings):
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


class TrackingConfig(Settings):
    """Experiment tracking (pipelines/tracking.py): which loggers, and where."""

    loggers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=lambda: ["tensorboard"], description="Metric loggers; [] for none. TensorBoard: "
        "`tensorboard --logdir <folder>` shows every stage of every run side by side. MLflow (the [mlflow] extra): "
        "an experiment per run name, a run per stage, in MLFLOW_TRACKING_URI or <folder>/mlflow.db. W&B (the [wandb] "
        "extra): a project per run name, a run per stage, offline in <folder>/wandb unless WANDB_MODE says otherwise.")
    folder: str | None = Field(None, description="Where the loggers write; null = <store.cache_dir>/../runs/<name>/"
                               "tracking, beside the run's log files.")
