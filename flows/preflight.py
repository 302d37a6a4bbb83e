"""A run configuration checked whole before anything trains: every file and folder it names that can be
checked on this machine without the network, and every prompt preset and exemplar file it uses.

A typo in the last stage's settings must not surface after an hour of training, nor after torch has been
imported: nothing here imports torch, so `linguaforge run` refuses a bad configuration within a second.
Hub ids and remote URLs are left to the stage that reads them (their errors are clear there too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from linguaforge.flows.config import DEMO_PREFIX, ConfigError, RunConfig
from linguaforge.pipelines.benchmarks.registry import Benchmark
from linguaforge.pipelines.corpus import check_readable
from linguaforge.pipelines.devices import check_device
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.locations import check_local_file_or_folder, check_model_location, is_local


def check_run(cfg: RunConfig, source: str) -> None:
    """Raise one ConfigError listing every problem found (not just the first)."""
    problems = []
    for where, check in _checks(cfg):
        try:
            check()
        except InputError as exc:
            problems.append(f"  - {where}: {exc}")
    if problems:
        raise ConfigError("\n".join([f"run configuration {source} names inputs that cannot be used:", *problems]))


def _checks(cfg: RunConfig) -> Iterator[tuple[str, Callable[[], object]]]:
    from linguaforge.pipelines.benchmarks.prompts import load_exemplars, load_preset

    yield "orchestration.runner", lambda: _check_runner(cfg.orchestration.runner)
    for where, setting in device_settings(cfg):  # `cuda` on a machine without CUDA: refused here, never run on CPU
        yield where, lambda where=where, setting=setting: check_device(setting, where)
    models = cfg.models
    for where, uri in [("models.base_llm", models.base_llm), ("models.encoder", models.encoder),
                       ("models.tokenizer", models.tokenizer)]:
        if uri and not uri.startswith(DEMO_PREFIX) and (where != "models.encoder" or cfg.mindmerger.enabled):
            yield where, lambda uri=uri: check_model_location(uri, "model")
    sources = [("corpora.ability", cfg.pivot_language, cfg.corpora.ability)]
    sources += [(f"corpora.general.{code}", code, source) for code, source in cfg.corpora.general.items()]
    for where, language, source in sources:
        if not source.uri.startswith(DEMO_PREFIX):
            yield where, lambda s=source, c=language: check_readable(s, c, cfg.store.storage_options)
    corpora = []
    if cfg.mindmerger.enabled:
        corpora += [(f"mindmerger.translation_data.{c}", u) for c, u in cfg.mindmerger.translation_data.items()]
        corpora += [("mindmerger.query_data", cfg.mindmerger.query_data)]
    for where, uri in corpora:
        if not uri.startswith(DEMO_PREFIX):
            yield where, lambda uri=uri: check_local_file_or_folder(uri, "data")
    if not cfg.evaluation.enabled:
        return
    for i, spec in enumerate(cfg.evaluation.benchmarks):
        where = f"evaluation.benchmarks[{i}] ({spec.name})"
        yield where, lambda spec=spec: load_preset(spec.prompt).for_benchmark(spec.name)
        if spec.exemplars:
            yield f"{where}.exemplars", lambda spec=spec: load_exemplars(spec.exemplars, cfg.store.storage_options)
        if not spec.data.startswith(DEMO_PREFIX) and is_local(spec.data):
            languages = spec.languages or cfg.all_languages
            yield f"{where}.data", lambda spec=spec, languages=languages: _check_benchmark_files(
                spec.benchmark, spec.data, languages)


def device_settings(cfg: RunConfig) -> list[tuple[str, str]]:
    """Every device the run names: the run's, and each stage's own."""
    named = [("device", cfg.device), ("probe.train.device", cfg.probe.train.device),
             ("masked_cpt.train.device", cfg.masked_cpt.train.device), ("full_cpt.train.device", cfg.full_cpt.train.device),
             ("mindmerger.device", cfg.mindmerger.device), ("evaluation.device", cfg.evaluation.device)]
    if cfg.masked_cpt.language_train is not None:
        named.append(("masked_cpt.language_train.device", cfg.masked_cpt.language_train.device))
    if cfg.demo is not None:
        named.append(("demo.bootstrap.train.device", cfg.demo.bootstrap.train.device))
    return [(where, setting) for where, setting in named if setting is not None]


def _check_benchmark_files(bench: Benchmark, data: str, languages: list[str]) -> None:
    """Local benchmark files are parsed now (they are small): a malformed row is found before training."""
    from linguaforge.pipelines.benchmarks.loaders import available_languages, load_raw

    check_local_file_or_folder(data, "benchmark data")
    present = set(available_languages(bench, data))
    for language in languages:
        if language in present:
            load_raw(bench, data, language)


def _check_runner(runner: str) -> None:
    from linguaforge.flows.runners import check_runner_installed

    if problem := check_runner_installed(runner):
        raise InputError(problem)
