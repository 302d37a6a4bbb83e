"""Every settings field reaches the cache key of the stage that reads it.

A stage's key parameters come from the settings models it receives (key_params), less the fields it
declares it does not read. Here every field of every stage's settings, nested ones included, is changed
one at a time; the key must change, unless the field is one of the declared exclusions, and then it must
not (an exclusion is a promise that the field cannot change the output).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from linguaforge.pipelines.benchmarks.settings import BenchmarkSpec
from linguaforge.pipelines.demo.settings import DemoConfig
from linguaforge.pipelines.maet.settings import ProbeConfig
from linguaforge.pipelines.merging.methods import METHODS
from linguaforge.pipelines.merging.settings import MergeConfig
from linguaforge.pipelines.mindmerger.settings import MindMergerConfig
from linguaforge.pipelines.settings import CorpusPrepConfig, CorpusSource
from linguaforge.pipelines.training.settings import TrainConfig
from linguaforge.storage import artifact_key
from linguaforge.tasks import corpus, demo, evaluate, maet, merge, mindmerger
from linguaforge.tasks.common import STAGE_SPECS, RunContext, StageSpec

CTX = RunContext()


def _other(annotation: Any, value: Any) -> Any:
    """A value of the field's type that differs from `value`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _other(options[0], None) if value is None else _other(options[0], value)
    if origin is Literal:
        return next(a for a in args if a != value)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation(steps=3) if annotation is TrainConfig else annotation()
    if origin is list:
        (item,) = args
        if typing.get_origin(item) is Literal:
            choices = list(typing.get_args(item))
            return value[:-1] if value else choices[:1]
        return (value or [])[:-1] if value else ["de"]
    if origin is tuple:
        return tuple(v / 2 for v in value)
    if origin is dict:
        return {**(value or {}), "de": 0.5 if args[1] is float else "elsewhere"}
    if annotation is bool:
        return not value
    if annotation is int:
        return 7 if value is None else value + 1
    if annotation is float:
        return 0.5 if value is None else value / 2 + 0.01
    if annotation is str:
        return "changed" if value is None else value + "-changed"
    raise AssertionError(f"no variant for {annotation}")


def variants(settings: BaseModel, path: str = "") -> list[tuple[str, BaseModel]]:
    """(dotted field path, settings with that one field changed), nested models field by field."""
    out = []
    for name, info in type(settings).model_fields.items():
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            out += [(f"{path}{name}.{sub}", settings.model_copy(update={name: changed}))
                    for sub, changed in variants(value)]
        else:
            out.append((f"{path}{name}", settings.model_copy(update={name: _other(info.annotation, value)})))
    return out


def key(params: dict) -> str:
    return artifact_key("stage", 1, params, {})


TRAIN_EXCLUDED = set(TrainConfig.key_exclude)  # where it runs, how often it saves: declared on the model


def declared_unread(settings: BaseModel, path: str = "") -> set[str]:
    """Every field path that a settings model (or one nested in it) declares in its `key_exclude`."""
    out = {f"{path}{name}" for name in getattr(settings, "key_exclude", ())}
    for name in type(settings).model_fields:
        if isinstance(value := getattr(settings, name), BaseModel):
            out |= declared_unread(value, f"{path}{name}.")
    return out


def _spec_case(spec: StageSpec) -> tuple:
    settings = spec.settings()
    return settings, lambda s: spec.params(CTX, s), set(spec.ignores) | declared_unread(settings)


# stage → (settings, params of settings, the fields that stage declares it does not read). A stage whose key is
# a function of the run context and one settings model declares both in its StageSpec and is checked from it;
# the stages below take more than that to compute a key, and are given an example here.
STAGES = {name: _spec_case(spec) for name, spec in STAGE_SPECS.items() if spec.params is not None}
STAGES |= {
    "corpus_prep (source)": (CorpusSource(uri="x.jsonl"), lambda s: corpus.corpus_params("de", s, CorpusPrepConfig()),
                             {"uri"}),
    "corpus_prep (packing)": (CorpusPrepConfig(), lambda s: corpus.corpus_params("de", CorpusSource(uri="x"), s),
                              {"ability_mix_ratio"}),
    "corpus_mixture": (CorpusPrepConfig(), lambda s: corpus.mixture_params(CTX, s),
                       {"block_size", "packing", "min_chars", "max_chars"}),
    "evaluate_unit": (BenchmarkSpec(name="mgsm", data="x"),
                      lambda s: evaluate.unit_params(evaluate.EvalModel(name="m", source={"uri": "m"}), s, "de"),
                      set(evaluate.UNIT_IGNORES)),
}
for _method, _declared in METHODS.items():
    for _languages in (True, False):  # a merge with language deltas reads μ; the task-vector baseline does not
        STAGES[f"merge ({_method}, languages {_languages})"] = (
            MergeConfig(), lambda s, m=_method, lang=_languages: merge.merge_params(CTX, s, m, "ability.safetensors", lang),
            set(MergeConfig.model_fields) - set(_declared.parameters) - {"shard_size_mb"} - ({"mu"} if _languages else set()))
