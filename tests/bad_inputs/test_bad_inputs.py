"""Every bad input a user can hand linguaforge, as the user hands it: a real `linguaforge` subprocess.

Each case asserts a non-zero exit, one message that names the input and says what is wrong (the expected
fragments), no traceback, and that nothing was committed or written. The table of cases and outcomes is
written to `build/reliability/bad_inputs.json`, from which docs/reliability.md is generated
(`make reliability-doc`)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.flows.test_merge_cli import _delta

pytestmark = pytest.mark.slow

OUTCOMES: list[dict] = []


@dataclass
class Env:
    tmp: Path
    llm: Path
    deltas: dict[str, Path]
    store: Path = field(init=False)

    def __post_init__(self):
        self.store = self.tmp / "store"

    def run_config(self, **overrides) -> str:
        """A small valid run configuration with dotted overrides, written to a file; returns its path."""
        data = {"name": "bad", "languages": ["de"], "store": {"url": str(self.store), "cache_dir": str(self.tmp / "c")},
                "mindmerger": {"enabled": False}}
        return self._write("run.yaml", data, overrides)

    def merge_config(self, **overrides) -> str:
        data = {"base": str(self.llm), "out": str(self.tmp / "merged"), "cache_dir": str(self.tmp / "c"),
                "deltas": {"ability_pivot": str(self.deltas["ability_pivot"]), "pivot": str(self.deltas["pivot"]),
                           "languages": {"de": str(self.deltas["de"])}}}
        return self._write("merge.yaml", data, overrides)

    def _write(self, name: str, data: dict, overrides: dict) -> str:
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        path = self.tmp / name
        path.write_text(yaml.safe_dump(data))
        return str(path)

    def file(self, name: str, content: bytes | str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)


@dataclass
class Case:
    id: str
    area: str
    argv: Callable[[Env], list[str]]
    expect: list[str]  # fragments the one message must contain (the input's name, what is wrong)
    untouched: Callable[[Env], list[Path]] = lambda env: [env.store, env.tmp / "merged"]


GARBAGE = bytes(range(255, -1, -1)) * 8  # starts with bytes that are not UTF-8
BENCH = {"name": "mgsm", "data": "demo:bench/mgsm"}


def _corrupt_parquet(env: Env) -> str:
    path = env.tmp / "corpus.parquet"
    pq.write_table(pa.table({"text": ["a document"] * 50}), path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 40] = b"\0" * 40
    path.write_bytes(bytes(data[:-12]))  # damaged and truncated footer
    return str(path)


def _read_only_store(env: Env) -> list[str]:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the store-under-a-file case covers the same check")
    env.store.mkdir()
    env.store.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return ["run", env.run_config()]


def _non_empty_out(env: Env) -> list[str]:
    (env.tmp / "merged" / "sub").mkdir(parents=True)
    (env.tmp / "merged" / "sub" / "notes.txt").write_text("mine")
    return ["merge", env.merge_config()]


def _truncated_delta(env: Env) -> list[str]:
    data = env.deltas["de"].read_bytes()
    return ["merge", env.merge_config(**{"deltas.languages": {"de": env.file("cut.safetensors", data[: len(data) // 2])}})]


def _models_dir(env: Env) -> str:
    (env.tmp / "notamodel").mkdir()
    (env.tmp / "notamodel" / "weights.bin").write_bytes(b"\0" * 16)
    return str(env.tmp / "notamodel")


CASES = [
    # -- the run configuration --------------------------------------------------------------------------
    Case("config file missing", "config", lambda e: ["run", str(e.tmp / "nope.yaml")], ["nope.yaml", "no such file"]),
    Case("config is binary", "config", lambda e: ["run", e.file("bin.yaml", GARBAGE)], ["bin.yaml", "not UTF-8"]),
    Case("config is not YAML", "config", lambda e: ["run", e.file("bad.yaml", "a: [1, 2\nb: }")],
         ["bad.yaml", "not valid YAML"]),
    Case("config is a list", "config", lambda e: ["run", e.file("list.yaml", "- 1\n- 2\n")], ["list.yaml", "mapping"]),
    Case("misspelt field", "config", lambda e: ["run", e.run_config(**{"probe.k1_percnt": 5})],
         ["probe.k1_percnt", "not permitted"]),
    Case("γ is NaN", "config", lambda e: ["run", e.run_config(**{"merge.gamma": float("nan")})],
         ["merge.gamma", "finite"]),
    Case("η is infinite", "config", lambda e: ["run", e.run_config(**{"merge.eta": float("inf")})],
         ["merge.eta", "finite"]),
    Case("learning rate is NaN", "config",
         lambda e: ["run", e.run_config(**{"full_cpt.train.learning_rate": float("nan")})],
         ["full_cpt.train.learning_rate", "finite"]),
    Case("λ is -inf", "config", lambda e: ["run", e.run_config(**{"merge.task_vector_lambda": float("-inf")})],
         ["merge.task_vector_lambda", "finite"]),
    Case("k1 out of range", "config", lambda e: ["run", e.run_config(**{"probe.k1_percent": 150})],
         ["probe.k1_percent"]),
    Case("negative learning rate", "config", lambda e: ["run", e.run_config(**{"masked_cpt.train.learning_rate": -1})],
         ["masked_cpt.train.learning_rate", "greater than 0"]),
    Case("100 000-character run name", "config", lambda e: ["run", e.run_config(name="x" * 100_000)],
         ["name", "at most 100 characters"]),
    Case("unknown language code", "config", lambda e: ["run", e.run_config(languages=["xx"])],
         ["languages", "'xx' is not an ISO 639-1"]),
    Case("100 kB language code", "config", lambda e: ["run", e.run_config(languages=["q" * 100_000])],
         ["languages", "100000 characters"]),
    Case("language listed twice", "config", lambda e: ["run", e.run_config(languages=["de", "de"])],
         ["languages", "more than once"]),
    Case("pivot among the targets", "config", lambda e: ["run", e.run_config(languages=["en", "de"])],
         ["pivot_language", "must not also be a target"]),
    Case("μ for the wrong languages", "config", lambda e: ["run", e.run_config(**{"merge.mu": {"sw": 1.0}})],
         ["merge.mu", "exactly the target languages"]),
    Case("MindMerger on a baseline that is not built", "config",
         lambda e: ["run", e.run_config(**{"mindmerger.enabled": True, "mindmerger.llms": ["full_cpt"],
                                          "merge.baselines": []})], ["mindmerger.llms", "full_cpt"]),
    Case("unknown benchmark", "config",
         lambda e: ["run", e.run_config(**{"evaluation.benchmarks": [{"name": "gsm9k", "data": "x"}]})],
         ["evaluation.benchmarks", "gsm9k"]),
    Case("unknown prompt preset", "config",
         lambda e: ["run", e.run_config(**{"evaluation.benchmarks": [{**BENCH, "prompt": "shouty"}]})],
         ["evaluation.benchmarks[0]", "'shouty'", "neither a built-in preset"]),
    Case("exemplar file missing", "config",
         lambda e: ["run", e.run_config(**{"evaluation.benchmarks": [{**BENCH, "exemplars": str(e.tmp / "ex.json")}]})],
         ["exemplars", "ex.json", "not found"]),
    Case("exemplar file not JSON", "config",
         lambda e: ["run", e.run_config(**{"evaluation.benchmarks": [{**BENCH, "exemplars": e.file("ex.json", "{")}]})],
         ["ex.json", "not valid JSON"]),
    Case("benchmark folder missing", "benchmark files",
         lambda e: ["run", e.run_config(**{"evaluation.benchmarks": [{"name": "mgsm", "data": str(e.tmp / "mgsm")}]})],
         ["evaluation.benchmarks[0] (mgsm).data", "no such file or folder"]),
    Case("malformed MGSM file", "benchmark files",
         lambda e: ["run", e.run_config(**{"evaluation.benchmarks": [
             {"name": "mgsm", "data": str(Path(e.file("mgsm/mgsm_en.tsv", "2+2?\t4\nno answer here\n")).parent)}]})],
         ["mgsm_en.tsv", "line 2", "expected 2 tab-separated columns"]),
    # -- models and tokenizers ---------------------------------------------------------------------------
    Case("base model path missing", "models", lambda e: ["run", e.run_config(**{"models.base_llm": str(e.tmp / "m")})],
         ["models.base_llm", "no such folder"]),
    Case("base model folder is not a model", "models",
         lambda e: ["run", e.run_config(**{"models.base_llm": _models_dir(e)})], ["notamodel", "not a model folder"]),
    Case("tokenizer path missing", "tokenizers",
         lambda e: ["run", e.run_config(**{"models.tokenizer": str(e.tmp / "tok")})], ["models.tokenizer", "no such"]),
    Case("encoder folder is not a model", "models",
         lambda e: ["run", e.run_config(**{"mindmerger.enabled": True, "models.encoder": _models_dir(e)})],
         ["models.encoder", "not a model folder"]),
    # -- corpora -------------------------------------------------------------------------------------------
    Case("corpus file missing", "corpora",
         lambda e: ["run", e.run_config(**{"corpora.ability": {"uri": str(e.tmp / "a.jsonl")}})],
         ["corpora.ability", "a.jsonl", "does not exist"]),
    Case("corpus of binary garbage", "corpora",
         lambda e: ["run", e.run_config(**{"corpora.ability": {"uri": e.file("a.jsonl", GARBAGE)}})],
         ["a.jsonl", "not UTF-8"]),
    Case("corrupt Parquet corpus", "corpora",
         lambda e: ["run", e.run_config(**{"corpora.general": {"de": {"uri": _corrupt_parquet(e)}}})],
         ["corpus.parquet", "not a readable Parquet file"]),
    Case("JSONL corpus without the text field", "corpora",
         lambda e: ["run", e.run_config(**{"corpora.ability": {"uri": e.file("b.jsonl", '{"body": "x"}\n')}})],
         ["b.jsonl", "no field 'text'"]),
    Case("corpus of unknown format", "corpora",
         lambda e: ["run", e.run_config(**{"corpora.ability": {"uri": e.file("a.csv", "x")}})],
         ["a.csv", "cannot tell the format"]),
    # -- the store -------------------------------------------------------------------------------------------
    Case("read-only store folder", "store", _read_only_store, ["store", "not writable"],
         untouched=lambda e: [e.store / "_events"]),
    Case("store path under a file", "store",
         lambda e: ["run", e.run_config(), "--store", e.file("plain.txt", "x") + "/store"], ["plain.txt", "not writable"],
         untouched=lambda e: []),
    Case("empty store URL", "CLI flags", lambda e: ["run", e.run_config(), "--store", ""], ["store URL", "empty"]),
    Case("listing a store that does not exist", "CLI flags",
         lambda e: ["artifacts", "--store", str(e.tmp / "typo")], ["typo", "does not exist"],
         untouched=lambda e: [e.tmp / "typo"]),
    Case("verifying a store that does not exist", "CLI flags",
         lambda e: ["verify", "--store", str(e.tmp / "typo")], ["typo", "does not exist"],
         untouched=lambda e: [e.tmp / "typo"]),
    Case("rm of an artifact that is not there", "CLI flags",
         lambda e: (e.store.mkdir(), ["rm", "delta/0123abcd", "--store", str(e.store)])[1],
         ["delta/0123abcd", "no such committed artifact"], untouched=lambda e: [e.store / "delta"]),
    Case("rm escaping the store", "CLI flags",
         lambda e: (e.store.mkdir(), ["rm", "../../etc", "--store", str(e.store)])[1],
         ["not a plain name"], untouched=lambda e: [e.store / "delta"]),
    # -- linguaforge merge -----------------------------------------------------------------------------------
    Case("merge config is not YAML", "merge", lambda e: ["merge", e.file("m.yaml", "base: [")], ["m.yaml", "not valid YAML"]),
    Case("merge γ is NaN", "merge", lambda e: ["merge", e.merge_config(**{"merge.gamma": float("nan")})],
         ["merge.gamma", "finite"]),
    Case("merge language xx", "merge",
         lambda e: ["merge", e.merge_config(**{"deltas.languages": {"xx": str(e.deltas["de"])}})],
         ["deltas.languages", "'xx' is not an ISO 639-1"]),
    Case("merge μ for another language", "merge", lambda e: ["merge", e.merge_config(**{"merge.mu": {"sw": 1.0}})],
         ["merge.mu", "deltas.languages"]),
    Case("truncated delta file", "deltas", _truncated_delta, ["cut.safetensors"]),
    Case("delta file missing", "deltas",
         lambda e: ["merge", e.merge_config(**{"deltas.pivot": str(e.tmp / "gone.safetensors")})],
         ["gone.safetensors", "no such file"]),
    Case("a mask file given as a delta", "masks",
         lambda e: ["merge", e.merge_config(**{"deltas.pivot": str(e.deltas["mask"])})],
         ["mask.safetensors", "format"]),
    Case("merge base model missing", "merge", lambda e: ["merge", e.merge_config(base=str(e.tmp / "nobase"))],
         ["nobase", "no such folder"]),
    Case("merge into a non-empty folder", "merge", _non_empty_out, ["merged", "not empty", "--force"],
         untouched=lambda e: [e.tmp / "merged" / "config.json"]),
    # -- linguaforge eval -------------------------------------------------------------------------------------
    Case("eval language jp", "CLI flags",
         lambda e: ["eval", "--model", str(e.llm), "--benchmark", "mgsm", "--data", str(e.tmp), "--languages", "jp",
                    "--out", str(e.tmp / "ev")], ["--languages", "'jp' is not an ISO 639-1", "is 'ja'"],
         untouched=lambda e: [e.tmp / "ev"]),
    Case("eval language twice", "CLI flags",
         lambda e: ["eval", "--model", str(e.llm), "--benchmark", "mgsm", "--data", str(e.tmp), "--languages", "en,en",
                    "--out", str(e.tmp / "ev")], ["--languages", "more than once"], untouched=lambda e: [e.tmp / "ev"]),
    Case("eval model path missing", "models",
         lambda e: ["eval", "--model", str(e.tmp / "nomodel"), "--benchmark", "mgsm", "--data", str(e.tmp),
                    "--out", str(e.tmp / "ev")], ["nomodel", "no such folder"], untouched=lambda e: [e.tmp / "ev"]),
    Case("eval data folder missing", "benchmark files",
         lambda e: ["eval", "--model", str(e.llm), "--benchmark", "mgsm", "--data", str(e.tmp / "nodata"),
                    "--out", str(e.tmp / "ev")], ["nodata"], untouched=lambda e: [e.tmp / "ev"]),
    Case("eval limit 0", "CLI flags",
         lambda e: ["eval", "--model", str(e.llm), "--benchmark", "mgsm", "--data", str(e.tmp), "--limit", "0",
                    "--out", str(e.tmp / "ev")], ["--limit", "at least 1"], untouched=lambda e: [e.tmp / "ev"]),
    Case("eval batch size 0", "CLI flags",
         lambda e: ["eval", "--model", str(e.llm), "--benchmark", "mgsm", "--data", str(e.tmp), "--batch-size", "0",
                    "--out", str(e.tmp / "ev")], ["--batch-size", "at least 1"], untouched=lambda e: [e.tmp / "ev"]),
    # -- deployments -------------------------------------------------------------------------------------------
    Case("serve without a Prefect server", "deployment parameters", lambda e: ["serve", e.run_config()],
         ["PREFECT_API_URL"]),
    Case("serve with a bad cron", "deployment parameters",
         lambda e: ["serve", e.run_config(), "--eval-cron", "every tuesday"], ["--eval-cron", "'every tuesday' is not a cron expression"]),
]


@pytest.fixture(scope="module")
def assets(demo_assets, tmp_path_factory) -> dict[str, Path]:
    from linguaforge.pipelines.maet.importance import NeuronMask

    root = tmp_path_factory.mktemp("bad-input-assets")
    deltas = {name: _delta(root / f"{name}.safetensors", demo_assets["llm"], seed)
              for seed, name in enumerate(["ability_pivot", "pivot", "de"])}
    import torch

    NeuronMask("row", {"w": (2, 2)}, {"w": torch.tensor([True, False])}).save(root / "mask.safetensors")
    return {"llm": demo_assets["llm"], **deltas, "mask": root / "mask.safetensors"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(case: Case, assets, tmp_path, repo_root):
    env = Env(tmp_path, assets["llm"], {k: v for k, v in assets.items() if k != "llm"})
    argv = case.argv(env)
    before = {p: p.exists() and sorted(p.rglob("*")) if p.is_dir() else p.exists() for p in case.untouched(env)}
    environ = {**os.environ, "COLUMNS": "200"}
    for var in ("PREFECT_API_URL", "LINGUAFORGE_DEBUG"):
        environ.pop(var, None)
    try:
        result = subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", *argv], cwd=repo_root, env=environ,
                                capture_output=True, text=True, timeout=600)
    finally:
        if env.store.exists():
            env.store.chmod(stat.S_IRWXU)
    output = result.stdout + result.stderr
    message = " ".join(output.split())
    outcome = {"case": case.id, "area": case.area, "exit": result.returncode,
               "message": message[:300], "traceback": "Traceback" in output}
    OUTCOMES.append(outcome)
    _record()
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    for fragment in case.expect:
        assert " ".join(fragment.split()) in message, f"{fragment!r} not in: {message[:1500]}"
    for path, was in before.items():
        now = path.exists() and sorted(path.rglob("*")) if path.is_dir() else path.exists()
        assert now == was, f"{path} changed"
    assert not list(env.store.glob("*/*/manifest.json")), "something was committed"


def _record() -> None:
    out = Path(__file__).resolve().parents[2] / "build" / "reliability" / "bad_inputs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(OUTCOMES, indent=1, ensure_ascii=False))
