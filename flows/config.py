"""The run configuration: one pydantic model for a whole linguaforge run, composed of the settings models that
the science owns (each defined next to the code that reads it, in pipelines/ and storage/).

The same models are the YAML schema (`configs/*.yaml`), the Prefect flow parameters and therefore the
Prefect UI's run form (titles, descriptions, bounds and enums come from the Field definitions).

Resources are named by URI everywhere: an HF hub id (`meta-llama/Meta-Llama-3-8B`), a local path, any
fsspec URL (`s3://bucket/corpus.jsonl`), `hf:<dataset id>` for HF datasets, or `demo:<name>` for what
the embedded demo world generates (`demo:llm`, `demo:encoder`, `demo:ability/<pivot>`, `demo:general/<lang>`,
`demo:translation/<lang>`, `demo:queries/math`, `demo:bench/<benchmark>`, `demo:dev/<mgsm|msvamp>`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from linguaforge.pipelines.benchmarks.registry import BENCHMARKS
from linguaforge.pipelines.benchmarks.settings import BenchmarkName, BenchmarkSpec, EvaluationConfig
from linguaforge.pipelines.demo.settings import BootstrapConfig, DemoConfig, demo_names
from linguaforge.pipelines.devices import DEVICE_PATTERN
from linguaforge.pipelines.languages import check_language, check_languages
from linguaforge.pipelines.maet.settings import DecomposeConfig, FullCPTConfig, MaskedCPTConfig, ProbeConfig
from linguaforge.pipelines.merging.settings import MergeConfig, TensorFamily, language_weights
from linguaforge.pipelines.mindmerger.settings import MindMergerConfig, MindMergerStageConfig
from linguaforge.pipelines.settings import (
    DEMO_PREFIX,
    CorporaConfig,
    CorpusPrepConfig,
    CorpusSource,
    ModelsConfig,
    Seed,
    Settings,
    TrackingConfig,
)
from linguaforge.pipelines.training.settings import TrainConfig
from linguaforge.storage.settings import StoreConfig

__all__ = [  # the run configuration and the settings it composes, importable from one place
    "DEMO_PREFIX", "BenchmarkName", "BenchmarkSpec", "BootstrapConfig", "ConfigError", "CorporaConfig",
    "CorpusPrepConfig", "CorpusSource", "DecomposeConfig", "DemoConfig", "EvaluationConfig", "FullCPTConfig",
    "MaskedCPTConfig", "MergeConfig", "MindMergerConfig", "MindMergerStageConfig", "ModelsConfig",
    "OrchestrationConfig", "ProbeConfig", "RunConfig", "StoreConfig", "TensorFamily", "TrainConfig",
    "load_config", "parse_config", "read_yaml_mapping",
]

class OrchestrationConfig(Settings):
    runner: Literal["threads", "dask"] = Field(
        "threads", description="Where the fan-out runs (probes, CPT runs, merges, evaluation units): threads in the "
        "flow's process, or a Dask cluster (dask_address, else a local cluster of dask_workers processes; needs the "
        "[dask] extra). Stages exchange artifact refs through the store, so any worker that reaches it can run any.")
    max_parallel: int = Field(
        32, ge=1, le=4096, description="With runner threads: stages at once in the flow's process; the rest wait in "
        "submission order. Prefect's thread pool has no bound, so a thousand-unit evaluation would otherwise load a "
        "thousand models at once.")
    dask_address: str | None = Field(None, pattern=r"^(tcp|tls|ucx|inproc)://[^\s]+$|^[A-Za-z0-9.-]+:[0-9]+$",
                                     description="Scheduler of a running Dask cluster, e.g. tcp://10.0.0.5:8786.")
    dask_workers: int = Field(2, ge=1, le=256, description="Worker processes of the local cluster when no address.")
    gpu_deployment: str | None = Field(
        None, title="GPU deployment",
        description="'flow/deployment' that runs the GPU stages (MAET) on a GPU work pool as a subflow, e.g. "
                    "linguaforge-maet/maet-gpu; null = in this flow run's own process.")
    gpu_job_variables: dict[str, Any] = Field(default_factory=dict,
                                              description="Job variables for that run, e.g. {gpus: 8}.")
    gpus_per_node: int | None = Field(
        None, ge=1, le=64, title="GPUs per node",
        description="GPU slots: stages that compute share this many GPUs, a k-GPU stage holding k slots of a "
                    "Prefect global concurrency limit and running pinned to the GPUs it holds; null = no limit.")


class RunConfig(Settings):
    """A whole linguaforge run: which models, which languages, which data, every stage's settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, title="linguaforge run")

    name: str = Field("demo", pattern=r"^[A-Za-z0-9._-]+$", max_length=100, description="Run name (labels reports).")
    seed: Seed = Field(0, description="Seed for sampling, shuffling and initialisation (0 to 2^32 - 1).")
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="Where every stage computes: auto (CUDA when "
                        "present), cpu, cuda or cuda:N; a stage's own `device` overrides it.")
    store: StoreConfig = Field(default_factory=StoreConfig)
    pivot_language: str = Field("en", title="Pivot language (L0)", description="Language of the ability corpus.")
    languages: list[str] = Field(
        default_factory=lambda: ["de", "zh", "sw", "bn"], title="Target languages (L_i)",
        description="ISO 639-1 codes of the languages to transfer the ability into.", min_length=1,
    )
    ability: Literal["math", "science"] = Field("math", description="The ability to transfer; an evaluated "
                                                "benchmark must measure it (math: mgsm, msvamp; science: mmlu_science).")
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
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def tracking_folder(self) -> str:
        """Where the metric loggers write (tracking.folder, or beside the run's log files)."""
        if self.tracking.folder:
            return self.tracking.folder
        return str(Path(self.store.cache_dir).expanduser().resolve().parent / "runs" / self.name / "tracking")

    @field_validator("pivot_language")
    @classmethod
    def _pivot_iso(cls, v: str) -> str:
        return check_language(v, "pivot_language")

    @field_validator("languages")
    @classmethod
    def _targets_iso(cls, v: list[str]) -> list[str]:
        return check_languages(v, "languages")

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
        if isinstance(self.merge.mu, str):  # a word becomes its weights here, so a run's keys see only numbers
            object.__setattr__(self.merge, "mu", language_weights(self.merge.mu, self.languages))
        if self.merge.mu and set(self.merge.mu) != set(self.languages):
            raise ValueError(f"merge.mu must give a weight for exactly the target languages {self.languages}, "
                             f"got {sorted(self.merge.mu)}")
        if self.evaluation.enabled and self.evaluation.benchmarks and not any(
                b.benchmark.measures == self.ability for b in self.evaluation.benchmarks):
            which = ", ".join(n for n, b in BENCHMARKS.items() if b.measures == self.ability)
            raise ValueError(f"ability is {self.ability}, but no benchmark in evaluation.benchmarks measures it "
                             f"({which} does): the report could not show whether the ability transferred")
        if self.mindmerger.enabled and "full_cpt" in self.mindmerger.llms and "full_cpt" not in self.merge.baselines:
            raise ValueError("mindmerger.llms lists full_cpt, but merge.baselines does not build it")
        if self.demo is None and (uses := self._demo_uris()):
            raise ValueError(f"{uses[0][0]} = {uses[0][1]!r} names the demo world, but demo is null (set demo: {{}} or a real URI)")
        known = demo_names(self.pivot_language, self.languages)
        for where, uri in self._demo_uris():
            if uri.removeprefix(DEMO_PREFIX) not in known:
                raise ValueError(f"{where} = {uri!r}: the demo world makes no {uri.removeprefix(DEMO_PREFIX)!r}; it makes "
                                 + ", ".join(DEMO_PREFIX + n for n in known))
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

    def _demo_uris(self) -> list[tuple[str, str]]:
        """(field, URI) of every `demo:` URI the run reads."""
        named = [("models.base_llm", self.models.base_llm), ("corpora.ability", self.corpora.ability.uri)]
        named += [(f"corpora.general.{c}", s.uri) for c, s in self.corpora.general.items()]
        if self.mindmerger.enabled:
            named += [("models.encoder", self.models.encoder), ("mindmerger.query_data", self.mindmerger.query_data)]
            named += [(f"mindmerger.translation_data.{c}", u) for c, u in self.mindmerger.translation_data.items()]
        if self.evaluation.enabled:
            named += [(f"evaluation.benchmarks.{b.name}", b.data) for b in self.evaluation.benchmarks]
        return [(where, uri) for where, uri in named if uri.startswith(DEMO_PREFIX)]

    @property
    def all_languages(self) -> list[str]:
        """Pivot first, then the targets."""
        return [self.pivot_language, *self.languages]

    def language_weights(self) -> dict[str, float]:
        return language_weights(self.merge.mu, self.languages)


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


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Load a YAML run configuration (None: the defaults), with `key.path=value` overrides applied before it is
    validated, as torchtune's and axolotl's command lines take them; a value is read as YAML (8, 1e-4, true,
    [de, sw], null)."""
    data = read_yaml_mapping(path, "run configuration") if path is not None else {}
    source = str(path or "the defaults") + (f" with {' '.join(overrides)}" if overrides else "")
    return parse_config(apply_overrides(data, overrides), source)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`data` with each `a.b.c=value` set (intermediate mappings made as needed); a malformed one is refused."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        parts = key.split(".")
        if not sep or not key or any(not p.isidentifier() for p in parts):
            raise ConfigError(f"override {override!r}: expected KEY.PATH=VALUE, e.g. full_cpt.train.steps=200")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {override!r}: the value is not valid YAML ({exc})") from None
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {'.'.join(parts[:i + 1])} is {child!r}, not a section")
            node = child
        node[parts[-1]] = value
    return data


MAX_YAML_BYTES = 4 << 20  # a run or merge configuration is a few kB; a bigger file is not one
MAX_YAML_VALUES = 100_000  # values once aliases are expanded: an alias "bomb" of 600 bytes expands to billions


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is an empty one); every way it can be wrong is
    a ConfigError that names `what` and the file. Read with limits: its size, and the number of values its
    aliases expand to (checked on the loaded structure, whose aliases are shared, before anything walks it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path}: no such file")
    if (size := path.stat().st_size) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {path} is {size} bytes; a configuration is at most {MAX_YAML_BYTES} bytes")
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
    if _expanded_values(data, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise ConfigError(f"{what} {path}: its aliases (&name / *name) expand to more than {MAX_YAML_VALUES} "
                          "values; a configuration is not that large (an alias bomb?)")
    return data or {}


def _expanded_values(data: Any, budget: int) -> int:
    """How many values `data` holds with every alias expanded, counting no further than just past `budget`."""
    count, stack = 0, [data]
    while stack and count <= budget:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count
