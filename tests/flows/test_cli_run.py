"""`linguaforge run` and `linguaforge artifacts` as a user runs them: real subprocesses, real Prefect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from linguaforge.flows.config import load_config
from linguaforge.flows.outputs import RunOutputs
from linguaforge.flows.stages import planned_stages
from linguaforge.storage import ArtifactStore

TINY = {
    "name": "tiny", "languages": ["de", "sw"],
    "demo": {"general_docs": 60, "ability_problems": 80, "translation_pairs": 20, "query_items": 10,
             "test_items": 4, "vocab_size": 400, "llm_hidden_size": 32, "encoder_hidden_size": 32,
             "bootstrap": {"train": {"steps": 4, "batch_tokens": 512, "micro_batch_size": 4}}},
    "corpus_prep": {"block_size": 32},
    "probe": {"train": {"steps": 3, "batch_tokens": 128, "micro_batch_size": 4}},
    "masked_cpt": {"train": {"steps": 4, "batch_tokens": 128, "micro_batch_size": 4, "checkpoint_every": 2}},
    "full_cpt": {"train": {"steps": 4, "batch_tokens": 128, "micro_batch_size": 4, "checkpoint_every": 2}},
    "mindmerger": {"llms": ["base", "merged", "full_cpt"], "mapping": {"epochs": 1, "global_batch_size": 8, "micro_batch_size": 4, "max_source_len": 48,
                               "max_target_len": 48, "checkpoint_every": 2},
                   "augmentation": {"epochs": 1, "global_batch_size": 8, "micro_batch_size": 4,
                                    "max_source_len": 256, "max_target_len": 512, "checkpoint_every": 2}},
    "evaluation": {"batch_size": 4, "benchmarks": [
        {"name": "mgsm", "data": "demo:bench/mgsm", "max_new_tokens": 12},
        {"name": "xnli", "data": "demo:bench/xnli", "scoring": "loglik"},
    ]},
}


def _config(tmp_path: Path, **overrides) -> Path:
    data = json.loads(json.dumps(TINY))
    data["store"] = {"url": str(tmp_path / "store"), "cache_dir": str(tmp_path / "cache")}
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args, cwd: Path, api_url: str | None = None, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", **(extra_env or {})}
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_run_twice_on_ephemeral_prefect_second_run_skips_everything(tmp_path, repo_root):
    config = _config(tmp_path)
    first = _cli("run", str(config), cwd=repo_root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "stage(s) ran, 0 skipped" in first.stdout
    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "cache")
    committed = store.list()
    # the plan the live display counts is the real one, stage by stage
    assert planned_stages(load_config(config)) == Counter(m.stage for m in committed)
    # the terminal shows the display and the summary; the per-step Prefect log goes to the run's log file
    (log,) = [p for p in (tmp_path / "runs" / "tiny").glob("*.log") if not p.name.endswith(".server.log")]
    assert f"log: {log}" in first.stdout
    assert "| INFO" not in first.stdout + first.stderr
    assert log.read_text().count("importance_probe") > 0 and "| INFO" in log.read_text()
    assert {m.kind for m in committed} >= {"demo_world", "tiny_models", "base_llm", "corpus", "mask", "delta"}
    by_stage = {}
    for m in committed:
        by_stage.setdefault(m.stage, []).append(m)
    assert len(by_stage["importance_probe"]) == 4  # ability, en, de, sw
    assert len(by_stage["masked_cpt"]) == 4  # ability+en, en, de, sw
    assert all(m.metrics["key_neurons"] > 0 for m in by_stage["importance_probe"])
    languages = {m.params.get("language") for m in committed if m.stage == "corpus_prep"}
    assert languages == {"en", "de", "sw"}
    units = [m for m in committed if m.kind == "eval"]
    assert sorted((m.params["model"], m.params["benchmark"]["name"], m.params["language"]) for m in units) == sorted(
        (model, b, lang) for model in ("base", "full_cpt", "task_vector", "maet", "mindmerger-base", "mindmerger-maet",
                                  "mindmerger-full_cpt")
        for b in ("mgsm", "xnli") for lang in ("en", "de", "sw"))
    assert "accuracy % / chance-adjusted" in first.stdout and "comparison.png" in first.stdout
    assert "headline: average Δ" in first.stdout  # the closing summary prints the headline
    report = next(m for m in committed if m.kind == "report")
    md = store.open((report.kind, report.key)).read_text("report.md")
    assert md.index("## Headline") < md.index("## mgsm")
    for model in ("mindmerger-maet", "mindmerger-full_cpt", "mindmerger-base"):  # every evaluated model
        assert f"| {model} |" in md

    second = _cli("run", str(config), "-v", "--outputs", str(tmp_path / "outputs.json"), cwd=repo_root)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing re-executed" in second.stdout
    assert "already committed" in second.stdout + second.stderr  # -v streams the log as well
    assert len(store.list()) == len(committed)
    assert len(store.events(event="committed")) == len(committed)  # nothing executed twice
    outputs = RunOutputs.model_validate_json((tmp_path / "outputs.json").read_text())
    assert outputs.report.key == report.key and {u.ref.key for u in outputs.evaluations} == {m.key for m in units}

    listing = _cli("artifacts", str(config), cwd=repo_root)
    assert listing.returncode == 0 and f"{len(committed)} artifact(s)" in listing.stdout

    # a store keeps older units beside newer ones (another evaluator version): the rebuilt report takes the newest
    old = next(m for m in units if (m.params["model"], m.params["benchmark"]["name"], m.params["language"])
               == ("base", "mgsm", "de"))
    newer = {**store.open((old.kind, old.key)).read_json("scores.json"), "accuracy": 1.0}
    with store.writer("eval", "f" * 24, stage="evaluate", stage_version="newer", params=old.params) as w:
        w.write_json("scores.json", newer)
    rebuilt = _cli("report", str(config), "--out", str(tmp_path / "rebuilt"), cwd=repo_root)
    assert rebuilt.returncode == 0 and "1 older evaluation unit(s) superseded" in rebuilt.stdout, rebuilt.stdout
    mgsm = (tmp_path / "rebuilt" / "report.md").read_text().split("## mgsm")[1].split("## ")[0]
    de_row = next(line for line in mgsm.splitlines() if line.startswith("| de |"))
    assert de_row.split("|")[3].strip().startswith("100.0 ["), de_row  # language | n | base | ...


def test_bad_config_exits_2_naming_each_field(tmp_path, repo_root):
    config = _config(tmp_path, languages=["de", "qq"], **{"probe.k1_percent": 150})
    result = _cli("run", str(config), cwd=repo_root)
    assert result.returncode == 2
    assert "languages[1]: 'qq' is not an ISO 639-1 language code" in result.stderr
    assert "probe.k1_percent: Input should be less than or equal to 100" in result.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.slow
def test_missing_corpus_file_is_refused_before_anything_runs(tmp_path, repo_root, prefect_server):
    missing = tmp_path / "nowhere" / "de.jsonl"
    config = _config(tmp_path, **{"corpora.general": {"de": {"uri": str(missing)}}})
    result = _cli("run", str(config), cwd=repo_root, api_url=prefect_server)
    assert result.returncode == 2, result.stdout + result.stderr  # refused by the preflight, before any stage
    assert "corpora.general.de" in result.stderr and f"{missing}: file does not exist" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "store").exists() or not ArtifactStore(
        str(tmp_path / "store"), cache_dir=tmp_path / "cache").events()  # nothing started, nothing committed


@pytest.mark.slow
def test_tokenizer_that_is_not_the_models(tmp_path, repo_root, prefect_server, demo_assets):
    config = _config(tmp_path, **{"models.tokenizer": str(demo_assets["encoder"])})
    result = _cli("run", str(config), cwd=repo_root, api_url=prefect_server)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "it is not the model's tokenizer" in result.stderr
    assert ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "c").list("corpus") == []


def test_store_without_credentials(tmp_path, repo_root, s3_endpoint, prefect_server):
    config = _config(tmp_path, **{"store.url": "s3://some-bucket/runs"})
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    result = _cli("run", str(config), cwd=repo_root, api_url=prefect_server, extra_env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "s3://some-bucket/runs is not accessible" in result.stderr and "credentials" in result.stderr


def test_eval_and_report_commands(tmp_path, repo_root, demo_assets):
    bench = demo_assets["world"] / "bench" / "xnli"
    out = tmp_path / "eval"
    result = _cli("eval", "--model", str(demo_assets["llm"]), "--benchmark", "xnli", "--data", str(bench),
                  "--languages", "en,sw", "--scoring", "loglik", "--limit", "5", "--out", str(out), "--name", "tiny",
                  "--output-format", "lm-eval", cwd=repo_root)
    assert result.returncode == 0, result.stdout + result.stderr
    for lang in ("en", "sw"):
        scores = json.loads((out / "xnli" / lang / "scores.json").read_text())
        assert (scores["model"], scores["language"], scores["n"]) == ("tiny", lang, 5)
    assert (out / "report.md").exists() and "tiny" in result.stdout
    (lmeval,) = (out / "tiny").glob("results_*.json")  # where lm-eval puts it: <out>/<model>/results_<date>.json
    doc = json.loads(lmeval.read_text())
    assert {"results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config"} <= doc.keys()
    assert doc["results"]["xnli_sw"]["acc,loglik"] == json.loads((out / "xnli" / "sw" / "scores.json").read_text())["accuracy"]
    assert doc["n-samples"]["xnli_en"]["effective"] == 5 and doc["n-samples"]["xnli_en"]["original"] >= 5
    assert (out / "xnli" / "en" / "results_lmeval.json").is_file()  # every unit writes its own, too

    rebuilt = _cli("report", str(out / "xnli"), "--out", str(tmp_path / "again"), cwd=repo_root)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert (tmp_path / "again" / "comparison.png").stat().st_size > 0
    empty = _cli("report", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"), cwd=repo_root)
    assert empty.returncode != 0


def test_unreachable_prefect_server_is_a_clear_error_before_anything_runs(tmp_path, repo_root):
    config = _config(tmp_path)
    result = _cli("run", str(config), cwd=repo_root, api_url="http://127.0.0.1:9/api")
    assert result.returncode == 2
    assert "no Prefect server answers at PREFECT_API_URL=http://127.0.0.1:9/api" in result.stderr
    assert not (tmp_path / "store").exists()
