"""Every bad input a user can hand linguaforge, as the user hands it: a real `linguaforge` subprocess.

Each case asserts a non-zero exit, one message that names the input and says what is wrong (the expected
fragments), no traceback, and that nothing was committed or written. The table of cases and outcomes is
written to `build/reliability/bad_inputs.json`, from which docs/reliability.md is generated
(`make reliability-doc`)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
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



# -- helpers of the cases below: damaged or unusual model folders, foreign folders, alias bombs ------------------
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


def _model_copy(env: Env, name: str) -> Path:
    folder = env.tmp / name
    shutil.copytree(env.llm, folder)
    return folder


def _weights(folder: Path) -> Path:
    return next(folder.glob("*.safetensors"))


def _with_header(env: Env, name: str, edit) -> str:
    """A copy of the model whose safetensors header `edit` changed (the data left as it is)."""
    folder = _model_copy(env, name)
    path = _weights(folder)
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    edit(header)
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    path.write_bytes(struct.pack("<Q", len(body)) + body + data[8 + length:])
    return str(folder)


def _first_tensor(header: dict) -> dict:
    return header[next(k for k in header if k != "__metadata__")]


def _with_index(env: Env, name: str, text: str) -> str:
    folder = _model_copy(env, name)
    (folder / "model.safetensors.index.json").write_text(text)
    return str(folder)


def _pickle_only(env: Env) -> str:
    folder = _model_copy(env, "pickled")
    _weights(folder).rename(folder / "pytorch_model.bin")
    return str(folder)


def _tune(env: Env, name: str, change) -> str:
    """A "fine-tune" of the base: its weights changed by `change(tensors)` (which may add or poison tensors)."""
    from safetensors.torch import load_file, save_file

    folder = _model_copy(env, name)
    tensors = load_file(_weights(folder))
    change(tensors)
    save_file(tensors, _weights(folder), metadata={"format": "pt"})
    return str(folder)


def _poison(tensors: dict) -> None:
    name = next(iter(tensors))
    tensors[name][0].fill_(float("nan"))


def _overflowing(tensors: dict) -> None:
    name = next(iter(tensors))
    tensors[name].fill_(3e38)  # twice the delta of a tensor near float32's largest value: inf


def _extra_tensor(tensors: dict) -> None:
    import torch

    tensors["extra_head.weight"] = torch.zeros(4, 4)


def _models_merge(env: Env, name: str, models: list[str], base: str | None = None, **extra) -> list[str]:
    data = {"base": base or str(env.llm), "out": str(env.tmp / "merged"),
            "models": [{"model": str(m)} for m in models], "merge": {"method": "task_arithmetic"}, **extra}
    path = env.tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return ["merge", str(path)]


def _foreign_folder(env: Env) -> Path:
    """Somebody's folder that looks a little like a store: x/app/1.0/manifest.json."""
    (env.tmp / "x" / "app" / "1.0").mkdir(parents=True)
    (env.tmp / "x" / "app" / "1.0" / "manifest.json").write_text("{}")
    return env.tmp / "x"


def _eval(env: Env, *extra: str, model: str | None = None, out: str | None = None) -> list[str]:
    return ["eval", "--model", model or str(env.llm), "--benchmark", "mgsm", "--data", str(env.tmp / "mgsm"),
            "--out", out or str(env.tmp / "ev"), "--limit", "1", "--max-new-tokens", "2", *extra]


def _mgsm(env: Env) -> None:
    env.file("mgsm/mgsm_en.tsv", "2+2?\t4\n")