for _stage in ("mapping", "augmentation"):
    STAGES[f"mindmerger_{_stage}"] = (
        MindMergerConfig(), lambda s, st=_stage: mindmerger.stage_params(CTX, s, st, "base", ["de"]),
        set(mindmerger.STAGE_IGNORES[_stage]) | {f"{st}.checkpoint_every" for st in ("mapping", "augmentation")})


def _excluded(path: str, excluded: set[str]) -> bool:
    return path in excluded or path.split(".")[0] in excluded


def test_every_stage_that_commits_an_artifact_has_its_key_checked():
    demo_stages = {"demo_world", "tiny_models", "bootstrap"}  # the demo test below shares DemoConfig out among them
    no_settings = {"comparison_report"}  # keyed by the units it reads, nothing else
    checked = {name.split(" ")[0] for name in STAGES}
    assert {name for name, spec in STAGE_SPECS.items() if spec.version is not None} - demo_stages - no_settings \
        == checked
    assert {"importance_probe", "masked_cpt", "full_cpt", "corpus_mixture", "decompose"} <= set(STAGES)  # by spec


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_field_changes_the_key_unless_declared_unread(stage):
    settings, params, excluded = STAGES[stage]
    excluded = set(excluded) | declared_unread(settings)  # what the settings models declare themselves
    reference = key(params(settings))
    changed = variants(settings)
    assert len(changed) >= 3  # the walk itself found the fields
    wrong = [(path, "excluded but changes the key" if _excluded(path, excluded) else "not in the key")
             for path, variant in changed
             if (key(params(variant)) != reference) == _excluded(path, excluded)]
    assert wrong == []


def test_every_demo_field_reaches_the_demo_stage_that_reads_it():
    settings = DemoConfig()
    keyed = {"demo_world": lambda s: demo.world_params(CTX, s), "tiny_models": lambda s: demo.tiny_model_params(CTX, s),
             "bootstrap": lambda s: demo.bootstrap_params(CTX, s, CorpusPrepConfig())}
    reference = {name: key(f(settings)) for name, f in keyed.items()}
    for path, variant in variants(settings):
        moved = {name for name, f in keyed.items() if key(f(variant)) != reference[name]}
        top = path.split(".")[0]
        expected = ({"demo_world"} if top in demo.WORLD_FIELDS else {"tiny_models"} if top in demo.MODEL_FIELDS
                    else {"bootstrap"})
        if path.split(".")[-1] in TRAIN_EXCLUDED:
            expected = set()
        assert moved == expected, path


def test_the_variant_walk_changes_what_it_says():
    """The check above is only as good as `variants`: each variant differs from the original in its field."""
    for settings in (ProbeConfig(), MergeConfig(), MindMergerConfig(), BenchmarkSpec(name="xnli", data="x")):
        for path, variant in variants(settings):
            a, b = settings, variant
            for part in path.split("."):
                a, b = getattr(a, part), getattr(b, part)
            assert a != b, path


def test_key_functions_are_plain_and_stages_are_tasks():
    """A key function is called to compute a key, never run as a Prefect task (a misplaced decorator once
    made `unit_params` the task and left the stage a plain function)."""
    from prefect import Task

    modules = (corpus, demo, evaluate, maet, merge, mindmerger)
    params = [getattr(m, n) for m in modules for n in dir(m) if n.endswith("_params") and callable(getattr(m, n))]
    assert params and not [p for p in params if isinstance(p, Task)]
    stages = [t for m in modules for t in vars(m).values() if isinstance(t, Task)]
    assert sorted(stage.spec.name for stage in stages) == sorted(STAGE_SPECS)  # every spec is a task's, once
    assert all(stage.name == stage.spec.name for stage in stages)


def test_a_stage_version_is_in_prefects_cache_key_too():
    """A version bump re-runs a stage even where Prefect remembers a result (it once served the old artifact:
    the task's source had not changed, only the module's version constant)."""
    from prefect import Task

    from linguaforge.tasks.common import StageVersion

    assert StageVersion(version="merge/4").compute_key(None, {}, {}) != StageVersion(version="merge/5").compute_key(
        None, {}, {})
    versioned = {t: t.spec.version for m in (corpus, demo, evaluate, maet, merge, mindmerger)
                 for t in vars(m).values() if isinstance(t, Task) and t.spec.version is not None}
    assert len(versioned) == 14
    for stage, version in versioned.items():
        assert StageVersion(version=f"{stage.name}/{version}") in stage.cache_policy.inner.policies, stage.name
