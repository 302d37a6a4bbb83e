"""The run configuration: paper defaults, YAML files, and one clear message per bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from linguaforge.flows.config import ConfigError, RunConfig, load_config, parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_paper_defaults():
    cfg = RunConfig()
    assert cfg.probe.k1_percent == 5.0 and cfg.probe.granularity == "row"
    assert (cfg.decompose.alpha, cfg.decompose.beta) == (0.8, 0.2)
    assert (cfg.merge.k2_percent, cfg.merge.gamma, cfg.merge.eta) == (80.0, 0.2, 1.0)
    assert cfg.language_weights() == {c: 1.0 for c in cfg.languages}
    mm = cfg.mindmerger
    assert (mm.mapping.learning_rate, mm.adam_betas, mm.adam_eps, mm.weight_decay, mm.grad_clip) == \
        (2e-5, (0.8, 0.999), 1e-8, 3e-7, 1.0)
    assert (mm.mapping.global_batch_size, mm.mapping.epochs) == (128, 3.0)
    assert (mm.mapping.max_source_len, mm.augmentation.max_source_len, mm.augmentation.max_target_len) == \
        (200, 512, 512)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith("merge-")))
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.corpora.general.keys() >= set(cfg.all_languages)


def test_shipped_merge_config_loads():
    from linguaforge.flows.merge_cli import load_job

    job = load_job(CONFIGS / "merge-example.yaml")
    assert job.merge.method == "maet" and set(job.deltas.languages) == {"sw", "bn", "te"}


def test_demo_config_fills_demo_sources():
    cfg = load_config(CONFIGS / "demo.yaml")
    assert cfg.corpora.general["sw"].uri == "demo:general/sw"
    assert cfg.mindmerger.translation_data["bn"] == "demo:translation/bn"


def test_one_message_per_bad_field():
    with pytest.raises(ConfigError) as err:
        parse_config({"languages": ["de", "xx"], "probe": {"k1_percent": 0, "granularity": "neuron"},
                      "merge": {"k2_percent": 120}, "decompose": {"alhpa": 1}}, "bad.yaml")
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid run configuration bad.yaml:"
    body = "\n".join(lines[1:])
    assert len(lines) == 6, body
    assert "languages: languages[1]: 'xx' is not an ISO 639-1 language code" in body
    assert "probe.k1_percent: Input should be greater than 0" in body
    assert "probe.granularity: Input should be 'row' or 'element'" in body
    assert "merge.k2_percent: Input should be less than or equal to 100" in body
    assert "decompose.alhpa: Extra inputs are not permitted" in body


@pytest.mark.parametrize("data, message", [
    ({"languages": ["Swahili"]}, "the ISO 639-1 code for Swahili is 'sw'"),
    ({"languages": ["de", "de"]}, "languages lists de more than once"),
    ({"languages": ["en"]}, "pivot_language 'en' must not also be a target language"),
    ({"merge": {"mu": {"de": 1.0}}}, "merge.mu must give a weight for exactly the target languages"),
    ({"demo": None, "models": {"base_llm": "meta-llama/Meta-Llama-3-8B"}}, "corpora.general has no corpus for en"),
    ({"demo": None, "corpora": {"general": {c: {"uri": f"/d/{c}.jsonl"} for c in ["en", "de", "zh", "sw", "bn"]}}},
     "models.base_llm = 'demo:llm' names the demo world, but demo is null"),
    ({"ability": "science"}, r"ability is science, but no benchmark in evaluation.benchmarks measures it "
                             r"\(mmlu_science does\)"),
])
def test_cross_field_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


@pytest.mark.parametrize("word, weight", [("sum", 1.0), ("mean", 0.5), ("zero", 0.0)])
def test_a_word_for_mu_weights_whatever_languages_the_run_has(word, weight):
    cfg = load_config(CONFIGS / "demo.yaml", [f"merge.mu={word}", "languages=[de, sw]"])
    assert cfg.merge.mu == {"de": weight, "sw": weight} == cfg.language_weights()
    # the word is resolved before any stage key is made: the same run as its weights written out
    spelled = load_config(CONFIGS / "demo.yaml", [f"merge.mu={{de: {weight}, sw: {weight}}}", "languages=[de, sw]"])
    assert spelled.merge.key_params("maet", languages=True) == cfg.merge.key_params("maet", languages=True)


def test_a_word_for_mu_in_a_merge_job_weights_its_deltas_languages():
    from linguaforge.flows.merge_cli import MergeJob

    job = MergeJob.model_validate({"base": "b", "merge": {"mu": "mean"}, "deltas": {
        "ability_pivot": "a", "pivot": "p", "languages": {"sw": "s", "bn": "n", "yo": "y", "te": "t"}}})
    assert job.merge.mu == {"sw": 0.25, "bn": 0.25, "yo": 0.25, "te": 0.25}


def test_an_unknown_word_for_mu_is_one_message():
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "demo.yaml", ["merge.mu=avg"])
    lines = [line for line in str(err.value).splitlines() if line.strip().startswith("-")]
    assert lines == ["  - merge.mu: 'avg' is not a word for the weights (sum, mean, zero); or give one weight per "
                     "target language, e.g. {de: 0.5, sw: 0.5} (got 'avg')"]


def test_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list.yaml: expected a mapping at the top level, got list"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_schema_carries_what_the_ui_form_needs():
    schema = RunConfig.model_json_schema()
    probe = schema["$defs"]["ProbeConfig"]["properties"]
    assert probe["k1_percent"]["exclusiveMinimum"] == 0 and probe["k1_percent"]["maximum"] == 100
    assert probe["granularity"]["enum"] == ["row", "element"]
    assert "row-delta norm" in probe["granularity"]["description"]
    assert schema["properties"]["languages"]["title"] == "Target languages (L_i)"


def test_overrides_apply_before_validation_and_name_themselves(tmp_path):
    from linguaforge.flows.config import ConfigError, load_config

    path = tmp_path / "run.yaml"
    path.write_text("name: base\nfull_cpt:\n  train: {steps: 10}\n")
    cfg = load_config(path, ["full_cpt.train.steps=200", "languages=[de, sw]", "merge.gamma=0.5", "demo.seed=3",
                             "full_cpt.train.learning_rate=1e-3"])
    assert cfg.full_cpt.train.steps == 200 and cfg.languages == ["de", "sw"] and cfg.merge.gamma == 0.5
    assert cfg.full_cpt.train.learning_rate == 1e-3 and cfg.demo.seed == 3 and cfg.name == "base"
    with pytest.raises(ConfigError, match=r"full_cpt.train.steps: Input should be greater than or equal to 1"):
        load_config(path, ["full_cpt.train.steps=0"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(path, ["full_cpt.train.steps"])
    with pytest.raises(ConfigError, match=r"name is 'base', not a section"):
        load_config(path, ["name.first=x"])
    with pytest.raises(ConfigError, match="probe.k1_percnt: Extra inputs are not permitted"):
        load_config(path, ["probe.k1_percnt=5"])


def test_mindmerger_sits_on_the_merged_model_by_its_own_name():
    """`llms: [merged]` is whatever merge.method built; `maet`, its former name, still reads as `merged`, and the
    evaluated MindMerger model is named after the method it sits on (not `maet` when the method is ties)."""
    from linguaforge.flows.outputs import MindMergerOutputs, RunOutputs
    from linguaforge.flows.stages import models_to_evaluate
    from linguaforge.storage import ArtifactRef

    assert RunConfig.model_validate({"mindmerger": {"llms": ["maet", "base"]}}).mindmerger.llms == ["merged", "base"]
    with pytest.raises(ValueError, match="llms"):
        RunConfig.model_validate({"mindmerger": {"llms": ["ties"]}})
    cfg = RunConfig.model_validate({"merge": {"method": "ties"}, "mindmerger": {"llms": ["merged"]}})
    ref = ArtifactRef(kind="mindmerger", key="k" * 24, uri="file:///store/mindmerger/k", digest="d")
    outputs = RunOutputs(merged=ref, mindmerger={"merged": MindMergerOutputs(mapping=ref, augmentation=ref)})
    named = {m.name: m.base for m in models_to_evaluate(cfg, outputs) if m.kind == "mindmerger"}
    assert named == {"mindmerger-ties": "ties"}


def test_the_ability_is_read_and_measured():
    science = RunConfig.model_validate({"ability": "science", "evaluation": {"benchmarks": [
        {"name": "mmlu_science", "data": "demo:bench/mmlu"}, {"name": "xnli", "data": "demo:bench/xnli"}]}})
    assert [b.benchmark.measures for b in science.evaluation.benchmarks] == ["science", None]
    assert RunConfig.model_validate({"evaluation": {"enabled": False}, "ability": "science"}).ability == "science"