def _user_report(env: Env, folder: str) -> str:
    env.file(f"{folder}/report.md", "my own report")
    return str(env.tmp / folder)

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
    # a `demo:` name the world does not make: refused at validation, naming the field and what the world makes
    Case("a demo benchmark split the world does not make", "corpora",
         lambda e: ["run", e.run_config(**{"evaluation.benchmarks": [{"name": "mgsm", "data": "demo:test/mgsm"}]})],
         ["evaluation.benchmarks.mgsm", "demo:test/mgsm", "demo:dev/mgsm"]),
    Case("a demo corpus of a language the run does not have", "corpora",
         lambda e: ["run", e.run_config(**{"corpora.general": {"de": {"uri": "demo:general/fr"}}})],
         ["corpora.general.de", "demo:general/fr", "demo:general/de"]),
    Case("a demo dev split of a benchmark that has none", "corpora",
         lambda e: ["run", e.run_config(**{"evaluation.benchmarks": [{"name": "mgsm", "data": "demo:bench/mgsm"},
                                                                     {"name": "xnli", "data": "demo:dev/xnli"}]})],
         ["evaluation.benchmarks.xnli", "demo:dev/xnli"]),
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
    # -- store ownership: a store knows it is one, and deletes only inside itself ---------------------------------
    Case("verify --repair on a folder that is not a store", "store ownership",
         lambda e: ["verify", "--repair", "--store", str(_foreign_folder(e))], ["not a linguaforge store", "refusing"],
         untouched=lambda e: [e.tmp / "x"]),
    Case("rm in a folder that is not a store", "store ownership",
         lambda e: ["rm", "app/1.0", "--store", str(_foreign_folder(e))], ["not a linguaforge store", "refusing"],
         untouched=lambda e: [e.tmp / "x"]),
    Case("a run into a folder of somebody else's files", "store ownership",
         lambda e: ["run", e.run_config(), "--store", str(_foreign_folder(e))], ["not a linguaforge store's", "app"],
         untouched=lambda e: [e.tmp / "x"]),
    Case("store.url is /etc", "store ownership", lambda e: ["run", e.run_config(**{"store.url": "/etc"})],
         ["/etc", "system folder"], untouched=lambda e: []),
    Case("store.url is the filesystem root", "store ownership", lambda e: ["artifacts", "--store", "/"],
         ["system folder"], untouched=lambda e: []),
    Case("store.url is under /usr", "store ownership", lambda e: ["run", e.run_config(**{"store.url": "/usr/lib/lf"})],
         ["/usr/lib/lf", "system folder"], untouched=lambda e: [Path("/usr/lib/lf")]),
    # -- credentials, at any depth -----------------------------------------------------------------------------------
    Case("a secret nested under storage_options.client_kwargs", "credentials",
         lambda e: ["run", e.run_config(**{"store.storage_options": {"client_kwargs": {"aws_secret_access_key": "s3cr3t"}}})],
         ["store.storage_options", "client_kwargs.aws_secret_access_key", "environment"]),
    Case("a password in a list under storage_options", "credentials",
         lambda e: ["run", e.run_config(**{"store.storage_options": {"config_kwargs": [{"password": "hunter2"}]}})],
         ["config_kwargs[0].password"]),
    Case("a secret in a merge config's storage_options", "credentials",
         lambda e: ["merge", e.merge_config(storage_options={"client_kwargs": {"token": "abc"}})],
         ["storage_options", "client_kwargs.token"]),
    # -- YAML read with limits ----------------------------------------------------------------------------------------
    Case("an alias bomb as the run configuration", "YAML limits", lambda e: ["run", e.file("bomb.yaml", BOMB)],
         ["bomb.yaml", "expand to more than"]),
    Case("an alias bomb as a merge configuration", "YAML limits", lambda e: ["merge", e.file("mbomb.yaml", BOMB)],
         ["mbomb.yaml", "expand to more than"]),
    Case("an alias bomb inside storage_options", "YAML limits",
         lambda e: ["run", e.file("sbomb.yaml", "store:\n  storage_options:\n" + "".join(
             "    " + line + "\n" for line in BOMB.splitlines()))], ["sbomb.yaml", "expand to more than"]),
    Case("a 5 MB run configuration", "YAML limits", lambda e: ["run", e.file("big.yaml", "# " + "x" * 5_000_000)],
         ["big.yaml", "at most"]),
    # -- values that pass a type check and fail inside torch or numpy --------------------------------------------------
    Case("seed beyond 32 bits", "values torch refuses", lambda e: ["run", e.run_config(seed=2**70)],
         ["seed", "less than or equal to 4294967295"]),
    Case("negative seed", "values torch refuses", lambda e: ["run", e.run_config(seed=-1)], ["seed", "greater than"]),
    Case("AdamW β1 above 1", "values torch refuses",
         lambda e: ["run", e.run_config(**{"full_cpt.train.adam_betas": [1.5, 0.9]})], ["adam_betas", "less than 1"]),
    Case("MindMerger β2 of 1", "values torch refuses",
         lambda e: ["run", e.run_config(**{"mindmerger.adam_betas": [0.9, 1.0]})], ["mindmerger.adam_betas"]),
    Case("demo hidden size not a multiple of 16", "values torch refuses",
         lambda e: ["run", e.run_config(**{"demo.llm_hidden_size": 50})], ["demo.llm_hidden_size", "multiple of 16"]),
    Case("demo vocabulary of a billion", "values torch refuses",
         lambda e: ["run", e.run_config(**{"demo.vocab_size": 10**9})], ["demo.vocab_size"]),
    Case("merge seed beyond 32 bits", "values torch refuses", lambda e: ["merge", e.merge_config(seed=2**70)],
         ["seed"]),
    # -- wrong types anywhere ------------------------------------------------------------------------------------------
    Case("a train section that is a string", "types", lambda e: ["run", e.run_config(**{"full_cpt.train": "fast"})],
         ["full_cpt.train"]),
    Case("languages as a string", "types", lambda e: ["run", e.run_config(languages="de")], ["languages"]),
    Case("store as a number", "types", lambda e: ["run", e.run_config(store=5)], ["store"]),
    Case("AdamW betas as a word", "types",
         lambda e: ["run", e.run_config(**{"full_cpt.train.adam_betas": "default"})], ["adam_betas"]),
    Case("mergekit models as a number", "types",
         lambda e: ["merge", e.file("mk1.yaml", f"merge_method: ties\nbase_model: {e.llm}\nmodels: 5\n")],
         ["mk1.yaml", "models must be a list"]),
    Case("mergekit parameters as a list", "types",
         lambda e: ["merge", e.file("mk2.yaml", f"merge_method: ties\nbase_model: {e.llm}\nparameters: [1]\n"
                                    f"models:\n  - model: {e.llm}\n")], ["mk2.yaml", "parameters must be a mapping"]),
    Case("mergekit model as a number", "types",
         lambda e: ["merge", e.file("mk3.yaml", f"merge_method: ties\nbase_model: {e.llm}\nmodels:\n  - model: 7\n")],
         ["mk3.yaml", "models[0].model must be a model id or path"]),
    Case("mergekit base_model as a list", "types",
         lambda e: ["merge", e.file("mk4.yaml", "merge_method: ties\nbase_model: [a, b]\nmodels:\n  - model: x/y\n")],
         ["mk4.yaml", "base_model must be a model id or path"]),
    # -- URL schemes ------------------------------------------------------------------------------------------------------
    Case("store URL of an unknown scheme", "URL schemes", lambda e: ["run", e.run_config(**{"store.url": "foo://b/x"})],
         ["foo://b/x", "cannot be opened"], untouched=lambda e: []),
    Case("corpus URL of an unknown scheme", "URL schemes",
         lambda e: ["run", e.run_config(**{"corpora.ability": {"uri": "foo://x.jsonl"}})],
         ["corpora.ability", "unsupported URL scheme 'foo://'"]),
    Case("base model URL of an unknown scheme", "URL schemes",
         lambda e: ["run", e.run_config(**{"models.base_llm": "foo://x"})], ["models.base_llm", "unsupported URL scheme"]),
    Case("eval --model of an unknown scheme", "URL schemes", lambda e: _eval(e, model="foo://x"),
         ["--model foo://x", "unsupported URL scheme"], untouched=lambda e: [e.tmp / "ev"]),
    Case("eval --data of an unknown scheme", "URL schemes",
         lambda e: ["eval", "--model", str(e.llm), "--benchmark", "mgsm", "--data", "foo://x", "--out", str(e.tmp / "ev")],
         ["--data foo://x", "unsupported URL scheme"], untouched=lambda e: [e.tmp / "ev"]),
    Case("merge input of an unknown scheme", "URL schemes", lambda e: _models_merge(e, "mf", ["foo://x/y"]),
         ["foo://x/y", "unsupported URL scheme"]),
    Case("exemplar file of an unknown scheme", "URL schemes",
         lambda e: ["run", e.run_config(**{"evaluation.benchmarks": [{**BENCH, "exemplars": "foo://ex.json"}]})],
         ["exemplars", "unsupported URL scheme"]),
    # -- weight files and model folders ------------------------------------------------------------------------------------
    Case("a shard index that is not JSON", "weight files",
         lambda e: _models_merge(e, "i1", [str(e.llm)], base=_with_index(e, "badindex", "{oops")),
         ["model.safetensors.index.json", "not readable JSON"]),
    Case("a shard index whose weight_map is a number", "weight files",
         lambda e: _models_merge(e, "i2", [str(e.llm)], base=_with_index(e, "badmap", '{"weight_map": 5}')),
         ["model.safetensors.index.json", "weight_map"]),
    Case("a shard index naming a missing shard", "weight files",
         lambda e: _models_merge(e, "i3", [str(e.llm)], base=_with_index(
             e, "noshard", '{"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}')),
         ["model-00002-of-00002.safetensors", "not in the folder"]),
    Case("a safetensors header that is not JSON", "weight files",
         lambda e: _models_merge(e, "h1", [str(e.llm)], base=_with_header(e, "hdr", lambda h: h.update(
             {"__metadata__": {"x": "y"}, "b": {"dtype": "F32", "shape": [1], "data_offsets": "nope"}}))),
         ["model.safetensors", "tensor 'b'", "data_offsets"]),
    Case("a tensor whose offsets lie beyond the file", "weight files",
         lambda e: _models_merge(e, "h2", [str(e.llm)], base=_with_header(
             e, "far", lambda h: _first_tensor(h).update(data_offsets=[0, 10**12]))),
         ["model.safetensors", "lie outside the file"]),
    Case("a tensor whose byte count does not fit its shape", "weight files",
         lambda e: _models_merge(e, "h3", [str(e.llm)], base=_with_header(
             e, "short", lambda h: _first_tensor(h).update(shape=[1, 1]))), ["model.safetensors", "bytes for a"]),
    Case("a tensor of an unknown dtype", "weight files",
         lambda e: _models_merge(e, "h4", [str(e.llm)], base=_with_header(
             e, "f8", lambda h: _first_tensor(h).update(dtype="F8_E9M9"))), ["model.safetensors", "F8_E9M9"]),
    Case("a merge input with pickle weights only", "weight files", lambda e: _models_merge(e, "p1", [_pickle_only(e)]),
         ["pytorch_model.bin", "never unpickles"]),
    Case("an eval model with pickle weights only", "weight files", lambda e: (_mgsm(e), _eval(e, model=_pickle_only(e)))[1],
         ["pytorch_model.bin", "never unpickles"], untouched=lambda e: [e.tmp / "ev"]),
    Case("an eval model whose config.json is not JSON", "weight files",
         lambda e: (_mgsm(e), (_model_copy(e, "badcfg") / "config.json").write_text("{oops"),
                    _eval(e, model=str(e.tmp / "badcfg")))[2], ["badcfg", "cannot be loaded"],
         untouched=lambda e: [e.tmp / "ev"]),
    # -- merge outputs: one transaction, apart from its inputs, finite ------------------------------------------------------
    Case("merge out is a file", "merge outputs",
         lambda e: _models_merge(e, "o1", [str(e.llm)], out=e.file("afile", "mine")), ["afile", "not a folder"],
         untouched=lambda e: [e.tmp / "afile"]),
    Case("merge out is the base, with --force", "merge outputs",
         lambda e: _models_merge(e, "o2", [_model_copy(e, "tune")], out=str(e.llm), force=True) ,
         ["never writes over what it reads"], untouched=lambda e: [e.llm]),
    Case("merge out inside an input", "merge outputs",
         lambda e: _models_merge(e, "o3", [_model_copy(e, "tune")], out=str(e.tmp / "tune" / "merged")),
         ["never writes over what it reads"], untouched=lambda e: [e.tmp / "tune"]),
    Case("merge out around the base", "merge outputs",
         lambda e: _models_merge(e, "o4", [str(e.llm)], out=str(e.llm.parent), force=True),
         ["never writes over what it reads"], untouched=lambda e: [e.llm]),
    Case("a NaN in the base", "merge outputs",
         lambda e: _models_merge(e, "n1", [str(e.llm)], base=_tune(e, "nanbase", _poison)), ["NaN or Inf", "the base model holds"]),
    Case("two fine-tunes whose sum overflows", "merge outputs",
         lambda e: _models_merge(e, "n2", [_tune(e, "big1", _overflowing), _tune(e, "big2", _overflowing)]),
         ["NaN or Inf", "overflow"]),
    Case("a fine-tune with a tensor the base lacks", "merge outputs",
         lambda e: _models_merge(e, "x1", [_tune(e, "extra", _extra_tensor)]), ["extra_head.weight", "the base lacks"]),
    # -- key.path=value overrides on the command line -------------------------------------------------------------
    Case("an override without a value", "overrides", lambda e: ["run", e.run_config(), "full_cpt.train.steps"],
         ["full_cpt.train.steps", "expected KEY.PATH=VALUE"]),
    Case("an override to a bad value", "overrides", lambda e: ["run", e.run_config(), "full_cpt.train.steps=-3"],
         ["full_cpt.train.steps", "greater than or equal to 1"]),
    Case("an override of a misspelt field", "overrides", lambda e: ["run", e.run_config(), "probe.k1_percnt=5"],
         ["probe.k1_percnt", "not permitted"]),
    # -- devices this machine does not have (the GPU machines run `make gpu-check` instead) ----------------------
    Case("device cuda on a machine without CUDA", "devices", lambda e: ["run", e.run_config(device="cuda")],
         ["device", "no CUDA device"]),
    Case("a stage's device cuda:7", "devices", lambda e: ["run", e.run_config(**{"full_cpt.train.device": "cuda:7"})],
         ["full_cpt.train.device", "cuda:7"]),
    Case("device gpu (not a device name)", "devices", lambda e: ["run", e.run_config(device="gpu")], ["device"]),
    Case("eval --device cuda without CUDA", "devices", lambda e: _eval(e, "--device", "cuda"),
         ["--device", "no CUDA device"], untouched=lambda e: [e.tmp / "ev"]),
    # -- outputs named on the command line -----------------------------------------------------------------------------------
    Case("--outputs is a folder", "command outputs", lambda e: ["run", e.run_config(), "--outputs", str(e.tmp)],
         ["--outputs", "is a folder"]),
    Case("--outputs is somebody's file", "command outputs",
         lambda e: ["run", e.run_config(), "--outputs", e.file("mine.json", "user data")],
         ["mine.json", "never writes over a file it did not write"], untouched=lambda e: [e.tmp / "mine.json"]),
    Case("eval --out is a file", "command outputs", lambda e: (_mgsm(e), _eval(e, out=e.file("ev.txt", "x")))[1],
         ["ev.txt", "not a folder"], untouched=lambda e: [e.tmp / "ev.txt"]),
    Case("eval --out holds somebody's report.md", "command outputs",
         lambda e: (_mgsm(e), _eval(e, out=_user_report(e, "theirs")))[1], ["theirs", "did not write", "report.md"],
         untouched=lambda e: [e.tmp / "theirs"]),
    Case("eval --out inside the model folder", "command outputs",
         lambda e: (_mgsm(e), _eval(e, out=str(e.llm / "results")))[1], ["never writes over what it reads"],
         untouched=lambda e: [e.llm]),
    Case("report --out holds somebody's report.md", "command outputs",
         lambda e: (e.file("sc/mgsm/en/scores.json", json.dumps({"model": "m", "benchmark": "mgsm", "language": "en",
                                                                 "n": 1, "correct": 1, "accuracy": 1.0})),
                    ["report", str(e.tmp / "sc"), "--out", _user_report(e, "rep")])[1],
         ["rep", "did not write"], untouched=lambda e: [e.tmp / "rep"]),
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
    if case.area == "devices" and _has_cuda():
        pytest.skip("this machine has CUDA: the device cases are about one without it")
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


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _record() -> None:
    out = Path(__file__).resolve().parents[2] / "build" / "reliability" / "bad_inputs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(OUTCOMES, indent=1, ensure_ascii=False))
